//! Threads and their timelines. An inbound message joins its thread in the same unit that
//! stores it ([`super::InboundStore::record_inbound`]); this port reads threads and changes them.

use async_trait::async_trait;

use super::StoreError;
use crate::domain::thread::{
    Thread, ThreadCursor, ThreadEntry, ThreadFilter, ThreadId, ThreadPatch,
};
use crate::domain::thread_policy::ThreadPolicy;
use crate::domain::{Channel, Identity, MessageId, TenantId};

/// The most threads one list request reads, whatever its filter keeps: a filter that matches
/// little returns a short page and a cursor, never a scan of the tenant's whole history.
pub const THREAD_SCAN_BUDGET: usize = 1000;

/// A page of threads, and where the next one starts when the read stopped before the end
/// (the page is full, or the budget was spent).
#[derive(Debug, Default)]
pub struct ThreadScan {
    pub items: Vec<Thread>,
    pub resume: Option<ThreadCursor>,
}

impl ThreadScan {
    /// Collects up to `limit` threads that pass `filter` from `read` (newest activity first),
    /// reading at most `budget`; `more` says whether anything was left unread after them.
    pub fn collect(
        read: impl IntoIterator<Item = Result<Thread, StoreError>>,
        filter: &ThreadFilter,
        limit: usize,
        budget: usize,
    ) -> Result<(ThreadScan, usize), StoreError> {
        let mut scan = ThreadScan::default();
        let mut seen = 0;
        for t in read {
            let t = t?;
            seen += 1;
            let cursor = ThreadCursor::of(&t);
            if filter.matches(&t) {
                scan.items.push(t);
            }
            if scan.items.len() == limit || seen == budget {
                scan.resume = Some(cursor);
                break;
            }
        }
        Ok((scan, seen))
    }
}

#[async_trait]
pub trait ThreadStore: Send + Sync + 'static {
    /// A tenant's threads that pass `filter`, latest activity first, below `after`: up to
    /// `limit` of them, from at most [`THREAD_SCAN_BUDGET`] threads read.
    async fn threads(
        &self,
        tenant: &TenantId,
        filter: &ThreadFilter,
        after: Option<ThreadCursor>,
        limit: usize,
    ) -> Result<ThreadScan, StoreError>;
    async fn thread(&self, tenant: &TenantId, id: ThreadId) -> Result<Option<Thread>, StoreError>;
    /// A thread's timeline, oldest first, after `after`.
    async fn thread_entries(
        &self,
        tenant: &TenantId,
        id: ThreadId,
        after: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<ThreadEntry>, StoreError>;
    /// Applies a change; `None` when there is no such thread.
    async fn update_thread(
        &self,
        tenant: &TenantId,
        id: ThreadId,
        patch: &ThreadPatch,
    ) -> Result<Option<Thread>, StoreError>;
    /// Clears the unread count.
    async fn mark_read(
        &self,
        tenant: &TenantId,
        id: ThreadId,
    ) -> Result<Option<Thread>, StoreError>;
    /// The tenant's thread whose timeline has message `message` (an email reply names the
    /// message it answers).
    async fn thread_of_message(
        &self,
        tenant: &TenantId,
        message: MessageId,
    ) -> Result<Option<ThreadId>, StoreError>;
    /// The thread a message sent to `identity` on `channel` at `now` joins, by `policy`: the
    /// current thread of the contact that has the identity, or a new one when it has none
    /// (or the policy let the old one go); none when no contact has the identity.
    async fn thread_for_send(
        &self,
        tenant: &TenantId,
        identity: &Identity,
        channel: Channel,
        policy: &ThreadPolicy,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<ThreadId>, StoreError>;
    /// Adds a message sent through the thread to its timeline (once per message).
    async fn record_outbound(
        &self,
        tenant: &TenantId,
        id: ThreadId,
        entry: &ThreadEntry,
    ) -> Result<Option<Thread>, StoreError>;
    /// Takes the thread's auto-reply slot for inbound message `by` (see
    /// [`Thread::may_auto_reply`]), as one compare-and-set: false when another message had an
    /// auto-reply within `every`, a person took the thread over, or there is no such thread.
    async fn claim_auto_reply(
        &self,
        tenant: &TenantId,
        id: ThreadId,
        by: MessageId,
        now: chrono::DateTime<chrono::Utc>,
        every: std::time::Duration,
    ) -> Result<bool, StoreError>;
    /// Threads of every tenant whose follow-up time passed by `now` and was not announced,
    /// the earliest first.
    async fn followups_due(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> Result<Vec<Thread>, StoreError>;
    /// Announces the follow-up `thread` was read with (`thread.followup_due`, from the thread
    /// as it is now) and marks it announced, once: false, and nothing announced, when it was
    /// announced already or its time changed meanwhile.
    async fn fire_followup(&self, thread: &Thread) -> Result<bool, StoreError>;
}
