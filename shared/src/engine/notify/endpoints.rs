//! A tenant's endpoints: register, change, rotate the secret, delete, and replay deliveries.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::guard;
use crate::domain::notify::{
    DeliveryId, EndpointId, EndpointPatch, NewEndpoint, Purpose, SigningSecret, WebhookEndpoint,
};
use crate::domain::TenantId;
use crate::engine::Herald;
use crate::ports::{StoreError, WebhookDelivery, WebhookStore};

/// The most deliveries one replay-since request makes.
pub const MAX_REPLAY: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("url: {0}")]
    Refused(String),
    #[error("a tenant may have at most {0} webhook endpoints, event streams and dev forwards")]
    TooMany(usize),
    #[error("not found")]
    NotFound,
    /// Too many event streams open (per tenant or in all).
    #[error("{0}")]
    Busy(String),
    #[error("webhook endpoints are not available on this backend")]
    Unavailable,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Herald {
    pub(super) fn webhook_store(&self) -> Result<&Arc<dyn WebhookStore>, EndpointError> {
        self.webhooks.as_ref().ok_or(EndpointError::Unavailable)
    }

    /// Saves an endpoint and has the notifier see it at once.
    pub(super) async fn save_endpoint(&self, ep: &WebhookEndpoint) -> Result<(), EndpointError> {
        self.webhook_store()?.put_endpoint(ep).await?;
        self.refresh_subscriptions(Duration::ZERO).await;
        Ok(())
    }

    pub async fn create_endpoint(
        &self,
        tenant: &TenantId,
        new: NewEndpoint,
    ) -> Result<(WebhookEndpoint, SigningSecret), EndpointError> {
        guard::check_url(&new.url, self.config.notify.policy).map_err(EndpointError::Refused)?;
        self.make_room(tenant).await?;
        self.register(WebhookEndpoint::create(tenant.clone(), new, Utc::now()))
            .await
    }

    /// Saves a new pushed endpoint (its tenant has room) and hands back its secret, shown
    /// this once.
    pub(super) async fn register(
        &self,
        ep: WebhookEndpoint,
    ) -> Result<(WebhookEndpoint, SigningSecret), EndpointError> {
        let secret = ep.secrets.first().map(|s| s.secret.clone());
        let secret = secret.ok_or_else(|| EndpointError::Refused("no secret was made".into()))?;
        self.save_endpoint(&ep).await?;
        Ok((ep, secret))
    }

    /// Checks the tenant may have one more endpoint or stream, deleting its lapsed streams.
    pub(super) async fn make_room(&self, tenant: &TenantId) -> Result<(), EndpointError> {
        let store = self.webhook_store()?;
        let now = Utc::now();
        let mut live = 0;
        for ep in store.endpoints(tenant).await? {
            if ep.is_live(now) {
                live += 1;
            } else {
                store.delete_endpoint(tenant, ep.id).await?;
            }
        }
        let max = self.config.notify.max_endpoints_per_tenant;
        if live >= max {
            return Err(EndpointError::TooMany(max));
        }
        Ok(())
    }

    /// An events endpoint (streams and development forwards are not managed through the
    /// endpoints API).
    pub async fn endpoint(
        &self,
        tenant: &TenantId,
        id: EndpointId,
    ) -> Result<WebhookEndpoint, EndpointError> {
        self.managed_endpoint(tenant, id, Purpose::Events).await
    }

    /// The tenant's events endpoints, oldest first.
    pub async fn endpoints(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<WebhookEndpoint>, EndpointError> {
        self.managed_endpoints(tenant, Purpose::Events).await
    }

    /// A pushed endpoint (not a stream) for `purpose`.
    pub(super) async fn managed_endpoint(
        &self,
        tenant: &TenantId,
        id: EndpointId,
        purpose: Purpose,
    ) -> Result<WebhookEndpoint, EndpointError> {
        self.webhook_store()?
            .endpoint(tenant, id)
            .await?
            .filter(|ep| !ep.is_stream() && ep.purpose == purpose)
            .ok_or(EndpointError::NotFound)
    }

    pub(super) async fn managed_endpoints(
        &self,
        tenant: &TenantId,
        purpose: Purpose,
    ) -> Result<Vec<WebhookEndpoint>, EndpointError> {
        let mut all = self.webhook_store()?.endpoints(tenant).await?;
        all.retain(|ep| !ep.is_stream() && ep.purpose == purpose);
        Ok(all)
    }

    pub async fn update_endpoint(
        &self,
        tenant: &TenantId,
        id: EndpointId,
        patch: EndpointPatch,
    ) -> Result<WebhookEndpoint, EndpointError> {
        if let Some(url) = &patch.url {
            guard::check_url(url, self.config.notify.policy).map_err(EndpointError::Refused)?;
        }
        let mut ep = self.endpoint(tenant, id).await?;
        ep.apply(patch, Utc::now());
        self.save_endpoint(&ep).await?;
        Ok(ep)
    }

    pub async fn rotate_endpoint_secret(
        &self,
        tenant: &TenantId,
        id: EndpointId,
    ) -> Result<(WebhookEndpoint, SigningSecret), EndpointError> {
        let mut ep = self.endpoint(tenant, id).await?;
        let overlap = chrono::Duration::from_std(self.config.notify.secret_overlap)
            .unwrap_or_else(|_| chrono::Duration::hours(24));
        let secret = ep.rotate(Utc::now(), overlap);
        self.save_endpoint(&ep).await?;
        Ok((ep, secret))
    }

    pub async fn delete_endpoint(
        &self,
        tenant: &TenantId,
        id: EndpointId,
    ) -> Result<(), EndpointError> {
        self.endpoint(tenant, id).await?;
        self.remove_endpoint(tenant, id).await
    }

    pub(super) async fn remove_endpoint(
        &self,
        tenant: &TenantId,
        id: EndpointId,
    ) -> Result<(), EndpointError> {
        if !self.webhook_store()?.delete_endpoint(tenant, id).await? {
            return Err(EndpointError::NotFound);
        }
        self.refresh_subscriptions(Duration::ZERO).await;
        Ok(())
    }

    /// The delivery log of an events endpoint or a development forward (`purpose`).
    pub async fn endpoint_deliveries(
        &self,
        tenant: &TenantId,
        id: EndpointId,
        purpose: Purpose,
        before: Option<DeliveryId>,
        limit: usize,
    ) -> Result<Vec<WebhookDelivery>, EndpointError> {
        self.managed_endpoint(tenant, id, purpose).await?;
        Ok(self
            .webhook_store()?
            .deliveries(tenant, id, before, limit)
            .await?)
    }

    /// Sends a delivery's event again, as a new delivery with the same `webhook-id` and body.
    pub async fn replay_delivery(
        &self,
        tenant: &TenantId,
        id: DeliveryId,
    ) -> Result<WebhookDelivery, EndpointError> {
        let store = self.webhook_store()?;
        let old = store
            .delivery(tenant, id)
            .await?
            .ok_or(EndpointError::NotFound)?;
        // An events endpoint's or a dev forward's; a stream reads its own again.
        let ep = store
            .endpoint(tenant, old.endpoint)
            .await?
            .filter(|ep| !ep.is_stream())
            .ok_or(EndpointError::NotFound)?;
        let again = WebhookDelivery::new(old.event_id, &ep, old.event_type, old.payload);
        store.save_deliveries(vec![again.clone()]).await?;
        Ok(again)
    }

    /// Sends again every event delivered to an endpoint since `since` (at most
    /// [`MAX_REPLAY`]); returns how many.
    pub async fn replay_since(
        &self,
        tenant: &TenantId,
        id: EndpointId,
        since: DateTime<Utc>,
    ) -> Result<usize, EndpointError> {
        let ep = self.endpoint(tenant, id).await?;
        let store = self.webhook_store()?;
        let old = store
            .deliveries_since(tenant, id, since, MAX_REPLAY)
            .await?;
        let mut seen = std::collections::HashSet::new();
        let again: Vec<_> = old
            .into_iter()
            .filter(|d| seen.insert(d.event_id))
            .map(|d| WebhookDelivery::new(d.event_id, &ep, d.event_type, d.payload))
            .collect();
        let count = again.len();
        store.save_deliveries(again).await?;
        Ok(count)
    }
}
