//! Threads and their timelines. An inbound message joins its thread in the same unit that
//! stores it ([`super::InboundStore::record_inbound`]); this port reads threads and changes them.

use async_trait::async_trait;

use super::StoreError;
use crate::domain::notify::Notice;
use crate::domain::thread::{
    Thread, ThreadCursor, ThreadEntry, ThreadFilter, ThreadId, ThreadPatch,
};
use crate::domain::{MessageId, TenantId};

#[async_trait]
pub trait ThreadStore: Send + Sync + 'static {
    /// A tenant's threads that pass `filter`, latest activity first, below `after`.
    async fn threads(
        &self,
        tenant: &TenantId,
        filter: &ThreadFilter,
        after: Option<ThreadCursor>,
        limit: usize,
    ) -> Result<Vec<Thread>, StoreError>;
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
    /// Adds a message sent through the thread to its timeline (once per message).
    async fn record_outbound(
        &self,
        tenant: &TenantId,
        id: ThreadId,
        entry: &ThreadEntry,
    ) -> Result<Option<Thread>, StoreError>;
    /// Threads of every tenant whose follow-up time passed by `now` and was not announced,
    /// the earliest first.
    async fn followups_due(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> Result<Vec<Thread>, StoreError>;
    /// Announces a due follow-up with `notice` and marks it announced, once: false (and
    /// nothing announced) when it was announced already or its time changed meanwhile.
    async fn fire_followup(&self, thread: &Thread, notice: Notice) -> Result<bool, StoreError>;
}
