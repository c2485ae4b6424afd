//! One-click unsubscribe hosted by Herald: bulk and marketing email carries a signed link
//! (RFC 8058), and a POST to it suppresses the address for the tenant (and topic) at once.

use chrono::Utc;
use tracing::info;

use super::Herald;
use crate::domain::audit::AuditAction;
use crate::domain::deliverability::unsubscribe::{Unsubscribe, UnsubscribeKeys};
use crate::domain::suppression::{canonical_address, topic_key, Reason, Scope, Suppression};
use crate::domain::{Channel, Message, Priority};
use crate::ports::StoreError;

/// Message types that are marketing whatever their lane.
pub const MARKETING_TYPES: [&str; 3] = ["marketing", "newsletter", "promotion"];

/// Where the links point and what signs them; without both, no Herald link is added.
#[derive(Debug, Clone, Default)]
pub struct UnsubscribeConfig {
    /// The public address of Herald's API, e.g. `https://herald.example.com`.
    pub base_url: Option<String>,
    pub keys: UnsubscribeKeys,
}

/// Whether a message carries Herald's link: bulk-lane email, email of a marketing type, and
/// email sent on a topic.
pub fn wants_link(m: &Message) -> bool {
    m.channel == Channel::Email
        && (matches!(m.priority, Priority::P2 | Priority::P3)
            || m.options.topic.is_some()
            || m.message_type
                .as_deref()
                .is_some_and(|t| MARKETING_TYPES.contains(&t)))
}

impl Herald {
    /// The one-click link for a message, when it wants one and Herald can sign it.
    pub(crate) fn one_click_url(&self, m: &Message) -> Option<String> {
        let config = &self.config.unsubscribe;
        let base = config.base_url.as_deref()?;
        if !wants_link(m) {
            return None;
        }
        let token = config.keys.sign(&Unsubscribe {
            tenant: m.tenant.clone(),
            channel: m.channel,
            address: canonical_address(m.channel, &m.to),
            topic: m.options.topic.clone(),
        })?;
        Some(format!("{}/u/{token}", base.trim_end_matches('/')))
    }

    /// What a token asks, if Herald signed it.
    pub fn read_unsubscribe(&self, token: &str) -> Option<Unsubscribe> {
        self.config.unsubscribe.keys.verify(token)
    }

    /// Suppresses the token's address for its tenant (and topic). A repeat changes nothing and
    /// announces nothing. None when the token is not Herald's.
    pub async fn unsubscribe(&self, token: &str) -> Result<Option<Unsubscribe>, StoreError> {
        let Some(u) = self.read_unsubscribe(token) else {
            return Ok(None);
        };
        let address = canonical_address(u.channel, &u.address);
        let entry = Suppression {
            scope: Scope::Tenant(u.tenant.clone()),
            channel: u.channel,
            address: match &u.topic {
                Some(topic) => topic_key(&address, topic),
                None => address,
            },
            reason: Reason::Unsubscribe,
            source: Some("one_click".into()),
            created_at: Utc::now(),
            expires_at: None,
        };
        let existing = self
            .suppressions
            .get_suppression(&entry.scope, entry.channel, &entry.address)
            .await?;
        // A lasting entry already says it; a temporary or lapsed one is replaced by this one.
        let lasting = existing.is_some_and(|e| e.expires_at.is_none() && e.is_active(Utc::now()));
        if !lasting {
            self.suppressions
                .put_suppressions(vec![entry.clone()])
                .await?;
            info!(tenant = %u.tenant, channel = %u.channel, topic = ?u.topic, "one-click unsubscribe");
            self.audit_suppression(&u.tenant, AuditAction::SuppressionAdded, &entry)
                .await;
        }
        Ok(Some(u))
    }
}
