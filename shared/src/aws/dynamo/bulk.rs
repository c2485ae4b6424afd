//! Bulk sends on AWS: the API stores the accepted job and puts one message on the bulk queue;
//! the `enqueue` function fans it out (BatchWriteItem of 25, SendMessageBatch of 10), part by
//! part, recording its progress on the job. A redelivery resumes after the last finished part,
//! and a part cut off half-way is redone without duplicates: a part is marked on the job before
//! it is written, so a marked part is known to be a redo; its message ids were fixed at accept
//! time, only the missing ones are written, and a lane entry for a message that was already
//! queued loses the claim and is dropped. A fresh part skips that look-up.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::batch::Read;
use super::content::message_items;
use super::item::{get_n, get_s, n, opt_s, s, Item};
use super::{build_error, epoch_seconds, unavailable, BulkRef, DynamoStore};
use crate::domain::{
    packed, BulkIds, BulkJob, BulkJobRecipient, Envelope, MessageId, MessageStatus, NewMessage,
    Template, TenantId,
};
use crate::ports::{AcceptOutcome, BulkSummary, IdempotencyRecord, LaneRef, StoreError};

/// A part stays well under DynamoDB's 400 KB item limit.
const PART_BYTES: usize = 300 * 1024;
/// Recipients per part: the unit of progress a redelivery resumes from.
pub(super) const PART_RECIPIENTS: usize = 500;
/// A stored job is kept at least this long after accept (7 days for a job accepted before
/// 2026-12-05; 14 since, from its schedule: `job_expiry`).
pub(super) const JOB_TTL_DAYS: i64 = 7;

/// The job without its recipients: part 0 of a stored job.
#[derive(Serialize, Deserialize)]
pub(super) struct JobHeader {
    pub bulk_id: String,
    pub tenant: TenantId,
    pub envelope: Envelope,
    pub template: Option<Template>,
    pub created_at: DateTime<Utc>,
    /// Its message ids derive from its id, so search finds them through the job's listing and
    /// they get no `by_tenant` entry (false for a job from before, whose ids are random).
    #[serde(default)]
    pub by_job: bool,
    /// Its fan-out leaves queued messages to their claims, which create their items
    /// (`job_messages.rs`); decided at accept, so every run of its fan-out does the same.
    #[serde(default)]
    pub left_to_claim: bool,
}

impl JobHeader {
    /// The job with these of its recipients (a part's, or a few of them).
    pub(super) fn job(&self, recipients: Vec<BulkJobRecipient>) -> BulkJob {
        BulkJob {
            bulk_id: self.bulk_id.clone(),
            tenant: self.tenant.clone(),
            envelope: self.envelope.clone(),
            template: self.template.clone(),
            recipients,
            created_at: self.created_at,
        }
    }
}

/// When a stored job accepted `now` expires: once its messages can no longer be waiting for
/// their claims, which render them from it (a content item's allowance, from its schedule).
fn job_expiry(send_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> DateTime<Utc> {
    let backlog = chrono::Duration::from_std(super::content::BACKLOG_ALLOWANCE).unwrap_or_default();
    send_at.unwrap_or(now).max(now) + backlog
}

/// Whether a job accepted `now` expires before a message item could (at the retention after
/// its final state, which comes after the accept).
fn expires_before_its_items(
    send_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    retention: std::time::Duration,
) -> bool {
    let retention = chrono::Duration::from_std(retention).unwrap_or_default();
    job_expiry(send_at, now) + super::job_messages::ITEMS_MARGIN <= now + retention
}

/// A bulk message's lane entry; `job_part` names its part when its claim creates it.
fn lane_entry(m: &NewMessage, job_part: Option<u32>) -> LaneRef {
    LaneRef {
        job_part,
        ..super::messages::lane_ref(m)
    }
}

/// Whether every recipient of `job` has the id its position gives (`domain::bulk_ids`).
fn ids_derive_from_job(job: &BulkJob) -> bool {
    BulkIds::of(&job.bulk_id).is_some_and(|ids| {
        job.recipients
            .iter()
            .enumerate()
            .all(|(n, r)| ids.recipient(n) == Some(r.id))
    })
}

/// How far a fan-out got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FanOut {
    /// Every part is written and queued (now or by an earlier delivery).
    Done { written: usize, parts: usize },
    /// Stopped before the deadline; a redelivery resumes after `parts_done`.
    Paused { parts_done: usize, parts: usize },
    /// No such job: it was never committed (its accept failed) or it expired.
    Missing,
}

#[derive(Debug, thiserror::Error)]
pub enum FanOutError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("bulk job {0} is corrupt: {1}")]
    Corrupt(String, String),
}

/// Splits recipients into parts of at most `PART_RECIPIENTS`, each at most `PART_BYTES` of JSON.
fn parts_of(recipients: &[BulkJobRecipient]) -> Result<Vec<String>, StoreError> {
    let mut parts = Vec::new();
    let mut current: Vec<String> = Vec::new();
    let mut bytes = 0;
    for r in recipients {
        let json = serde_json::to_string(r)
            .map_err(|e| StoreError::Corrupt(format!("recipient does not serialize: {e}")))?;
        if json.len() > PART_BYTES {
            return Err(StoreError::Unavailable(format!(
                "one recipient's data is {} bytes; a bulk recipient may carry at most {PART_BYTES}",
                json.len()
            )));
        }
        if !current.is_empty()
            && (current.len() == PART_RECIPIENTS || bytes + json.len() > PART_BYTES)
        {
            parts.push(format!("[{}]", current.join(",")));
            current.clear();
            bytes = 0;
        }
        bytes += json.len() + 1;
        current.push(json);
    }
    if !current.is_empty() {
        parts.push(format!("[{}]", current.join(",")));
    }
    Ok(parts)
}

/// The most JSON a stored part may inflate to: a part is cut at `PART_BYTES` of it.
const PART_JSON_LIMIT: usize = PART_BYTES + PART_RECIPIENTS + 2;

/// A part's recipients: their JSON deflated (binary), or as a string from a Herald before that.
pub(super) fn part_recipients(part: &Item) -> Result<Vec<BulkJobRecipient>, String> {
    let json = match part.get("recipients") {
        Some(AttributeValue::B(b)) => {
            packed::unpack(b.as_ref(), PART_JSON_LIMIT).map_err(|e| e.to_string())?
        }
        Some(AttributeValue::S(text)) => text.as_bytes().to_vec(),
        _ => return Err("a part without recipients".into()),
    };
    serde_json::from_slice(&json).map_err(|e| e.to_string())
}

pub(super) fn part_key(bulk_id: &str, part: usize) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("bulk_id".to_owned(), s(bulk_id)),
        ("part".to_owned(), n(part)),
    ])
}

impl DynamoStore {
    /// Whether a job accepted now may leave its queued messages to their claims: once the
    /// stack is marked, and when the job expires before any of its messages' items can (a
    /// final item is kept the retention period), so a message without an item within the
    /// job's life is one not claimed yet.
    async fn may_leave_to_claims(&self, send_at: Option<DateTime<Utc>>) -> bool {
        expires_before_its_items(send_at, Utc::now(), self.retention) && self.claims_create().await
    }

    /// The tenant on a bulk job's header (a `GetItem` of its `tenant` alone).
    pub(super) async fn bulk_job_owner(
        &self,
        bulk_id: &str,
    ) -> Result<Option<TenantId>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(self.bulk_table()?)
            .set_key(Some(part_key(bulk_id, 0)))
            .projection_expression("tenant")
            .send()
            .await
            .map_err(|e| unavailable("GetItem", e))?;
        Ok(out
            .item()
            .and_then(|item| opt_s(item, "tenant"))
            .and_then(|t| TenantId::parse(t).ok()))
    }

    /// Stores an accepted bulk job and queues its fan-out. The header, written last together
    /// with the idempotency record, is the commit point: parts without a header are never read
    /// and expire.
    pub(super) async fn store_bulk_job(
        &self,
        job: BulkJob,
        idempotency: Option<IdempotencyRecord>,
    ) -> Result<AcceptOutcome, StoreError> {
        let table = self.bulk_table()?;
        let summary = BulkSummary::of(&job);
        let parts = parts_of(&job.recipients)?;
        let expires = n(epoch_seconds(job_expiry(job.envelope.send_at, Utc::now())));
        let items: Vec<Item> = parts
            .iter()
            .enumerate()
            .map(|(i, body)| {
                let mut item = part_key(&job.bulk_id, i + 1);
                item.insert(
                    "recipients".into(),
                    AttributeValue::B(Blob::new(packed::pack(body.as_bytes()))),
                );
                item.insert("expires_at".into(), expires.clone());
                item
            })
            .collect();
        self.batch_put(table, items).await?;

        let by_job = ids_derive_from_job(&job);
        let left_to_claim = by_job && self.may_leave_to_claims(job.envelope.send_at).await;
        let listing = super::bulk_sends::listing_item(
            &job.tenant,
            &summary,
            by_job.then_some((&job.envelope, self.retention)),
        );
        let header = JobHeader {
            bulk_id: job.bulk_id.clone(),
            tenant: job.tenant.clone(),
            envelope: job.envelope,
            template: job.template,
            created_at: job.created_at,
            by_job,
            left_to_claim,
        };
        let header_json = serde_json::to_string(&header)
            .map_err(|e| StoreError::Corrupt(format!("bulk job header: {e}")))?;
        let mut item = part_key(&job.bulk_id, 0);
        item.insert("tenant".into(), s(job.tenant.as_str()));
        item.insert("header".into(), s(header_json));
        item.insert("parts".into(), n(parts.len()));
        item.insert("done".into(), n(0));
        item.insert("recipients".into(), n(job.recipients.len()));
        item.insert("status".into(), s("pending"));
        item.insert("expires_at".into(), expires);
        let put = Put::builder()
            .table_name(table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(bulk_id)")
            .build()
            .map_err(build_error)?;
        let listed = Put::builder()
            .table_name(table)
            .set_item(Some(listing))
            .build()
            .map_err(build_error)?;
        let commit = vec![
            TransactWriteItem::builder().put(put).build(),
            TransactWriteItem::builder().put(listed).build(),
        ];
        if let Some(existing) = self.commit_with_key(commit, idempotency.as_ref()).await? {
            return Ok(AcceptOutcome::KeyExists(existing));
        }
        let bulk_ref = BulkRef {
            bulk_id: job.bulk_id.clone(),
            tenant: job.tenant.as_str().to_owned(),
        };
        if let Err(e) = self.lanes.publish_bulk(&bulk_ref).await {
            // Uncommit: the client gets an error, so the job must never run.
            let deleted = self
                .client
                .delete_item()
                .table_name(table)
                .set_key(Some(part_key(&job.bulk_id, 0)))
                .send()
                .await;
            if let Err(undo) = deleted {
                tracing::error!(bulk_id = %job.bulk_id, error = %unavailable("DeleteItem", undo), "refused bulk job left stored");
            }
            let unlisted = self
                .client
                .delete_item()
                .table_name(table)
                .set_key(Some(super::bulk_sends::listing_key(&job.tenant, &summary)))
                .send()
                .await;
            if let Err(undo) = unlisted {
                tracing::error!(bulk_id = %job.bulk_id, error = %unavailable("DeleteItem", undo), "refused bulk job left listed");
            }
            if let Some(record) = &idempotency {
                self.forget_idempotency(record).await;
            }
            return Err(e);
        }
        Ok(AcceptOutcome::Accepted)
    }

    /// Writes every part not yet done, until `deadline` (leave room for one part).
    pub async fn fan_out(
        &self,
        bulk_id: &str,
        deadline: Option<Instant>,
    ) -> Result<FanOut, FanOutError> {
        let table = self.bulk_table()?;
        let corrupt = |what: String| FanOutError::Corrupt(bulk_id.to_owned(), what);
        let out = self
            .client
            .get_item()
            .table_name(table)
            .set_key(Some(part_key(bulk_id, 0)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("GetItem", e))?;
        let Some(head) = out.item else {
            return Ok(FanOut::Missing);
        };
        let parts: usize = get_n(&head, "parts")?;
        let mut done: usize = get_n(&head, "done")?;
        let header: JobHeader =
            serde_json::from_str(get_s(&head, "header")?).map_err(|e| corrupt(e.to_string()))?;
        let (mut written, started_at) = (0, done);
        while done < parts {
            // At least one part per run, however late: every run makes progress (the deadline
            // leaves a margin far longer than a part takes).
            if done > started_at && deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(FanOut::Paused {
                    parts_done: done,
                    parts,
                });
            }
            let part = done + 1;
            // Marked before it is written: a part marked already was started by a run that was
            // cut off in it (or runs now), so only then are its messages looked for first.
            let resumed = !self.mark_started(table, bulk_id, part).await?;
            let (wrote, last) = self.fan_out_part(table, &header, part, resumed).await?;
            written += wrote;
            self.finish_part((table, bulk_id), part, last).await?;
            done = part;
        }
        if opt_s(&head, "status") != Some("done") {
            let finished = self
                .client
                .update_item()
                .table_name(table)
                .set_key(Some(part_key(bulk_id, 0)))
                .update_expression("SET #st = :done")
                .expression_attribute_names("#st", "status")
                .expression_attribute_values(":done", s("done"))
                .send()
                .await;
            if let Err(e) = finished {
                tracing::warn!(%bulk_id, error = %unavailable("UpdateItem", e), "bulk job not marked done");
            }
            if header.by_job {
                self.mark_fanned_out(table, &header).await;
            }
        }
        Ok(FanOut::Done { written, parts })
    }

    /// Moves the head's progress past `part`, whose last message is `last`. With derived ids,
    /// also how many positions are written, for search (`bulk_search.rs`): parts are cut by
    /// size too, so that is not `done` x 500. A concurrent delivery of the job that got there
    /// first (both wrote the same ids) leaves it as it is.
    async fn finish_part(
        &self,
        (table, bulk_id): (&str, &str),
        part: usize,
        last: Option<MessageId>,
    ) -> Result<(), FanOutError> {
        let before = part - 1;
        let written_to = last.and_then(|id| BulkIds::of(bulk_id)?.position(id));
        let (update, values) = match written_to {
            Some(position) => (
                "SET done = :part, written_to = :next REMOVE started",
                vec![
                    (":part", part),
                    (":before", before),
                    (":next", position + 1),
                ],
            ),
            None => (
                "SET done = :part REMOVE started",
                vec![(":part", part), (":before", before)],
            ),
        };
        self.update_head((table, bulk_id), update, "done = :before", &values)
            .await?;
        Ok(())
    }

    /// Tells search that every message of the job is written. Unmarked, search only reads the
    /// job's head for how far the fan-out got, so a failure here costs reads, not results.
    async fn mark_fanned_out(&self, table: &str, header: &JobHeader) {
        let key =
            super::bulk_sends::listing_key_of(&header.tenant, &header.bulk_id, header.created_at);
        let marked = self
            .client
            .update_item()
            .table_name(table)
            .set_key(Some(key))
            .update_expression("SET #f = :yes")
            .condition_expression("attribute_exists(part)")
            .expression_attribute_names("#f", super::bulk_sends::FANNED_OUT)
            .expression_attribute_values(":yes", AttributeValue::Bool(true))
            .send()
            .await;
        if let Err(e) = super::applied(marked, "UpdateItem") {
            tracing::warn!(bulk_id = %header.bulk_id, error = %e, "bulk job's listing not marked fanned out");
        }
    }

    /// Marks `part` as being written; false when a run marked it first or finished it.
    async fn mark_started(
        &self,
        table: &str,
        bulk_id: &str,
        part: usize,
    ) -> Result<bool, FanOutError> {
        self.update_head(
            (table, bulk_id),
            "SET started = :part",
            "done < :part AND (attribute_not_exists(started) OR started < :part)",
            &[(":part", part)],
        )
        .await
    }

    /// A conditional update of a job's head (its progress); false when the condition refused.
    async fn update_head(
        &self,
        (table, bulk_id): (&str, &str),
        update: &str,
        condition: &str,
        values: &[(&str, usize)],
    ) -> Result<bool, FanOutError> {
        let values = values
            .iter()
            .map(|(k, v)| ((*k).to_owned(), n(*v)))
            .collect();
        let result = self
            .client
            .update_item()
            .table_name(table)
            .set_key(Some(part_key(bulk_id, 0)))
            .update_expression(update)
            .condition_expression(condition)
            .set_expression_attribute_values(Some(values))
            .send()
            .await;
        Ok(super::applied(result, "UpdateItem")?)
    }

    /// One part: render, write the messages not written yet (but those left to their claims),
    /// queue them all. Returns how many messages this call fanned out, and the part's last
    /// message id.
    async fn fan_out_part(
        &self,
        table: &str,
        header: &JobHeader,
        part: usize,
        resumed: bool,
    ) -> Result<(usize, Option<MessageId>), FanOutError> {
        let messages = self.render_part(table, header, part).await?;
        let for_claim = |m: &NewMessage| header.left_to_claim && m.status == MessageStatus::Queued;
        // Counted by the run that started the part, before anything of it can be claimed (a
        // run cut off after this leaves the count to the claims; counts are statistics).
        if header.left_to_claim && !resumed {
            let queued = messages.iter().filter(|m| for_claim(m));
            self.count_queued_in_job(&header.tenant, queued).await;
        }
        let messages_table = self.messages_table()?;
        let ids: Vec<String> = messages.iter().map(|m| m.id.to_string()).collect();
        // Only a part an earlier run started can have messages written already.
        let existing = match resumed {
            true => self.existing_ids(messages_table, &ids).await?,
            false => HashSet::new(),
        };
        let missing: Vec<&NewMessage> = messages
            .iter()
            .zip(&ids)
            .filter(|(_, id)| !existing.contains(*id))
            .map(|(m, _)| m)
            .collect();
        let written = missing.len();
        let items: Vec<Item> = missing
            .into_iter()
            .filter(|m| !for_claim(m))
            .flat_map(|m| {
                // Found through the job's listing: no index entry (a write unit) each.
                let (item, content) = message_items(m, self.retention, !header.by_job);
                [Some(item), content].into_iter().flatten()
            })
            .collect();
        self.batch_put(messages_table, items).await?;
        // New queued messages go on their lane, and so does every message an interrupted run
        // wrote: it may not have queued them, and the claim drops an entry that is not needed.
        let refs: Vec<LaneRef> = messages
            .iter()
            .zip(&ids)
            .filter(|(m, id)| m.status.is_pending() || existing.contains(*id))
            .map(|(m, _)| lane_entry(m, for_claim(m).then_some(part as u32)))
            .collect();
        self.lanes.publish(refs).await?;
        Ok((written, messages.last().map(|m| m.id)))
    }

    /// A part's messages, rendered from the job's snapshot.
    async fn render_part(
        &self,
        table: &str,
        header: &JobHeader,
        part: usize,
    ) -> Result<Vec<NewMessage>, FanOutError> {
        let bulk_id = &header.bulk_id;
        let corrupt = |what: String| FanOutError::Corrupt(bulk_id.clone(), what);
        let out = self
            .client
            .get_item()
            .table_name(table)
            .set_key(Some(part_key(bulk_id, part)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("GetItem", e))?;
        let item = out
            .item
            .ok_or_else(|| corrupt(format!("part {part} is missing")))?;
        let recipients = part_recipients(&item).map_err(corrupt)?;
        // Suppressions added since the accept are caught by the dispatch check, as later ones are.
        header
            .job(recipients)
            .messages(..)
            .map_err(|e| corrupt(e.to_string()))
    }

    /// Which of `ids` already have an item.
    async fn existing_ids(
        &self,
        table: &str,
        ids: &[String],
    ) -> Result<HashSet<String>, StoreError> {
        let found = self
            .batch_get_ids(table, ids, Some("id"), Read::Strong)
            .await?;
        Ok(found
            .iter()
            .filter_map(|i| opt_s(i, "id"))
            .map(str::to_owned)
            .collect())
    }

    /// The message ids a tenant's stored job gave its recipients at accept; `None` when the
    /// tenant has no such job (never, or expired).
    pub(super) async fn job_message_ids(
        &self,
        tenant: &TenantId,
        bulk_id: &str,
    ) -> Result<Option<Vec<MessageId>>, StoreError> {
        let corrupt = |e: String| StoreError::Corrupt(format!("bulk job {bulk_id}: {e}"));
        let (mut ids, mut owned) = (Vec::new(), false);
        self.for_each_part(bulk_id, 0, None, |part| {
            if let Some(header) = opt_s(part, "header") {
                let header: JobHeader =
                    serde_json::from_str(header).map_err(|e| corrupt(e.to_string()))?;
                owned = &header.tenant == tenant;
                return Ok(());
            }
            let recipients = part_recipients(part).map_err(corrupt)?;
            ids.extend(recipients.into_iter().map(|r| r.id));
            Ok(())
        })
        .await?;
        Ok(owned.then_some(ids))
    }

    /// Visits a job's items in order from part `from` (the head is part 0, its recipients are
    /// in parts 1 and on), a query page at a time, with only `projection` when given.
    pub(super) async fn for_each_part(
        &self,
        bulk_id: &str,
        from: usize,
        projection: Option<&str>,
        mut visit: impl FnMut(&Item) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(self.bulk_table()?)
                .key_condition_expression("bulk_id = :b AND part >= :from")
                .expression_attribute_values(":b", s(bulk_id))
                .expression_attribute_values(":from", n(from))
                .set_projection_expression(projection.map(str::to_owned))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| unavailable("Query", e))?;
            for item in out.items() {
                visit(item)?;
            }
            start = out.last_evaluated_key;
            if start.is_none() {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::MessageId;

    fn recipient(data_bytes: usize) -> BulkJobRecipient {
        BulkJobRecipient {
            id: MessageId::new(),
            to: "ann@example.com".into(),
            data: Some(serde_json::json!({ "blob": "x".repeat(data_bytes) })),
            external_id: None,
            suppressed: None,
            deferred: None,
        }
    }

    #[test]
    fn a_job_outlives_the_longest_wait_of_its_messages_for_their_claims() {
        let now = Utc::now();
        let days = |d| chrono::Duration::days(d);
        assert_eq!(
            job_expiry(None, now),
            now + days(14),
            "a backlog's allowance"
        );
        let later = now + days(30);
        assert_eq!(
            job_expiry(Some(later), now),
            later + days(14),
            "from its schedule"
        );
        assert_eq!(job_expiry(Some(now - days(1)), now), now + days(14));
        // Its messages are left to their claims only if no item of theirs can expire first.
        let month = std::time::Duration::from_secs(30 * 24 * 3600);
        let week = std::time::Duration::from_secs(7 * 24 * 3600);
        assert!(expires_before_its_items(None, now, month));
        assert!(!expires_before_its_items(None, now, week));
        assert!(!expires_before_its_items(Some(later), now, month));
    }

    #[test]
    fn parts_respect_count_and_size() {
        let small: Vec<_> = (0..1_201).map(|_| recipient(10)).collect();
        let parts = parts_of(&small).unwrap();
        assert_eq!(parts.len(), 3, "500 + 500 + 201");
        let back: Vec<BulkJobRecipient> = parts
            .iter()
            .flat_map(|p| serde_json::from_str::<Vec<BulkJobRecipient>>(p).unwrap())
            .collect();
        assert_eq!(back, small, "every recipient, in order");

        let big: Vec<_> = (0..10).map(|_| recipient(100 * 1024)).collect();
        let parts = parts_of(&big).unwrap();
        assert!(
            parts.iter().all(|p| p.len() <= PART_BYTES),
            "parts stay under the item limit"
        );
        assert_eq!(parts.len(), 5, "two 100 KB recipients per part");
    }

    #[test]
    fn a_part_reads_back_deflated_or_as_an_older_herald_stored_it() {
        let list: Vec<_> = (0..500).map(|_| recipient(10)).collect();
        let json = parts_of(&list).unwrap().remove(0);
        let stored = |value| Item::from([("recipients".to_owned(), value)]);
        let packed = AttributeValue::B(Blob::new(packed::pack(json.as_bytes())));
        assert!(
            matches!(&packed, AttributeValue::B(b) if b.as_ref().len() * 2 < json.len()),
            "deflated to under half"
        );
        assert_eq!(part_recipients(&stored(packed)).unwrap(), list);
        assert_eq!(part_recipients(&stored(s(json.clone()))).unwrap(), list);
        let garbled = AttributeValue::B(Blob::new(json.into_bytes()));
        assert!(part_recipients(&stored(garbled)).is_err());
    }
}
