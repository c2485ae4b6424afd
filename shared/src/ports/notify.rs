//! Events out: a tenant's webhook endpoints, the durable outbox of events, and each event's
//! deliveries with their attempts.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::StoreError;
use crate::domain::notify::{
    DeliveryId, EndpointId, EndpointSecret, EndpointUrl, EventId, EventType, Notice, Purpose,
    SigningSecret, Target, WebhookEndpoint,
};
use crate::domain::TenantId;

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Waiting for its next attempt.
    Pending,
    Succeeded,
    /// Out of retries, or its endpoint is gone (410).
    Failed,
    /// Kept for an event stream to read; never pushed.
    Buffered,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Succeeded => "succeeded",
            DeliveryState::Failed => "failed",
            DeliveryState::Buffered => "buffered",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryState> {
        [Self::Pending, Self::Succeeded, Self::Failed, Self::Buffered]
            .into_iter()
            .find(|d| d.as_str() == s)
    }
}

/// One try at a delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Attempt {
    /// 1 for the first try.
    pub attempt: u32,
    pub at: DateTime<Utc>,
    /// The endpoint's HTTP status; absent when no answer came (a timeout, a refused address).
    pub status_code: Option<u16>,
    pub latency_ms: u64,
    /// The start of the endpoint's answer, or why there was none.
    pub excerpt: String,
}

/// An event on its way to one endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookDelivery {
    pub id: DeliveryId,
    pub event_id: EventId,
    pub tenant: TenantId,
    pub endpoint: EndpointId,
    pub event_type: EventType,
    /// The body, fixed when the event was fanned out: every attempt sends the same bytes.
    pub payload: String,
    /// When the event happened: the signature's timestamp is when each attempt is made.
    pub created_at: DateTime<Utc>,
    pub state: DeliveryState,
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Oldest first.
    pub attempts: Vec<Attempt>,
}

impl WebhookDelivery {
    /// An event's first delivery to an endpoint (see [`DeliveryId::first_try`]).
    pub fn first_try(
        notice_id: EventId,
        endpoint: &WebhookEndpoint,
        t: EventType,
        payload: String,
    ) -> WebhookDelivery {
        WebhookDelivery {
            id: DeliveryId::first_try(notice_id, endpoint.id),
            ..WebhookDelivery::new(notice_id, endpoint, t, payload)
        }
    }

    /// A delivery of its own: a replay.
    pub fn new(
        notice_id: EventId,
        endpoint: &WebhookEndpoint,
        t: EventType,
        payload: String,
    ) -> WebhookDelivery {
        let now = Utc::now();
        let (state, next_attempt_at) = match endpoint.target {
            Target::Push(_) => (DeliveryState::Pending, Some(now)),
            Target::Stream { .. } => (DeliveryState::Buffered, None),
        };
        WebhookDelivery {
            id: DeliveryId::new(),
            event_id: notice_id,
            tenant: endpoint.tenant.clone(),
            endpoint: endpoint.id,
            event_type: t,
            payload,
            created_at: now,
            state,
            next_attempt_at,
            attempts: Vec::new(),
        }
    }
}

/// An endpoint as both backends store it: the domain type's fields in their plain forms, as
/// JSON beside its id and tenant.
#[derive(Serialize, Deserialize)]
pub struct EndpointRecord {
    /// Absent for a stream.
    url: Option<String>,
    /// When a stream's subscription lapses (ms); absent for a pushed endpoint.
    #[serde(default)]
    stream_until: Option<i64>,
    /// A development forward of provider webhooks (absent: an events endpoint).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    dev_forward: bool,
    event_types: Vec<EventType>,
    description: String,
    enabled: bool,
    disabled_reason: Option<String>,
    secrets: Vec<(String, Option<i64>)>,
    failing_since: Option<i64>,
    created_at: i64,
    updated_at: i64,
}

impl EndpointRecord {
    pub fn of(ep: &WebhookEndpoint) -> EndpointRecord {
        let ms = |t: DateTime<Utc>| t.timestamp_millis();
        EndpointRecord {
            url: ep.url().map(|u| u.as_str().to_owned()),
            stream_until: match ep.target {
                Target::Push(_) => None,
                Target::Stream { until } => Some(ms(until)),
            },
            dev_forward: ep.purpose == Purpose::DevForward,
            event_types: ep.event_types.clone(),
            description: ep.description.clone(),
            enabled: ep.enabled,
            disabled_reason: ep.disabled_reason.clone(),
            secrets: ep
                .secrets
                .iter()
                .map(|s| (s.secret.expose().to_owned(), s.expires_at.map(ms)))
                .collect(),
            failing_since: ep.failing_since.map(ms),
            created_at: ms(ep.created_at),
            updated_at: ms(ep.updated_at),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The endpoint stored as `json` under `id` and `tenant`; the error names the bad field.
    pub fn read(id: &str, tenant: &str, json: &str) -> Result<WebhookEndpoint, String> {
        let at = |v: i64| DateTime::from_timestamp_millis(v).unwrap_or_default();
        let r: EndpointRecord = serde_json::from_str(json).map_err(|_| "endpoint".to_owned())?;
        let secrets = r
            .secrets
            .into_iter()
            .map(|(secret, expires)| {
                Ok(EndpointSecret {
                    secret: SigningSecret::from_stored(secret).ok_or("secret")?,
                    expires_at: expires.map(at),
                })
            })
            .collect::<Result<_, &str>>()?;
        Ok(WebhookEndpoint {
            id: EndpointId::parse(id).ok_or("endpoint id")?,
            tenant: TenantId::parse(tenant).map_err(|_| "tenant")?,
            target: match (r.url, r.stream_until) {
                (Some(url), None) => Target::Push(EndpointUrl::parse(&url).map_err(|_| "url")?),
                (None, Some(until)) => Target::Stream { until: at(until) },
                _ => return Err("target".into()),
            },
            purpose: match r.dev_forward {
                true => Purpose::DevForward,
                false => Purpose::Events,
            },
            event_types: r.event_types,
            description: r.description,
            enabled: r.enabled,
            disabled_reason: r.disabled_reason,
            secrets,
            failing_since: r.failing_since.map(at),
            created_at: at(r.created_at),
            updated_at: at(r.updated_at),
        })
    }
}

/// A notice read from the outbox, with the position that removes it.
#[derive(Debug, Clone)]
pub struct Queued {
    pub seq: i64,
    pub notice: Notice,
}

#[async_trait]
pub trait WebhookStore: Send + Sync + 'static {
    /// Creates or replaces an endpoint.
    async fn put_endpoint(&self, endpoint: &WebhookEndpoint) -> Result<(), StoreError>;
    async fn endpoint(
        &self,
        tenant: &TenantId,
        id: EndpointId,
    ) -> Result<Option<WebhookEndpoint>, StoreError>;
    /// A tenant's endpoints, oldest first.
    async fn endpoints(&self, tenant: &TenantId) -> Result<Vec<WebhookEndpoint>, StoreError>;
    /// Deletes an endpoint and its pending deliveries; false when there was none.
    async fn delete_endpoint(&self, tenant: &TenantId, id: EndpointId) -> Result<bool, StoreError>;
    /// Every enabled endpoint of every tenant: what the notifier fans out to.
    async fn enabled_endpoints(&self) -> Result<Vec<WebhookEndpoint>, StoreError>;
    /// Notes a delivery's result on its endpoint: failing since when (`None`: it succeeded),
    /// and, when Herald turns it off, why. Leaves every other field as a person set it.
    async fn note_endpoint_health(
        &self,
        tenant: &TenantId,
        id: EndpointId,
        failing_since: Option<DateTime<Utc>>,
        disable: Option<String>,
    ) -> Result<(), StoreError>;

    /// Queues events for the notifier: the outbox table embedded, the notify queue on AWS.
    async fn publish(&self, notices: Vec<Notice>) -> Result<(), StoreError>;
    /// Stores new deliveries (fanned-out events, replays) as pending.
    async fn save_deliveries(&self, deliveries: Vec<WebhookDelivery>) -> Result<(), StoreError>;
    /// Records an attempt and the delivery's new state.
    async fn record_attempt(
        &self,
        id: DeliveryId,
        attempt: Attempt,
        state: DeliveryState,
        next_attempt_at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError>;
    /// An endpoint's deliveries, newest first, below `before`.
    async fn deliveries(
        &self,
        tenant: &TenantId,
        endpoint: EndpointId,
        before: Option<DeliveryId>,
        limit: usize,
    ) -> Result<Vec<WebhookDelivery>, StoreError>;
    async fn delivery(
        &self,
        tenant: &TenantId,
        id: DeliveryId,
    ) -> Result<Option<WebhookDelivery>, StoreError>;
    /// An endpoint's deliveries made at or after `since` (their ids' time), in id order, at
    /// most `limit`.
    async fn deliveries_since(
        &self,
        tenant: &TenantId,
        endpoint: EndpointId,
        since: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<WebhookDelivery>, StoreError>;
    /// Retention: deletes finished deliveries made before `cutoff` (DynamoDB: its TTL does).
    async fn purge_deliveries(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError>;
}

/// The embedded notifier's queue: the outbox and the due deliveries are polled from tables.
/// (On AWS, SQS pushes events and retries to the `notify` function instead.)
#[async_trait]
pub trait PolledOutbox: WebhookStore {
    /// The oldest events in the outbox.
    async fn outbox(&self, limit: usize) -> Result<Vec<Queued>, StoreError>;
    /// In one unit of work: removes events from the outbox and stores their deliveries.
    async fn fan_out(
        &self,
        done: Vec<i64>,
        deliveries: Vec<WebhookDelivery>,
    ) -> Result<(), StoreError>;
    /// Pending deliveries due at `now` to enabled endpoints, oldest event first.
    async fn due_deliveries(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<WebhookDelivery>, StoreError>;
}
