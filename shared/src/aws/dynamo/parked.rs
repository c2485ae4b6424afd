//! Provider events parked until their message's `sent` is recorded: one item per provider
//! message in the idempotency table (`parked#<gateway>#<provider id>`), its events a list
//! appended to in order, gone with the table's TTL (`expires_at`) if never forgotten.
//!
//! An event that names its message (SES's tag) also flags that message (`parked`) once parked.
//! The `sent` transition returns the flag with the old item, so the dispatcher looks for parked
//! events only when there are some. The parker tries its events again after flagging, so a
//! `sent` that came before the flag is caught by the parker instead. Events are forgotten
//! only once applied (`engine/parked.rs`).

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::Utc;

use super::item::{opt_n, opt_s, s, Item};
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
                     expires_at = :expires, #gen = if_not_exists(#gen, :generation), \
                     #forgotten = if_not_exists(#forgotten, :zero)",
                )
                .set_expression_attribute_names(Some(ItemMark::names()))
                .expression_attribute_values(":generation", s(&generation))
                .expression_attribute_values(":zero", super::item::n(0))
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
        Ok(ParkedEvents {
            events: live_events(&item)?,
            mark: Some(ItemMark::of(&item)?.mark()),
        })
    }

    /// Deletes the item when nothing was parked since the read, else takes the entries read off
    /// the front of its list; each write only while the item is as read (its generation, and
    /// nothing taken off since), so a stale mark, a repeated request or an item parked anew
    /// is left alone.
    pub(super) async fn forget_parked_events(
        &self,
        gateway: &str,
        provider_message_id: &str,
        mark: ParkedMark,
    ) -> Result<(), StoreError> {
        let mut at = ItemMark::parse(&mark)?;
        let (table, pk) = (
            self.idempotency_table()?,
            parked_pk(gateway, provider_message_id),
        );
        let (as_read, mut values) = at.as_read();
        values.insert(":n".into(), super::item::n(at.read));
        let deleted = self
            .client
            .delete_item()
            .table_name(table)
            .key("pk", s(&pk))
            .condition_expression(format!("{as_read} AND size(events) = :n"))
            .set_expression_attribute_names(Some(ItemMark::names()))
            .set_expression_attribute_values(Some(values))
            .send()
            .await;
        if applied(deleted, "DeleteItem")? {
            return Ok(());
        }
        // A few at a time: an update expression holds at most 4 KB.
        while at.read > 0 {
            let take = at.read.min(TAKEN_PER_WRITE);
            let entries: Vec<String> = (0..take).map(|i| format!("events[{i}]")).collect();
            let done = at.forgotten.unwrap_or(0) + take;
            let (as_read, mut values) = at.as_read();
            values.insert(":done".into(), super::item::n(done));
            let taken = self
                .client
                .update_item()
                .table_name(table)
                .key("pk", s(&pk))
                .update_expression(format!(
                    "REMOVE {} SET #forgotten = :done",
                    entries.join(", ")
                ))
                .condition_expression(as_read)
                .set_expression_attribute_names(Some(ItemMark::names()))
                .set_expression_attribute_values(Some(values))
                .send()
                .await;
            // Refused: the item is gone or parked anew, or another release took entries off
            // first; what is left is applied again by a later release, or expires.
            if !applied(taken, "UpdateItem")? {
                break;
            }
            at.forgotten = Some(done);
            at.read -= take;
        }
        Ok(())
    }
}

/// Entries taken off a parked item's list per write.
const TAKEN_PER_WRITE: usize = 100;

/// What a read saw of a parked item: which item it was (its generation), how many entries had
/// been taken off its front, and how many it read. Items parked before the first two were
/// stored have neither.
struct ItemMark {
    generation: Option<String>,
    forgotten: Option<usize>,
    read: usize,
}

impl ItemMark {
    fn of(item: &Item) -> Result<ItemMark, StoreError> {
        Ok(ItemMark {
            generation: opt_s(item, "generation").map(str::to_owned),
            forgotten: opt_n(item, "forgotten")?,
            read: match item.get("events") {
                Some(AttributeValue::L(events)) => events.len(),
                _ => 0,
            },
        })
    }

    fn mark(&self) -> ParkedMark {
        let forgotten = self.forgotten.map(|f| f.to_string()).unwrap_or_default();
        let generation = self.generation.as_deref().unwrap_or_default();
        ParkedMark(format!("{generation}\n{forgotten}\n{}", self.read))
    }

    fn parse(mark: &ParkedMark) -> Result<ItemMark, StoreError> {
        let mut parts = mark.0.split('\n');
        let (Some(generation), Some(forgotten), Some(read), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(mark.unreadable());
        };
        let number = |text: &str| text.parse::<usize>().map_err(|_| mark.unreadable());
        Ok(ItemMark {
            generation: (!generation.is_empty()).then(|| generation.to_owned()),
            forgotten: match forgotten {
                "" => None,
                f => Some(number(f)?),
            },
            read: number(read)?,
        })
    }

    /// The condition that the item is as this read saw it, and its values.
    fn as_read(&self) -> (String, HashMap<String, AttributeValue>) {
        let mut values = HashMap::new();
        let generation = match &self.generation {
            Some(g) => {
                values.insert(":generation".to_owned(), s(g));
                "#gen = :generation"
            }
            None => "attribute_not_exists(#gen)",
        };
        let forgotten = match self.forgotten {
            Some(f) => {
                values.insert(":forgotten".to_owned(), super::item::n(f));
                "#forgotten = :forgotten"
            }
            None => "attribute_not_exists(#forgotten)",
        };
        (format!("{generation} AND {forgotten}"), values)
    }

    /// Through names: DynamoDB's reserved words might take them.
    fn names() -> HashMap<String, String> {
        HashMap::from([
            ("#gen".to_owned(), "generation".to_owned()),
            ("#forgotten".to_owned(), "forgotten".to_owned()),
        ])
    }
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
    // An entry that is not a string reads as "", which is no event either.
    Ok(events
        .iter()
        .filter_map(|v| ProviderEvent::from_parked(v.as_s().map_or("", String::as_str)))
        .collect())
}
