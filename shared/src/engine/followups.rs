//! Follow-ups: when a thread's `next_followup_at` passes, `thread.followup_due` is announced
//! to the tenant's endpoints and event streams, once per follow-up time (the store marks it
//! announced in the same step). Embedded, a loop looks every `followup_interval`; on AWS the
//! health checker's one-minute schedule does.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use super::Herald;
use crate::ports::StoreError;

/// Follow-ups read per round.
const BATCH: usize = 100;
/// Rounds per sweep at most: a sweep ends even if the store keeps showing announced ones.
const ROUNDS: usize = 50;

impl Herald {
    /// Announces every follow-up due by `now` that was not announced; returns how many were.
    pub async fn fire_followups(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let mut fired = 0;
        for _ in 0..ROUNDS {
            let due = self.threads.followups_due(now, BATCH).await?;
            let mut fired_now = 0;
            for t in &due {
                if self.threads.fire_followup(t).await? {
                    tracing::info!(tenant = %t.tenant, thread = %t.id, "follow-up due announced");
                    fired_now += 1;
                }
            }
            fired += fired_now;
            // A round that announced nothing is reading what was announced already (an
            // index that lags): the next sweep goes on.
            if due.len() < BATCH || fired_now == 0 {
                break;
            }
        }
        if fired > 0 {
            metrics::counter!("herald_followups_due_total").increment(fired as u64);
        }
        Ok(fired)
    }
}

/// The embedded sweep, until shutdown.
pub async fn run(herald: Arc<Herald>, shutdown: watch::Receiver<bool>) {
    let every = herald.config.followup_interval;
    super::maintenance::repeat(every, shutdown, || async {
        if let Err(e) = herald.fire_followups(Utc::now()).await {
            tracing::warn!(error = %e, "follow-up sweep failed; trying again");
        }
    })
    .await;
}
