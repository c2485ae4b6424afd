//! Bulk messages created at their claims: reading them before. A fan-out queues a job's
//! `queued` messages without writing them (the job's header says so: `left_to_claim`, decided
//! at accept). The lane entry names the job's part, and the claim renders the message from that
//! part and creates its item (`job_claims.rs`), one write unit per recipient fewer
//! (docs/cost.md). Until its claim, a message is read from its job: viewed, searched, counted
//! and cancelled as `queued`. A job leaves its messages to their claims only when it expires
//! before any of their items can (`bulk.rs`, `job_expiry`), so a message with no item within
//! its job's life has not been claimed.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;

use chrono::Utc;

use super::batch::Read;
use super::bulk::{part_recipients, JobHeader, PART_RECIPIENTS};
use super::item::{opt_n, opt_s, Item};
use super::{unavailable, DynamoStore};
use crate::domain::{
    BulkIds, BulkJobRecipient, DeliveryEvent, Message, MessageId, MessageStatus, NewMessage,
    TenantId,
};
use crate::ports::StoreError;

/// Heads and parts kept per instance: a part serves up to 500 claims, and claims come in order.
const JOBS_KEPT: usize = 8;
/// How long before its messages' items could expire a job is no longer read: a margin for
/// clocks (`bulk.rs` keeps as much between a job's expiry and its items').
pub(super) const ITEMS_MARGIN: chrono::Duration = chrono::Duration::days(1);

/// A few jobs' headers and parts, which never change once stored.
#[derive(Default)]
pub(crate) struct JobsSeen {
    headers: Kept<String, Arc<JobHeader>>,
    parts: Kept<(String, usize), Arc<Vec<BulkJobRecipient>>>,
}

/// The last [`JOBS_KEPT`] values read, by key.
struct Kept<K, V>(parking_lot::Mutex<VecDeque<(K, V)>>);

impl<K, V> Default for Kept<K, V> {
    fn default() -> Self {
        Kept(Default::default())
    }
}

impl<K: PartialEq, V: Clone> Kept<K, V> {
    fn get(&self, key: &K) -> Option<V> {
        let list = self.0.lock();
        list.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    }

    fn keep(&self, key: K, value: V) {
        let mut list = self.0.lock();
        if list.len() == JOBS_KEPT {
            list.pop_front();
        }
        list.push_back((key, value));
    }
}

/// Where to look for a job's messages: its header, if it left any to their claims (and is
/// `tenant`'s, when given).
struct JobLeftToClaim {
    ids: BulkIds,
    header: Arc<JobHeader>,
}

impl DynamoStore {
    /// The header of a job that left its queued messages to their claims. None also where the
    /// function has no bulk table: only those that claim or serve the API read jobs.
    async fn job_left_to_claim(
        &self,
        ids: BulkIds,
        tenant: Option<&TenantId>,
    ) -> Result<Option<JobLeftToClaim>, StoreError> {
        let Ok(table) = self.bulk_table() else {
            return Ok(None);
        };
        let bulk_id = ids.bulk_id();
        let header = match self.jobs.headers.get(&bulk_id) {
            Some(header) => header,
            None => {
                let item = self
                    .read_job_item(table, &bulk_id, 0, Some("header"))
                    .await?;
                let Some(text) = item.as_ref().and_then(|i| opt_s(i, "header")) else {
                    return Ok(None);
                };
                let header: Arc<JobHeader> = Arc::new(
                    serde_json::from_str(text)
                        .map_err(|e| StoreError::Corrupt(format!("bulk job {bulk_id}: {e}")))?,
                );
                self.jobs.headers.keep(bulk_id, header.clone());
                header
            }
        };
        let theirs = tenant.is_none_or(|t| *t == header.tenant);
        let usable = header.left_to_claim && theirs && self.items_outlive(&header);
        Ok(usable.then_some(JobLeftToClaim { ids, header }))
    }

    /// Whether every item of the job's messages is surely still stored (TTL removes a final
    /// item no sooner than the retention after it, so after its accept): only then is a
    /// message without one a message not claimed yet. A job expires before that (`bulk.rs`),
    /// unless TTL is late or the retention was shortened since.
    fn items_outlive(&self, header: &JobHeader) -> bool {
        let retention = chrono::Duration::from_std(self.retention).unwrap_or_default();
        Utc::now() + ITEMS_MARGIN < header.created_at + retention
    }

    /// A job's item: eventually consistent, and consistent when that finds none (a job read
    /// the moment it is stored).
    async fn read_job_item(
        &self,
        table: &str,
        bulk_id: &str,
        part: usize,
        projection: Option<&str>,
    ) -> Result<Option<Item>, StoreError> {
        for consistent in [false, true] {
            let out = self
                .client
                .get_item()
                .table_name(table)
                .set_key(Some(super::bulk::part_key(bulk_id, part)))
                .set_projection_expression(projection.map(str::to_owned))
                .consistent_read(consistent)
                .send()
                .await
                .map_err(|e| unavailable("GetItem", e))?;
            if out.item.is_some() {
                return Ok(out.item);
            }
        }
        Ok(None)
    }

    async fn job_part(
        &self,
        bulk_id: &str,
        part: usize,
    ) -> Result<Option<Arc<Vec<BulkJobRecipient>>>, StoreError> {
        let key = (bulk_id.to_owned(), part);
        if let Some(recipients) = self.jobs.parts.get(&key) {
            return Ok(Some(recipients));
        }
        let table = self.bulk_table()?;
        let Some(item) = self.read_job_item(table, bulk_id, part, None).await? else {
            return Ok(None);
        };
        let recipients = Arc::new(
            part_recipients(&item)
                .map_err(|e| StoreError::Corrupt(format!("bulk job {bulk_id}: {e}")))?,
        );
        self.jobs.parts.keep(key, recipients.clone());
        Ok(Some(recipients))
    }

    /// The queued messages of `job` at `positions`, rendered from its parts: from `part` alone
    /// when given, else from the first part that can hold the lowest (parts hold at most 500,
    /// fewer when cut by size) on, each part read once. Recipients that are not queued were
    /// written by the fan-out, and are left out.
    async fn job_messages_at(
        &self,
        job: &JobLeftToClaim,
        positions: &[usize],
        part: Option<usize>,
    ) -> Result<Vec<NewMessage>, StoreError> {
        let (Some(lowest), Some(highest)) = (positions.iter().min(), positions.iter().max()) else {
            return Ok(Vec::new());
        };
        let bulk_id = job.ids.bulk_id();
        let mut wanted: HashSet<MessageId> = positions
            .iter()
            .filter_map(|p| job.ids.recipient(*p))
            .collect();
        let mut found = Vec::new();
        let mut next = part.unwrap_or(lowest / PART_RECIPIENTS + 1);
        while let Some(recipients) = self.job_part(&bulk_id, next).await? {
            found.extend(recipients.iter().filter(|r| wanted.remove(&r.id)).cloned());
            let last = recipients.last().and_then(|r| job.ids.position(r.id));
            if wanted.is_empty() || part.is_some() || last.is_none_or(|l| l >= *highest) {
                break;
            }
            next += 1;
        }
        let rendered = job
            .header
            .job(found)
            .messages(..)
            .map_err(|e| StoreError::Corrupt(format!("bulk job {bulk_id}: {e}")))?;
        Ok(rendered
            .into_iter()
            .filter(|m| m.status == MessageStatus::Queued)
            .collect())
    }

    /// The message `id` names if it is a queued bulk message its job left to its claim
    /// (whether or not the claim has come since), of `tenant`'s when given; `part` is where
    /// its recipient is, when known.
    pub(super) async fn job_message(
        &self,
        id: MessageId,
        tenant: Option<&TenantId>,
        part: Option<usize>,
    ) -> Result<Option<NewMessage>, StoreError> {
        let Some((ids, position)) = BulkIds::containing(id) else {
            return Ok(None);
        };
        let Some(job) = self.job_left_to_claim(ids, tenant).await? else {
            return Ok(None);
        };
        Ok(self.job_messages_at(&job, &[position], part).await?.pop())
    }

    /// Whose message `id` is, if its job left it to its claim and the fan-out has queued it
    /// (for the audit of a probe: no message is rendered).
    pub(super) async fn job_owner(&self, id: MessageId) -> Result<Option<TenantId>, StoreError> {
        let Some((ids, position)) = BulkIds::containing(id) else {
            return Ok(None);
        };
        let Some(job) = self.job_left_to_claim(ids, None).await? else {
            return Ok(None);
        };
        // An id past the job's last recipient (or not reached yet) names no message.
        let queued = self.fanned_out_to(&job.header.bulk_id).await? > position;
        Ok(queued.then(|| job.header.tenant.clone()))
    }

    /// A queued message of `tenant`'s that its job holds but no item does yet, as a view shows
    /// it; `None` also while its job's fan-out has not reached it.
    pub(super) async fn job_message_view(
        &self,
        tenant: &TenantId,
        id: MessageId,
    ) -> Result<Option<(Message, Vec<DeliveryEvent>)>, StoreError> {
        let Some(m) = self.job_message(id, Some(tenant), None).await? else {
            return Ok(None);
        };
        if !self.fanned_out_past(&m).await? {
            return Ok(None);
        }
        Ok(Some(queued_view(&m)?))
    }

    /// Search's candidates without an item that are `tenant`'s bulk messages left to their
    /// claims, as queued messages: one header and one walk through the parts per job. Search
    /// names bulk messages only of positions the fan-out has reached (`bulk_search.rs`).
    pub(super) async fn job_messages_searched(
        &self,
        tenant: &TenantId,
        missing: impl Iterator<Item = MessageId>,
    ) -> Result<Vec<Message>, StoreError> {
        let mut by_job: BTreeMap<BulkIds, Vec<usize>> = BTreeMap::new();
        for (ids, position) in missing.filter_map(BulkIds::containing) {
            by_job.entry(ids).or_default().push(position);
        }
        let mut found = Vec::new();
        for (ids, positions) in by_job {
            let Some(job) = self.job_left_to_claim(ids, Some(tenant)).await? else {
                continue;
            };
            for m in self.job_messages_at(&job, &positions, None).await? {
                found.push(queued_view(&m)?.0);
            }
        }
        Ok(found)
    }

    /// How far a job's fan-out has gone, as its head records it; None when the head is gone.
    pub(super) async fn fan_out_head(
        &self,
        bulk_id: &str,
        read: Read,
    ) -> Result<Option<FanOutHead>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(self.bulk_table()?)
            .set_key(Some(super::bulk::part_key(bulk_id, 0)))
            .projection_expression("#st, recipients, done, written_to")
            .expression_attribute_names("#st", "status")
            .consistent_read(read == Read::Strong)
            .send()
            .await
            .map_err(|e| unavailable("GetItem", e))?;
        let Some(head) = out.item else {
            return Ok(None);
        };
        Ok(Some(FanOutHead {
            finished: opt_s(&head, "status") == Some("done"),
            recipients: opt_n(&head, "recipients")?,
            parts_done: opt_n(&head, "done")?.unwrap_or(0),
            written_to: opt_n(&head, "written_to")?,
        }))
    }

    /// How many of a job's positions its fan-out has queued: every one once it is done.
    pub(super) async fn fanned_out_to(&self, bulk_id: &str) -> Result<usize, StoreError> {
        let head = self.fan_out_head(bulk_id, Read::Strong).await?;
        Ok(head.map_or(0, |h| h.surely_reached(h.recipients.unwrap_or(0))))
    }

    /// Whether the fan-out of `m`'s job has queued it.
    pub(super) async fn fanned_out_past(&self, m: &NewMessage) -> Result<bool, StoreError> {
        let (Some(bulk_id), Some((_, position))) =
            (m.bulk_id.as_deref(), BulkIds::containing(m.id))
        else {
            return Ok(false);
        };
        Ok(self.fanned_out_to(bulk_id).await? > position)
    }

    /// Whether `bulk_id` left its queued messages to their claims (a cached header read).
    pub(super) async fn left_to_claim(&self, bulk_id: &str) -> Result<bool, StoreError> {
        let Some(ids) = BulkIds::of(bulk_id) else {
            return Ok(false);
        };
        Ok(self.job_left_to_claim(ids, None).await?.is_some())
    }
}

/// How far a job's fan-out has gone (its head's `status`, `recipients`, `done` and
/// `written_to`).
pub(super) struct FanOutHead {
    finished: bool,
    recipients: Option<usize>,
    /// Parts finished.
    parts_done: usize,
    /// Positions written or queued, in the parts finished (absent on a job fanned out by an
    /// older release).
    written_to: Option<usize>,
}

impl FanOutHead {
    /// How many of the job's `recipients` positions the fan-out may have reached: all once it
    /// is finished; else those of its finished parts (at most `PART_RECIPIENTS` each where the
    /// head does not say). Search's bound.
    pub(super) fn reached(&self, recipients: usize) -> usize {
        if self.finished {
            return recipients;
        }
        let reached = self
            .written_to
            .unwrap_or(self.parts_done.saturating_mul(PART_RECIPIENTS));
        recipients.min(reached)
    }

    /// As [`FanOutHead::reached`], with none where the head does not say: what a claim, a view
    /// or a cancel may act on.
    pub(super) fn surely_reached(&self, recipients: usize) -> usize {
        match (self.finished, self.written_to) {
            (true, _) => recipients,
            (false, written_to) => recipients.min(written_to.unwrap_or(0)),
        }
    }
}

/// A queued message as its item would show it.
pub(super) fn queued_view(m: &NewMessage) -> Result<(Message, Vec<DeliveryEvent>), StoreError> {
    let item = super::item::new_message_item(m, false);
    let mut message = super::item::message_from_item(&item)?;
    message.content = m.content.clone();
    Ok((message, super::item::events_from_item(&item)?))
}
