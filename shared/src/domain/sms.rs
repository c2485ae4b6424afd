//! SMS body analysis: encoding selection (GSM-7 vs UCS-2), length in
//! encoding units and the number of concatenated segments needed.

/// Character encoding an SMS body will be sent with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmsEncoding {
    /// GSM 03.38 7-bit default alphabet (with extension table).
    Gsm7,
    /// UCS-2 / UTF-16.
    Ucs2,
}

impl SmsEncoding {
    /// Stable lowercase name: `"gsm7"` or `"ucs2"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            SmsEncoding::Gsm7 => "gsm7",
            SmsEncoding::Ucs2 => "ucs2",
        }
    }
}

/// Result of analysing an SMS body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SmsInfo {
    /// Encoding the body requires.
    pub encoding: SmsEncoding,
    /// Length in encoding units: GSM-7 septets or UTF-16 code units.
    pub units: usize,
    /// Number of SMS segments needed (0 for an empty body).
    pub segments: usize,
}

/// Maximum number of segments Herald will send for one SMS.
pub const MAX_SMS_SEGMENTS: usize = 10;

/// Septets in a single-part GSM-7 message.
const GSM7_SINGLE: usize = 160;
/// Septets per part of a concatenated GSM-7 message (7 go to the UDH).
const GSM7_MULTI: usize = 153;
/// UTF-16 code units in a single-part UCS-2 message.
const UCS2_SINGLE: usize = 70;
/// UTF-16 code units per part of a concatenated UCS-2 message.
const UCS2_MULTI: usize = 67;

/// GSM 03.38 default alphabet, in code-point order 0x00..=0x7F.
/// Position 0x1B (ESC) is not valid input and is represented by `None`.
const GSM7_BASIC: [Option<char>; 128] = {
    const C: [char; 128] = [
        '@', '£', '$', '¥', 'è', 'é', 'ù', 'ì', 'ò', 'Ç', '\n', 'Ø', 'ø', '\r', 'Å', 'å', //
        'Δ', '_', 'Φ', 'Γ', 'Λ', 'Ω', 'Π', 'Ψ', 'Σ', 'Θ', 'Ξ', '\u{1B}', 'Æ', 'æ', 'ß',
        'É', //
        ' ', '!', '"', '#', '¤', '%', '&', '\'', '(', ')', '*', '+', ',', '-', '.', '/', //
        '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', ':', ';', '<', '=', '>', '?', //
        '¡', 'A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J', 'K', 'L', 'M', 'N', 'O', //
        'P', 'Q', 'R', 'S', 'T', 'U', 'V', 'W', 'X', 'Y', 'Z', 'Ä', 'Ö', 'Ñ', 'Ü', '§', //
        '¿', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', //
        'p', 'q', 'r', 's', 't', 'u', 'v', 'w', 'x', 'y', 'z', 'ä', 'ö', 'ñ', 'ü', 'à', //
    ];
    let mut out = [None; 128];
    let mut i = 0;
    while i < 128 {
        if i != 0x1B {
            out[i] = Some(C[i]);
        }
        i += 1;
    }
    out
};

/// GSM 03.38 extension table characters (each sent as ESC + char, 2 septets).
const GSM7_EXTENSION: [char; 10] = ['\u{0C}', '^', '{', '}', '\\', '[', '~', ']', '|', '€'];

/// Septets needed for `c` in GSM-7, or `None` if it is not representable.
fn gsm7_septets(c: char) -> Option<usize> {
    if GSM7_BASIC.contains(&Some(c)) {
        Some(1)
    } else if GSM7_EXTENSION.contains(&c) {
        Some(2)
    } else {
        None
    }
}

/// Counts segments by packing characters greedily so that no character's
/// units are split across a segment boundary.
fn pack_segments(widths: impl Iterator<Item = usize>, per_segment: usize) -> usize {
    let mut segments = 0usize;
    let mut used = per_segment; // forces a new segment on the first char
    for w in widths {
        if used + w > per_segment {
            segments += 1;
            used = 0;
        }
        used += w;
    }
    segments
}

/// Determines the encoding, length and segment count of an SMS body.
///
/// An empty body yields 0 units and 0 segments.
pub fn analyze(body: &str) -> SmsInfo {
    let gsm_units: Option<usize> = body.chars().map(gsm7_septets).sum();
    let (encoding, units, single, multi) = match gsm_units {
        Some(units) => (SmsEncoding::Gsm7, units, GSM7_SINGLE, GSM7_MULTI),
        None => (
            SmsEncoding::Ucs2,
            body.encode_utf16().count(),
            UCS2_SINGLE,
            UCS2_MULTI,
        ),
    };
    let segments = if units == 0 {
        0
    } else if units <= single {
        1
    } else {
        match encoding {
            SmsEncoding::Gsm7 => {
                pack_segments(body.chars().map(|c| gsm7_septets(c).unwrap_or(1)), multi)
            }
            SmsEncoding::Ucs2 => pack_segments(body.chars().map(char::len_utf16), multi),
        }
    };
    SmsInfo {
        encoding,
        units,
        segments,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(encoding: SmsEncoding, units: usize, segments: usize) -> SmsInfo {
        SmsInfo {
            encoding,
            units,
            segments,
        }
    }

    #[test]
    fn empty_body() {
        assert_eq!(analyze(""), info(SmsEncoding::Gsm7, 0, 0));
    }

    #[test]
    fn encoding_names_and_serde() -> Result<(), serde_json::Error> {
        assert_eq!(SmsEncoding::Gsm7.as_str(), "gsm7");
        assert_eq!(SmsEncoding::Ucs2.as_str(), "ucs2");
        assert_eq!(serde_json::to_string(&SmsEncoding::Gsm7)?, "\"gsm7\"");
        assert_eq!(serde_json::to_string(&SmsEncoding::Ucs2)?, "\"ucs2\"");
        let i = analyze("hi");
        let json = serde_json::to_string(&i)?;
        assert_eq!(json, r#"{"encoding":"gsm7","units":2,"segments":1}"#);
        assert_eq!(serde_json::from_str::<SmsInfo>(&json)?, i);
        Ok(())
    }

    #[test]
    fn full_basic_set_is_gsm7() {
        let all: String = GSM7_BASIC.iter().flatten().collect();
        assert_eq!(all.chars().count(), 127);
        let i = analyze(&all);
        assert_eq!(i.encoding, SmsEncoding::Gsm7);
        assert_eq!(i.units, 127);
        assert_eq!(i.segments, 1);
        let named = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./09:;<=>?¡AZÄÖÑÜ§¿azäöñüà";
        assert_eq!(analyze(named).encoding, SmsEncoding::Gsm7);
    }

    #[test]
    fn non_gsm_chars_force_ucs2() {
        for s in [
            "\u{1B}",
            "ç",
            "á",
            "Ç\u{301}",
            "`",
            "\t",
            "中",
            "Ω\u{2126}",
            "ê",
        ] {
            assert_eq!(analyze(s).encoding, SmsEncoding::Ucs2, "{s:?}");
        }
    }

    #[test]
    fn extension_chars_count_two() {
        let ext = "\u{0C}^{}\\[~]|€";
        assert_eq!(analyze(ext), info(SmsEncoding::Gsm7, 20, 1));
        assert_eq!(analyze("€"), info(SmsEncoding::Gsm7, 2, 1));
        assert_eq!(analyze("a{b}"), info(SmsEncoding::Gsm7, 6, 1));
    }

    #[test]
    fn gsm7_single_segment_boundary() {
        assert_eq!(analyze(&"a".repeat(160)), info(SmsEncoding::Gsm7, 160, 1));
        assert_eq!(analyze(&"a".repeat(161)), info(SmsEncoding::Gsm7, 161, 2));
        // 80 extension chars = 160 septets fits; 159 + one ext does not.
        assert_eq!(analyze(&"€".repeat(80)), info(SmsEncoding::Gsm7, 160, 1));
        let s = format!("{}€", "a".repeat(159));
        assert_eq!(analyze(&s), info(SmsEncoding::Gsm7, 161, 2));
    }

    #[test]
    fn gsm7_multipart_boundaries() {
        assert_eq!(analyze(&"a".repeat(306)), info(SmsEncoding::Gsm7, 306, 2));
        assert_eq!(analyze(&"a".repeat(307)), info(SmsEncoding::Gsm7, 307, 3));
        assert_eq!(analyze(&"a".repeat(459)), info(SmsEncoding::Gsm7, 459, 3));
        assert_eq!(analyze(&"a".repeat(460)), info(SmsEncoding::Gsm7, 460, 4));
    }

    #[test]
    fn gsm7_extension_not_split_at_153() {
        // 152 septets + '€' (2) would straddle the boundary, so '€' starts
        // segment 2: [152] [2 + 151 = 153].
        let s = format!("{}€{}", "a".repeat(152), "a".repeat(151));
        assert_eq!(analyze(&s), info(SmsEncoding::Gsm7, 305, 2));
        // One more char: naive ceil(306/153) = 2, but packing needs 3.
        let s = format!("{}€{}", "a".repeat(152), "a".repeat(152));
        assert_eq!(analyze(&s), info(SmsEncoding::Gsm7, 306, 3));
        // Extension char ending exactly at 153 fits.
        let s = format!("{}€{}", "a".repeat(151), "a".repeat(153));
        assert_eq!(analyze(&s), info(SmsEncoding::Gsm7, 306, 2));
    }

    #[test]
    fn ucs2_single_segment_boundary() {
        assert_eq!(analyze(&"ж".repeat(70)), info(SmsEncoding::Ucs2, 70, 1));
        assert_eq!(analyze(&"ж".repeat(71)), info(SmsEncoding::Ucs2, 71, 2));
        // A single non-GSM char switches the whole body to UCS-2.
        let s = format!("{}ж", "a".repeat(69));
        assert_eq!(analyze(&s), info(SmsEncoding::Ucs2, 70, 1));
        let s = format!("{}ж", "a".repeat(70));
        assert_eq!(analyze(&s), info(SmsEncoding::Ucs2, 71, 2));
    }

    #[test]
    fn ucs2_multipart_boundaries() {
        assert_eq!(analyze(&"ж".repeat(134)), info(SmsEncoding::Ucs2, 134, 2));
        assert_eq!(analyze(&"ж".repeat(135)), info(SmsEncoding::Ucs2, 135, 3));
    }

    #[test]
    fn emoji_counts_two_units() {
        assert_eq!(analyze("😀"), info(SmsEncoding::Ucs2, 2, 1));
        assert_eq!(analyze(&"😀".repeat(35)), info(SmsEncoding::Ucs2, 70, 1));
        assert_eq!(analyze(&"😀".repeat(36)), info(SmsEncoding::Ucs2, 72, 2));
        assert_eq!(analyze("hi 😀"), info(SmsEncoding::Ucs2, 5, 1));
    }

    #[test]
    fn ucs2_surrogate_pair_not_split_at_67() {
        // 66 units + emoji (2) would straddle: [66] [2 + 65 = 67].
        let s = format!("{}😀{}", "ж".repeat(66), "ж".repeat(65));
        assert_eq!(analyze(&s), info(SmsEncoding::Ucs2, 133, 2));
        // One more: naive ceil(134/67) = 2, packing needs 3.
        let s = format!("{}😀{}", "ж".repeat(66), "ж".repeat(66));
        assert_eq!(analyze(&s), info(SmsEncoding::Ucs2, 134, 3));
    }

    #[test]
    fn ten_vs_eleven_segments() {
        let max = MAX_SMS_SEGMENTS;
        assert_eq!(
            analyze(&"a".repeat(153 * max)),
            info(SmsEncoding::Gsm7, 1530, 10)
        );
        assert_eq!(
            analyze(&"a".repeat(153 * max + 1)),
            info(SmsEncoding::Gsm7, 1531, 11)
        );
        assert_eq!(
            analyze(&"ж".repeat(67 * max)),
            info(SmsEncoding::Ucs2, 670, 10)
        );
        assert_eq!(
            analyze(&"ж".repeat(67 * max + 1)),
            info(SmsEncoding::Ucs2, 671, 11)
        );
    }

    #[test]
    fn segments_match_ceil_without_straddling() {
        for n in 1..=400 {
            let g = analyze(&"a".repeat(n));
            let want = if n <= 160 { 1 } else { n.div_ceil(153) };
            assert_eq!(g.segments, want, "gsm n={n}");
            let u = analyze(&"ж".repeat(n));
            let want = if n <= 70 { 1 } else { n.div_ceil(67) };
            assert_eq!(u.segments, want, "ucs2 n={n}");
        }
    }
}
