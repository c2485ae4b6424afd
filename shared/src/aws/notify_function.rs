//! The `notify` function: the notify queue's consumer. An event is fanned out to one stored
//! delivery per endpoint that wants it, each queued as its own message; a delivery message is
//! attempted, and a failed attempt is retried by hiding the message until the next try is due
//! (the retry schedule's waits are under SQS's 12-hour limit). A delivery out of retries is
//! left to come back until the queue's `maxReceiveCount` moves it to the DLQ, where the alarm
//! sees it; a replay through the API sends it again.

use std::sync::Arc;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::Utc;
use futures::StreamExt;

use super::lambda::{init_tracing, ColdStart};
use super::sqs::NotifyMessage;
use super::SqsLanes;
use crate::domain::notify::DeliveryId;
use crate::domain::TenantId;
use crate::engine::notify::deliver::Notifier;
use crate::engine::notify::Snapshot;
use crate::engine::Herald;
use crate::ports::{DeliveryState, StoreError, WebhookStore};

/// What becomes of one record.
enum Fate {
    Done,
    /// Reported as a batch item failure, so it comes back (after the hold set on it).
    Keep,
}

/// Handles one batch of the notify queue.
pub async fn notify(
    herald: &Herald,
    lanes: &SqsLanes,
    notifier: &Notifier,
    event: SqsEvent,
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
    // All at once: a slow endpoint (up to the delivery timeout) delays no other record.
    let fates: Vec<(String, Fate)> = futures::stream::iter(event.records)
        .map(|record| {
            let (store, snapshot) = (store.clone(), snapshot.clone());
            async move {
                let id = record.message_id.clone().unwrap_or_default();
                let handled =
                    handle(herald, store.as_ref(), lanes, notifier, &snapshot, &record).await;
                let fate = handled.unwrap_or_else(|e| {
                    tracing::warn!(sqs_message_id = %id, error = %e, "notify entry not handled; it comes back");
                    Fate::Keep
                });
                (id, fate)
            }
        })
        .buffer_unordered(10)
        .collect()
        .await;
    for (id, fate) in fates {
        if let Fate::Keep = fate {
            response.add_failure(id);
        }
    }
    response
}

async fn handle(
    herald: &Herald,
    store: &dyn WebhookStore,
    lanes: &SqsLanes,
    notifier: &Notifier,
    snapshot: &Snapshot,
    record: &SqsMessage,
) -> Result<Fate, StoreError> {
    let parsed = record
        .body
        .as_deref()
        .and_then(|b| serde_json::from_str::<NotifyMessage>(b).ok());
    match parsed {
        Some(NotifyMessage::Event { notice }) => {
            let deliveries = notifier.deliveries_for(herald, snapshot, &notice).await;
            store.save_deliveries(deliveries).await?;
            Ok(Fate::Done)
        }
        Some(NotifyMessage::Delivery { id, tenant }) => {
            let receipt = record.receipt_handle.as_deref().unwrap_or_default();
            deliver(herald, store, lanes, notifier, (id, &tenant), receipt).await
        }
        None => {
            tracing::error!(sqs_message_id = ?record.message_id, "unreadable notify entry; left for the DLQ");
            Ok(Fate::Keep)
        }
    }
}

/// Attempts a delivery that is due; holds one that is not (or whose endpoint is off).
async fn deliver(
    herald: &Herald,
    store: &dyn WebhookStore,
    lanes: &SqsLanes,
    notifier: &Notifier,
    (id, tenant): (DeliveryId, &TenantId),
    receipt: &str,
) -> Result<Fate, StoreError> {
    let Some(d) = store.delivery(tenant, id).await? else {
        return Ok(Fate::Done);
    };
    match d.state {
        // A stream reads its own; nothing is pushed.
        DeliveryState::Succeeded | DeliveryState::Buffered => return Ok(Fate::Done),
        // Out of retries: straight back, until the queue moves it to the DLQ.
        DeliveryState::Failed => {
            lanes
                .hold_notify(receipt, std::time::Duration::ZERO)
                .await?;
            return Ok(Fate::Keep);
        }
        DeliveryState::Pending => {}
    }
    let Some(ep) = store.endpoint(tenant, d.endpoint).await? else {
        return Ok(Fate::Done); // deleted with its endpoint
    };
    let now = Utc::now();
    if !ep.enabled {
        // Waits for the endpoint to be turned back on, as long as the queue keeps it.
        lanes
            .hold_notify(receipt, super::sqs::MAX_VISIBILITY)
            .await?;
        return Ok(Fate::Keep);
    }
    if let Some(wait) = d.next_attempt_at.and_then(|t| (t - now).to_std().ok()) {
        if wait.as_secs() >= 1 {
            lanes.hold_notify(receipt, wait).await?;
            return Ok(Fate::Keep);
        }
    }
    let delivered = notifier.deliver(herald, store, &ep, &d).await;
    match (delivered.state, delivered.next_attempt_at) {
        (DeliveryState::Succeeded, _) => Ok(Fate::Done),
        (DeliveryState::Pending, Some(next)) => {
            let wait = (next - Utc::now()).to_std().unwrap_or_default();
            lanes.hold_notify(receipt, wait).await?;
            Ok(Fate::Keep)
        }
        // 410: the endpoint asked for no more; nothing for the DLQ.
        (DeliveryState::Failed, _) if !delivered.endpoint_on => Ok(Fate::Done),
        _ => {
            lanes
                .hold_notify(receipt, std::time::Duration::ZERO)
                .await?;
            Ok(Fate::Keep)
        }
    }
}

/// `notify`: the notify queue's consumer.
pub async fn run_notify() -> Result<(), lambda_runtime::Error> {
    init_tracing();
    let cold = Arc::new(ColdStart::from_env().await?);
    let notifier = Arc::new(Notifier::new(&cold.herald.config.notify));
    crate::telemetry::emf::run_events(move |event: lambda_runtime::LambdaEvent<SqsEvent>| {
        let (cold, notifier) = (cold.clone(), notifier.clone());
        async move {
            // Boxed: inlined, the handler's future nests deeper than the compiler's layout
            // query limit allows.
            let response = Box::pin(notify(
                &cold.herald,
                &cold.backend.lanes,
                &notifier,
                event.payload,
            ))
            .await;
            Ok::<_, lambda_runtime::Error>(response)
        }
    })
    .await
}
