//! Development forwards: a tenant's admins have the provider webhooks about the tenant's own
//! messages and numbers sent on to a laptop or a staging host, as received, through the same
//! fan-out, delivery log and retries as events.

use std::collections::BTreeSet;

use chrono::Utc;

use super::{bit, guard, EndpointError};
use crate::domain::notify::{
    EndpointId, EndpointPatch, EndpointUrl, ForwardedWebhook, Notice, ProviderSource, Purpose,
    SigningSecret, Subject, Target, WebhookEndpoint,
};
use crate::domain::{MessageId, TenantId};
use crate::engine::Herald;
use crate::ports::ProviderEvent;

/// What a provider webhook is about, as its handler found out: the only tenant it may be
/// forwarded to is the one every part of it belongs to.
#[derive(Debug, Default)]
pub struct Concerns {
    messages: BTreeSet<MessageId>,
    /// (gateway, provider message id) for events that did not carry Herald's id.
    provider_ids: BTreeSet<(String, String)>,
    tenants: BTreeSet<TenantId>,
    /// Why it must not be forwarded at all: a part no tenant could be found for, or a repeat
    /// of a webhook already handled (a replayed forward must not be forwarded again).
    withheld: Option<&'static str>,
}

impl Concerns {
    /// Nothing of the webhook is forwarded (fail closed: a part no one owns might be anyone's).
    pub fn withhold(&mut self, why: &'static str) {
        self.withheld.get_or_insert(why);
    }

    pub fn note_message(&mut self, id: Option<MessageId>, gateway: &str, provider_id: &str) {
        match id {
            Some(id) => {
                self.messages.insert(id);
            }
            None => {
                self.provider_ids
                    .insert((gateway.to_owned(), provider_id.to_owned()));
            }
        }
    }

    /// Notes the messages provider events are about.
    pub fn note_events(&mut self, events: &[ProviderEvent]) {
        for e in events {
            self.note_message(e.message_id, &e.gateway, &e.provider_message_id);
        }
    }

    pub fn note_tenant(&mut self, tenant: &TenantId) {
        self.tenants.insert(tenant.clone());
    }
}

/// A change to a development forward: each field set replaces the stored one.
#[derive(Debug, Clone, Default)]
pub struct ForwardPatch {
    pub url: Option<EndpointUrl>,
    pub sources: Option<Vec<ProviderSource>>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
}

/// A new development forward.
#[derive(Debug, Clone)]
pub struct NewForward {
    pub url: EndpointUrl,
    /// Empty: every provider's.
    pub sources: Vec<ProviderSource>,
    pub description: String,
}

impl Herald {
    /// Whether any tenant forwards `source`'s webhooks (as far as this process knows).
    pub async fn forwards_wanted(&self, source: ProviderSource) -> bool {
        if self.webhooks.is_none() {
            return false;
        }
        self.current_subscriptions()
            .await
            .is_none_or(|s| s.mask_of(None) & bit(source.event_type()) != 0)
    }

    /// Forwards a verified provider webhook to the forwards of the one tenant it concerns.
    pub async fn forward_provider_webhook(&self, hook: ForwardedWebhook, concerns: Concerns) {
        let source = hook.source.as_str();
        if let Some(why) = concerns.withheld {
            metrics::counter!("herald_dev_forwards_withheld_total", "source" => source)
                .increment(1);
            tracing::info!(source, why, "provider webhook not forwarded");
            return;
        }
        let tenant = match self.tenant_concerned(concerns).await {
            Ok(Some(tenant)) => tenant,
            Ok(None) => {
                metrics::counter!("herald_dev_forwards_unattributed_total", "source" => source)
                    .increment(1);
                tracing::info!(
                    source,
                    "provider webhook not forwarded: it concerns no one tenant"
                );
                return;
            }
            Err(e) => {
                tracing::warn!(source, error = %e, "provider webhook not forwarded: its tenant was not found");
                return;
            }
        };
        let event_type = hook.source.event_type();
        let data = serde_json::to_value(&hook).unwrap_or_default();
        let notice = Notice::new(Some(tenant), event_type, Subject::Data { data });
        self.notify(vec![notice]).await;
    }

    /// The tenant every part of a webhook belongs to; `None` if several or none.
    async fn tenant_concerned(
        &self,
        c: Concerns,
    ) -> Result<Option<TenantId>, crate::ports::StoreError> {
        let mut ids = c.messages;
        if !c.provider_ids.is_empty() {
            let keys: Vec<_> = c.provider_ids.into_iter().collect();
            for found in self.store.find_by_provider_ids(keys).await? {
                match found {
                    Some(id) => ids.insert(id),
                    None => return Ok(None),
                };
            }
        }
        let mut tenants = c.tenants;
        for id in ids {
            match self.store.owner_of(id).await? {
                Some(t) => tenants.insert(t),
                None => return Ok(None),
            };
        }
        let mut one = tenants.into_iter();
        Ok(match (one.next(), one.next()) {
            (Some(t), None) => Some(t),
            _ => None,
        })
    }

    /// Registers a development forward pushed to a URL; its secret is shown once.
    pub async fn create_dev_forward(
        &self,
        tenant: &TenantId,
        new: NewForward,
    ) -> Result<(WebhookEndpoint, SigningSecret), EndpointError> {
        let cfg = &self.config.notify;
        guard::check_forward_url(&new.url, cfg.policy, &cfg.dev_allow)
            .map_err(EndpointError::Refused)?;
        self.make_room(tenant).await?;
        let target = Target::Push(new.url);
        let mut ep = WebhookEndpoint::dev_forward(tenant.clone(), target, &new.sources, Utc::now());
        ep.description = new.description;
        self.register(ep).await
    }

    /// A development forward pushed to a URL.
    pub async fn dev_forward(
        &self,
        tenant: &TenantId,
        id: EndpointId,
    ) -> Result<WebhookEndpoint, EndpointError> {
        self.managed_endpoint(tenant, id, Purpose::DevForward).await
    }

    /// The tenant's development forwards pushed to URLs, oldest first.
    pub async fn dev_forwards(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<WebhookEndpoint>, EndpointError> {
        self.managed_endpoints(tenant, Purpose::DevForward).await
    }

    /// Changes a forward: its URL (checked as at registration), sources (empty: every
    /// provider's), description, or whether it is on (turning it back on forgets its failures).
    pub async fn update_dev_forward(
        &self,
        tenant: &TenantId,
        id: EndpointId,
        patch: ForwardPatch,
    ) -> Result<WebhookEndpoint, EndpointError> {
        if let Some(url) = &patch.url {
            let cfg = &self.config.notify;
            guard::check_forward_url(url, cfg.policy, &cfg.dev_allow)
                .map_err(EndpointError::Refused)?;
        }
        let mut ep = self.dev_forward(tenant, id).await?;
        let patch = EndpointPatch {
            url: patch.url,
            event_types: patch.sources.as_deref().map(ProviderSource::event_types),
            description: patch.description,
            enabled: patch.enabled,
        };
        ep.apply(patch, Utc::now());
        self.save_endpoint(&ep).await?;
        Ok(ep)
    }

    pub async fn delete_dev_forward(
        &self,
        tenant: &TenantId,
        id: EndpointId,
    ) -> Result<(), EndpointError> {
        self.dev_forward(tenant, id).await?;
        self.remove_endpoint(tenant, id).await
    }
}
