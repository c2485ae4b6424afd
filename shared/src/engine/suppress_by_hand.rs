//! Entries a tenant adds or removes by hand (through the API or the console): each recorded in
//! the audit log and announced to the tenant's webhooks.

use serde_json::json;

use super::Herald;
use crate::domain::audit::AuditEntry;
use crate::domain::suppression::{Scope, Suppression};
use crate::domain::{Channel, TenantId};
use crate::ports::StoreError;

/// What removing a tenant's entry did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsuppressed {
    Removed,
    /// The tenant has no entry, but the global list has the address (a dead mailbox or
    /// token): it stays.
    OnlyGlobal,
    NotFound,
}

impl Herald {
    /// Adds or replaces one of the tenant's entries; true when it is new. `audit` is the
    /// caller's `suppression.added` entry, completed here.
    pub async fn suppress_by_hand(
        &self,
        tenant: &TenantId,
        entry: &Suppression,
        audit: AuditEntry,
    ) -> Result<bool, StoreError> {
        let added = self
            .suppressions
            .put_suppressions(vec![entry.clone()])
            .await?;
        let source = entry.source.clone().unwrap_or_default();
        let record = audit
            .target(format!("{}:{}", entry.channel, entry.address))
            .detail(json!({ "reason": entry.reason.as_str(), "source": source }));
        self.record_audit(record).await;
        self.notify_suppression(tenant, entry.channel, &entry.address, Some(entry))
            .await;
        Ok(added == 1)
    }

    /// Removes the tenant's own entry for an address. `audit` is the caller's
    /// `suppression.removed` entry, completed and recorded when something was removed.
    pub async fn unsuppress_by_hand(
        &self,
        tenant: &TenantId,
        channel: Channel,
        address: &str,
        audit: AuditEntry,
    ) -> Result<Unsuppressed, StoreError> {
        let own = Scope::Tenant(tenant.clone());
        if self
            .suppressions
            .delete_suppression(&own, channel, address)
            .await?
        {
            self.record_audit(audit.target(format!("{channel}:{address}")))
                .await;
            self.notify_suppression(tenant, channel, address, None)
                .await;
            return Ok(Unsuppressed::Removed);
        }
        let global = self
            .suppressions
            .get_suppression(&Scope::Global, channel, address)
            .await?;
        Ok(if global.is_some() {
            Unsuppressed::OnlyGlobal
        } else {
            Unsuppressed::NotFound
        })
    }
}
