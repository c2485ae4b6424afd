//! The webhook events of an inbound message, announced by the pipeline while it holds the
//! message's claim ([`super::pipeline`]). Their ids are made from the message, so a message
//! processed again (its first worker died) announces the same events, which the fan-out
//! delivers once.

use crate::domain::notify::{EventId, EventType, Notice, Subject};
use crate::domain::rules::InboundRule;
use crate::domain::InboundMessage;

/// `inbound.received`: the message as it was stored.
pub(super) fn received_notice(m: &InboundMessage) -> Notice {
    let data = serde_json::json!({
        "inbound_id": m.id,
        "channel": m.channel,
        "from": m.from,
        "to": m.to,
        "body": m.body,
        "media_urls": m.media_urls,
        "keyword": m.keyword,
        "received_at": m.received_at,
    });
    event_of(m, EventType::InboundReceived, data, 0)
}

/// `inbound.matched`: the message and the rule that holds for it, a millisecond after
/// `inbound.received`, so the two sort (and stream) in that order.
pub(super) fn matched_notice(m: &InboundMessage, rule: &InboundRule) -> Notice {
    let data = serde_json::json!({
        "inbound_id": m.id,
        "thread_id": m.thread,
        "rule": rule.name,
        "channel": m.channel,
        "from": m.from,
        "to": m.to,
        "body": m.body,
        "received_at": m.received_at,
    });
    event_of(m, EventType::InboundMatched, data, 1)
}

/// An event of `m`'s with an id made from the message and `kind`, dated `after_ms` past its
/// first claim (kept on the message, so every try dates it alike), not its arrival: event
/// streams resume after the last event they saw, and an event dated at arrival but stored
/// after a later one would be passed over.
fn event_of(m: &InboundMessage, kind: EventType, data: serde_json::Value, after_ms: i64) -> Notice {
    let mut notice = Notice::new(Some(m.tenant.clone()), kind, Subject::Data { data });
    let first_claim = m.progress.first_claimed_at.unwrap_or(m.received_at);
    let at = first_claim + chrono::Duration::milliseconds(after_ms);
    notice.id = EventId::derived(at, &format!("{}:{}", kind.as_str(), m.id));
    notice
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::ports::contract::{inbound, tenant};

    fn claimed(first_claimed_at: i64) -> InboundMessage {
        let mut m = inbound(&tenant("acme"), "SM1", "urgent");
        m.progress.first_claimed_at = chrono::DateTime::from_timestamp_millis(first_claimed_at);
        m
    }

    #[test]
    fn every_try_announces_the_same_events_in_order() {
        let rule: InboundRule = serde_json::from_value(
            serde_json::json!({ "name": "urgent", "actions": [{ "type": "webhook" }] }),
        )
        .unwrap();
        let first = claimed(1_700_000_000_500);
        let mut again = first.clone();
        again.progress.attempts += 1;
        assert_eq!(received_notice(&first).id, received_notice(&again).id);
        assert_eq!(
            matched_notice(&first, &rule).id,
            matched_notice(&again, &rule).id
        );
        assert!(received_notice(&first).id < matched_notice(&first, &rule).id);
        assert_eq!(
            received_notice(&first).id.made_at().timestamp_millis(),
            1_700_000_000_500,
            "dated at the first claim"
        );
        let other = claimed(1_700_000_000_500);
        assert_ne!(received_notice(&first).id, received_notice(&other).id);
    }
}
