//! Reputation auto-pause: after bounces and complaints the tenant's rates per gateway are
//! judged (at most every [`JUDGE_EVERY`] per tenant and process, and on `GET /v1/reputation`);
//! over the pause thresholds the tenant's bulk lanes stop at hand-off, recorded in the audit
//! log and announced as `reputation.paused`. P0, P1 and P4 keep flowing.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use tracing::{info, warn};
use utoipa::ToSchema;

use super::Herald;
use crate::domain::audit::{Actor, AuditAction, AuditEntry};
use crate::domain::deliverability::reputation::{
    Pause, ReputationSettings, ReputationState, Standing, Tally,
};
use crate::domain::notify::{EventType, Notice, Subject};
use crate::domain::suppression::Scope;
use crate::domain::{Message, TenantId};
use crate::ports::StoreError;

/// The least time between two judgements of one tenant in one process.
pub const JUDGE_EVERY: Duration = Duration::from_secs(5);

/// When each tenant was last judged here, and the lock that runs one judgement at a time.
#[derive(Default)]
pub(crate) struct Judged {
    last: parking_lot::Mutex<HashMap<TenantId, Instant>>,
    /// A bounce's judgement and a `GET /v1/reputation` at the same moment would both find the
    /// tenant unpaused and both record and announce the pause; a judgement beside a settings
    /// change or a resume would write back the state it read before them. Across processes
    /// (Lambda instances) the stored revision stops that: a save names the revision it read,
    /// and only a saved change is announced. In one process this lock also keeps the three
    /// from retrying against each other. They are rare (a judgement every 5 s a tenant at
    /// most, and on that GET) and a few reads long, so one lock serves all tenants.
    running: tokio::sync::Mutex<()>,
}

impl Judged {
    /// Whether the tenant is due a judgement now (and marks it judged).
    fn due(&self, tenant: &TenantId) -> bool {
        let mut last = self.last.lock();
        if last.len() > 10_000 {
            last.clear();
        }
        match last.get(tenant) {
            Some(at) if at.elapsed() < JUDGE_EVERY => false,
            _ => {
                last.insert(tenant.clone(), Instant::now());
                true
            }
        }
    }
}

/// `GET /v1/reputation`: the settings, the pause if any, and each gateway's window.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReputationReport {
    pub paused: Option<Pause>,
    pub settings: ReputationSettings,
    pub gateways: Vec<Standing>,
}

impl Herald {
    /// The tenant's reputation state, read through the settings cache.
    pub async fn reputation_state(&self, tenant: &TenantId) -> Result<ReputationState, StoreError> {
        self.reputations
            .read_through(tenant, self.rules.reputation(tenant))
            .await
    }

    /// Saves the state if no other process saved it since it was read (then its revision
    /// moves on and the cache has it); false when one did, and nothing was written.
    async fn save_reputation(
        &self,
        tenant: &TenantId,
        state: &mut ReputationState,
    ) -> Result<bool, StoreError> {
        if !self.rules.put_reputation(tenant, state).await? {
            return Ok(false);
        }
        state.revision += 1;
        self.reputations.put(tenant, state.clone());
        Ok(true)
    }

    /// Judges the tenant now and reports.
    pub async fn reputation_report(
        &self,
        tenant: &TenantId,
    ) -> Result<ReputationReport, StoreError> {
        let (state, gateways) = self.judge(tenant).await?;
        Ok(ReputationReport {
            paused: state.paused,
            settings: state.settings,
            gateways,
        })
    }

    /// Whether a claimed message waits for its tenant's pause to lift (bulk lanes only).
    pub(crate) async fn held_by_reputation(&self, m: &Message) -> bool {
        if !matches!(
            m.priority,
            crate::domain::Priority::P2 | crate::domain::Priority::P3
        ) {
            return false;
        }
        match self.reputation_state(&m.tenant).await {
            Ok(state) => state.holds(m.priority, Utc::now()),
            Err(e) => {
                // Unreadable: the messages go; a pause is a brake, not a guarantee.
                warn!(tenant = %m.tenant, error = %e, "reputation state unreadable");
                false
            }
        }
    }

    /// After a bounce or a complaint: judges the tenant unless it was judged just now.
    pub(crate) async fn after_bad_outcome(&self, tenant: &TenantId) {
        if !self.judged.due(tenant) {
            return;
        }
        if let Err(e) = self.judge(tenant).await {
            warn!(%tenant, error = %e, "reputation not judged");
        }
    }

    /// Reads the counts, keeps an hourly snapshot, lifts a cooled-down pause, and pauses when a
    /// gateway is over the thresholds. What it changed is announced once it is saved: when
    /// another process saved the state first, it judges again from what that one saved.
    async fn judge(
        &self,
        tenant: &TenantId,
    ) -> Result<(ReputationState, Vec<Standing>), StoreError> {
        let _one_at_a_time = self.judged.running.lock().await;
        for _ in 0..SAVE_TRIES {
            let since = self.reputations.changes();
            let mut v = self.verdict(tenant, Utc::now()).await?;
            if !v.changed() {
                self.reputations.keep_read(tenant, v.state.clone(), since);
                return Ok((v.state, v.standings));
            }
            if !self.save_reputation(tenant, &mut v.state).await? {
                continue;
            }
            if let Some(lifted) = &v.lifted {
                let entry = AuditEntry::now(
                    Scope::Tenant(tenant.clone()),
                    Actor::System,
                    AuditAction::ReputationResumed,
                );
                self.announce_resume(tenant, entry, lifted.as_ref(), v.at)
                    .await;
            }
            if let (true, Some(p)) = (v.paused, &v.state.paused) {
                self.announce_pause(tenant, p).await;
            }
            return Ok((v.state, v.standings));
        }
        Err(contended(tenant))
    }

    /// One judgement of the stored state, not yet saved.
    async fn verdict(&self, tenant: &TenantId, at: DateTime<Utc>) -> Result<Verdict, StoreError> {
        let mut state = self.rules.reputation(tenant).await?;
        let mut lifted = None;
        if state.cooled_down(at) {
            let totals = self.gateway_totals(tenant).await?;
            lifted = Some(state.resume(&totals, at));
        }
        let (standings, snapshot_kept) = self.standings(tenant, &mut state, at).await?;
        let paused = state.pause_if_over(&standings, at);
        for s in standings.iter().filter(|s| s.level == "warn") {
            info!(%tenant, gateway = %s.gateway, bounce_rate = s.bounce_rate,
                  complaint_rate = s.complaint_rate, "reputation over the warn level");
        }
        Ok(Verdict {
            state,
            standings,
            lifted,
            paused,
            snapshot_kept,
            at,
        })
    }

    /// Each gateway's window: counted by time where the store can (SQLite), else from the
    /// running totals (DynamoDB's stream counters), keeping an hourly snapshot of them; and
    /// whether a snapshot was kept.
    async fn standings(
        &self,
        tenant: &TenantId,
        state: &mut ReputationState,
        now: DateTime<Utc>,
    ) -> Result<(Vec<Standing>, bool), StoreError> {
        if let Some(counts) = self
            .store
            .counts_since(tenant, state.window_start(now))
            .await?
        {
            return Ok((state.judge_window(&by_gateway(counts)), false));
        }
        let totals = self.gateway_totals(tenant).await?;
        let kept = state.remember(&totals, now);
        Ok((state.standings(&totals, now), kept))
    }

    /// The tenant's totals since the start per gateway, from the message counts.
    async fn gateway_totals(
        &self,
        tenant: &TenantId,
    ) -> Result<BTreeMap<String, Tally>, StoreError> {
        let mut totals: BTreeMap<String, Tally> = BTreeMap::new();
        for c in self.store.channel_counts(tenant).await? {
            if let Some(gateway) = c.gateway {
                totals.entry(gateway).or_default().add(c.status, c.count);
            }
        }
        Ok(totals)
    }

    /// Lifts the tenant's pause (an admin's `POST /v1/reputation/resume`, recorded as
    /// `entry`); the lifted pause.
    pub async fn resume_reputation(
        &self,
        tenant: &TenantId,
        entry: AuditEntry,
    ) -> Result<Option<Pause>, StoreError> {
        let _one_at_a_time = self.judged.running.lock().await;
        for _ in 0..SAVE_TRIES {
            let mut state = self.rules.reputation(tenant).await?;
            let now = Utc::now();
            let totals = self.gateway_totals(tenant).await?;
            let lifted = state.resume(&totals, now);
            if lifted.is_none() {
                return Ok(None);
            }
            if self.save_reputation(tenant, &mut state).await? {
                self.announce_resume(tenant, entry, lifted.as_ref(), now)
                    .await;
                return Ok(lifted);
            }
        }
        Err(contended(tenant))
    }

    /// Replaces the thresholds and cool-down; the pause and snapshots stay.
    pub async fn set_reputation_settings(
        &self,
        tenant: &TenantId,
        settings: ReputationSettings,
    ) -> Result<(), StoreError> {
        let _one_at_a_time = self.judged.running.lock().await;
        for _ in 0..SAVE_TRIES {
            let mut state = self.rules.reputation(tenant).await?;
            state.settings = settings.clone();
            if self.save_reputation(tenant, &mut state).await? {
                return Ok(());
            }
        }
        Err(contended(tenant))
    }

    async fn announce_pause(&self, tenant: &TenantId, p: &Pause) {
        warn!(%tenant, gateway = %p.gateway, bounce_rate = p.bounce_rate,
              complaint_rate = p.complaint_rate, "reputation pause: bulk lanes stopped");
        let detail = serde_json::to_value(p).unwrap_or_default();
        let entry = AuditEntry::now(
            Scope::Tenant(tenant.clone()),
            Actor::System,
            AuditAction::ReputationPaused,
        )
        .target(p.gateway.clone())
        .detail(detail.clone());
        self.record_audit(entry).await;
        self.announce_tenant_event(tenant, EventType::ReputationPaused, detail)
            .await;
    }

    async fn announce_resume(
        &self,
        tenant: &TenantId,
        entry: AuditEntry,
        lifted: Option<&Pause>,
        at: DateTime<Utc>,
    ) {
        let detail = json!({ "resumed_at": at, "pause": lifted });
        self.record_audit(entry.detail(detail.clone())).await;
        self.announce_tenant_event(tenant, EventType::ReputationResumed, detail)
            .await;
    }

    pub(crate) async fn announce_tenant_event(
        &self,
        tenant: &TenantId,
        event: EventType,
        data: serde_json::Value,
    ) {
        let notice = Notice::new(Some(tenant.clone()), event, Subject::Data { data });
        if let Err(e) = self.notify_durably(vec![notice]).await {
            warn!(%tenant, error = %e, event = event.as_str(), "event not announced");
        }
    }
}

/// What one judgement found: the state as it would be saved, and what changed in it.
struct Verdict {
    state: ReputationState,
    standings: Vec<Standing>,
    /// `Some` when a cooled-down pause was lifted (with the pause, if there was one).
    lifted: Option<Option<Pause>>,
    paused: bool,
    snapshot_kept: bool,
    at: DateTime<Utc>,
}

impl Verdict {
    fn changed(&self) -> bool {
        self.lifted.is_some() || self.paused || self.snapshot_kept
    }
}

/// Saves tried before giving up while other processes keep saving the same tenant's state.
const SAVE_TRIES: usize = 5;

fn contended(tenant: &TenantId) -> StoreError {
    StoreError::Unavailable(format!(
        "the reputation state of {tenant} changed {SAVE_TRIES} times while it was being saved"
    ))
}

/// Message counts summed per gateway (messages no gateway took are left out).
fn by_gateway(counts: Vec<crate::ports::ChannelCount>) -> BTreeMap<String, Tally> {
    let mut totals: BTreeMap<String, Tally> = BTreeMap::new();
    for c in counts {
        if let Some(gateway) = c.gateway {
            totals.entry(gateway).or_default().add(c.status, c.count);
        }
    }
    totals
}
