//! Events out: what Herald tells a tenant's webhook endpoints, and the endpoints themselves.
//! An event is a [`Notice`] when it happens; the notifier turns it into one signed delivery
//! per endpoint that wants its type.

mod endpoint;
mod forward;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Channel, EventKind, Message, MessageId, MessageStatus, TenantId};

pub use endpoint::{
    EndpointPatch, EndpointSecret, EndpointUrl, NewEndpoint, Purpose, SigningSecret, Target,
    WebhookEndpoint, MAX_DESCRIPTION, MAX_URL,
};
pub use forward::{ForwardedWebhook, ProviderSource};

/// A time-ordered id (UUIDv7), shown hyphenated and parsed only in that form.
macro_rules! v7_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Uuid);

        impl $name {
            pub fn new() -> $name {
                $name(Uuid::now_v7())
            }

            pub fn parse(s: &str) -> Option<$name> {
                (s.len() == 36).then(|| Uuid::parse_str(s).ok().map($name))?
            }

            /// When it was made: the millisecond in its first 48 bits.
            pub fn made_at(&self) -> chrono::DateTime<chrono::Utc> {
                let b = self.0.as_bytes();
                let ms = b[..6].iter().fold(0i64, |acc, x| (acc << 8) | i64::from(*x));
                chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
            }
        }

        impl Default for $name {
            fn default() -> Self {
                $name::new()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                let s = String::deserialize(d)?;
                $name::parse(&s).ok_or_else(|| serde::de::Error::custom("not an id"))
            }
        }
    };
}

pub(crate) use v7_id;

v7_id!(
    /// A webhook endpoint's id.
    EndpointId
);
v7_id!(
    /// An event's id: the `webhook-id` header of every delivery of it, retries and replays
    /// included, so a receiver drops duplicates by it.
    EventId
);

impl EventId {
    /// The id of the one event that `key` names, made at `at`: the same every time it is
    /// made, so an event announced again after a crash is recognised as the same one.
    pub fn derived(at: DateTime<Utc>, key: &str) -> EventId {
        use sha2::Digest;
        let hash = sha2::Sha256::digest(key.as_bytes());
        let ms = at.timestamp_millis().max(0).to_be_bytes();
        let mut bytes = [0u8; 16];
        bytes[..6].copy_from_slice(&ms[2..]);
        bytes[6..].copy_from_slice(&hash[..10]);
        // Version 8 (custom) and the RFC 4122 variant, so it is a well-formed UUID.
        bytes[6] = (bytes[6] & 0x0f) | 0x80;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        EventId(Uuid::from_bytes(bytes))
    }
}
v7_id!(
    /// One event's delivery to one endpoint, with its attempts.
    DeliveryId
);

impl DeliveryId {
    /// The id of an event's first delivery to an endpoint: the same each time the event is
    /// fanned out, so a fan-out repeated after a crash finds (and does not redo) what the first
    /// one stored. It sorts as the event's id does (its first 96 bits are the event id's), so
    /// an endpoint's deliveries sort in the order their events were made.
    pub fn first_try(event: EventId, endpoint: EndpointId) -> DeliveryId {
        use sha2::Digest;
        let mut hash = sha2::Sha256::new();
        hash.update(event.0.as_bytes());
        hash.update(endpoint.0.as_bytes());
        let hash = hash.finalize();
        // The event id's time, version, variant and counter (its first 96 bits, which order
        // ids made in one millisecond), then 32 bits that tell its endpoints apart.
        let mut bytes = [0u8; 16];
        bytes[..12].copy_from_slice(&event.0.as_bytes()[..12]);
        bytes[12..].copy_from_slice(&hash[..4]);
        DeliveryId(Uuid::from_bytes(bytes))
    }
}

/// The event types a tenant may subscribe to.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
pub enum EventType {
    #[serde(rename = "message.queued")]
    MessageQueued,
    #[serde(rename = "message.sent")]
    MessageSent,
    #[serde(rename = "message.delivered")]
    MessageDelivered,
    #[serde(rename = "message.delivery_delayed")]
    MessageDeliveryDelayed,
    #[serde(rename = "message.opened")]
    MessageOpened,
    #[serde(rename = "message.clicked")]
    MessageClicked,
    #[serde(rename = "message.bounced")]
    MessageBounced,
    #[serde(rename = "message.complained")]
    MessageComplained,
    #[serde(rename = "message.failed")]
    MessageFailed,
    #[serde(rename = "message.suppressed")]
    MessageSuppressed,
    #[serde(rename = "message.cancelled")]
    MessageCancelled,
    #[serde(rename = "inbound.received")]
    InboundReceived,
    /// An inbound rule with a `webhook` action matched a message.
    #[serde(rename = "inbound.matched")]
    InboundMatched,
    #[serde(rename = "suppression.added")]
    SuppressionAdded,
    #[serde(rename = "suppression.removed")]
    SuppressionRemoved,
    #[serde(rename = "gateway.health_changed")]
    GatewayHealthChanged,
    #[serde(rename = "webhook_endpoint.disabled")]
    WebhookEndpointDisabled,
    /// A thread's `next_followup_at` passed.
    #[serde(rename = "thread.followup_due")]
    ThreadFollowupDue,
    /// A relayed text shared a contact detail the tenant's policy flags, redacts or blocks.
    #[serde(rename = "policy.violation")]
    PolicyViolation,
    /// Bounce or complaint rates paused the tenant's bulk lanes.
    #[serde(rename = "reputation.paused")]
    ReputationPaused,
    #[serde(rename = "reputation.resumed")]
    ReputationResumed,
    /// A gateway's warm-up schedule did not advance: yesterday's rates were over the warn level.
    #[serde(rename = "warmup.held")]
    WarmupHeld,
    /// A provider's verified webhook, forwarded to development endpoints only.
    #[serde(rename = "provider_webhook.twilio")]
    ForwardTwilio,
    #[serde(rename = "provider_webhook.ses")]
    ForwardSes,
    #[serde(rename = "provider_webhook.postal")]
    ForwardPostal,
    #[serde(rename = "provider_webhook.whatsapp")]
    ForwardWhatsapp,
    #[serde(rename = "provider_webhook.telegram")]
    ForwardTelegram,
}

impl EventType {
    pub const ALL: [EventType; 27] = [
        EventType::MessageQueued,
        EventType::MessageSent,
        EventType::MessageDelivered,
        EventType::MessageDeliveryDelayed,
        EventType::MessageOpened,
        EventType::MessageClicked,
        EventType::MessageBounced,
        EventType::MessageComplained,
        EventType::MessageFailed,
        EventType::MessageSuppressed,
        EventType::MessageCancelled,
        EventType::InboundReceived,
        EventType::InboundMatched,
        EventType::SuppressionAdded,
        EventType::SuppressionRemoved,
        EventType::GatewayHealthChanged,
        EventType::WebhookEndpointDisabled,
        EventType::ThreadFollowupDue,
        EventType::PolicyViolation,
        EventType::ReputationPaused,
        EventType::ReputationResumed,
        EventType::WarmupHeld,
        EventType::ForwardTwilio,
        EventType::ForwardSes,
        EventType::ForwardPostal,
        EventType::ForwardWhatsapp,
        EventType::ForwardTelegram,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::MessageQueued => "message.queued",
            EventType::MessageSent => "message.sent",
            EventType::MessageDelivered => "message.delivered",
            EventType::MessageDeliveryDelayed => "message.delivery_delayed",
            EventType::MessageOpened => "message.opened",
            EventType::MessageClicked => "message.clicked",
            EventType::MessageBounced => "message.bounced",
            EventType::MessageComplained => "message.complained",
            EventType::MessageFailed => "message.failed",
            EventType::MessageSuppressed => "message.suppressed",
            EventType::MessageCancelled => "message.cancelled",
            EventType::InboundReceived => "inbound.received",
            EventType::InboundMatched => "inbound.matched",
            EventType::SuppressionAdded => "suppression.added",
            EventType::SuppressionRemoved => "suppression.removed",
            EventType::GatewayHealthChanged => "gateway.health_changed",
            EventType::WebhookEndpointDisabled => "webhook_endpoint.disabled",
            EventType::ThreadFollowupDue => "thread.followup_due",
            EventType::PolicyViolation => "policy.violation",
            EventType::ReputationPaused => "reputation.paused",
            EventType::ReputationResumed => "reputation.resumed",
            EventType::WarmupHeld => "warmup.held",
            EventType::ForwardTwilio => "provider_webhook.twilio",
            EventType::ForwardSes => "provider_webhook.ses",
            EventType::ForwardPostal => "provider_webhook.postal",
            EventType::ForwardWhatsapp => "provider_webhook.whatsapp",
            EventType::ForwardTelegram => "provider_webhook.telegram",
        }
    }

    pub fn parse(s: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// A forwarded provider webhook: only development forwards (admin) receive these, never
    /// an events endpoint or stream, whose "every type" means every other type.
    pub fn is_forward(self) -> bool {
        ProviderSource::ALL.iter().any(|p| p.event_type() == self)
    }

    /// The event a message's timeline entry is announced as; `None` for the steps a platform
    /// has no use for (`sending`, a retry's `deferred`).
    pub fn of_message(kind: EventKind) -> Option<EventType> {
        use MessageStatus as S;
        Some(match kind {
            EventKind::DeliveryDelayed => EventType::MessageDeliveryDelayed,
            EventKind::Status(s) => match s {
                S::Queued => EventType::MessageQueued,
                S::Sent => EventType::MessageSent,
                S::Delivered => EventType::MessageDelivered,
                S::Opened => EventType::MessageOpened,
                S::Clicked => EventType::MessageClicked,
                S::Bounced => EventType::MessageBounced,
                S::Complained => EventType::MessageComplained,
                // A provider's refusal ends the message as surely as running out of attempts.
                S::Failed | S::Rejected => EventType::MessageFailed,
                S::Suppressed => EventType::MessageSuppressed,
                S::Cancelled => EventType::MessageCancelled,
                S::Deferred | S::Sending => return None,
            },
        })
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an event is about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Subject {
    /// A message's timeline entry: the notifier reads the message for the payload's fields.
    Message {
        id: MessageId,
        status: MessageStatus,
        detail: serde_json::Value,
    },
    /// Anything else, with its payload's `data` as it will be sent.
    Data { data: serde_json::Value },
}

/// Something that happened, before it is fanned out to endpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    pub id: EventId,
    /// Whose event it is; `None` for a platform event every tenant may hear (a gateway's
    /// health), or a message event whose tenant the notifier looks up.
    pub tenant: Option<TenantId>,
    pub event_type: EventType,
    pub at: DateTime<Utc>,
    pub subject: Subject,
}

impl Notice {
    pub fn new(tenant: Option<TenantId>, event_type: EventType, subject: Subject) -> Notice {
        Notice {
            id: EventId::new(),
            tenant,
            event_type,
            at: Utc::now(),
            subject,
        }
    }

    /// A message's timeline entry, if the platform hears of its kind.
    pub fn of_message(
        tenant: Option<TenantId>,
        id: MessageId,
        kind: EventKind,
        at: DateTime<Utc>,
        detail: serde_json::Value,
    ) -> Option<Notice> {
        let event_type = EventType::of_message(kind)?;
        let status = match kind {
            EventKind::Status(s) => s,
            EventKind::DeliveryDelayed => MessageStatus::Sent,
        };
        Some(Notice {
            at,
            ..Notice::new(tenant, event_type, Subject::Message { id, status, detail })
        })
    }
}

/// The body every endpoint receives, as the Standard Webhooks specification lays it out.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Payload {
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub timestamp: DateTime<Utc>,
    pub data: serde_json::Value,
}

/// A message's own fields in a message event's `data`, as the platform set them.
#[derive(Debug, Serialize)]
pub struct MessageFields<'a> {
    pub channel: Channel,
    pub to: &'a str,
    pub source_type: Option<&'a str>,
    pub source_id: Option<&'a str>,
    pub external_id: Option<&'a str>,
    pub metadata: Option<&'a serde_json::Value>,
    pub bulk_id: Option<&'a str>,
    pub correlation_id: &'a str,
}

impl<'a> MessageFields<'a> {
    pub fn of(m: &'a Message) -> MessageFields<'a> {
        MessageFields {
            channel: m.channel,
            to: &m.to,
            source_type: m.source_type.as_deref(),
            source_id: m.source_id.as_deref(),
            external_id: m.external_id.as_deref(),
            metadata: m.metadata.as_ref(),
            bulk_id: m.bulk_id.as_deref(),
            correlation_id: &m.correlation_id,
        }
    }
}

/// A message event's `data`: its id, status and detail, and the message's fields when known.
pub fn message_data(
    id: MessageId,
    status: MessageStatus,
    detail: serde_json::Value,
    fields: Option<MessageFields<'_>>,
) -> serde_json::Value {
    let mut data = serde_json::json!({ "message_id": id, "status": status, "detail": detail });
    let fields = fields.and_then(|f| serde_json::to_value(f).ok());
    if let (Some(d), Some(serde_json::Value::Object(f))) = (data.as_object_mut(), fields) {
        d.extend(f);
    }
    data
}

/// When a failed delivery is tried again: after each wait in turn, each stretched or shrunk by
/// up to a tenth at random so that a recovering endpoint is not hit by every retry at once.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrySchedule(pub Vec<std::time::Duration>);

impl Default for RetrySchedule {
    fn default() -> Self {
        let (s, m, h) = (1, 60, 3600);
        RetrySchedule(
            [5 * s, 5 * m, 30 * m, 2 * h, 5 * h, 10 * h, 10 * h]
                .into_iter()
                .map(std::time::Duration::from_secs)
                .collect(),
        )
    }
}

impl RetrySchedule {
    /// The wait after failed attempt `attempt` (1-based); `None` when it was the last.
    pub fn after(&self, attempt: u32, jitter: f64) -> Option<std::time::Duration> {
        let base = self.0.get(attempt.checked_sub(1)? as usize)?;
        Some(base.mul_f64(1.0 + jitter.clamp(-0.1, 0.1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_try_has_one_id_per_event_and_endpoint_and_sorts_as_its_event() {
        let (earlier, later) = (EventId::new(), EventId::new());
        let (a, b) = (EndpointId::new(), EndpointId::new());
        let id = DeliveryId::first_try(earlier, a);
        assert_eq!(id, DeliveryId::first_try(earlier, a));
        assert_ne!(id, DeliveryId::first_try(earlier, b));
        assert!(id < DeliveryId::first_try(later, a));
        assert_eq!(id.made_at(), earlier.made_at());
        // Still a well-formed UUIDv7: it parses back from its text.
        assert_eq!(DeliveryId::parse(&id.to_string()), Some(id));
        assert_eq!(id.0.get_version_num(), 7);
        assert_eq!(id.0.get_variant(), uuid::Variant::RFC4122);
    }

    #[test]
    fn event_type_names_round_trip_through_serde() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
            assert_eq!(serde_json::to_value(t).ok(), Some(t.as_str().into()));
        }
    }

    #[test]
    fn the_default_schedule_retries_for_more_than_a_day() {
        let s = RetrySchedule::default();
        let total: std::time::Duration = (1..=7).filter_map(|a| s.after(a, -0.1)).sum();
        assert!(
            total > std::time::Duration::from_secs(24 * 3600),
            "{total:?}"
        );
        assert_eq!(s.after(8, 0.0), None);
        assert_eq!(s.after(0, 0.0), None);
        assert_eq!(
            s.after(1, 0.5),
            Some(std::time::Duration::from_millis(5500))
        );
    }

    #[test]
    fn internal_steps_are_not_announced() {
        use MessageStatus as S;
        assert_eq!(EventType::of_message(S::Sending.into()), None);
        assert_eq!(EventType::of_message(S::Deferred.into()), None);
        assert_eq!(
            EventType::of_message(S::Rejected.into()),
            Some(EventType::MessageFailed)
        );
    }
}
