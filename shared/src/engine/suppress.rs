//! The suppression rules: the checks at accept and at dispatch, and what adds an address to the
//! list (hard bounces, complaints, repeated soft bounces, refusals that mean the address is
//! dead or has opted out).

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use tracing::{info, warn};

use super::Herald;
use crate::domain::audit::AuditAction;
use crate::domain::suppression::{
    canonical_address, topic_key, Reason, Scope, Suppression, Topic, SOFT_BOUNCE_STRIKES,
    SOFT_BOUNCE_WINDOW_DAYS,
};
use crate::domain::{Channel, TenantId};
use crate::ports::{MessageRef, ProviderEventKind, StoreError};

/// Where an automatic entry goes: a dead mailbox or token is dead for everyone; complaints,
/// opt-outs and strikes are about one sender.
pub fn scope_for(reason: Reason, tenant: &TenantId) -> Scope {
    match reason {
        Reason::HardBounce | Reason::InvalidToken => Scope::Global,
        _ => Scope::Tenant(tenant.clone()),
    }
}

/// The first event's note on a message stopped by an entry.
pub fn suppression_note(s: &Suppression) -> serde_json::Value {
    json!({ "suppressed": { "reason": s.reason.as_str(), "scope": s.scope.label() } })
}

impl Herald {
    /// Active entries for recipients of one tenant and channel, keyed by the address as given.
    pub async fn suppressed_recipients(
        &self,
        tenant: &TenantId,
        channel: Channel,
        recipients: &[&str],
    ) -> Result<HashMap<String, Suppression>, StoreError> {
        let canonical: Vec<String> = recipients
            .iter()
            .map(|r| canonical_address(channel, r))
            .collect();
        let found = self
            .suppressions
            .suppressed(tenant, channel, &canonical, Utc::now())
            .await?;
        if found.is_empty() {
            return Ok(found);
        }
        Ok(recipients
            .iter()
            .zip(&canonical)
            .filter_map(|(r, c)| found.get(c).map(|s| ((*r).to_owned(), s.clone())))
            .collect())
    }

    /// As [`Herald::suppressed_recipients`], and for a send on `topic` the recipients who left
    /// that topic too (one look-up for both kinds of entry).
    pub async fn suppressed_for(
        &self,
        tenant: &TenantId,
        channel: Channel,
        recipients: &[&str],
        topic: Option<&Topic>,
    ) -> Result<HashMap<String, Suppression>, StoreError> {
        let Some(topic) = topic else {
            return self
                .suppressed_recipients(tenant, channel, recipients)
                .await;
        };
        let canonical: Vec<String> = recipients
            .iter()
            .map(|r| canonical_address(channel, r))
            .collect();
        let keys: Vec<String> = canonical
            .iter()
            .flat_map(|c| [c.clone(), topic_key(c, topic)])
            .collect();
        let found = self
            .suppressions
            .suppressed(tenant, channel, &keys, Utc::now())
            .await?;
        Ok(recipients
            .iter()
            .zip(&canonical)
            .filter_map(|(r, c)| {
                let entry = found.get(c).or_else(|| found.get(&topic_key(c, topic)))?;
                Some(((*r).to_owned(), entry.clone()))
            })
            .collect())
    }

    /// Adds an automatic entry; a failure is logged, never the caller's failure (the message's
    /// own outcome is already recorded).
    pub async fn add_suppression(
        &self,
        target: &MessageRef,
        reason: Reason,
        source: String,
        at: DateTime<Utc>,
    ) {
        let entry = Suppression {
            scope: scope_for(reason, &target.tenant),
            channel: target.channel,
            address: canonical_address(target.channel, &target.to),
            reason,
            source: Some(source),
            created_at: at,
            expires_at: None,
        };
        info!(channel = %entry.channel, reason = reason.as_str(), scope = entry.scope.label(), "address suppressed");
        match self
            .suppressions
            .put_suppressions(vec![entry.clone()])
            .await
        {
            Ok(_) => {
                self.audit_suppression(&target.tenant, AuditAction::SuppressionAdded, &entry)
                    .await
            }
            Err(e) => warn!(error = %e, "suppression not recorded"),
        }
    }

    /// The suppression a provider's report calls for, if any.
    pub async fn suppress_after(
        &self,
        target: &MessageRef,
        kind: ProviderEventKind,
        source: String,
        at: DateTime<Utc>,
    ) {
        match kind {
            ProviderEventKind::Bounced { permanent: true } => {
                self.add_suppression(target, Reason::HardBounce, source, at)
                    .await
            }
            ProviderEventKind::Complained => {
                self.add_suppression(target, Reason::Complaint, source, at)
                    .await
            }
            ProviderEventKind::Bounced { permanent: false } => {
                let window = Duration::from_secs(SOFT_BOUNCE_WINDOW_DAYS as u64 * 24 * 3600);
                let address = canonical_address(target.channel, &target.to);
                match self
                    .suppressions
                    .soft_bounce(&target.tenant, target.channel, &address, at, window)
                    .await
                {
                    Ok(strikes) if strikes >= SOFT_BOUNCE_STRIKES => {
                        self.add_suppression(target, Reason::SoftBounceStrikes, source, at)
                            .await
                    }
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "soft bounce not counted"),
                }
            }
            _ => {}
        }
    }
}
