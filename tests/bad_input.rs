//! Bad input: a table of malformed requests, each of which must get the expected 4xx with an RFC
//! 9457 problem (`application/problem+json`, a stable `type`, `status`, and for a field its JSON
//! pointer), and never a 5xx. A few well-formed boundary requests sit in the table as positive
//! controls, so the limits are pinned from both sides.

// A test fails by panicking; unwrap/expect on set-up steps is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use herald_tests::TestServer;
use reqwest::Method;
use serde_json::{json, Value};

const PROBLEM_BASE: &str = "https://herald.dev/problems/";

/// Which credentials a case presents.
#[derive(Debug, Clone, Copy)]
enum Auth {
    /// A live key of tenant `acme`.
    Good,
    /// No `Authorization` header at all.
    None,
    /// `Bearer` followed by something that is not shaped like a key.
    Garbage,
    /// A key of `acme` that has been revoked.
    Revoked,
    /// A live key of another tenant, `globex`.
    Other,
}

struct Case {
    name: String,
    method: Method,
    path: String,
    auth: Auth,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    status: u16,
    /// The problem `type` after [`PROBLEM_BASE`]; `None` for a positive control (2xx).
    problem: Option<&'static str>,
    /// Expected `errors[0].pointer`.
    pointer: Option<String>,
    /// Expected `missing` (template variables).
    missing: Option<Vec<&'static str>>,
}

impl Case {
    fn new(name: impl Into<String>, method: Method, path: impl Into<String>) -> Case {
        Case {
            name: name.into(),
            method,
            path: path.into(),
            auth: Auth::Good,
            headers: Vec::new(),
            body: None,
            status: 0,
            problem: None,
            pointer: None,
            missing: None,
        }
    }

    fn get(name: impl Into<String>, path: impl Into<String>) -> Case {
        Case::new(name, Method::GET, path)
    }

    /// A POST of raw bytes declared as `application/json`.
    fn raw(name: impl Into<String>, path: impl Into<String>, body: impl Into<Vec<u8>>) -> Case {
        Case::new(name, Method::POST, path)
            .header("content-type", "application/json")
            .bytes(body)
    }

    /// A POST of a JSON document.
    fn post(name: impl Into<String>, path: impl Into<String>, body: Value) -> Case {
        Case::raw(name, path, body.to_string())
    }

    /// A PUT of a JSON document.
    fn put(name: impl Into<String>, path: impl Into<String>, body: Value) -> Case {
        Case::new(name, Method::PUT, path)
            .header("content-type", "application/json")
            .bytes(body.to_string())
    }

    fn bytes(mut self, body: impl Into<Vec<u8>>) -> Case {
        self.body = Some(body.into());
        self
    }

    fn header(mut self, name: &str, value: impl Into<String>) -> Case {
        self.headers.retain(|(h, _)| !h.eq_ignore_ascii_case(name));
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    fn without_header(mut self, name: &str) -> Case {
        self.headers.retain(|(h, _)| !h.eq_ignore_ascii_case(name));
        self
    }

    fn auth(mut self, auth: Auth) -> Case {
        self.auth = auth;
        self
    }

    fn expect(mut self, status: u16, problem: &'static str) -> Case {
        self.status = status;
        self.problem = Some(problem);
        self
    }

    fn at(mut self, pointer: &str) -> Case {
        self.pointer = Some(pointer.to_owned());
        self
    }

    fn missing(mut self, names: &[&'static str]) -> Case {
        self.missing = Some(names.to_vec());
        self
    }

    /// A positive control: the request is well formed and must succeed with `status`.
    fn succeeds(mut self, status: u16) -> Case {
        self.status = status;
        self.problem = None;
        self
    }
}

fn email() -> Value {
    json!({ "channel": "email", "priority": "P4", "to": "user@example.com",
            "subject": "Hello", "body": "Hi there" })
}

fn sms() -> Value {
    json!({ "channel": "sms", "priority": "P1", "to": "+15005550006", "body": "Your code is 123" })
}

fn push() -> Value {
    json!({ "channel": "push", "priority": "P0", "to": "fcm-device-token-abc",
            "subject": "Alert", "body": "Storm warning" })
}

fn bulk() -> Value {
    json!({ "channel": "email", "priority": "P3", "subject": "News", "body": "Monthly news",
            "recipients": [{ "to": "a@example.com" }] })
}

/// `base` with `field` set to `value`.
fn with(mut base: Value, field: &str, value: Value) -> Value {
    base[field] = value;
    base
}

/// `base` without `field`.
fn without(mut base: Value, field: &str) -> Value {
    base.as_object_mut().expect("object").remove(field);
    base
}

fn recipients(n: usize) -> Value {
    Value::Array(
        (0..n)
            .map(|i| json!({ "to": format!("r{i}@example.com") }))
            .collect(),
    )
}

/// An ASCII domain of exactly `n` octets (n >= 5), labels of at most 63 characters, ending in .com.
fn domain_of(n: usize) -> String {
    let mut labels = Vec::new();
    let mut left = n - 4; // room before ".com"
    while left > 0 {
        let take = left.min(63);
        // Never leave exactly 1 octet: it would be a lone dot.
        let take = if left - take == 1 { take - 1 } else { take };
        labels.push("a".repeat(take));
        left -= take;
        left = left.saturating_sub(1); // the dot after this label
    }
    let d = format!("{}.com", labels.join("."));
    assert_eq!(d.len(), n, "domain_of({n})");
    d
}

fn cases(acme_message: &str) -> Vec<Case> {
    let m = "/v1/messages";
    let b = "/v1/messages/bulk";
    let year_ahead = (chrono::Utc::now() + chrono::Duration::days(365)).to_rfc3339();
    let long_local = format!("{}@example.com", "a".repeat(65));
    let too_long_total = format!("{}@{}", "a".repeat(64), domain_of(190)); // 255 octets
    assert_eq!(too_long_total.len(), 255);
    let long_label = format!("user@{}.com", "b".repeat(64));
    let deep = format!(
        "{{\"channel\":\"email\",\"data\":{}{}}}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let positional = json!([
        "email",
        "P4",
        "user@example.com",
        null,
        "Hello",
        "Hi there",
        null,
        null,
        null,
        null,
        null,
        null,
        null,
        null
    ]);
    let mut bom = b"\xEF\xBB\xBF".to_vec();
    bom.extend_from_slice(email().to_string().as_bytes());

    vec![
        // ---- the body is not a JSON object ------------------------------------------------
        Case::raw("malformed JSON", m, r#"{"channel": "email", "#).expect(400, "malformed-json"),
        Case::raw(
            "trailing garbage after the object",
            m,
            format!("{} xyz", email()),
        )
        .expect(400, "malformed-json"),
        Case::raw(
            "two objects back to back",
            m,
            format!("{}{}", email(), email()),
        )
        .expect(400, "malformed-json"),
        Case::raw("empty body", m, "").expect(400, "malformed-json"),
        Case::raw("byte order mark before the JSON", m, bom).expect(400, "malformed-json"),
        Case::raw(
            "invalid UTF-8 inside a string",
            m,
            b"{\"channel\":\"email\",\"to\":\"\xff\xfe\"}".to_vec(),
        )
        .expect(400, "malformed-json"),
        Case::raw("nesting 10,000 deep", m, deep).expect(400, "malformed-json"),
        Case::raw("JSON array instead of an object", m, "[]")
            .expect(422, "validation")
            .at(""),
        Case::post("positional array of every field", m, positional)
            .expect(422, "validation")
            .at(""),
        Case::raw("JSON null instead of an object", m, "null")
            .expect(422, "validation")
            .at(""),
        Case::raw("JSON string instead of an object", m, r#""email""#)
            .expect(422, "validation")
            .at(""),
        // ---- content type -----------------------------------------------------------------
        Case::post("text/plain content type", m, email())
            .header("content-type", "text/plain")
            .expect(415, "unsupported-media-type"),
        Case::post("no content type", m, email())
            .without_header("content-type")
            .expect(415, "unsupported-media-type"),
        Case::post("form content type", m, email())
            .header("content-type", "application/x-www-form-urlencoded")
            .expect(415, "unsupported-media-type"),
        Case::post("json content type with charset (control)", m, email())
            .header("content-type", "application/json; charset=utf-8")
            .succeeds(202),
        // ---- shape of the request ---------------------------------------------------------
        Case::post(
            "unknown top-level field",
            m,
            with(email(), "bogus", json!(1)),
        )
        .expect(400, "unknown-field")
        .at("/bogus"),
        Case::post(
            "camelCase field name",
            m,
            with(email(), "sendAt", json!("2030-01-01T00:00:00Z")),
        )
        .expect(400, "unknown-field")
        .at("/sendAt"),
        Case::post("missing to", m, without(email(), "to"))
            .expect(422, "validation")
            .at("/to"),
        Case::post("missing channel", m, without(email(), "channel"))
            .expect(422, "validation")
            .at("/channel"),
        Case::post("missing priority", m, without(email(), "priority"))
            .expect(422, "validation")
            .at("/priority"),
        Case::post("null channel", m, with(email(), "channel", Value::Null))
            .expect(422, "validation")
            .at("/channel"),
        Case::post("unknown channel", m, with(email(), "channel", json!("fax")))
            .expect(422, "validation")
            .at("/channel"),
        Case::post(
            "channel in capitals",
            m,
            with(email(), "channel", json!("EMAIL")),
        )
        .expect(422, "validation")
        .at("/channel"),
        Case::post("priority P9", m, with(email(), "priority", json!("P9")))
            .expect(422, "validation")
            .at("/priority"),
        Case::post(
            "priority p0 (lowercase)",
            m,
            with(email(), "priority", json!("p0")),
        )
        .expect(422, "validation")
        .at("/priority"),
        Case::post(
            "priority as a number",
            m,
            with(email(), "priority", json!(0)),
        )
        .expect(422, "validation")
        .at("/priority"),
        Case::post("priority null", m, with(email(), "priority", Value::Null))
            .expect(422, "validation")
            .at("/priority"),
        Case::post(
            "channel as an object",
            m,
            with(email(), "channel", json!({ "email": 1 })),
        )
        .expect(422, "validation")
        .at("/channel/email"),
        Case::raw("array of a number instead of an object", m, "[1]")
            .expect(422, "validation")
            .at(""),
        Case::raw("truncated array", m, "[\"email\", ").expect(400, "malformed-json"),
        Case::post("to as a number", m, with(email(), "to", json!(123)))
            .expect(422, "validation")
            .at("/to"),
        Case::post(
            "subject as an array",
            m,
            with(email(), "subject", json!(["Hello"])),
        )
        .expect(422, "validation")
        .at("/subject"),
        // ---- email addresses --------------------------------------------------------------
        Case::post(
            "email without @",
            m,
            with(email(), "to", json!("user.example.com")),
        )
        .expect(422, "validation")
        .at("/to"),
        Case::post(
            "email with a 65-octet local part",
            m,
            with(email(), "to", json!(long_local)),
        )
        .expect(422, "validation")
        .at("/to"),
        Case::post(
            "email of 255 octets",
            m,
            with(email(), "to", json!(too_long_total)),
        )
        .expect(422, "validation")
        .at("/to"),
        Case::post(
            "email with a 64-octet domain label",
            m,
            with(email(), "to", json!(long_label)),
        )
        .expect(422, "validation")
        .at("/to"),
        Case::post(
            "email with an underscore in the domain",
            m,
            with(email(), "to", json!("user@exa_mple.com")),
        )
        .expect(422, "validation")
        .at("/to"),
        Case::post(
            "email with a single-label domain",
            m,
            with(email(), "to", json!("user@localhost")),
        )
        .expect(422, "validation")
        .at("/to"),
        Case::post("empty email address", m, with(email(), "to", json!("")))
            .expect(422, "validation")
            .at("/to"),
        Case::post(
            "IDN email address (control)",
            m,
            with(email(), "to", json!("josé@bücher.de")),
        )
        .succeeds(202),
        Case::post(
            "email from without @",
            m,
            with(email(), "from", json!("noreply")),
        )
        .expect(422, "validation")
        .at("/from"),
        // ---- phone numbers and device tokens ----------------------------------------------
        Case::post("sms to 12345", m, with(sms(), "to", json!("12345")))
            .expect(422, "validation")
            .at("/to"),
        Case::post(
            "sms to +0123 (leading zero)",
            m,
            with(sms(), "to", json!("+0123456789")),
        )
        .expect(422, "validation")
        .at("/to"),
        Case::post(
            "sms to 16 digits",
            m,
            with(sms(), "to", json!("+1234567890123456")),
        )
        .expect(422, "validation")
        .at("/to"),
        Case::post(
            "sms to an email address",
            m,
            with(sms(), "to", json!("user@example.com")),
        )
        .expect(422, "validation")
        .at("/to"),
        Case::post(
            "sms from a 12-character sender id",
            m,
            with(sms(), "from", json!("HeraldAlerts")),
        )
        .expect(422, "validation")
        .at("/from"),
        Case::post("empty push token", m, with(push(), "to", json!("")))
            .expect(422, "validation")
            .at("/to"),
        Case::post(
            "push token of 4097 bytes",
            m,
            with(push(), "to", json!("a".repeat(4097))),
        )
        .expect(422, "validation")
        .at("/to"),
        Case::post(
            "push token with a space",
            m,
            with(push(), "to", json!("abc def")),
        )
        .expect(422, "validation")
        .at("/to"),
        Case::post(
            "push token of 4096 bytes (control)",
            m,
            with(push(), "to", json!("a".repeat(4096))),
        )
        .succeeds(202),
        // ---- content per channel ----------------------------------------------------------
        Case::post(
            "email subject of 999 characters",
            m,
            with(email(), "subject", json!("s".repeat(999))),
        )
        .expect(422, "validation")
        .at("/subject"),
        Case::post(
            "email subject of 998 characters (control)",
            m,
            with(email(), "subject", json!("s".repeat(998))),
        )
        .succeeds(202),
        Case::post(
            "email subject with CRLF",
            m,
            with(email(), "subject", json!("Hi\r\nBcc: x@evil.com")),
        )
        .expect(422, "validation")
        .at("/subject"),
        Case::post("email without subject", m, without(email(), "subject"))
            .expect(422, "validation")
            .at("/subject"),
        Case::post("email without body or html", m, without(email(), "body"))
            .expect(422, "validation")
            .at("/body"),
        Case::post("sms with a subject", m, with(sms(), "subject", json!("Hi")))
            .expect(422, "validation")
            .at("/subject"),
        Case::post("sms with html", m, with(sms(), "html", json!("<p>Hi</p>")))
            .expect(422, "validation")
            .at("/html"),
        Case::post("sms without a body", m, without(sms(), "body"))
            .expect(422, "validation")
            .at("/body"),
        Case::post(
            "sms of 11 GSM-7 segments",
            m,
            with(sms(), "body", json!("a".repeat(153 * 10 + 1))),
        )
        .expect(422, "validation")
        .at("/body"),
        Case::post(
            "sms of 10 GSM-7 segments (control)",
            m,
            with(sms(), "body", json!("a".repeat(153 * 10))),
        )
        .succeeds(202),
        Case::post("push without a body", m, without(push(), "body"))
            .expect(422, "validation")
            .at("/body"),
        Case::post(
            "push title of 257 characters",
            m,
            with(push(), "subject", json!("t".repeat(257))),
        )
        .expect(422, "validation")
        .at("/subject"),
        Case::post(
            "body over 256 KB",
            m,
            with(email(), "body", json!("x".repeat(256 * 1024 + 1))),
        )
        .expect(413, "payload-too-large"),
        // ---- templates in a send ----------------------------------------------------------
        Case::post(
            "template and body together",
            m,
            with(email(), "template", json!("welcome")),
        )
        .expect(422, "validation")
        .at("/template"),
        Case::post(
            "template that does not exist",
            m,
            json!({ "channel": "email", "priority": "P4", "to": "user@example.com",
                           "template": "no-such-template" }),
        )
        .expect(422, "template-not-found")
        .at("/template"),
        Case::post(
            "template with a missing variable",
            m,
            json!({ "channel": "email", "priority": "P4", "to": "user@example.com",
                           "template": "welcome", "data": { "name": "Ann" } }),
        )
        .expect(422, "missing-template-variable")
        .at("/data")
        .missing(&["code"]),
        Case::post(
            "template with an invalid name",
            m,
            json!({ "channel": "email", "priority": "P4", "to": "user@example.com",
                           "template": "../etc/passwd" }),
        )
        .expect(422, "validation")
        .at("/template"),
        Case::post(
            "data that is not an object",
            m,
            with(email(), "data", json!([1, 2])),
        )
        .expect(422, "validation")
        .at("/data"),
        Case::post(
            "metadata that is not an object",
            m,
            with(email(), "metadata", json!("tag")),
        )
        .expect(422, "validation")
        .at("/metadata"),
        Case::post(
            "empty message_type",
            m,
            with(email(), "message_type", json!("")),
        )
        .expect(422, "validation")
        .at("/message_type"),
        Case::post(
            "source_id of 129 characters",
            m,
            with(email(), "source_id", json!("s".repeat(129))),
        )
        .expect(422, "validation")
        .at("/source_id"),
        Case::post(
            "send_at not RFC 3339",
            m,
            with(email(), "send_at", json!("next tuesday")),
        )
        .expect(422, "validation")
        .at("/send_at"),
        Case::post(
            "send_at without a time zone",
            m,
            with(email(), "send_at", json!("2030-01-01T10:00:00")),
        )
        .expect(422, "validation")
        .at("/send_at"),
        Case::post(
            "send_at a year ahead",
            m,
            with(email(), "send_at", json!(year_ahead)),
        )
        .expect(422, "validation")
        .at("/send_at"),
        // ---- bulk -------------------------------------------------------------------------
        Case::post(
            "bulk with 0 recipients",
            b,
            with(bulk(), "recipients", json!([])),
        )
        .expect(422, "validation")
        .at("/recipients"),
        Case::post(
            "bulk with 10,001 recipients",
            b,
            with(bulk(), "recipients", recipients(10_001)),
        )
        .expect(422, "validation")
        .at("/recipients"),
        Case::post("bulk without recipients", b, without(bulk(), "recipients"))
            .expect(422, "validation")
            .at("/recipients"),
        Case::post(
            "bulk recipients not an array",
            b,
            with(bulk(), "recipients", json!("a@example.com")),
        )
        .expect(422, "validation")
        .at("/recipients"),
        Case::post(
            "bulk with a top-level to",
            b,
            with(bulk(), "to", json!("a@example.com")),
        )
        .expect(400, "unknown-field")
        .at("/to"),
        Case::post(
            "bulk with an unknown channel",
            b,
            with(bulk(), "channel", json!("pigeon")),
        )
        .expect(422, "validation")
        .at("/channel"),
        Case::raw("bulk malformed JSON", b, "{\"recipients\": [").expect(400, "malformed-json"),
        Case::post(
            "bulk whose shared html is over 256 KB",
            b,
            with(bulk(), "html", json!("x".repeat(300 * 1024))),
        )
        .expect(422, "validation")
        .at(""),
        // ---- suppression list ---------------------------------------------------------------
        Case::put(
            "suppression of an unknown channel",
            "/v1/suppressions/pigeon/x",
            json!({}),
        )
        .expect(422, "validation")
        .at("/channel"),
        Case::put(
            "suppression of a malformed email address",
            "/v1/suppressions/email/not-an-address",
            json!({}),
        )
        .expect(422, "validation")
        .at("/address"),
        Case::put(
            "suppression of an SMS number that is not E.164",
            "/v1/suppressions/sms/5550006",
            json!({}),
        )
        .expect(422, "validation")
        .at("/address"),
        Case::put(
            "suppression with an unknown reason",
            "/v1/suppressions/email/a@example.com",
            json!({ "reason": "bored" }),
        )
        .expect(422, "validation")
        .at("/reason"),
        Case::put(
            "suppression with an unknown field",
            "/v1/suppressions/email/a@example.com",
            json!({ "why": "bored" }),
        )
        .expect(400, "unknown-field")
        .at("/why"),
        Case::put(
            "suppression with a bad expires_at",
            "/v1/suppressions/email/a@example.com",
            json!({ "expires_at": "tomorrow" }),
        )
        .expect(422, "validation")
        .at("/expires_at"),
        Case::put(
            "suppression without Authorization",
            "/v1/suppressions/email/a@example.com",
            json!({}),
        )
        .auth(Auth::None)
        .expect(401, "unauthorized"),
        Case::put(
            "suppression, well formed (positive control)",
            "/v1/suppressions/sms/%2B15005550006",
            json!({ "reason": "sms_opt_out" }),
        )
        .succeeds(201),
        Case::get(
            "suppression list with an unknown scope",
            "/v1/suppressions?scope=everyone",
        )
        .expect(422, "validation")
        .at("/scope"),
        Case::get("suppression list with limit 0", "/v1/suppressions?limit=0")
            .expect(422, "validation")
            .at("/limit"),
        Case::get(
            "suppression list with limit=abc",
            "/v1/suppressions?limit=abc",
        )
        .expect(422, "validation")
        .at("/limit"),
        Case::get(
            "suppression list with an unknown parameter",
            "/v1/suppressions?sort=address",
        )
        .expect(400, "invalid-query")
        .at("/sort"),
        Case::get(
            "suppression list with a forged cursor",
            "/v1/suppressions?after=garbage",
        )
        .expect(422, "validation")
        .at("/after"),
        Case::get(
            "suppression list of an unknown channel",
            "/v1/suppressions?channel=pigeon",
        )
        .expect(422, "validation")
        .at("/channel"),
        Case::get(
            "suppression list with an unknown parameter",
            "/v1/suppressions?bogus=1",
        )
        .expect(400, "invalid-query"),
        Case::new(
            "suppression of nothing removed",
            Method::DELETE,
            "/v1/suppressions/email/nobody@example.com",
        )
        .expect(404, "not-found"),
        Case::raw(
            "suppression import sent as JSON",
            "/v1/suppressions/import",
            "{}",
        )
        .expect(415, "unsupported-media-type"),
        Case::new(
            "suppression import without the address column",
            Method::POST,
            "/v1/suppressions/import",
        )
        .header("content-type", "text/csv")
        .bytes("channel,email\nemail,a@example.com\n")
        .expect(400, "malformed-csv"),
        // ---- template management ----------------------------------------------------------
        Case::put(
            "template PUT with a syntax error in text",
            "/v1/templates/broken",
            json!({ "subject": "Hi", "text": "Hello {{ name" }),
        )
        .expect(422, "validation")
        .at("/text"),
        Case::put(
            "template PUT with a syntax error in html",
            "/v1/templates/broken",
            json!({ "subject": "Hi", "html": "{% if %}<p>x</p>" }),
        )
        .expect(422, "validation")
        .at("/html"),
        Case::put(
            "template PUT with no parts",
            "/v1/templates/empty",
            json!({}),
        )
        .expect(422, "validation")
        .at(""),
        Case::put(
            "template PUT with an unknown part",
            "/v1/templates/other",
            json!({ "body": "x" }),
        )
        .expect(400, "unknown-field")
        .at("/body"),
        Case::put(
            "template PUT with an invalid name",
            "/v1/templates/bad%20name",
            json!({ "text": "x" }),
        )
        .expect(422, "validation")
        .at("/name"),
        Case::put(
            "template PUT with a 129-character name",
            format!("/v1/templates/{}", "n".repeat(129)),
            json!({ "text": "x" }),
        )
        .expect(422, "validation")
        .at("/name"),
        Case::put(
            "template PUT as text/plain",
            "/v1/templates/plain",
            json!({ "text": "x" }),
        )
        .header("content-type", "text/plain")
        .expect(415, "unsupported-media-type"),
        Case::get(
            "template GET that does not exist",
            "/v1/templates/no-such-template",
        )
        .expect(404, "not-found"),
        Case::new(
            "template DELETE that does not exist",
            Method::DELETE,
            "/v1/templates/no-such-template",
        )
        .expect(404, "not-found"),
        // ---- authentication ---------------------------------------------------------------
        Case::post("missing Authorization", m, email())
            .auth(Auth::None)
            .expect(401, "unauthorized"),
        Case::post("garbage bearer", m, email())
            .auth(Auth::Garbage)
            .expect(401, "unauthorized"),
        Case::post("revoked key", m, email())
            .auth(Auth::Revoked)
            .expect(401, "unauthorized"),
        Case::post("Basic instead of Bearer", m, email())
            .auth(Auth::None)
            .header("authorization", "Basic dXNlcjpwYXNz")
            .expect(401, "unauthorized"),
        Case::post("well-shaped key that was never issued", m, email())
            .auth(Auth::None)
            .header(
                "authorization",
                format!("Bearer hk_zzzzzzzz_{}", "z".repeat(38)),
            )
            .expect(401, "unauthorized"),
        Case::get("stats without Authorization", "/v1/stats/queue")
            .auth(Auth::None)
            .expect(401, "unauthorized"),
        Case::get(
            "message GET with a revoked key",
            format!("/v1/messages/{acme_message}"),
        )
        .auth(Auth::Revoked)
        .expect(401, "unauthorized"),
        Case::raw("malformed JSON without Authorization (auth first)", m, "{")
            .auth(Auth::None)
            .expect(401, "unauthorized"),
        // ---- messages by id, routes and methods -------------------------------------------
        Case::get(
            "GET a message id that is not a uuid",
            "/v1/messages/not-a-uuid",
        )
        .expect(404, "not-found"),
        Case::get(
            "GET a message that does not exist",
            format!("/v1/messages/{}", uuid::Uuid::now_v7()),
        )
        .expect(404, "not-found"),
        Case::get(
            "GET another tenant's message",
            format!("/v1/messages/{acme_message}"),
        )
        .auth(Auth::Other)
        .expect(404, "not-found"),
        Case::new(
            "DELETE another tenant's message",
            Method::DELETE,
            format!("/v1/messages/{acme_message}"),
        )
        .auth(Auth::Other)
        .expect(404, "not-found"),
        Case::new(
            "DELETE a message id that is not a uuid",
            Method::DELETE,
            "/v1/messages/42",
        )
        .expect(404, "not-found"),
        Case::get("unknown route", "/v1/nothing-here").expect(404, "not-found"),
        Case::get("unknown version", "/v2/messages")
            .auth(Auth::None)
            .expect(404, "not-found"),
        Case::new("PUT on the send route", Method::PUT, m).expect(405, "method-not-allowed"),
        Case::new("DELETE on the send route", Method::DELETE, m).expect(405, "method-not-allowed"),
        Case::new("PATCH a template", Method::PATCH, "/v1/templates/welcome")
            .expect(405, "method-not-allowed"),
        Case::post("POST to healthz", "/healthz", json!({})).expect(405, "method-not-allowed"),
        // ---- Idempotency-Key --------------------------------------------------------------
        Case::post("empty Idempotency-Key", m, email())
            .header("idempotency-key", "")
            .expect(400, "invalid-idempotency-key"),
        Case::post("Idempotency-Key of 300 characters", m, email())
            .header("idempotency-key", "k".repeat(300))
            .expect(400, "invalid-idempotency-key"),
        Case::post("Idempotency-Key with a space", m, email())
            .header("idempotency-key", "order 42")
            .expect(400, "invalid-idempotency-key"),
        Case::post("bulk with a 300-character Idempotency-Key", b, bulk())
            .header("idempotency-key", "k".repeat(300))
            .expect(400, "invalid-idempotency-key"),
        Case::post("Idempotency-Key of 255 characters (control)", m, email())
            .header("idempotency-key", "k".repeat(255))
            .succeeds(202),
        // ---- dead letters -----------------------------------------------------------------
        Case::get("dead-letters limit=0", "/v1/dead-letters?limit=0")
            .expect(422, "validation")
            .at("/limit"),
        Case::get("dead-letters limit=501", "/v1/dead-letters?limit=501")
            .expect(422, "validation")
            .at("/limit"),
        Case::get("dead-letters limit=abc", "/v1/dead-letters?limit=abc")
            .expect(422, "validation")
            .at("/limit"),
        Case::get("dead-letters limit=-1", "/v1/dead-letters?limit=-1")
            .expect(422, "validation")
            .at("/limit"),
        Case::get(
            "dead-letters after not a uuid",
            "/v1/dead-letters?after=yesterday",
        )
        .expect(422, "validation")
        .at("/after"),
        Case::get("dead-letters unknown parameter", "/v1/dead-letters?page=2")
            .expect(400, "invalid-query")
            .at("/page"),
        Case::get(
            "dead-letters with the old before cursor",
            "/v1/dead-letters?before=yesterday",
        )
        .expect(400, "invalid-query")
        .at("/before"),
        Case::get(
            "dead-letters limit given twice",
            "/v1/dead-letters?limit=1&limit=2",
        )
        .expect(400, "invalid-query")
        .at("/limit"),
        // ---- inbound ----------------------------------------------------------------------
        Case::get("inbound limit=0", "/v1/inbound?limit=0")
            .expect(422, "validation")
            .at("/limit"),
        Case::get("inbound limit=1001", "/v1/inbound?limit=1001")
            .expect(422, "validation")
            .at("/limit"),
        Case::get("inbound limit=1000 (control)", "/v1/inbound?limit=1000").succeeds(200),
        Case::get("inbound after not a uuid", "/v1/inbound?after=yesterday")
            .expect(422, "validation")
            .at("/after"),
        Case::get("inbound unknown parameter", "/v1/inbound?channel=sms")
            .expect(400, "invalid-query")
            .at("/channel"),
        Case::post(
            "redrive an id that is not a uuid",
            "/v1/dead-letters/redrive",
            json!({ "ids": [uuid::Uuid::now_v7().to_string(), "not-a-uuid"] }),
        )
        .expect(422, "validation")
        .at("/ids/1"),
        Case::post(
            "redrive ids not an array",
            "/v1/dead-letters/redrive",
            json!({ "ids": "all" }),
        )
        .expect(422, "validation")
        .at("/ids"),
        Case::post(
            "redrive with an unknown field",
            "/v1/dead-letters/redrive",
            json!({ "all": true }),
        )
        .expect(400, "unknown-field")
        .at("/all"),
        Case::raw(
            "redrive malformed JSON",
            "/v1/dead-letters/redrive",
            "{\"ids\": [",
        )
        .expect(400, "malformed-json"),
    ]
}

/// Runs one case; `None` when it behaved, otherwise what went wrong.
async fn check(s: &TestServer, keys: &Keys, case: &Case) -> Option<String> {
    let key = match case.auth {
        Auth::Good => Some(s.key.as_str()),
        Auth::None => None,
        Auth::Garbage => Some("not-a-key"),
        Auth::Revoked => Some(keys.revoked.as_str()),
        Auth::Other => Some(keys.other.as_str()),
    };
    let headers: Vec<(&str, &str)> = case
        .headers
        .iter()
        .map(|(h, v)| (h.as_str(), v.as_str()))
        .collect();
    let r = s
        .request(
            case.method.clone(),
            &case.path,
            key,
            &headers,
            case.body.clone(),
        )
        .await;
    let mut wrong = Vec::new();
    let status = r.status.as_u16();
    if r.status.is_server_error() {
        wrong.push(format!("5xx ({status})"));
    }
    if status != case.status {
        wrong.push(format!("status {status}, expected {}", case.status));
    }
    match case.problem {
        None => {
            if !r.status.is_success() {
                wrong.push("a positive control was refused".into());
            }
        }
        Some(slug) => {
            let ct = r
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if ct != "application/problem+json" {
                wrong.push(format!("content-type {ct:?}"));
            }
            let want = format!("{PROBLEM_BASE}{slug}");
            if r.body["type"] != want.as_str() {
                wrong.push(format!("type {}, expected {want}", r.body["type"]));
            }
            if r.body["status"] != status {
                wrong.push(format!("body status {} != HTTP {status}", r.body["status"]));
            }
            if !r.body["title"].is_string() || !r.body["detail"].is_string() {
                wrong.push("title or detail missing".into());
            }
            if status == 401 {
                let challenge = r
                    .headers
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if !challenge.starts_with("Bearer") {
                    wrong.push(format!("WWW-Authenticate {challenge:?}"));
                }
            }
        }
    }
    if let Some(pointer) = &case.pointer {
        if r.body["errors"][0]["pointer"] != pointer.as_str() {
            wrong.push(format!(
                "errors[0].pointer {}, expected {pointer:?}",
                r.body["errors"][0]["pointer"]
            ));
        }
    }
    if let Some(missing) = &case.missing {
        if r.body["missing"] != json!(missing) {
            wrong.push(format!(
                "missing {}, expected {missing:?}",
                r.body["missing"]
            ));
        }
    }
    if wrong.is_empty() {
        return None;
    }
    let mut body = r.body.to_string();
    if body.len() > 400 {
        body.truncate(400);
        body.push('…');
    }
    Some(format!(
        "{} ({} {}): {}\n      body: {body}",
        case.name,
        case.method,
        case.path.chars().take(80).collect::<String>(),
        wrong.join("; "),
    ))
}

struct Keys {
    revoked: String,
    other: String,
}

/// Creates the `welcome` template, a second tenant's key, a revoked key and one acme message.
async fn prepare(s: &TestServer) -> (Keys, String) {
    let r = s
        .request(
            Method::PUT,
            "/v1/templates/welcome",
            Some(&s.key),
            &[("content-type", "application/json")],
            Some(
                json!({ "subject": "Welcome {{ name }}", "text": "Hi {{ name }}, your code is {{ code }}" })
                    .to_string()
                    .into_bytes(),
            ),
        )
        .await;
    assert_eq!(r.status.as_u16(), 201, "template PUT: {}", r.body);

    let revoked = s.new_key("acme").await;
    let prefix = &revoked["hk_".len().."hk_".len() + 8];
    assert!(
        s.embedded
            .herald
            .tenants
            .revoke_key(prefix)
            .await
            .expect("revoke"),
        "the key to revoke exists"
    );
    let other = s.new_key("globex").await;
    let acme_message = s.send(&email()).await;
    (Keys { revoked, other }, acme_message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_the_expected_problem_and_never_a_5xx() {
    let s = TestServer::start().await;
    let (keys, acme_message) = prepare(&s).await;
    let cases = cases(&acme_message);
    let refusals = cases.iter().filter(|c| c.problem.is_some()).count();
    assert!(
        refusals >= 40,
        "the table holds {refusals} malformed requests"
    );

    let mut failures = Vec::new();
    for case in &cases {
        if let Some(f) = check(&s, &keys, case).await {
            failures.push(f);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases misbehaved:\n  - {}",
        failures.len(),
        cases.len(),
        failures.join("\n  - ")
    );

    // Nothing refused above reached the store: only the acme message and the controls did.
    let controls = cases
        .iter()
        .filter(|c| c.problem.is_none() && c.path.starts_with("/v1/messages"))
        .count();
    let queued: u64 = s.get("/v1/stats/channels").await.body["channels"]
        .as_array()
        .expect("channels")
        .iter()
        .flat_map(|c| c["counts"].as_object().into_iter().flat_map(|m| m.values()))
        .map(|v| v.as_u64().unwrap_or(0))
        .sum();
    assert_eq!(queued, 1 + controls as u64, "messages stored for acme");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_reports_bad_recipients_by_index_and_queues_the_rest() {
    let s = TestServer::start().await;
    let r = s
        .post(
            "/v1/messages/bulk",
            &json!({
                "channel": "email", "priority": "P3", "subject": "News", "body": "Monthly news",
                "recipients": [
                    { "to": "r0@example.com" },
                    { "to": "not-an-email" },
                    { "to": "r2@example.com", "external_id": "c-2" },
                    { "to": "r3@example.com", "nickname": "Bob" },
                    { "to": "r4@example.com", "data": { "name": "Eve" } },
                    { "to": "r5@example.com", "data": { "blob": "x".repeat(70 * 1024) } },
                ],
            }),
        )
        .await;
    assert_eq!(r.status.as_u16(), 202, "{}", r.body);
    assert_eq!(r.body["queued"], 3, "{}", r.body);
    assert_eq!(r.body["suppressed"], 0, "{}", r.body);
    let rejected = r.body["rejected"].as_array().expect("rejected");
    let indexes: Vec<u64> = rejected
        .iter()
        .map(|x| x["index"].as_u64().expect("index"))
        .collect();
    assert_eq!(indexes, [1, 3, 5], "{}", r.body);
    for x in rejected {
        assert!(x["reason"].as_str().is_some_and(|s| !s.is_empty()), "{x}");
        assert_eq!(
            x.as_object().map(|o| o.len()),
            Some(2),
            "only index and reason: {x}"
        );
    }
    assert!(
        rejected[0]["reason"].as_str().unwrap().contains('@'),
        "{}",
        rejected[0]
    );
    assert!(
        rejected[1]["reason"].as_str().unwrap().contains("nickname"),
        "{}",
        rejected[1]
    );
    assert!(
        rejected[2]["reason"]
            .as_str()
            .unwrap()
            .contains("at most 65536"),
        "{}",
        rejected[2]
    );
    s.stop().await;
}
