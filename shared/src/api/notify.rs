//! Webhook endpoints: `POST|GET /v1/webhook-endpoints`, `GET|PATCH|DELETE
//! /v1/webhook-endpoints/{id}`, `POST .../rotate-secret`, `GET .../deliveries`, `POST
//! .../replay`, and `GET|POST /v1/webhook-deliveries/{id}[/replay]`. A secret is in the answer
//! that makes it, and never again.

use std::sync::Arc;

use axum::extract::{rejection::PathRejection, Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{AuthTenant, Caller, JsonBody};
use super::paging::{Cursor, ListQuery, NoFilter, MESSAGE_ID_PATTERN};
use super::problem::{AuthErrors, JsonBodyErrors, NotFound, Problem, QueryErrors};
use crate::domain::audit::AuditAction;
use crate::domain::notify::{
    DeliveryId, EndpointId, EndpointPatch, EndpointUrl, EventType, NewEndpoint, Purpose,
    WebhookEndpoint, MAX_DESCRIPTION,
};
use crate::domain::FieldError;
use crate::engine::notify::EndpointError;
use crate::engine::Herald;
use crate::ports::{Attempt, DeliveryState, WebhookDelivery};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointInput {
    /// https, and public: private, loopback, link-local and metadata addresses are refused.
    #[schema(max_length = 2048, example = "https://hooks.example.com/herald")]
    pub url: String,
    /// The event types to send; none or empty: every type.
    #[serde(default)]
    pub event_types: Vec<EventType>,
    #[serde(default)]
    #[schema(max_length = 500)]
    pub description: String,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointPatchInput {
    #[schema(max_length = 2048)]
    pub url: Option<String>,
    pub event_types: Option<Vec<EventType>>,
    #[schema(max_length = 500)]
    pub description: Option<String>,
    pub enabled: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointView {
    #[schema(
        pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )]
    pub id: String,
    pub url: String,
    /// Empty: every type.
    pub event_types: Vec<EventType>,
    pub description: String,
    pub enabled: bool,
    /// Why Herald turned it off (410 Gone, failing for days).
    pub disabled_reason: Option<String>,
    /// Since when every delivery has failed.
    pub failing_since: Option<DateTime<Utc>>,
    /// When the replaced secret, still signing beside the current one, stops.
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An endpoint with its signing secret: only in the answer that made the secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointWithSecret {
    #[serde(flatten)]
    pub endpoint: EndpointView,
    /// `whsec_` and base64: verify deliveries with it (Standard Webhooks). Shown once.
    pub secret: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointList {
    pub items: Vec<EndpointView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    pub id: String,
    /// The `webhook-id` header: the same for every delivery of the event, replays included.
    pub event_id: String,
    pub endpoint_id: String,
    pub event_type: EventType,
    pub state: DeliveryState,
    pub created_at: DateTime<Utc>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub attempts: Vec<Attempt>,
    /// The event's payload (a dev forward's carries the provider webhook in `data`).
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryPage {
    pub items: Vec<DeliveryView>,
    pub next_after: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayInput {
    /// Every event delivered to the endpoint since then is sent again (at most 10,000).
    pub since: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayCount {
    pub replayed: usize,
}

impl Cursor for DeliveryId {
    fn pattern() -> String {
        MESSAGE_ID_PATTERN.into()
    }

    fn decode(raw: &str) -> Option<DeliveryId> {
        DeliveryId::parse(raw)
    }

    fn encode(&self) -> String {
        self.to_string()
    }
}

pub type DeliveryQuery = ListQuery<DeliveryId, NoFilter, 100>;

/// The endpoint's URL: every endpoint this API returns is pushed to one (streams are not
/// managed here).
fn url_text(ep: &WebhookEndpoint) -> &str {
    ep.url().map_or("", EndpointUrl::as_str)
}

fn view(ep: &WebhookEndpoint) -> EndpointView {
    EndpointView {
        id: ep.id.to_string(),
        url: url_text(ep).to_owned(),
        event_types: ep.event_types.clone(),
        description: ep.description.clone(),
        enabled: ep.enabled,
        disabled_reason: ep.disabled_reason.clone(),
        failing_since: ep.failing_since,
        previous_secret_expires_at: ep.secrets.iter().skip(1).filter_map(|s| s.expires_at).max(),
        created_at: ep.created_at,
        updated_at: ep.updated_at,
    }
}

pub(super) fn delivery_view(d: WebhookDelivery) -> DeliveryView {
    DeliveryView {
        id: d.id.to_string(),
        event_id: d.event_id.to_string(),
        endpoint_id: d.endpoint.to_string(),
        event_type: d.event_type,
        state: d.state,
        created_at: d.created_at,
        next_attempt_at: d.next_attempt_at,
        attempts: d.attempts,
        payload: serde_json::from_str(&d.payload).unwrap_or_default(),
    }
}

impl From<EndpointError> for Problem {
    fn from(e: EndpointError) -> Problem {
        match e {
            EndpointError::Refused(why) => {
                Problem::invalid(FieldError::new("/url", "refused", why))
            }
            EndpointError::TooMany(_) => {
                Problem::new(StatusCode::CONFLICT, "too-many-endpoints", e.to_string())
            }
            EndpointError::NotFound => Problem::not_found("webhook endpoint"),
            EndpointError::Busy(why) => {
                Problem::new(StatusCode::TOO_MANY_REQUESTS, "too-many-streams", why)
            }
            EndpointError::Unavailable => {
                Problem::new(StatusCode::NOT_IMPLEMENTED, "not-available", e.to_string())
            }
            EndpointError::Store(e) => e.into(),
        }
    }
}

pub(super) fn url_of(raw: &str) -> Result<EndpointUrl, Problem> {
    EndpointUrl::parse(raw).map_err(|e| Problem::invalid(FieldError::new("/url", "invalid", e)))
}

pub(super) fn description_of(raw: String) -> Result<String, Problem> {
    if raw.chars().count() > MAX_DESCRIPTION {
        let detail = format!("at most {MAX_DESCRIPTION} characters");
        return Err(Problem::invalid(FieldError::new(
            "/description",
            "too_long",
            detail,
        )));
    }
    Ok(raw)
}

/// Provider webhooks go to development forwards only (admin, `/v1/dev-forwards`).
fn event_types_of(types: Vec<EventType>) -> Result<Vec<EventType>, Problem> {
    match types.iter().position(|t| t.is_forward()) {
        None => Ok(types),
        Some(i) => Err(Problem::invalid(FieldError::new(
            format!("/event_types/{i}"),
            "invalid",
            "provider webhooks are forwarded only to development forwards (/v1/dev-forwards)",
        ))),
    }
}

/// An endpoint id from the path; a malformed one names no endpoint.
fn endpoint_id(path: Result<Path<String>, PathRejection>) -> Result<EndpointId, Problem> {
    path.ok()
        .and_then(|Path(raw)| EndpointId::parse(&raw))
        .ok_or_else(|| Problem::not_found("webhook endpoint"))
}

fn delivery_id(path: Result<Path<String>, PathRejection>) -> Result<DeliveryId, Problem> {
    path.ok()
        .and_then(|Path(raw)| DeliveryId::parse(&raw))
        .ok_or_else(|| Problem::not_found("webhook delivery"))
}

/// Registers an endpoint; the answer carries its secret, shown this once.
#[utoipa::path(post, operation_id = "create_webhook_endpoint", path = "/v1/webhook-endpoints", tag = "webhooks",
    request_body = EndpointInput,
    responses((status = 201, body = EndpointWithSecret), AuthErrors, JsonBodyErrors,
        (status = 409, body = Problem, content_type = "application/problem+json", description = "the tenant has the most endpoints allowed")),
    security(("api_key" = [])))]
pub async fn create(
    State(herald): State<Arc<Herald>>,
    caller: Caller,
    body: JsonBody<EndpointInput>,
) -> Result<(StatusCode, Json<EndpointWithSecret>), Problem> {
    let input = body.value;
    let new = NewEndpoint {
        url: url_of(&input.url)?,
        event_types: event_types_of(input.event_types)?,
        description: description_of(input.description)?,
        enabled: input.enabled,
    };
    let (ep, secret) = herald.create_endpoint(&caller.tenant, new).await?;
    let entry = caller
        .entry(AuditAction::WebhookEndpointCreated)
        .target(ep.id.to_string())
        .detail(serde_json::json!({ "url": url_text(&ep), "event_types": ep.event_types }));
    herald.record_audit(entry).await;
    let endpoint = view(&ep);
    let secret = secret.expose().to_owned();
    Ok((
        StatusCode::CREATED,
        Json(EndpointWithSecret { endpoint, secret }),
    ))
}

/// The tenant's endpoints, oldest first (a tenant has at most 20).
#[utoipa::path(get, operation_id = "list_webhook_endpoints", path = "/v1/webhook-endpoints", tag = "webhooks",
    responses((status = 200, body = EndpointList), AuthErrors), security(("api_key" = [])))]
pub async fn list(
    State(herald): State<Arc<Herald>>,
    AuthTenant(tenant): AuthTenant,
) -> Result<Json<EndpointList>, Problem> {
    let items = herald.endpoints(&tenant).await?.iter().map(view).collect();
    Ok(Json(EndpointList { items }))
}

#[utoipa::path(get, operation_id = "get_webhook_endpoint", path = "/v1/webhook-endpoints/{id}", tag = "webhooks",
    params(("id" = String, Path, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")),
    responses((status = 200, body = EndpointView), AuthErrors, NotFound), security(("api_key" = [])))]
pub async fn get(
    State(herald): State<Arc<Herald>>,
    AuthTenant(tenant): AuthTenant,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<EndpointView>, Problem> {
    let id = endpoint_id(path)?;
    Ok(Json(view(&herald.endpoint(&tenant, id).await?)))
}

/// Changes the fields given; turning a disabled endpoint back on resets its failure count.
#[utoipa::path(patch, operation_id = "update_webhook_endpoint", path = "/v1/webhook-endpoints/{id}", tag = "webhooks",
    params(("id" = String, Path, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")), request_body = EndpointPatchInput,
    responses((status = 200, body = EndpointView), AuthErrors, NotFound, JsonBodyErrors), security(("api_key" = [])))]
pub async fn update(
    State(herald): State<Arc<Herald>>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    body: JsonBody<EndpointPatchInput>,
) -> Result<Json<EndpointView>, Problem> {
    let id = endpoint_id(path)?;
    let input = body.value;
    let patch = EndpointPatch {
        url: input.url.as_deref().map(url_of).transpose()?,
        event_types: input.event_types.map(event_types_of).transpose()?,
        description: input.description.map(description_of).transpose()?,
        enabled: input.enabled,
    };
    let ep = herald.update_endpoint(&caller.tenant, id, patch).await?;
    let entry = caller
        .entry(AuditAction::WebhookEndpointUpdated)
        .target(id.to_string())
        .detail(serde_json::json!({
            "url": url_text(&ep), "event_types": ep.event_types, "enabled": ep.enabled,
        }));
    herald.record_audit(entry).await;
    Ok(Json(view(&ep)))
}

/// Deletes the endpoint and drops its pending deliveries.
#[utoipa::path(delete, operation_id = "delete_webhook_endpoint", path = "/v1/webhook-endpoints/{id}", tag = "webhooks",
    params(("id" = String, Path, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")),
    responses((status = 204), AuthErrors, NotFound), security(("api_key" = [])))]
pub async fn delete(
    State(herald): State<Arc<Herald>>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, Problem> {
    let id = endpoint_id(path)?;
    herald.delete_endpoint(&caller.tenant, id).await?;
    let entry = caller
        .entry(AuditAction::WebhookEndpointDeleted)
        .target(id.to_string());
    herald.record_audit(entry).await;
    Ok(StatusCode::NO_CONTENT)
}

/// A new secret, shown once; the old one keeps signing beside it for the overlap (24 h by
/// default), so receivers can switch without losing a delivery.
#[utoipa::path(post, operation_id = "rotate_webhook_secret", path = "/v1/webhook-endpoints/{id}/rotate-secret", tag = "webhooks",
    params(("id" = String, Path, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")),
    responses((status = 200, body = EndpointWithSecret), AuthErrors, NotFound), security(("api_key" = [])))]
pub async fn rotate_secret(
    State(herald): State<Arc<Herald>>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<EndpointWithSecret>, Problem> {
    let id = endpoint_id(path)?;
    let (ep, secret) = herald.rotate_endpoint_secret(&caller.tenant, id).await?;
    let endpoint = view(&ep);
    let entry = caller
        .entry(AuditAction::WebhookSecretRotated)
        .target(id.to_string())
        .detail(serde_json::json!({ "previous_expires_at": endpoint.previous_secret_expires_at }));
    herald.record_audit(entry).await;
    let secret = secret.expose().to_owned();
    Ok(Json(EndpointWithSecret { endpoint, secret }))
}

/// The endpoint's deliveries, newest first, each with its attempts.
#[utoipa::path(get, operation_id = "list_webhook_deliveries", path = "/v1/webhook-endpoints/{id}/deliveries", tag = "webhooks",
    params(("id" = String, Path, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"), DeliveryQuery),
    responses((status = 200, body = DeliveryPage), AuthErrors, NotFound, QueryErrors), security(("api_key" = [])))]
pub async fn deliveries(
    State(herald): State<Arc<Herald>>,
    AuthTenant(tenant): AuthTenant,
    path: Result<Path<String>, PathRejection>,
    ListQuery { page, .. }: DeliveryQuery,
) -> Result<Json<DeliveryPage>, Problem> {
    let id = endpoint_id(path)?;
    let items = herald
        .endpoint_deliveries(&tenant, id, Purpose::Events, page.after, page.limit)
        .await?;
    let next_after = page.next_after(&items, |d| d.id);
    let items = items.into_iter().map(delivery_view).collect();
    Ok(Json(DeliveryPage { items, next_after }))
}

#[utoipa::path(get, operation_id = "get_webhook_delivery", path = "/v1/webhook-deliveries/{id}", tag = "webhooks",
    params(("id" = String, Path, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")),
    responses((status = 200, body = DeliveryView), AuthErrors, NotFound), security(("api_key" = [])))]
pub async fn delivery(
    State(herald): State<Arc<Herald>>,
    AuthTenant(tenant): AuthTenant,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<DeliveryView>, Problem> {
    let id = delivery_id(path)?;
    let store = herald.webhooks.as_ref().ok_or(EndpointError::Unavailable)?;
    let d = store
        .delivery(&tenant, id)
        .await?
        .ok_or_else(|| Problem::not_found("webhook delivery"))?;
    Ok(Json(delivery_view(d)))
}

/// Sends the delivery's event again: a new delivery, with the same `webhook-id` and body.
#[utoipa::path(post, operation_id = "replay_webhook_delivery", path = "/v1/webhook-deliveries/{id}/replay", tag = "webhooks",
    params(("id" = String, Path, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")),
    responses((status = 202, body = DeliveryView), AuthErrors, NotFound), security(("api_key" = [])))]
pub async fn replay(
    State(herald): State<Arc<Herald>>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<(StatusCode, Json<DeliveryView>), Problem> {
    let id = delivery_id(path)?;
    let again = herald
        .replay_delivery(&caller.tenant, id)
        .await
        .map_err(|e| match e {
            EndpointError::NotFound => Problem::not_found("webhook delivery"),
            other => other.into(),
        })?;
    let entry = caller
        .entry(AuditAction::WebhookReplayed)
        .target(again.endpoint.to_string())
        .detail(serde_json::json!({ "delivery": id, "count": 1 }));
    herald.record_audit(entry).await;
    Ok((StatusCode::ACCEPTED, Json(delivery_view(again))))
}

/// Sends again every event delivered to the endpoint since a time.
#[utoipa::path(post, operation_id = "replay_webhook_endpoint", path = "/v1/webhook-endpoints/{id}/replay", tag = "webhooks",
    params(("id" = String, Path, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")), request_body = ReplayInput,
    responses((status = 202, body = ReplayCount), AuthErrors, NotFound, JsonBodyErrors), security(("api_key" = [])))]
pub async fn replay_since(
    State(herald): State<Arc<Herald>>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    body: JsonBody<ReplayInput>,
) -> Result<(StatusCode, Json<ReplayCount>), Problem> {
    let id = endpoint_id(path)?;
    let since = body.value.since;
    let replayed = herald.replay_since(&caller.tenant, id, since).await?;
    let entry = caller
        .entry(AuditAction::WebhookReplayed)
        .target(id.to_string())
        .detail(serde_json::json!({ "since": since, "count": replayed }));
    herald.record_audit(entry).await;
    Ok((StatusCode::ACCEPTED, Json(ReplayCount { replayed })))
}
