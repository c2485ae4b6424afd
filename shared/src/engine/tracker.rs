//! Provider callbacks -> delivery events. The same processor serves the sandbox's callbacks and
//! the providers' webhooks.

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

/// Consumes provider events until the sender side closes.
pub async fn run(herald: Arc<Herald>, mut events: mpsc::UnboundedReceiver<ProviderEvent>) {
    let (retry_tx, mut retry_rx) = mpsc::unbounded_channel::<(ProviderEvent, u32)>();
    loop {
        let (event, tries) = tokio::select! {
            Some(e) = events.recv() => (e, 0),
            Some(r) = retry_rx.recv() => r,
            else => return,
        };
        let h = herald.clone();
        let retry = retry_tx.clone();
        tokio::spawn(async move {
            if !apply(&h, &event).await && tries < MAX_EARLY_RETRIES {
                tokio::time::sleep(EARLY_RETRY_DELAY).await;
                let _ = retry.send((event, tries + 1));
            }
        });
    }
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
