//! Webhook endpoints (admin keys only, as `/v1/webhook-endpoints`): the tenant's endpoints,
//! one endpoint's deliveries with every attempt, and replay of a delivery.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;

use super::pages::{self, Page};
use super::session::{SignedIn, TokenForm};
use crate::domain::audit::AuditAction;
use crate::domain::notify::{DeliveryId, EndpointId, Purpose, WebhookEndpoint};
use crate::engine::notify::EndpointError;
use crate::engine::Herald;
use crate::ports::WebhookDelivery;

const PAGE_SIZE: usize = 50;

fn refused(e: EndpointError) -> Response {
    match e {
        EndpointError::NotFound => pages::not_found("webhook endpoint or delivery"),
        EndpointError::Unavailable => pages::error(
            StatusCode::NOT_FOUND,
            "Webhooks out are not set up on this deployment.",
        ),
        _ => pages::unavailable(),
    }
}

fn endpoint_view(ep: &WebhookEndpoint) -> minijinja::Value {
    minijinja::context! {
        id => ep.id.to_string(),
        url => ep.url().map_or("", |u| u.as_str()),
        description => &ep.description,
        events => ep.event_types.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
        enabled => ep.enabled,
        disabled_reason => &ep.disabled_reason,
        failing_since => ep.failing_since,
        created_at => ep.created_at,
    }
}

fn delivery_view(d: &WebhookDelivery) -> minijinja::Value {
    minijinja::context! {
        id => d.id.to_string(),
        event_type => d.event_type.as_str(),
        state => d.state.as_str(),
        created_at => d.created_at,
        next_attempt_at => d.next_attempt_at,
        attempts => d.attempts,
    }
}

/// `GET /console/webhooks`
pub async fn list(State(herald): State<Arc<Herald>>, who: SignedIn) -> Response {
    if let Err(refused) = who.require_admin() {
        return refused;
    }
    let endpoints = match herald.endpoints(&who.tenant).await {
        Ok(endpoints) => endpoints,
        Err(e) => return refused(e),
    };
    let page = Page::new("webhooks.html", "Webhook endpoints").with(minijinja::context! {
        who => super::who(&who),
        section => "webhooks",
        items => endpoints.iter().map(endpoint_view).collect::<Vec<_>>(),
    });
    pages::render(&page)
}

/// `GET /console/webhooks/{id}`: the endpoint and its latest deliveries.
pub async fn endpoint(
    State(herald): State<Arc<Herald>>,
    who: SignedIn,
    Path(raw): Path<String>,
) -> Response {
    if let Err(refused) = who.require_admin() {
        return refused;
    }
    let Some(id) = EndpointId::parse(&raw) else {
        return pages::not_found("webhook endpoint");
    };
    let ep = match herald.endpoint(&who.tenant, id).await {
        Ok(ep) => ep,
        Err(e) => return refused(e),
    };
    let deliveries = match herald
        .endpoint_deliveries(&who.tenant, id, Purpose::Events, None, PAGE_SIZE)
        .await
    {
        Ok(deliveries) => deliveries,
        Err(e) => return refused(e),
    };
    let title = format!("Webhook endpoint {}", ep.url().map_or("", |u| u.as_str()));
    let page = Page::new("webhook.html", title).with(minijinja::context! {
        who => super::who(&who),
        section => "webhooks",
        ep => endpoint_view(&ep),
        deliveries => deliveries.iter().map(delivery_view).collect::<Vec<_>>(),
    });
    pages::render(&page)
}

/// `POST /console/webhooks/deliveries/{id}/replay` (admin): sends the event again.
pub async fn replay(
    State(herald): State<Arc<Herald>>,
    who: SignedIn,
    Path(raw): Path<String>,
    Form(form): Form<TokenForm>,
) -> Response {
    if let Err(refused) = who.check_action(&form.csrf) {
        return refused;
    }
    let Some(id) = DeliveryId::parse(&raw) else {
        return pages::not_found("webhook delivery");
    };
    let again = match herald.replay_delivery(&who.tenant, id).await {
        Ok(again) => again,
        Err(e) => return refused(e),
    };
    let entry = who
        .entry(AuditAction::WebhookReplayed)
        .target(again.endpoint.to_string())
        .detail(serde_json::json!({ "delivery": id, "count": 1 }));
    herald.record_audit(entry).await;
    Redirect::to(&format!("/console/webhooks/{}", again.endpoint)).into_response()
}
