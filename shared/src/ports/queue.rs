use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::StoreError;
use crate::domain::{MessageId, Priority};

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
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LaneStats {
    pub lane: Priority,
    /// Messages waiting, visible or scheduled, not counting in-flight ones.
    pub depth: u64,
    /// Received by a worker and not yet acknowledged.
    pub in_flight: u64,
    /// Age in seconds of the oldest message that is due now, 0 when none.
    pub oldest_age_seconds: f64,
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
    /// Removes handled receipts.
    async fn ack(&self, lane: Priority, receipts: Vec<String>) -> Result<(), StoreError>;
    /// Makes a receipt visible again after `delay` (retry back-off, throttles).
    async fn retry_after(
        &self,
        lane: Priority,
        receipt: String,
        delay: Duration,
    ) -> Result<(), StoreError>;
    async fn stats(&self, now: DateTime<Utc>) -> Result<Vec<LaneStats>, StoreError>;
}
