//! Periodic jobs of the embedded mode: retention.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;
use tracing::{info, warn};

use super::Herald;

/// Deletes final messages (and finished webhook deliveries) older than the retention period,
/// and expired idempotency keys.
pub async fn purge_once(herald: &Herald) -> u64 {
    let now = Utc::now();
    let cutoff = now - chrono::Duration::from_std(herald.config.retention).unwrap_or_default();
    let keys_cutoff =
        now - chrono::Duration::from_std(herald.config.idempotency_ttl).unwrap_or_default();
    // Webhook deliveries are kept as long as the messages they tell of.
    if let Some(webhooks) = &herald.webhooks {
        match webhooks.purge_deliveries(cutoff).await {
            Ok(n) if n > 0 => info!(deleted = n, "webhook delivery retention purge"),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "webhook delivery retention purge failed"),
        }
    }
    match herald.media.purge_media(now).await {
        Ok(n) if n > 0 => info!(deleted = n, "media retention purge"),
        Ok(_) => {}
        Err(e) => warn!(error = %e, "media retention purge failed"),
    }
    match herald.store.purge(cutoff, keys_cutoff).await {
        Ok(n) => {
            if n > 0 {
                info!(deleted = n, "retention purge");
            }
            n
        }
        Err(e) => {
            warn!(error = %e, "retention purge failed");
            0
        }
    }
}

pub async fn run_retention(herald: Arc<Herald>, every: Duration, shutdown: watch::Receiver<bool>) {
    repeat(every, shutdown, || async {
        purge_once(&herald).await;
    })
    .await;
}

/// Runs `task` now and then every `every` after it ends, until shutdown: the embedded
/// background loops.
pub(crate) async fn repeat<F, Fut>(every: Duration, mut shutdown: watch::Receiver<bool>, task: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    loop {
        task().await;
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
    }
}
