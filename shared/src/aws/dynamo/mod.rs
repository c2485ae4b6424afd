//! The DynamoDB store: messages (with their timelines), idempotency keys, templates, tenants and
//! keys, and stored bulk jobs. Every state change is a conditional write. The table design and
//! its access patterns are in docs/dynamodb.md.

mod batch;
mod bulk;
mod counters;
mod directory;
mod health;
mod inbound;
pub(crate) mod item;
mod limits;
mod messages;
mod suppressions;

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::Client;

pub use bulk::{BulkRef, FanOut, FanOutError};

use super::settings::{required, Tables};
use super::sqs::SqsLanes;
use crate::ports::StoreError;

/// Idempotency keys live at least 24 h (Stripe); they are kept 48 h.
const IDEMPOTENCY_TTL: Duration = Duration::from_secs(48 * 3600);

pub struct DynamoStore {
    client: Client,
    tables: Tables,
    /// Accept and redrive put what they stored on its lane.
    lanes: Arc<SqsLanes>,
    retention: Duration,
    pauses: limits::PauseCache,
    pending_outcomes: health::PendingOutcomes,
}

impl DynamoStore {
    pub fn new(
        client: Client,
        tables: Tables,
        lanes: Arc<SqsLanes>,
        retention: Duration,
    ) -> DynamoStore {
        DynamoStore {
            client,
            tables,
            lanes,
            retention,
            pauses: Default::default(),
            pending_outcomes: Default::default(),
        }
    }

    fn messages_table(&self) -> Result<&str, StoreError> {
        required(&self.tables.messages, super::settings::MESSAGES_TABLE)
    }

    fn idempotency_table(&self) -> Result<&str, StoreError> {
        required(&self.tables.idempotency, super::settings::IDEMPOTENCY_TABLE)
    }

    fn templates_table(&self) -> Result<&str, StoreError> {
        required(&self.tables.templates, super::settings::TEMPLATES_TABLE)
    }

    fn tenants_table(&self) -> Result<&str, StoreError> {
        required(&self.tables.tenants, super::settings::TENANTS_TABLE)
    }

    fn bulk_table(&self) -> Result<&str, StoreError> {
        required(&self.tables.bulk, super::settings::BULK_TABLE)
    }

    fn health_table(&self) -> Result<&str, StoreError> {
        required(&self.tables.health, super::settings::HEALTH_TABLE)
    }

    fn rate_limits_table(&self) -> Result<&str, StoreError> {
        required(&self.tables.rate_limits, super::settings::RATE_LIMITS_TABLE)
    }

    fn inbound_table(&self) -> Result<&str, StoreError> {
        required(&self.tables.inbound, super::settings::INBOUND_TABLE)
    }

    fn suppressions_table(&self) -> Result<&str, StoreError> {
        required(
            &self.tables.suppressions,
            super::settings::SUPPRESSIONS_TABLE,
        )
    }
}

/// A failed SDK call: the store (or the network to it) is unavailable.
pub(crate) fn unavailable<E>(op: &str, e: E) -> StoreError
where
    E: std::error::Error + Send + Sync + 'static,
{
    StoreError::Unavailable(format!("dynamodb {op}: {}", DisplayErrorContext(e)))
}

/// A request the SDK refused to build (a required field missing): a bug, reported as such.
pub(crate) fn build_error(e: aws_sdk_dynamodb::error::BuildError) -> StoreError {
    StoreError::Unavailable(format!("dynamodb request: {e}"))
}

/// Whether a failed conditional write failed on its condition (rather than on the store).
pub(crate) fn condition_failed<E, R>(e: &aws_sdk_dynamodb::error::SdkError<E, R>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    e.as_service_error()
        .and_then(|se| se.code())
        .is_some_and(|code| code == "ConditionalCheckFailedException")
}

fn epoch_seconds(t: chrono::DateTime<chrono::Utc>) -> i64 {
    t.timestamp()
}
