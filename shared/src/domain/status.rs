use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Where a message is in its life. Every change is a compare-and-set from an allowed set of
/// current states (see [`MessageStatus::can_become`]) and appends a delivery event of the same name.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    Queued,
    Deferred,
    Sending,
    Sent,
    Delivered,
    Opened,
    Clicked,
    Failed,
    Bounced,
    Complained,
    Suppressed,
    Cancelled,
    Rejected,
}

use MessageStatus::*;

impl MessageStatus {
    pub const ALL: [MessageStatus; 13] = [
        Queued, Deferred, Sending, Sent, Delivered, Opened, Clicked, Failed, Bounced, Complained,
        Suppressed, Cancelled, Rejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Queued => "queued",
            Deferred => "deferred",
            Sending => "sending",
            Sent => "sent",
            Delivered => "delivered",
            Opened => "opened",
            Clicked => "clicked",
            Failed => "failed",
            Bounced => "bounced",
            Complained => "complained",
            Suppressed => "suppressed",
            Cancelled => "cancelled",
            Rejected => "rejected",
        }
    }

    pub fn parse(s: &str) -> Option<MessageStatus> {
        MessageStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Waiting for its lane: not yet handed to a gateway, so it can still be cancelled.
    pub fn is_pending(self) -> bool {
        matches!(self, Queued | Deferred)
    }

    /// The states from which `to` may be entered.
    pub fn sources_of(to: MessageStatus) -> &'static [MessageStatus] {
        match to {
            Queued => &[Failed],
            Deferred => &[Sending],
            Sending => &[Queued, Deferred],
            Sent => &[Sending],
            Delivered => &[Sent],
            Opened => &[Sent, Delivered],
            Clicked => &[Sent, Delivered, Opened],
            Failed => &[Queued, Deferred, Sending, Sent],
            Bounced => &[Sent, Delivered],
            Complained => &[Sent, Delivered, Opened, Clicked],
            // Sending: an entry added after accept stops the hand-off at dispatch.
            Suppressed => &[Queued, Deferred, Sending],
            Cancelled => &[Queued, Deferred],
            Rejected => &[Queued, Deferred, Sending],
        }
    }

    pub fn can_become(self, to: MessageStatus) -> bool {
        MessageStatus::sources_of(to).contains(&self)
    }
}

/// What a timeline entry records: a state change, or a provider's report that changes no
/// state (SES DeliveryDelay: still trying, the message stays `sent`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    Status(MessageStatus),
    DeliveryDelayed,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Status(s) => s.as_str(),
            EventKind::DeliveryDelayed => "delivery_delayed",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        match s {
            "delivery_delayed" => Some(EventKind::DeliveryDelayed),
            other => MessageStatus::parse(other).map(EventKind::Status),
        }
    }
}

impl From<MessageStatus> for EventKind {
    fn from(s: MessageStatus) -> EventKind {
        EventKind::Status(s)
    }
}

impl PartialEq<MessageStatus> for EventKind {
    fn eq(&self, other: &MessageStatus) -> bool {
        *self == EventKind::Status(*other)
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for EventKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for EventKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<EventKind, D::Error> {
        let s = String::deserialize(d)?;
        EventKind::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("unknown event {s}")))
    }
}

impl std::fmt::Display for MessageStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn happy_path_is_allowed_in_order() {
        let path = [Queued, Sending, Sent, Delivered, Opened, Clicked];
        for pair in path.windows(2) {
            assert!(pair[0].can_become(pair[1]), "{} -> {}", pair[0], pair[1]);
        }
    }

    #[test]
    fn nothing_leaves_cancelled_or_suppressed() {
        for to in MessageStatus::ALL {
            assert!(!Cancelled.can_become(to), "cancelled -> {to}");
            assert!(!Suppressed.can_become(to), "suppressed -> {to}");
        }
    }

    #[test]
    fn cancel_only_before_hand_off() {
        for from in MessageStatus::ALL {
            assert_eq!(from.can_become(Cancelled), from.is_pending(), "{from}");
        }
    }

    #[test]
    fn only_failed_can_be_redriven() {
        assert_eq!(MessageStatus::sources_of(Queued), &[Failed]);
    }

    #[test]
    fn names_round_trip() {
        for st in MessageStatus::ALL {
            assert_eq!(MessageStatus::parse(st.as_str()), Some(st));
            assert_eq!(
                serde_json::to_value(st).ok(),
                Some(serde_json::json!(st.as_str()))
            );
        }
    }
}
