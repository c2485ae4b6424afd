//! Forwarding verified provider webhooks to development forwards (`/v1/dev-forwards`).
//!
//! Only when some tenant has a forward for the webhook's provider is its body kept in memory
//! beside the handler. The handler notes what the webhook concerns (its messages, or the
//! tenant that owns the number or bot) while it verifies and applies it; once it is answered
//! 2xx, the engine forwards it to the one tenant it concerns. A webhook that concerns several
//! tenants, or has a part none could be found for, or repeats one already handled, is
//! forwarded to no one.

use std::cell::RefCell;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{Refusal, Webhooks, MAX_WEBHOOK_BYTES};
use crate::domain::notify::{ForwardedWebhook, ProviderSource};
use crate::domain::{MessageId, TenantId};
use crate::engine::notify::Concerns;
use crate::ports::ProviderEvent;

tokio::task_local! {
    static CONCERNS: RefCell<Concerns>;
}

/// Notes the messages a webhook's events are about (no-op when nothing forwards it).
pub(super) fn note_events(events: &[ProviderEvent]) {
    let _ = CONCERNS.try_with(|c| c.borrow_mut().note_events(events));
}

/// Notes a message the provider names, before Herald decides whether it changes anything.
pub(super) fn note_message(id: Option<MessageId>, gateway: &str, provider_id: &str) {
    let _ = CONCERNS.try_with(|c| c.borrow_mut().note_message(id, gateway, provider_id));
}

/// Withholds the webhook from every forward (see [`Concerns::withhold`]).
pub(super) fn withhold(why: &'static str) {
    let _ = CONCERNS.try_with(|c| c.borrow_mut().withhold(why));
}

/// Notes the tenant that owns the number or bot a webhook came in on.
pub(super) fn note_tenant(tenant: &TenantId) {
    let _ = CONCERNS.try_with(|c| c.borrow_mut().note_tenant(tenant));
}

/// Runs the handler; forwards the webhook once the handler accepted it.
pub(super) async fn forward_verified(
    State(webhooks): State<Arc<Webhooks>>,
    request: Request,
    next: Next,
) -> Response {
    let source = ProviderSource::of_path(request.uri().path());
    let Some(source) = source.filter(|_| request.method() == Method::POST) else {
        return next.run(request).await;
    };
    if !webhooks.herald.forwards_wanted(source).await {
        return next.run(request).await;
    }
    let limit = super::body_limit(request.uri().path());
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
        return Refusal::TooLarge(limit).into_response();
    };
    // A raw email is more than a forward carries: it is handled, and forwarded to no one.
    if bytes.len() > MAX_WEBHOOK_BYTES {
        return next
            .run(Request::from_parts(parts, Body::from(bytes)))
            .await;
    }
    let headers = parts.headers.iter().filter_map(|(name, value)| {
        let value = value.to_str().ok()?;
        Some((name.as_str().to_owned(), value.to_owned()))
    });
    let path = parts.uri.path_and_query().map_or("", |p| p.as_str());
    let hook = ForwardedWebhook::new(source, parts.method.as_str(), path, headers, &bytes);
    let request = Request::from_parts(parts, Body::from(bytes));
    let (response, concerns) = CONCERNS
        .scope(RefCell::new(Concerns::default()), async {
            let response = next.run(request).await;
            (response, CONCERNS.with(|c| c.take()))
        })
        .await;
    if response.status().is_success() {
        webhooks
            .herald
            .forward_provider_webhook(hook, concerns)
            .await;
    }
    response
}
