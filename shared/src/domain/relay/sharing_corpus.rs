//! The contact-sharing detector's corpus: texts that share a contact detail (each with the
//! kind expected first) and texts that do not, the tricky ones included: prices, dates,
//! times, order numbers, quantities, addresses and ordinary words next to platform names.

use super::sharing::{detect, redact, SharedKind};

use SharedKind::{Email, Handle, Phone, Url};

const SHARING: [(&str, SharedKind); 60] = [
    ("Call me at 555-123-4567", Phone),
    ("my cell is (415) 555-0199", Phone),
    ("text me 4155550199 anytime", Phone),
    ("Reach me on +1 415 555 0199", Phone),
    ("+44 20 7946 0958 is my work line", Phone),
    ("555.123.4567 is my number", Phone),
    ("number: 415 555 0199", Phone),
    (
        "text me at five five five one two three four five six seven",
        Phone,
    ),
    (
        "my number is four one five, five five five, zero one nine nine",
        Phone,
    ),
    ("call 415-555-O199", Phone),
    ("Just text me at 4 1 5 5 5 5 0 1 9 9", Phone),
    ("whats your number? mine is 07700 900123", Phone),
    ("My direct line 020 7946 0958.", Phone),
    ("ring me on 0161 496 0000", Phone),
    ("Here's my number 555 1234567", Phone),
    ("Can you call 1-800-555-0100 for the gate code", Phone),
    ("It's 415.555.0199, text there", Phone),
    ("Call me: (555)123-4567", Phone),
    ("nine one seven five five five zero one two three", Phone),
    ("six four six - five five five - zero one nine nine", Phone),
    ("my wife's phone 3125550142", Phone),
    ("Emergency contact +33 1 23 45 67 89", Phone),
    ("Call me directly 555 0100 ok?", Phone),
    ("reach out at 202-555-0173!", Phone),
    ("email me at ann.smith@gmail.com", Email),
    ("ann@example.com works best", Email),
    ("my email: bob_walker+dogs@yahoo.co.uk", Email),
    ("send it to ann at gmail dot com", Email),
    ("ann (at) gmail (dot) com", Email),
    ("write to bella.walks [at] outlook [dot] com please", Email),
    ("contact ME at JOHN.DOE@HOTMAIL.com", Email),
    ("anna dot smith at proton dot me", Email),
    ("my work address is j.lee@acme-corp.io", Email),
    ("Reply to cleaner99@icloud.com instead", Email),
    ("book me directly at www.bellaspetsitting.com", Url),
    ("see https://calendly.com/bella/visit", Url),
    ("my site bellawalks.com has my rates", Url),
    ("check http://bit.ly/3xyzAbc", Url),
    ("pay me at paypal.me/bellawalks", Url),
    ("Here is my booking page: bella.site", Url),
    ("visit www.example.org for cheaper rates", Url),
    ("https://wa.me/14155550199 message me there", Url),
    ("Go to cleaningbyjo.net and book there", Url),
    ("link: linktr.ee/bella", Url),
    ("follow me @bella_walks", Handle),
    ("my insta is bella_walks", Handle),
    ("Instagram: bellawalks", Handle),
    ("add me on snapchat", Handle),
    ("my snap is @bellaw", Handle),
    ("venmo @Bella-Walks-22 and skip the fees", Handle),
    ("find me on telegram", Handle),
    ("telegram: bella_w", Handle),
    ("whatsapp me on whatsapp", Handle),
    ("IG: dogwalker.nyc", Handle),
    ("cash app is $bella22 or venmo: bella22", Handle),
    ("my tiktok handle is @bellawalksdogs", Handle),
    ("fb name is bella.walks.92", Handle),
    ("dm me on instagram", Handle),
    ("@jo_cleans on twitter", Handle),
    ("message me on signal", Handle),
];

const NOT_SHARING: [&str; 63] = [
    "count with me: 1, 2, 3, 4, 5, 6, 7, 8",
    "The visit costs $1,250,000? no, $125.",
    "Total is $149.99 for the week",
    "That will be 1,250 dollars",
    "Price: 12500000 cents, kidding",
    "It's 2026-12-03 at 10:30",
    "See you on 12/03/2026",
    "on 03.12.2026 we start",
    "your order #12345678 has shipped",
    "order 5551234567 is confirmed",
    "Booking ref: 99887766",
    "Invoice no. 20261203",
    "tracking 1Z999AA10123456784",
    "confirmation 7734 5521 9",
    "I have two dogs and three cats",
    "one or two walks a day, five days a week",
    "Can you come at 5pm?",
    "meet @ 5 by the gate",
    "The code is 4821",
    "Gate code 1234, apartment 56",
    "We live at 1234 Elm Street, apt 5",
    "zip code 94105",
    "It was 3.14159265 on the sheet",
    "I walked 12.5 miles",
    "Rex weighs 45 lbs and is 7 years old",
    "Pick up at 10:30 and 14:45",
    "From 9 to 5, Monday to Friday",
    "Room 1205, floor 12",
    "the kids are 3, 5 and 8",
    "I saw it on instagram yesterday",
    "whatsapp is easier for me but fine",
    "venmo is fine as long as the platform allows",
    "Is that a snap decision?",
    "Telegram the gate code? no, just leave it",
    "I'll be at home. See you at the park",
    "Look at the dog. Come quick",
    "done.Me too",
    "e.g. feed twice, i.e. morning and night",
    "Mr. Smith will let you in",
    "version 1.2.3 of the app",
    "I paid 3 x 25 = 75",
    "Thanks! See you at noon",
    "Her name is Ann and she's at work",
    "It's 75°F, take water",
    "SKU 123456789 is the food brand",
    "Account 12345678 was charged",
    "1 cup of kibble, 2 treats",
    "Our flat is number 12, ring twice",
    "We need 10 bags, 20 towels, 30 pegs",
    "Call the front desk if anything happens",
    "text me when you arrive",
    "email me the receipt through the app",
    "follow the path to the back gate",
    "the password is on the fridge",
    "call me back please",
    "ticket 555 1234 567 opened",
    "It costs €1.250.000? no!",
    "receipt: 20261203-0042",
    "Give him 2.5 pills at 8:00",
    "I'll message you on the app at 7",
    "Case 1234567 closed",
    "id 987654321 on the collar",
    "50% off 10000000 points",
];

#[test]
fn the_corpus_is_large_enough() {
    assert!(SHARING.len() >= 50 && NOT_SHARING.len() >= 50);
}

#[test]
fn every_sharing_text_is_found_with_its_kind() {
    let missed: Vec<String> = SHARING
        .iter()
        .filter_map(|(text, kind)| {
            let found = detect(text);
            let ok = found.first().is_some_and(|f| f.kind == *kind);
            (!ok).then(|| format!("{text:?}: expected {kind:?}, found {found:?}"))
        })
        .collect();
    assert!(
        missed.is_empty(),
        "{} missed:\n{}",
        missed.len(),
        missed.join("\n")
    );
}

#[test]
fn no_ordinary_text_is_taken_for_a_contact_detail() {
    let wrong: Vec<String> = NOT_SHARING
        .iter()
        .filter_map(|text| {
            let found = detect(text);
            let spans: Vec<&str> = found.iter().map(|f| &text[f.span.clone()]).collect();
            (!found.is_empty()).then(|| format!("{text:?}: {found:?} {spans:?}"))
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{} wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn redaction_replaces_only_the_details() {
    let text = "Call 555-123-4567 or email ann@example.com, see you at 10:30";
    let out = redact(text, &detect(text));
    assert_eq!(
        out,
        "Call [phone number removed] or email [email removed], see you at 10:30"
    );
    let spelled = "text me at five five five one two three four five six seven ok";
    assert_eq!(
        redact(spelled, &detect(spelled)),
        "text me at [phone number removed] ok"
    );
}

#[test]
fn other_scripts_neither_hide_a_number_nor_break_redaction() {
    for text in ["５５５ １２３ ４５６７", "٥٥٥١٢٣٤٥٦٧"] {
        let found = detect(text);
        assert_eq!(found.first().map(|f| f.kind), Some(Phone), "{text}");
        assert_eq!(redact(text, &found), "[phone number removed]");
    }
    for text in ["😀@annie hi", "“@annie” is me", "é@bob", "ü", "@", "😀@"] {
        let found = detect(text);
        let _ = redact(text, &found);
    }
    assert_eq!(
        redact("😀@annie hi", &detect("😀@annie hi")),
        "😀[handle removed] hi"
    );
}

#[test]
fn huge_and_odd_input_is_scanned_in_bounds() {
    let long = "5".repeat(100_000);
    let _ = detect(&long);
    let mixed = "é5€5£ ".repeat(10_000);
    let _ = detect(&mixed);
    assert!(detect("").is_empty());
}
