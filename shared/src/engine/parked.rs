//! Provider events that come before their message's `sent` is recorded: a callback can overtake
//! the hand-off's bookkeeping, and not every provider retries (Twilio does not; the sandbox
//! never does). They are parked in the store under their gateway and provider message id and
//! applied when that `sent` is recorded, on whichever instance records it, so none is dropped.
//! Events whose message never gets a `sent` (sent outside Herald, or a hand-off whose answer
//! was lost and which went out again under another id) expire after [`PARK_KEEP`].

use std::collections::BTreeMap;
use std::time::Duration;

use tracing::{info, warn};

use super::tracker::{apply_batch, try_apply};
use super::Herald;
use crate::domain::{MessageId, MessageStatus};
use crate::ports::{ProviderEvent, StoreError, Transition, TransitionOutcome};

/// How long a parked event waits: a hand-off records `sent` within seconds, or (if its answer
/// was lost) never.
pub(crate) const PARK_KEEP: Duration = Duration::from_secs(24 * 3600);

impl Herald {
    /// Parks events that wait for their message's `sent`. A `sent` recorded while they were
    /// being parked found nothing to release, so each provider message is tried once more.
    pub(crate) async fn park(&self, events: Vec<ProviderEvent>) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        self.events.park(&events, PARK_KEEP).await?;
        for ((gateway, provider_id), group) in by_provider_message(events) {
            // All applied now: `sent` is recorded, so the parked copies come back out (with any
            // that others parked meanwhile), these skipped.
            if try_apply(self, &group)
                .await
                .is_ok_and(|r| !r.wait.contains(&true))
            {
                self.release(&gateway, &provider_id, None, group).await;
            } else {
                info!(gateway, provider_message_id = %provider_id, parked = group.len(),
                      "provider events parked until their message is recorded as sent");
            }
        }
        Ok(())
    }

    /// After a recorded transition: a `sent` releases what was parked for its provider id.
    pub(crate) async fn after_recorded(&self, t: &Transition, outcome: Option<&TransitionOutcome>) {
        // `AppliedNothingParked`: applied, with nothing to release.
        if t.to != MessageStatus::Sent || outcome != Some(&TransitionOutcome::Applied) {
            return;
        }
        if let (Some(gateway), Some(provider_id)) = (&t.gateway, &t.provider_message_id) {
            self.release(gateway, provider_id, Some(t.id), Vec::new())
                .await;
        }
    }

    /// Takes what is parked for a provider message and applies it, but for `applied` (already
    /// applied by the caller). `message` is the message now recorded as sent under that id: a
    /// look-up by provider id might not see it yet.
    async fn release(
        &self,
        gateway: &str,
        provider_id: &str,
        message: Option<MessageId>,
        applied: Vec<ProviderEvent>,
    ) {
        let taken = match self.events.take_parked(gateway, provider_id).await {
            Ok(taken) => taken,
            Err(e) => {
                warn!(gateway, provider_message_id = %provider_id, error = %e,
                      "parked provider events not taken; they stay parked");
                return;
            }
        };
        let mut rest = without(taken, applied);
        if rest.is_empty() {
            return;
        }
        for event in &mut rest {
            event.message_id = event.message_id.or(message);
        }
        info!(gateway, provider_message_id = %provider_id, count = rest.len(), "parked provider events applied");
        let left = apply_batch(self, rest).await;
        if !left.is_empty() {
            warn!(gateway, provider_message_id = %provider_id, count = left.len(),
                  "released provider events could not be applied; parked again");
            if let Err(e) = self.events.park(&left, PARK_KEEP).await {
                warn!(error = %e, count = left.len(), "provider events lost: not parked again");
            }
        }
    }
}

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

/// `taken` without one occurrence of each event in `applied`, in order.
fn without(taken: Vec<ProviderEvent>, mut applied: Vec<ProviderEvent>) -> Vec<ProviderEvent> {
    taken
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
