//! What the HTTP provider gateways share: one client (rustls), and the reading of answers
//! into the engine's terms.

use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::StatusCode;

use serde_json::Value;

use crate::ports::{GatewayError, GatewayReceipt};

/// A provider call that takes longer is abandoned (the engine's own send timeout is longer).
const TIMEOUT: Duration = Duration::from_secs(15);

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
}

/// A `Retry-After` of seconds (the form providers use).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// A provider's answer: status, headers, and the JSON body (`Null` when there is none).
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

/// Sends a provider request. No answer at all is worth retrying.
pub async fn call(
    provider: &str,
    request: reqwest::RequestBuilder,
) -> Result<Answer, GatewayError> {
    let res = request
        .send()
        .await
        .map_err(|e| GatewayError::Transient(format!("{provider}: {}", describe(e))))?;
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.json().await.unwrap_or(Value::Null);
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// A failed request in words: what went wrong and its causes ("Connection refused"), but not
/// the URL, which can carry a credential (Telegram's bot token is in the path).
pub fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// The receipt of an accepted send. An acceptance without an id cannot be tracked, so it is
/// treated as not sent.
pub fn receipt(provider: &str, id: Option<String>) -> Result<GatewayReceipt, GatewayError> {
    id.map(|provider_message_id| GatewayReceipt {
        provider_message_id,
    })
    .ok_or_else(|| {
        GatewayError::Transient(format!(
            "{provider} accepted the message but returned no id"
        ))
    })
}

/// The default reading of an error status when the body says nothing more specific.
pub fn by_status(
    provider: &str,
    status: StatusCode,
    headers: &HeaderMap,
    code: String,
    message: String,
) -> GatewayError {
    if status == StatusCode::TOO_MANY_REQUESTS {
        GatewayError::Throttled {
            retry_after: retry_after(headers),
        }
    } else if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT {
        GatewayError::Transient(format!("{provider} {status}: {code} {message}"))
    } else {
        GatewayError::Permanent { code, message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failed_request_names_its_cause_but_not_its_url() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let url = format!("http://127.0.0.1:{port}/bot123:SECRET/sendMessage");
        match call("telegram", client().post(url)).await {
            Err(GatewayError::Transient(text)) => {
                assert!(!text.contains("SECRET") && !text.contains("/bot"), "{text}");
                assert!(
                    text.starts_with("telegram: error sending request: "),
                    "{text}"
                );
                assert!(text.to_lowercase().contains("connect"), "{text}");
            }
            Err(other) => panic!("{other:?}"),
            Ok(_) => panic!("a closed port answered"),
        }
    }

    #[test]
    fn statuses_read_as_the_engine_needs_them() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", "7".parse().unwrap());
        let e = by_status(
            "p",
            StatusCode::TOO_MANY_REQUESTS,
            &h,
            "x".into(),
            "y".into(),
        );
        assert!(
            matches!(e, GatewayError::Throttled { retry_after: Some(d) } if d == Duration::from_secs(7))
        );
        let e = by_status("p", StatusCode::BAD_GATEWAY, &h, "x".into(), "y".into());
        assert!(matches!(e, GatewayError::Transient(_)));
        let e = by_status(
            "p",
            StatusCode::BAD_REQUEST,
            &h,
            "21211".into(),
            "bad".into(),
        );
        assert!(matches!(e, GatewayError::Permanent { code, .. } if code == "21211"));
    }
}
