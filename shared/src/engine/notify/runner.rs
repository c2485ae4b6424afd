//! The embedded notifier: writes queued events to the outbox, fans each out to the endpoints
//! that want it, and delivers what is due, oldest first per endpoint, retrying on the
//! schedule until success, 410 Gone, or the schedule's end.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use std::collections::HashSet;

use chrono::Utc;
use tokio::sync::{watch, Notify};

use super::deliver::Notifier;
use super::Snapshot;
use crate::domain::notify::{EndpointId, Notice};
use crate::engine::Herald;
use crate::ports::{DeliveryState, PolledOutbox, Queued, WebhookDelivery, WebhookStore};

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
    let workers = Workers {
        wake: wake.clone(),
        notifier: Arc::new(Notifier::new(&herald.config.notify)),
        claims: Default::default(),
        permits: Arc::new(tokio::sync::Semaphore::new(PARALLEL_ENDPOINTS)),
    };
    loop {
        let busy = round(&herald, &store, outbox.as_ref(), &workers).await;
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

/// Who delivers: a task per endpoint with due deliveries, at most [`PARALLEL_ENDPOINTS`] at
/// once, and never two for one endpoint. A round does not wait for them, so a slow or dead
/// endpoint holds up its own deliveries only.
struct Workers {
    /// A task that finishes wakes the loop, so an endpoint's next deliveries go at once.
    wake: Arc<Notify>,
    notifier: Arc<Notifier>,
    claims: Arc<parking_lot::Mutex<Claims>>,
    permits: Arc<tokio::sync::Semaphore>,
}

/// Which endpoints have a task running, and which ended one since this round began reading
/// due deliveries: what it read of those may be stale (already delivered), so they wait for
/// the next round.
#[derive(Default)]
struct Claims {
    running: HashSet<EndpointId>,
    ended: HashSet<EndpointId>,
}

impl Claims {
    /// Takes the endpoint for a new task; false when it has one or just ended one.
    fn claim(&mut self, id: EndpointId) -> bool {
        !self.ended.contains(&id) && self.running.insert(id)
    }

    fn release(&mut self, id: EndpointId) {
        self.running.remove(&id);
        self.ended.insert(id);
    }
}

/// One round: fan out, then hand what is due to the endpoints' tasks. True when there may be
/// more to do now.
async fn round(
    herald: &Arc<Herald>,
    store: &Arc<dyn WebhookStore>,
    outbox: &dyn PolledOutbox,
    workers: &Workers,
) -> bool {
    let queued = outbox.outbox(ROUND).await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "outbox not read");
        Vec::new()
    });
    // Taken after the outbox is read, so it is at least as new as the one each notice's
    // sender saw: an endpoint the sender counted on is in it.
    let Some(snapshot) = herald
        .refresh_subscriptions(herald.config.notify.subscriptions_refresh)
        .await
    else {
        return false;
    };
    let fanned = if queued.is_empty() {
        0
    } else {
        fan_out(herald, outbox, &workers.notifier, &snapshot, queued).await
    };
    workers.claims.lock().ended.clear();
    let due = match outbox.due_deliveries(Utc::now(), ROUND).await {
        Ok(due) => due,
        Err(e) => {
            tracing::warn!(error = %e, "due deliveries not read");
            Vec::new()
        }
    };
    let started = deliver_all(herald, store, workers, &snapshot, due);
    fanned == ROUND || started == ROUND
}

async fn fan_out(
    herald: &Arc<Herald>,
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

/// Starts a task for each endpoint with due deliveries and none running; returns how many
/// deliveries it handed over.
fn deliver_all(
    herald: &Arc<Herald>,
    store: &Arc<dyn WebhookStore>,
    workers: &Workers,
    snapshot: &Snapshot,
    due: Vec<WebhookDelivery>,
) -> usize {
    let mut by_endpoint: BTreeMap<_, Vec<WebhookDelivery>> = BTreeMap::new();
    for d in due {
        by_endpoint.entry(d.endpoint).or_default().push(d);
    }
    let mut started = 0;
    for (id, group) in by_endpoint {
        let Some(ep) = snapshot.endpoints.iter().find(|e| e.id == id).cloned() else {
            continue;
        };
        let Ok(permit) = workers.permits.clone().try_acquire_owned() else {
            break; // every worker is busy: the rest wait for the next round
        };
        if !workers.claims.lock().claim(id) {
            continue;
        }
        started += group.len();
        let (herald, store) = (herald.clone(), store.clone());
        let (notifier, claims) = (workers.notifier.clone(), workers.claims.clone());
        let wake = workers.wake.clone();
        tokio::spawn(async move {
            for d in group {
                let done = notifier.deliver(&herald, store.as_ref(), &ep, &d).await;
                // After a failure, the rest wait for a later round: one dead endpoint costs
                // one attempt (and one timeout) at a time.
                if done.state != DeliveryState::Succeeded || !done.endpoint_on {
                    break;
                }
            }
            claims.lock().release(id);
            drop(permit);
            wake.notify_one();
        });
    }
    started
}
