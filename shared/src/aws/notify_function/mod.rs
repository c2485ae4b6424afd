//! The `notify` function: the consumer of both notify queues.
//!
//! - The ordered queue (FIFO) takes first tries. An event (grouped by its message) is fanned
//!   out to one stored delivery per endpoint that wants it; a batch's deliveries are queued
//!   back on it in the batch's order, grouped by endpoint, and each group's deliveries are
//!   attempted one after another: an endpoint hears its events in the order they were made,
//!   where SQS's ordering and the function's concurrency allow it.
//! - A try that fails moves the delivery to the retry queue (standard), so it holds up no
//!   later event. There it is hidden until its next try is due (the schedule's waits are under
//!   SQS's 12-hour limit). A delivery out of retries is left to come back until the queue's
//!   `maxReceiveCount` moves it to the DLQ, where the alarm sees it; a replay through the API
//!   sends it again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::Utc;

mod ordered;

use super::lambda::{init_tracing, ColdStart};
use super::sqs::NotifyMessage;
use super::SqsLanes;
use crate::domain::notify::{DeliveryId, EndpointId, Notice};
use crate::domain::TenantId;
use crate::engine::notify::deliver::Notifier;
use crate::engine::notify::Snapshot;
use crate::engine::Herald;
use crate::ports::{DeliveryState, StoreError, WebhookStore};

/// The attribute SQS sets on an entry of a FIFO queue.
const GROUP: &str = "MessageGroupId";

/// What a delivery's state or try says to do with its entry.
enum Next {
    Done,
    /// Not tried (not due yet, or its endpoint is off): back after `wait`, with `attempts`
    /// recorded as before.
    Later {
        wait: Duration,
        attempts: usize,
    },
    /// Tried and failed: the next try after `wait`, with `attempts` now recorded.
    Retry {
        wait: Duration,
        attempts: usize,
    },
    /// Out of retries: left for the DLQ.
    GiveUp,
}

/// What the handlers share for one batch.
struct Batch<'a> {
    herald: &'a Herald,
    store: &'a dyn WebhookStore,
    lanes: &'a SqsLanes,
    notifier: &'a Notifier,
    snapshot: &'a Snapshot,
    /// When the invocation ends (none in tests): no try starts that could outlast it.
    deadline: Option<Instant>,
}

impl Batch<'_> {
    /// Whether a try started now could run past the invocation's end.
    fn out_of_time(&self) -> bool {
        // A try's timeout, and room to record it and queue its retry.
        let longest = self.herald.config.notify.timeout + Duration::from_secs(5);
        self.deadline.is_some_and(|d| Instant::now() + longest > d)
    }
}

/// A record read: its SQS id, its FIFO group (none on the retry queue) and what it carries
/// (none when unreadable: it is kept until the DLQ takes it).
struct Entry<'r> {
    id: String,
    group: Option<&'r str>,
    receipt: &'r str,
    message: Option<NotifyMessage>,
}

impl<'r> Entry<'r> {
    fn read(record: &'r SqsMessage) -> Entry<'r> {
        let message = record
            .body
            .as_deref()
            .and_then(|b| serde_json::from_str::<NotifyMessage>(b).ok());
        if message.is_none() {
            tracing::error!(sqs_message_id = ?record.message_id, "unreadable notify entry; left for the DLQ");
        }
        Entry {
            id: record.message_id.clone().unwrap_or_default(),
            group: record.attributes.get(GROUP).map(String::as_str),
            receipt: record.receipt_handle.as_deref().unwrap_or_default(),
            message,
        }
    }
}

/// Handles one batch of either notify queue; what is reported failed comes back.
pub async fn notify(
    herald: &Herald,
    lanes: &SqsLanes,
    notifier: &Notifier,
    event: SqsEvent,
    deadline: Option<Instant>,
) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    let (Some(store), Some(snapshot)) = (
        herald.webhooks.clone(),
        herald
            .refresh_subscriptions(herald.config.notify.subscriptions_refresh)
            .await,
    ) else {
        tracing::warn!("webhook endpoints unreadable; the batch comes back");
        for record in event.records {
            response.add_failure(record.message_id.unwrap_or_default());
        }
        return response;
    };
    let batch = Batch {
        herald,
        store: store.as_ref(),
        lanes,
        notifier,
        snapshot: &snapshot,
        deadline,
    };
    let entries: Vec<Entry> = event.records.iter().map(Entry::read).collect();
    let (ordered, retries): (Vec<Entry>, Vec<Entry>) =
        entries.into_iter().partition(|e| e.group.is_some());
    let mut kept = ordered::handle(&batch, ordered).await;
    kept.extend(handle_retries(&batch, retries).await);
    for id in kept {
        response.add_failure(id);
    }
    response
}

/// The retry queue: every entry at once (a slow endpoint, up to the delivery timeout, delays
/// no other); one not yet due is hidden until it is. Returns the entries that come back.
async fn handle_retries(batch: &Batch<'_>, entries: Vec<Entry<'_>>) -> Vec<String> {
    // A plain loop, not a stream of closures: the handler's future must be Send, which the
    // compiler cannot show through closures over borrowed entries.
    let mut tries = Vec::with_capacity(entries.len());
    for entry in &entries {
        tries.push(retry(batch, entry));
    }
    futures::future::join_all(tries)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// One retry queue entry; its id when it comes back. One not yet due is hidden until it is;
/// a try that fails queues the next as a new entry (which knows the attempts made by then).
async fn retry(batch: &Batch<'_>, entry: &Entry<'_>) -> Option<String> {
    let lanes = batch.lanes;
    let handled = match &entry.message {
        // Queued before first tries moved to the ordered queue.
        Some(NotifyMessage::Event { notice }) => fan_out(batch, &[notice]).await.map(|_| false),
        Some(NotifyMessage::Delivery {
            id,
            tenant,
            endpoint,
            attempts,
        }) => match deliver(batch, (*id, tenant), *attempts).await {
            Ok(Next::Done) => Ok(false),
            Ok(Next::Later { wait, .. }) => {
                lanes.hold_notify(entry.receipt, wait).await.map(|_| true)
            }
            Ok(Next::Retry { wait, attempts }) => {
                let next = requeued((*id, tenant, *endpoint), Some(attempts));
                lanes.retry_notify(&next, wait).await.map(|_| false)
            }
            Ok(Next::GiveUp) => lanes
                .hold_notify(entry.receipt, Duration::ZERO)
                .await
                .map(|_| true),
            Err(e) => Err(e),
        },
        None => Ok(true),
    };
    let keep = handled.unwrap_or_else(|e| {
        tracing::warn!(sqs_message_id = %entry.id, error = %e, "notify entry not handled; it comes back");
        true
    });
    keep.then(|| entry.id.clone())
}

/// A delivery's entry for the retry queue, knowing `attempts` were recorded (none: not read).
fn requeued(
    (id, tenant, endpoint): (DeliveryId, &TenantId, Option<EndpointId>),
    attempts: Option<usize>,
) -> NotifyMessage {
    NotifyMessage::Delivery {
        id,
        tenant: tenant.clone(),
        endpoint,
        attempts,
    }
}

/// Fans events out and queues their deliveries, in the order given, in one go.
async fn fan_out(batch: &Batch<'_>, notices: &[&Notice]) -> Result<(), StoreError> {
    let mut each = Vec::with_capacity(notices.len());
    for notice in notices {
        each.push(
            batch
                .notifier
                .deliveries_for(batch.herald, batch.snapshot, notice),
        );
    }
    let deliveries = futures::future::join_all(each).await.into_iter().flatten();
    batch.store.save_deliveries(deliveries.collect()).await
}

/// Attempts a delivery that is due; says when to come back to one that is not (or whose
/// endpoint is off), or failed. `expected`: the attempts its entry was queued after; an entry
/// that finds more recorded is a stale copy and is dropped.
async fn deliver(
    batch: &Batch<'_>,
    (id, tenant): (DeliveryId, &TenantId),
    expected: Option<usize>,
) -> Result<Next, StoreError> {
    let Some(d) = batch.store.delivery(tenant, id).await? else {
        return Ok(Next::Done);
    };
    let attempts = d.attempts.len();
    match d.state {
        // A stream reads its own; nothing is pushed.
        DeliveryState::Succeeded | DeliveryState::Buffered => return Ok(Next::Done),
        DeliveryState::Failed => return Ok(Next::GiveUp),
        DeliveryState::Pending if expected.is_some_and(|n| n != attempts) => {
            return Ok(Next::Done);
        }
        DeliveryState::Pending => {}
    }
    let Some(ep) = batch.store.endpoint(tenant, d.endpoint).await? else {
        return Ok(Next::Done); // deleted with its endpoint
    };
    let now = Utc::now();
    let not_due = d.next_attempt_at.and_then(|t| (t - now).to_std().ok());
    let wait = match (ep.enabled, not_due) {
        // Waits for the endpoint to be turned back on, as long as the queue keeps it.
        (false, _) => Some(super::sqs::MAX_VISIBILITY),
        (true, Some(wait)) if wait.as_secs() >= 1 => Some(wait),
        _ => None,
    };
    if let Some(wait) = wait {
        return Ok(Next::Later { wait, attempts });
    }
    let delivered = batch
        .notifier
        .deliver(batch.herald, batch.store, &ep, &d)
        .await;
    Ok(match (delivered.state, delivered.next_attempt_at) {
        (DeliveryState::Succeeded, _) => Next::Done,
        (DeliveryState::Pending, Some(next)) => Next::Retry {
            wait: (next - Utc::now()).to_std().unwrap_or_default(),
            attempts: attempts + 1,
        },
        // 410: the endpoint asked for no more; nothing for the DLQ.
        (DeliveryState::Failed, _) if !delivered.endpoint_on => Next::Done,
        _ => Next::GiveUp,
    })
}

/// `notify`: the consumer of the notify queues.
pub async fn run_notify() -> Result<(), lambda_runtime::Error> {
    init_tracing();
    let cold = Arc::new(ColdStart::from_env().await?);
    let notifier = Arc::new(Notifier::new(&cold.herald.config.notify));
    crate::telemetry::emf::run_events(move |event: lambda_runtime::LambdaEvent<SqsEvent>| {
        let (cold, notifier) = (cold.clone(), notifier.clone());
        async move {
            let deadline = super::lambda::invocation_deadline(event.context.deadline);
            // Boxed: inlined, the handler's future nests deeper than the compiler's layout
            // query limit allows.
            let response = Box::pin(notify(
                &cold.herald,
                &cold.backend.lanes,
                &notifier,
                event.payload,
                Some(deadline),
            ))
            .await;
            Ok::<_, lambda_runtime::Error>(response)
        }
    })
    .await
}
