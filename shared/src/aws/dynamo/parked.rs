//! Provider events parked until their message's `sent` is recorded: one item per provider
//! message in the idempotency table (`parked#<gateway>#<provider id>`), its events a list
//! appended to in order, gone with the table's TTL (`expires_at`) if never taken.
//!
//! An event that names its message (SES's tag) also flags that message (`parked`) once parked.
//! The `sent` transition returns the flag with the old item, so the dispatcher looks for parked
//! events only when there are some. The parker tries its events again after flagging, so a
//! `sent` that came before the flag is caught by the parker instead.

use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use chrono::Utc;

use super::item::{opt_n, s, Item};
use super::transitions::PARKED_FLAG;
use super::{applied, epoch_seconds, unavailable, DynamoStore};
use crate::ports::{ProviderEvent, StoreError};

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

    /// A consistent read first: a `sent` with nothing parked (nearly all) costs no write.
    pub(super) async fn take_parked_events(
        &self,
        gateway: &str,
        provider_message_id: &str,
    ) -> Result<Vec<ProviderEvent>, StoreError> {
        let pk = parked_pk(gateway, provider_message_id);
        let found = self
            .client
            .get_item()
            .table_name(self.idempotency_table()?)
            .key("pk", s(&pk))
            .projection_expression("pk")
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("GetItem", e))?;
        if found.item.is_none() {
            return Ok(Vec::new());
        }
        let taken = self
            .client
            .delete_item()
            .table_name(self.idempotency_table()?)
            .key("pk", s(pk))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| unavailable("DeleteItem", e))?;
        taken
            .attributes
            .map_or(Ok(Vec::new()), |item| live_events(&item))
    }
}

/// The events of a taken item, unless its time ran out before the TTL removed it.
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
