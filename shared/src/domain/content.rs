//! What each channel accepts as content, checked after template rendering.

use super::sms::{self, SmsInfo, MAX_SMS_SEGMENTS};
use super::{Channel, Content, FieldError};

pub const MAX_SUBJECT_CHARS: usize = 998;
pub const MAX_PUSH_TITLE_CHARS: usize = 256;
/// Telegram's and WhatsApp's limit on one text message.
pub const MAX_CHAT_TEXT_CHARS: usize = 4096;

/// The most bytes a message's rendered content (subject, text and html together) may take, per
/// channel: what the channel can carry, so a template cannot amplify a small request into a
/// large stored message. SMS: 10 segments of up to 160 characters of up to 4 bytes.
pub const fn max_content_bytes(channel: Channel) -> usize {
    match channel {
        Channel::Email => 256 * 1024,
        Channel::Sms => MAX_SMS_SEGMENTS * 160 * 4,
        Channel::Push => 4 * 1024,
        Channel::Whatsapp | Channel::Telegram => MAX_CHAT_TEXT_CHARS * 4,
    }
}

/// Where content came from, so errors point at the right field.
#[derive(Debug, Clone, Copy)]
pub enum ContentOrigin {
    Inline,
    Template,
}

impl ContentOrigin {
    fn pointer(self, field: &str) -> String {
        match self {
            ContentOrigin::Inline => format!("/{field}"),
            ContentOrigin::Template => "/template".into(),
        }
    }
}

/// Checks content for a channel; for SMS returns the encoding and segment count to store.
pub fn check(
    channel: Channel,
    c: &Content,
    origin: ContentOrigin,
) -> Result<Option<SmsInfo>, FieldError> {
    let absent = |field: &str, v: &Option<String>| match v {
        Some(_) => Err(FieldError::new(
            origin.pointer(field),
            "not_allowed",
            format!("`{field}` is not used by the {channel} channel"),
        )),
        None => Ok(()),
    };
    let non_empty = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.trim().is_empty());
    let size = c.byte_len();
    let cap = max_content_bytes(channel);
    if size > cap {
        return Err(FieldError::new(
            origin.pointer("body"),
            "too_large",
            format!("the {channel} content is {size} bytes; the limit is {cap} bytes (subject, body and html together)"),
        ));
    }
    match channel {
        Channel::Email => {
            let subject = c.subject.as_deref().unwrap_or("");
            if subject.trim().is_empty() {
                return Err(FieldError::new(
                    origin.pointer("subject"),
                    "required",
                    "email needs a subject",
                ));
            }
            if subject.chars().count() > MAX_SUBJECT_CHARS {
                return Err(FieldError::new(
                    origin.pointer("subject"),
                    "too_long",
                    format!("subject is longer than {MAX_SUBJECT_CHARS} characters"),
                ));
            }
            if subject.contains(['\r', '\n']) {
                return Err(FieldError::new(
                    origin.pointer("subject"),
                    "invalid",
                    "subject must be one line",
                ));
            }
            if !non_empty(&c.body) && !non_empty(&c.html) {
                return Err(FieldError::new(
                    origin.pointer("body"),
                    "required",
                    "email needs a body or html",
                ));
            }
            Ok(None)
        }
        Channel::Sms => {
            absent("subject", &c.subject)?;
            absent("html", &c.html)?;
            let body = c.body.as_deref().unwrap_or("");
            if body.is_empty() {
                return Err(FieldError::new(
                    origin.pointer("body"),
                    "required",
                    "sms needs a body",
                ));
            }
            let info = sms::analyze(body);
            if info.segments > MAX_SMS_SEGMENTS {
                return Err(FieldError::new(
                    origin.pointer("body"),
                    "too_many_segments",
                    format!(
                        "sms body needs {} {} segments; at most {MAX_SMS_SEGMENTS} are allowed",
                        info.segments,
                        info.encoding.as_str()
                    ),
                ));
            }
            Ok(Some(info))
        }
        Channel::Push => {
            absent("html", &c.html)?;
            if !non_empty(&c.body) {
                return Err(FieldError::new(
                    origin.pointer("body"),
                    "required",
                    "push needs a body",
                ));
            }
            if c.subject
                .as_deref()
                .is_some_and(|s| s.chars().count() > MAX_PUSH_TITLE_CHARS)
            {
                return Err(FieldError::new(
                    origin.pointer("subject"),
                    "too_long",
                    format!("push title is longer than {MAX_PUSH_TITLE_CHARS} characters"),
                ));
            }
            Ok(None)
        }
        Channel::Whatsapp | Channel::Telegram => {
            absent("subject", &c.subject)?;
            absent("html", &c.html)?;
            if !non_empty(&c.body) {
                return Err(FieldError::new(
                    origin.pointer("body"),
                    "required",
                    format!("{channel} needs a body"),
                ));
            }
            if c.body
                .as_deref()
                .is_some_and(|b| b.chars().count() > MAX_CHAT_TEXT_CHARS)
            {
                return Err(FieldError::new(
                    origin.pointer("body"),
                    "too_long",
                    format!("{channel} text is longer than {MAX_CHAT_TEXT_CHARS} characters"),
                ));
            }
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(subject: Option<&str>, body: Option<&str>, html: Option<&str>) -> Content {
        Content {
            subject: subject.map(Into::into),
            body: body.map(Into::into),
            html: html.map(Into::into),
        }
    }

    #[test]
    fn email_rules() {
        assert!(check(
            Channel::Email,
            &content(Some("Hi"), Some("x"), None),
            ContentOrigin::Inline
        )
        .is_ok());
        assert!(check(
            Channel::Email,
            &content(Some("Hi"), None, Some("<p>")),
            ContentOrigin::Inline
        )
        .is_ok());
        let long = "s".repeat(999);
        let err = check(
            Channel::Email,
            &content(Some(&long), Some("x"), None),
            ContentOrigin::Inline,
        )
        .unwrap_err();
        assert_eq!((err.pointer.as_str(), err.code), ("/subject", "too_long"));
        let ok998 = "s".repeat(998);
        assert!(check(
            Channel::Email,
            &content(Some(&ok998), Some("x"), None),
            ContentOrigin::Inline
        )
        .is_ok());
        let err = check(
            Channel::Email,
            &content(Some("a\r\nBcc: x"), Some("x"), None),
            ContentOrigin::Inline,
        )
        .unwrap_err();
        assert_eq!(err.code, "invalid");
        let err = check(
            Channel::Email,
            &content(Some("Hi"), None, None),
            ContentOrigin::Template,
        )
        .unwrap_err();
        assert_eq!(err.pointer, "/template");
    }

    #[test]
    fn sms_segments_are_stored_and_limited() {
        let info = check(
            Channel::Sms,
            &content(None, Some("hello"), None),
            ContentOrigin::Inline,
        )
        .unwrap()
        .unwrap();
        assert_eq!(info.segments, 1);
        let ten = "a".repeat(153 * 10);
        assert_eq!(
            check(
                Channel::Sms,
                &content(None, Some(&ten), None),
                ContentOrigin::Inline
            )
            .unwrap()
            .unwrap()
            .segments,
            10
        );
        let eleven = "a".repeat(153 * 10 + 1);
        let err = check(
            Channel::Sms,
            &content(None, Some(&eleven), None),
            ContentOrigin::Inline,
        )
        .unwrap_err();
        assert_eq!(err.code, "too_many_segments");
        let err = check(
            Channel::Sms,
            &content(Some("x"), Some("y"), None),
            ContentOrigin::Inline,
        )
        .unwrap_err();
        assert_eq!(err.code, "not_allowed");
    }

    #[test]
    fn content_is_capped_per_channel() {
        let big = "x".repeat(4 * 1024 + 1);
        let err = check(
            Channel::Push,
            &content(Some("T"), Some(&big), None),
            ContentOrigin::Template,
        )
        .unwrap_err();
        assert_eq!((err.pointer.as_str(), err.code), ("/template", "too_large"));
        let html = "x".repeat(200 * 1024);
        let text = "y".repeat(60 * 1024);
        let err = check(
            Channel::Email,
            &content(Some("S"), Some(&text), Some(&html)),
            ContentOrigin::Inline,
        )
        .unwrap_err();
        assert_eq!(err.code, "too_large", "the parts count together");
        assert!(check(
            Channel::Email,
            &content(Some("S"), Some(&text), None),
            ContentOrigin::Inline
        )
        .is_ok());
    }

    #[test]
    fn push_needs_a_body() {
        assert!(check(
            Channel::Push,
            &content(Some("Title"), Some("b"), None),
            ContentOrigin::Inline
        )
        .is_ok());
        assert!(check(
            Channel::Push,
            &content(Some("Title"), None, None),
            ContentOrigin::Inline
        )
        .is_err());
    }
}
