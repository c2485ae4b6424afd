//! Entries a tenant adds, removes, imports or exports by hand (through the API or the
//! console): each change recorded in the audit log, and single ones announced to the tenant's
//! webhooks.

use serde_json::json;

use super::Herald;
use crate::domain::audit::AuditEntry;
use crate::domain::suppression::{Scope, Suppression};
use crate::domain::suppression_csv::{write_rows, EXPORT_HEADER};
use crate::domain::{Channel, TenantId};
use crate::ports::{StoreError, SuppressionFilter};

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

/// What an import did: entries new to the list, and entries that replaced one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Imported {
    pub imported: usize,
    pub updated: usize,
}

impl Herald {
    /// Stores an import's entries in chunks and records one audit entry with its counts (an
    /// import may hold 100,000 rows); `audit` is the caller's `suppressions.imported` entry.
    pub async fn import_suppressions(
        &self,
        entries: Vec<Suppression>,
        rejected: usize,
        audit: AuditEntry,
    ) -> Result<Imported, StoreError> {
        let total = entries.len();
        let mut imported = 0;
        for chunk in entries.chunks(1000).map(<[Suppression]>::to_vec) {
            imported += self.suppressions.put_suppressions(chunk).await?;
        }
        let updated = total - imported;
        let detail = json!({ "imported": imported, "updated": updated, "rejected": rejected });
        self.record_audit(audit.detail(detail)).await;
        Ok(Imported { imported, updated })
    }

    /// The tenant's list as CSV (`suppression_csv::EXPORT_HEADER`), or `None` once it grows
    /// past `cap` bytes.
    pub async fn export_suppressions(
        &self,
        tenant: &TenantId,
        cap: Option<usize>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let scope = Scope::Tenant(tenant.clone());
        let write_error = |e: csv::Error| StoreError::Unavailable(format!("csv: {e}"));
        let mut out = csv::Writer::from_writer(Vec::new());
        out.write_record(EXPORT_HEADER).map_err(write_error)?;
        let mut after = None;
        loop {
            let filter = SuppressionFilter::default();
            let page = self
                .suppressions
                .list_suppressions(&scope, &filter, after.take(), 1000)
                .await?;
            write_rows(&mut out, &page).map_err(write_error)?;
            if cap.is_some_and(|cap| out.get_ref().len() > cap) {
                return Ok(None);
            }
            match page.last() {
                Some(last) if page.len() == 1000 => {
                    after = Some((last.channel, last.address.clone()))
                }
                _ => break,
            }
        }
        out.into_inner()
            .map(Some)
            .map_err(|e| StoreError::Unavailable(format!("csv: {e}")))
    }
}
