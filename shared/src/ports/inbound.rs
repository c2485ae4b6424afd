use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreError;
use crate::domain::deliverability::quiet_hours::QuietHours;
use crate::domain::deliverability::reputation::ReputationState;
use crate::domain::inbound::{InboundClaim, InboundOutcome};
use crate::domain::media::MediaItem;
use crate::domain::relay::settings::RelaySettings;
use crate::domain::rules::RuleSet;
use crate::domain::thread_policy::ThreadPolicy;
use crate::domain::{InboundMessage, MessageId, TenantId};

/// Messages received from recipients, and the pipeline's progress on them.
#[async_trait]
pub trait InboundStore: Send + Sync + 'static {
    /// Stores a message, `received`, and threads it: into `message.thread` when the tenant
    /// has that thread (the one an email reply names), else by its sender, as `policy` says.
    /// False when its `(gateway, provider_message_id)` was stored before: a provider's retry,
    /// nothing to do again.
    async fn record_inbound(
        &self,
        message: &InboundMessage,
        policy: &ThreadPolicy,
    ) -> Result<bool, StoreError>;
    /// When the message `(gateway, provider_message_id)` was first stored, if it is: a retry's
    /// keyword takes effect as of then, not as of its redelivery.
    async fn first_received_at(
        &self,
        gateway: &str,
        provider_message_id: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError>;
    /// A tenant's messages, newest first, older than `before` when given.
    async fn list_inbound(
        &self,
        tenant: &TenantId,
        before: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<InboundMessage>, StoreError>;
    async fn inbound_message(
        &self,
        tenant: &TenantId,
        id: MessageId,
    ) -> Result<Option<InboundMessage>, StoreError>;
    /// Takes a message to process, as one compare-and-set: a `received` message due by `now`,
    /// or a `processing` one whose lease ended (its worker died), becomes `processing` until
    /// `now + lease`, one attempt more (the first claim's time is kept).
    async fn claim_inbound(
        &self,
        tenant: &TenantId,
        id: MessageId,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<InboundClaim, StoreError>;
    /// Records how processing ended, for the claim that made `attempt`. A message that is no
    /// longer `processing` under that claim (its lease ended and another worker took it, or
    /// finished it) keeps what it has.
    async fn finish_inbound(
        &self,
        tenant: &TenantId,
        id: MessageId,
        attempt: u32,
        outcome: &InboundOutcome,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Puts a message whose processing failed for now back to `received`, due at `retry_at`,
    /// with the error, if the claim that made `attempt` still holds it.
    async fn retry_inbound(
        &self,
        tenant: &TenantId,
        id: MessageId,
        attempt: u32,
        error: &str,
        retry_at: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Records a message's files, if the claim that made `attempt` still holds it.
    async fn set_inbound_media(
        &self,
        tenant: &TenantId,
        id: MessageId,
        attempt: u32,
        media: &[MediaItem],
    ) -> Result<(), StoreError>;
    /// Messages of every tenant waiting for a worker by `now` (received and due, or processing
    /// with an ended lease), the longest waiting first.
    async fn pending_inbound(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(TenantId, MessageId)>, StoreError>;
}

/// A tenant's settings: inbound rules, thread policy, relay settings, quiet hours, reputation.
#[async_trait]
pub trait RuleStore: Send + Sync + 'static {
    /// The rules, none when the tenant set none.
    async fn inbound_rules(&self, tenant: &TenantId) -> Result<RuleSet, StoreError>;
    /// Replaces them.
    async fn put_inbound_rules(&self, tenant: &TenantId, rules: &RuleSet)
        -> Result<(), StoreError>;
    /// How the tenant's messages are threaded; the default when it set nothing.
    async fn thread_policy(&self, tenant: &TenantId) -> Result<ThreadPolicy, StoreError>;
    /// Replaces it.
    async fn put_thread_policy(
        &self,
        tenant: &TenantId,
        policy: &ThreadPolicy,
    ) -> Result<(), StoreError>;
    /// The tenant's relay settings; the defaults when it set none.
    async fn relay_settings(&self, tenant: &TenantId) -> Result<RelaySettings, StoreError>;
    /// Replaces them.
    async fn put_relay_settings(
        &self,
        tenant: &TenantId,
        settings: &RelaySettings,
    ) -> Result<(), StoreError>;
    /// The tenant's quiet hours; the defaults when it set none.
    async fn quiet_hours(&self, tenant: &TenantId) -> Result<QuietHours, StoreError>;
    /// Replaces them.
    async fn put_quiet_hours(&self, tenant: &TenantId, q: &QuietHours) -> Result<(), StoreError>;
    /// The tenant's reputation settings and pause.
    async fn reputation(&self, tenant: &TenantId) -> Result<ReputationState, StoreError>;
    /// Replaces them, stored as revision `state.revision + 1`, if the stored revision is still
    /// `state.revision` (a compare-and-set: another process may judge the tenant at the same
    /// time); false when it moved on, and nothing is written.
    async fn put_reputation(
        &self,
        tenant: &TenantId,
        state: &ReputationState,
    ) -> Result<bool, StoreError>;
}

/// Tells the inbound workers that a message waits: embedded, a wake-up in the process; on AWS,
/// a message on the inbound queue. A lost announcement delays, never loses: the workers also
/// look for pending messages on their own.
#[async_trait]
pub trait InboundFeed: Send + Sync + 'static {
    async fn announce(&self, tenant: &TenantId, id: MessageId) -> Result<(), StoreError>;
}
