//! Ports: what the engine needs from storage, queues and gateways. The embedded backend
//! (SQLite) implements them today; the AWS backend implements the same traits.

#[cfg(any(test, feature = "contract-tests"))]
pub mod contract;
mod gateway;
mod queue;
mod store;

pub use gateway::{
    Gateway, GatewayError, GatewayReceipt, OutboundMessage, ProviderEvent, ProviderEventKind,
};
pub use queue::{Delivery, LaneQueue, LaneRef, LaneStats, Redelivery};
pub use store::*;

/// A backend failure. Domain outcomes (not found, CAS lost) are values, not errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}
