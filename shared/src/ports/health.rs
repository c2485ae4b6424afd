use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreError;
use crate::domain::health::{GatewayStatus, Outcome, OutcomeCounts};

/// Gateway outcomes and the statuses the health checker computes from them: in process
/// embedded; shared counters and status items in DynamoDB on AWS, where every dispatcher
/// records and reads them.
#[async_trait]
pub trait HealthStore: Send + Sync + 'static {
    /// Counts one outcome (buffered where the store is remote: see `flush`).
    fn record(&self, gateway: &str, outcome: Outcome, latency: Duration);
    /// Writes buffered counts when due (a Lambda invocation's, before it returns; DynamoDB
    /// writes failures at once and successes alone at most every 30 s).
    async fn flush(&self) -> Result<(), StoreError>;
    /// A gateway's outcomes since `since` (over the store's window at most).
    async fn window(
        &self,
        gateway: &str,
        since: DateTime<Utc>,
    ) -> Result<OutcomeCounts, StoreError>;
    async fn put_status(&self, status: &GatewayStatus) -> Result<(), StoreError>;
    async fn statuses(&self) -> Result<Vec<GatewayStatus>, StoreError>;
}
