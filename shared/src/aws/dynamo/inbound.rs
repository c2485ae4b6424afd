//! Inbound messages on DynamoDB (`inbound`: PK `tenant`, SK `id`, TTL `expires_at`), stored
//! once per `(gateway, provider_message_id)` through an `inbound#...` marker in the
//! idempotency table, written in the same transaction (see docs/dynamodb.md).
//!
//! The pipeline's progress is on the item: `state`, `attempts`, and while the message waits
//! for a worker (`received`, or `processing` under a lease) `due_at` (when it may be taken, or
//! when the lease ends) with `pending`, the partition key of the sparse `pending` index, so
//! that index holds exactly the waiting messages of every tenant.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::{
    AttributeValue, Put, ReturnValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
};
use chrono::{DateTime, Utc};

use super::item::{get_n, get_s, ms, n, opt_n, opt_s, s, Item};
use super::{
    build_error, cancelled_by_condition, epoch_seconds, query_up_to, unavailable, DynamoStore,
    Updated,
};
use crate::domain::inbound::{InboundClaim, InboundOutcome, InboundProgress, InboundState};
use crate::domain::media::MediaItem;
use crate::domain::rules::Decision;
use crate::domain::thread::ThreadId;
use crate::domain::thread_policy::ThreadPolicy;
use crate::domain::{Channel, InboundMessage, Keyword, MessageId, TenantId};
use crate::ports::{InboundStore, StoreError};

/// The inbound table's index of messages waiting for a worker, by `due_at`.
pub(crate) const PENDING_INDEX: &str = "pending";
/// Partitions of the `pending` index. Each message writes it about four times (stored,
/// claimed: its sort key moves, so a delete and a put, finished), and a GSI partition key
/// takes about 1,000 writes a second: one key would cap a burst of replies (to a broadcast,
/// say) near 250 messages a second, and throttle the table's own writes beyond. Eight cap it
/// near 2,000; the sweep queries all eight at once.
const PENDING_SHARDS: u8 = 8;

/// The `pending` key of a message: a shard picked by its id (a UUIDv7's last byte is random).
fn pending_key(id: MessageId) -> String {
    pending_shard(id.as_uuid().as_bytes()[15] % PENDING_SHARDS)
}

fn pending_shard(shard: u8) -> String {
    format!("p#{shard}")
}

/// The idempotency-table key that says a provider's message was stored.
fn marker_pk(gateway: &str, provider_message_id: &str) -> String {
    format!("inbound#{gateway}#{provider_message_id}")
}

/// A message's files as JSON; none when it has none.
fn media_attr(media: &[MediaItem]) -> Option<AttributeValue> {
    (!media.is_empty())
        .then(|| serde_json::to_string(media).ok())
        .flatten()
        .map(s)
}

/// The stored message: `received`, due at once, in the thread threading chose.
fn to_item(m: &InboundMessage, thread: Option<ThreadId>, expires_at: i64) -> Item {
    let mut item = Item::new();
    let mut put = |k: &str, v: AttributeValue| {
        item.insert(k.to_owned(), v);
    };
    put("tenant", s(m.tenant.as_str()));
    put("id", s(m.id.to_string()));
    put("channel", s(m.channel.as_str()));
    put("gateway", s(&m.gateway));
    put("provider_message_id", s(&m.provider_message_id));
    put("from", s(&m.from));
    put("to", s(&m.to));
    put("body", s(&m.body));
    put(
        "media_urls",
        AttributeValue::L(m.media_urls.iter().map(s).collect()),
    );
    if let Some(k) = m.keyword {
        put("keyword", s(k.as_str()));
    }
    put("received_at", n(ms(m.received_at)));
    put("expires_at", n(expires_at));
    if let Some(email) = m.email.as_ref().and_then(|e| serde_json::to_string(e).ok()) {
        put("email", s(email));
    }
    if let Some(media) = media_attr(&m.media) {
        put("media", media);
    }
    if let Some(t) = thread {
        put("thread_id", s(t.to_string()));
    }
    put("state", s(InboundState::Received.as_str()));
    put("attempts", n(0));
    put("pending", s(pending_key(m.id)));
    // Due when stored, by our clock (a provider's timestamp may be ahead of it).
    put("due_at", n(ms(chrono::Utc::now())));
    item
}

/// A message's state. Messages stored before the pipeline have none: nothing processes them
/// (no rules existed), so they read as processed.
fn state_of(item: &Item) -> Result<InboundState, StoreError> {
    opt_s(item, "state").map_or(Ok(InboundState::Processed), |raw| {
        InboundState::parse(raw)
            .ok_or_else(|| StoreError::Corrupt(format!("inbound item: state {raw}")))
    })
}

fn progress_of(item: &Item) -> Result<InboundProgress, StoreError> {
    let decision = opt_s(item, "decision")
        .map(|d| {
            serde_json::from_str::<Decision>(d)
                .map_err(|e| StoreError::Corrupt(format!("inbound item: decision: {e}")))
        })
        .transpose()?;
    Ok(InboundProgress {
        state: state_of(item)?,
        attempts: opt_n(item, "attempts")?.unwrap_or(0),
        decision,
        error: opt_s(item, "error").map(str::to_owned),
        processed_at: opt_n::<i64>(item, "processed_at")?
            .map(|at| DateTime::from_timestamp_millis(at).unwrap_or_default()),
        first_claimed_at: opt_n::<i64>(item, "first_claimed_at")?
            .map(|at| DateTime::from_timestamp_millis(at).unwrap_or_default()),
    })
}

fn from_item(item: &Item) -> Result<InboundMessage, StoreError> {
    let corrupt = |what: String| StoreError::Corrupt(format!("inbound item: {what}"));
    let id = get_s(item, "id")?;
    let tenant = get_s(item, "tenant")?;
    let channel = get_s(item, "channel")?;
    let media_urls = match item.get("media_urls") {
        None => Vec::new(),
        Some(AttributeValue::L(list)) => list
            .iter()
            .map(|v| match v {
                AttributeValue::S(url) => Ok(url.clone()),
                _ => Err(corrupt("a media url is not a string".into())),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(corrupt("media_urls is not a list".into())),
    };
    let keyword = opt_s(item, "keyword")
        .map(|k| Keyword::parse(k).ok_or_else(|| corrupt(format!("keyword {k}"))))
        .transpose()?;
    let thread = opt_s(item, "thread_id")
        .map(|t| ThreadId::parse(t).ok_or_else(|| corrupt(format!("thread {t}"))))
        .transpose()?;
    Ok(InboundMessage {
        id: MessageId::parse(id).ok_or_else(|| corrupt(format!("id {id}")))?,
        tenant: TenantId::parse(tenant).map_err(|e| corrupt(format!("tenant {tenant}: {e}")))?,
        channel: Channel::parse(channel).ok_or_else(|| corrupt(format!("channel {channel}")))?,
        gateway: get_s(item, "gateway")?.to_owned(),
        provider_message_id: get_s(item, "provider_message_id")?.to_owned(),
        from: get_s(item, "from")?.to_owned(),
        to: get_s(item, "to")?.to_owned(),
        body: get_s(item, "body")?.to_owned(),
        media_urls,
        keyword,
        received_at: DateTime::from_timestamp_millis(get_n(item, "received_at")?)
            .unwrap_or_default(),
        thread,
        progress: progress_of(item)?,
        email: opt_s(item, "email")
            .map(|e| serde_json::from_str(e).map_err(|e| corrupt(format!("email: {e}"))))
            .transpose()?,
        media: opt_s(item, "media")
            .map(|e| serde_json::from_str(e).map_err(|e| corrupt(format!("media: {e}"))))
            .transpose()?
            .unwrap_or_default(),
    })
}

/// A `pending` index entry: when it is due, and whose message it is.
fn pending_of(item: &Item) -> Result<(i64, TenantId, MessageId), StoreError> {
    let (tenant, id) = (get_s(item, "tenant")?, get_s(item, "id")?);
    let corrupt = || StoreError::Corrupt(format!("inbound {tenant}/{id}"));
    Ok((
        get_n(item, "due_at")?,
        TenantId::parse(tenant).map_err(|_| corrupt())?,
        MessageId::parse(id).ok_or_else(corrupt)?,
    ))
}

impl DynamoStore {
    /// An UpdateItem of one message, `state` named `#st` (a reserved word).
    fn inbound_update(
        &self,
        tenant: &TenantId,
        id: MessageId,
    ) -> Result<UpdateItemFluentBuilder, StoreError> {
        Ok(self
            .client
            .update_item()
            .table_name(self.inbound_table()?)
            .key("tenant", s(tenant.as_str()))
            .key("id", s(id.to_string()))
            .expression_attribute_names("#st", "state"))
    }

    /// An UpdateItem that applies only while the message is `processing`: a message another
    /// worker finished keeps what it has. Its outcome is no error either way.
    async fn while_processing(
        &self,
        update: UpdateItemFluentBuilder,
        attempt: u32,
    ) -> Result<(), StoreError> {
        let result = update
            .condition_expression("#st = :processing AND attempts = :attempt")
            .expression_attribute_values(":processing", s(InboundState::Processing.as_str()))
            .expression_attribute_values(":attempt", n(attempt))
            .send()
            .await;
        super::applied(result, "UpdateItem").map(|_| ())
    }
}

impl DynamoStore {
    /// A stored inbound message's item (strongly read), with only `projection` when given.
    async fn inbound_item(
        &self,
        tenant: &str,
        id: &str,
        projection: Option<&str>,
    ) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(self.inbound_table()?)
            .key("tenant", s(tenant))
            .key("id", s(id))
            .set_projection_expression(projection.map(str::to_owned))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("GetItem", e))?;
        Ok(out.item)
    }
}

#[async_trait]
impl InboundStore for DynamoStore {
    async fn record_inbound(
        &self,
        m: &InboundMessage,
        policy: &ThreadPolicy,
    ) -> Result<bool, StoreError> {
        // The message and its marker expire together: a retry is recognised for as long as
        // the message it repeats is kept.
        let expires_at = epoch_seconds(
            m.received_at + chrono::Duration::from_std(self.retention).unwrap_or_default(),
        );
        let marker = Put::builder()
            .table_name(self.idempotency_table()?)
            .item("pk", s(marker_pk(&m.gateway, &m.provider_message_id)))
            .item("tenant", s(m.tenant.as_str()))
            .item("id", s(m.id.to_string()))
            .item("expires_at", n(expires_at))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(build_error)?;
        // Threading reads before it writes: a contact or thread made meanwhile by another
        // message of the same sender cancels the transaction, and the next try finds it (and
        // may choose another thread, which the message records).
        let mut tries = 0;
        loop {
            tries += 1;
            let (threading, thread) = self.inbound_thread_items(m, policy).await?;
            let message = Put::builder()
                .table_name(self.inbound_table()?)
                .set_item(Some(to_item(m, thread, expires_at)))
                .condition_expression("attribute_not_exists(id)")
                .build()
                .map_err(build_error)?;
            let mut items = vec![
                TransactWriteItem::builder().put(marker.clone()).build(),
                TransactWriteItem::builder().put(message).build(),
            ];
            items.extend(threading);
            let written = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items))
                .send()
                .await;
            match written {
                Ok(_) => return Ok(true),
                // The marker is the first item: its condition failing means a retry.
                Err(e) if cancelled_by_condition(&e, Some(0)) => return Ok(false),
                Err(e) if tries < 5 && super::transaction_cancelled(&e) => {
                    // Messages of one sender often come in a burst: spread the tries.
                    let jitter = u64::from(m.id.to_string().as_bytes()[35] % 16);
                    tokio::time::sleep(std::time::Duration::from_millis(15 * tries + jitter)).await;
                }
                Err(e) => return Err(unavailable("TransactWriteItems", e)),
            }
        }
    }

    async fn list_inbound(
        &self,
        tenant: &TenantId,
        before: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<InboundMessage>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(self.inbound_table()?)
            .scan_index_forward(false)
            .expression_attribute_values(":t", s(tenant.as_str()));
        let query = match before {
            Some(b) => query
                .key_condition_expression("tenant = :t AND id < :before")
                .expression_attribute_values(":before", s(b.to_string())),
            None => query.key_condition_expression("tenant = :t"),
        };
        query_up_to(query, limit, from_item).await
    }

    /// The marker names the message; two reads, on a retry's rare path only.
    async fn first_received_at(
        &self,
        gateway: &str,
        provider_message_id: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(self.idempotency_table()?)
            .key("pk", s(marker_pk(gateway, provider_message_id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("GetItem", e))?;
        let Some(marker) = out.item else {
            return Ok(None);
        };
        // Only the time: nothing else of the message can fail this read.
        let (tenant, id) = (get_s(&marker, "tenant")?, get_s(&marker, "id")?);
        let Some(item) = self.inbound_item(tenant, id, Some("received_at")).await? else {
            return Ok(None);
        };
        let at = get_n(&item, "received_at")?;
        let at = DateTime::from_timestamp_millis(at)
            .ok_or_else(|| StoreError::Corrupt(format!("inbound {id}: received_at {at}")))?;
        Ok(Some(at))
    }

    async fn inbound_message(
        &self,
        tenant: &TenantId,
        id: MessageId,
    ) -> Result<Option<InboundMessage>, StoreError> {
        let item = self
            .inbound_item(tenant.as_str(), &id.to_string(), None)
            .await?;
        item.as_ref().map(from_item).transpose()
    }

    /// One conditional UpdateItem; a refusal says why from the item as it was.
    async fn claim_inbound(
        &self,
        tenant: &TenantId,
        id: MessageId,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<InboundClaim, StoreError> {
        let lease = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        let result = self
            .inbound_update(tenant, id)?
            .update_expression(
                "SET #st = :processing, due_at = :until, \
                 first_claimed_at = if_not_exists(first_claimed_at, :now) ADD attempts :one",
            )
            // `attribute_exists`: a claim never makes an item of an id it does not find.
            .condition_expression(
                "attribute_exists(id) AND #st IN (:received, :processing) AND due_at <= :now",
            )
            .expression_attribute_values(":received", s(InboundState::Received.as_str()))
            .expression_attribute_values(":processing", s(InboundState::Processing.as_str()))
            .expression_attribute_values(":until", n(ms(now).saturating_add(lease)))
            .expression_attribute_values(":now", n(ms(now)))
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        Ok(match super::updated(result)? {
            Updated::Applied(item) => {
                let item = item.ok_or_else(|| {
                    StoreError::Corrupt(format!("inbound {id}: a claim returned no item"))
                })?;
                InboundClaim::Claimed(Box::new(from_item(&item)?))
            }
            Updated::Refused(None) => InboundClaim::Missing,
            Updated::Refused(Some(was)) => match state_of(&was)? {
                InboundState::Processed | InboundState::Failed => InboundClaim::Done,
                InboundState::Received | InboundState::Processing => InboundClaim::Held,
            },
        })
    }

    /// Removing `pending` and `due_at` takes the message out of the index.
    async fn finish_inbound(
        &self,
        tenant: &TenantId,
        id: MessageId,
        attempt: u32,
        outcome: &InboundOutcome,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        // The outcome's attribute is set, the other one's (from an earlier try) removed.
        let (state, set, value, removed) = match outcome {
            InboundOutcome::Processed(d) => (
                InboundState::Processed,
                "decision",
                serde_json::to_string(d).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                "#err",
            ),
            InboundOutcome::Failed(e) => (InboundState::Failed, "#err", e.clone(), "decision"),
        };
        let update = self
            .inbound_update(tenant, id)?
            .update_expression(format!(
                "SET #st = :state, {set} = :value, processed_at = :now \
                 REMOVE {removed}, pending, due_at"
            ))
            .expression_attribute_names("#err", "error")
            .expression_attribute_values(":state", s(state.as_str()))
            .expression_attribute_values(":value", s(value))
            .expression_attribute_values(":now", n(ms(now)));
        self.while_processing(update, attempt).await
    }

    async fn retry_inbound(
        &self,
        tenant: &TenantId,
        id: MessageId,
        attempt: u32,
        error: &str,
        retry_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let update = self
            .inbound_update(tenant, id)?
            .update_expression("SET #st = :received, due_at = :retry, #err = :error")
            .expression_attribute_names("#err", "error")
            .expression_attribute_values(":received", s(InboundState::Received.as_str()))
            .expression_attribute_values(":retry", n(ms(retry_at)))
            .expression_attribute_values(":error", s(error));
        self.while_processing(update, attempt).await
    }

    async fn set_inbound_media(
        &self,
        tenant: &TenantId,
        id: MessageId,
        attempt: u32,
        media: &[MediaItem],
    ) -> Result<(), StoreError> {
        let Some(media) = media_attr(media) else {
            return Ok(());
        };
        let update = self
            .inbound_update(tenant, id)?
            .update_expression("SET media = :media")
            .expression_attribute_values(":media", media);
        self.while_processing(update, attempt).await
    }

    /// Every shard of the `pending` index at once, merged by due time.
    async fn pending_inbound(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(TenantId, MessageId)>, StoreError> {
        let table = self.inbound_table()?;
        let shards = (0..PENDING_SHARDS).map(|shard| {
            let query = self
                .client
                .query()
                .table_name(table)
                .index_name(PENDING_INDEX)
                .key_condition_expression("pending = :p AND due_at <= :now")
                .expression_attribute_values(":p", s(pending_shard(shard)))
                .expression_attribute_values(":now", n(ms(now)));
            query_up_to(query, limit, pending_of)
        });
        let mut found: Vec<_> = futures::future::try_join_all(shards)
            .await?
            .into_iter()
            .flatten()
            .collect();
        found.sort_by_key(|(due, _, id)| (*due, *id));
        Ok(found
            .into_iter()
            .take(limit)
            .map(|(_, tenant, id)| (tenant, id))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::inbound_email::InboundEmail;
    use crate::domain::media::MediaId;
    use crate::domain::rules::Decision;

    fn message() -> InboundMessage {
        let mut m = crate::ports::contract::inbound(&TenantId::parse("acme").unwrap(), "SM1", "hi");
        m.received_at = DateTime::from_timestamp_millis(1_700_000_000_000).unwrap();
        m.email = Some(Box::new(InboundEmail {
            subject: Some("Re: hi".into()),
            in_reply_to: vec!["a@herald".into()],
            ..Default::default()
        }));
        m.media = vec![MediaItem::stored(
            MediaId::derive(&TenantId::parse("acme").unwrap(), "twilio", "SM1", 0),
            "image/png".into(),
            8,
            None,
        )];
        m
    }

    #[test]
    fn a_stored_message_waits_in_the_pending_index_from_its_arrival() {
        let m = message();
        let thread = ThreadId::new();
        let item = to_item(&m, Some(thread), 0);
        assert_eq!(opt_s(&item, "pending"), Some(pending_key(m.id).as_str()));
        assert!(get_n::<i64>(&item, "due_at").unwrap() >= ms(m.received_at));
        let read = from_item(&item).unwrap();
        assert_eq!(read.thread, Some(thread));
        assert_eq!(read.progress, InboundProgress::default());
        assert_eq!(
            read,
            InboundMessage {
                thread: Some(thread),
                ..m
            }
        );
    }

    #[test]
    fn messages_stored_before_the_pipeline_read_as_processed() {
        let mut item = to_item(&message(), None, 0);
        for pipeline in ["state", "attempts", "pending", "due_at"] {
            item.remove(pipeline);
        }
        let read = from_item(&item).unwrap();
        assert_eq!(read.progress.state, InboundState::Processed);
        assert_eq!((read.progress.attempts, read.thread), (0, None));
    }

    #[test]
    fn a_decision_and_an_error_are_read_back() {
        let mut item = to_item(&message(), None, 0);
        let decision = Decision::planned(None);
        item.insert("state".into(), s("processed"));
        item.insert(
            "decision".into(),
            s(serde_json::to_string(&decision).unwrap()),
        );
        item.insert("error".into(), s("store down"));
        item.insert("processed_at".into(), n(1_700_000_000_500_i64));
        let progress = from_item(&item).unwrap().progress;
        assert_eq!(progress.decision, Some(decision));
        assert_eq!(progress.error.as_deref(), Some("store down"));
        assert_eq!(progress.processed_at.map(ms), Some(1_700_000_000_500));
        item.insert("state".into(), s("lost"));
        assert!(from_item(&item).is_err(), "an unknown state is corrupt");
    }
}
