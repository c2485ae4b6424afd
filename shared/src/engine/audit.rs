//! Recording to the audit log. An entry is written after the action it records succeeded; a
//! store failure then is logged and counted, not returned, since the action has happened.

use std::time::Instant;

use parking_lot::Mutex;
use tracing::warn;

use super::Herald;
use crate::domain::audit::{Actor, AuditAction, AuditEntry};
use crate::domain::suppression::{Scope, Suppression};
use crate::domain::TenantId;
use serde_json::json;

/// Denied requests recorded per second at most, after a burst: a flood of bad keys must not
/// turn into a flood of writes. Past it, denials are only counted in the metrics.
const DENIALS_PER_SECOND: f64 = 10.0;
const DENIAL_BURST: f64 = 50.0;

/// A token bucket for denial entries.
pub(crate) struct DenialBudget(Mutex<(Instant, f64)>);

impl Default for DenialBudget {
    fn default() -> Self {
        DenialBudget(Mutex::new((Instant::now(), DENIAL_BURST)))
    }
}

impl DenialBudget {
    fn take(&self) -> bool {
        let mut bucket = self.0.lock();
        let now = Instant::now();
        let refilled = bucket.1 + now.duration_since(bucket.0).as_secs_f64() * DENIALS_PER_SECOND;
        *bucket = (now, refilled.min(DENIAL_BURST));
        if bucket.1 >= 1.0 {
            bucket.1 -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Herald {
    /// Appends `entry` to the audit log.
    pub async fn audit(&self, entry: AuditEntry) {
        if let Err(e) = self.audit.append(&entry).await {
            metrics::counter!(crate::telemetry::AUDIT_NOT_RECORDED).increment(1);
            warn!(error = %e, action = entry.action.as_str(), "audit entry not recorded");
        }
    }

    /// Records a suppression Herald made or lifted by itself (a bounce, a complaint, STOP or
    /// START), in the log of the tenant whose message or number it came through.
    pub(crate) async fn audit_suppression(
        &self,
        tenant: &TenantId,
        action: AuditAction,
        entry: &Suppression,
    ) {
        let record = AuditEntry::now(Scope::Tenant(tenant.clone()), Actor::System, action)
            .target(format!("{}:{}", entry.channel, entry.address))
            .detail(json!({
                "reason": entry.reason.as_str(),
                "scope": entry.scope.label(),
                "source": entry.source,
            }));
        self.audit(record).await;
    }

    /// Appends a denied request's entry, within the denial budget.
    pub async fn audit_denial(&self, entry: AuditEntry) {
        metrics::counter!(crate::telemetry::ACCESS_DENIED).increment(1);
        if self.denials.take() {
            self.audit(entry).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_denial_budget_allows_a_burst_then_its_rate() {
        let budget = DenialBudget::default();
        let allowed = (0..200).filter(|_| budget.take()).count();
        assert!((50..=52).contains(&allowed), "{allowed}");
        *budget.0.lock() = (Instant::now() - std::time::Duration::from_secs(1), 0.0);
        let allowed = (0..200).filter(|_| budget.take()).count();
        assert!((10..=11).contains(&allowed), "{allowed}");
    }
}
