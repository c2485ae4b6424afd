//! Gateway health in process (the embedded mode's health store): recent outcomes per gateway
//! and the statuses the health checker computes.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;

pub use crate::domain::health::Outcome;
use crate::domain::health::{GatewayStatus, OutcomeCounts};
use crate::ports::{HealthStore, StoreError};

/// Outcomes kept per gateway: the last five minutes, at most this many.
const KEEP: usize = 2_000;
const WINDOW: Duration = Duration::from_secs(300);

/// A gateway's recent outcomes: when, what, how long.
type Recent = VecDeque<(DateTime<Utc>, Outcome, Duration)>;

#[derive(Default)]
pub struct InMemoryHealth {
    outcomes: Mutex<HashMap<String, Recent>>,
    statuses: Mutex<HashMap<String, GatewayStatus>>,
}

#[async_trait]
impl HealthStore for InMemoryHealth {
    fn record(&self, gateway: &str, outcome: Outcome, latency: Duration) {
        let now = Utc::now();
        let mut all = self.outcomes.lock();
        let recent = all.entry(gateway.to_owned()).or_default();
        recent.push_back((now, outcome, latency));
        let oldest = now - chrono::Duration::from_std(WINDOW).unwrap_or_default();
        while recent.len() > KEEP || recent.front().is_some_and(|(at, ..)| *at < oldest) {
            recent.pop_front();
        }
    }

    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn window(
        &self,
        gateway: &str,
        since: DateTime<Utc>,
    ) -> Result<OutcomeCounts, StoreError> {
        let mut counts = OutcomeCounts::default();
        if let Some(recent) = self.outcomes.lock().get(gateway) {
            for (_, outcome, latency) in recent.iter().filter(|(at, ..)| *at >= since) {
                counts.add(*outcome, *latency);
            }
        }
        Ok(counts)
    }

    async fn put_status(&self, status: &GatewayStatus) -> Result<(), StoreError> {
        self.statuses
            .lock()
            .insert(status.gateway.clone(), status.clone());
        Ok(())
    }

    async fn statuses(&self) -> Result<Vec<GatewayStatus>, StoreError> {
        Ok(self.statuses.lock().values().cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn windows_count_outcomes_since_a_time() {
        let h = InMemoryHealth::default();
        let before = Utc::now() - chrono::Duration::seconds(1);
        for _ in 0..3 {
            h.record("g", Outcome::Transient, Duration::from_millis(1));
        }
        h.record("g", Outcome::Success, Duration::from_millis(1));
        let all = h.window("g", before).await.unwrap();
        assert_eq!((all.transient, all.success), (3, 1));
        let later = h
            .window("g", Utc::now() + chrono::Duration::seconds(1))
            .await
            .unwrap();
        assert_eq!(later.total(), 0);
        assert_eq!(h.window("other", before).await.unwrap().total(), 0);
    }
}
