use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{ProviderEvent, StoreError};
use crate::domain::suppression::{Reason, Scope, Suppression};
use crate::domain::{Channel, MessageId, TenantId};

/// Which entries a listing wants.
#[derive(Debug, Clone, Default)]
pub struct SuppressionFilter {
    pub channel: Option<Channel>,
    pub reason: Option<Reason>,
}

/// The suppression list, global and per tenant.
#[async_trait]
pub trait SuppressionStore: Send + Sync + 'static {
    /// The active entries (the tenant's, or global) for any of `addresses` (canonical form),
    /// keyed by address: one call for a whole batch, never a look-up per recipient.
    async fn suppressed(
        &self,
        tenant: &TenantId,
        channel: Channel,
        addresses: &[String],
        now: DateTime<Utc>,
    ) -> Result<HashMap<String, Suppression>, StoreError>;
    /// Adds or replaces entries; returns how many were not there before.
    async fn put_suppressions(&self, entries: Vec<Suppression>) -> Result<usize, StoreError>;
    async fn get_suppression(
        &self,
        scope: &Scope,
        channel: Channel,
        address: &str,
    ) -> Result<Option<Suppression>, StoreError>;
    /// Returns whether there was such an entry.
    async fn delete_suppression(
        &self,
        scope: &Scope,
        channel: Channel,
        address: &str,
    ) -> Result<bool, StoreError>;
    /// Deletes the entry only if it is for `reason` and was made no later than `made_by`, in
    /// one conditional write (a START lifts only an opt-out that came before it, and a STOP that
    /// re-dates the entry meanwhile wins). Returns whether it was deleted.
    async fn lift_suppression(
        &self,
        scope: &Scope,
        channel: Channel,
        address: &str,
        reason: Reason,
        made_by: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// One scope's entries ordered by (channel, address), after `after`.
    async fn list_suppressions(
        &self,
        scope: &Scope,
        filter: &SuppressionFilter,
        after: Option<(Channel, String)>,
        limit: usize,
    ) -> Result<Vec<Suppression>, StoreError>;
    /// Records a soft bounce and returns how many this address had within `window`, this one
    /// included.
    async fn soft_bounce(
        &self,
        tenant: &TenantId,
        channel: Channel,
        address: &str,
        at: DateTime<Utc>,
        window: Duration,
    ) -> Result<u32, StoreError>;
}

/// Which claim on an event is whose: a try whose lease ran out cannot release or mark the
/// claim of the try that took the event over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimToken(pub i64);

impl ClaimToken {
    /// A random token, never 0 (which stores use for "applied").
    pub fn new() -> ClaimToken {
        ClaimToken(rand::random::<i64>() | 1)
    }
}

impl Default for ClaimToken {
    fn default() -> Self {
        ClaimToken::new()
    }
}

/// What a claim on a provider event found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventClaim {
    /// Claimed: apply it, then record it applied (or release it) with this token.
    First(ClaimToken),
    /// Applied before: a repeat.
    Applied,
    /// Another claim's lease runs: ask for the event again later.
    Applying,
    /// Claimed, after an earlier try parked some of its events and failed before it knew
    /// they were applied ([`EventLog::event_parked`]): release what is parked for its provider
    /// messages rather than apply the event afresh, which would apply those twice.
    Parked(ClaimToken),
}

/// Provider events already processed, by the provider's own event id (an SNS MessageId, a
/// Twilio MessageSid plus status): a notification delivered twice is applied once.
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// True the first time `(source, id)` is seen within `keep`; false for a repeat.
    async fn first_seen(&self, source: &str, id: &str, keep: Duration) -> Result<bool, StoreError>;
    /// Claims `(source, id)` for `lease` while its effect is applied. A claim whose holder
    /// died (a crash, a timeout) runs out with its lease, so the event's redelivery is
    /// applied then, not taken for a repeat.
    async fn claim_event(
        &self,
        source: &str,
        id: &str,
        lease: Duration,
    ) -> Result<EventClaim, StoreError>;
    /// Records a claimed event as applied, remembered for `keep`, also when its claim is gone;
    /// nothing when another holds it (`token`'s lease ran out and another took it over).
    async fn event_applied(
        &self,
        source: &str,
        id: &str,
        token: ClaimToken,
        keep: Duration,
    ) -> Result<(), StoreError>;
    /// Gives up a claim whose events are parked but were not all tried after parking (a
    /// store failure): each later claim within `keep` is answered [`EventClaim::Parked`],
    /// until one records the event applied. Nothing when another holds the claim.
    async fn event_parked(
        &self,
        source: &str,
        id: &str,
        token: ClaimToken,
        keep: Duration,
    ) -> Result<(), StoreError>;
    /// Gives up a claim whose effect could not be applied, so the redelivery is not a repeat;
    /// nothing when the claim is no longer `token`'s.
    async fn release_event(
        &self,
        source: &str,
        id: &str,
        token: ClaimToken,
    ) -> Result<(), StoreError>;
    /// Keeps events that came before their message's `sent` was recorded, each under its
    /// gateway and provider message id, for `keep`. Returns the messages already recorded as
    /// sent under those provider ids whose `sent` was told to `parked` (the store answers
    /// from what it wrote, so a provider-id index that lags cannot hide them).
    async fn park(&self, events: &[ProviderEvent], keep: Duration)
        -> Result<SentUnder, StoreError>;
    /// The unexpired events parked for a provider message, oldest first, left parked: they
    /// are forgotten only once applied (`forget_parked`), so a crash or a failure between
    /// the two leaves them to be applied again, not lost. `sent`: the message the caller has
    /// just recorded as sent under this provider id; the store keeps word of it, so an event
    /// parked after this read learns its message from `park`.
    async fn parked(
        &self,
        gateway: &str,
        provider_message_id: &str,
        sent: Option<MessageId>,
    ) -> Result<ParkedEvents, StoreError>;
    /// Forgets the events `parked` returned with `mark`, and none parked since; nothing when
    /// another has forgotten them already.
    async fn forget_parked(
        &self,
        gateway: &str,
        provider_message_id: &str,
        mark: ParkedMark,
    ) -> Result<(), StoreError>;
}

/// A provider message's parked events as read, and what to forget once they are applied.
#[derive(Debug, Default)]
pub struct ParkedEvents {
    pub events: Vec<ProviderEvent>,
    /// None when nothing is parked.
    pub mark: Option<ParkedMark>,
    /// The message recorded as sent under this provider id, when the store has the item or
    /// rows read (DynamoDB: a `sent`'s word on the item; SQLite: its messages table, when
    /// events are parked). None says nothing: a look-up by provider id may still find one.
    pub sent: Option<MessageId>,
}

/// Messages recorded as sent, by the gateway and provider message id they were sent under.
pub type SentUnder = BTreeMap<(String, String), MessageId>;

/// Where a read of parked events ended, as its backend says it (a sequence number; the
/// length and first entry of a list): opaque to the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedMark(pub(crate) String);

impl ParkedMark {
    /// A mark its backend cannot read back.
    pub(crate) fn unreadable(&self) -> StoreError {
        StoreError::Corrupt(format!("parked mark {:?}", self.0))
    }
}
