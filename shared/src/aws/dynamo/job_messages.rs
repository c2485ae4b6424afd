//! Bulk messages created at their claim. A fan-out queues a job's `queued` messages without
//! writing them: the lane entry names the job's part, and the claim renders the message from
//! that part and creates its item already `sending`, in one conditional put that a cancel (or an
//! earlier claim) beats. That saves a write unit per recipient (docs/cost.md). Until its claim,
//! a message is read from its job: viewed, searched, counted and cancelled as `queued`.
//!
//! A stack turns this on when `herald upgrade` marks it, so no dispatcher of an older release,
//! which would drop an entry whose message it cannot find, is still running.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use serde_json::json;

use super::bulk::{part_recipients, JobHeader};
use super::content::message_items;
use super::item::{event_value, ms, n, opt_n, opt_s, s, Item};
use super::{condition_failed, unavailable, DynamoStore};
use crate::domain::{
    BulkIds, BulkJob, BulkJobRecipient, DeliveryEvent, Message, MessageId, MessageStatus,
    NewMessage, TenantId,
};
use crate::ports::{ClaimOutcome, StoreError};

/// How long an instance trusts an absent marker before it reads it again.
const MARKER_RECHECK: Duration = Duration::from_secs(60);
/// Heads and parts kept per instance: a part serves up to 500 claims, and claims come in order.
const JOBS_KEPT: usize = 8;
/// Marks a message item whose `queued` was counted by its job's fan-out (`counters.rs`).
pub(crate) const QUEUED_IN_JOB: &str = "queued_in_job";
const MARKER_JOB: &str = "marker#claims_create";

/// Whether a one-way marker (set once, by `herald upgrade`) is set, as this instance last saw
/// it: once seen it stays so; while absent, it is read again after [`MARKER_RECHECK`].
#[derive(Default)]
pub(crate) struct MarkerSeen(parking_lot::Mutex<Option<(bool, Instant)>>);

impl MarkerSeen {
    pub(super) async fn get<F: Future<Output = bool>>(&self, read: impl FnOnce() -> F) -> bool {
        if let Some((set, at)) = *self.0.lock() {
            if set || at.elapsed() < MARKER_RECHECK {
                return set;
            }
        }
        let set = read().await;
        *self.0.lock() = Some((set, Instant::now()));
        set
    }
}

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

fn marker_key() -> Item {
    Item::from([
        ("bulk_id".to_owned(), s(MARKER_JOB)),
        ("part".to_owned(), n(0)),
    ])
}

impl DynamoStore {
    /// Whether this stack's fan-outs may leave queued messages for their claims to create.
    pub(super) async fn claims_create(&self) -> bool {
        self.claims_marker
            .get(|| async {
                let Ok(table) = self.bulk_table() else {
                    return false;
                };
                let read = self
                    .client
                    .get_item()
                    .table_name(table)
                    .set_key(Some(marker_key()))
                    .send()
                    .await;
                match read {
                    Ok(out) => out.item.is_some(),
                    Err(e) => {
                        tracing::warn!(error = %unavailable("GetItem", e), "claims-create marker unreadable; writing every message");
                        false
                    }
                }
            })
            .await
    }

    /// Marks the stack for [`DynamoStore::claims_create`] (`herald upgrade`, after a deploy).
    pub async fn mark_claims_create(&self) -> Result<(), StoreError> {
        let mut item = marker_key();
        item.insert("marked_at".into(), n(ms(Utc::now())));
        self.client
            .put_item()
            .table_name(self.bulk_table()?)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| unavailable("PutItem", e))?;
        Ok(())
    }

    async fn job_header(&self, bulk_id: &str) -> Result<Option<Arc<JobHeader>>, StoreError> {
        if let Some(header) = self.jobs.headers.get(&bulk_id.to_owned()) {
            return Ok(Some(header));
        }
        let out = self
            .client
            .get_item()
            .table_name(self.bulk_table()?)
            .set_key(Some(super::bulk::part_key(bulk_id, 0)))
            .projection_expression("header")
            .send()
            .await
            .map_err(|e| unavailable("GetItem", e))?;
        let Some(text) = out.item.as_ref().and_then(|i| opt_s(i, "header")) else {
            return Ok(None);
        };
        let header: Arc<JobHeader> = Arc::new(
            serde_json::from_str(text)
                .map_err(|e| StoreError::Corrupt(format!("bulk job {bulk_id}: {e}")))?,
        );
        self.jobs.headers.keep(bulk_id.to_owned(), header.clone());
        Ok(Some(header))
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
        // Parts are written before their job's head commits, long before anyone reads them.
        let out = self
            .client
            .get_item()
            .table_name(self.bulk_table()?)
            .set_key(Some(super::bulk::part_key(bulk_id, part)))
            .send()
            .await
            .map_err(|e| unavailable("GetItem", e))?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        let recipients = Arc::new(
            part_recipients(&item)
                .map_err(|e| StoreError::Corrupt(format!("bulk job {bulk_id}: {e}")))?,
        );
        self.jobs.parts.keep(key, recipients.clone());
        Ok(Some(recipients))
    }

    /// How many of a job's positions its fan-out has queued: every one once it is done.
    pub(super) async fn fanned_out_to(&self, bulk_id: &str) -> Result<usize, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(self.bulk_table()?)
            .set_key(Some(super::bulk::part_key(bulk_id, 0)))
            .projection_expression("#st, recipients, written_to")
            .expression_attribute_names("#st", "status")
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("GetItem", e))?;
        let Some(head) = out.item else {
            return Ok(0);
        };
        if opt_s(&head, "status") == Some("done") {
            return Ok(opt_n(&head, "recipients")?.unwrap_or(0));
        }
        Ok(opt_n(&head, "written_to")?.unwrap_or(0))
    }

    /// The message `id` names when it is a queued bulk message its job's fan-out left for its
    /// claim (whether or not the claim has come since); `part` is where to look first.
    pub(super) async fn job_message(
        &self,
        id: MessageId,
        part: Option<usize>,
    ) -> Result<Option<NewMessage>, StoreError> {
        let Some((ids, position)) = BulkIds::containing(id) else {
            return Ok(None);
        };
        let bulk_id = ids.bulk_id();
        let Some(header) = self.job_header(&bulk_id).await? else {
            return Ok(None);
        };
        if !header.by_job {
            return Ok(None);
        }
        let Some(recipient) = self.find_recipient(ids, position, part).await? else {
            return Ok(None);
        };
        let job = BulkJob {
            bulk_id,
            tenant: header.tenant.clone(),
            envelope: header.envelope.clone(),
            template: header.template.clone(),
            recipients: vec![recipient],
            created_at: header.created_at,
        };
        let message = job
            .messages(..)
            .map_err(|e| StoreError::Corrupt(format!("bulk job {}: {e}", job.bulk_id)))?
            .pop();
        // Suppressed and deferred recipients are written by the fan-out.
        Ok(message.filter(|m| m.status == MessageStatus::Queued))
    }

    /// The part holding the recipient at `position`, from `hint` or from the first part that
    /// can hold it (parts hold at most 500, fewer when cut by size).
    async fn find_recipient(
        &self,
        ids: BulkIds,
        position: usize,
        hint: Option<usize>,
    ) -> Result<Option<BulkJobRecipient>, StoreError> {
        let bulk_id = ids.bulk_id();
        let id = ids.recipient(position);
        let mut part = hint.unwrap_or(position / super::bulk::PART_RECIPIENTS + 1);
        while let Some(recipients) = self.job_part(&bulk_id, part).await? {
            if let Some(r) = recipients.iter().find(|r| Some(r.id) == id) {
                return Ok(Some(r.clone()));
            }
            let past = recipients
                .last()
                .and_then(|r| ids.position(r.id))
                .is_none_or(|last| last > position);
            if past || hint.is_some() {
                return Ok(None);
            }
            part += 1;
        }
        Ok(None)
    }

    /// Claims a message its fan-out left unwritten by creating it as `sending`; when it exists
    /// already (claimed before, cancelled, or written by an older fan-out), claims as usual.
    pub(super) async fn claim_created(
        &self,
        id: MessageId,
        part: usize,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Option<ClaimOutcome>, StoreError> {
        let Some(m) = self.job_message(id, Some(part)).await? else {
            return Ok(None);
        };
        let (mut item, content) = message_items(&m, self.retention, false);
        let lease_until = now + chrono::Duration::from_std(lease).unwrap_or_default();
        let claim_event = event_value(MessageStatus::Sending.into(), now, &json!({ "attempt": 1 }));
        if let Some(AttributeValue::L(events)) = item.get_mut("events") {
            events.push(claim_event);
        }
        for (k, v) in [
            ("status", s(MessageStatus::Sending.as_str())),
            ("attempts", n(1)),
            ("lease_until", n(ms(lease_until))),
            ("updated_at", n(ms(now))),
            (QUEUED_IN_JOB, AttributeValue::Bool(true)),
        ] {
            item.insert(k.to_owned(), v);
        }
        self.put_contents(content.into_iter().collect()).await?;
        let created = self
            .client
            .put_item()
            .table_name(self.messages_table()?)
            .set_item(Some(item.clone()))
            .condition_expression("attribute_not_exists(id)")
            .send()
            .await;
        match created {
            Ok(_) => {
                let mut claimed = super::item::message_from_item(&item)?;
                claimed.content = m.content;
                Ok(Some(ClaimOutcome::Claimed(Box::new(claimed))))
            }
            Err(e) if condition_failed(&e) => Ok(None),
            Err(e) => Err(unavailable("PutItem", e)),
        }
    }

    /// Writes a queued message its fan-out left unwritten, as the fan-out would have, so that a
    /// transition (a cancel) applies to it as usual; false when there is no such message (of
    /// `tenant`'s, when given), or the fan-out has not reached it (it is cancelled only once it
    /// exists, as before).
    pub(super) async fn write_job_message(
        &self,
        id: MessageId,
        tenant: Option<&TenantId>,
    ) -> Result<bool, StoreError> {
        let Some(m) = self.job_message(id, None).await? else {
            return Ok(false);
        };
        if tenant.is_some_and(|t| *t != m.tenant) || !self.fanned_out_past(&m).await? {
            return Ok(false);
        }
        let (mut item, content) = message_items(&m, self.retention, false);
        item.insert(QUEUED_IN_JOB.to_owned(), AttributeValue::Bool(true));
        self.put_contents(content.into_iter().collect()).await?;
        let written = self
            .client
            .put_item()
            .table_name(self.messages_table()?)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(id)")
            .send()
            .await;
        match written {
            // Written meanwhile (by its claim): it exists either way.
            Ok(_) => Ok(true),
            Err(e) if condition_failed(&e) => Ok(true),
            Err(e) => Err(unavailable("PutItem", e)),
        }
    }

    /// A queued message of `tenant`'s that its job holds but no item does yet, as a view shows
    /// it; `None` also while its job's fan-out has not reached it.
    pub(super) async fn job_message_view(
        &self,
        tenant: &TenantId,
        id: MessageId,
    ) -> Result<Option<(Message, Vec<DeliveryEvent>)>, StoreError> {
        let Some(m) = self.job_message(id, None).await? else {
            return Ok(None);
        };
        if &m.tenant != tenant || !self.fanned_out_past(&m).await? {
            return Ok(None);
        }
        Ok(Some(queued_view(&m)?))
    }

    /// Whether the fan-out of `m`'s job has queued it.
    async fn fanned_out_past(&self, m: &NewMessage) -> Result<bool, StoreError> {
        let (Some(bulk_id), Some((_, position))) =
            (m.bulk_id.as_deref(), BulkIds::containing(m.id))
        else {
            return Ok(false);
        };
        Ok(self.fanned_out_to(bulk_id).await? > position)
    }
}

/// A queued message as its item would show it.
pub(super) fn queued_view(m: &NewMessage) -> Result<(Message, Vec<DeliveryEvent>), StoreError> {
    let item = super::item::new_message_item(m, false);
    let mut message = super::item::message_from_item(&item)?;
    message.content = m.content.clone();
    Ok((message, super::item::events_from_item(&item)?))
}
