//! `/webhooks/whatsapp`: the WhatsApp Cloud API's webhooks. GET is Meta's verification
//! handshake; POST carries message statuses and inbound messages, signed with the app secret
//! (`X-Hub-Signature-256`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tracing::info;

use super::guard::clip;
use super::signature::hub_signature_256;
use super::{admit, apply, header_str, refuse, respond, InboundNumber, Refusal, Webhooks};
use crate::domain::inbound::Arrival;
use crate::domain::secret::constant_time_eq;
use crate::domain::{Channel, InboundMessage, Keyword};
use crate::gateway::media_fetch::WHATSAPP_MEDIA;
use crate::gateway::whatsapp::WHATSAPP;
use crate::ports::{ProviderEvent, ProviderEventKind};

/// Meta's subscription check: echo `hub.challenge` when `hub.verify_token` is ours.
pub(super) async fn verify(
    State(webhooks): State<Arc<Webhooks>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(config) = &webhooks.config.whatsapp else {
        return refuse(&webhooks, "whatsapp", Refusal::NotConfigured("whatsapp"));
    };
    let token = query
        .get("hub.verify_token")
        .map(String::as_str)
        .unwrap_or_default();
    let subscribing = query.get("hub.mode").map(String::as_str) == Some("subscribe");
    if subscribing && constant_time_eq(token.as_bytes(), config.verify_token.expose().as_bytes()) {
        let challenge = query.get("hub.challenge").cloned().unwrap_or_default();
        return (StatusCode::OK, challenge).into_response();
    }
    refuse(
        &webhooks,
        "whatsapp",
        Refusal::BadSignature("verification with a wrong hub.verify_token".into()),
    )
}

pub(super) async fn handle(State(webhooks): State<Arc<Webhooks>>, request: Request) -> Response {
    respond(&webhooks, "whatsapp", process(&webhooks, request).await)
}

fn event_kind(status: &str) -> Option<ProviderEventKind> {
    match status {
        "delivered" => Some(ProviderEventKind::Delivered),
        "read" => Some(ProviderEventKind::Opened),
        "failed" => Some(ProviderEventKind::Failed),
        _ => None, // "sent": Herald recorded that already
    }
}

fn unix_time(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .and_then(|s| s.parse::<i64>().ok())
        .and_then(|s| DateTime::from_timestamp(s, 0))
        .unwrap_or_else(Utc::now)
}

async fn process(webhooks: &Webhooks, request: Request) -> Result<(), Refusal> {
    let config = webhooks
        .config
        .whatsapp
        .as_ref()
        .ok_or(Refusal::NotConfigured("whatsapp"))?;
    let request = admit(request).await?;
    let body = request.body;
    let presented = header_str(&request.headers, "x-hub-signature-256")
        .ok_or_else(|| Refusal::BadSignature("no X-Hub-Signature-256".into()))?;
    let expected = hub_signature_256(config.app_secret.expose(), &body);
    if !constant_time_eq(expected.as_bytes(), presented.as_bytes()) {
        return Err(Refusal::BadSignature(
            "X-Hub-Signature-256 does not match".into(),
        ));
    }
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| Refusal::Malformed(format!("not JSON: {}", clip(&e.to_string()))))?;
    let changes = v["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|e| e["changes"].as_array().into_iter().flatten());
    for change in changes {
        let value = &change["value"];
        // The business number a change is about is one tenant's. Statuses name their own
        // messages; anything else for no known number keeps the webhook from every forward.
        let only_statuses = value["messages"].as_array().is_none_or(Vec::is_empty)
            && value["statuses"].as_array().is_some_and(|s| !s.is_empty());
        match number_of(webhooks, &value["metadata"]) {
            Some(number) => super::forward::note_tenant(&number.tenant),
            None if only_statuses => {}
            None => super::forward::withhold("a change for a number no tenant owns"),
        }
        for status in value["statuses"].as_array().into_iter().flatten() {
            apply_status(webhooks, status).await?;
        }
        for message in value["messages"].as_array().into_iter().flatten() {
            receive(webhooks, &value["metadata"], message).await?;
        }
    }
    Ok(())
}

async fn apply_status(webhooks: &Webhooks, status: &Value) -> Result<(), Refusal> {
    let (Some(id), Some(state)) = (status["id"].as_str(), status["status"].as_str()) else {
        info!("whatsapp status without id or status; ignored");
        super::forward::withhold("a status naming no message");
        return Ok(());
    };
    super::forward::note_message(None, WHATSAPP, id);
    let Some(kind) = event_kind(state) else {
        return Ok(());
    };
    let mut detail = json!({ "status": state });
    if let Some(error) = status["errors"].get(0) {
        detail["error_code"] = error["code"].clone();
        detail["error"] = json!(format!(
            "whatsapp error {}: {}",
            error["code"],
            error["title"].as_str().unwrap_or_default()
        ));
    }
    let event = ProviderEvent {
        gateway: WHATSAPP.into(),
        provider_message_id: id.to_owned(),
        message_id: None,
        kind,
        at: unix_time(&status["timestamp"]),
        detail,
    };
    apply(webhooks, "whatsapp", &format!("{id}:{state}"), vec![event]).await
}

/// The tenant's number a change's `metadata` names, by display number or phone number id.
fn number_of<'a>(webhooks: &'a Webhooks, metadata: &Value) -> Option<&'a InboundNumber> {
    let to = metadata["display_phone_number"]
        .as_str()
        .unwrap_or_default();
    let phone_id = metadata["phone_number_id"].as_str().unwrap_or_default();
    webhooks
        .config
        .number(to)
        .or_else(|| webhooks.config.number(phone_id))
}

async fn receive(webhooks: &Webhooks, metadata: &Value, message: &Value) -> Result<(), Refusal> {
    let to = metadata["display_phone_number"]
        .as_str()
        .unwrap_or_default();
    let Some(number) = number_of(webhooks, metadata) else {
        info!(to = %crate::redact::Masked(to), "whatsapp message for a number no tenant owns; ignored");
        return Ok(());
    };
    let Some(id) = message["id"].as_str() else {
        return Ok(());
    };
    // A media message has its file's id under its type, and maybe a caption.
    let media = ["image", "audio", "video", "document", "sticker"]
        .iter()
        .find_map(|kind| message[*kind].as_object());
    let body = message["text"]["body"]
        .as_str()
        .or_else(|| message["button"]["text"].as_str())
        .or_else(|| {
            media
                .and_then(|m| m.get("caption"))
                .and_then(|c| c.as_str())
        })
        .unwrap_or_default()
        .to_owned();
    let media_urls = media
        .and_then(|m| m.get("id"))
        .and_then(|id| id.as_str())
        .map(|id| vec![format!("{WHATSAPP_MEDIA}{id}")])
        .unwrap_or_default();
    let arrival = Arrival {
        tenant: number.tenant.clone(),
        channel: Channel::Whatsapp,
        gateway: WHATSAPP.into(),
        provider_message_id: id.to_owned(),
        from: message["from"]
            .as_str()
            .map(|f| format!("+{}", f.trim_start_matches('+')))
            .unwrap_or_default(),
        to: format!("+{}", to.trim_start_matches('+')),
    };
    let mut inbound = InboundMessage::arrived(arrival, body);
    inbound.keyword = Keyword::of(&inbound.body);
    inbound.media_urls = media_urls;
    inbound.received_at = unix_time(&message["timestamp"]);
    if webhooks
        .herald
        .receive(inbound, &number.replies)
        .await?
        .repeat
    {
        super::forward::withhold("a repeat of an inbound message already stored");
    }
    Ok(())
}
