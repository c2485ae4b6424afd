//! Provider webhooks forwarded to development endpoints: which providers, and the webhook as
//! Herald received and verified it, to be sent on with its original body and headers.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::EventType;

/// A provider whose verified webhooks can be forwarded.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ProviderSource {
    Twilio,
    Ses,
    Postal,
    Whatsapp,
    Telegram,
}

impl ProviderSource {
    pub const ALL: [ProviderSource; 5] = [
        ProviderSource::Twilio,
        ProviderSource::Ses,
        ProviderSource::Postal,
        ProviderSource::Whatsapp,
        ProviderSource::Telegram,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProviderSource::Twilio => "twilio",
            ProviderSource::Ses => "ses",
            ProviderSource::Postal => "postal",
            ProviderSource::Whatsapp => "whatsapp",
            ProviderSource::Telegram => "telegram",
        }
    }

    pub fn parse(s: &str) -> Option<ProviderSource> {
        ProviderSource::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// The provider a webhook path belongs to (`/webhooks/twilio/status` -> twilio).
    pub fn of_path(path: &str) -> Option<ProviderSource> {
        let rest = path.strip_prefix("/webhooks/")?;
        ProviderSource::parse(rest.split('/').next()?)
    }

    /// The event types `sources`' webhooks travel as; none means every provider's.
    pub fn event_types(sources: &[ProviderSource]) -> Vec<EventType> {
        let sources = match sources {
            [] => &ProviderSource::ALL[..],
            some => some,
        };
        sources.iter().map(|s| s.event_type()).collect()
    }

    /// The event type its forwarded webhooks travel as.
    pub fn event_type(self) -> EventType {
        match self {
            ProviderSource::Twilio => EventType::ForwardTwilio,
            ProviderSource::Ses => EventType::ForwardSes,
            ProviderSource::Postal => EventType::ForwardPostal,
            ProviderSource::Whatsapp => EventType::ForwardWhatsapp,
            ProviderSource::Telegram => EventType::ForwardTelegram,
        }
    }
}

/// Headers never passed on: they describe the hop to Herald, carry credentials or shared
/// secrets meant for Herald alone (Telegram's secret token would let a receiver forge
/// updates), or are Herald's own.
const DROPPED_HEADERS: [&str; 16] = [
    "host",
    "content-length",
    "connection",
    "transfer-encoding",
    "keep-alive",
    "upgrade",
    "te",
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-telegram-bot-api-secret-token",
    "forwarded",
    "via",
    "x-real-ip",
    "x-request-id",
    "traceparent",
];

/// Header prefixes never passed on, for the same reasons.
const DROPPED_PREFIXES: [&str; 4] = ["x-forwarded-", "x-amzn-", "herald-", "webhook-"];

fn passed_on(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    !DROPPED_HEADERS.contains(&name.as_str())
        && !DROPPED_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// A verified provider webhook as Herald received it: the `data` of its forwarded event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ForwardedWebhook {
    pub source: ProviderSource,
    pub method: String,
    /// The path and query it was sent to, on Herald.
    pub path: String,
    /// Its headers, in order, without the hop's own and credentials.
    pub headers: Vec<(String, String)>,
    /// Its body, base64 (a provider's body need not be text).
    pub body_base64: String,
    pub received_at: DateTime<Utc>,
}

impl ForwardedWebhook {
    pub fn new(
        source: ProviderSource,
        method: &str,
        path: &str,
        headers: impl IntoIterator<Item = (String, String)>,
        body: &[u8],
    ) -> ForwardedWebhook {
        ForwardedWebhook {
            source,
            method: method.to_owned(),
            path: path.to_owned(),
            headers: headers
                .into_iter()
                .filter(|(name, _)| passed_on(name))
                .collect(),
            body_base64: base64::engine::general_purpose::STANDARD.encode(body),
            received_at: Utc::now(),
        }
    }

    /// The original body; `None` if the stored form is damaged.
    pub fn body(&self) -> Option<Vec<u8>> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.body_base64)
            .ok()
    }

    /// The headers to send it on with: the original ones, and where it came from.
    pub fn outgoing_headers(&self) -> Vec<(String, String)> {
        let mut headers = self.headers.clone();
        headers.push((
            "herald-forwarded-source".into(),
            self.source.as_str().into(),
        ));
        headers.push(("herald-forwarded-path".into(), self.path.clone()));
        headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_come_from_webhook_paths() {
        assert_eq!(
            ProviderSource::of_path("/webhooks/twilio/status"),
            Some(ProviderSource::Twilio)
        );
        assert_eq!(
            ProviderSource::of_path("/webhooks/ses"),
            Some(ProviderSource::Ses)
        );
        assert_eq!(ProviderSource::of_path("/webhooks/sns"), None);
        assert_eq!(ProviderSource::of_path("/v1/messages"), None);
    }

    #[test]
    fn the_hop_and_credentials_are_not_forwarded_and_the_body_round_trips() {
        let headers = [
            ("Host", "herald.example.com"),
            ("Authorization", "Basic c2VjcmV0"),
            ("X-Twilio-Signature", "abc="),
            ("webhook-id", "spoofed"),
            ("X-Telegram-Bot-Api-Secret-Token", "shared-secret"),
            ("X-Forwarded-For", "203.0.113.9"),
            ("herald-forwarded-path", "/spoofed"),
        ]
        .map(|(n, v)| (n.to_owned(), v.to_owned()));
        let w = ForwardedWebhook::new(ProviderSource::Twilio, "POST", "/x", headers, b"\xff\x00a");
        let sent: Vec<_> = w
            .outgoing_headers()
            .into_iter()
            .map(|(n, v)| format!("{n}: {v}"))
            .collect();
        assert_eq!(
            sent,
            [
                "X-Twilio-Signature: abc=",
                "herald-forwarded-source: twilio",
                "herald-forwarded-path: /x"
            ]
        );
        assert_eq!(w.body().as_deref(), Some(&b"\xff\x00a"[..]));
    }
}
