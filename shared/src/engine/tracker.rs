//! Provider callbacks -> delivery events. The same processor serves the sandbox's callbacks and
//! the providers' webhooks.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::Herald;
use crate::domain::MessageStatus;
use crate::ports::{ProviderEvent, ProviderEventKind, Transition, TransitionOutcome};

/// A callback can overtake the recording of `sent`; it is tried again this many times.
const MAX_EARLY_RETRIES: u32 = 50;
const EARLY_RETRY_DELAY: Duration = Duration::from_millis(100);
/// Concurrent appliers; events of one provider message always go to the same one, in order.
const SHARDS: usize = 4;
/// Events applied in one store call.
const BATCH: usize = 256;

pub fn target_status(kind: ProviderEventKind) -> MessageStatus {
    match kind {
        ProviderEventKind::Delivered => MessageStatus::Delivered,
        ProviderEventKind::Opened => MessageStatus::Opened,
        ProviderEventKind::Clicked => MessageStatus::Clicked,
        ProviderEventKind::Bounced { .. } => MessageStatus::Bounced,
        ProviderEventKind::Complained => MessageStatus::Complained,
        ProviderEventKind::Failed => MessageStatus::Failed,
    }
}

/// Consumes provider events until the sender side closes.
pub async fn run(herald: Arc<Herald>, mut events: mpsc::Receiver<ProviderEvent>) {
    // Owned here, so the shards stop when this task is aborted.
    let mut appliers = tokio::task::JoinSet::new();
    let shards: Vec<mpsc::Sender<ProviderEvent>> = (0..SHARDS)
        .map(|_| {
            let (tx, rx) = mpsc::channel(4096);
            appliers.spawn(run_shard(herald.clone(), rx));
            tx
        })
        .collect();
    while let Some(event) = events.recv().await {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        event.provider_message_id.hash(&mut hasher);
        let shard = (hasher.finish() % SHARDS as u64) as usize;
        if shards[shard].send(event).await.is_err() {
            return;
        }
    }
}

/// Applies events in arrival order, in batches. An event that overtook the recording of `sent`
/// is parked with every later event of the same message until it applies (or gives up).
async fn run_shard(herald: Arc<Herald>, mut events: mpsc::Receiver<ProviderEvent>) {
    let mut parked: HashMap<String, (VecDeque<ProviderEvent>, u32)> = HashMap::new();
    let (wake_tx, mut wake_rx) = mpsc::unbounded_channel::<String>();
    loop {
        tokio::select! {
            Some(first) = events.recv() => {
                let mut batch = vec![first];
                while batch.len() < BATCH {
                    match events.try_recv() {
                        Ok(e) => batch.push(e),
                        Err(_) => break,
                    }
                }
                let (waiting, ready): (Vec<_>, Vec<_>) =
                    batch.into_iter().partition(|e| parked.contains_key(&e.provider_message_id));
                for e in waiting {
                    if let Some((queue, _)) = parked.get_mut(&e.provider_message_id) {
                        queue.push_back(e);
                    }
                }
                for e in apply_batch(&herald, ready).await {
                    let key = e.provider_message_id.clone();
                    let (queue, _) = parked.entry(key.clone()).or_insert_with(|| {
                        rearm(&wake_tx, key);
                        (VecDeque::new(), 0)
                    });
                    queue.push_back(e);
                }
            }
            Some(key) = wake_rx.recv() => {
                let Some((queue, tries)) = parked.remove(&key) else { continue };
                let left = apply_batch(&herald, queue.into()).await;
                if left.is_empty() {
                    continue;
                }
                if tries + 1 >= MAX_EARLY_RETRIES {
                    warn!(provider_message_id = %key, dropped = left.len(), "provider events for an unknown message dropped");
                } else {
                    parked.insert(key.clone(), (left.into(), tries + 1));
                    rearm(&wake_tx, key);
                }
            }
            else => return,
        }
    }
}

fn rearm(wake: &mpsc::UnboundedSender<String>, key: String) {
    let wake = wake.clone();
    tokio::spawn(async move {
        tokio::time::sleep(EARLY_RETRY_DELAY).await;
        let _ = wake.send(key);
    });
}

/// Applies events in order; returns those that must wait (their message is not recorded as
/// sent yet, or the store failed), in order. While one event of a message waits, every later
/// event of it waits too.
pub async fn apply_batch(herald: &Herald, events: Vec<ProviderEvent>) -> Vec<ProviderEvent> {
    if events.is_empty() {
        return events;
    }
    let keys = events
        .iter()
        .map(|e| (e.gateway.clone(), e.provider_message_id.clone()))
        .collect();
    let ids = match herald.store.find_by_provider_ids(keys).await {
        Ok(ids) => ids,
        Err(e) => {
            warn!(error = %e, "provider event lookup failed");
            return events;
        }
    };
    let mut transitions = Vec::new();
    let mut applied_index = Vec::new(); // event index of each transition
    let mut wait = vec![false; events.len()];
    let mut blocked: std::collections::HashSet<&str> = Default::default();
    for (i, (event, id)) in events.iter().zip(&ids).enumerate() {
        match id {
            Some(id) if !blocked.contains(event.provider_message_id.as_str()) => {
                transitions.push(transition_for(*id, event));
                applied_index.push(i);
            }
            _ => {
                blocked.insert(&event.provider_message_id);
                wait[i] = true;
            }
        }
    }
    if !transitions.is_empty() {
        match herald.store.transition(transitions).await {
            Ok(outcomes) => {
                for (i, outcome) in applied_index.into_iter().zip(outcomes) {
                    match outcome {
                        TransitionOutcome::Applied => {}
                        // Still being handed over: `sent` is not recorded yet.
                        TransitionOutcome::Conflict {
                            current: MessageStatus::Sending,
                        } => wait[i] = true,
                        other => {
                            debug!(provider_message_id = %events[i].provider_message_id, outcome = ?other,
                                        "provider event ignored")
                        }
                    }
                }
            }
            Err(e) => {
                warn!(error = %e, "provider events not recorded");
                return events;
            }
        }
    }
    events
        .into_iter()
        .zip(wait)
        .filter(|(_, w)| *w)
        .map(|(e, _)| e)
        .collect()
}

fn transition_for(id: crate::domain::MessageId, event: &ProviderEvent) -> Transition {
    let to = target_status(event.kind);
    let mut t = Transition::new(id, to, event.at);
    let mut detail =
        json!({ "gateway": event.gateway, "provider_message_id": event.provider_message_id });
    if let ProviderEventKind::Bounced { permanent } = event.kind {
        detail["bounce"] = json!(if permanent { "hard" } else { "soft" });
    }
    if let serde_json::Value::Object(extra) = &event.detail {
        for (k, v) in extra {
            detail[k] = v.clone();
        }
    }
    t.detail = detail;
    if to == MessageStatus::Failed {
        t.last_error = event
            .detail
            .get("error")
            .and_then(|e| e.as_str())
            .map(str::to_owned);
    }
    t
}
