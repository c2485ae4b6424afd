//! Events out: the engine announces what happens ([`Herald::notify`]), and the notifier
//! ([`deliver`]) fans each event out to the tenant's endpoints and delivers it, signed per the
//! Standard Webhooks specification, with retries.
//!
//! Nothing here is on the send path's clock: an event whose tenant has no endpoint that wants
//! it is dropped by an in-memory check, and the rest are handed to a queue that a background
//! task writes to the outbox in batches.

mod bulk;
pub mod deliver;
mod endpoints;
mod forward;
pub mod guard;
pub mod runner;
pub mod stream;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use tokio::sync::mpsc;

use super::Herald;
use crate::domain::notify::Subject;
use crate::domain::notify::{EventType, Notice, RetrySchedule, WebhookEndpoint};
use crate::domain::suppression::Suppression;
use crate::domain::{Channel, EventKind, MessageId, TenantId};
use crate::ports::StoreError;
use crate::ports::{Transition, TransitionOutcome};
use chrono::{DateTime, Utc};

pub use endpoints::EndpointError;
pub use forward::{Concerns, ForwardPatch, NewForward};
pub use guard::{AddressPolicy, DevAllowList};

#[derive(Debug, Clone)]
pub struct NotifyConfig {
    pub policy: AddressPolicy,
    /// What development forwards may reach beyond the public internet.
    pub dev_allow: guard::DevAllowList,
    pub retries: RetrySchedule,
    /// An endpoint that has not answered within this failed the attempt.
    pub timeout: Duration,
    /// How long a replaced secret keeps signing beside the new one.
    pub secret_overlap: Duration,
    /// An endpoint whose every delivery failed for this long is turned off.
    pub disable_after: Duration,
    /// How often the notifier looks for due retries when nothing wakes it.
    pub poll: Duration,
    pub max_endpoints_per_tenant: usize,
    /// How stale the list of who wants which events may be (each process keeps its own).
    pub subscriptions_refresh: Duration,
    pub streams: stream::StreamConfig,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            policy: AddressPolicy::default(),
            dev_allow: guard::DevAllowList::default(),
            retries: RetrySchedule::default(),
            timeout: Duration::from_secs(10),
            secret_overlap: Duration::from_secs(24 * 3600),
            disable_after: Duration::from_secs(3 * 24 * 3600),
            poll: Duration::from_millis(500),
            max_endpoints_per_tenant: 20,
            subscriptions_refresh: Duration::from_secs(2),
            streams: stream::StreamConfig::default(),
        }
    }
}

/// Which tenants want which event types: every enabled endpoint, read at most every
/// `subscriptions_refresh` (and at once after a change through this process's API).
#[derive(Default)]
pub(crate) struct Subscriptions {
    snapshot: RwLock<Option<Arc<Snapshot>>>,
    /// Reads started so far: a read replaces the snapshot only if none that started after it
    /// already did, so a slow read from before a change cannot hide the change.
    reads: AtomicU64,
}

impl Subscriptions {
    fn start_read(&self) -> u64 {
        self.reads.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Keeps `fresh` unless a read started after it was kept first; returns what is kept.
    fn keep(&self, fresh: Snapshot) -> Arc<Snapshot> {
        let mut kept = self.snapshot.write();
        if let Some(newer) = kept.as_ref().filter(|k| k.read > fresh.read) {
            return newer.clone();
        }
        let fresh = Arc::new(fresh);
        *kept = Some(fresh.clone());
        fresh
    }
}

pub struct Snapshot {
    pub endpoints: Vec<WebhookEndpoint>,
    masks: HashMap<TenantId, u32>,
    any: u32,
    /// Whether anyone wants a Herald event (not a forwarded provider webhook): read on the
    /// send path, so worked out once per snapshot.
    any_event: bool,
    loaded: Instant,
    /// Which read this is (see [`Subscriptions::reads`]).
    read: u64,
}

fn bit(t: EventType) -> u32 {
    1 << EventType::ALL.iter().position(|x| *x == t).unwrap_or(31)
}

impl Snapshot {
    fn new(mut endpoints: Vec<WebhookEndpoint>, read: u64) -> Snapshot {
        let now = Utc::now();
        endpoints.retain(|ep| ep.is_live(now));
        let mut masks: HashMap<TenantId, u32> = HashMap::new();
        for ep in &endpoints {
            let mask = EventType::ALL
                .into_iter()
                .filter(|t| ep.wants(*t))
                .fold(0, |m, t| m | bit(t));
            *masks.entry(ep.tenant.clone()).or_default() |= mask;
        }
        let any = masks.values().fold(0, |m, v| m | v);
        let any_event = EventType::ALL
            .into_iter()
            .any(|t| !t.is_forward() && any & bit(t) != 0);
        Snapshot {
            endpoints,
            masks,
            any,
            any_event,
            loaded: Instant::now(),
            read,
        }
    }

    /// Whether anyone may want `n`: its tenant, or any tenant when the notice does not say.
    fn wants(&self, n: &Notice) -> bool {
        self.mask_of(n.tenant.as_ref()) & bit(n.event_type) != 0
    }

    /// The event types `tenant` wants (any tenant's for `None`), one bit each.
    fn mask_of(&self, tenant: Option<&TenantId>) -> u32 {
        match tenant {
            Some(t) => self.masks.get(t).copied().unwrap_or(0),
            None => self.any,
        }
    }
}

/// The queue between the engine and the outbox writer.
pub(crate) struct Outbox {
    tx: mpsc::Sender<Vec<Notice>>,
    rx: Mutex<Option<mpsc::Receiver<Vec<Notice>>>>,
    /// Set once the notifier took `rx`; until then notices are written directly.
    running: AtomicBool,
    pub(crate) subscriptions: Subscriptions,
    pub(crate) open_streams: stream::OpenStreams,
}

impl Default for Outbox {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(4096);
        Outbox {
            tx,
            rx: Mutex::new(Some(rx)),
            running: AtomicBool::new(false),
            subscriptions: Subscriptions::default(),
            open_streams: stream::OpenStreams::default(),
        }
    }
}

impl Herald {
    /// The events some endpoint wants (all of them while the subscriptions are not read yet:
    /// the fan-out drops what nobody wants).
    async fn wanted(&self, notices: Vec<Notice>) -> Vec<Notice> {
        match self.current_subscriptions().await {
            Some(s) => notices.into_iter().filter(|n| s.wants(n)).collect(),
            None => notices,
        }
    }

    /// Announces events and returns once they are in the outbox: for a caller that must know
    /// (a failure is an error it can retry; the events' ids make a retry harmless).
    pub async fn notify_durably(&self, notices: Vec<Notice>) -> Result<(), StoreError> {
        let Some(store) = &self.webhooks else {
            return Ok(());
        };
        let wanted = self.wanted(notices).await;
        if wanted.is_empty() {
            return Ok(());
        }
        metrics::counter!("herald_webhook_events_total").increment(wanted.len() as u64);
        store.publish(wanted).await
    }

    /// Announces events. Those no endpoint wants are dropped here; the rest are queued for the
    /// outbox and this returns at once.
    pub async fn notify(&self, notices: Vec<Notice>) {
        let Some(store) = &self.webhooks else { return };
        let mut wanted = self.wanted(notices).await;
        if wanted.is_empty() {
            return;
        }
        metrics::counter!("herald_webhook_events_total").increment(wanted.len() as u64);
        if self.outbox.running.load(Ordering::Acquire) {
            match self.outbox.tx.send(wanted).await {
                Ok(()) => return,
                Err(tokio::sync::mpsc::error::SendError(back)) => {
                    tracing::warn!("the notifier stopped; writing events to the outbox directly");
                    wanted = back;
                }
            }
        }
        let count = wanted.len() as u64;
        if let Err(e) = store.publish(wanted).await {
            metrics::counter!("herald_webhook_events_dropped_total").increment(count);
            tracing::error!(error = %e, "events not written to the outbox");
        }
    }

    /// Announces a suppression added (with its entry) or removed, to `tenant`'s endpoints.
    pub async fn notify_suppression(
        &self,
        tenant: &TenantId,
        channel: Channel,
        address: &str,
        added: Option<&Suppression>,
    ) {
        let mut data = serde_json::json!({ "channel": channel, "address": address });
        let event_type = match added {
            Some(entry) => {
                data["reason"] = entry.reason.as_str().into();
                data["scope"] = entry.scope.label().into();
                data["source"] = entry.source.clone().into();
                data["expires_at"] = serde_json::to_value(entry.expires_at).unwrap_or_default();
                EventType::SuppressionAdded
            }
            None => EventType::SuppressionRemoved,
        };
        let n = Notice::new(Some(tenant.clone()), event_type, Subject::Data { data });
        self.notify(vec![n]).await;
    }

    /// Announces a message's timeline entry (see [`Notice::of_message`]).
    pub async fn notify_message(
        &self,
        tenant: Option<&TenantId>,
        id: MessageId,
        kind: EventKind,
        at: DateTime<Utc>,
        detail: &serde_json::Value,
    ) {
        if self.nobody_listens().await {
            return;
        }
        if let Some(n) = Notice::of_message(tenant.cloned(), id, kind, at, detail.clone()) {
            self.notify(vec![n]).await;
        }
    }

    /// Announces the transitions a store applied (outcomes in the same order). Holds are not
    /// events; transitions whose tenant the caller did not know are looked up by the notifier.
    pub(crate) async fn announce(
        &self,
        transitions: &[Transition],
        outcomes: &[TransitionOutcome],
    ) {
        if self.nobody_listens().await {
            return;
        }
        let notices: Vec<Notice> = transitions
            .iter()
            .zip(outcomes)
            .filter(|(t, o)| {
                !t.hold
                    && matches!(
                        o,
                        TransitionOutcome::Applied | TransitionOutcome::AppliedNothingParked
                    )
            })
            .filter_map(|(t, _)| {
                Notice::of_message(t.tenant.clone(), t.id, t.to.into(), t.at, t.detail.clone())
            })
            .collect();
        if !notices.is_empty() {
            self.notify(notices).await;
        }
    }

    /// Which of `types` any of the tenant's endpoints or streams wants, as far as this process
    /// knows (when it has not read them yet, each: the fan-out drops what no one wants).
    pub(crate) async fn tenant_wants<const N: usize>(
        &self,
        tenant: &TenantId,
        types: [EventType; N],
    ) -> [bool; N] {
        if self.webhooks.is_none() {
            return [false; N];
        }
        let mask = match self.current_subscriptions().await {
            Some(s) => s.mask_of(Some(tenant)),
            None => u32::MAX,
        };
        types.map(|t| mask & bit(t) != 0)
    }

    /// True when no endpoint wants any message event: the send path's only cost of webhooks
    /// (development forwards of provider webhooks do not count).
    async fn nobody_listens(&self) -> bool {
        self.webhooks.is_none()
            || self
                .current_subscriptions()
                .await
                .is_some_and(|s| !s.any_event)
    }

    /// Who wants what: as the embedded notifier keeps it, or read when older than
    /// `subscriptions_refresh` where no notifier runs beside the engine (Lambda).
    async fn current_subscriptions(&self) -> Option<Arc<Snapshot>> {
        if self.outbox.running.load(Ordering::Acquire) {
            return self.outbox.subscriptions.snapshot.read().clone();
        }
        self.refresh_subscriptions(self.config.notify.subscriptions_refresh)
            .await
    }

    /// Re-reads the enabled endpoints now, or when the last read is older than `max_age`.
    pub async fn refresh_subscriptions(&self, max_age: Duration) -> Option<Arc<Snapshot>> {
        let store = self.webhooks.as_ref()?;
        let current = self.outbox.subscriptions.snapshot.read().clone();
        if let Some(s) = current.as_ref().filter(|s| s.loaded.elapsed() < max_age) {
            return Some(s.clone());
        }
        let subscriptions = &self.outbox.subscriptions;
        let read = subscriptions.start_read();
        match store.enabled_endpoints().await {
            Ok(endpoints) => Some(subscriptions.keep(Snapshot::new(endpoints, read))),
            Err(e) => {
                tracing::warn!(error = %e, "webhook endpoints not read");
                current
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_that_started_earlier_never_replaces_a_later_one() {
        let subscriptions = Subscriptions::default();
        let (before_change, after_change) =
            (subscriptions.start_read(), subscriptions.start_read());
        // The read after a change (say, a new endpoint) finishes first ...
        assert_eq!(
            subscriptions
                .keep(Snapshot::new(Vec::new(), after_change))
                .read,
            after_change
        );
        // ... and the slower one from before the change is not kept.
        assert_eq!(
            subscriptions
                .keep(Snapshot::new(Vec::new(), before_change))
                .read,
            after_change
        );
        let kept = subscriptions.snapshot.read().clone().map(|s| s.read);
        assert_eq!(kept, Some(after_change));
        let next = subscriptions.start_read();
        assert_eq!(
            subscriptions.keep(Snapshot::new(Vec::new(), next)).read,
            next
        );
    }
}
