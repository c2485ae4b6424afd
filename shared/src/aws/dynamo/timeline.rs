//! A message's stored timeline is bounded: past [`MAX_EVENTS`], a write counts its event
//! (`events_dropped`) instead of appending it, so no item nears DynamoDB's 400 KB limit however
//! often a message is retried, redriven or opened. The count costs a second write only once the
//! timeline is full. A hold (a throttle, say) leaves the timeline as it was.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use super::item::{n, Item};

/// About 15 KB of events at their usual size: far more than a message's life needs.
pub(crate) const MAX_EVENTS: usize = 64;

/// What a write does to the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Timeline {
    /// Stores its event.
    Append,
    /// Counts its event (the timeline is full).
    Count,
    /// A hold: stores nothing, and takes back the claim's `sending` event at this index of a
    /// timeline this long (None: nothing to take back).
    TakeBack { at: Option<usize>, len: usize },
}

impl Timeline {
    /// The update's part for the event `:ev`, and the condition it needs.
    pub(super) fn clauses(self) -> (String, String) {
        match self {
            Timeline::Append => (
                "SET events = list_append(events, :ev)".into(),
                "size(events) < :max_events".into(),
            ),
            Timeline::Count => (
                "ADD events_dropped :dropped".into(),
                "size(events) >= :max_events".into(),
            ),
            // The length pins the index: nothing was appended since it was read.
            Timeline::TakeBack { at, .. } => (
                at.map(|i| format!("REMOVE events[{i}]"))
                    .unwrap_or_default(),
                "size(events) = :events_len".into(),
            ),
        }
    }

    pub(super) fn values(
        self,
        event: AttributeValue,
        values: &mut HashMap<String, AttributeValue>,
    ) {
        match self {
            Timeline::Append => {
                values.insert(":max_events".into(), n(MAX_EVENTS));
                values.insert(":ev".into(), AttributeValue::L(vec![event]));
            }
            Timeline::Count => {
                values.insert(":max_events".into(), n(MAX_EVENTS));
                values.insert(":dropped".into(), n(1));
            }
            Timeline::TakeBack { len, .. } => {
                values.insert(":events_len".into(), n(len));
            }
        }
    }

    /// What a hold does to this item's timeline: takes back its last event if that is the
    /// claim's `sending`.
    pub(super) fn take_back(item: &Item) -> Timeline {
        let Some(AttributeValue::L(events)) = item.get("events") else {
            return Timeline::TakeBack { at: None, len: 0 };
        };
        let last_is_claim = events.last().is_some_and(|e| {
            matches!(e, AttributeValue::M(m)
                if matches!(m.get("kind"), Some(AttributeValue::S(k)) if k == "sending"))
        });
        Timeline::TakeBack {
            at: last_is_claim.then(|| events.len() - 1),
            len: events.len(),
        }
    }
}

pub(super) fn timeline_full(item: &Item) -> bool {
    matches!(item.get("events"), Some(AttributeValue::L(l)) if l.len() >= MAX_EVENTS)
}

/// `SET a, b REMOVE c`, with the event's part joined to the SET, the REMOVE, or an ADD of its
/// own.
pub(super) fn join_update(event_clause: &str, set: &[String], remove: &[String]) -> String {
    let mut set = set.to_vec();
    let mut remove = remove.to_vec();
    let mut add = "";
    if let Some(assign) = event_clause.strip_prefix("SET ") {
        set.push(assign.to_owned());
    } else if let Some(path) = event_clause.strip_prefix("REMOVE ") {
        remove.push(path.to_owned());
    } else {
        add = event_clause;
    }
    let mut update = format!("SET {}", set.join(", "));
    if !remove.is_empty() {
        update.push_str(&format!(" REMOVE {}", remove.join(", ")));
    }
    if !add.is_empty() {
        update.push(' ');
        update.push_str(add);
    }
    update
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_part_joins_the_update() {
        let set = ["#st = :to".to_owned()];
        let remove = ["lease_until".to_owned()];
        let (append, _) = Timeline::Append.clauses();
        assert_eq!(
            join_update(&append, &set, &remove),
            "SET #st = :to, events = list_append(events, :ev) REMOVE lease_until"
        );
        let (count, _) = Timeline::Count.clauses();
        assert_eq!(
            join_update(&count, &set, &[]),
            "SET #st = :to ADD events_dropped :dropped"
        );
        let take_back = Timeline::TakeBack {
            at: Some(3),
            len: 4,
        };
        assert_eq!(
            join_update(&take_back.clauses().0, &set, &remove),
            "SET #st = :to REMOVE lease_until, events[3]"
        );
        let nothing = Timeline::TakeBack { at: None, len: 4 };
        assert_eq!(
            join_update(&nothing.clauses().0, &set, &[]),
            "SET #st = :to"
        );
    }
}
