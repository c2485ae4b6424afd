//! Gateways and the routing of a channel to one of them.

pub mod health;
pub mod mime;
pub mod sandbox;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::domain::Channel;
use crate::ports::Gateway;

pub use health::{GatewayHealth, HealthSnapshot, Outcome};
pub use sandbox::{Handoff, SandboxConfig, SandboxGateway};

/// The gateways configured for each channel, in failover order.
#[derive(Clone, Default)]
pub struct GatewayRegistry {
    by_channel: BTreeMap<Channel, Vec<Arc<dyn Gateway>>>,
    health: Arc<GatewayHealth>,
}

impl GatewayRegistry {
    pub fn new() -> GatewayRegistry {
        GatewayRegistry::default()
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

    /// The gateway to use for a channel: the first that is not `down`, else the first.
    pub fn route(&self, channel: Channel) -> Option<(Arc<dyn Gateway>, &'static str)> {
        let candidates = self.by_channel.get(&channel)?;
        let first = candidates.first()?.clone();
        if !self.health.is_down(first.name()) {
            return Some((first, "primary healthy"));
        }
        match candidates
            .iter()
            .skip(1)
            .find(|g| !self.health.is_down(g.name()))
        {
            Some(next) => Some((next.clone(), "primary down, failover")),
            None => Some((first, "all gateways down, primary")),
        }
    }

    pub fn health(&self) -> &Arc<GatewayHealth> {
        &self.health
    }

    pub fn gateways(&self) -> impl Iterator<Item = (Channel, &Arc<dyn Gateway>)> {
        self.by_channel
            .iter()
            .flat_map(|(c, gs)| gs.iter().map(move |g| (*c, g)))
    }
}
