//! `POST /webhooks/postal`: Postal's message events, signed with the server's RSA key
//! (`X-Postal-Signature-256`, SHA-256; older servers only `X-Postal-Signature`, SHA-1).
//! `POST /webhooks/postal/<name>`: the same for the Postal gateway instance of that name, whose
//! message ids are its own server's.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tracing::info;

use super::guard::clip;
use super::signature::{verify_rsa, RsaHash};
use super::{admit, apply, header_str, respond, Refusal, Webhooks};
use crate::gateway::postal::POSTAL;
use crate::ports::{ProviderEvent, ProviderEventKind};

pub(super) async fn handle(State(webhooks): State<Arc<Webhooks>>, request: Request) -> Response {
    let outcome = async { process(&webhooks, postal_key(&webhooks)?, POSTAL, request).await };
    respond(&webhooks, "postal", outcome.await)
}

pub(super) async fn handle_instance(
    State(webhooks): State<Arc<Webhooks>>,
    Path(instance): Path<String>,
    request: Request,
) -> Response {
    let outcome = async {
        let key = webhooks
            .postal_instance_keys
            .get(&instance)
            .ok_or(Refusal::NotConfigured("this postal instance's"))?;
        process(&webhooks, key, &instance, request).await
    };
    respond(&webhooks, "postal", outcome.await)
}

/// Postal's event -> Herald's, and where in the payload the message is.
fn event_kind(event: &str) -> Option<(ProviderEventKind, &'static str)> {
    Some(match event {
        "MessageSent" => (ProviderEventKind::Delivered, "/message"),
        // The receiving server refused it for good.
        "MessageDeliveryFailed" => (ProviderEventKind::Bounced { permanent: true }, "/message"),
        "MessageDelayed" => (ProviderEventKind::Delayed, "/message"),
        // Held for review on the Postal server: not sent yet.
        "MessageHeld" => (ProviderEventKind::Delayed, "/message"),
        "MessageBounced" => (
            ProviderEventKind::Bounced { permanent: true },
            "/original_message",
        ),
        "MessageLinkClicked" => (ProviderEventKind::Clicked, "/message"),
        "MessageLoaded" => (ProviderEventKind::Opened, "/message"),
        _ => return None,
    })
}

/// The server's key, or why Postal's webhooks are refused.
pub(super) fn postal_key(webhooks: &Webhooks) -> Result<&rsa::RsaPublicKey, Refusal> {
    webhooks
        .postal_key
        .as_ref()
        .ok_or(Refusal::NotConfigured("postal"))
}

/// Checks Postal's signature on a body: SHA-256 when the server sends it, else SHA-1.
pub(super) fn verify(
    key: &rsa::RsaPublicKey,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), Refusal> {
    let (hash, signature) = match header_str(headers, "x-postal-signature-256") {
        Some(s) => (RsaHash::Sha256, s),
        None => (
            RsaHash::Sha1,
            header_str(headers, "x-postal-signature")
                .ok_or_else(|| Refusal::BadSignature("no X-Postal-Signature(-256)".into()))?,
        ),
    };
    verify_rsa(key, hash, body, signature).map_err(Refusal::BadSignature)
}

/// Verifies and applies one event of the Postal server `gateway` names.
async fn process(
    webhooks: &Webhooks,
    key: &rsa::RsaPublicKey,
    gateway: &str,
    request: Request,
) -> Result<(), Refusal> {
    let request = admit(request).await?;
    let (headers, body) = (request.headers, request.body);
    verify(key, &headers, &body)?;

    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| Refusal::Malformed(format!("not JSON: {}", clip(&e.to_string()))))?;
    let event = v["event"].as_str().unwrap_or_default();
    let payload = &v["payload"];
    let Some((kind, message_at)) = event_kind(event) else {
        info!(event, "postal event without a Herald event; ignored");
        return Ok(());
    };
    let Some(postal_id) = payload
        .pointer(message_at)
        .and_then(|m| m.get("id"))
        .and_then(|id| {
            id.as_u64()
                .map(|n| n.to_string())
                .or_else(|| id.as_str().map(str::to_owned))
        })
    else {
        info!(event, "postal event names no message; ignored");
        return Ok(());
    };
    let at = v["timestamp"]
        .as_f64()
        .and_then(|t| DateTime::from_timestamp_millis((t * 1000.0) as i64))
        .unwrap_or_else(Utc::now);
    let mut detail = json!({ "postal_event": event, "status": payload["status"],
                             "details": payload["details"], "output": payload["output"] });
    if event == "MessageLinkClicked" {
        detail["url"] = payload["url"].clone();
    }
    if event == "MessageBounced" {
        detail["bounce_id"] = payload["bounce"]["id"].clone();
    }
    let event_id = v["uuid"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{event}:{postal_id}:{}", at.timestamp_millis()));
    let provider_event = ProviderEvent {
        gateway: gateway.into(),
        provider_message_id: postal_id,
        message_id: None,
        kind,
        at,
        detail,
    };
    apply(webhooks, "postal", &event_id, vec![provider_event]).await
}
