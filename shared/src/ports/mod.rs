//! Ports: what the engine needs from storage, queues and gateways. The embedded backend
//! (SQLite) implements them today; the AWS backend implements the same traits.

mod audit;
mod contacts;
#[cfg(any(test, feature = "contract-tests"))]
pub mod contract;
#[cfg(any(test, feature = "contract-tests"))]
pub mod contract_relay;
#[cfg(any(test, feature = "contract-tests"))]
pub mod contract_threads;
#[cfg(any(test, feature = "contract-tests"))]
pub mod faulty;
mod gateway;
mod health;
mod inbound;
mod limits;
mod media;
mod notify;
mod queue;
mod relay;
mod search;
mod sessions;
mod store;
mod suppression;
mod threads;
mod warmup;

pub use audit::{AuditFilter, AuditLog, AuditPage, AuditPageFill};
pub use contacts::{live, merged, ContactRecord, ContactStore};
pub use gateway::{
    Gateway, GatewayError, GatewayReceipt, OutboundMessage, ProviderEvent, ProviderEventKind,
};
pub use health::HealthStore;
pub use inbound::{InboundFeed, InboundStore, RuleStore};
pub use limits::{Grant, RateLimiter};
pub use media::{FetchError, Fetched, MediaBody, MediaFetcher, MediaFile, MediaStore};
pub use notify::{
    Attempt, DeliveryState, EndpointRecord, PolledOutbox, Queued, WebhookDelivery, WebhookStore,
};
pub use queue::{Delivery, LaneQueue, LaneRef, LaneStats, Redelivery};
pub use relay::{
    AssignmentDraft, AssignmentRecord, NumberRecord, NumberWriteError, RelayStore, RECENT,
};
pub use search::{
    first_id_at, BulkProgress, BulkSummary, MessageFilter, SearchPage, RECENT_BULK_SENDS,
    SEARCH_SCAN_BUDGET,
};
pub use sessions::{ConsoleSession, SessionStore};
pub use store::*;
pub use suppression::{
    ClaimToken, EventClaim, EventLog, ParkedEvents, ParkedMark, SentUnder, SuppressionFilter,
    SuppressionStore,
};
pub use threads::{ThreadScan, ThreadStore, THREAD_SCAN_BUDGET};
pub use warmup::WarmupStore;

/// A backend failure. Domain outcomes (not found, CAS lost) are values, not errors.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// Another worker holds what this needed (a provider event it is applying): nothing is
    /// wrong with the store, and a retry after a while goes through.
    #[error("busy: {0}")]
    Busy(String),
    /// The embedded store has begun to shut down: nothing is wrong, the process is stopping.
    #[error("store is shut down")]
    ShutDown,
}
