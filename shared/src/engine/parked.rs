//! Provider events that come before their message's `sent` is recorded: a callback can overtake
//! the hand-off's bookkeeping, and not every provider retries (Twilio does not; the sandbox
//! never does). They are parked in the store under their gateway and provider message id and
//! applied when that `sent` is recorded, on whichever instance records it, so none is dropped.
//! They are forgotten only once applied; what a stopped process left parked is applied at the
//! next start (embedded) or at its lane entry's redelivery (AWS).
//! Events whose message never gets a `sent` (sent outside Herald, or a hand-off whose answer
//! was lost and which went out again under another id) expire after [`PARK_KEEP`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::tracker::{not_recorded, try_apply, Notified, EVENT_ID_KEEP};
use super::Herald;
use crate::domain::{MessageId, MessageStatus};
use crate::ports::{ClaimToken, ProviderEvent, StoreError, Transition, TransitionOutcome};

/// How long a parked event waits: a hand-off records `sent` within seconds, or (if its answer
/// was lost) never.
pub(crate) const PARK_KEEP: Duration = Duration::from_secs(24 * 3600);

impl Herald {
    /// Parks events that wait for their message's `sent`. A `sent` recorded while they were
    /// being parked found nothing to release, so each provider message is tried once more.
    /// An error when parking failed (SQLite parks all or nothing; DynamoDB one write per
    /// event, so some may be parked); `Untried` when all is parked, but some of it may have
    /// missed its release (the try after parking failed, and a release too).
    pub(crate) async fn park(
        &self,
        events: Vec<ProviderEvent>,
    ) -> Result<AfterParking, StoreError> {
        if events.is_empty() {
            return Ok(AfterParking::Tried);
        }
        // A message the store knows as sent under a provider id is named here: the look-up by
        // provider id may not see it yet (DynamoDB's index catches up a moment later).
        let sent = self.events.park(&events, PARK_KEEP).await?;
        let mut after = AfterParking::Tried;
        for ((gateway, provider_id), group) in by_provider_message(events) {
            let known = sent.get(&(gateway.clone(), provider_id.clone())).copied();
            match try_apply(self, &named(&group, known)).await {
                // All applied now: `sent` is recorded, so the parked copies come back out (with
                // any that others parked meanwhile), these skipped. What others parked is also
                // theirs to apply (each parker tries again after parking), or the `sent`'s
                // dispatch's.
                Ok(r) if !r.wait.contains(&true) => {
                    let released = self.release(&gateway, &provider_id, None, group).await;
                    if !matches!(released, Released::All) {
                        warn!(gateway, provider_message_id = %provider_id,
                              "provider events parked for a sent message left parked");
                    }
                }
                Ok(_) => {
                    info!(gateway, provider_message_id = %provider_id, parked = group.len(),
                          "provider events parked until their message is recorded as sent");
                }
                // Its `sent` may have been recorded and released already. One more try, as a
                // release, which forgets what it applies: the provider's retry would apply
                // these events again beside their parked copies.
                Err(e) => {
                    warn!(gateway, provider_message_id = %provider_id, error = %e,
                          "parked provider events not tried again; trying them as a release");
                    if let Released::Failed(e) =
                        self.release(&gateway, &provider_id, None, Vec::new()).await
                    {
                        after = AfterParking::Untried(e);
                    }
                }
            }
        }
        Ok(after)
    }

    /// Gives up the claim on a notification whose parked events were not tried after
    /// parking (the store failed), saying so: the provider's retry releases them instead of
    /// applying them afresh beside their parked copies. Its other events are applied.
    pub(crate) async fn untried(
        &self,
        claim: Option<ClaimToken>,
        source: &str,
        id: &str,
        e: StoreError,
    ) -> Result<Notified, StoreError> {
        // Unclaimed (deliveries only), a retry applied afresh changes no state twice.
        let Some(token) = claim else {
            return Err(e);
        };
        // The store has just failed twice: the note is worth a few more tries.
        for pause in NOTE_RETRIES {
            match self.events.event_parked(source, id, token, PARK_KEEP).await {
                Ok(()) => return Err(e),
                Err(not_noted) => {
                    warn!(source, id, error = %not_noted, "a notification's untried parked events not noted yet");
                    tokio::time::sleep(pause).await;
                }
            }
        }
        // The claim runs out with its lease, and the retry applies afresh.
        warn!(
            source,
            id,
            "a notification's untried parked events were not noted; its retry may apply them twice"
        );
        Err(e)
    }

    /// The retry of a notification whose earlier try parked events and failed before it
    /// tried them (see [`Herald::untried`]): what is parked for its provider messages is
    /// released, applied once and forgotten. Nothing is applied afresh: that try applied
    /// what it did not park.
    pub(crate) async fn release_untried(
        &self,
        source: &str,
        id: &str,
        token: ClaimToken,
        events: &[ProviderEvent],
    ) -> Result<Notified, StoreError> {
        let messages: std::collections::BTreeSet<(&str, &str)> = events
            .iter()
            .map(|e| (e.gateway.as_str(), e.provider_message_id.as_str()))
            .collect();
        let mut waiting = false;
        for (gateway, provider_id) in messages {
            match self.release(gateway, provider_id, None, Vec::new()).await {
                Released::All => {}
                Released::Waiting => waiting = true,
                Released::Failed(e) => return self.untried(Some(token), source, id, e).await,
            }
        }
        let marking = self.events.event_applied(source, id, token, EVENT_ID_KEEP);
        if let Err(e) = marking.await {
            warn!(source, id, error = %e, "an applied event was not marked");
        }
        Ok(match waiting {
            true => Notified::Parked,
            false => Notified::Applied,
        })
    }

    /// After a recorded transition: a `sent` releases what was parked for its provider id.
    /// False when some of it could not be applied: it stays parked, for a retry.
    pub(crate) async fn after_recorded(
        &self,
        t: &Transition,
        outcome: Option<&TransitionOutcome>,
    ) -> bool {
        match released_by(t, outcome) {
            Some((gateway, provider_id)) => {
                self.release_parked(gateway, provider_id, Some(t.id)).await
            }
            None => true,
        }
    }

    /// As [`Herald::after_recorded`], retried in the background a few times when it could not
    /// apply everything (the embedded workers; a Lambda's redelivery retries instead, see
    /// `dispatch.rs`). What is still parked after that is applied at the next start.
    pub(crate) async fn after_recorded_or_retry(
        self: &Arc<Self>,
        t: &Transition,
        outcome: Option<&TransitionOutcome>,
    ) {
        let Some((gateway, provider_id)) = released_by(t, outcome) else {
            return;
        };
        let id = t.id;
        if self.release_parked(gateway, provider_id, Some(id)).await {
            return;
        }
        // Weak: the retries hold nothing open once the process stops.
        let (herald, gateway, provider_id) = (
            Arc::downgrade(self),
            gateway.to_owned(),
            provider_id.to_owned(),
        );
        tokio::spawn(async move {
            for delay in RELEASE_RETRIES {
                tokio::time::sleep(delay).await;
                let Some(herald) = herald.upgrade() else {
                    return;
                };
                if herald
                    .release_parked(&gateway, &provider_id, Some(id))
                    .await
                {
                    return;
                }
            }
            warn!(%id, "parked provider events still not applied; they are at the next start");
        });
    }

    /// Applies what is parked for a provider message whose `sent` may be recorded (a sweep
    /// at start-up; a redelivered dispatch, which knows the message); false when some of it
    /// could not be applied.
    pub async fn release_parked(
        &self,
        gateway: &str,
        provider_id: &str,
        message: Option<MessageId>,
    ) -> bool {
        let released = self.release(gateway, provider_id, message, Vec::new());
        matches!(released.await, Released::All)
    }

    /// Applies what is parked for a provider message but `applied` (already applied by the
    /// caller), then forgets it: a crash or a failure in between leaves it parked, to be
    /// applied again. A repeat changes no message's state (each transition is conditional
    /// on it), but may add a `delivery_delayed` note again, and count a bounce again towards
    /// warm-up; it happens only when a release was cut short, or raced another process's
    /// (releases in one process take turns: [`ReleaseLocks`]).
    /// `message` is the message now recorded as sent under that id: a look-up by provider id
    /// might not see it yet.
    async fn release(
        &self,
        gateway: &str,
        provider_id: &str,
        message: Option<MessageId>,
        applied: Vec<ProviderEvent>,
    ) -> Released {
        let _one_at_a_time = self.release_locks.hold(gateway, provider_id).await;
        let parked = match self.events.parked(gateway, provider_id, message).await {
            Ok(parked) => parked,
            Err(e) => {
                warn!(gateway, provider_message_id = %provider_id, error = %e,
                      "parked provider events not read; they stay parked");
                return Released::Failed(e);
            }
        };
        let Some(mark) = parked.mark else {
            return Released::All;
        };
        let rest = named(&without(parked.events, applied), message.or(parked.sent));
        if !rest.is_empty() {
            info!(gateway, provider_message_id = %provider_id, count = rest.len(), "parked provider events applied");
        }
        let waiting = match try_apply(self, &rest).await {
            Ok(recorded) => recorded.wait.contains(&true),
            Err(e) => {
                not_recorded(&e, rest.len());
                return Released::Failed(e);
            }
        };
        if waiting {
            // Their message is not recorded as sent (yet): its `sent` releases them.
            info!(gateway, provider_message_id = %provider_id,
                  "parked provider events not all applied; they stay parked");
            return Released::Waiting;
        }
        if let Err(e) = self.events.forget_parked(gateway, provider_id, mark).await {
            // Applied: a later release applies them again, which changes no state.
            warn!(gateway, provider_message_id = %provider_id, error = %e,
                  "applied parked provider events not forgotten");
        }
        Released::All
    }
}

/// Releases of one provider message's parked events run one at a time in a process: two at
/// once would both read and apply them before either forgot them. Embedded, that is every
/// release; on AWS, releases in other instances can still race (`docs/providers.md`).
pub(crate) struct ReleaseLocks([tokio::sync::Mutex<()>; RELEASE_LOCKS]);

const RELEASE_LOCKS: usize = 32;

impl Default for ReleaseLocks {
    fn default() -> Self {
        ReleaseLocks(std::array::from_fn(|_| tokio::sync::Mutex::new(())))
    }
}

impl ReleaseLocks {
    async fn hold(&self, gateway: &str, provider_id: &str) -> tokio::sync::MutexGuard<'_, ()> {
        use std::hash::{Hash, Hasher};
        let mut h = rustc_hash::FxHasher::default();
        (gateway, provider_id).hash(&mut h);
        self.0[h.finish() as usize % RELEASE_LOCKS].lock().await
    }
}

/// What became of events parked by [`Herald::park`].
#[derive(Debug)]
pub(crate) enum AfterParking {
    /// Each provider message was tried again after parking (applied, or left parked for its
    /// `sent`, which releases it).
    Tried,
    /// Some were not (this store failure, twice): they may have missed their `sent`'s release,
    /// so whoever parked them releases them later, rather than apply them afresh.
    Untried(StoreError),
}

/// What a release of parked events did.
#[derive(Debug)]
pub(crate) enum Released {
    /// Everything read is applied and forgotten (or nothing was parked).
    All,
    /// Some events still wait for their message's `sent`: they stay parked for it.
    Waiting,
    /// The store failed: what was read stays parked.
    Failed(StoreError),
}

/// The gateway and provider id whose parked events a recorded transition releases: a `sent`
/// applied (`AppliedNothingParked`: applied, with nothing to release) under a provider id.
fn released_by<'t>(
    t: &'t Transition,
    outcome: Option<&TransitionOutcome>,
) -> Option<(&'t str, &'t str)> {
    if t.to != MessageStatus::Sent || outcome != Some(&TransitionOutcome::Applied) {
        return None;
    }
    Some((t.gateway.as_deref()?, t.provider_message_id.as_deref()?))
}

/// The pauses after each failed try to note a notification's untried parked events: short,
/// as a webhook's provider waits for the answer.
const NOTE_RETRIES: [Duration; 3] = [
    Duration::from_millis(50),
    Duration::from_millis(200),
    Duration::ZERO,
];

/// When a release that could not apply everything is tried again.
const RELEASE_RETRIES: [Duration; 4] = [
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(30),
    Duration::from_secs(120),
];

/// Events grouped by (gateway, provider message id), each group in arrival order.
fn by_provider_message(
    events: Vec<ProviderEvent>,
) -> BTreeMap<(String, String), Vec<ProviderEvent>> {
    let mut groups: BTreeMap<(String, String), Vec<ProviderEvent>> = BTreeMap::new();
    for e in events {
        let key = (e.gateway.clone(), e.provider_message_id.clone());
        groups.entry(key).or_default().push(e);
    }
    groups
}

/// The events, each naming `message` where it names none.
fn named(events: &[ProviderEvent], message: Option<MessageId>) -> Vec<ProviderEvent> {
    let name = |e: &ProviderEvent| ProviderEvent {
        message_id: e.message_id.or(message),
        ..e.clone()
    };
    events.iter().map(name).collect()
}

/// `parked` without one occurrence of each event in `applied`, in order.
fn without(parked: Vec<ProviderEvent>, mut applied: Vec<ProviderEvent>) -> Vec<ProviderEvent> {
    parked
        .into_iter()
        .filter(|e| match applied.iter().position(|a| a == e) {
            Some(at) => {
                applied.swap_remove(at);
                false
            }
            None => true,
        })
        .collect()
}

#[cfg(all(test, feature = "sqlite"))]
mod restart_tests {
    use std::time::Duration;

    use chrono::Utc;

    use crate::domain::{MessageStatus, Priority};
    use crate::embedded::{Embedded, EmbeddedConfig};
    use crate::ports::contract::{accept, claim_now, message, sent_under, tenant};
    use crate::ports::{ProviderEvent, ProviderEventKind};

    /// A process that recorded a `sent` and stopped before it applied the events parked for
    /// it: the next start applies them, and forgets them.
    #[tokio::test]
    async fn events_parked_for_a_sent_left_unapplied_are_applied_at_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let start = || {
            let mut cfg = EmbeddedConfig::new(dir.path());
            cfg.run_workers = false;
            Embedded::start(cfg)
        };
        let embedded = start().await.unwrap();
        let herald = embedded.herald.clone();
        let t = tenant("acme");
        let id = accept(&*herald.store, message(&t, Priority::P2)).await;
        let claimed = claim_now(&*herald.store, id, Priority::P2).await;
        let bounced = ProviderEvent {
            gateway: "ses".into(),
            provider_message_id: "0100-parked".into(),
            message_id: None,
            kind: ProviderEventKind::Bounced { permanent: true },
            at: Utc::now(),
            detail: serde_json::json!({ "why": "came before its sent" }),
        };
        herald
            .events
            .park(&[bounced], super::PARK_KEEP)
            .await
            .unwrap();
        // Recorded straight in the store: nothing released what was parked.
        let sent = sent_under(&claimed, "ses", "0100-parked");
        herald.store.transition(vec![sent]).await.unwrap();
        embedded.shutdown().await;

        let embedded = start().await.unwrap();
        let herald = embedded.herald.clone();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        // Applied, then forgotten.
        loop {
            let (m, _) = herald.store.get(&t, id).await.unwrap().unwrap();
            let left = herald.events.parked("ses", "0100-parked", None);
            let left = left.await.unwrap();
            if m.status == MessageStatus::Bounced && left.mark.is_none() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{}, {left:?}",
                m.status
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        embedded.shutdown().await;
    }
}

#[cfg(all(test, feature = "sqlite"))]
mod race_tests {
    use chrono::Utc;

    use crate::domain::{EventKind, Priority};
    use crate::embedded::{Embedded, EmbeddedConfig};
    use crate::ports::contract::{accept, claim_now, message, sent_under, tenant};
    use crate::ports::{ProviderEvent, ProviderEventKind};

    /// Two releases of one provider message at once (a dispatch's and the start-up's, say):
    /// one applies what is parked, the other finds it forgotten.
    #[tokio::test]
    async fn releases_at_once_apply_parked_events_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = EmbeddedConfig::new(dir.path());
        cfg.run_workers = false;
        let embedded = Embedded::start(cfg).await.unwrap();
        embedded.parked_swept().await;
        let herald = embedded.herald.clone();
        let t = tenant("acme");
        let id = accept(&*herald.store, message(&t, Priority::P2)).await;
        let claimed = claim_now(&*herald.store, id, Priority::P2).await;
        let delayed = ProviderEvent {
            gateway: "ses".into(),
            provider_message_id: "0100-raced".into(),
            message_id: None,
            kind: ProviderEventKind::Delayed,
            at: Utc::now(),
            detail: serde_json::json!({ "why": "mailbox full" }),
        };
        herald
            .events
            .park(&[delayed], super::PARK_KEEP)
            .await
            .unwrap();
        let sent = sent_under(&claimed, "ses", "0100-raced");
        herald.store.transition(vec![sent]).await.unwrap();

        let release = || herald.release_parked("ses", "0100-raced", None);
        assert_eq!(tokio::join!(release(), release()), (true, true));
        let (_, events) = herald.store.get(&t, id).await.unwrap().unwrap();
        let delays = events
            .iter()
            .filter(|e| e.kind == EventKind::DeliveryDelayed);
        assert_eq!(delays.count(), 1);
        embedded.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::without;
    use crate::ports::{ProviderEvent, ProviderEventKind};

    fn event(kind: ProviderEventKind) -> ProviderEvent {
        ProviderEvent {
            gateway: "twilio".into(),
            provider_message_id: "SM1".into(),
            message_id: None,
            kind,
            at: Utc::now(),
            detail: serde_json::json!({ "status": "x" }),
        }
    }

    #[test]
    fn events_already_applied_are_not_applied_again() {
        let delivered = event(ProviderEventKind::Delivered);
        let opened = event(ProviderEventKind::Opened);
        let taken = vec![delivered.clone(), opened.clone(), delivered.clone()];
        assert_eq!(
            without(taken, vec![delivered.clone()]),
            vec![opened, delivered]
        );
    }
}
