//! The embedded notifier: writes queued events to the outbox, fans each out to the endpoints
//! that want it, and delivers what is due, oldest first per endpoint, retrying on the
//! schedule until success, 410 Gone, or the schedule's end.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use tokio::sync::{watch, Notify};

use super::deliver::Notifier;
use super::Snapshot;
use crate::domain::notify::Notice;
use crate::engine::Herald;
use crate::ports::{PolledOutbox, Queued, WebhookDelivery, WebhookStore};

/// Outbox events fanned out per round, and due deliveries taken per round.
const ROUND: usize = 256;
/// Endpoints delivered to at once.
const PARALLEL_ENDPOINTS: usize = 16;

/// Runs until `shutdown`: the outbox writer and the delivery loop.
pub async fn run(
    herald: Arc<Herald>,
    outbox: Arc<dyn PolledOutbox>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Some(store) = herald.webhooks.clone() else {
        return;
    };
    let wake = Arc::new(Notify::new());
    if let Some(rx) = herald.outbox.rx.lock().take() {
        herald.outbox.running.store(true, Ordering::Release);
        tokio::spawn(write_outbox(store.clone(), rx, wake.clone()));
    }
    let notifier = Notifier::new(&herald.config.notify);
    loop {
        let busy = round(&herald, store.as_ref(), outbox.as_ref(), &notifier).await;
        if *shutdown.borrow() {
            return;
        }
        if !busy {
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(herald.config.notify.poll) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Writes what the engine queued to the outbox, many events per write.
async fn write_outbox(
    store: Arc<dyn WebhookStore>,
    mut rx: tokio::sync::mpsc::Receiver<Vec<Notice>>,
    wake: Arc<Notify>,
) {
    while let Some(mut batch) = rx.recv().await {
        while batch.len() < ROUND {
            match rx.try_recv() {
                Ok(more) => batch.extend(more),
                Err(_) => break,
            }
        }
        let mut tries = 0;
        while let Err(e) = store.publish(batch.clone()).await {
            tries += 1;
            if tries == 5 {
                metrics::counter!("herald_webhook_events_dropped_total")
                    .increment(batch.len() as u64);
                tracing::error!(error = %e, events = batch.len(), "events not written to the outbox");
                break;
            }
            tokio::time::sleep(Duration::from_millis(200 * tries)).await;
        }
        wake.notify_one();
    }
}

/// One round: fan out, then deliver what is due. True when there may be more to do now.
async fn round(
    herald: &Herald,
    store: &dyn WebhookStore,
    outbox: &dyn PolledOutbox,
    notifier: &Notifier,
) -> bool {
    let Some(snapshot) = herald
        .refresh_subscriptions(herald.config.notify.subscriptions_refresh)
        .await
    else {
        return false;
    };
    let fanned = match outbox.outbox(ROUND).await {
        Ok(queued) if !queued.is_empty() => {
            fan_out(herald, outbox, notifier, &snapshot, queued).await
        }
        Ok(_) => 0,
        Err(e) => {
            tracing::warn!(error = %e, "outbox not read");
            0
        }
    };
    let due = match outbox.due_deliveries(Utc::now(), ROUND).await {
        Ok(due) => due,
        Err(e) => {
            tracing::warn!(error = %e, "due deliveries not read");
            Vec::new()
        }
    };
    let delivered = due.len();
    deliver_all(herald, store, notifier, &snapshot, due).await;
    fanned == ROUND || delivered == ROUND
}

async fn fan_out(
    herald: &Herald,
    outbox: &dyn PolledOutbox,
    notifier: &Notifier,
    snapshot: &Snapshot,
    queued: Vec<Queued>,
) -> usize {
    let count = queued.len();
    let mut done = Vec::with_capacity(count);
    let mut deliveries = Vec::new();
    for q in queued {
        done.push(q.seq);
        deliveries.extend(notifier.deliveries_for(herald, snapshot, &q.notice).await);
    }
    if let Err(e) = outbox.fan_out(done, deliveries).await {
        tracing::warn!(error = %e, "events not fanned out; tried again next round");
        return 0;
    }
    count
}

/// Delivers due deliveries: endpoints side by side, each endpoint's in order.
async fn deliver_all(
    herald: &Herald,
    store: &dyn WebhookStore,
    notifier: &Notifier,
    snapshot: &Snapshot,
    due: Vec<WebhookDelivery>,
) {
    let mut by_endpoint: BTreeMap<_, Vec<WebhookDelivery>> = BTreeMap::new();
    for d in due {
        by_endpoint.entry(d.endpoint).or_default().push(d);
    }
    futures::stream::iter(by_endpoint.into_values())
        .for_each_concurrent(PARALLEL_ENDPOINTS, |group| async move {
            let Some(ep) = group
                .first()
                .and_then(|d| snapshot.endpoints.iter().find(|e| e.id == d.endpoint))
            else {
                return;
            };
            for d in group {
                if !notifier.deliver(herald, store, ep, &d).await.endpoint_on {
                    return;
                }
            }
        })
        .await;
}
