//! A message's stored timeline is bounded: past [`MAX_EVENTS`], a write counts its event
//! (`events_dropped`) instead of appending it, so no item nears DynamoDB's 400 KB limit however
//! often a message is retried, redriven or opened. The count costs a second write only once the
//! timeline is full.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use super::item::{n, Item};

/// About 15 KB of events at their usual size: far more than a message's life needs.
pub(crate) const MAX_EVENTS: usize = 64;

/// Whether a write stores its event or only counts it (the timeline is full).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Timeline {
    Append,
    Count,
}

impl Timeline {
    /// The update's part for the event `:ev`, and the condition it needs.
    pub(super) fn clauses(self) -> (&'static str, &'static str) {
        match self {
            Timeline::Append => (
                "SET events = list_append(events, :ev)",
                "size(events) < :max_events",
            ),
            Timeline::Count => ("ADD events_dropped :dropped", "size(events) >= :max_events"),
        }
    }

    pub(super) fn values(
        self,
        event: AttributeValue,
        values: &mut HashMap<String, AttributeValue>,
    ) {
        values.insert(":max_events".into(), n(MAX_EVENTS));
        match self {
            Timeline::Append => values.insert(":ev".into(), AttributeValue::L(vec![event])),
            Timeline::Count => values.insert(":dropped".into(), n(1)),
        };
    }
}

pub(super) fn timeline_full(item: &Item) -> bool {
    matches!(item.get("events"), Some(AttributeValue::L(l)) if l.len() >= MAX_EVENTS)
}

/// `SET a, b, <event> REMOVE c`, where the event's part is a SET or an ADD of its own.
pub(super) fn join_update(event_clause: &str, set: &[String], remove: &[String]) -> String {
    let mut set = set.to_vec();
    let mut add = "";
    match event_clause.strip_prefix("SET ") {
        Some(assign) => set.push(assign.to_owned()),
        None => add = event_clause,
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
            join_update(append, &set, &remove),
            "SET #st = :to, events = list_append(events, :ev) REMOVE lease_until"
        );
        let (count, _) = Timeline::Count.clauses();
        assert_eq!(
            join_update(count, &set, &[]),
            "SET #st = :to ADD events_dropped :dropped"
        );
    }
}
