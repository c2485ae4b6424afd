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

use super::item::{opt_n, s, Item};
use super::transitions::PARKED_FLAG;
use super::{applied, epoch_seconds, unavailable, DynamoStore};
use crate::ports::{ParkedEvents, ParkedMark, ProviderEvent, StoreError};

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
                     expires_at = :expires",
                )
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
        let stored = match item.get("events") {
            Some(AttributeValue::L(events)) => events.as_slice(),
            _ => &[],
        };
        let mark = match stored.first() {
            Some(AttributeValue::S(first)) => {
                Some(ParkedMark(format!("{}\n{first}", stored.len())))
            }
            _ => None,
        };
        Ok(ParkedEvents {
            events: live_events(&item)?,
            mark,
        })
    }

    /// Deletes the item when nothing was appended since the read, else removes the entries
    /// read from the front of its list; either only while its first entry is the one read,
    /// so an item parked anew after another forgot this one is left alone.
    pub(super) async fn forget_parked_events(
        &self,
        gateway: &str,
        provider_message_id: &str,
        mark: ParkedMark,
    ) -> Result<(), StoreError> {
        let (count, first) = mark.0.split_once('\n').ok_or_else(|| mark.unreadable())?;
        let count: usize = count.parse().map_err(|_| mark.unreadable())?;
        let (table, pk) = (
            self.idempotency_table()?,
            parked_pk(gateway, provider_message_id),
        );
        let values = [(":n", super::item::n(count)), (":first", s(first))];
        let deleted = self
            .client
            .delete_item()
            .table_name(table)
            .key("pk", s(&pk))
            .condition_expression("size(events) = :n AND events[0] = :first")
            .set_expression_attribute_values(Some(owned(&values)))
            .send()
            .await;
        if applied(deleted, "DeleteItem")? {
            return Ok(());
        }
        let read: Vec<String> = (0..count).map(|i| format!("events[{i}]")).collect();
        let trimmed = self
            .client
            .update_item()
            .table_name(table)
            .key("pk", s(pk))
            .update_expression(format!("REMOVE {}", read.join(", ")))
            .condition_expression("size(events) > :n AND events[0] = :first")
            .set_expression_attribute_values(Some(owned(&values)))
            .send()
            .await;
        // Refused: another forgot them already.
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
    events
        .iter()
        .map(|v| match v {
            AttributeValue::S(json) => serde_json::from_str(json).map_err(corrupt),
            _ => Err(corrupt("not a string")),
        })
        .collect()
}
