//! In-process token buckets (the embedded mode's rate limiter). Their state can be snapshotted
//! and restored, so a restart keeps the pace instead of starting every bucket full.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;

use crate::domain::limits::BucketSpec;
use crate::domain::Priority;
use crate::ports::{Grant, RateLimiter, StoreError};

/// One bucket's state, as persisted.
#[derive(Debug, Clone, PartialEq)]
pub struct BucketState {
    pub key: String,
    pub tokens: f64,
    pub updated_at: DateTime<Utc>,
    pub paused_until: Option<DateTime<Utc>>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated_at: DateTime<Utc>,
    paused_until: Option<DateTime<Utc>>,
    /// When the last deferred send was told to come back: the next one is told to come back
    /// one token later, so deferred sends return spread out instead of all at once.
    horizon: DateTime<Utc>,
}

#[derive(Default)]
pub struct TokenBuckets {
    buckets: Mutex<HashMap<String, Bucket>>,
}

fn secs(d: chrono::Duration) -> f64 {
    d.num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6
}

fn duration(seconds: f64) -> Duration {
    Duration::from_secs_f64(seconds.clamp(0.0, 24.0 * 3600.0))
}

impl TokenBuckets {
    pub fn new() -> TokenBuckets {
        TokenBuckets::default()
    }

    /// The decision for `now` (tests pass their own clock).
    pub fn acquire_at(
        &self,
        buckets: &[BucketSpec],
        lane: Priority,
        bulk_share: f64,
        now: DateTime<Utc>,
    ) -> Grant {
        if buckets.is_empty() {
            return Grant::Go;
        }
        let mut all = self.buckets.lock();
        let mut wait = 0.0f64;
        for spec in buckets {
            let capacity = spec.rate.capacity();
            let b = all.entry(spec.key.clone()).or_insert_with(|| Bucket {
                tokens: capacity,
                updated_at: now,
                paused_until: None,
                horizon: now,
            });
            let elapsed = secs(now - b.updated_at).max(0.0);
            b.tokens = (b.tokens + elapsed * spec.rate.per_second).min(capacity);
            b.updated_at = now;
            if let Some(until) = b.paused_until.filter(|u| *u > now) {
                wait = wait.max(secs(until - now));
            }
            // A bulk send leaves the bucket's last (1 - share) to the priority lanes.
            let reserve = if lane.is_bulk() {
                (1.0 - bulk_share) * capacity
            } else {
                0.0
            };
            let needed = 1.0 + reserve;
            if b.tokens < needed {
                wait = wait.max((needed - b.tokens) / spec.rate.per_second);
            }
        }
        if wait <= 0.0 {
            for spec in buckets {
                if let Some(b) = all.get_mut(&spec.key) {
                    b.tokens -= 1.0;
                }
            }
            return Grant::Go;
        }
        // Deferred: spread the returns one token apart on the slowest bucket.
        let mut back = now + chrono::Duration::microseconds((wait * 1e6) as i64);
        for spec in buckets {
            if let Some(b) = all.get_mut(&spec.key) {
                let step = chrono::Duration::microseconds((1e6 / spec.rate.per_second) as i64);
                b.horizon = b.horizon.max(back) + step;
                back = back.max(b.horizon - step);
            }
        }
        Grant::Wait(duration(secs(back - now)).max(Duration::from_millis(1)))
    }

    pub fn pause_at(&self, key: &str, until: DateTime<Utc>, now: DateTime<Utc>) {
        let mut all = self.buckets.lock();
        let b = all.entry(key.to_owned()).or_insert_with(|| Bucket {
            tokens: 0.0,
            updated_at: now,
            paused_until: None,
            horizon: now,
        });
        b.paused_until = Some(b.paused_until.map_or(until, |p| p.max(until)));
    }

    pub fn snapshot(&self) -> Vec<BucketState> {
        self.buckets
            .lock()
            .iter()
            .map(|(key, b)| BucketState {
                key: key.clone(),
                tokens: b.tokens,
                updated_at: b.updated_at,
                paused_until: b.paused_until,
            })
            .collect()
    }

    pub fn restore(&self, states: Vec<BucketState>) {
        let mut all = self.buckets.lock();
        for s in states {
            all.insert(
                s.key,
                Bucket {
                    tokens: s.tokens,
                    updated_at: s.updated_at,
                    paused_until: s.paused_until,
                    horizon: s.updated_at,
                },
            );
        }
    }
}

#[async_trait]
impl RateLimiter for TokenBuckets {
    async fn acquire(
        &self,
        buckets: &[BucketSpec],
        lane: Priority,
        bulk_share: f64,
    ) -> Result<Grant, StoreError> {
        Ok(self.acquire_at(buckets, lane, bulk_share, Utc::now()))
    }

    async fn pause(&self, key: &str, until: DateTime<Utc>) -> Result<(), StoreError> {
        self.pause_at(key, until, Utc::now());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::limits::Rate;

    fn gmail(per_second: f64) -> Vec<BucketSpec> {
        vec![BucketSpec {
            key: "domain:gmail".into(),
            rate: Rate::per_second(per_second),
        }]
    }

    #[test]
    fn a_bucket_paces_sends_and_spreads_the_deferred() {
        let buckets = TokenBuckets::new();
        let t0 = Utc::now();
        let b = gmail(100.0);
        let granted = (0..150)
            .filter(|_| buckets.acquire_at(&b, Priority::P4, 0.8, t0) == Grant::Go)
            .count();
        assert_eq!(granted, 100, "one second's burst");
        let waits: Vec<Duration> = (0..3)
            .map(|_| match buckets.acquire_at(&b, Priority::P4, 0.8, t0) {
                Grant::Wait(w) => w,
                Grant::Go => panic!("empty bucket granted"),
            })
            .collect();
        assert!(
            waits[0] < waits[1] && waits[1] < waits[2],
            "spread: {waits:?}"
        );
        let later = t0 + chrono::Duration::milliseconds(100);
        let refilled = (0..20)
            .filter(|_| buckets.acquire_at(&b, Priority::P4, 0.8, later) == Grant::Go)
            .count();
        assert_eq!(refilled, 10, "100/s for 100 ms");
    }

    #[test]
    fn bulk_leaves_a_share_to_the_priority_lanes() {
        let buckets = TokenBuckets::new();
        let t0 = Utc::now();
        let b = gmail(100.0);
        let bulk = (0..200)
            .filter(|_| buckets.acquire_at(&b, Priority::P3, 0.8, t0) == Grant::Go)
            .count();
        assert_eq!(bulk, 80, "bulk stops at 80% of the bucket");
        let p0 = (0..200)
            .filter(|_| buckets.acquire_at(&b, Priority::P0, 0.8, t0) == Grant::Go)
            .count();
        assert_eq!(p0, 20, "the rest is P0's");
    }

    #[test]
    fn a_pause_holds_every_send_and_state_survives_a_restart() {
        let buckets = TokenBuckets::new();
        let t0 = Utc::now();
        let b = gmail(10.0);
        buckets.pause_at("domain:gmail", t0 + chrono::Duration::seconds(30), t0);
        match buckets.acquire_at(&b, Priority::P0, 0.8, t0) {
            Grant::Wait(w) => assert!(w >= Duration::from_secs(29), "{w:?}"),
            Grant::Go => panic!("paused bucket granted"),
        }
        let restored = TokenBuckets::new();
        restored.restore(buckets.snapshot());
        assert!(matches!(
            restored.acquire_at(&b, Priority::P0, 0.8, t0),
            Grant::Wait(_)
        ));
        let after = t0 + chrono::Duration::seconds(31);
        assert_eq!(restored.acquire_at(&b, Priority::P0, 0.8, after), Grant::Go);
    }
}
