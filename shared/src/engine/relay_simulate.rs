//! The routing simulator: what the engine would do with a text, with its trace and what the
//! contact-sharing policy would make of it, without writing anything.

use chrono::{DateTime, Utc};

use super::relay::Relayed;
use super::Herald;
use crate::domain::relay::routing::{route, Route, RoutingDecision};
use crate::domain::{PhoneNumber, TenantId};
use crate::ports::StoreError;

/// A simulated text's route and trace, and for a relay, the policy's verdict.
pub struct Simulation {
    pub decision: RoutingDecision,
    /// Set when the text would be relayed.
    pub relayed: Option<Relayed>,
}

impl Herald {
    /// Routes a text from `from` to the tenant's number `to` as if it arrived at `at`; `None`
    /// when `to` is none of the tenant's numbers.
    pub async fn simulate_route(
        &self,
        tenant: &TenantId,
        (to, from): (&PhoneNumber, &PhoneNumber),
        at: DateTime<Utc>,
        body: &str,
    ) -> Result<Option<Simulation>, StoreError> {
        let Some(facts) = self.routing_facts(tenant, (to, from), at, body).await? else {
            return Ok(None);
        };
        let decision = route(&facts);
        let relayed = match &decision.route {
            Route::Relay { sender_role, .. } => {
                let settings = self.rules.relay_settings(tenant).await?;
                Some(Herald::police(&settings, sender_role, body))
            }
            _ => None,
        };
        Ok(Some(Simulation { decision, relayed }))
    }
}
