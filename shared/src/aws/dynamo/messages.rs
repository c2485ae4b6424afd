//! `MessageStore` on DynamoDB. A claim and every transition is one conditional UpdateItem that
//! changes the state and appends the event, so the timeline can never disagree with the state.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, Put, ReturnValue, TransactWriteItem};
use chrono::{DateTime, Utc};
use serde_json::json;

use super::content::message_items;
use super::item::{
    event_value, events_from_item, get_s, message_from_item, ms, n, opt_n, opt_s, provider_key, s,
    status_of, Item,
};
use super::timeline::{join_update, timeline_full, Timeline};
use super::transitions::refusal;
use super::{
    applied, build_error, cancelled_by_condition, condition_failed, epoch_seconds, unavailable,
    DynamoStore, IDEMPOTENCY_TTL,
};
use crate::domain::limits::PaceKey;
use crate::domain::{
    DeliveryEvent, EventKind, Message, MessageId, MessageStatus, NewMessage, Priority, TenantId,
};
use crate::ports::{
    AcceptBatch, AcceptOutcome, AttemptChange, BulkProgress, BulkSummary, ChannelCount,
    ClaimOutcome, IdempotencyRecord, LaneRef, MessageFilter, MessageRef, MessageStore, SearchPage,
    SentMinute, StoreError, Transition, TransitionOutcome,
};

/// A transaction holds at most 100 items: the messages and the idempotency record.
const MAX_TRANSACTION: usize = 100;
/// Claim races lost before the claim reports who holds the message.
const CLAIM_TRIES: usize = 3;

/// One try at a claim: the item as it was before the claim took, or as it is (None: there is
/// no such message) when the condition refused it.
enum ClaimTry {
    Claimed(Item),
    Refused(Option<Item>),
}

/// Statuses a message stays in while Herald still works on it; any other is final, and a final
/// message expires (TTL) after the retention period.
pub(super) fn is_open(status: MessageStatus) -> bool {
    matches!(
        status,
        MessageStatus::Queued | MessageStatus::Deferred | MessageStatus::Sending
    )
}

/// A message's lane entry.
pub(super) fn lane_ref(m: &NewMessage) -> LaneRef {
    LaneRef {
        id: m.id,
        tenant: m.tenant.as_str().to_owned(),
        lane: m.priority,
        attempt: 0,
        not_before: m.send_at,
        correlation_id: Some(m.correlation_id.clone()),
        pace: Some(PaceKey::of(m.channel, &m.to)),
        job_part: None,
    }
}

impl DynamoStore {
    pub(super) fn idempotency_put(&self, record: &IdempotencyRecord) -> Result<Put, StoreError> {
        let now = Utc::now();
        let expires = now + chrono::Duration::from_std(IDEMPOTENCY_TTL).unwrap_or_default();
        Put::builder()
            .table_name(self.idempotency_table()?)
            .item("pk", s(idempotency_pk(&record.tenant, &record.key)))
            .item("request_hash", s(&record.request_hash))
            .item("response_status", n(record.response_status))
            .item("response_body", s(&record.response_body))
            .item("created_at", n(ms(now)))
            .item("expires_at", n(epoch_seconds(expires)))
            // An expired record that TTL has not deleted yet does not count.
            .condition_expression("attribute_not_exists(pk) OR expires_at < :now")
            .expression_attribute_values(":now", n(epoch_seconds(now)))
            .build()
            .map_err(build_error)
    }

    /// Writes `writes` and, last, the idempotency record in one transaction. `Some(existing)`
    /// when the record's key was taken meanwhile (the caller answers with it).
    pub(super) async fn commit_with_key(
        &self,
        mut writes: Vec<TransactWriteItem>,
        idempotency: Option<&IdempotencyRecord>,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        if let Some(record) = idempotency {
            writes.push(
                TransactWriteItem::builder()
                    .put(self.idempotency_put(record)?)
                    .build(),
            );
        }
        let written = self
            .client
            .transact_write_items()
            .set_transact_items(Some(writes))
            .send()
            .await;
        let Err(e) = written else {
            return Ok(None);
        };
        if let (Some(record), true) = (idempotency, cancelled_by_condition(&e, None)) {
            if let Some(existing) = self.find_idempotency(&record.tenant, &record.key).await? {
                return Ok(Some(existing));
            }
        }
        Err(unavailable("TransactWriteItems", e))
    }

    pub(super) async fn get_item(&self, id: &str) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(self.messages_table()?)
            .key("id", s(id))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("GetItem", e))?;
        Ok(out.item)
    }

    /// Undoes an accept whose messages could not be put on their lane: the client gets an error,
    /// so the messages must not be sent later, and its idempotency key must not replay a 202.
    async fn undo_accept(&self, messages: &[NewMessage], record: Option<&IdempotencyRecord>) {
        for m in messages {
            let mut t = Transition::new(m.id, MessageStatus::Failed, Utc::now());
            t.last_error = Some("could not be queued; the request was refused".into());
            if let Err(e) = self.apply(&t).await {
                tracing::error!(id = %m.id, error = %e, "accept could not be undone; the message stays queued and unsent");
            }
        }
        if let Some(r) = record {
            self.forget_idempotency(r).await;
        }
    }

    /// Deletes the idempotency record of a request that was refused after all.
    pub(super) async fn forget_idempotency(&self, record: &IdempotencyRecord) {
        let Ok(table) = self.idempotency_table() else {
            return;
        };
        let deleted = self
            .client
            .delete_item()
            .table_name(table)
            .key("pk", s(idempotency_pk(&record.tenant, &record.key)))
            .send()
            .await;
        if let Err(e) = deleted {
            tracing::error!(error = %unavailable("DeleteItem", e), "idempotency key of a refused request not deleted");
        }
    }

    /// Adds (or counts) one event while the message is in one of `while_in`; false when
    /// refused.
    async fn annotate_once(
        &self,
        id: &str,
        event: &AttributeValue,
        while_in: &[MessageStatus],
        timeline: Timeline,
    ) -> Result<bool, StoreError> {
        let mut values: HashMap<String, AttributeValue> = HashMap::new();
        timeline.values(event.clone(), &mut values);
        let placeholders: Vec<String> = (0..while_in.len()).map(|i| format!(":st{i}")).collect();
        for (p, st) in placeholders.iter().zip(while_in) {
            values.insert(p.clone(), s(st.as_str()));
        }
        let (event_clause, event_condition) = timeline.clauses();
        let result = self
            .client
            .update_item()
            .table_name(self.messages_table()?)
            .key("id", s(id))
            .update_expression(&event_clause)
            .condition_expression(format!(
                "#st IN ({}) AND {event_condition}",
                placeholders.join(", ")
            ))
            .expression_attribute_names("#st", "status")
            .set_expression_attribute_values(Some(values))
            .send()
            .await;
        applied(result, "UpdateItem")
    }

    /// One conditional update, no read first: the claim expects `attempts` (a guess) and, when
    /// refused, DynamoDB returns the item as it is, so a wrong guess costs one more try and a
    /// message that is not claimable costs nothing more. `Claimed` holds the item as it was before.
    async fn claim_once(
        &self,
        id: &str,
        attempts: u32,
        now: DateTime<Utc>,
        lease: Duration,
        timeline: Timeline,
    ) -> Result<ClaimTry, StoreError> {
        let lease_until = now + chrono::Duration::from_std(lease).unwrap_or_default();
        let (event_clause, event_condition) = timeline.clauses();
        let mut values = HashMap::new();
        let event = event_value(
            MessageStatus::Sending.into(),
            now,
            &json!({ "attempt": attempts + 1 }),
        );
        timeline.values(event, &mut values);
        let set = [
            "#st = :sending".to_owned(),
            "attempts = :next".to_owned(),
            "lease_until = :lease".to_owned(),
            "updated_at = :now".to_owned(),
        ];
        let result = self
            .client
            .update_item()
            .table_name(self.messages_table()?)
            .key("id", s(id))
            .update_expression(join_update(&event_clause, &set, &[]))
            // Queued or deferred; or sending under a crashed holder's claim whose lease ran out.
            .condition_expression(format!(
                "attempts = :attempts AND (#st IN (:queued, :deferred) OR (#st = :sending AND \
                 (attribute_not_exists(lease_until) OR lease_until <= :now))) AND {event_condition}"
            ))
            .set_expression_attribute_values(Some(values))
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":queued", s(MessageStatus::Queued.as_str()))
            .expression_attribute_values(":deferred", s(MessageStatus::Deferred.as_str()))
            .expression_attribute_values(":attempts", n(attempts))
            .expression_attribute_values(":sending", s(MessageStatus::Sending.as_str()))
            .expression_attribute_values(":next", n(attempts + 1))
            .expression_attribute_values(":lease", n(ms(lease_until)))
            .expression_attribute_values(":now", n(ms(now)))
            .return_values(ReturnValue::AllOld)
            .return_values_on_condition_check_failure(
                aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure::AllOld,
            )
            .send()
            .await;
        match result {
            Ok(out) => Ok(ClaimTry::Claimed(out.attributes.unwrap_or_default())),
            Err(e) if condition_failed(&e) => {
                use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
                let current = match e.into_service_error() {
                    UpdateItemError::ConditionalCheckFailedException(c) => c.item,
                    _ => None,
                };
                Ok(ClaimTry::Refused(current))
            }
            Err(e) => Err(unavailable("UpdateItem", e)),
        }
    }
}

fn idempotency_pk(tenant: &TenantId, key: &str) -> String {
    format!("{}#{key}", tenant.as_str())
}

/// Where events may be parked for a message: one the parker flagged (an event that names its
/// message, `parked.rs`), or one indexed by its provider id (whose events do not name it, so
/// the parker cannot flag it).
fn parked_under(item: &Item) -> Option<(String, String)> {
    let may_have =
        item.contains_key(super::transitions::PARKED_FLAG) || item.contains_key("provider_key");
    if !may_have {
        return None;
    }
    let field = |name| opt_s(item, name).map(str::to_owned);
    Some((field("gateway")?, field("provider_message_id")?))
}

fn claimable(status: MessageStatus, lease_until: Option<i64>, now_ms: i64) -> bool {
    match status {
        MessageStatus::Queued | MessageStatus::Deferred => true,
        MessageStatus::Sending => lease_until.is_none_or(|l| l <= now_ms),
        _ => false,
    }
}

#[async_trait]
impl MessageStore for DynamoStore {
    async fn accept(&self, batch: AcceptBatch) -> Result<AcceptOutcome, StoreError> {
        let table = self.messages_table()?;
        let with_key = usize::from(batch.idempotency.is_some());
        if batch.messages.len() + with_key > MAX_TRANSACTION {
            return Err(StoreError::Unavailable(format!(
                "one accept holds at most {} messages on DynamoDB; bulk sends are stored as jobs",
                MAX_TRANSACTION - with_key
            )));
        }
        let (items, contents): (Vec<Item>, Vec<Option<Item>>) = batch
            .messages
            .iter()
            .map(|m| message_items(m, self.retention, true))
            .unzip();
        self.put_contents(contents.into_iter().flatten().collect())
            .await?;
        if let ([only], None) = (items.as_slice(), &batch.idempotency) {
            // Nothing to commit together with it: a plain conditional put, half a transaction.
            self.client
                .put_item()
                .table_name(table)
                .set_item(Some(only.clone()))
                .condition_expression("attribute_not_exists(id)")
                .send()
                .await
                .map_err(|e| unavailable("PutItem", e))?;
        } else {
            let mut writes = Vec::with_capacity(batch.messages.len() + with_key);
            for item in items {
                let put = Put::builder()
                    .table_name(table)
                    .set_item(Some(item))
                    .condition_expression("attribute_not_exists(id)")
                    .build()
                    .map_err(build_error)?;
                writes.push(TransactWriteItem::builder().put(put).build());
            }
            if let Some(existing) = self
                .commit_with_key(writes, batch.idempotency.as_ref())
                .await?
            {
                return Ok(AcceptOutcome::KeyExists(existing));
            }
        }
        let queued: Vec<&NewMessage> = batch
            .messages
            .iter()
            .filter(|m| m.status.is_pending())
            .collect();
        if let Err(e) = self
            .lanes
            .publish(queued.iter().map(|m| lane_ref(m)).collect())
            .await
        {
            self.undo_accept(&batch.messages, batch.idempotency.as_ref())
                .await;
            return Err(e);
        }
        Ok(AcceptOutcome::Accepted)
    }

    async fn accept_bulk(
        &self,
        job: crate::domain::BulkJob,
        idempotency: Option<IdempotencyRecord>,
    ) -> Result<AcceptOutcome, StoreError> {
        self.store_bulk_job(job, idempotency).await
    }

    async fn find_idempotency(
        &self,
        tenant: &TenantId,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(self.idempotency_table()?)
            .key("pk", s(idempotency_pk(tenant, key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("GetItem", e))?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        // TTL deletes within days, not at once: an expired record is gone for Herald.
        if opt_n::<i64>(&item, "expires_at")?.is_some_and(|t| t < epoch_seconds(Utc::now())) {
            return Ok(None);
        }
        Ok(Some(IdempotencyRecord {
            tenant: tenant.clone(),
            key: key.to_owned(),
            request_hash: get_s(&item, "request_hash")?.to_owned(),
            response_status: super::item::get_n(&item, "response_status")?,
            response_body: get_s(&item, "response_body")?.to_owned(),
        }))
    }

    async fn owner_of(&self, id: MessageId) -> Result<Option<TenantId>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(self.messages_table()?)
            .key("id", s(id.to_string()))
            .projection_expression("tenant")
            .send()
            .await
            .map_err(|e| unavailable("GetItem", e))?;
        let owner = out
            .item
            .as_ref()
            .and_then(|i| opt_s(i, "tenant"))
            .and_then(|t| TenantId::parse(t).ok());
        match owner {
            Some(tenant) => Ok(Some(tenant)),
            None => self.job_owner(id).await,
        }
    }

    async fn get(
        &self,
        tenant: &TenantId,
        id: MessageId,
    ) -> Result<Option<(Message, Vec<DeliveryEvent>)>, StoreError> {
        let Some(item) = self.get_item(&id.to_string()).await? else {
            return self.job_message_view(tenant, id).await;
        };
        // Another tenant's message is as absent as a missing one.
        if get_s(&item, "tenant")? != tenant.as_str() {
            return Ok(None);
        }
        let mut m = message_from_item(&item)?;
        self.load_content(&item, &mut m).await?;
        Ok(Some((m, events_from_item(&item)?)))
    }

    async fn claim(
        &self,
        id: MessageId,
        _lane: Priority,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<ClaimOutcome, StoreError> {
        let id = id.to_string();
        let now_ms = ms(now);
        // Most claims are first attempts; a refusal says how many there were.
        let mut attempts = 0;
        let mut current = None;
        let mut timeline = Timeline::Append;
        for _ in 0..CLAIM_TRIES {
            match self.claim_once(&id, attempts, now, lease, timeline).await? {
                ClaimTry::Claimed(before) => {
                    let mut claimed = message_from_item(&before)?;
                    self.load_content(&before, &mut claimed).await?;
                    claimed.status = MessageStatus::Sending;
                    claimed.attempts = attempts + 1;
                    claimed.updated_at = now;
                    return Ok(ClaimOutcome::Claimed(Box::new(claimed)));
                }
                ClaimTry::Refused(None) => return Ok(ClaimOutcome::NotFound),
                ClaimTry::Refused(Some(item)) => {
                    let status = status_of(&item)?;
                    let lease_until: Option<i64> = opt_n(&item, "lease_until")?;
                    let seen: u32 = super::item::get_n(&item, "attempts")?;
                    current = Some((status, lease_until, parked_under(&item)));
                    let full = timeline_full(&item) && timeline == Timeline::Append;
                    if !claimable(status, lease_until, now_ms) || (seen == attempts && !full) {
                        break;
                    }
                    attempts = seen;
                    if full {
                        timeline = Timeline::Count;
                    }
                }
            }
        }
        // Not claimable, or lost every race: whoever won holds it now.
        let Some((status, lease_until, parked_under)) = current else {
            return Ok(ClaimOutcome::NotFound);
        };
        Ok(ClaimOutcome::NotClaimable {
            current: status,
            lease_until: lease_until
                .filter(|l| *l > now_ms)
                .and_then(DateTime::from_timestamp_millis),
            parked_under,
        })
    }

    async fn claim_from_job(
        &self,
        id: MessageId,
        part: u32,
        lane: Priority,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<ClaimOutcome, StoreError> {
        if let Some(created) = self.claim_created(id, part as usize, now, lease).await? {
            return Ok(created);
        }
        let outcome = self.claim(id, lane, now, lease).await?;
        if matches!(outcome, ClaimOutcome::NotFound) {
            tracing::error!(%id, part, "a bulk message's job is gone before its claim: not sent");
        }
        Ok(outcome)
    }

    async fn transition(
        &self,
        batch: Vec<Transition>,
    ) -> Result<Vec<TransitionOutcome>, StoreError> {
        // In order: events of one message must apply in the order they came.
        let mut outcomes = Vec::with_capacity(batch.len());
        for t in &batch {
            outcomes.push(self.apply(t).await?);
        }
        Ok(outcomes)
    }

    async fn locate(&self, id: MessageId) -> Result<Option<MessageRef>, StoreError> {
        let Some(item) = self.get_item(&id.to_string()).await? else {
            return Ok(None);
        };
        let channel = get_s(&item, "channel")?;
        Ok(Some(MessageRef {
            tenant: TenantId::parse(get_s(&item, "tenant")?).map_err(StoreError::Corrupt)?,
            channel: crate::domain::Channel::parse(channel)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown channel {channel}")))?,
            to: get_s(&item, "recipient")?.to_owned(),
        }))
    }

    async fn annotate(
        &self,
        id: MessageId,
        kind: EventKind,
        at: DateTime<Utc>,
        detail: serde_json::Value,
        while_in: &'static [MessageStatus],
    ) -> Result<TransitionOutcome, StoreError> {
        let id = id.to_string();
        let event = event_value(kind, at, &detail);
        let mut item = None;
        for timeline in [Timeline::Append, Timeline::Count] {
            if timeline == Timeline::Count && !item.as_ref().is_some_and(timeline_full) {
                break;
            }
            if self.annotate_once(&id, &event, while_in, timeline).await? {
                return Ok(TransitionOutcome::Applied);
            }
            item = self.get_item(&id).await?;
        }
        refusal(item, None)
    }

    async fn find_by_provider_ids(
        &self,
        keys: Vec<(String, String)>,
    ) -> Result<Vec<Option<MessageId>>, StoreError> {
        let table = self.messages_table()?;
        let mut found = Vec::with_capacity(keys.len());
        for (gateway, provider_id) in keys {
            let out = self
                .client
                .query()
                .table_name(table)
                .index_name("by_provider")
                .key_condition_expression("provider_key = :k")
                .expression_attribute_values(":k", s(provider_key(&gateway, &provider_id)))
                .limit(1)
                .send()
                .await
                .map_err(|e| unavailable("Query", e))?;
            found.push(
                out.items()
                    .first()
                    .and_then(|i| opt_s(i, "id"))
                    .and_then(MessageId::parse),
            );
        }
        Ok(found)
    }

    async fn list_failed(
        &self,
        tenant: &TenantId,
        before: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        let mut query = self
            .client
            .query()
            .table_name(self.messages_table()?)
            .index_name("dead_letters")
            .scan_index_forward(false)
            .limit(limit.clamp(1, 1000) as i32)
            .expression_attribute_values(":t", s(tenant.as_str()));
        query = match before {
            Some(b) => query
                .key_condition_expression("dl_tenant = :t AND id < :before")
                .expression_attribute_values(":before", s(b.to_string())),
            None => query.key_condition_expression("dl_tenant = :t"),
        };
        let out = query.send().await.map_err(|e| unavailable("Query", e))?;
        out.items().iter().map(message_from_item).collect()
    }

    async fn search(
        &self,
        tenant: &TenantId,
        filter: &MessageFilter,
        cursor: Option<MessageId>,
        limit: usize,
    ) -> Result<SearchPage, StoreError> {
        self.search_messages(tenant, filter, cursor, limit).await
    }

    async fn bulk_progress(
        &self,
        tenant: &TenantId,
        bulk_id: &str,
    ) -> Result<Option<BulkProgress>, StoreError> {
        self.bulk_progress_of(tenant, bulk_id).await
    }

    async fn recent_bulk_sends(
        &self,
        tenant: &TenantId,
        since: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<BulkSummary>, StoreError> {
        self.read_bulk_sends(tenant, since, limit).await
    }

    async fn bulk_owner(&self, bulk_id: &str) -> Result<Option<TenantId>, StoreError> {
        self.bulk_job_owner(bulk_id).await
    }

    async fn redrive(
        &self,
        tenant: &TenantId,
        ids: Option<Vec<MessageId>>,
        now: DateTime<Utc>,
    ) -> Result<Vec<MessageId>, StoreError> {
        let candidates = match ids {
            Some(ids) => ids,
            None => {
                let mut all = Vec::new();
                let mut before = None;
                while all.len() < 10_000 {
                    let page = self.list_failed(tenant, before, 1000).await?;
                    let last = page.last().map(|m| m.id);
                    all.extend(page.iter().map(|m| m.id));
                    match last {
                        Some(l) if page.len() == 1000 => before = Some(l),
                        _ => break,
                    }
                }
                all
            }
        };
        let mut redriven = Vec::new();
        let mut refs = Vec::new();
        for id in candidates {
            let mut t = Transition::new(id, MessageStatus::Queued, now);
            t.tenant = Some(tenant.clone());
            t.attempts = AttemptChange::Reset;
            t.detail = json!({ "redriven": true });
            if self.apply(&t).await? != TransitionOutcome::Applied {
                continue;
            }
            if let Some(item) = self.get_item(&id.to_string()).await? {
                let m = message_from_item(&item)?;
                refs.push(LaneRef {
                    id,
                    tenant: m.tenant.to_string(),
                    lane: m.priority,
                    attempt: 0,
                    not_before: None,
                    pace: Some(PaceKey::of(m.channel, &m.to)),
                    correlation_id: Some(m.correlation_id),
                    job_part: None,
                });
                redriven.push(id);
            }
        }
        if let Err(e) = self.lanes.publish(refs).await {
            for id in &redriven {
                let mut back = Transition::new(*id, MessageStatus::Failed, Utc::now());
                back.last_error = Some("redrive could not queue it".into());
                if let Err(undo) = self.apply(&back).await {
                    tracing::error!(%id, error = %undo, "redrive could not be undone; the message stays queued and unsent");
                }
            }
            return Err(e);
        }
        Ok(redriven)
    }

    async fn sent_by_gateway(
        &self,
        gateway: &str,
        after: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        // Only an in-process provider (the embedded sandbox) resumes its callbacks at start-up;
        // on DynamoDB this is a full scan, which that one-off use can afford.
        let table = self.messages_table()?;
        let mut found = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(table)
                .filter_expression("#st = :sent AND gateway = :g")
                .expression_attribute_names("#st", "status")
                .expression_attribute_values(":sent", s(MessageStatus::Sent.as_str()))
                .expression_attribute_values(":g", s(gateway))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| unavailable("Scan", e))?;
            for item in out.items() {
                let m = message_from_item(item)?;
                if after.is_none_or(|a| m.id > a) {
                    found.push(m);
                }
            }
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        found.sort_by_key(|m| m.id);
        found.truncate(limit);
        Ok(found)
    }

    async fn channel_counts(&self, tenant: &TenantId) -> Result<Vec<ChannelCount>, StoreError> {
        self.read_counts(tenant).await
    }

    async fn sent_per_minute(
        &self,
        tenant: &TenantId,
        since: DateTime<Utc>,
    ) -> Result<Vec<SentMinute>, StoreError> {
        self.read_sent_minutes(tenant, since).await
    }

    async fn purge(
        &self,
        _cutoff: DateTime<Utc>,
        _keys_cutoff: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        // DynamoDB's TTL deletes final messages (`expires_at`), idempotency keys and bulk jobs.
        Ok(0)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.get_item("__ping__").await.map(|_| ())
    }
}
