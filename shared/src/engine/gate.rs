//! P0 first on shared budgets: while messages of the priority lanes (P0, P1, P4) are accepted
//! and not yet claimed, bulk-lane workers (P2, P3) finish the hand-off they are in and wait
//! before starting another. So a priority message waits behind at most one bulk hand-off per
//! bulk worker, and does not compete with the bulk backlog for the store's writer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use crate::domain::Priority;

/// A bulk worker never waits longer than this at a time: a count that drifted (a message
/// cancelled or claimed by another process) cannot stall the bulk lanes.
const MAX_YIELD: Duration = Duration::from_millis(50);

#[derive(Default)]
pub(crate) struct PriorityGate {
    waiting: AtomicU64,
    clear: Notify,
}

impl PriorityGate {
    /// `n` messages became due on `lane`.
    pub(crate) fn arrived(&self, lane: Priority, n: usize) {
        if !lane.is_bulk() && n > 0 {
            self.waiting.fetch_add(n as u64, Ordering::SeqCst);
        }
    }

    /// A priority-lane worker made its first claim attempt on a message.
    pub(crate) fn claimed(&self, lane: Priority) {
        self.withdrawn(lane, 1);
    }

    /// `n` messages counted by `arrived` are not waiting after all (their accept stored
    /// nothing new), or were claimed.
    pub(crate) fn withdrawn(&self, lane: Priority, n: usize) {
        if lane.is_bulk() || n == 0 {
            return;
        }
        let n = n as u64;
        let before = self
            .waiting
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| {
                Some(w.saturating_sub(n))
            });
        if before.is_ok_and(|w| w <= n) {
            self.clear.notify_waiters();
        }
    }

    pub(crate) async fn yield_to_priority_lanes(&self) {
        if self.waiting.load(Ordering::SeqCst) == 0 {
            return;
        }
        let cleared = self.clear.notified();
        tokio::pin!(cleared);
        cleared.as_mut().enable();
        if self.waiting.load(Ordering::SeqCst) == 0 {
            return;
        }
        let _ = tokio::time::timeout(MAX_YIELD, cleared).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bulk_waits_until_priority_work_is_claimed() {
        let gate = std::sync::Arc::new(PriorityGate::default());
        gate.arrived(Priority::P3, 100);
        tokio::time::timeout(Duration::from_millis(5), gate.yield_to_priority_lanes())
            .await
            .expect("bulk arrivals do not block bulk lanes");

        gate.arrived(Priority::P0, 1);
        let g = gate.clone();
        let waiter = tokio::spawn(async move {
            let t = std::time::Instant::now();
            g.yield_to_priority_lanes().await;
            t.elapsed()
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        gate.claimed(Priority::P0);
        let waited = waiter.await.unwrap();
        assert!(
            waited >= Duration::from_millis(9) && waited < MAX_YIELD,
            "waited {waited:?}"
        );
    }

    /// Accepts that stored nothing new (an idempotent replay, a failed store) take their count
    /// back, all of it.
    #[tokio::test]
    async fn withdrawn_arrivals_do_not_hold_bulk_lanes() {
        let gate = PriorityGate::default();
        gate.arrived(Priority::P0, 3);
        gate.withdrawn(Priority::P0, 2);
        gate.claimed(Priority::P0);
        tokio::time::timeout(Duration::from_millis(5), gate.yield_to_priority_lanes())
            .await
            .expect("nothing waits");
    }

    #[tokio::test]
    async fn a_drifted_count_only_slows_bulk_lanes_down() {
        let gate = PriorityGate::default();
        gate.arrived(Priority::P4, 1);
        let t = std::time::Instant::now();
        gate.yield_to_priority_lanes().await;
        assert!(t.elapsed() >= MAX_YIELD);
    }
}
