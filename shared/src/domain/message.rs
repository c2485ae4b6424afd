use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::locale::Locale;
use super::status::EventKind;
use super::{sms::SmsInfo, Channel, DeliveryOptions, MessageStatus, Priority, TenantId};

/// A message id: a UUIDv7, so ids sort by accept time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageId(Uuid);

impl MessageId {
    pub fn new() -> MessageId {
        MessageId(Uuid::now_v7())
    }

    pub fn parse(s: &str) -> Option<MessageId> {
        Uuid::try_parse(s).ok().map(MessageId)
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }

    pub fn from_uuid(id: Uuid) -> MessageId {
        MessageId(id)
    }

    /// The millisecond the id was made in (a UUIDv7's top 48 bits).
    pub fn millisecond(&self) -> i64 {
        (self.0.as_u128() >> 80) as i64
    }
}

impl Default for MessageId {
    fn default() -> Self {
        MessageId::new()
    }
}

impl std::fmt::Display for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// What a message says, after template rendering.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Content {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
}

impl Content {
    /// Subject, body and html together, in bytes: what a channel's size cap counts.
    pub fn byte_len(&self) -> usize {
        [&self.subject, &self.body, &self.html]
            .iter()
            .map(|p| p.as_deref().map_or(0, str::len))
            .sum()
    }
}

/// A message as accepted and validated, before it is persisted.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub id: MessageId,
    pub tenant: TenantId,
    pub channel: Channel,
    pub priority: Priority,
    pub to: String,
    pub from: Option<String>,
    pub content: Content,
    pub template: Option<String>,
    pub sms: Option<SmsInfo>,
    pub message_type: Option<String>,
    pub source_type: Option<String>,
    pub source_id: Option<String>,
    pub metadata: Option<serde_json::Value>,
    pub send_at: Option<DateTime<Utc>>,
    pub bulk_id: Option<String>,
    pub external_id: Option<String>,
    pub correlation_id: String,
    /// `queued`, or `suppressed` when the recipient is on the suppression list.
    pub status: MessageStatus,
    /// Merged into the first event's detail (the suppression that stopped it, say).
    pub note: Option<serde_json::Value>,
    /// The template variant chosen, recorded in the first event.
    pub locale: Option<Locale>,
    pub created_at: DateTime<Utc>,
}

impl NewMessage {
    /// The detail of its first event: the lane, the schedule, and any note.
    pub fn first_event_detail(&self) -> serde_json::Value {
        let mut detail = serde_json::json!({ "lane": self.priority.as_str() });
        if let Some(at) = self.send_at {
            detail["send_at"] = serde_json::json!(at);
        }
        if let Some(locale) = &self.locale {
            detail["locale"] = serde_json::json!(locale);
        }
        if let Some(serde_json::Value::Object(note)) = &self.note {
            for (k, v) in note {
                detail[k] = v.clone();
            }
        }
        detail
    }
}

/// A persisted message with its current state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub id: MessageId,
    pub tenant: TenantId,
    pub channel: Channel,
    pub priority: Priority,
    pub status: MessageStatus,
    pub to: String,
    pub from: Option<String>,
    pub content: Content,
    pub template: Option<String>,
    pub sms: Option<SmsInfo>,
    pub message_type: Option<String>,
    pub source_type: Option<String>,
    pub source_id: Option<String>,
    pub metadata: Option<serde_json::Value>,
    /// The delivery options in `metadata`, as parsed at accept.
    #[serde(default)]
    pub options: DeliveryOptions,
    pub send_at: Option<DateTime<Utc>>,
    pub bulk_id: Option<String>,
    pub external_id: Option<String>,
    pub correlation_id: String,
    pub attempts: u32,
    pub gateway: Option<String>,
    pub provider_message_id: Option<String>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Why the router picked the message's gateway, as its latest hand-off recorded it.
pub fn route_reason(events: &[DeliveryEvent]) -> Option<String> {
    events.iter().rev().find_map(|e| {
        e.detail
            .get("route_reason")
            .and_then(|r| r.as_str())
            .map(str::to_owned)
    })
}

/// One line of a message's append-only timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryEvent {
    pub kind: EventKind,
    pub at: DateTime<Utc>,
    /// Attempt number, gateway, provider id, error: whatever explains this step.
    pub detail: serde_json::Value,
}
