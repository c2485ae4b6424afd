//! Recording to the audit log. An entry is written after the action it records succeeded; a
//! store failure or a slow store then is logged and counted, not returned, since the action
//! has happened (and a dispatch that suppresses an address must not wait on the log).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::json;
use tracing::warn;

use super::Herald;
use crate::domain::audit::{Actor, AuditAction, AuditEntry};
use crate::domain::suppression::{Scope, Suppression};
use crate::domain::TenantId;

/// How long an append may take before it is given up (and counted).
const APPEND_TIMEOUT: Duration = Duration::from_secs(2);
/// Denied requests recorded per second and scope at most, after a burst: a flood of bad keys
/// must not turn into a flood of writes, and a flood against one tenant must not use up
/// another's budget. Past it, denials are only counted in the metrics.
const DENIALS_PER_SECOND: f64 = 10.0;
const DENIAL_BURST: f64 = 50.0;
/// Scopes with a bucket at most; past it the buckets start afresh (a memory bound).
const DENIAL_SCOPES: usize = 4_096;

/// Token buckets for denial entries, one per scope.
#[derive(Default)]
pub(crate) struct DenialBudget(Mutex<HashMap<String, (Instant, f64)>>);

impl DenialBudget {
    fn take(&self, scope: &Scope) -> bool {
        let mut buckets = self.0.lock();
        if buckets.len() >= DENIAL_SCOPES && !buckets.contains_key(scope.key()) {
            buckets.clear();
        }
        let now = Instant::now();
        let bucket = buckets
            .entry(scope.key().to_owned())
            .or_insert((now, DENIAL_BURST));
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
    pub async fn record_audit(&self, entry: AuditEntry) {
        let failure = match tokio::time::timeout(APPEND_TIMEOUT, self.audit.append(&entry)).await {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {APPEND_TIMEOUT:?}"),
        };
        metrics::counter!(crate::telemetry::AUDIT_NOT_RECORDED).increment(1);
        warn!(error = %failure, action = entry.action.as_str(), "audit entry not recorded");
    }

    /// Records a suppression Herald made or lifted by itself (a bounce, a complaint, STOP or
    /// START), in the log of the tenant whose message or number it came through, and in the
    /// platform's too when the entry applies to every tenant.
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
                "tenant": tenant.as_str(),
            }));
        if entry.scope == Scope::Global {
            let platform = AuditEntry {
                target: record.target.clone(),
                detail: record.detail.clone(),
                ..AuditEntry::now(Scope::Global, Actor::System, action)
            };
            self.record_audit(platform).await;
        }
        self.record_audit(record).await;
        let added = (action == AuditAction::SuppressionAdded).then_some(entry);
        self.notify_suppression(tenant, entry.channel, &entry.address, added)
            .await;
    }

    /// Appends a denied request's entry, within its scope's denial budget.
    pub async fn audit_denial(&self, entry: AuditEntry) {
        metrics::counter!(crate::telemetry::ACCESS_DENIED).increment(1);
        if self.denials.take(&entry.scope) {
            self.record_audit(entry).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_scope_has_a_denial_budget_of_a_burst_then_its_rate() {
        let budget = DenialBudget::default();
        let acme = Scope::Tenant(TenantId::parse("acme").unwrap_or_else(|_| unreachable!()));
        let allowed = (0..200).filter(|_| budget.take(&Scope::Global)).count();
        assert!((50..=52).contains(&allowed), "{allowed}");
        let allowed = (0..200).filter(|_| budget.take(&acme)).count();
        assert!(
            (50..=52).contains(&allowed),
            "another scope's flood leaves it whole: {allowed}"
        );
        let second_ago = Instant::now() - Duration::from_secs(1);
        budget.0.lock().insert("*".into(), (second_ago, 0.0));
        let allowed = (0..200).filter(|_| budget.take(&Scope::Global)).count();
        assert!((10..=11).contains(&allowed), "{allowed}");
    }
}
