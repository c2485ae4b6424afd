//! The engine: accept, dispatch per lane, provider callbacks, maintenance. It works on the
//! ports only, so the embedded and AWS backends run the same logic.

pub mod accept;
mod audit;
pub mod audit_csv;
mod consumer;
pub mod dispatch;
pub mod drain;
pub mod followups;
mod gate;
pub mod health;
pub mod inbound;
mod inbound_events;
mod inbound_rules;
pub mod keys;
pub mod lane_counts;
pub mod maintenance;
pub mod media;
pub mod notify;
mod parked;
pub mod pipeline;
pub mod quiet_hours;
pub mod relay;
pub mod relay_admin;
pub mod relay_health;
pub mod relay_simulate;
pub mod reputation;
mod settings_cache;
pub mod suppress;
pub mod suppress_by_hand;
pub mod templates;
pub mod thread_policy;
pub mod thread_reply;
pub mod tracker;
pub mod unsubscribe;
#[cfg(any(test, feature = "contract-tests"))]
pub mod untried_parks;
pub mod warmup;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use gate::PriorityGate;

use crate::domain::health::BreakerConfig;
use crate::domain::limits::RateLimits;
use crate::domain::media::MediaPolicy;
use crate::domain::template::RenderLimits;
use crate::domain::{Priority, SenderIdentity, TenantId};
use crate::gateway::GatewayRegistry;
use crate::ports::{
    AuditLog, ContactStore, EventLog, HealthStore, InboundFeed, InboundStore, LaneQueue,
    MediaFetcher, MediaStore, MessageStore, RateLimiter, RelayStore, RuleStore, SessionStore,
    SuppressionStore, TemplateStore, TenantStore, ThreadStore, WarmupStore, WebhookStore,
};

pub use accept::{
    AcceptError, Accepted, BulkDraft, BulkOutcome, BulkRecipient, BulkRenderBudget, ContentSource,
    Envelope, IdempotencyInput, RejectedRecipient, SendDraft, SendOutcome,
};

#[derive(Debug, Clone, Copy)]
pub struct LaneConfig {
    /// Concurrent hand-offs on this lane.
    pub workers: usize,
    /// Messages a worker receives at once.
    pub batch: usize,
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub lanes: [LaneConfig; 5],
    /// How long a received message stays hidden (and a claim is held) before another worker may take it.
    pub visibility_timeout: Duration,
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// How often an idle worker looks for scheduled or retried messages that became due.
    pub idle_poll: Duration,
    /// A gateway call that takes longer counts as a transient failure.
    pub send_timeout: Duration,
    /// Final messages older than this are deleted by the retention task.
    pub retention: Duration,
    pub idempotency_ttl: Duration,
    /// Paces per gateway and recipient domain, and the bulk lanes' share.
    pub rate_limits: RateLimits,
    /// How often the health checker runs (embedded; on AWS its schedule).
    pub health_interval: Duration,
    /// How often threads' due follow-ups are looked for (embedded).
    pub followup_interval: Duration,
    /// How long an inbound worker holds a message it claimed: a dead worker's message is
    /// taken again after it.
    pub inbound_lease: Duration,
    /// The outcomes a gateway's state is judged on.
    pub health_window: Duration,
    pub breaker: BreakerConfig,
    /// What one message's template render may spend.
    pub render: RenderLimits,
    /// What a whole bulk request's renders may spend.
    pub bulk_render: BulkRenderBudget,
    /// Template renders that run at once (each on a blocking thread, off the async workers).
    pub render_threads: usize,
    /// Sender identities from configuration (herald.toml, the numbers each tenant owns), beside
    /// those set through the API.
    pub senders: BTreeMap<TenantId, Vec<SenderIdentity>>,
    /// Webhooks out: retries, timeouts, which addresses endpoints may have.
    pub notify: notify::NotifyConfig,
    /// What inbound media is stored, and for how long.
    pub media: MediaPolicy,
    /// Herald's one-click unsubscribe links.
    pub unsubscribe: unsubscribe::UnsubscribeConfig,
    /// How long a bulk message held by a reputation pause waits before it looks again.
    pub pause_recheck: Duration,
    /// Warm-up schedules by gateway name.
    pub warmups: BTreeMap<String, crate::domain::deliverability::warmup::WarmupSchedule>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        let lane = |workers, batch| LaneConfig { workers, batch };
        EngineConfig {
            // P0 P1 P2 P3 P4: P0 and P4 take small batches so nothing waits behind a batch.
            // Four bulk workers of 32 keep the writer busy; more only add CPU contention that
            // priority messages feel (docs/performance.md).
            lanes: [
                lane(8, 4),
                lane(4, 16),
                lane(4, 32),
                lane(4, 32),
                lane(4, 8),
            ],
            visibility_timeout: Duration::from_secs(30),
            max_attempts: 5,
            backoff_base: Duration::from_secs(2),
            backoff_max: Duration::from_secs(300),
            idle_poll: Duration::from_millis(100),
            send_timeout: Duration::from_secs(30),
            retention: Duration::from_secs(30 * 24 * 3600),
            idempotency_ttl: Duration::from_secs(48 * 3600),
            rate_limits: RateLimits::default(),
            health_interval: Duration::from_secs(10),
            followup_interval: Duration::from_secs(5),
            inbound_lease: pipeline::LEASE,
            health_window: Duration::from_secs(300),
            breaker: BreakerConfig::default(),
            render: RenderLimits::default(),
            bulk_render: BulkRenderBudget::default(),
            render_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            senders: BTreeMap::new(),
            notify: notify::NotifyConfig::default(),
            media: MediaPolicy::default(),
            unsubscribe: Default::default(),
            pause_recheck: Duration::from_secs(60),
            warmups: BTreeMap::new(),
        }
    }
}

impl EngineConfig {
    /// Adds configured sender identities to the tenants' lists.
    pub fn add_senders(&mut self, senders: impl IntoIterator<Item = (TenantId, SenderIdentity)>) {
        for (tenant, identity) in senders {
            let ids = self.senders.entry(tenant).or_default();
            if !ids.contains(&identity) {
                ids.push(identity);
            }
        }
    }

    pub fn lane(&self, lane: Priority) -> LaneConfig {
        self.lanes[lane.index()]
    }

    pub fn total_workers(&self) -> usize {
        self.lanes.iter().map(|l| l.workers).sum()
    }

    /// The most messages claimed and not yet recorded at once (each worker holds one batch):
    /// what a kill -9 can leave to be sent again.
    pub fn max_in_hand_off(&self) -> usize {
        self.lanes.iter().map(|l| l.workers * l.batch).sum()
    }
}

/// One backend's implementations of the ports (embedded: SQLite for all of them).
#[derive(Clone)]
pub struct Ports {
    pub store: Arc<dyn MessageStore>,
    pub queue: Arc<dyn LaneQueue>,
    pub templates: Arc<dyn TemplateStore>,
    pub tenants: Arc<dyn TenantStore>,
    pub suppressions: Arc<dyn SuppressionStore>,
    pub events: Arc<dyn EventLog>,
    pub limiter: Arc<dyn RateLimiter>,
    pub health: Arc<dyn HealthStore>,
    pub inbound: Arc<dyn InboundStore>,
    pub audit: Arc<dyn AuditLog>,
    /// Webhook endpoints and the events out; `None` where the backend has none yet.
    pub webhooks: Option<Arc<dyn WebhookStore>>,
    pub contacts: Arc<dyn ContactStore>,
    pub threads: Arc<dyn ThreadStore>,
    pub rules: Arc<dyn RuleStore>,
    pub inbound_feed: Arc<dyn InboundFeed>,
    pub media: Arc<dyn MediaStore>,
    pub media_fetcher: Arc<dyn MediaFetcher>,
    pub relay: Arc<dyn RelayStore>,
    pub warmup: Arc<dyn WarmupStore>,
    pub sessions: Arc<dyn SessionStore>,
}

/// Everything the API and the workers share.
pub struct Herald {
    pub store: Arc<dyn MessageStore>,
    pub queue: Arc<dyn LaneQueue>,
    pub templates: Arc<dyn TemplateStore>,
    pub tenants: Arc<dyn TenantStore>,
    pub suppressions: Arc<dyn SuppressionStore>,
    /// Provider events already applied (a notification delivered twice is applied once).
    pub events: Arc<dyn EventLog>,
    pub limiter: Arc<dyn RateLimiter>,
    pub health: Arc<dyn HealthStore>,
    /// Messages received from recipients.
    pub inbound: Arc<dyn InboundStore>,
    /// Who changed what: appended by [`Herald::audit`].
    pub audit: Arc<dyn AuditLog>,
    /// Webhook endpoints, the outbox and deliveries (see [`notify`]).
    pub webhooks: Option<Arc<dyn WebhookStore>>,
    /// A tenant's contacts and their identities.
    pub contacts: Arc<dyn ContactStore>,
    /// Conversations with contacts, across channels.
    pub threads: Arc<dyn ThreadStore>,
    /// Tenants' inbound rules and thread policies (read through [`Herald::thread_policy`]).
    pub rules: Arc<dyn RuleStore>,
    /// Wakes the inbound workers (see [`pipeline`]).
    pub inbound_feed: Arc<dyn InboundFeed>,
    /// Stored inbound media, and the downloads of providers' media.
    pub media: Arc<dyn MediaStore>,
    pub media_fetcher: Arc<dyn MediaFetcher>,
    /// The masked-number relay's numbers and assignments.
    pub relay: Arc<dyn RelayStore>,
    /// Warm-up schedules' daily counts and state.
    pub warmup: Arc<dyn WarmupStore>,
    /// Signed-in console browsers.
    pub sessions: Arc<dyn SessionStore>,
    pub gateways: GatewayRegistry,
    pub config: EngineConfig,
    wake: [Notify; 5],
    priority_gate: PriorityGate,
    status_cache: health::StatusCache,
    render_pool: tokio::sync::Semaphore,
    denials: audit::DenialBudget,
    outbox: notify::Outbox,
    thread_policies: settings_cache::SettingsCache<crate::domain::thread_policy::ThreadPolicy>,
    quiet_hours:
        settings_cache::SettingsCache<crate::domain::deliverability::quiet_hours::QuietHours>,
    reputations:
        settings_cache::SettingsCache<crate::domain::deliverability::reputation::ReputationState>,
    judged: reputation::Judged,
    warmup_caps: warmup::TodaysCaps,
    lane_counts: lane_counts::LaneCounts,
    release_locks: parked::ReleaseLocks,
}

impl Herald {
    /// The ports this engine runs on, to build another over some of them (tests).
    pub fn ports(&self) -> Ports {
        Ports {
            store: self.store.clone(),
            queue: self.queue.clone(),
            templates: self.templates.clone(),
            tenants: self.tenants.clone(),
            suppressions: self.suppressions.clone(),
            events: self.events.clone(),
            limiter: self.limiter.clone(),
            health: self.health.clone(),
            inbound: self.inbound.clone(),
            audit: self.audit.clone(),
            webhooks: self.webhooks.clone(),
            contacts: self.contacts.clone(),
            threads: self.threads.clone(),
            rules: self.rules.clone(),
            inbound_feed: self.inbound_feed.clone(),
            media: self.media.clone(),
            media_fetcher: self.media_fetcher.clone(),
            relay: self.relay.clone(),
            warmup: self.warmup.clone(),
            sessions: self.sessions.clone(),
        }
    }

    pub fn new(ports: Ports, gateways: GatewayRegistry, config: EngineConfig) -> Herald {
        let render_pool = tokio::sync::Semaphore::new(config.render_threads.max(1));
        Herald {
            render_pool,
            store: ports.store,
            queue: ports.queue,
            templates: ports.templates,
            tenants: ports.tenants,
            suppressions: ports.suppressions,
            events: ports.events,
            limiter: ports.limiter,
            health: ports.health,
            inbound: ports.inbound,
            audit: ports.audit,
            contacts: ports.contacts,
            threads: ports.threads,
            rules: ports.rules,
            inbound_feed: ports.inbound_feed,
            media: ports.media,
            media_fetcher: ports.media_fetcher,
            relay: ports.relay,
            warmup: ports.warmup,
            sessions: ports.sessions,
            webhooks: ports.webhooks,
            gateways,
            config,
            wake: Default::default(),
            priority_gate: PriorityGate::default(),
            status_cache: Default::default(),
            denials: Default::default(),
            outbox: Default::default(),
            thread_policies: Default::default(),
            quiet_hours: Default::default(),
            reputations: Default::default(),
            judged: Default::default(),
            warmup_caps: Default::default(),
            lane_counts: Default::default(),
            release_locks: Default::default(),
        }
    }

    /// Tells a lane's idle workers that work arrived.
    pub fn wake(&self, lane: Priority, many: bool) {
        let notify = &self.wake[lane.index()];
        if many {
            notify.notify_waiters();
        }
        notify.notify_one();
    }

    pub(crate) fn waker(&self, lane: Priority) -> &Notify {
        &self.wake[lane.index()]
    }
}

pub mod messages;
pub use messages::CancelOutcome;
