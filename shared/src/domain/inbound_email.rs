//! Email received from recipients: the raw message parsed (by `mail-parser`), what is kept of
//! it, the new part of a reply split from its quoted history, and the Herald message a reply
//! names in `In-Reply-To` / `References`.

use serde::{Deserialize, Serialize};

use super::MessageId;

/// The most of an email's text, and of its HTML, that is kept (the rest is cut, and the
/// message says so): an inbound message must fit one DynamoDB item with room to spare.
pub const MAX_KEPT_TEXT: usize = 96 * 1024;

/// The most an email's kept parts may come to as stored JSON (escapes included): the text and
/// HTML are cut further until they fit, under DynamoDB's 400 KB item with its other fields.
pub const MAX_STORED_JSON: usize = 240 * 1024;

/// Attachments kept of one email; the rest are dropped (and the message marked truncated).
pub const MAX_ATTACHMENTS: usize = 50;

/// Addresses kept of `Cc`, and characters of the subject and of a file name.
const MAX_CC: usize = 50;
const MAX_SUBJECT_CHARS: usize = 998;
const MAX_FILENAME_CHARS: usize = 200;

/// The most message ids of `References` looked at to find the thread a reply belongs to: the
/// last ones, which name the most recent messages.
pub const MAX_REFERENCES: usize = 8;

/// What an inbound email keeps beside the new part of its text (the message's `body`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InboundEmail {
    pub subject: Option<String>,
    /// Its own `Message-ID`, without the angle brackets.
    pub message_id: Option<String>,
    pub in_reply_to: Vec<String>,
    pub references: Vec<String>,
    #[serde(default)]
    pub cc: Vec<String>,
    /// The whole plain text, quoted history included (converted from the HTML when the
    /// message has no text part).
    pub text: Option<String>,
    pub html: Option<String>,
    #[serde(default)]
    pub attachments: Vec<AttachmentInfo>,
    /// Something was cut to fit: the text, the HTML, the attachments or the headers.
    #[serde(default)]
    pub truncated: bool,
    /// What the receiving service found (SES: SPF, DKIM, DMARC, spam and virus verdicts).
    #[serde(default)]
    pub verdicts: Option<Verdicts>,
}

/// SES's checks of a received mail, each `PASS`, `FAIL`, `GRAY` or `PROCESSING_FAILED`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Verdicts {
    pub spf: Option<String>,
    pub dkim: Option<String>,
    pub dmarc: Option<String>,
    pub spam: Option<String>,
    pub virus: Option<String>,
}

impl Verdicts {
    /// The mail failed a check that says its sender is not who `From` says.
    pub fn forged(&self) -> bool {
        self.dmarc.as_deref() == Some("FAIL")
    }

    pub fn infected(&self) -> bool {
        self.virus.as_deref() == Some("FAIL")
    }
}

/// An attachment as the email declared it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AttachmentInfo {
    pub filename: Option<String>,
    /// The type the email declared; stored media is checked against the bytes.
    pub content_type: String,
    pub size: usize,
}

/// An attachment with its bytes, until they are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub info: AttachmentInfo,
    pub bytes: Vec<u8>,
}

/// A raw message, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedEmail {
    /// The `From` address.
    pub from: String,
    /// The `To` addresses (the envelope's recipients decide who receives it).
    pub to: Vec<String>,
    /// The new part of the text: what rules and insights read.
    pub new_part: String,
    pub email: InboundEmail,
    pub attachments: Vec<Attachment>,
}

impl ParsedEmail {
    /// Parses an RFC 5322 message. Refused when it is not one or names no sender.
    pub fn parse(raw: &[u8]) -> Result<ParsedEmail, String> {
        let message = mail_parser::MessageParser::default()
            .parse(raw)
            .ok_or("not an email message")?;
        let from = message
            .from()
            .and_then(|a| a.first())
            .and_then(|a| a.address())
            .filter(|a| !a.trim().is_empty())
            .ok_or("the message has no From address")?
            .trim()
            .to_owned();
        let addresses = |a: Option<&mail_parser::Address<'_>>| -> Vec<String> {
            a.map(|a| a.iter().filter_map(|a| a.address()).map(str::to_owned))
                .into_iter()
                .flatten()
                .collect()
        };
        // The last ids name the most recent messages: keep those.
        let ids = |v: &mail_parser::HeaderValue<'_>| -> Vec<String> {
            let all = v.as_text_list().unwrap_or_default();
            let from = all.len().saturating_sub(MAX_REFERENCES);
            all[from..].iter().map(|s| clip_chars(s, 256)).collect()
        };
        let mut truncated = false;
        let mut keep = |s: Option<std::borrow::Cow<'_, str>>| {
            s.map(|s| {
                let (kept, cut) = cut_at(&s, MAX_KEPT_TEXT);
                truncated |= cut;
                kept.to_owned()
            })
        };
        let text = keep(message.body_text(0));
        let html = keep(message.body_html(0));
        let mut attachments = attachments(&message);
        truncated |= attachments.len() > MAX_ATTACHMENTS;
        attachments.truncate(MAX_ATTACHMENTS);
        let mut cc = addresses(message.cc());
        truncated |= cc.len() > MAX_CC;
        cc.truncate(MAX_CC);
        let new_part = text.as_deref().map(new_part).unwrap_or_default();
        let mut email = InboundEmail {
            subject: message.subject().map(|s| clip_chars(s, MAX_SUBJECT_CHARS)),
            message_id: message.message_id().map(|s| clip_chars(s, 256)),
            in_reply_to: ids(message.in_reply_to()),
            references: ids(message.references()),
            cc,
            text,
            html,
            attachments: attachments.iter().map(|a| a.info.clone()).collect(),
            truncated,
            verdicts: None,
        };
        email.fit(new_part.len());
        Ok(ParsedEmail {
            from,
            to: addresses(message.to()),
            new_part,
            email,
            attachments,
        })
    }
}

fn attachments(message: &mail_parser::Message<'_>) -> Vec<Attachment> {
    use mail_parser::MimeHeaders;
    message
        .attachments()
        .map(|part| {
            let content_type = part
                .content_type()
                .map(|c| match c.subtype() {
                    Some(sub) => format!("{}/{}", c.ctype(), sub),
                    None => c.ctype().to_owned(),
                })
                .unwrap_or_else(|| "application/octet-stream".to_owned())
                .to_ascii_lowercase();
            let bytes = part.contents().to_vec();
            Attachment {
                info: AttachmentInfo {
                    filename: part
                        .attachment_name()
                        .map(|n| clip_chars(n, MAX_FILENAME_CHARS)),
                    content_type,
                    size: bytes.len(),
                },
                bytes,
            }
        })
        .collect()
}

fn clip_chars(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// `s` cut at `max` bytes on a character boundary, and whether it was cut.
fn cut_at(s: &str, max: usize) -> (&str, bool) {
    if s.len() <= max {
        return (s, false);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    (&s[..end], true)
}

/// The new part of a reply: the text above its quoted history (an "On ... wrote:" line, an
/// Outlook header block or separator) and its signature (`-- `), without the `>` quotes an
/// inline answer leaves between its lines. Empty when the mail only quotes.
pub fn new_part(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut kept: Vec<&str> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let next = lines.get(i + 1).map(|l| l.trim()).unwrap_or("");
        if starts_history(line, next) {
            break;
        }
        if !line.trim_start().starts_with('>') {
            kept.push(line);
        }
    }
    kept.join("\n").trim().to_owned()
}

/// Whether `line` (followed by `next`) starts the quoted history or the signature.
fn starts_history(line: &str, next: &str) -> bool {
    let trimmed = line.trim();
    if line == "-- " {
        return true;
    }
    let lower = trimmed.to_lowercase();
    let intro = |l: &str| {
        [
            "wrote:",
            "a écrit :",
            "a écrit:",
            "schrieb:",
            "escribió:",
            "scritto:",
        ]
        .iter()
        .any(|end| l.ends_with(end))
    };
    // "On Tue, 1 Dec 2026 at 10:02, Ann <ann@example.com> wrote:", sometimes over two lines.
    let starts_intro = ["on ", "le ", "am ", "el ", "il "]
        .iter()
        .any(|s| lower.starts_with(s));
    if starts_intro && (intro(&lower) || intro(&next.to_lowercase())) {
        return true;
    }
    if lower.starts_with("-----original message-----")
        || (trimmed.len() >= 20 && trimmed.chars().all(|c| c == '_'))
    {
        return true;
    }
    // Outlook's header block: "From: ..." then "Sent: ..." or "Date: ...".
    lower.starts_with("from:") && {
        let next = next.to_lowercase();
        next.starts_with("sent:") || next.starts_with("date:")
    }
}

/// The Herald message a `Message-ID` of ours names: its local part starts with the message's
/// id (`<id@herald>` raw MIME, `<id-without-dashes.attempt@domain>` SMTP).
pub fn herald_message(message_id: &str) -> Option<MessageId> {
    let local = local_part(message_id);
    MessageId::parse(local.split('.').next().unwrap_or(local))
}

/// A `Message-ID`'s local part, without brackets: what SES's own ids are
/// (`<ses-id@email.amazonses.com>`).
pub fn local_part(message_id: &str) -> &str {
    let id = message_id
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>');
    id.split_once('@').map(|(local, _)| local).unwrap_or(id)
}

impl InboundEmail {
    /// The message ids a reply names, the most telling first: `In-Reply-To`, then the last of
    /// `References`, newest first, at most [`MAX_REFERENCES`] in all.
    pub fn replied_ids(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = Vec::with_capacity(MAX_REFERENCES);
        let named = self.in_reply_to.iter().chain(self.references.iter().rev());
        for id in named.take(2 * MAX_REFERENCES) {
            if ids.len() < MAX_REFERENCES && !ids.contains(&id.as_str()) {
                ids.push(id);
            }
        }
        ids
    }

    /// Cuts the HTML, then the text, until the stored JSON (beside a body of `body_len`
    /// bytes) fits [`MAX_STORED_JSON`].
    fn fit(&mut self, body_len: usize) {
        let size = |e: &InboundEmail| serde_json::to_string(e).map_or(0, |j| j.len()) + body_len;
        while size(self) > MAX_STORED_JSON {
            let longest = match (&mut self.html, &mut self.text) {
                (Some(h), Some(t)) if h.len() >= t.len() => h,
                (Some(h), None) => h,
                (_, Some(t)) => t,
                (None, None) => return,
            };
            let (half, _) = cut_at(longest, longest.len() / 2);
            *longest = half.to_owned();
            self.truncated = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPLY: &str = "From: Ann Lee <ann@example.com>\r\n\
To: Acme Support <support@acme.example>\r\n\
Cc: bob@example.com\r\n\
Subject: Re: Your booking\r\n\
Message-ID: <reply-1@mail.example.com>\r\n\
In-Reply-To: <0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b@herald>\r\n\
References: <first@example.com> <0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b@herald>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b1\"\r\n\
\r\n\
--b1\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
Yes, Tuesday works.\r\n\
\r\n\
On Mon, 30 Nov 2026 at 10:00, Acme <support@acme.example> wrote:\r\n\
> Does Tuesday work for you?\r\n\
--b1\r\n\
Content-Type: image/png; name=\"dog.png\"\r\n\
Content-Disposition: attachment; filename=\"dog.png\"\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
iVBORw0KGgo=\r\n\
--b1--\r\n";

    #[test]
    fn a_reply_is_parsed_with_its_new_part_its_references_and_its_attachment() {
        let parsed = ParsedEmail::parse(REPLY.as_bytes()).unwrap();
        assert_eq!(parsed.from, "ann@example.com");
        assert_eq!(parsed.to, ["support@acme.example"]);
        assert_eq!(parsed.new_part, "Yes, Tuesday works.");
        let e = &parsed.email;
        assert_eq!(e.subject.as_deref(), Some("Re: Your booking"));
        assert_eq!(e.message_id.as_deref(), Some("reply-1@mail.example.com"));
        assert_eq!(e.cc, ["bob@example.com"]);
        assert!(e.text.as_deref().unwrap().contains("> Does Tuesday"));
        assert_eq!(
            e.replied_ids(),
            [
                "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b@herald",
                "first@example.com"
            ]
        );
        assert_eq!(parsed.attachments.len(), 1);
        let a = &parsed.attachments[0];
        assert_eq!(a.info.filename.as_deref(), Some("dog.png"));
        assert_eq!(a.info.content_type, "image/png");
        assert_eq!(a.bytes, b"\x89PNG\r\n\x1a\n");
        assert!(!e.truncated);
    }

    #[test]
    fn our_message_ids_name_our_messages() {
        let id = MessageId::new();
        let simple = id.as_uuid().simple();
        assert_eq!(herald_message(&format!("<{id}@herald>")), Some(id));
        assert_eq!(
            herald_message(&format!("<{simple}.2@acme.example>")),
            Some(id)
        );
        assert_eq!(herald_message("<0100018c@email.amazonses.com>"), None);
        assert_eq!(local_part("<0100018c@email.amazonses.com>"), "0100018c");
    }

    #[test]
    fn the_new_part_stops_at_every_kind_of_history() {
        for (text, new) in [
            ("Thanks!\n\n> earlier\n", "Thanks!"),
            (
                "Sure.\nOn Mon, 30 Nov 2026, Acme <a@b.c>\nwrote:\nold",
                "Sure.",
            ),
            ("Oui.\nLe lun. 30 nov. 2026, Acme a écrit :\nold", "Oui."),
            ("Fine\n-----Original Message-----\nFrom: x", "Fine"),
            ("Ok\n\nFrom: Acme\nSent: Monday\nTo: Ann\n", "Ok"),
            ("Ok\n________________________________\nFrom: Acme", "Ok"),
            ("See you\n-- \nAnn Lee\nCEO", "See you"),
            ("> only a quote\n", ""),
            ("> When?\nTuesday.\n> Where?\nHere.", "Tuesday.\nHere."),
            ("On second thought, no.", "On second thought, no."),
            (
                "From: the garden, with love\nbye",
                "From: the garden, with love\nbye",
            ),
        ] {
            assert_eq!(new_part(text), new, "{text:?}");
        }
    }

    #[test]
    fn long_text_is_cut_and_marked() {
        let body = "é".repeat(MAX_KEPT_TEXT);
        let raw = format!(
            "From: a@example.com\r\nTo: b@example.com\r\nSubject: long\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\r\n{body}"
        );
        let parsed = ParsedEmail::parse(raw.as_bytes()).unwrap();
        assert!(parsed.email.truncated);
        assert!(parsed.email.text.unwrap().len() <= MAX_KEPT_TEXT);
    }

    #[test]
    fn hostile_headers_and_escapes_are_bounded() {
        let refs: String = (0..100_000).map(|i| format!("<r{i}@x> ")).collect();
        let body = "\u{1}".repeat(90 * 1024);
        let raw = format!(
            "From: a@example.com\r\nTo: b@example.com\r\nReferences: {refs}\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\r\n{body}"
        );
        let parsed = ParsedEmail::parse(raw.as_bytes()).unwrap();
        assert_eq!(parsed.email.references.len(), MAX_REFERENCES);
        assert_eq!(parsed.email.references.last().unwrap(), "r99999@x");
        let stored = serde_json::to_string(&parsed.email).unwrap().len() + parsed.new_part.len();
        assert!(stored <= MAX_STORED_JSON, "{stored}");
        assert!(parsed.email.truncated);
    }

    #[test]
    fn a_message_without_a_sender_is_refused() {
        assert!(ParsedEmail::parse(b"To: b@example.com\r\n\r\nhi").is_err());
        assert!(ParsedEmail::parse(b"").is_err());
    }
}
