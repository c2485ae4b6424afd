//! A transition is one conditional UpdateItem: the state change, its event, and the indexes'
//! attributes, so the timeline never disagrees with the state. A `sent` also says whether
//! provider events were parked for the message meanwhile (the `parked` flag their parker set),
//! so a message without any costs no look-up.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use chrono::Utc;

use super::item::{event_value, get_s, ms, n, provider_key, s, status_of, Item};
use super::messages::is_open;
use super::timeline::{join_update, timeline_full, Timeline};
use super::{condition_failed, epoch_seconds, unavailable, DynamoStore};
use crate::domain::{MessageStatus, TenantId};
use crate::ports::{AttemptChange, StoreError, Transition, TransitionOutcome};

/// Set on a message by whoever parks provider events that name it (see `parked.rs`).
pub(super) const PARKED_FLAG: &str = "parked";

/// One update's expression, condition and values.
struct UpdateParts {
    update: String,
    condition: String,
    values: HashMap<String, AttributeValue>,
}

impl DynamoStore {
    /// Applies `t`. A full timeline takes a second update that counts the event instead.
    pub(super) async fn apply(&self, t: &Transition) -> Result<TransitionOutcome, StoreError> {
        let id = t.id.to_string();
        if t.hold {
            return self.hold(t, &id).await;
        }
        if let Some(applied) = self.apply_once(t, &id, Timeline::Append).await? {
            return Ok(applied);
        }
        let Some(mut item) = self.get_item(&id).await? else {
            // A cancel reaches a bulk message its claim has not created yet through its job.
            if t.to == MessageStatus::Cancelled
                && self.write_job_message(t.id, t.tenant.as_ref()).await?
            {
                return Box::pin(self.apply(t)).await;
            }
            return Ok(TransitionOutcome::NotFound);
        };
        if timeline_full(&item) {
            if let Some(applied) = self.apply_once(t, &id, Timeline::Count).await? {
                return Ok(applied);
            }
            let Some(now) = self.get_item(&id).await? else {
                return Ok(TransitionOutcome::NotFound);
            };
            item = now;
        }
        refusal(Some(item), t.tenant.as_ref())
    }

    /// A hold goes back without an event and takes back its claim's: a read to find that
    /// event's index, then the update (holds are rare: throttles are paced before the claim).
    async fn hold(&self, t: &Transition, id: &str) -> Result<TransitionOutcome, StoreError> {
        let Some(item) = self.get_item(id).await? else {
            return Ok(TransitionOutcome::NotFound);
        };
        if let Some(applied) = self.apply_once(t, id, Timeline::take_back(&item)).await? {
            return Ok(applied);
        }
        refusal(self.get_item(id).await?, None)
    }

    /// The transition's update; None when its condition refused it.
    async fn apply_once(
        &self,
        t: &Transition,
        id: &str,
        timeline: Timeline,
    ) -> Result<Option<TransitionOutcome>, StoreError> {
        let parts = transition_parts(t, timeline, self.retention);
        // Only a message its callbacks name can carry the flag (see `parked.rs`); the old
        // item comes back at no extra cost.
        let asks_parked = t.to == MessageStatus::Sent && !t.index_provider_id;
        let result = self
            .client
            .update_item()
            .table_name(self.messages_table()?)
            .key("id", s(id))
            .update_expression(parts.update)
            .condition_expression(parts.condition)
            .expression_attribute_names("#st", "status")
            .set_expression_attribute_values(Some(parts.values))
            .set_return_values(asks_parked.then_some(ReturnValue::AllOld))
            .send()
            .await;
        match result {
            Ok(out) if asks_parked => {
                let before = out.attributes.unwrap_or_default();
                Ok(Some(match before.contains_key(PARKED_FLAG) {
                    true => TransitionOutcome::Applied,
                    false => TransitionOutcome::AppliedNothingParked,
                }))
            }
            Ok(_) => Ok(Some(TransitionOutcome::Applied)),
            Err(e) if condition_failed(&e) => Ok(None),
            Err(e) => Err(unavailable("UpdateItem", e)),
        }
    }
}

/// Why a write was refused, from the item as it is now: another tenant's message, or one that
/// is gone, is not found; any other is in a state the write may not leave.
pub(super) fn refusal(
    item: Option<Item>,
    tenant: Option<&TenantId>,
) -> Result<TransitionOutcome, StoreError> {
    let Some(item) = item else {
        return Ok(TransitionOutcome::NotFound);
    };
    if let Some(tenant) = tenant {
        if tenant.as_str() != get_s(&item, "tenant")? {
            return Ok(TransitionOutcome::NotFound);
        }
    }
    Ok(TransitionOutcome::Conflict {
        current: status_of(&item)?,
    })
}

/// The update of `t`: its state change and event, what it expects, and its index attributes.
fn transition_parts(t: &Transition, timeline: Timeline, retention: Duration) -> UpdateParts {
    let mut values: HashMap<String, AttributeValue> = HashMap::new();
    let mut set = vec!["#st = :to".to_owned(), "updated_at = :at".to_owned()];
    let mut remove = vec!["lease_until".to_owned()];
    values.insert(":to".into(), s(t.to.as_str()));
    values.insert(":at".into(), n(ms(t.at)));
    let (event_clause, event_condition) = timeline.clauses();
    timeline.values(event_value(t.to.into(), t.at, &t.detail), &mut values);
    let mut condition = vec![sources_condition(t.to, &mut values), event_condition];
    if let Some(tenant) = &t.tenant {
        condition.push("tenant = :tenant".into());
        values.insert(":tenant".into(), s(tenant.as_str()));
    }
    if let Some(attempt) = t.attempt {
        condition.push("attempts = :attempt".into());
        values.insert(":attempt".into(), n(attempt));
    }
    match t.attempts {
        AttemptChange::Keep => {}
        AttemptChange::GiveBack => {
            set.push("attempts = attempts - :one".into());
            values.insert(":one".into(), n(1));
            condition.push("attempts >= :one".into());
        }
        AttemptChange::Reset => {
            set.push("attempts = :zero".into());
            values.insert(":zero".into(), n(0));
        }
    }
    route_attributes(t, &mut set, &mut values);
    // The dead-letter index holds exactly the failed messages.
    match t.to {
        MessageStatus::Failed => set.push("dl_tenant = tenant".into()),
        _ => remove.push("dl_tenant".into()),
    }
    if is_open(t.to) {
        remove.push("expires_at".into());
    } else {
        set.push("expires_at = :exp".into());
        let expires = Utc::now() + chrono::Duration::from_std(retention).unwrap_or_default();
        values.insert(":exp".into(), n(epoch_seconds(expires)));
    }
    UpdateParts {
        update: join_update(&event_clause, &set, &remove),
        condition: condition.join(" AND "),
        values,
    }
}

/// `#st IN (...)`: the statuses that may become `to`.
fn sources_condition(to: MessageStatus, values: &mut HashMap<String, AttributeValue>) -> String {
    let sources = MessageStatus::sources_of(to);
    let placeholders: Vec<String> = (0..sources.len()).map(|i| format!(":src{i}")).collect();
    for (p, st) in placeholders.iter().zip(sources) {
        values.insert(p.clone(), s(st.as_str()));
    }
    format!("#st IN ({})", placeholders.join(", "))
}

/// The hand-off's gateway, provider id and error.
fn route_attributes(
    t: &Transition,
    set: &mut Vec<String>,
    values: &mut HashMap<String, AttributeValue>,
) {
    if let Some(g) = &t.gateway {
        set.push("gateway = :gw".into());
        values.insert(":gw".into(), s(g));
    }
    if let (Some(g), Some(p)) = (&t.gateway, &t.provider_message_id) {
        set.push("provider_message_id = :pid".into());
        values.insert(":pid".into(), s(p));
        // The `by_provider` index entry costs a write unit; callbacks that name the message
        // do not need it.
        if t.index_provider_id {
            set.push("provider_key = :pkey".into());
            values.insert(":pkey".into(), s(provider_key(g, p)));
        }
    }
    if let Some(err) = &t.last_error {
        set.push("last_error = :err".into());
        values.insert(":err".into(), s(err));
    }
}
