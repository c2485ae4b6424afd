//! Provider events parked until their message's `sent` is recorded: one item per provider
//! message in the idempotency table (`parked#<gateway>#<provider id>`), its events a list
//! appended to in order, gone with the table's TTL (`expires_at`) if never forgotten.
//!
//! An event that names its message (SES's tag) also flags that message (`parked`) once parked.
//! The `sent` transition returns the flag with the old item, so the dispatcher looks for parked
//! events only when there are some. The parker tries its events again after flagging, so a
//! `sent` that came before the flag is caught by the parker instead. Events are forgotten
//! only once applied (`engine/parked.rs`).
//!
//! An event that does not name its message (Postal, WhatsApp) is matched through the
//! provider-id index, which catches up a moment after the `sent`. So the release after a `sent`
//! leaves word of its message on the item (`sent_message`) in the same write that reads it, and
//! each park reads the item back as written: whichever of the two comes second sees the other.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use chrono::Utc;

use super::item::{opt_n, opt_s, s, Item};
use super::transitions::PARKED_FLAG;
use super::{applied, epoch_seconds, unavailable, DynamoStore};
use crate::domain::MessageId;
use crate::ports::{ParkedEvents, ParkedMark, ProviderEvent, SentUnder, StoreError};

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
    ) -> Result<SentUnder, StoreError> {
        // Names the item from its first park on, so a mark read from an item that was
        // forgotten since never matches one parked anew.
        let generation = uuid::Uuid::now_v7().to_string();
        let mut sent = SentUnder::new();
        for event in events {
            let json = serde_json::to_string(event).map_err(corrupt)?;
            let parked = self
                .client
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
                .expression_attribute_values(":expires", expires_in(keep))
                .return_values(ReturnValue::AllNew)
                .send()
                .await
                .map_err(|e| unavailable("UpdateItem", e))?;
            if let Some(message) = parked.attributes.as_ref().and_then(sent_message) {
                let key = (event.gateway.clone(), event.provider_message_id.clone());
                sent.insert(key, message);
            }
        }
        let mut named: Vec<String> = events
            .iter()
            .filter_map(|e| e.message_id.map(|id| id.to_string()))
            .collect();
        named.dedup();
        for id in named {
            self.flag_parked(&id).await?;
        }
        Ok(sent)
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
        found
            .item
            .as_ref()
            .map_or(Ok(ParkedEvents::default()), parked_in)
    }

    /// As [`DynamoStore::parked_events`], after a `sent` recorded under the provider id: the
    /// read is the write that leaves word of its message, so a park after it learns the
    /// message. One write unit where the consistent read was one read unit.
    pub(super) async fn parked_after_sent(
        &self,
        gateway: &str,
        provider_message_id: &str,
        sent: MessageId,
    ) -> Result<ParkedEvents, StoreError> {
        let names = ItemMark::names_with_sent();
        // An `expires_at` already past stays (its events expired; the item may go any time,
        // word and all): that takes events parked a day before their `sent`, which a hand-off
        // that records `sent` in seconds does not leave.
        let written = self
            .client
            .update_item()
            .table_name(self.idempotency_table()?)
            .key("pk", s(parked_pk(gateway, provider_message_id)))
            .update_expression(
                "SET #sent = :sent, expires_at = if_not_exists(expires_at, :expires), \
                 #gen = if_not_exists(#gen, :generation), \
                 #forgotten = if_not_exists(#forgotten, :zero)",
            )
            .set_expression_attribute_names(Some(names))
            .expression_attribute_values(":sent", s(sent.to_string()))
            .expression_attribute_values(":expires", expires_in(WORD_KEEP))
            .expression_attribute_values(":generation", s(uuid::Uuid::now_v7().to_string()))
            .expression_attribute_values(":zero", super::item::n(0))
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(|e| unavailable("UpdateItem", e))?;
        written
            .attributes
            .as_ref()
            .map_or(Ok(ParkedEvents::default()), parked_in)
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
        // An item that holds a `sent`'s word stays (for a park after this), its entries taken.
        let names = ItemMark::names_with_sent();
        let deleted = self
            .client
            .delete_item()
            .table_name(table)
            .key("pk", s(&pk))
            .condition_expression(format!(
                "{as_read} AND size(events) = :n AND attribute_not_exists(#sent)"
            ))
            .set_expression_attribute_names(Some(names))
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

/// The attribute that holds the message a `sent` was recorded for.
const SENT_MESSAGE: &str = "sent_message";

/// How long a `sent`'s word is kept on an item that holds nothing else: as long as an event
/// may wait (the engine's `PARK_KEEP`); the index has caught up long before.
const WORD_KEEP: Duration = Duration::from_secs(24 * 3600);

/// A parked item as read: a mark only when it holds entries (an item that holds only a
/// `sent`'s word has nothing to forget).
fn parked_in(item: &Item) -> Result<ParkedEvents, StoreError> {
    let at = ItemMark::of(item)?;
    Ok(ParkedEvents {
        events: live_events(item)?,
        mark: (at.read > 0).then(|| at.mark()),
        sent: sent_message(item),
    })
}

/// The TTL attribute's value for an item kept `keep` from now.
fn expires_in(keep: Duration) -> AttributeValue {
    let at = Utc::now() + chrono::Duration::from_std(keep).unwrap_or_default();
    super::item::n(epoch_seconds(at))
}

fn sent_message(item: &Item) -> Option<MessageId> {
    opt_s(item, SENT_MESSAGE).and_then(MessageId::parse)
}

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

    /// As [`ItemMark::names`], and the `sent`'s word, for the expressions that name it.
    fn names_with_sent() -> HashMap<String, String> {
        let mut names = ItemMark::names();
        names.insert("#sent".to_owned(), SENT_MESSAGE.to_owned());
        names
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
