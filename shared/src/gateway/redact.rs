//! Keeps provider credentials out of what a gateway's failure becomes: the stored `last_error`
//! and event detail, the API's answers, the logs. A provider may echo a request back (its URL
//! with Telegram's bot token, an Authorization header, a form body), so a gateway cannot
//! promise clean error text itself; the registry removes every configured secret, in every
//! form it travels in, from each failure before the engine sees it.

use std::sync::Arc;

use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::Value;

use crate::ports::GatewayError;

/// What a secret is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Removes a fixed set of secret values from text.
#[derive(Clone, Default)]
pub struct Redactor {
    /// The values and their encodings; none empty.
    needles: Arc<[String]>,
}

impl Redactor {
    /// A redactor for these values, each also URL-encoded, JSON-escaped and base64-encoded
    /// (so `user:secret` covers a basic-auth header). Blank values are left out: they would
    /// blot out every space.
    pub fn new<I, S>(values: I) -> Redactor
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut needles: Vec<String> = values
            .into_iter()
            .filter(|v| !v.as_ref().trim().is_empty())
            .flat_map(|v| encodings(v.as_ref()))
            .filter(|n| !n.is_empty())
            .collect();
        needles.sort();
        needles.dedup();
        Redactor {
            needles: needles.into(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// `text` with every occurrence of a secret (overlapping ones merged) replaced.
    pub fn redact(&self, text: &str) -> String {
        let mut hits: Vec<(usize, usize)> = self
            .needles
            .iter()
            .flat_map(|n| text.match_indices(n.as_str()))
            .map(|(at, found)| (at, at + found.len()))
            .collect();
        if hits.is_empty() {
            return text.to_owned();
        }
        hits.sort_unstable();
        let mut out = String::with_capacity(text.len());
        let mut done = 0;
        for (start, end) in hits {
            if start >= done {
                out.push_str(&text[done..start]);
                out.push_str(REDACTED);
                done = end;
            } else {
                done = done.max(end);
            }
        }
        out.push_str(&text[done..]);
        out
    }

    /// The same failure with its text redacted.
    pub fn error(&self, e: GatewayError) -> GatewayError {
        match e {
            GatewayError::Transient(text) => GatewayError::Transient(self.redact(&text)),
            GatewayError::Permanent { code, message } => GatewayError::Permanent {
                code: self.redact(&code),
                message: self.redact(&message),
            },
            throttled @ GatewayError::Throttled { .. } => throttled,
        }
    }

    /// Every string in a JSON value (keys too) redacted.
    pub fn json(&self, value: Value) -> Value {
        match value {
            Value::String(s) => Value::String(self.redact(&s)),
            Value::Array(items) => Value::Array(items.into_iter().map(|v| self.json(v)).collect()),
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .map(|(k, v)| (self.redact(&k), self.json(v)))
                    .collect(),
            ),
            other => other,
        }
    }
}

/// The forms a value is sent or echoed in: as is, URL-encoded (a path, a form, a query),
/// JSON-escaped, and base64 without padding (a prefix of the padded form).
fn encodings(value: &str) -> Vec<String> {
    let form = serde_urlencoded::to_string([("v", value)])
        .map(|s| s.trim_start_matches("v=").to_owned())
        .unwrap_or_default();
    let json = serde_json::to_string(value)
        .map(|s| s.trim_matches('"').to_owned())
        .unwrap_or_default();
    vec![
        value.to_owned(),
        form.replace('+', "%20"),
        form,
        json,
        STANDARD_NO_PAD.encode(value),
        URL_SAFE_NO_PAD.encode(value),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;

    #[test]
    fn every_form_of_a_secret_is_replaced() {
        let r = Redactor::new(["tok/en 1", "", "AC1:pass\"word"]);
        assert!(!r.is_empty());
        let text = format!(
            "GET /bot tok/en 1/send; /bottok%2Fen%201/x; tok%2Fen+1; {}; Basic {}; \"AC1:pass\\\"word\"",
            STANDARD.encode("tok/en 1"),
            STANDARD.encode("AC1:pass\"word")
        );
        let out = r.redact(&text);
        for leak in ["tok", "en 1", "en%201", "en+1", "pass", "dG9r", "QUMx"] {
            assert!(!out.contains(leak), "{leak} left in {out}");
        }
        assert!(out.starts_with("GET /bot [redacted]/send"), "{out}");
        assert_eq!(Redactor::new(["", " "]).redact("a b"), "a b");
        assert!(Redactor::default().is_empty());
    }

    #[test]
    fn overlapping_secrets_become_one_mark() {
        let r = Redactor::new(["123:abc", "abcdef"]);
        assert_eq!(r.redact("x 123:abcdef y"), "x [redacted] y");
        assert_eq!(r.redact("abcdef abcdef"), "[redacted] [redacted]");
    }

    #[test]
    fn errors_and_json_are_redacted_throttles_pass() {
        let r = Redactor::new(["s3cret"]);
        let e = r.error(GatewayError::Permanent {
            code: "s3cret".into(),
            message: "bad key s3cret".into(),
        });
        assert!(
            matches!(e, GatewayError::Permanent { code, message } if code == REDACTED && message == "bad key [redacted]")
        );
        let e = r.error(GatewayError::Transient("url /s3cret/x".into()));
        assert!(matches!(e, GatewayError::Transient(t) if t == "url /[redacted]/x"));
        let e = r.error(GatewayError::Throttled { retry_after: None });
        assert!(matches!(e, GatewayError::Throttled { retry_after: None }));
        let v = r.json(serde_json::json!({ "a": ["s3cret", 1], "s3cret": { "b": "x s3cret" } }));
        assert_eq!(
            v,
            serde_json::json!({ "a": ["[redacted]", 1], "[redacted]": { "b": "x [redacted]" } })
        );
    }
}
