//! Gateways and the routing of a channel to one of them.

pub mod config;
pub mod fcm;
pub mod health;
pub mod http;
pub mod instances;
pub mod media_fetch;
pub mod mime;
pub mod postal;
pub mod redact;
pub mod sandbox;
pub mod secret;
pub mod ses_events;
pub mod smtp;
pub mod telegram;
pub mod twilio;
pub mod whatsapp;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::domain::health::{Breaker, GatewayStatus, HealthState};
use crate::domain::Channel;
use crate::ports::{Gateway, GatewayError, GatewayReceipt, OutboundMessage};

pub use health::{InMemoryHealth, Outcome};
pub use redact::Redactor;
pub use sandbox::{Handoff, SandboxConfig, SandboxGateway};

/// Half-open gateways get at most one probe send this often (per process).
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// The gateways configured for each channel, in failover order.
#[derive(Clone, Default)]
pub struct GatewayRegistry {
    by_channel: BTreeMap<Channel, Vec<Arc<dyn Gateway>>>,
    last_probe: Arc<Mutex<HashMap<String, Instant>>>,
    /// Removes the configured credentials from every gateway's failures.
    redactor: Redactor,
}

/// The router's decision for one send, recorded on the message.
pub struct Route {
    /// Send through [`Route::send`], which keeps credentials out of the failure.
    pub gateway: Arc<dyn Gateway>,
    pub reason: String,
    /// A probe send to a half-open gateway: its outcome moves the breaker.
    pub probe: bool,
    redactor: Redactor,
}

impl Route {
    /// Hands the message to the chosen gateway. A failure's text is what gets stored, shown
    /// and logged, so the configured secrets are removed from it here, whatever the gateway.
    pub async fn send(&self, m: &OutboundMessage) -> Result<GatewayReceipt, GatewayError> {
        self.gateway
            .send(m)
            .await
            .map_err(|e| self.redactor.error(e))
    }
}

impl GatewayRegistry {
    pub fn new() -> GatewayRegistry {
        GatewayRegistry::default()
    }

    /// An empty registry whose routes redact these secrets from failures.
    pub fn redacting(redactor: Redactor) -> GatewayRegistry {
        GatewayRegistry {
            redactor,
            ..GatewayRegistry::default()
        }
    }

    /// The configured secrets' redactor, for any other text that comes from a gateway.
    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// Adds a gateway for every channel it declares, after the ones already there.
    pub fn register(&mut self, gateway: Arc<dyn Gateway>) {
        for channel in gateway.channels() {
            self.by_channel
                .entry(*channel)
                .or_default()
                .push(gateway.clone());
        }
    }

    /// Adds a gateway for one channel, after the ones already there.
    pub fn register_for(&mut self, channel: Channel, gateway: Arc<dyn Gateway>) {
        self.by_channel.entry(channel).or_default().push(gateway);
    }

    /// The gateway for a send on `channel`: the first in failover order whose breaker is
    /// closed, or a half-open one due for a probe; the primary when every breaker is open.
    pub fn route(
        &self,
        channel: Channel,
        statuses: &HashMap<String, GatewayStatus>,
    ) -> Option<Route> {
        self.route_without(channel, statuses, &[])
    }

    /// As [`GatewayRegistry::route`], among the channel's gateways not in `skip` (those whose
    /// warm-up cap is used up today); None when every one is skipped.
    pub fn route_without(
        &self,
        channel: Channel,
        statuses: &HashMap<String, GatewayStatus>,
        skip: &[String],
    ) -> Option<Route> {
        let all = self.by_channel.get(&channel)?;
        let candidates: Vec<&Arc<dyn Gateway>> = all
            .iter()
            .filter(|g| !skip.iter().any(|s| s == g.name()))
            .collect();
        let primary = *candidates.first()?;
        let describe = |g: &Arc<dyn Gateway>| match statuses.get(g.name()) {
            Some(s) => match s.breaker {
                Breaker::Open { .. } => format!("{} down (breaker open)", g.name()),
                Breaker::HalfOpen { .. } => format!("{} recovering (breaker half-open)", g.name()),
                Breaker::Closed => format!("{} {:?}", g.name(), s.state).to_lowercase(),
            },
            None => format!("{} healthy", g.name()),
        };
        for (i, g) in candidates.iter().enumerate() {
            let status = statuses.get(g.name());
            let breaker = status.map_or(Breaker::Closed, |s| s.breaker);
            let chosen = match breaker {
                Breaker::Closed => Some(false),
                Breaker::HalfOpen { .. } if self.probe_due(g.name()) => Some(true),
                _ => None,
            };
            let Some(probe) = chosen else { continue };
            let reason = if probe {
                format!("probe: {}", describe(g))
            } else if i == 0 {
                match status.map(|s| s.state) {
                    Some(HealthState::Degraded) => "primary degraded".to_owned(),
                    _ => "primary healthy".to_owned(),
                }
            } else {
                format!("failover: {}", describe(primary))
            };
            return Some(Route {
                gateway: Arc::clone(g),
                reason,
                probe,
                redactor: self.redactor.clone(),
            });
        }
        Some(Route {
            gateway: primary.clone(),
            reason: "all gateways down: primary".to_owned(),
            probe: false,
            redactor: self.redactor.clone(),
        })
    }

    /// The gateway a send on `channel` will most likely take, without taking a probe's turn:
    /// whose tokens a consumer takes before it claims. The first closed breaker, else the
    /// primary (a probe or an all-down route is paced again once routed).
    pub fn likely_gateway(
        &self,
        channel: Channel,
        statuses: &HashMap<String, GatewayStatus>,
    ) -> Option<&str> {
        let candidates = self.by_channel.get(&channel)?;
        let closed = candidates.iter().find(|g| {
            statuses
                .get(g.name())
                .is_none_or(|s| s.breaker == Breaker::Closed)
        });
        closed.or(candidates.first()).map(|g| g.name())
    }

    fn probe_due(&self, gateway: &str) -> bool {
        let mut last = self.last_probe.lock();
        let due = last
            .get(gateway)
            .is_none_or(|t| t.elapsed() >= PROBE_INTERVAL);
        if due {
            last.insert(gateway.to_owned(), Instant::now());
        }
        due
    }

    pub fn gateways(&self) -> impl Iterator<Item = (Channel, &Arc<dyn Gateway>)> {
        self.by_channel
            .iter()
            .flat_map(|(c, gs)| gs.iter().map(move |g| (*c, g)))
    }

    /// The first of `names` that no registered gateway has.
    pub fn unknown<'n>(&self, mut names: impl Iterator<Item = &'n String>) -> Option<&'n String> {
        names.find(|n| self.named(n).is_none())
    }

    /// The gateway registered under `name`, for any channel.
    pub fn named(&self, name: &str) -> Option<&Arc<dyn Gateway>> {
        self.gateways().map(|(_, g)| g).find(|g| g.name() == name)
    }

    /// Every gateway once, whatever channels it serves.
    pub fn distinct(&self) -> Vec<Arc<dyn Gateway>> {
        let mut seen = Vec::new();
        let mut out = Vec::new();
        for (_, g) in self.gateways() {
            if !seen.contains(&g.name().to_owned()) {
                seen.push(g.name().to_owned());
                out.push(g.clone());
            }
        }
        out
    }
}
