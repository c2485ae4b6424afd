use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreError;
use crate::domain::limits::BucketSpec;
use crate::domain::Priority;

/// A limiter's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// A token was taken from every bucket: send now.
    Go,
    /// Come back then; nothing was taken.
    Wait(Duration),
}

/// Token buckets shared by everything that sends (in process embedded; DynamoDB counters
/// across Lambda instances on AWS).
#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Takes one token from every bucket, or none. The bulk lanes (P2, P3) may only use
    /// `bulk_share` of a bucket, so P0, P1 and P4 always find tokens.
    async fn acquire(
        &self,
        buckets: &[BucketSpec],
        lane: Priority,
        bulk_share: f64,
    ) -> Result<Grant, StoreError>;
    /// Tokens for `n` sends at once (a consumer's batch, before it claims any): one grant per
    /// send, in order. Those without a token are given turns at the buckets' pace, so they come
    /// back when a token will be there rather than all at once.
    async fn acquire_many(
        &self,
        buckets: &[BucketSpec],
        lane: Priority,
        bulk_share: f64,
        n: usize,
    ) -> Result<Vec<Grant>, StoreError> {
        let mut grants = Vec::with_capacity(n);
        for _ in 0..n {
            grants.push(self.acquire(buckets, lane, bulk_share).await?);
        }
        Ok(grants)
    }
    /// Stops a bucket until `until` (a provider's Retry-After).
    async fn pause(&self, key: &str, until: DateTime<Utc>) -> Result<(), StoreError>;
}
