//! A message store that fails chosen calls on the provider-event path (`find_by_provider_ids`,
//! `transition`, `annotate`): the store failures the engine must survive, for unit tests.
//! Everything else goes to the store it wraps.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::*;
use crate::domain::{
    BulkJob, DeliveryEvent, EventKind, Message, MessageId, MessageStatus, Priority, TenantId,
};

pub struct FaultyStore {
    inner: Arc<dyn MessageStore>,
    /// Calls on the provider-event path still to pass before the failures start.
    pass: AtomicUsize,
    /// Calls that fail after those.
    fail: AtomicUsize,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn MessageStore>) -> FaultyStore {
        FaultyStore {
            inner,
            pass: AtomicUsize::new(0),
            fail: AtomicUsize::new(0),
        }
    }

    /// The next `pass` calls on the provider-event path go through; the `fail` after them fail.
    pub fn fail_after(&self, pass: usize, fail: usize) {
        self.pass.store(pass, Ordering::SeqCst);
        self.fail.store(fail, Ordering::SeqCst);
    }

    /// The failures not yet used.
    pub fn failures_left(&self) -> usize {
        self.fail.load(Ordering::SeqCst)
    }

    fn fault(&self) -> Result<(), StoreError> {
        let take = |n: &AtomicUsize| {
            n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
                .is_ok()
        };
        if take(&self.pass) || !take(&self.fail) {
            return Ok(());
        }
        Err(StoreError::Unavailable("injected fault".into()))
    }
}

#[async_trait]
impl MessageStore for FaultyStore {
    async fn accept(&self, batch: AcceptBatch) -> Result<AcceptOutcome, StoreError> {
        self.inner.accept(batch).await
    }
    async fn accept_bulk(
        &self,
        job: BulkJob,
        idempotency: Option<IdempotencyRecord>,
    ) -> Result<AcceptOutcome, StoreError> {
        self.inner.accept_bulk(job, idempotency).await
    }
    async fn find_idempotency(
        &self,
        tenant: &TenantId,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.inner.find_idempotency(tenant, key).await
    }
    async fn get(
        &self,
        tenant: &TenantId,
        id: MessageId,
    ) -> Result<Option<(Message, Vec<DeliveryEvent>)>, StoreError> {
        self.inner.get(tenant, id).await
    }
    async fn owner_of(&self, id: MessageId) -> Result<Option<TenantId>, StoreError> {
        self.inner.owner_of(id).await
    }
    async fn claim(
        &self,
        id: MessageId,
        lane: Priority,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<ClaimOutcome, StoreError> {
        self.inner.claim(id, lane, now, lease).await
    }
    async fn transition(
        &self,
        batch: Vec<Transition>,
    ) -> Result<Vec<TransitionOutcome>, StoreError> {
        self.fault()?;
        self.inner.transition(batch).await
    }
    async fn locate(&self, id: MessageId) -> Result<Option<MessageRef>, StoreError> {
        self.inner.locate(id).await
    }
    async fn annotate(
        &self,
        id: MessageId,
        kind: EventKind,
        at: DateTime<Utc>,
        detail: serde_json::Value,
        while_in: &'static [MessageStatus],
    ) -> Result<TransitionOutcome, StoreError> {
        self.fault()?;
        self.inner.annotate(id, kind, at, detail, while_in).await
    }
    async fn find_by_provider_ids(
        &self,
        keys: Vec<(String, String)>,
    ) -> Result<Vec<Option<MessageId>>, StoreError> {
        self.fault()?;
        self.inner.find_by_provider_ids(keys).await
    }
    async fn list_failed(
        &self,
        tenant: &TenantId,
        before: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        self.inner.list_failed(tenant, before, limit).await
    }
    async fn search(
        &self,
        tenant: &TenantId,
        filter: &MessageFilter,
        cursor: Option<MessageId>,
        limit: usize,
    ) -> Result<SearchPage, StoreError> {
        self.inner.search(tenant, filter, cursor, limit).await
    }
    async fn bulk_progress(
        &self,
        tenant: &TenantId,
        bulk_id: &str,
    ) -> Result<Option<BulkProgress>, StoreError> {
        self.inner.bulk_progress(tenant, bulk_id).await
    }
    async fn recent_bulk_sends(
        &self,
        tenant: &TenantId,
        since: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<BulkSummary>, StoreError> {
        self.inner.recent_bulk_sends(tenant, since, limit).await
    }
    async fn bulk_owner(&self, bulk_id: &str) -> Result<Option<TenantId>, StoreError> {
        self.inner.bulk_owner(bulk_id).await
    }
    async fn redrive(
        &self,
        tenant: &TenantId,
        ids: Option<Vec<MessageId>>,
        now: DateTime<Utc>,
    ) -> Result<Vec<MessageId>, StoreError> {
        self.inner.redrive(tenant, ids, now).await
    }
    async fn sent_by_gateway(
        &self,
        gateway: &str,
        after: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        self.inner.sent_by_gateway(gateway, after, limit).await
    }
    async fn channel_counts(&self, tenant: &TenantId) -> Result<Vec<ChannelCount>, StoreError> {
        self.inner.channel_counts(tenant).await
    }
    async fn sent_per_minute(
        &self,
        tenant: &TenantId,
        since: DateTime<Utc>,
    ) -> Result<Vec<SentMinute>, StoreError> {
        self.inner.sent_per_minute(tenant, since).await
    }
    async fn purge(
        &self,
        cutoff: DateTime<Utc>,
        keys_cutoff: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        self.inner.purge(cutoff, keys_cutoff).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}
