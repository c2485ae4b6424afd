//! The distributed rate limiter: one atomic conditional counter per bucket per one-second slice
//! (`rate_limits` table, PK `pk` = `slice#<bucket>#<slice>`, TTL `expires_at`), so every Lambda
//! instance draws on the same tokens. A provider's Retry-After is a `pause#<bucket>` item,
//! cached in each instance for a second.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rand::Rng;

use super::item::{ms, n, opt_n, s};
use super::{condition_failed, epoch_seconds, unavailable, DynamoStore};
use crate::domain::limits::BucketSpec;
use crate::domain::Priority;
use crate::ports::{Grant, RateLimiter, StoreError};

pub(super) const SLICE_MS: i64 = 1000;
/// How long an instance trusts what it read about a pause.
const PAUSE_CACHE: Duration = Duration::from_secs(1);

/// What an instance knows of each bucket's pause: when it looked, and until when it is paused.
pub(crate) type PauseCache = parking_lot::Mutex<HashMap<String, (Instant, Option<DateTime<Utc>>)>>;

impl DynamoStore {
    async fn paused_until(
        &self,
        table: &str,
        key: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        if let Some((seen, until)) = self.pauses.lock().get(key) {
            if seen.elapsed() < PAUSE_CACHE {
                return Ok(*until);
            }
        }
        let out = self
            .client
            .get_item()
            .table_name(table)
            .key("pk", s(format!("pause#{key}")))
            .send()
            .await
            .map_err(|e| unavailable("GetItem", e))?;
        let until = match out.item {
            Some(item) => opt_n::<i64>(&item, "until")?.and_then(DateTime::from_timestamp_millis),
            None => None,
        };
        self.pauses
            .lock()
            .insert(key.to_owned(), (Instant::now(), until));
        Ok(until)
    }

    /// How long the longest pause among `buckets` still runs, if any does.
    async fn pause_of(
        &self,
        table: &str,
        buckets: &[BucketSpec],
        now: DateTime<Utc>,
    ) -> Result<Option<Duration>, StoreError> {
        let mut pause = Duration::ZERO;
        for b in buckets {
            if let Some(until) = self.paused_until(table, &b.key).await?.filter(|u| *u > now) {
                pause = pause.max((until - now).to_std().unwrap_or_default());
            }
        }
        Ok((!pause.is_zero()).then_some(pause))
    }

    /// Takes one token from this slice's counter; false when the slice is used up.
    async fn take(
        &self,
        table: &str,
        pk: &str,
        limit: i64,
        slice_end: i64,
    ) -> Result<bool, StoreError> {
        Ok(self.take_up_to(table, pk, limit, 1, slice_end).await? == 1)
    }

    /// Gives back tokens taken from other buckets when one bucket gave fewer: (slice, count).
    pub(super) async fn give_back(&self, table: &str, taken: &[(String, i64)]) {
        for (pk, count) in taken.iter().filter(|(_, c)| *c > 0) {
            let result = self
                .client
                .update_item()
                .table_name(table)
                .key("pk", s(pk))
                .update_expression("ADD #n :minus")
                .expression_attribute_names("#n", "n")
                .expression_attribute_values(":minus", n(-count))
                .send()
                .await;
            if let Err(e) = result {
                tracing::warn!(error = %unavailable("UpdateItem", e), "rate token not given back");
            }
        }
    }
}

#[async_trait]
impl RateLimiter for DynamoStore {
    async fn acquire(
        &self,
        buckets: &[BucketSpec],
        lane: Priority,
        bulk_share: f64,
    ) -> Result<Grant, StoreError> {
        let table = self.rate_limits_table()?;
        let now = Utc::now();
        if let Some(pause) = self.pause_of(table, buckets, now).await? {
            return Ok(Grant::Wait(pause));
        }
        let now_ms = ms(now);
        let slice = now_ms.div_euclid(SLICE_MS);
        let slice_end = (slice + 1) * SLICE_MS;
        let mut taken = Vec::new();
        for b in buckets.iter().filter(|b| !b.rate.is_unlimited()) {
            let limit = slice_limit(b, lane, bulk_share);
            let pk = format!("slice#{}#{slice}", b.key);
            if self.take(table, &pk, limit, slice_end).await? {
                taken.push((pk, 1));
                continue;
            }
            self.give_back(table, &taken).await;
            // Back in the next slice, spread over it so the deferred do not return at once.
            let jitter = rand::thread_rng().gen_range(0..SLICE_MS);
            let wait = (slice_end - now_ms + jitter).max(1) as u64;
            return Ok(Grant::Wait(Duration::from_millis(wait)));
        }
        Ok(Grant::Go)
    }

    async fn acquire_many(
        &self,
        buckets: &[BucketSpec],
        lane: Priority,
        bulk_share: f64,
        want: usize,
    ) -> Result<Vec<Grant>, StoreError> {
        let table = self.rate_limits_table()?;
        let now = Utc::now();
        if let Some(pause) = self.pause_of(table, buckets, now).await? {
            return Ok(spread_over_a_slice(pause, want));
        }
        self.take_for_batch(table, buckets, lane, bulk_share, want, now)
            .await
    }

    async fn pause(&self, key: &str, until: DateTime<Utc>) -> Result<(), StoreError> {
        let table = self.rate_limits_table()?;
        let result = self
            .client
            .put_item()
            .table_name(table)
            .item("pk", s(format!("pause#{key}")))
            .item("until", n(ms(until)))
            .item("expires_at", n(epoch_seconds(until) + 3600))
            // A shorter pause never cuts a longer one short.
            .condition_expression("attribute_not_exists(#u) OR #u < :until")
            .expression_attribute_names("#u", "until")
            .expression_attribute_values(":until", n(ms(until)))
            .send()
            .await;
        match result {
            Ok(_) => {}
            Err(e) if condition_failed(&e) => {}
            Err(e) => return Err(unavailable("PutItem", e)),
        }
        self.pauses
            .lock()
            .insert(key.to_owned(), (Instant::now(), Some(until)));
        Ok(())
    }
}

/// A bucket's tokens per slice for `lane`: the bulk lanes get their share of it.
pub(super) fn slice_limit(b: &BucketSpec, lane: Priority, bulk_share: f64) -> i64 {
    let per_slice = b.rate.per_second * SLICE_MS as f64 / 1000.0;
    let share = if lane.is_bulk() { bulk_share } else { 1.0 };
    ((per_slice * share).floor() as i64).max(1)
}

/// Paused receipts come back after the pause, spread over a slice rather than at once.
fn spread_over_a_slice(pause: Duration, count: usize) -> Vec<Grant> {
    let mut rng = rand::thread_rng();
    (0..count)
        .map(|_| Grant::Wait(pause + Duration::from_millis(rng.gen_range(0..SLICE_MS as u64))))
        .collect()
}
