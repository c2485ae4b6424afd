use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{Channel, Content, MessageId, Priority};

/// What a gateway gets: the rendered message and the ids that correlate it.
#[derive(Debug, Clone)]
pub struct OutboundMessage {
    pub id: MessageId,
    pub tenant: String,
    pub channel: Channel,
    pub priority: Priority,
    pub to: String,
    pub from: Option<String>,
    pub content: Content,
    pub attempt: u32,
    pub correlation_id: String,
    /// `metadata.unsubscribe_url`: email gateways add List-Unsubscribe (and, for https, the
    /// RFC 8058 one-click List-Unsubscribe-Post).
    pub unsubscribe_url: Option<String>,
    /// Herald's own signed one-click link (bulk and marketing email), listed first.
    pub one_click_url: Option<String>,
    /// `metadata.media_urls`: pictures for MMS.
    pub media_urls: Vec<String>,
    /// `metadata.whatsapp_template`: send a WhatsApp template message instead of text.
    pub whatsapp_template: Option<serde_json::Value>,
}

#[derive(Debug, Clone)]
pub struct GatewayReceipt {
    pub provider_message_id: String,
}

/// Why a hand-off did not succeed, as the engine needs to know it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GatewayError {
    /// Worth retrying with back-off: timeouts, 5xx, connection errors.
    #[error("transient: {0}")]
    Transient(String),
    /// Retrying cannot help: invalid recipient, rejected content.
    #[error("permanent ({code}): {message}")]
    Permanent { code: String, message: String },
    /// The provider asked us to slow down; does not use up an attempt.
    #[error("throttled")]
    Throttled { retry_after: Option<Duration> },
}

/// A provider that delivers messages on some channels.
#[async_trait]
pub trait Gateway: Send + Sync + 'static {
    fn name(&self) -> &str;
    fn channels(&self) -> &[Channel];
    async fn send(&self, message: &OutboundMessage) -> Result<GatewayReceipt, GatewayError>;
    /// The suppression a permanent refusal with this code calls for: the address is dead (an
    /// unregistered push token) or opted out (Twilio 21610).
    fn suppression_for(&self, _code: &str) -> Option<crate::domain::suppression::Reason> {
        None
    }
    /// Whether every status callback of this provider carries Herald's message id (SES: the
    /// `herald_id` tag), so a message sent through it is never looked up by the provider's id.
    fn callbacks_name_the_message(&self) -> bool {
        false
    }
    /// The provider's own health check, where it has one (SES GetAccount: sending enabled,
    /// quota left); the health checker calls it.
    async fn probe(&self) -> Option<crate::domain::health::ProbeReport> {
        None
    }
}

/// A provider's report about a message it took (delivered, bounced, ...), from a webhook or
/// the sandbox. Serialisable: an event that comes before its message's `sent` is parked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderEvent {
    pub gateway: String,
    pub provider_message_id: String,
    /// Herald's own id, when the provider echoes it back (SES message tags, a Twilio
    /// StatusCallback query parameter, the sandbox): the event then needs no look-up.
    pub message_id: Option<MessageId>,
    pub kind: ProviderEventKind,
    pub at: DateTime<Utc>,
    pub detail: serde_json::Value,
}

impl ProviderEvent {
    /// A parked event from its stored JSON, unless it cannot be read: then it is skipped (and
    /// forgotten with the others), so it cannot hold back those that can.
    pub(crate) fn from_parked(json: &str) -> Option<ProviderEvent> {
        serde_json::from_str(json)
            .inspect_err(
                |e| tracing::warn!(error = %e, "an unreadable parked provider event skipped"),
            )
            .ok()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProviderEventKind {
    Delivered,
    Opened,
    Clicked,
    Bounced {
        permanent: bool,
    },
    Complained,
    /// The provider gave up after accepting (e.g. SMS undelivered).
    Failed,
    /// Delivery is delayed; the provider keeps trying (SES DeliveryDelay).
    Delayed,
}
