//! Contact sharing in relayed texts: phone numbers (digits or spelled out), email addresses
//! (plain or "at ... dot com"), links and social handles, found so the tenant's policy can
//! allow, flag, redact or block them. Prices, dates, times and order numbers are not contact
//! details; the corpus in `sharing_corpus.rs` holds the detector to both.

use std::ops::Range;
use std::sync::OnceLock;

use regex::Regex;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SharedKind {
    Phone,
    Email,
    Url,
    Handle,
}

impl SharedKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SharedKind::Phone => "phone",
            SharedKind::Email => "email",
            SharedKind::Url => "url",
            SharedKind::Handle => "handle",
        }
    }

    fn placeholder(self) -> &'static str {
        match self {
            SharedKind::Phone => "[phone number removed]",
            SharedKind::Email => "[email removed]",
            SharedKind::Url => "[link removed]",
            SharedKind::Handle => "[handle removed]",
        }
    }
}

/// One contact detail found in a text: what kind, and where (bytes of the original).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub kind: SharedKind,
    pub span: Range<usize>,
}

/// What the policy does with a text that shares a contact detail.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SharingAction {
    Allow,
    /// Deliver it, and record a violation.
    #[default]
    Flag,
    /// Deliver it with the details replaced by placeholders, and record a violation.
    Redact,
    /// Deliver nothing, tell the sender, and record a violation.
    Block,
}

/// A tenant's contact-sharing policy, by the sender's role (the direction of the text).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SharingPolicy {
    /// Texts from clients to workers.
    #[serde(default)]
    pub client: SharingAction,
    /// Texts from workers to clients.
    #[serde(default)]
    pub worker: SharingAction,
}

/// The longest text scanned, in bytes: a relayed SMS is far shorter; past it the rest is
/// scanned no further (and a redaction keeps it).
pub const MAX_SCAN: usize = 16 * 1024;

const DIGIT_WORDS: [(&str, char); 11] = [
    ("zero", '0'),
    ("oh", '0'),
    ("one", '1'),
    ("two", '2'),
    ("three", '3'),
    ("four", '4'),
    ("five", '5'),
    ("six", '6'),
    ("seven", '7'),
    ("eight", '8'),
    ("nine", '9'),
];

/// Words before a number that make it a reference, not a phone number.
const REFERENCE_WORDS: [&str; 14] = [
    "order",
    "ref",
    "reference",
    "booking",
    "invoice",
    "confirmation",
    "tracking",
    "account",
    "ticket",
    "case",
    "receipt",
    "id",
    "no",
    "sku",
];

/// Words after a number that make it an amount.
const AMOUNT_WORDS: [&str; 12] = [
    "dollars", "usd", "eur", "euros", "pounds", "gbp", "cents", "bucks", "points", "miles", "km",
    "steps",
];

fn regex(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    // The patterns are constants, checked by the tests: an invalid one is a build defect.
    #[allow(clippy::expect_used)]
    cell.get_or_init(|| Regex::new(pattern).expect("a valid contact pattern"))
}

/// Top-level domains the patterns know, lowercase only, so "done.Me too" is no link.
const TLDS: &str =
    "com|net|org|edu|gov|io|co|me|ly|app|info|biz|us|uk|de|ca|link|page|site|ee|tv|gg";
const PLATFORMS: &str = "instagram|insta|ig|snapchat|snap|telegram|whatsapp|facebook|fb|tiktok|twitter|venmo|cash\\s?app|signal|kik";

fn email_re() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    regex(
        &R,
        &format!(r"(?i)[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.(?-i:{TLDS})\b"),
    )
}

/// "ann at gmail dot com", "ann (at) gmail (dot) com": spelled, the dot is spelled too.
fn spelled_email_re() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    let at = r"(?:\s*[\(\[]\s*at\s*[\)\]]\s*|\s+at\s+)";
    let dot = r"(?:\s*[\(\[]\s*dot\s*[\)\]]\s*|\s+dot\s+)";
    regex(
        &R,
        &format!(r"(?i)[a-z0-9._%+-]+{at}[a-z0-9-]+(?:{dot}[a-z0-9-]+)*{dot}(?:{TLDS})\b"),
    )
}

fn url_re() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    regex(
        &R,
        &format!(
            r"(?i)\b(?:https?://\S+|www\.\S+|[a-z0-9][a-z0-9-]*(?:\.[a-z0-9-]+)*\.(?-i:{TLDS})\b(?:/\S*)?)"
        ),
    )
}

fn handle_re() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    let handle = r"@?[a-z0-9_][a-z0-9_.]{2,29}";
    let named = r"(?:\s+(?:handle|name|username|id))?";
    regex(
        &R,
        &format!(
            r"(?i)(?:(?:^|[^a-z0-9._@])@[a-z_][a-z0-9_.]{{1,29}}|\b(?:{PLATFORMS}){named}\s*:\s*{handle}|\b(?:{PLATFORMS}){named}\s+(?:is\s+)?@[a-z0-9_][a-z0-9_.]{{2,29}}|\b(?:{PLATFORMS}){named}\s+is\s+[a-z0-9_.]*[_.0-9][a-z0-9_.]*|\b(?:add|find|follow|dm|message|text|call)\s+me\s+on\s+(?:{PLATFORMS})\b|\b(?:whatsapp|telegram|signal|kik)\s+me\b)"
        ),
    )
}

/// The contact details in `text`, in order of where they start (overlaps merged).
pub fn detect(text: &str) -> Vec<Finding> {
    let mut end = text.len().min(MAX_SCAN);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let text = &text[..end];
    let mut found = Vec::new();
    let mut add = |re: &Regex, kind| {
        for m in re.find_iter(text) {
            found.push(Finding {
                kind,
                span: trim_span(text, m.range()),
            });
        }
    };
    add(email_re(), SharedKind::Email);
    add(spelled_email_re(), SharedKind::Email);
    add(url_re(), SharedKind::Url);
    add(handle_re(), SharedKind::Handle);
    found.extend(phone_numbers(text));
    merge(found)
}

/// A match's span without the leading separator a pattern may take along.
fn trim_span(text: &str, span: Range<usize>) -> Range<usize> {
    let lead = text[span.clone()].len() - text[span.clone()].trim_start().len();
    // The character before an `@` handle may be any, and several bytes long.
    let skip = text[span.start + lead..]
        .chars()
        .next()
        .filter(|c| *c != '@' && !c.is_alphanumeric())
        .map_or(0, char::len_utf8);
    (span.start + lead + skip).min(span.end)..span.end
}

/// Keeps one finding per stretch of text: where spans overlap, the first (and its kind).
fn merge(mut found: Vec<Finding>) -> Vec<Finding> {
    found.sort_by_key(|f| (f.span.start, std::cmp::Reverse(f.span.end)));
    let mut kept: Vec<Finding> = Vec::new();
    for f in found {
        match kept.last_mut() {
            Some(last) if f.span.start < last.span.end => {
                last.span.end = last.span.end.max(f.span.end);
            }
            _ => kept.push(f),
        }
    }
    kept
}

/// A word of the text: where it is, and the digits it stands for, if any.
struct Token {
    span: Range<usize>,
    digits: String,
    /// Only digit characters or one digit word.
    numeric: bool,
    /// A digit word ("five").
    spelled: bool,
}

fn tokens(text: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut start = None;
    let is_word = |c: char| c.is_alphanumeric();
    for (i, c) in text
        .char_indices()
        .chain(std::iter::once((text.len(), ' ')))
    {
        match (start, is_word(c)) {
            (None, true) => start = Some(i),
            (Some(s), false) => {
                out.push(token(text, s..i));
                start = None;
            }
            _ => {}
        }
    }
    out
}

/// A decimal digit of another script (fullwidth, Arabic-Indic, Devanagari) as its ASCII
/// digit: `５５５` hides a number as well as `555` shows it.
fn ascii_digit(c: char) -> char {
    let zeros = ['\u{ff10}', '\u{0660}', '\u{06f0}', '\u{0966}'];
    zeros
        .iter()
        .find_map(|zero| {
            let offset = (c as u32).checked_sub(*zero as u32)?;
            (offset < 10).then(|| char::from(b'0' + offset as u8))
        })
        .unwrap_or(c)
}

fn token(text: &str, span: Range<usize>) -> Token {
    let word: String = text[span.clone()]
        .chars()
        .map(ascii_digit)
        .collect::<String>()
        .to_lowercase();
    if word.chars().all(|c| c.is_ascii_digit()) {
        return Token {
            digits: word,
            span,
            numeric: true,
            spelled: false,
        };
    }
    if let Some(digits) = disguised_digits(&word) {
        return Token {
            digits,
            span,
            numeric: true,
            spelled: false,
        };
    }
    let digit = DIGIT_WORDS
        .iter()
        .find(|(w, _)| *w == word)
        .map(|(_, d)| *d);
    Token {
        digits: digit.map(String::from).unwrap_or_default(),
        span,
        numeric: digit.is_some(),
        spelled: digit.is_some(),
    }
}

/// Digits typed with look-alike letters (`O199`, `5l2`): at least two real digits, and only
/// `o`, `l` or `i` besides them.
fn disguised_digits(word: &str) -> Option<String> {
    let real = word.chars().filter(char::is_ascii_digit).count();
    let look_alike = |c: char| match c {
        '0'..='9' => Some(c),
        'o' => Some('0'),
        'l' | 'i' => Some('1'),
        _ => None,
    };
    (real >= 2).then(|| word.chars().map(look_alike).collect::<Option<String>>())?
}

/// Runs of numeric words joined only by phone separators (spaces, `-`, `.`, `(`, `)`, `+`)
/// that hold 7 to 15 digits, unless the run reads as an amount, a date, a time or a
/// reference.
fn phone_numbers(text: &str) -> Vec<Finding> {
    let toks = tokens(text);
    let mut found = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        if !toks[i].numeric || toks[i].digits.is_empty() {
            i += 1;
            continue;
        }
        let mut j = i;
        while j + 1 < toks.len()
            && toks[j + 1].numeric
            && joins(
                &text[toks[j].span.end..toks[j + 1].span.start],
                &toks[j..=j + 1],
            )
        {
            j += 1;
        }
        let digits: usize = toks[i..=j].iter().map(|t| t.digits.len()).sum();
        let span = toks[i].span.start..toks[j].span.end;
        if (7..=15).contains(&digits) && !not_a_phone(text, &toks, (i, j), &span) {
            let start = plus_before(text, span.start);
            found.push(Finding {
                kind: SharedKind::Phone,
                span: start..span.end,
            });
        }
        i = j + 1;
    }
    found
}

/// Whether the text between two numeric words keeps them in one number: phone separators,
/// and commas between spelled digits ("four one five, five five five").
fn joins(between: &str, pair: &[Token]) -> bool {
    let spelled = pair.iter().all(|t| t.spelled);
    let separator =
        |c: char| matches!(c, ' ' | '-' | '.' | '(' | ')' | '+') || (spelled && c == ',');
    between.len() <= 3 && between.chars().all(separator)
}

fn plus_before(text: &str, start: usize) -> usize {
    let before = text[..start].trim_end_matches(['(', ' ']);
    if before.ends_with('+') {
        before.len() - 1
    } else {
        start
    }
}

/// An amount (a currency sign or word beside it, one decimal point in it), a date (`12.03.2026`,
/// `2026-12-03`), a time or a reference (a reference word or `#` before it, a letter, `/`,
/// `:` or `_` glued to it).
fn not_a_phone(text: &str, toks: &[Token], (i, j): (usize, usize), span: &Range<usize>) -> bool {
    static DATE: OnceLock<Regex> = OnceLock::new();
    let date = regex(
        &DATE,
        r"^(?:\d{1,2}[.-]\d{1,2}[.-]\d{2,4}|\d{4}[.-]\d{1,2}[.-]\d{1,2})$",
    );
    let inside = &text[span.clone()];
    let glued =
        |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || matches!(c, '/' | ':' | '_'));
    let decimal = inside.matches('.').count() == 1 && !inside.contains([' ', '-', '(', ')']);
    let word = |t: &Token| text[t.span.clone()].to_lowercase();
    let amount_word = toks.get(j + 1).is_some_and(|t| {
        AMOUNT_WORDS.contains(&word(t).as_str()) && text[span.end..t.span.start].trim().is_empty()
    });
    let reference = i > 0 && {
        let gap = &text[toks[i - 1].span.end..span.start];
        REFERENCE_WORDS.contains(&word(&toks[i - 1]).as_str())
            && gap.chars().all(|c| matches!(c, ' ' | '#' | ':' | '.'))
    };
    text[..span.start]
        .trim_end()
        .ends_with(['$', '€', '£', '#'])
        || glued(text[..span.start].chars().next_back())
        || glued(text[span.end..].chars().next())
        || text[span.end..].trim_start().starts_with(['%', '€', '$'])
        || date.is_match(inside)
        || decimal
        || amount_word
        || reference
}

/// The text with each finding replaced by a placeholder naming its kind.
pub fn redact(text: &str, findings: &[Finding]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for f in findings {
        out.push_str(&text[at..f.span.start]);
        out.push_str(f.kind.placeholder());
        at = f.span.end;
    }
    out.push_str(&text[at..]);
    out
}
