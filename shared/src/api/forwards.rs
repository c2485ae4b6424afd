//! Development forwards (admin only): `POST|GET /v1/dev-forwards`, `GET|DELETE
//! /v1/dev-forwards/{id}`, `GET .../deliveries`, and `GET /v1/dev-forwards/stream`, which a
//! laptop with no public address follows instead (`herald dev forward`). A forward receives
//! the verified provider webhooks about its tenant's own messages and numbers, with their
//! original body and headers, signed by Herald as Standard Webhooks says.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{rejection::PathRejection, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::Json;
use chrono::{DateTime, Utc};
use futures::Stream;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{AuthTenant, Caller, JsonBody};
use super::notify::{
    delivery_view, description_of, url_of, DeliveryPage, DeliveryQuery, DeliveryView,
};
use super::paging::{FilterQuery, ListQuery};
use super::problem::{AuthErrors, JsonBodyErrors, NotFound, Problem, QueryErrors};
use super::stream::{comma_list, follow};
use crate::domain::audit::AuditAction;
use crate::domain::notify::{EndpointId, EndpointUrl, ProviderSource, Purpose, WebhookEndpoint};
use crate::domain::FieldError;
use crate::engine::notify::stream::StreamOf;
use crate::engine::notify::{ForwardPatch, NewForward};
use crate::engine::Herald;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForwardInput {
    /// https to a public address, or any address in the server's `[events_out]
    /// dev_forward_allow` (http allowed there).
    #[schema(max_length = 2048, example = "https://dev.example.com/hooks")]
    pub url: String,
    /// The providers whose webhooks to forward; none or empty: every provider's.
    #[serde(default)]
    pub sources: Vec<ProviderSource>,
    #[serde(default)]
    #[schema(max_length = 500)]
    pub description: String,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForwardPatchInput {
    #[schema(max_length = 2048)]
    pub url: Option<String>,
    /// Empty: every provider's.
    pub sources: Option<Vec<ProviderSource>>,
    #[schema(max_length = 500)]
    pub description: Option<String>,
    /// Turning a forward Herald turned off back on forgets its failures.
    pub enabled: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ForwardView {
    #[schema(
        pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )]
    pub id: String,
    pub url: String,
    pub sources: Vec<ProviderSource>,
    pub description: String,
    pub enabled: bool,
    /// Why Herald turned it off (410 Gone, failing for days).
    pub disabled_reason: Option<String>,
    pub failing_since: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// A forward with its signing secret: only in the answer that made it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ForwardWithSecret {
    #[serde(flatten)]
    pub forward: ForwardView,
    /// `whsec_` and base64: verify forwarded webhooks with it (Standard Webhooks). Shown once.
    pub secret: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ForwardList {
    pub items: Vec<ForwardView>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ForwardStreamQuery {
    /// Providers to follow, comma-separated (`twilio,ses`); none: every provider. Ignored
    /// when resuming.
    #[param(max_length = 256)]
    pub sources: Option<String>,
}

fn view(ep: &WebhookEndpoint) -> ForwardView {
    ForwardView {
        id: ep.id.to_string(),
        url: ep.url().map_or("", EndpointUrl::as_str).to_owned(),
        sources: ep.sources(),
        description: ep.description.clone(),
        enabled: ep.enabled,
        disabled_reason: ep.disabled_reason.clone(),
        failing_since: ep.failing_since,
        created_at: ep.created_at,
    }
}

/// A forward id from the path; a malformed one names no forward.
fn forward_id(path: Result<Path<String>, PathRejection>) -> Result<EndpointId, Problem> {
    path.ok()
        .and_then(|Path(raw)| EndpointId::parse(&raw))
        .ok_or_else(|| Problem::not_found("dev forward"))
}

fn not_found(e: crate::engine::notify::EndpointError) -> Problem {
    match e {
        crate::engine::notify::EndpointError::NotFound => Problem::not_found("dev forward"),
        other => other.into(),
    }
}

/// Registers a forward; the answer carries its secret, shown this once.
#[utoipa::path(post, operation_id = "create_dev_forward", path = "/v1/dev-forwards", tag = "webhooks",
    request_body = ForwardInput,
    responses((status = 201, body = ForwardWithSecret), AuthErrors, JsonBodyErrors,
        (status = 409, body = Problem, content_type = "application/problem+json", description = "the tenant has the most endpoints allowed")),
    security(("api_key" = [])))]
pub async fn create(
    State(herald): State<Arc<Herald>>,
    caller: Caller,
    body: JsonBody<ForwardInput>,
) -> Result<(StatusCode, Json<ForwardWithSecret>), Problem> {
    let input = body.value;
    let new = NewForward {
        url: url_of(&input.url)?,
        sources: input.sources,
        description: description_of(input.description)?,
    };
    let (ep, secret) = herald.create_dev_forward(&caller.tenant, new).await?;
    let forward = view(&ep);
    let entry = caller
        .entry(AuditAction::DevForwardCreated)
        .target(forward.id.clone())
        .detail(serde_json::json!({ "url": forward.url, "sources": forward.sources }));
    herald.record_audit(entry).await;
    let secret = secret.expose().to_owned();
    Ok((
        StatusCode::CREATED,
        Json(ForwardWithSecret { forward, secret }),
    ))
}

/// The tenant's forwards, oldest first.
#[utoipa::path(get, operation_id = "list_dev_forwards", path = "/v1/dev-forwards", tag = "webhooks",
    responses((status = 200, body = ForwardList), AuthErrors), security(("api_key" = [])))]
pub async fn list(
    State(herald): State<Arc<Herald>>,
    AuthTenant(tenant): AuthTenant,
) -> Result<Json<ForwardList>, Problem> {
    let items = herald
        .dev_forwards(&tenant)
        .await?
        .iter()
        .map(view)
        .collect();
    Ok(Json(ForwardList { items }))
}

#[utoipa::path(get, operation_id = "get_dev_forward", path = "/v1/dev-forwards/{id}", tag = "webhooks",
    params(("id" = String, Path, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")),
    responses((status = 200, body = ForwardView), AuthErrors, NotFound), security(("api_key" = [])))]
pub async fn get(
    State(herald): State<Arc<Herald>>,
    AuthTenant(tenant): AuthTenant,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<ForwardView>, Problem> {
    let id = forward_id(path)?;
    let ep = herald.dev_forward(&tenant, id).await.map_err(not_found)?;
    Ok(Json(view(&ep)))
}

/// Changes the fields given.
#[utoipa::path(patch, operation_id = "update_dev_forward", path = "/v1/dev-forwards/{id}", tag = "webhooks",
    params(("id" = String, Path, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")), request_body = ForwardPatchInput,
    responses((status = 200, body = ForwardView), AuthErrors, NotFound, JsonBodyErrors), security(("api_key" = [])))]
pub async fn update(
    State(herald): State<Arc<Herald>>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    body: JsonBody<ForwardPatchInput>,
) -> Result<Json<ForwardView>, Problem> {
    let id = forward_id(path)?;
    let input = body.value;
    let patch = ForwardPatch {
        url: input.url.as_deref().map(url_of).transpose()?,
        sources: input.sources,
        description: input.description.map(description_of).transpose()?,
        enabled: input.enabled,
    };
    let ep = herald
        .update_dev_forward(&caller.tenant, id, patch)
        .await
        .map_err(not_found)?;
    let forward = view(&ep);
    let entry = caller
        .entry(AuditAction::DevForwardUpdated)
        .target(forward.id.clone())
        .detail(serde_json::json!({
            "url": forward.url, "sources": forward.sources, "enabled": forward.enabled,
        }));
    herald.record_audit(entry).await;
    Ok(Json(forward))
}

/// Deletes the forward and drops its pending deliveries.
#[utoipa::path(delete, operation_id = "delete_dev_forward", path = "/v1/dev-forwards/{id}", tag = "webhooks",
    params(("id" = String, Path, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")),
    responses((status = 204), AuthErrors, NotFound), security(("api_key" = [])))]
pub async fn delete(
    State(herald): State<Arc<Herald>>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, Problem> {
    let id = forward_id(path)?;
    herald
        .delete_dev_forward(&caller.tenant, id)
        .await
        .map_err(not_found)?;
    let entry = caller
        .entry(AuditAction::DevForwardDeleted)
        .target(id.to_string());
    herald.record_audit(entry).await;
    Ok(StatusCode::NO_CONTENT)
}

/// The forward's deliveries, newest first, each with its attempts, without the webhooks'
/// bodies (up to 64 KB each: `GET /v1/webhook-deliveries/{id}` has it); replay one with
/// `POST /v1/webhook-deliveries/{id}/replay`.
#[utoipa::path(get, operation_id = "list_dev_forward_deliveries", path = "/v1/dev-forwards/{id}/deliveries", tag = "webhooks",
    params(("id" = String, Path, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"), DeliveryQuery),
    responses((status = 200, body = DeliveryPage), AuthErrors, NotFound, QueryErrors), security(("api_key" = [])))]
pub async fn deliveries(
    State(herald): State<Arc<Herald>>,
    AuthTenant(tenant): AuthTenant,
    path: Result<Path<String>, PathRejection>,
    ListQuery { page, .. }: DeliveryQuery,
) -> Result<Json<DeliveryPage>, Problem> {
    let id = forward_id(path)?;
    let items = herald
        .endpoint_deliveries(&tenant, id, Purpose::DevForward, page.after, page.limit)
        .await
        .map_err(not_found)?;
    let next_after = page.next_after(&items, |d| d.id);
    let items = items
        .into_iter()
        .map(delivery_view)
        .map(without_body)
        .collect();
    Ok(Json(DeliveryPage { items, next_after }))
}

/// A delivery without its webhook's body, so a page stays small (a Lambda answer is at most
/// 6 MB); `body_bytes` says how long it was.
fn without_body(mut d: DeliveryView) -> DeliveryView {
    let data = d.payload.get_mut("data").and_then(|v| v.as_object_mut());
    if let Some(data) = data {
        if let Some(body) = data.remove("body_base64") {
            let bytes = body.as_str().map_or(0, |b| b.len() / 4 * 3);
            data.insert("body_bytes".into(), bytes.into());
        }
    }
    d
}

/// Follows the tenant's provider webhooks live, as server-sent events: each event's data is
/// the payload whose `data` holds the webhook (`source`, `method`, `path`, `headers`,
/// `body_base64`). Resume with `Last-Event-ID` as with the event stream.
#[utoipa::path(get, operation_id = "stream_dev_forwards", path = "/v1/dev-forwards/stream", tag = "webhooks",
    params(ForwardStreamQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "resume the stream after this event")),
    responses(
        (status = 200, content_type = "text/event-stream", body = String,
            description = "`open`, then one event per forwarded provider webhook"),
        AuthErrors, QueryErrors, NotFound,
        (status = 429, body = Problem, content_type = "application/problem+json",
            description = "the tenant (or the server) has as many streams open as allowed")),
    security(("api_key" = [])))]
pub async fn stream(
    State(herald): State<Arc<Herald>>,
    AuthTenant(tenant): AuthTenant,
    FilterQuery(query): FilterQuery<ForwardStreamQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Problem> {
    let sources = sources_of(query.sources.as_deref())?;
    follow(herald, &tenant, &headers, StreamOf::Forwards(sources)).await
}

fn sources_of(raw: Option<&str>) -> Result<Vec<ProviderSource>, Problem> {
    comma_list(raw)
        .into_iter()
        .map(|n| {
            ProviderSource::parse(n).ok_or_else(|| {
                let why = format!(
                    "`{}` is not a provider (twilio, ses, postal, whatsapp, telegram)",
                    n.chars().take(40).collect::<String>()
                );
                Problem::invalid(FieldError::new("/sources", "invalid", why))
            })
        })
        .collect()
}
