//! The DynamoDB store: messages (with their timelines), idempotency keys, templates, tenants and
//! keys, and stored bulk jobs. Every state change is a conditional write. The table design and
//! its access patterns are in docs/dynamodb.md.

mod audit;
mod batch;
mod bulk;
mod bulk_search;
mod bulk_sends;
mod contacts;
mod content;
mod counters;
mod directory;
mod health;
mod inbound;
pub(crate) mod item;
mod job_claims;
mod job_messages;
mod limits;
mod messages;
mod notify;
mod parked;
mod relay;
mod rules;
mod search;
mod sessions;
mod suppression_lookup;
mod suppression_upgrade;
mod suppressions;
mod thread_join;
mod threads;
mod throughput;
mod timeline;
mod transitions;
mod turns;
mod warmup;

pub use suppression_upgrade::SuppressionUpgrade;

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::Client;

pub use super::sqs::BulkRef;
pub use bulk::{FanOut, FanOutError};
pub use counters::StreamEvent;

use super::settings::{required, Tables};
use super::sqs::SqsLanes;
use crate::ports::StoreError;

/// Idempotency keys live at least 24 h (Stripe); they are kept 48 h.
const IDEMPOTENCY_TTL: Duration = Duration::from_secs(48 * 3600);

/// How long an instance trusts an absent marker before it reads it again.
const MARKER_RECHECK: Duration = Duration::from_secs(60);

/// Whether a one-way marker (set once, by `herald upgrade`) is set, as this instance last saw
/// it: once seen it stays so; while absent, it is read again after [`MARKER_RECHECK`].
#[derive(Default)]
pub(crate) struct MarkerSeen(parking_lot::Mutex<Option<(bool, std::time::Instant)>>);

impl MarkerSeen {
    async fn get<F: std::future::Future<Output = bool>>(&self, read: impl FnOnce() -> F) -> bool {
        if let Some((set, at)) = *self.0.lock() {
            if set || at.elapsed() < MARKER_RECHECK {
                return set;
            }
        }
        let set = read().await;
        *self.0.lock() = Some((set, std::time::Instant::now()));
        set
    }
}

pub struct DynamoStore {
    client: Client,
    tables: Tables,
    /// Accept and redrive put what they stored on its lane.
    lanes: Arc<SqsLanes>,
    retention: Duration,
    pauses: limits::PauseCache,
    pending_outcomes: health::PendingOutcomes,
    lookups: MarkerSeen,
    claims_marker: MarkerSeen,
    jobs: job_messages::JobsSeen,
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
            lookups: Default::default(),
            claims_marker: Default::default(),
            jobs: Default::default(),
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

    pub(super) fn rate_limits_table(&self) -> Result<&str, StoreError> {
        required(&self.tables.rate_limits, super::settings::RATE_LIMITS_TABLE)
    }

    fn audit_table(&self) -> Result<&str, StoreError> {
        required(&self.tables.audit, super::settings::AUDIT_TABLE)
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

/// Reads a Query page after page until `limit` items (a page also ends at 1 MB, or before a
/// filter has kept enough), starting where `query` says.
pub(crate) async fn query_up_to<T>(
    mut query: aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder,
    limit: usize,
    read: impl Fn(&item::Item) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut found = Vec::new();
    while found.len() < limit {
        let out = query
            .clone()
            .limit((limit - found.len()).clamp(1, 1000) as i32)
            .send()
            .await
            .map_err(|e| unavailable("Query", e))?;
        for item in out.items().iter().take(limit - found.len()) {
            found.push(read(item)?);
        }
        match out.last_evaluated_key {
            Some(k) if !k.is_empty() => query = query.set_exclusive_start_key(Some(k)),
            _ => break,
        }
    }
    Ok(found)
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

/// A conditional write's result: true when it applied, false when its condition refused it.
pub(crate) fn applied<T, E, R>(
    result: Result<T, aws_sdk_dynamodb::error::SdkError<E, R>>,
    op: &str,
) -> Result<bool, StoreError>
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match result {
        Ok(_) => Ok(true),
        Err(e) if condition_failed(&e) => Ok(false),
        Err(e) => Err(unavailable(op, e)),
    }
}

/// What a conditional UpdateItem did.
pub(crate) enum Updated {
    /// It applied; the attributes it asked for (`ReturnValues`), if any.
    Applied(Option<item::Item>),
    /// Its condition refused it; the item as it was, when it asked for it
    /// (`ReturnValuesOnConditionCheckFailure::AllOld`) and there is one.
    Refused(Option<item::Item>),
}

/// Reads a conditional UpdateItem's result: a refusal is an answer, not a failure.
pub(crate) fn updated<R>(
    result: Result<
        aws_sdk_dynamodb::operation::update_item::UpdateItemOutput,
        aws_sdk_dynamodb::error::SdkError<
            aws_sdk_dynamodb::operation::update_item::UpdateItemError,
            R,
        >,
    >,
) -> Result<Updated, StoreError>
where
    R: std::fmt::Debug + Send + Sync + 'static,
{
    use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
    match result {
        Ok(out) => Ok(Updated::Applied(out.attributes)),
        Err(e) if condition_failed(&e) => match e.into_service_error() {
            UpdateItemError::ConditionalCheckFailedException(c) => Ok(Updated::Refused(c.item)),
            _ => Ok(Updated::Refused(None)),
        },
        Err(e) => Err(unavailable("UpdateItem", e)),
    }
}

/// Whether a transaction was cancelled by the condition of one of its items: the one at
/// `index`, or the last when `None`.
pub(crate) fn cancelled_by_condition<R>(
    e: &aws_sdk_dynamodb::error::SdkError<
        aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError,
        R,
    >,
    index: Option<usize>,
) -> bool {
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
    let Some(TransactWriteItemsError::TransactionCanceledException(c)) = e.as_service_error()
    else {
        return false;
    };
    let reasons = c.cancellation_reasons();
    let reason = match index {
        Some(i) => reasons.get(i),
        None => reasons.last(),
    };
    reason.and_then(|r| r.code()) == Some("ConditionalCheckFailed")
}

impl DynamoStore {
    /// Writes `items` in one transaction: false when it was cancelled (a condition failed, or
    /// another write to one of its items came between), for the caller to read again.
    pub(crate) async fn transact(
        &self,
        items: Vec<aws_sdk_dynamodb::types::TransactWriteItem>,
    ) -> Result<bool, StoreError> {
        let written = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await;
        match written {
            Ok(_) => Ok(true),
            Err(e) if transaction_cancelled(&e) => Ok(false),
            Err(e) => Err(unavailable("TransactWriteItems", e)),
        }
    }

    /// Writes a transaction, again while other writes come between: false when the condition
    /// of its item at `conditional` refused it.
    pub(crate) async fn transact_retrying(
        &self,
        items: Vec<aws_sdk_dynamodb::types::TransactWriteItem>,
        conditional: Option<usize>,
    ) -> Result<bool, StoreError> {
        for attempt in 0..batch::TRIES {
            if attempt > 0 {
                tokio::time::sleep(batch::backoff(attempt)).await;
            }
            let result = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .send()
                .await;
            match result {
                Ok(_) => return Ok(true),
                Err(e) if conditional.is_some() && cancelled_by_condition(&e, conditional) => {
                    return Ok(false)
                }
                Err(e) if worth_retrying(&e) => continue,
                Err(e) => return Err(unavailable("TransactWriteItems", e)),
            }
        }
        Err(StoreError::Unavailable(
            "a transaction kept conflicting with other writes".into(),
        ))
    }
}

/// Whether a cancelled transaction may go through when tried again: another write to one of
/// its items came between, or DynamoDB throttled it (not a refused condition, not an item
/// grown past its limit).
fn worth_retrying<R>(
    e: &aws_sdk_dynamodb::error::SdkError<
        aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError,
        R,
    >,
) -> bool {
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
    let Some(TransactWriteItemsError::TransactionCanceledException(c)) = e.as_service_error()
    else {
        return false;
    };
    c.cancellation_reasons().iter().any(|r| {
        matches!(
            r.code(),
            Some("TransactionConflict" | "ThrottlingError" | "ProvisionedThroughputExceeded")
        )
    })
}

/// Whether a transaction was cancelled (by a condition or a conflicting write), rather than
/// failing on the store.
pub(crate) fn transaction_cancelled<R>(
    e: &aws_sdk_dynamodb::error::SdkError<
        aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError,
        R,
    >,
) -> bool {
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
    matches!(
        e.as_service_error(),
        Some(TransactWriteItemsError::TransactionCanceledException(_))
    )
}

fn epoch_seconds(t: chrono::DateTime<chrono::Utc>) -> i64 {
    t.timestamp()
}
