//! Gateway health in the engine: outcomes go to the health store, the router reads the
//! statuses the health checker computes, and a probe send's outcome moves its breaker at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::watch;
use tracing::{info, warn};

use super::Herald;
use crate::domain::audit::{Actor, AuditAction, AuditEntry};
use crate::domain::health::{after_probe, next_status, Breaker, GatewayStatus, Outcome};
use crate::domain::notify::{EventType, Notice, Subject};
use crate::domain::suppression::Scope;
use crate::gateway::Route;

/// How long a dispatcher trusts the statuses it read (on AWS, a DynamoDB read).
pub const STATUS_CACHE: Duration = Duration::from_millis(500);

type Statuses = Arc<HashMap<String, GatewayStatus>>;

/// One gateway: the channels it serves in their failover order, its health, and its warm-up.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct GatewayView {
    pub name: String,
    /// The channels it serves, each with its place in that channel's order (1: primary).
    pub channels: Vec<ChannelPlace>,
    /// Its state, breaker and the outcomes of the health window.
    pub health: Option<GatewayStatus>,
    pub warmup: Option<super::warmup::WarmupView>,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ChannelPlace {
    pub channel: crate::domain::Channel,
    pub order: usize,
}

/// The statuses the router last read, and when.
#[derive(Default)]
pub(crate) struct StatusCache(parking_lot::Mutex<Option<(Instant, Statuses)>>);

impl Herald {
    /// The gateways' statuses for routing, read at most every [`STATUS_CACHE`].
    pub(crate) async fn gateway_statuses(&self) -> Statuses {
        if let Some((read, statuses)) = &*self.status_cache.0.lock() {
            if read.elapsed() < STATUS_CACHE {
                return statuses.clone();
            }
        }
        let statuses: Statuses = match self.health.statuses().await {
            Ok(list) => Arc::new(list.into_iter().map(|s| (s.gateway.clone(), s)).collect()),
            Err(e) => {
                // Route on what was known rather than not at all.
                warn!(error = %e, "gateway statuses unreadable");
                return self
                    .status_cache
                    .0
                    .lock()
                    .as_ref()
                    .map(|(_, s)| s.clone())
                    .unwrap_or_default();
            }
        };
        *self.status_cache.0.lock() = Some((Instant::now(), statuses.clone()));
        statuses
    }

    /// Counts a hand-off's outcome; a probe's outcome also moves its half-open breaker.
    pub(crate) async fn observe(&self, route: &Route, outcome: Outcome, latency: Duration) {
        let name = route.gateway.name();
        self.health.record(name, outcome, latency);
        crate::telemetry::gateway_outcome(name, outcome, latency);
        if !route.probe {
            return;
        }
        let current = self.gateway_statuses().await.get(name).cloned();
        let Some(moved) = current
            .clone()
            .and_then(|s| after_probe(s, outcome, Utc::now()))
        else {
            return;
        };
        info!(gateway = name, breaker = ?moved.breaker, "probe send moved the breaker");
        match self.health.put_status(&moved).await {
            Ok(()) => self.audit_health_change(current.as_ref(), &moved).await,
            Err(e) => warn!(error = %e, "gateway status not recorded"),
        }
        *self.status_cache.0.lock() = None;
    }

    /// Every gateway with its channels, health and warm-up, in the order they are configured
    /// (the same view of each gateway's health as the channel stats give).
    pub async fn gateway_views(&self) -> Result<Vec<GatewayView>, crate::ports::StoreError> {
        let mut health = self.gateway_health().await?;
        let mut items: Vec<GatewayView> = Vec::new();
        let mut order: HashMap<crate::domain::Channel, usize> = HashMap::new();
        for (channel, gateway) in self.gateways.gateways() {
            let place = order.entry(channel).or_insert(0);
            *place += 1;
            let at = ChannelPlace {
                channel,
                order: *place,
            };
            match items.iter_mut().find(|g| g.name == gateway.name()) {
                Some(g) => g.channels.push(at),
                None => items.push(GatewayView {
                    name: gateway.name().to_owned(),
                    channels: vec![at],
                    health: health.remove(gateway.name()),
                    warmup: self.warmup_view(gateway.name()).await?,
                }),
            }
        }
        Ok(items)
    }

    /// Every gateway's health for the stats: counts, state and latency read now, with the
    /// breaker as the health checker last set it.
    pub async fn gateway_health(
        &self,
    ) -> Result<HashMap<String, GatewayStatus>, crate::ports::StoreError> {
        let stored: HashMap<String, GatewayStatus> = self
            .health
            .statuses()
            .await?
            .into_iter()
            .map(|s| (s.gateway.clone(), s))
            .collect();
        let now = Utc::now();
        let mut out = HashMap::new();
        for gateway in self.gateways.distinct() {
            let name = gateway.name();
            let prev = stored.get(name);
            let counts = self
                .health
                .window(name, self.window_since(prev, now))
                .await?;
            let view = prev
                .cloned()
                .unwrap_or_else(|| GatewayStatus::new(name, now))
                .with_counts(counts);
            out.insert(name.to_owned(), view);
        }
        Ok(out)
    }

    /// Where a gateway's window starts: the configured span back, or when its breaker last
    /// closed if that is later.
    fn window_since(
        &self,
        prev: Option<&GatewayStatus>,
        now: chrono::DateTime<Utc>,
    ) -> chrono::DateTime<Utc> {
        let span = now - chrono::Duration::from_std(self.config.health_window).unwrap_or_default();
        prev.and_then(|p| p.window_start)
            .map_or(span, |start| start.max(span))
    }

    /// The health checker's pass: every gateway's status from its outcomes and its provider's
    /// own probe, written where the dispatchers read them.
    pub async fn check_gateways(&self) -> Vec<GatewayStatus> {
        if let Err(e) = self.health.flush().await {
            warn!(error = %e, "gateway outcomes not flushed");
        }
        let now = Utc::now();
        let previous: HashMap<String, GatewayStatus> = match self.health.statuses().await {
            Ok(list) => list.into_iter().map(|s| (s.gateway.clone(), s)).collect(),
            Err(e) => {
                warn!(error = %e, "gateway statuses unreadable; health check skipped");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for gateway in self.gateways.distinct() {
            let name = gateway.name();
            let prev = previous.get(name);
            let window = chrono::Duration::from_std(self.config.health_window).unwrap_or_default();
            let since =
                (now - window).max(prev.and_then(|p| p.window_start).unwrap_or(now - window));
            let counts = match self.health.window(name, since).await {
                Ok(c) => c,
                Err(e) => {
                    warn!(gateway = name, error = %e, "gateway outcomes unreadable");
                    continue;
                }
            };
            let probe = gateway.probe().await;
            let status = next_status(prev, name, counts, probe, &self.config.breaker, now);
            match self.health.put_status(&status).await {
                Ok(()) => self.audit_health_change(prev, &status).await,
                Err(e) => warn!(gateway = name, error = %e, "gateway status not recorded"),
            }
            out.push(status);
        }
        *self.status_cache.0.lock() = None;
        out
    }
}

impl Herald {
    /// Records a change of a gateway's state or breaker (what moves traffic to a fallback, or
    /// back) in the platform's audit log. A gateway's first status is no change.
    async fn audit_health_change(&self, prev: Option<&GatewayStatus>, now: &GatewayStatus) {
        let Some(prev) = prev else {
            return;
        };
        if (prev.state, prev.breaker) == (now.state, now.breaker) {
            return;
        }
        info!(gateway = %now.gateway, state = ?now.state, breaker = ?now.breaker, "gateway health changed");
        let entry = AuditEntry::now(
            Scope::Global,
            Actor::System,
            AuditAction::GatewayHealthChanged,
        )
        .target(now.gateway.as_str())
        .detail(serde_json::json!({
            "from": { "state": prev.state, "breaker": prev.breaker },
            "to": { "state": now.state, "breaker": now.breaker },
        }));
        let data = serde_json::json!({ "gateway": now.gateway, "change": entry.detail });
        self.record_audit(entry).await;
        // Every tenant may route through the gateway: a platform event.
        let n = Notice::new(
            None,
            EventType::GatewayHealthChanged,
            Subject::Data { data },
        );
        self.notify(vec![n]).await;
    }
}

/// The embedded mode's health checker (on AWS, the `health-checker` function on a schedule).
pub async fn run_health_checks(herald: Arc<Herald>, shutdown: watch::Receiver<bool>) {
    let every = herald.config.health_interval;
    super::maintenance::repeat(every, shutdown, || async {
        herald.check_gateways().await;
    })
    .await;
}

/// Whether a breaker keeps the gateway out of routing.
pub fn is_open(status: &GatewayStatus) -> bool {
    matches!(status.breaker, Breaker::Open { .. })
}
