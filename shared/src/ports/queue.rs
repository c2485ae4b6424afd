use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::{ClaimOutcome, StoreError, Transition, TransitionOutcome};
use crate::domain::limits::PaceKey;
use crate::domain::{MessageId, Priority, TenantId};

/// One receipt of a queued message, SQS style: it stays invisible to other consumers until
/// `visibility` runs out, then comes back unless acknowledged.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Opaque handle to acknowledge or re-time this receipt.
    pub receipt: String,
    pub message_id: MessageId,
    pub tenant: String,
    pub lane: Priority,
    /// 1 on the first receipt.
    pub receive_count: u32,
    /// A scheduled send that the queue may deliver early (SQS delays at most 15 minutes).
    pub not_before: Option<DateTime<Utc>>,
    /// The buckets its send takes from, where the entry says (tokens before the claim).
    pub pace: Option<PaceKey>,
    /// The stored bulk job's part its message is rendered from, when the fan-out left the
    /// message unwritten for the claim to create (DynamoDB: docs/dynamodb.md).
    pub job_part: Option<u32>,
}

/// What `retry_after` did with a receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redelivery {
    /// The same receipt comes back after the delay: do not acknowledge it.
    SameReceipt,
    /// A fresh entry was queued (SQS: a receipt near its queue's maxReceiveCount would go to the
    /// DLQ on its next receive): acknowledge the old receipt.
    Requeued,
}

/// What is put on a lane: a reference to a stored message, never its content.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LaneRef {
    pub id: MessageId,
    pub tenant: String,
    pub lane: Priority,
    /// Attempts made before this entry was queued.
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pace: Option<PaceKey>,
    /// See [`Delivery::job_part`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_part: Option<u32>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LaneStats {
    pub lane: Priority,
    /// Messages waiting, visible or scheduled, not counting in-flight ones.
    pub depth: u64,
    /// Received by a worker and not yet acknowledged.
    pub in_flight: u64,
    /// Age in seconds of the oldest message that is due now, 0 when none; null where the queue
    /// cannot tell (SQS publishes it only as the CloudWatch metric ApproximateAgeOfOldestMessage).
    pub oldest_age_seconds: Option<f64>,
    /// Due in the future (scheduled sends, back-off).
    pub delayed: u64,
}

/// A durable queue per lane (SQLite table embedded, SQS on AWS). Messages on it are references
/// (id, tenant, lane), never the content.
#[async_trait]
pub trait LaneQueue: Send + Sync + 'static {
    /// Up to `max` due messages of one lane, oldest first, hidden for `visibility`.
    async fn receive(
        &self,
        lane: Priority,
        max: usize,
        visibility: Duration,
    ) -> Result<Vec<Delivery>, StoreError>;
    /// Receives as `receive` and claims what it received (as `MessageStore::claim_many`, with
    /// `lease`) in one unit of work, when the queue and the message store are one database
    /// (the embedded SQLite: one job and one commit instead of two per batch). `None` when they
    /// are apart (SQS and DynamoDB): the caller receives, then claims.
    async fn receive_claimed(
        &self,
        _lane: Priority,
        _max: usize,
        _visibility: Duration,
        _lease: Duration,
    ) -> Result<Option<Vec<(Delivery, ClaimOutcome)>>, StoreError> {
        Ok(None)
    }
    /// For an idle worker of a priority lane: `receive_claimed`, run only together with the
    /// lane's next accept (or bulk chunk) and in its commit, so the worker gets a message
    /// the moment its accept is durable, without waiting for a commit of its own. Nothing when
    /// `give_up` comes first (the look is taken back, or its result awaited if it is already
    /// running). What it receives is hidden, and claimed, for `lease`. Where the queue cannot
    /// (SQS, and the bulk lanes), it only waits for `give_up`.
    async fn receive_claimed_with_next(
        &self,
        _lane: Priority,
        _max: usize,
        _lease: Duration,
        give_up: futures::future::BoxFuture<'_, ()>,
    ) -> Result<Vec<(Delivery, ClaimOutcome)>, StoreError> {
        give_up.await;
        Ok(Vec::new())
    }
    /// Records a batch's outcomes (as `MessageStore::transition`) and removes `receipts` in one
    /// unit of work, when the queue and the message store are one database (one job and one
    /// commit instead of two per batch). The receipts go only if the outcomes are recorded.
    /// `None` when they are apart: the caller records, then acks.
    async fn record_and_ack(
        &self,
        _lane: Priority,
        _outcomes: &[Transition],
        _receipts: &[String],
    ) -> Result<Option<Vec<TransitionOutcome>>, StoreError> {
        Ok(None)
    }
    /// Removes handled receipts.
    async fn ack(&self, lane: Priority, receipts: Vec<String>) -> Result<(), StoreError>;
    /// Makes a delivery visible again after `delay` (retry back-off, throttles, early scheduled
    /// sends).
    async fn retry_after(
        &self,
        delivery: &Delivery,
        delay: Duration,
    ) -> Result<Redelivery, StoreError>;
    /// `retry_after` for many receipts of one lane at once (SQS: one request per ten). One
    /// answer per delivery, in order.
    async fn retry_many(
        &self,
        retries: &[(Delivery, Duration)],
    ) -> Vec<Result<Redelivery, StoreError>> {
        let mut out = Vec::with_capacity(retries.len());
        for (d, delay) in retries {
            out.push(self.retry_after(d, *delay).await);
        }
        out
    }
    /// Per lane; with `tenant`, only that tenant's messages where the backend can tell them
    /// apart (see [`LaneQueue::stats_per_tenant`]), else every tenant's together.
    async fn stats(
        &self,
        now: DateTime<Utc>,
        tenant: Option<&TenantId>,
    ) -> Result<Vec<LaneStats>, StoreError>;
    /// Whether `stats` can count one tenant's messages (SQS counts whole queues only).
    fn stats_per_tenant(&self) -> bool;
}
