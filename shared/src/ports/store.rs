use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::{BulkProgress, BulkSummary, MessageFilter, SearchPage, StoreError};
use crate::domain::locale::Locale;
use crate::domain::template::TemplateParts;
use crate::domain::{
    template::Template, BulkJob, Channel, DeliveryEvent, EventKind, KeyScopes, Message, MessageId,
    MessageStatus, NewMessage, Priority, SenderIdentity, TemplateName, TenantId,
};

/// An `Idempotency-Key` and the response it produced, kept at least 24 h.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub tenant: TenantId,
    pub key: String,
    /// SHA-256 of method, path and body: the same key with another body is refused.
    pub request_hash: String,
    pub response_status: u16,
    pub response_body: String,
}

/// One unit of accept work: messages (each with its first event) and the idempotency record
/// that must commit with them or not at all.
#[derive(Debug, Clone)]
pub struct AcceptBatch {
    pub messages: Vec<NewMessage>,
    pub idempotency: Option<IdempotencyRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcceptOutcome {
    Accepted,
    /// The key was used before; nothing was written and this is what it stored.
    KeyExists(IdempotencyRecord),
}

/// How a transition changes the attempt counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptChange {
    Keep,
    /// A throttle hands the attempt back: it did not use one up.
    GiveBack,
    Reset,
}

/// A compare-and-set on a message's state, with the event it appends.
#[derive(Debug, Clone)]
pub struct Transition {
    pub id: MessageId,
    /// When set, the message must belong to this tenant (API calls).
    pub tenant: Option<TenantId>,
    pub to: MessageStatus,
    /// When set, only the holder of this attempt may finish it (dispatch outcomes).
    pub attempt: Option<u32>,
    pub attempts: AttemptChange,
    pub gateway: Option<String>,
    pub provider_message_id: Option<String>,
    /// Whether the message must be found by `provider_message_id` later: false when the
    /// provider's callbacks carry Herald's id (SES's tag), which saves DynamoDB an index write.
    pub index_provider_id: bool,
    pub last_error: Option<String>,
    pub detail: serde_json::Value,
    pub at: DateTime<Utc>,
    /// A hold, not a try (a throttle, a shutdown, an unreadable suppression list): the message
    /// goes back with no event of its own, and the claim's `sending` event is taken back, so
    /// holds leave its timeline as it was however often they come.
    pub hold: bool,
}

impl Transition {
    pub fn new(id: MessageId, to: MessageStatus, at: DateTime<Utc>) -> Transition {
        Transition {
            id,
            tenant: None,
            to,
            attempt: None,
            attempts: AttemptChange::Keep,
            gateway: None,
            provider_message_id: None,
            index_provider_id: true,
            last_error: None,
            detail: serde_json::Value::Null,
            at,
            hold: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransitionOutcome {
    Applied,
    /// Applied, and the store knows no provider event was parked for the message meanwhile,
    /// so a `sent` needs no look-up of parked events (DynamoDB, for messages whose provider
    /// callbacks name them).
    AppliedNothingParked,
    /// The message was not in a state that may become the target (or the attempt moved on).
    Conflict {
        current: MessageStatus,
    },
    NotFound,
}

#[derive(Debug, Clone)]
pub enum ClaimOutcome {
    /// Now `sending`, attempt counted; the caller holds the hand-off.
    Claimed(Box<Message>),
    /// Cancelled, suppressed, already sent, or held by a live claim.
    NotClaimable {
        current: MessageStatus,
        lease_until: Option<DateTime<Utc>>,
        /// The gateway and provider message id provider events were parked under for it, when
        /// the store flags that on the message (DynamoDB): a redelivery then applies what a
        /// dispatch that stopped after its `sent` left parked. None embedded, where a `sent`
        /// and its lane entry are settled together, so no redelivery follows one.
        parked_under: Option<(String, String)>,
    },
    NotFound,
}

/// A message's owner and recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRef {
    pub tenant: TenantId,
    pub channel: Channel,
    pub to: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChannelCount {
    pub channel: Channel,
    pub gateway: Option<String>,
    pub status: MessageStatus,
    pub count: u64,
}

/// How many of a tenant's messages on one lane a gateway took (`sent`) in one minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SentMinute {
    /// The minute's start.
    pub minute: DateTime<Utc>,
    pub lane: Priority,
    pub sent: u64,
}

/// How long the per-minute sent counts are kept.
pub const SENT_MINUTES_KEPT_HOURS: i64 = 48;

/// Messages and their append-only events, idempotency keys, and the outbox onto the lanes:
/// `accept` and `redrive` make messages visible on their lane in the same unit of work.
#[async_trait]
pub trait MessageStore: Send + Sync + 'static {
    async fn accept(&self, batch: AcceptBatch) -> Result<AcceptOutcome, StoreError>;
    /// A bulk send: every recipient's message, or none, with the idempotency record. The default
    /// renders them here and accepts them as one batch; a backend that fans out later (AWS:
    /// the `enqueue` function) stores the job instead.
    async fn accept_bulk(
        &self,
        job: BulkJob,
        idempotency: Option<IdempotencyRecord>,
    ) -> Result<AcceptOutcome, StoreError> {
        let messages = job.messages(..).map_err(|e| {
            StoreError::Corrupt(format!("bulk job {} does not render: {e}", job.bulk_id))
        })?;
        self.accept(AcceptBatch {
            messages,
            idempotency,
        })
        .await
    }
    /// The record of an `Idempotency-Key`, if it was used (checked before any work is done).
    async fn find_idempotency(
        &self,
        tenant: &TenantId,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError>;
    async fn get(
        &self,
        tenant: &TenantId,
        id: MessageId,
    ) -> Result<Option<(Message, Vec<DeliveryEvent>)>, StoreError>;
    /// Whose message `id` is, whatever the caller: only to record a probe of another tenant's
    /// id in the audit log, never to answer a caller.
    async fn owner_of(&self, id: MessageId) -> Result<Option<TenantId>, StoreError>;
    /// Conditional hand-off: `queued`/`deferred` (or `sending` whose lease ran out, after a crash)
    /// becomes `sending` with one more attempt, appending a `sending` event.
    async fn claim(
        &self,
        id: MessageId,
        lane: Priority,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<ClaimOutcome, StoreError>;
    /// [`MessageStore::claim`] for a bulk message its job's fan-out left unwritten: the store
    /// renders it from part `part` of its job and creates it as claimed. A store that writes
    /// every message at fan-out claims as usual.
    async fn claim_from_job(
        &self,
        id: MessageId,
        _part: u32,
        lane: Priority,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<ClaimOutcome, StoreError> {
        self.claim(id, lane, now, lease).await
    }
    /// Claims several messages of one lane as one unit of work, each a compare-and-set as in
    /// [`MessageStore::claim`]; one outcome per id, in order. Adapters that can claim a set at
    /// once override it.
    async fn claim_many(
        &self,
        ids: Vec<MessageId>,
        lane: Priority,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Vec<ClaimOutcome>, StoreError> {
        let mut outcomes = Vec::with_capacity(ids.len());
        for id in ids {
            outcomes.push(self.claim(id, lane, now, lease).await?);
        }
        Ok(outcomes)
    }
    /// Applies transitions in order; one outcome each.
    async fn transition(
        &self,
        batch: Vec<Transition>,
    ) -> Result<Vec<TransitionOutcome>, StoreError>;
    /// Who a message is for, whatever its tenant (provider events that suppress an address).
    async fn locate(&self, id: MessageId) -> Result<Option<MessageRef>, StoreError>;
    /// Appends an event that changes no state (a provider's DeliveryDelay), if the message is
    /// in one of `while_in`.
    async fn annotate(
        &self,
        id: MessageId,
        kind: EventKind,
        at: DateTime<Utc>,
        detail: serde_json::Value,
        while_in: &'static [MessageStatus],
    ) -> Result<TransitionOutcome, StoreError>;
    /// Finds messages by (gateway, provider message id), one answer per key, in order.
    async fn find_by_provider_ids(
        &self,
        keys: Vec<(String, String)>,
    ) -> Result<Vec<Option<MessageId>>, StoreError>;
    /// A tenant's dead letters (messages in `failed`), newest first, paged by id.
    async fn list_failed(
        &self,
        tenant: &TenantId,
        before: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError>;
    /// A tenant's messages that pass `filter`, newest first, below `cursor` (a page's
    /// `resume_below`), at most `limit` of them, reading at most [`super::SEARCH_SCAN_BUDGET`]
    /// index entries.
    async fn search(
        &self,
        tenant: &TenantId,
        filter: &MessageFilter,
        cursor: Option<MessageId>,
        limit: usize,
    ) -> Result<SearchPage, StoreError>;
    /// A tenant's bulk send by status; `None` when the tenant has no bulk send of that id.
    async fn bulk_progress(
        &self,
        tenant: &TenantId,
        bulk_id: &str,
    ) -> Result<Option<BulkProgress>, StoreError>;
    /// The tenant's bulk sends accepted since `since`, newest first, at most `limit`.
    async fn recent_bulk_sends(
        &self,
        tenant: &TenantId,
        since: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<BulkSummary>, StoreError>;
    /// Whose bulk send `bulk_id` is, whatever the tenant (a probe of another tenant's is
    /// audited); `None` if there is none.
    async fn bulk_owner(&self, bulk_id: &str) -> Result<Option<TenantId>, StoreError>;
    /// `failed` -> `queued` with attempts reset, back on its lane. Returns the ids redriven.
    async fn redrive(
        &self,
        tenant: &TenantId,
        ids: Option<Vec<MessageId>>,
        now: DateTime<Utc>,
    ) -> Result<Vec<MessageId>, StoreError>;
    /// Messages of every tenant that a gateway took and has not reported on yet, oldest first,
    /// paged by id (start-up recovery of an in-process provider).
    async fn sent_by_gateway(
        &self,
        gateway: &str,
        after: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError>;
    async fn channel_counts(&self, tenant: &TenantId) -> Result<Vec<ChannelCount>, StoreError>;
    /// The tenant's messages accepted since `since`, counted as `channel_counts` counts them,
    /// where the backend can count by time; None where it keeps only running totals (the
    /// caller then differences snapshots of those).
    async fn counts_since(
        &self,
        _tenant: &TenantId,
        _since: DateTime<Utc>,
    ) -> Result<Option<Vec<ChannelCount>>, StoreError> {
        Ok(None)
    }
    /// The tenant's sends per minute and lane from `since`, oldest first; minutes with none
    /// are absent. Kept for `SENT_MINUTES_KEPT_HOURS`.
    async fn sent_per_minute(
        &self,
        tenant: &TenantId,
        since: DateTime<Utc>,
    ) -> Result<Vec<SentMinute>, StoreError>;
    /// Retention: deletes final messages (and their events) last updated before `cutoff`, and
    /// idempotency keys created before `keys_cutoff`.
    async fn purge(
        &self,
        cutoff: DateTime<Utc>,
        keys_cutoff: DateTime<Utc>,
    ) -> Result<u64, StoreError>;
    async fn ping(&self) -> Result<(), StoreError>;
}

#[async_trait]
pub trait TemplateStore: Send + Sync + 'static {
    /// Returns true when the template is new.
    async fn put(&self, tenant: &TenantId, template: Template) -> Result<bool, StoreError>;
    async fn get(
        &self,
        tenant: &TenantId,
        name: &TemplateName,
    ) -> Result<Option<Template>, StoreError>;
    /// Deletes the template with its locale variants.
    async fn delete(&self, tenant: &TenantId, name: &TemplateName) -> Result<bool, StoreError>;
    /// The tenant's templates by name, those after `after`, at most `limit`, without their
    /// locale variants.
    async fn list_templates(
        &self,
        tenant: &TenantId,
        after: Option<&TemplateName>,
        limit: usize,
    ) -> Result<Vec<Template>, StoreError>;
    /// Adds or replaces one locale's variant of an existing template.
    async fn put_locale(
        &self,
        tenant: &TenantId,
        name: &TemplateName,
        locale: &Locale,
        parts: &TemplateParts,
    ) -> Result<LocalePut, StoreError>;
    /// Returns whether there was such a variant.
    async fn delete_locale(
        &self,
        tenant: &TenantId,
        name: &TemplateName,
        locale: &Locale,
    ) -> Result<bool, StoreError>;
}

/// What putting a locale variant did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalePut {
    Created,
    Replaced,
    /// The template does not exist: a variant needs its template.
    NoTemplate,
}

#[derive(Debug, Clone)]
pub struct StoredKey {
    pub tenant: TenantId,
    pub key_hash: String,
    pub revoked: bool,
    pub scopes: KeyScopes,
}

#[async_trait]
pub trait TenantStore: Send + Sync + 'static {
    /// Returns true when the tenant is new.
    async fn ensure_tenant(&self, tenant: &TenantId) -> Result<bool, StoreError>;
    async fn add_key(
        &self,
        tenant: &TenantId,
        prefix: &str,
        key_hash: &str,
        scopes: KeyScopes,
    ) -> Result<(), StoreError>;
    async fn revoke_key(&self, prefix: &str) -> Result<bool, StoreError>;
    async fn find_key(&self, prefix: &str) -> Result<Option<StoredKey>, StoreError>;
    /// The identities the tenant may send as (set through the API), sorted by their text.
    async fn sender_identities(&self, tenant: &TenantId)
        -> Result<Vec<SenderIdentity>, StoreError>;
    /// Returns true when the identity is new for the tenant.
    async fn add_sender_identity(
        &self,
        tenant: &TenantId,
        identity: &SenderIdentity,
    ) -> Result<bool, StoreError>;
    /// Returns true when the tenant had the identity.
    async fn remove_sender_identity(
        &self,
        tenant: &TenantId,
        identity: &SenderIdentity,
    ) -> Result<bool, StoreError>;
}
