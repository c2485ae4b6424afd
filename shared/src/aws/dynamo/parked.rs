//! Provider events parked until their message's `sent` is recorded: one item per provider
//! message in the idempotency table (`parked#<gateway>#<provider id>`), its events a list
//! appended to in order, gone with the table's TTL (`expires_at`) if never taken.
//!
//! An event that names its message (SES's tag) also flags that message (`parked`) once parked.
//! The `sent` transition returns the flag with the old item, so the dispatcher looks for parked
//! events only when there are some. The parker tries its events again after flagging, so a
//! `sent` that came before the flag is caught by the parker instead. Events are forgotten
//! only once applied (`engine/parked.rs`).

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::Utc;

use super::item::{opt_n, opt_s, s, Item};
use super::transitions::PARKED_FLAG;
use super::{applied, epoch_seconds, unavailable, DynamoStore};
use crate::ports::{ParkedEvents, ParkedMark, ProviderEvent, StoreError};

/// The attribute that names a parked item from its first park on (through `#gen`: a name
/// that DynamoDB's reserved words might take).
const GENERATION: &str = "generation";

fn parked_pk(gateway: &str, provider_message_id: &str) -> String {
    format!("parked#{gateway}#{provider_message_id}")
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("parked event: {e}"))
}

impl DynamoStore {
    pub(super) async fn park_events(
        &self,
        events: &[ProviderEvent],
        keep: Duration,
    ) -> Result<(), StoreError> {
        let expires = Utc::now() + chrono::Duration::from_std(keep).unwrap_or_default();
        // Names the item from its first park on, so a mark read from an item that was
        // forgotten since never matches one parked anew.
        let generation = uuid::Uuid::now_v7().to_string();
        for event in events {
            let json = serde_json::to_string(event).map_err(corrupt)?;
            self.client
                .update_item()
                .table_name(self.idempotency_table()?)
                .key(
                    "pk",
                    s(parked_pk(&event.gateway, &event.provider_message_id)),
                )
                .update_expression(
                    "SET events = list_append(if_not_exists(events, :none), :new), \
                     expires_at = :expires, #gen = if_not_exists(#gen, :generation)",
                )
                .expression_attribute_names("#gen", GENERATION)
                .expression_attribute_values(":generation", s(&generation))
                .expression_attribute_values(":none", AttributeValue::L(Vec::new()))
                .expression_attribute_values(":new", AttributeValue::L(vec![s(json)]))
                .expression_attribute_values(":expires", super::item::n(epoch_seconds(expires)))
                .send()
                .await
                .map_err(|e| unavailable("UpdateItem", e))?;
        }
        let mut named: Vec<String> = events
            .iter()
            .filter_map(|e| e.message_id.map(|id| id.to_string()))
            .collect();
        named.dedup();
        for id in named {
            self.flag_parked(&id).await?;
        }
        Ok(())
    }

    /// Marks a message as having parked events; a message that does not exist stays absent.
    async fn flag_parked(&self, id: &str) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(self.messages_table()?)
            .key("id", s(id))
            .update_expression("SET #parked = :yes")
            .condition_expression("attribute_exists(id)")
            .expression_attribute_names("#parked", PARKED_FLAG)
            .expression_attribute_values(":yes", AttributeValue::Bool(true))
            .send()
            .await;
        // A message that is gone refuses the condition: nothing to flag.
        applied(result, "UpdateItem").map(|_| ())
    }

    /// A consistent read: a `sent` with nothing parked (nearly all) costs no write.
    pub(super) async fn parked_events(
        &self,
        gateway: &str,
        provider_message_id: &str,
    ) -> Result<ParkedEvents, StoreError> {
        let found = self
            .client
            .get_item()
            .table_name(self.idempotency_table()?)
            .key("pk", s(parked_pk(gateway, provider_message_id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("GetItem", e))?;
        let Some(item) = found.item else {
            return Ok(ParkedEvents::default());
        };
        let read = match item.get("events") {
            Some(AttributeValue::L(events)) => events.len(),
            _ => 0,
        };
        let generation = opt_s(&item, GENERATION).unwrap_or_default();
        let mark = Some(ParkedMark(format!("{generation}\n{read}")));
        Ok(ParkedEvents {
            events: live_events(&item)?,
            mark,
        })
    }

    /// Deletes the item when nothing was appended since the read, else removes the entries
    /// read from the front of its list; either only while it is the item read (its
    /// generation), so one parked anew after another forgot this one is left alone.
    pub(super) async fn forget_parked_events(
        &self,
        gateway: &str,
        provider_message_id: &str,
        mark: ParkedMark,
    ) -> Result<(), StoreError> {
        let (generation, read) = mark.0.split_once('\n').ok_or_else(|| mark.unreadable())?;
        let read: usize = read.parse().map_err(|_| mark.unreadable())?;
        let (table, pk) = (
            self.idempotency_table()?,
            parked_pk(gateway, provider_message_id),
        );
        // Items parked before generations were stored have none.
        let (same_item, mut values) = match generation {
            "" => ("attribute_not_exists(#gen)", Vec::new()),
            g => ("#gen = :generation", vec![(":generation", s(g))]),
        };
        values.push((":n", super::item::n(read)));
        let deleted = self
            .client
            .delete_item()
            .table_name(table)
            .key("pk", s(&pk))
            .condition_expression(format!("{same_item} AND size(events) = :n"))
            .expression_attribute_names("#gen", GENERATION)
            .set_expression_attribute_values(Some(owned(&values)))
            .send()
            .await;
        if applied(deleted, "DeleteItem")? || read == 0 {
            return Ok(());
        }
        let entries: Vec<String> = (0..read).map(|i| format!("events[{i}]")).collect();
        let trimmed = self
            .client
            .update_item()
            .table_name(table)
            .key("pk", s(pk))
            .update_expression(format!("REMOVE {}", entries.join(", ")))
            .condition_expression(format!("{same_item} AND size(events) > :n"))
            .expression_attribute_names("#gen", GENERATION)
            .set_expression_attribute_values(Some(owned(&values)))
            .send()
            .await;
        // Refused: the item is gone or parked anew, or another release trimmed fewer entries
        // from it first; what it left is applied again by a later release, or expires.
        applied(trimmed, "UpdateItem").map(|_| ())
    }
}

fn owned(values: &[(&str, AttributeValue)]) -> std::collections::HashMap<String, AttributeValue> {
    values
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

/// The events of a parked item, unless its time ran out before the TTL removed it.
fn live_events(item: &Item) -> Result<Vec<ProviderEvent>, StoreError> {
    let expires: i64 = opt_n(item, "expires_at")?.unwrap_or(0);
    if expires < epoch_seconds(Utc::now()) {
        return Ok(Vec::new());
    }
    let Some(AttributeValue::L(events)) = item.get("events") else {
        return Ok(Vec::new());
    };
    // One that cannot be read is skipped (and forgotten with the others), so it cannot hold
    // back those that can.
    let readable = |v: &AttributeValue| {
        let json = v.as_s().map_err(|_| corrupt("not a string"))?;
        serde_json::from_str(json).map_err(corrupt)
    };
    Ok(events
        .iter()
        .filter_map(|v| {
            readable(v)
                .inspect_err(
                    |e| tracing::warn!(error = %e, "an unreadable parked provider event skipped"),
                )
                .ok()
        })
        .collect())
}
