//! Provider callbacks -> delivery events. The same processor serves the sandbox's callbacks and
//! the providers' webhooks.

use std::collections::{HashMap, VecDeque};
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

/// Concurrent appliers; events of one provider message always go to the same one, in order.
const SHARDS: usize = 8;

/// Consumes provider events until the sender side closes.
pub async fn run(herald: Arc<Herald>, mut events: mpsc::Receiver<ProviderEvent>) {
    let shards: Vec<mpsc::Sender<ProviderEvent>> = (0..SHARDS)
        .map(|_| {
            let (tx, rx) = mpsc::channel(4096);
            tokio::spawn(run_shard(herald.clone(), rx));
            tx
        })
        .collect();
    while let Some(event) = events.recv().await {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(&event.provider_message_id, &mut hasher);
        let shard = (std::hash::Hasher::finish(&hasher) % SHARDS as u64) as usize;
        if shards[shard].send(event).await.is_err() {
            return;
        }
    }
}

/// Applies events in arrival order. One that overtook the recording of `sent` is parked with
/// every later event of the same message until it applies (or gives up).
async fn run_shard(herald: Arc<Herald>, mut events: mpsc::Receiver<ProviderEvent>) {
    let mut parked: HashMap<String, (VecDeque<ProviderEvent>, u32)> = HashMap::new();
    let (wake_tx, mut wake_rx) = mpsc::unbounded_channel::<String>();
    loop {
        tokio::select! {
            Some(event) = events.recv() => {
                if let Some((queue, _)) = parked.get_mut(&event.provider_message_id) {
                    queue.push_back(event);
                } else if !apply(&herald, &event).await {
                    let key = event.provider_message_id.clone();
                    parked.insert(key.clone(), (VecDeque::from([event]), 0));
                    rearm(&wake_tx, key);
                }
            }
            Some(key) = wake_rx.recv() => {
                let Some((mut queue, tries)) = parked.remove(&key) else { continue };
                while let Some(event) = queue.front() {
                    if apply(&herald, event).await {
                        queue.pop_front();
                    } else if tries + 1 >= MAX_EARLY_RETRIES {
                        warn!(provider_message_id = %key, "provider event for an unknown message dropped");
                        queue.pop_front();
                    } else {
                        parked.insert(key.clone(), (queue, tries + 1));
                        rearm(&wake_tx, key);
                        break;
                    }
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

/// Applies one event; false when it arrived before its message was recorded as sent.
pub async fn apply(herald: &Herald, event: &ProviderEvent) -> bool {
    let id = match herald
        .store
        .find_by_provider_id(&event.gateway, &event.provider_message_id)
        .await
    {
        Ok(Some(id)) => id,
        Ok(None) => return false,
        Err(e) => {
            warn!(error = %e, "provider event lookup failed");
            return false;
        }
    };
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
    match herald.store.transition(vec![t]).await {
        Ok(r) => match r.first() {
            Some(TransitionOutcome::Applied) => true,
            Some(TransitionOutcome::Conflict {
                current: MessageStatus::Sending,
            }) => false,
            other => {
                debug!(%id, %to, outcome = ?other, "provider event ignored");
                true
            }
        },
        Err(e) => {
            warn!(%id, error = %e, "provider event not recorded");
            false
        }
    }
}
