//! Provider callbacks -> delivery events. The same processor serves the sandbox's callbacks and
//! the providers' webhooks.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::parked::AfterParking;
use super::Herald;
use crate::domain::{EventKind, MessageId, MessageStatus};
use crate::ports::{
    ClaimToken, EventClaim, ProviderEvent, ProviderEventKind, StoreError, Transition,
    TransitionOutcome,
};

/// A callback can overtake the recording of `sent`; it is tried again this many times, then
/// parked in the store (see `parked`).
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
        // Not a state change; recorded with `annotate`, never through here.
        ProviderEventKind::Delayed => MessageStatus::Sent,
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
                    // Kept in the store from here on, until the message's `sent` is recorded.
                    match herald.park(left).await {
                        Ok(AfterParking::Tried) => {}
                        Ok(AfterParking::Untried(e)) | Err(e) => {
                            warn!(provider_message_id = %key, error = %e,
                                  "provider events not parked, or parked and not tried again; what is parked is applied at the next start");
                        }
                    }
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
    match try_apply(herald, &events).await {
        Ok(recorded) => waiting(events, &recorded.wait),
        Err(e) => {
            not_recorded(&e, events.len());
            events
        }
    }
}

/// Logs `count` provider events the store did not record.
pub(crate) fn not_recorded(e: &StoreError, count: usize) {
    match e {
        // The store refuses once the workers and the API have stopped, so what still comes
        // here is the sandbox's callbacks: the next start sends them again for every message
        // still `sent` (`resume_sandbox_callbacks`), so this is no loss and no warning.
        StoreError::ShutDown => debug!(count, "provider events left for the next start"),
        e => warn!(error = %e, count, "provider events not recorded"),
    }
}

/// Applies what it can of `events`; says which wait for their message's `sent`.
pub(crate) async fn try_apply(
    herald: &Herald,
    events: &[ProviderEvent],
) -> Result<Recorded, StoreError> {
    if events.is_empty() {
        return Ok(Recorded::default());
    }
    let ids = resolve_ids(herald, events).await?;
    let recorded = record(herald, events, &ids).await?;
    suppress(herald, events, &ids, &recorded.wait).await;
    Ok(recorded)
}

/// What recording a batch of provider events did.
#[derive(Debug, Default)]
pub(crate) struct Recorded {
    /// Per event: it waits for its message to be recorded as sent.
    pub wait: Vec<bool>,
    /// Some state change or timeline note was written.
    pub changed: bool,
}

/// The events flagged to wait, in order.
pub(crate) fn waiting(events: Vec<ProviderEvent>, wait: &[bool]) -> Vec<ProviderEvent> {
    events
        .into_iter()
        .zip(wait)
        .filter(|(_, w)| **w)
        .map(|(e, _)| e)
        .collect()
}

/// Records each event's transition (or timeline note); says which must wait.
async fn record(
    herald: &Herald,
    events: &[ProviderEvent],
    ids: &[Option<MessageId>],
) -> Result<Recorded, StoreError> {
    let mut transitions = Vec::new();
    let mut applied_index = Vec::new(); // event index of each transition
    let mut wait = vec![false; events.len()];
    let mut changed = false;
    let mut blocked: std::collections::HashSet<&str> = Default::default();
    for (i, (event, id)) in events.iter().zip(ids).enumerate() {
        let provider_id = event.provider_message_id.as_str();
        // Behind an event of its provider message that waits, an event waits too (in order).
        let Some(id) = id.filter(|_| !blocked.contains(provider_id)) else {
            blocked.insert(provider_id);
            wait[i] = true;
            continue;
        };
        if event.kind != ProviderEventKind::Delayed {
            transitions.push(transition_for(id, event));
            applied_index.push(i);
            continue;
        }
        match note_delay(herald, id, event).await? {
            Noted::Written => changed = true,
            Noted::Early => {
                blocked.insert(provider_id);
                wait[i] = true;
            }
            Noted::Nothing => {}
        }
    }
    if transitions.is_empty() {
        return Ok(Recorded { wait, changed });
    }
    let outcomes = herald.store.transition(transitions.clone()).await?;
    herald.announce(&transitions, &outcomes).await;
    for (i, outcome) in applied_index.into_iter().zip(outcomes) {
        match outcome {
            TransitionOutcome::Applied | TransitionOutcome::AppliedNothingParked => changed = true,
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
    Ok(Recorded { wait, changed })
}

/// What noting a delivery delay did.
enum Noted {
    Written,
    /// Its message is still being handed over: the note waits for `sent`, as other events do.
    Early,
    /// Its message has moved on (or is gone): too late to say it is still trying.
    Nothing,
}

/// Still trying: a timeline entry, no state change. A store error fails the whole batch, so
/// the provider's retry (or the release's) notes it then.
async fn note_delay(
    herald: &Herald,
    id: MessageId,
    event: &ProviderEvent,
) -> Result<Noted, StoreError> {
    let noted = herald
        .store
        .annotate(
            id,
            EventKind::DeliveryDelayed,
            event.at,
            event_detail(event),
            &[MessageStatus::Sent],
        )
        .await?;
    match noted {
        TransitionOutcome::Applied | TransitionOutcome::AppliedNothingParked => {
            herald
                .notify_message(
                    None,
                    id,
                    EventKind::DeliveryDelayed,
                    event.at,
                    &event_detail(event),
                )
                .await;
            Ok(Noted::Written)
        }
        TransitionOutcome::Conflict {
            current: MessageStatus::Sending,
        } => Ok(Noted::Early),
        _ => Ok(Noted::Nothing),
    }
}

/// Bounces and complaints suppress the address, whatever the message's state by now.
async fn suppress(
    herald: &Herald,
    events: &[ProviderEvent],
    ids: &[Option<MessageId>],
    wait: &[bool],
) {
    for ((event, id), waiting) in events.iter().zip(ids).zip(wait) {
        // A failure report's error code means what it would for a refused send, and the
        // gateway knows which codes suppress (Twilio 21610: the recipient opted out).
        let named = (event.kind == ProviderEventKind::Failed)
            .then(|| error_code(&event.detail))
            .flatten()
            .and_then(|code| {
                herald
                    .gateways
                    .named(&event.gateway)?
                    .suppression_for(&code)
            });
        let suppressing = named.is_some()
            || matches!(
                event.kind,
                ProviderEventKind::Bounced { .. } | ProviderEventKind::Complained
            );
        if let (false, ProviderEventKind::Bounced { .. } | ProviderEventKind::Complained) =
            (*waiting, event.kind)
        {
            let bounced = matches!(event.kind, ProviderEventKind::Bounced { .. });
            herald.note_warmup_outcome(&event.gateway, bounced).await;
        }
        if let (true, false, Some(id)) = (suppressing, *waiting, id) {
            match herald.store.locate(*id).await {
                Ok(Some(target)) => {
                    if named.is_none() {
                        herald.after_bad_outcome(&target.tenant).await;
                    }
                    let source = format!("{}:{}", event.gateway, event.provider_message_id);
                    match named {
                        Some(reason) => {
                            herald
                                .add_suppression(&target, reason, source, event.at)
                                .await
                        }
                        None => {
                            herald
                                .suppress_after(&target, event.kind, source, event.at)
                                .await
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => warn!(error = %e, "bounced message not found for suppression"),
            }
        }
    }
}

/// The provider's error code in an event's detail (a string or a number).
fn error_code(detail: &serde_json::Value) -> Option<String> {
    match detail.get("error_code")? {
        serde_json::Value::String(code) => Some(code.clone()),
        serde_json::Value::Number(code) => Some(code.to_string()),
        _ => None,
    }
}

/// How long a provider's event id is remembered: longer than any provider retries. SNS gives
/// up on an HTTP(S) endpoint within an hour (a hard limit) and signatures of any age are
/// accepted, so a replayed SNS notification always meets its MessageId here.
pub(crate) const EVENT_ID_KEEP: Duration = Duration::from_secs(7 * 24 * 3600);

/// How long a claim on a provider event holds while its effect is applied (a few writes). A
/// claim whose holder died (a crash, a timeout) runs out then, and the provider's redelivery
/// is applied; one that comes before gets a retryable error. Short enough that SNS's HTTP
/// retries (three, 20 s apart) reach past it; a holder slower than it (a request timeout set
/// higher) only lets a redelivery apply the event a second time, its token keeping either
/// from undoing the other's claim.
pub(crate) const EVENT_LEASE: Duration = Duration::from_secs(30);

/// The answer to a redelivery while another claim on it runs: retry later.
pub(crate) fn being_applied(source: &str, id: &str) -> StoreError {
    StoreError::Busy(format!(
        "{source} event {id} is being applied by another delivery; retry later"
    ))
}

/// What became of a provider notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notified {
    Applied,
    /// Seen before (SNS and SQS deliver at least once), or a delivery report that changed
    /// nothing (its message was delivered already, or has moved past it): nothing done.
    Repeat,
    /// Some of its events wait for their message's `sent` (or for a message Herald does not
    /// know yet): parked, and applied when that `sent` is recorded.
    Parked,
}

impl Herald {
    /// Applies a provider notification once, by the provider's id for it: the same processor
    /// as the sandbox's callbacks, with de-duplication in front.
    pub async fn apply_notification(
        &self,
        source: &str,
        id: &str,
        events: Vec<ProviderEvent>,
    ) -> Result<Notified, StoreError> {
        // A delivery is a conditional state change (`sent` -> `delivered`): applied again it
        // is refused, so it needs no marker (a write per message saved). Others append to the
        // timeline or add suppressions, and are marked.
        let marked = !events
            .iter()
            .all(|e| e.kind == ProviderEventKind::Delivered);
        let claim = match marked {
            false => None,
            true => match self.events.claim_event(source, id, EVENT_LEASE).await? {
                EventClaim::First(token) => Some(token),
                EventClaim::Parked(token) => {
                    return self.release_untried(source, id, token, &events).await
                }
                EventClaim::Applied => return Ok(Notified::Repeat),
                EventClaim::Applying => return Err(being_applied(source, id)),
            },
        };
        let (early, changed) = match try_apply(self, &events).await {
            Ok(recorded) => (waiting(events, &recorded.wait), recorded.changed),
            Err(e) => return self.unseen(claim, source, id, e).await,
        };
        let notified = if early.is_empty() {
            // Deliveries are not marked: one that changed nothing came before, or too late.
            match marked || changed {
                true => Notified::Applied,
                false => Notified::Repeat,
            }
        } else {
            match self.park(early).await {
                Ok(AfterParking::Tried) => Notified::Parked,
                Ok(AfterParking::Untried(e)) => return self.untried(claim, source, id, e).await,
                Err(e) => return self.unseen(claim, source, id, e).await,
            }
        };
        if let Some(token) = claim {
            // Unmarked, the claim runs out with its lease and a redelivery applies the event
            // again: a timeline entry twice, never one lost.
            let marking = self.events.event_applied(source, id, token, EVENT_ID_KEEP);
            if let Err(e) = marking.await {
                warn!(source, id, error = %e, "an applied event was not marked");
            }
        }
        Ok(notified)
    }

    /// Releases the claim on a notification that failed, so the provider's retry is not
    /// taken for a repeat.
    async fn unseen(
        &self,
        claim: Option<ClaimToken>,
        source: &str,
        id: &str,
        e: StoreError,
    ) -> Result<Notified, StoreError> {
        if let Some(token) = claim {
            self.events.release_event(source, id, token).await?;
        }
        Err(e)
    }
}

/// Herald's id for each event: echoed by the provider, or looked up by the provider's id.
async fn resolve_ids(
    herald: &Herald,
    events: &[ProviderEvent],
) -> Result<Vec<Option<MessageId>>, crate::ports::StoreError> {
    let keys: Vec<(String, String)> = events
        .iter()
        .filter(|e| e.message_id.is_none())
        .map(|e| (e.gateway.clone(), e.provider_message_id.clone()))
        .collect();
    let mut found = if keys.is_empty() {
        Vec::new()
    } else {
        herald.store.find_by_provider_ids(keys).await?
    }
    .into_iter();
    Ok(events
        .iter()
        .map(|e| e.message_id.or_else(|| found.next().flatten()))
        .collect())
}

/// What a provider event's timeline entry says: the gateway, its id, and the provider's detail.
fn event_detail(event: &ProviderEvent) -> serde_json::Value {
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
    detail
}

fn transition_for(id: MessageId, event: &ProviderEvent) -> Transition {
    let to = target_status(event.kind);
    let mut t = Transition::new(id, to, event.at);
    t.detail = event_detail(event);
    if to == MessageStatus::Failed {
        t.last_error = event
            .detail
            .get("error")
            .and_then(|e| e.as_str())
            .map(str::to_owned);
    }
    t
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    #![allow(clippy::unwrap_used)]
    use chrono::Utc;

    use super::{apply_batch, Notified};
    use crate::domain::{EventKind, MessageStatus, Priority};
    use crate::embedded::{Embedded, EmbeddedConfig};
    use crate::ports::contract::{accept, claim_now, message, sent_under, tenant};
    use crate::ports::{ProviderEvent, ProviderEventKind};

    fn webhook_event(provider_id: &str, kind: ProviderEventKind) -> ProviderEvent {
        ProviderEvent {
            gateway: "ses".into(),
            provider_message_id: provider_id.into(),
            message_id: None, // a real provider's webhook: only its own id
            kind,
            at: Utc::now(),
            detail: serde_json::Value::Null,
        }
    }

    /// Only the store and the engine: nothing claims or sends behind the test's back.
    async fn without_workers(dir: &std::path::Path) -> Embedded {
        let mut cfg = EmbeddedConfig::new(dir);
        cfg.run_workers = false;
        Embedded::start(cfg).await.unwrap()
    }

    #[tokio::test]
    async fn events_without_herald_id_are_found_by_provider_id() {
        let dir = tempfile::tempdir().unwrap();
        let embedded = without_workers(dir.path()).await;
        let herald = embedded.herald.clone();
        let t = tenant("acme");
        let id = accept(&*herald.store, message(&t, Priority::P4)).await;
        let claimed = claim_now(&*herald.store, id, Priority::P4).await;
        let sent = sent_under(&claimed, "ses", "0100-abc");
        herald.store.transition(vec![sent]).await.unwrap();

        let left = apply_batch(
            &herald,
            vec![
                webhook_event("0100-abc", ProviderEventKind::Delivered),
                webhook_event("0100-unknown", ProviderEventKind::Delivered),
            ],
        )
        .await;
        assert_eq!(left.len(), 1, "the unknown id waits for its message");
        assert_eq!(left[0].provider_message_id, "0100-unknown");
        let (m, events) = herald.store.get(&t, id).await.unwrap().unwrap();
        assert_eq!(m.status, MessageStatus::Delivered);
        assert_eq!(
            events.last().map(|e| e.kind),
            Some(MessageStatus::Delivered.into())
        );
        embedded.shutdown().await;
    }

    /// A delivery delay reported while its message is still being handed over waits for its
    /// `sent`, as other events do: it was dropped (noted nowhere, and marked as applied).
    #[tokio::test]
    async fn a_delay_reported_before_sent_is_noted_once_sent_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let embedded = without_workers(dir.path()).await;
        let herald = embedded.herald.clone();
        let t = tenant("acme");
        let id = accept(&*herald.store, message(&t, Priority::P2)).await;
        let claimed = claim_now(&*herald.store, id, Priority::P2).await;
        let delayed = ProviderEvent {
            message_id: Some(id), // SES names the message
            ..webhook_event("0100-slow", ProviderEventKind::Delayed)
        };
        let notified = herald.apply_notification("test", "delay-1", vec![delayed]);
        assert_eq!(notified.await.unwrap(), Notified::Parked);

        let sent = sent_under(&claimed, "ses", "0100-slow");
        let outcomes = herald.store.transition(vec![sent.clone()]).await.unwrap();
        assert!(herald.after_recorded(&sent, outcomes.first()).await);
        let (m, events) = herald.store.get(&t, id).await.unwrap().unwrap();
        assert_eq!(m.status, MessageStatus::Sent);
        let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
        assert_eq!(kinds.last(), Some(&EventKind::DeliveryDelayed), "{kinds:?}");
        let left = herald.events.parked("ses", "0100-slow", None);
        let left = left.await.unwrap();
        assert!(left.mark.is_none(), "forgotten once noted: {left:?}");
        embedded.shutdown().await;
    }
}
