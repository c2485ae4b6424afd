//! Where a phone number's owner probably is, in time: the zones of its country, narrowed to one
//! by the area code where the North American plan pins it.
//!
//! Sources: the ITU-T E.164 country calling codes, and for NANP area codes the North American
//! Numbering Plan Administrator's assignments (nationalnanpa.com), keeping only codes wholly
//! inside one zone. Codes split between zones (850, 208, 605, 812, ...), non-geographic codes
//! (500, 800, 900, ...) and countries not listed here are left out on purpose: a number Herald
//! cannot place falls back to its country's zones, or to the tenant's fallback zone.

use std::collections::HashMap;
use std::sync::OnceLock;

use chrono_tz::Tz;

/// How a number's zones were found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneBasis {
    /// A NANP area code inside one zone.
    AreaCode,
    /// The country's zones (one, or every zone it spans).
    Country,
}

impl ZoneBasis {
    pub fn as_str(self) -> &'static str {
        match self {
            ZoneBasis::AreaCode => "area_code",
            ZoneBasis::Country => "country",
        }
    }
}

/// The zones a number could be in, or None when Herald cannot tell.
pub fn zones_of(e164: &str) -> Option<(Vec<Tz>, ZoneBasis)> {
    let digits = e164.strip_prefix('+')?;
    if let Some(national) = digits.strip_prefix('1') {
        return nanp(national);
    }
    let (_, names) = COUNTRIES
        .iter()
        .filter(|(code, _)| digits.starts_with(code))
        .max_by_key(|(code, _)| code.len())?;
    Some((parse_all(names), ZoneBasis::Country))
}

fn nanp(national: &str) -> Option<(Vec<Tz>, ZoneBasis)> {
    let area = national.get(..3)?;
    if let Some(zone) = area_codes().get(area) {
        return Some((vec![*zone], ZoneBasis::AreaCode));
    }
    // Personal-communication and test ranges (500, 555, ...) and N11 service codes are not
    // places; any other code is somewhere in the US or Canada.
    if NON_GEOGRAPHIC.contains(&area) || area.ends_with("11") {
        return None;
    }
    Some((parse_all(US_AND_CANADA), ZoneBasis::Country))
}

/// The area code table, indexed once.
fn area_codes() -> &'static HashMap<&'static str, Tz> {
    static TABLE: OnceLock<HashMap<&'static str, Tz>> = OnceLock::new();
    TABLE.get_or_init(|| {
        NANP_AREA_CODES
            .iter()
            .filter_map(|(zone, codes)| Some((zone.parse::<Tz>().ok()?, *codes)))
            .flat_map(|(zone, codes)| codes.split_whitespace().map(move |c| (c, zone)))
            .collect()
    })
}

fn parse_all(names: &[&str]) -> Vec<Tz> {
    names.iter().filter_map(|n| n.parse::<Tz>().ok()).collect()
}

const NON_GEOGRAPHIC: &[&str] = &[
    "500", "521", "522", "523", "524", "525", "526", "527", "528", "529", "533", "544", "555",
    "566", "577", "588", "600", "622", "700", "710", "800", "833", "844", "855", "866", "877",
    "888", "900",
];

/// Every zone of the US and Canada's populated regions, for a NANP number Herald cannot place.
const US_AND_CANADA: &[&str] = &[
    "America/New_York",
    "America/St_Johns",
    "America/Halifax",
    "America/Chicago",
    "America/Denver",
    "America/Phoenix",
    "America/Los_Angeles",
    "America/Anchorage",
    "Pacific/Honolulu",
];

const NANP_AREA_CODES: &[(&str, &str)] = &[
    (
        "America/New_York",
        "203 475 860 959 302 202 771 239 305 321 352 386 407 561 689 727 754 772 786 813 863 \
         904 941 954 229 404 470 478 678 706 762 770 912 943 207 240 301 410 443 667 339 351 \
         413 508 617 774 781 857 978 231 248 269 313 517 586 616 679 734 810 947 989 603 201 \
         551 609 640 732 848 856 862 908 973 212 315 332 347 516 518 585 607 631 646 680 716 \
         718 838 845 914 917 929 934 252 336 704 743 828 910 919 980 984 216 220 234 283 326 \
         330 380 419 436 440 513 567 614 740 937 215 223 267 272 412 445 484 570 582 610 717 \
         724 814 835 878 401 803 839 843 854 864 802 276 434 540 571 703 757 804 826 948 304 \
         681 260 317 463 765 502 606 859 423 865 416 647 437 514 438 613 343 819 873 418 581 \
         367 450 579 705 249 519 226 548 905 289 365 753 683 742",
    ),
    (
        "America/Chicago",
        "205 251 256 334 659 938 479 501 870 327 217 224 309 312 331 447 464 618 630 708 730 \
         773 779 815 847 861 872 319 515 563 641 712 316 785 913 225 318 337 504 985 218 320 \
         507 612 651 763 952 228 601 662 769 314 417 557 573 636 660 816 975 402 531 405 539 \
         572 580 918 615 629 731 901 931 210 214 254 281 325 346 361 409 430 432 469 512 682 \
         713 726 737 806 817 830 832 903 936 940 945 956 972 979 262 274 414 534 608 715 920",
    ),
    ("America/Winnipeg", "204 431 584"),
    ("America/Regina", "306 639 474"),
    (
        "America/Denver",
        "303 719 720 970 983 406 505 575 385 435 801 307 915",
    ),
    ("America/Edmonton", "403 587 780 825 368"),
    ("America/Phoenix", "480 520 602 623 928"),
    (
        "America/Los_Angeles",
        "209 213 279 310 323 341 350 369 408 415 424 442 510 530 559 562 619 626 628 650 657 \
         661 669 707 714 747 760 805 818 820 831 840 858 909 916 925 949 951 702 725 775 503 \
         971 541 458 206 253 360 425 509 564",
    ),
    ("America/Vancouver", "604 778 236 250 672"),
    ("America/Anchorage", "907"),
    ("Pacific/Honolulu", "808"),
    ("America/Halifax", "902 782 506 428"),
    ("America/St_Johns", "709 879"),
    ("America/Puerto_Rico", "787 939"),
    ("America/Jamaica", "876 658"),
    ("America/Santo_Domingo", "809 829 849"),
    ("America/Nassau", "242"),
    ("America/Barbados", "246"),
    ("America/Port_of_Spain", "868"),
    ("Atlantic/Bermuda", "441"),
    ("America/St_Thomas", "340"),
    ("Pacific/Guam", "671"),
    ("Pacific/Saipan", "670"),
    ("Pacific/Pago_Pago", "684"),
];

/// Country calling codes (without `+`, longest match wins) and the zones each country spans.
const COUNTRIES: &[(&str, &[&str])] = &[
    (
        "7",
        &[
            "Europe/Kaliningrad",
            "Europe/Moscow",
            "Europe/Samara",
            "Asia/Yekaterinburg",
            "Asia/Omsk",
            "Asia/Krasnoyarsk",
            "Asia/Irkutsk",
            "Asia/Yakutsk",
            "Asia/Vladivostok",
            "Asia/Magadan",
            "Asia/Kamchatka",
        ],
    ),
    ("76", &["Asia/Almaty", "Asia/Aqtobe"]),
    ("77", &["Asia/Almaty", "Asia/Aqtobe"]),
    ("20", &["Africa/Cairo"]),
    ("27", &["Africa/Johannesburg"]),
    ("30", &["Europe/Athens"]),
    ("31", &["Europe/Amsterdam"]),
    ("32", &["Europe/Brussels"]),
    ("33", &["Europe/Paris"]),
    ("34", &["Europe/Madrid", "Atlantic/Canary"]),
    ("36", &["Europe/Budapest"]),
    ("39", &["Europe/Rome"]),
    ("40", &["Europe/Bucharest"]),
    ("41", &["Europe/Zurich"]),
    ("43", &["Europe/Vienna"]),
    ("44", &["Europe/London"]),
    ("45", &["Europe/Copenhagen"]),
    ("46", &["Europe/Stockholm"]),
    ("47", &["Europe/Oslo"]),
    ("48", &["Europe/Warsaw"]),
    ("49", &["Europe/Berlin"]),
    ("51", &["America/Lima"]),
    (
        "52",
        &[
            "America/Tijuana",
            "America/Hermosillo",
            "America/Mexico_City",
            "America/Cancun",
        ],
    ),
    ("54", &["America/Argentina/Buenos_Aires"]),
    (
        "55",
        &[
            "America/Noronha",
            "America/Sao_Paulo",
            "America/Manaus",
            "America/Rio_Branco",
        ],
    ),
    ("56", &["America/Santiago"]),
    ("57", &["America/Bogota"]),
    ("58", &["America/Caracas"]),
    ("60", &["Asia/Kuala_Lumpur"]),
    (
        "61",
        &[
            "Australia/Perth",
            "Australia/Darwin",
            "Australia/Adelaide",
            "Australia/Brisbane",
            "Australia/Sydney",
        ],
    ),
    ("62", &["Asia/Jakarta", "Asia/Makassar", "Asia/Jayapura"]),
    ("63", &["Asia/Manila"]),
    ("64", &["Pacific/Auckland"]),
    ("65", &["Asia/Singapore"]),
    ("66", &["Asia/Bangkok"]),
    ("81", &["Asia/Tokyo"]),
    ("82", &["Asia/Seoul"]),
    ("84", &["Asia/Ho_Chi_Minh"]),
    ("86", &["Asia/Shanghai"]),
    ("90", &["Europe/Istanbul"]),
    ("91", &["Asia/Kolkata"]),
    ("92", &["Asia/Karachi"]),
    ("94", &["Asia/Colombo"]),
    ("98", &["Asia/Tehran"]),
    ("212", &["Africa/Casablanca"]),
    ("234", &["Africa/Lagos"]),
    ("254", &["Africa/Nairobi"]),
    ("351", &["Europe/Lisbon", "Atlantic/Azores"]),
    ("352", &["Europe/Luxembourg"]),
    ("353", &["Europe/Dublin"]),
    ("358", &["Europe/Helsinki"]),
    ("380", &["Europe/Kyiv"]),
    ("420", &["Europe/Prague"]),
    ("421", &["Europe/Bratislava"]),
    ("852", &["Asia/Hong_Kong"]),
    ("880", &["Asia/Dhaka"]),
    ("886", &["Asia/Taipei"]),
    ("966", &["Asia/Riyadh"]),
    ("971", &["Asia/Dubai"]),
    ("972", &["Asia/Jerusalem"]),
    ("977", &["Asia/Kathmandu"]),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_zone_in_the_tables_is_a_real_iana_zone() {
        let nanp = NANP_AREA_CODES.iter().map(|(z, _)| *z);
        let countries = COUNTRIES.iter().flat_map(|(_, zs)| zs.iter().copied());
        for name in nanp.chain(countries).chain(US_AND_CANADA.iter().copied()) {
            assert!(name.parse::<Tz>().is_ok(), "{name}");
        }
    }

    #[test]
    fn no_area_code_is_in_two_zones() {
        let mut seen = std::collections::HashMap::new();
        for (zone, codes) in NANP_AREA_CODES {
            for code in codes.split_whitespace() {
                assert_eq!(code.len(), 3, "{code}");
                if let Some(other) = seen.insert(code, zone) {
                    panic!("{code} is in {other} and {zone}");
                }
            }
        }
    }

    #[test]
    fn nanp_area_codes_pin_their_zone() {
        let one = |n: &str| zones_of(n).map(|(z, b)| (z[0].name().to_owned(), z.len(), b));
        let cases = [
            ("+12125550100", "America/New_York"),
            ("+13125550100", "America/Chicago"),
            ("+13035550100", "America/Denver"),
            ("+16025550100", "America/Phoenix"),
            ("+14155550100", "America/Los_Angeles"),
            ("+19075550100", "America/Anchorage"),
            ("+18085550100", "Pacific/Honolulu"),
            ("+14165550100", "America/Toronto"),
            ("+16045550100", "America/Vancouver"),
        ];
        for (number, zone) in cases {
            let found = one(number).unwrap();
            // Toronto is New York's zone in the table.
            let want = if zone == "America/Toronto" {
                "America/New_York"
            } else {
                zone
            };
            assert_eq!(found, (want.to_owned(), 1, ZoneBasis::AreaCode), "{number}");
        }
    }

    #[test]
    fn a_split_area_code_falls_back_to_every_zone_and_test_ranges_to_none() {
        let (zones, basis) = zones_of("+18505550100").unwrap();
        assert_eq!(basis, ZoneBasis::Country);
        assert_eq!(zones.len(), US_AND_CANADA.len());
        assert!(zones_of("+15005550006").is_none());
        assert!(zones_of("+15551234567").is_none());
        assert!(zones_of("+18005551212").is_none());
        // A geographic 5XX code split between zones: every zone, not none.
        assert_eq!(zones_of("+15745550100").unwrap().1, ZoneBasis::Country);
    }

    #[test]
    fn other_countries_by_calling_code() {
        let names = |n: &str| {
            zones_of(n)
                .unwrap()
                .0
                .iter()
                .map(|z| z.name().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(names("+447700900123"), ["Europe/London"]);
        assert_eq!(names("+35312345678"), ["Europe/Dublin"]);
        assert_eq!(names("+77012345678"), ["Asia/Almaty", "Asia/Aqtobe"]);
        assert_eq!(names("+74951234567").len(), 11);
        assert_eq!(names("+61212345678").len(), 5);
        assert!(zones_of("+999123456").is_none());
    }
}
