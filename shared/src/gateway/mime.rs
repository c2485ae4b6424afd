//! A MIME message for gateways that take raw email (SES raw content): text and html as
//! multipart/alternative, UTF-8 throughout, and the RFC 8058 unsubscribe headers.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::Utc;

use crate::ports::OutboundMessage;

/// The unsubscribe headers a message needs (Herald's one-click link first, then the tenant's
/// own URL or mailto), or `None` when it carries neither.
pub fn unsubscribe_headers(m: &OutboundMessage) -> Option<Vec<(&'static str, String)>> {
    let urls: Vec<&str> = [m.one_click_url.as_deref(), m.unsubscribe_url.as_deref()]
        .into_iter()
        .flatten()
        .map(str::trim)
        .filter(|url| usable(url))
        .collect();
    if urls.is_empty() {
        return None;
    }
    let list: Vec<String> = urls.iter().map(|u| format!("<{u}>")).collect();
    let mut headers = vec![("List-Unsubscribe", list.join(", "))];
    // One-click (RFC 8058) is defined for https URLs; Herald's own link (when usable) takes
    // the POST over http too, for development.
    let herald_link = m.one_click_url.as_deref().map(str::trim);
    if herald_link.is_some_and(|u| urls.contains(&u))
        || urls.iter().any(|u| u.starts_with("https://"))
    {
        headers.push((
            "List-Unsubscribe-Post",
            "List-Unsubscribe=One-Click".to_owned(),
        ));
    }
    Some(headers)
}

/// Anything that could break out of the header is refused rather than escaped.
fn usable(url: &str) -> bool {
    let ok = !url.is_empty()
        && !url
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>' || c == ',');
    if !ok {
        tracing::warn!("an unsubscribe URL is not usable; left out of List-Unsubscribe");
    }
    ok
}

/// An RFC 2047 encoded-word when the text is not plain ASCII.
fn header_text(text: &str) -> String {
    if text.is_ascii() {
        text.to_owned()
    } else {
        format!("=?UTF-8?B?{}?=", STANDARD.encode(text))
    }
}

/// Base64 in lines of 76 characters, as MIME requires.
fn body_base64(text: &str) -> String {
    let encoded = STANDARD.encode(text);
    let mut out = String::with_capacity(encoded.len() + encoded.len() / 76 * 2 + 2);
    for line in encoded.as_bytes().chunks(76) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push_str("\r\n");
    }
    out
}

fn part(content_type: &str, text: &str) -> String {
    format!(
        "Content-Type: {content_type}; charset=UTF-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{}",
        body_base64(text)
    )
}

/// The whole message, CRLF line ends. `from` and `to` are parsed addresses; the subject was
/// checked for line breaks at accept.
pub fn compose(
    m: &OutboundMessage,
    from: &str,
    extra_headers: &[(&'static str, String)],
) -> Vec<u8> {
    let mut out = String::new();
    let mut header = |name: &str, value: &str| {
        out.push_str(name);
        out.push_str(": ");
        out.push_str(value);
        out.push_str("\r\n");
    };
    header("From", from);
    header("To", &m.to);
    if let Some(subject) = &m.content.subject {
        header("Subject", &header_text(subject));
    }
    header("Date", &Utc::now().to_rfc2822());
    header("Message-ID", &format!("<{}@herald>", m.id));
    header("MIME-Version", "1.0");
    header("X-Herald-Id", &m.id.to_string());
    for (name, value) in extra_headers {
        header(name, value);
    }
    let text = m.content.body.as_deref();
    let html = m.content.html.as_deref();
    match (text, html) {
        (Some(text), Some(html)) => {
            let boundary = format!("herald-{}", m.id.as_uuid().simple());
            out.push_str(&format!(
                "Content-Type: multipart/alternative; boundary=\"{boundary}\"\r\n\r\n"
            ));
            out.push_str(&format!("--{boundary}\r\n{}", part("text/plain", text)));
            out.push_str(&format!("--{boundary}\r\n{}", part("text/html", html)));
            out.push_str(&format!("--{boundary}--\r\n"));
        }
        (None, Some(html)) => out.push_str(&part("text/html", html)),
        (text, None) => out.push_str(&part("text/plain", text.unwrap_or_default())),
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Channel, Content, MessageId, Priority};

    fn message(text: Option<&str>, html: Option<&str>) -> OutboundMessage {
        OutboundMessage {
            id: MessageId::new(),
            tenant: "acme".into(),
            channel: Channel::Email,
            priority: Priority::P2,
            to: "ann@example.com".into(),
            from: None,
            content: Content {
                subject: Some("Ünïcode news".into()),
                body: text.map(str::to_owned),
                html: html.map(str::to_owned),
            },
            attempt: 1,
            correlation_id: "c".into(),
            unsubscribe_url: None,
            one_click_url: None,
            media_urls: Vec::new(),
            whatsapp_template: None,
        }
    }

    #[test]
    fn alternative_parts_with_unsubscribe_headers() {
        let mut m = message(Some("Hello"), Some("<p>Hello</p>"));
        m.unsubscribe_url = Some("https://example.com/u/1".into());
        let headers = unsubscribe_headers(&m).unwrap();
        let raw = String::from_utf8(compose(&m, "news@example.com", &headers)).unwrap();
        assert!(raw.contains("List-Unsubscribe: <https://example.com/u/1>\r\n"));
        assert!(raw.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"));
        assert!(
            raw.contains("Subject: =?UTF-8?B?"),
            "non-ASCII subject is encoded"
        );
        assert!(raw.contains("multipart/alternative"));
        assert!(raw.contains(&STANDARD.encode("<p>Hello</p>")));
        assert!(raw.ends_with("--\r\n"));
    }

    #[test]
    fn mailto_gets_no_one_click_and_bad_urls_no_header() {
        let with = |own: Option<&str>, herald: Option<&str>| {
            let mut m = message(Some("Hello"), None);
            m.unsubscribe_url = own.map(str::to_owned);
            m.one_click_url = herald.map(str::to_owned);
            unsubscribe_headers(&m)
        };
        let h = with(Some("mailto:unsub@example.com"), None).unwrap();
        assert_eq!(h.len(), 1);
        assert!(with(Some("https://x.test/a\r\nBcc: evil@x.test"), None).is_none());
        assert!(with(None, None).is_none());
        // Herald's link first, the tenant's own after it, and one-click for Herald's.
        let both = with(
            Some("mailto:unsub@example.com"),
            Some("http://127.0.0.1:8080/u/t"),
        )
        .unwrap();
        assert_eq!(
            both[0].1,
            "<http://127.0.0.1:8080/u/t>, <mailto:unsub@example.com>"
        );
        assert_eq!(both[1].0, "List-Unsubscribe-Post");
    }
}
