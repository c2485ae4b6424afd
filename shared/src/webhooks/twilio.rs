//! Twilio: status callbacks (`/webhooks/twilio/status`) and inbound messages
//! (`/webhooks/twilio/inbound`), both signed with `X-Twilio-Signature` over the public URL and
//! the sorted form parameters. Inbound keywords are answered with TwiML.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::json;
use tracing::info;

use super::guard::clip;
use super::signature::twilio_signature;
use super::{admit, apply, header_str, refuse, respond, Refusal, Webhooks};
use crate::domain::inbound::Arrival;
use crate::domain::secret::constant_time_eq;
use crate::domain::{Channel, InboundMessage, Keyword, MessageId, TenantId};
use crate::engine::inbound::KeywordReplies;
use crate::gateway::twilio::{INBOUND_PATH, STATUS_PATH, TWILIO};
use crate::ports::{ProviderEvent, ProviderEventKind, StoreError};

/// Reads the form after checking its signature.
async fn signed_form(
    webhooks: &Webhooks,
    path: &str,
    request: Request,
) -> Result<(Vec<(String, String)>, Uri), Refusal> {
    let config = webhooks
        .config
        .twilio
        .as_ref()
        .ok_or(Refusal::NotConfigured("twilio"))?;
    let request = admit(request).await?;
    let params: Vec<(String, String)> =
        serde_urlencoded::from_bytes(&request.body).map_err(|e| {
            Refusal::BadSignature(format!("body is not a form: {}", clip(&e.to_string())))
        })?;
    check(
        webhooks,
        config.auth_token.expose(),
        path,
        &request.uri,
        &request.headers,
        &params,
    )?;
    Ok((params, request.uri))
}

fn check(
    webhooks: &Webhooks,
    auth_token: &str,
    path: &str,
    uri: &Uri,
    headers: &HeaderMap,
    params: &[(String, String)],
) -> Result<(), Refusal> {
    let presented = header_str(headers, "x-twilio-signature")
        .ok_or_else(|| Refusal::BadSignature("no X-Twilio-Signature".into()))?;
    let url = webhooks
        .config
        .public_url(path, uri.query())
        .ok_or(Refusal::NotConfigured("twilio"))?;
    let expected = twilio_signature(auth_token, &url, params);
    if constant_time_eq(expected.as_bytes(), presented.as_bytes()) {
        Ok(())
    } else {
        Err(Refusal::BadSignature(format!(
            "X-Twilio-Signature does not match for {}",
            clip(&url)
        )))
    }
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn query_param(uri: &Uri, name: &str) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(uri.query()?).ok()?;
    pairs.into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

pub(super) async fn status(State(webhooks): State<Arc<Webhooks>>, request: Request) -> Response {
    respond(
        &webhooks,
        "twilio",
        process_status(&webhooks, request).await,
    )
}

/// Twilio's message status -> Herald's event; `sent` and the in-flight states change nothing.
fn event_kind(status: &str) -> Option<ProviderEventKind> {
    match status {
        "delivered" => Some(ProviderEventKind::Delivered),
        "undelivered" | "failed" => Some(ProviderEventKind::Failed),
        "read" => Some(ProviderEventKind::Opened),
        _ => None,
    }
}

async fn process_status(webhooks: &Webhooks, request: Request) -> Result<(), Refusal> {
    let (params, uri) = signed_form(webhooks, STATUS_PATH, request).await?;
    let sid = param(&params, "MessageSid")
        .or_else(|| param(&params, "SmsSid"))
        .ok_or_else(|| Refusal::Malformed("no MessageSid".into()))?;
    let status = param(&params, "MessageStatus")
        .or_else(|| param(&params, "SmsStatus"))
        .unwrap_or_default();
    let herald_id = query_param(&uri, "herald_id")
        .as_deref()
        .and_then(MessageId::parse);
    super::forward::note_message(herald_id, TWILIO, sid);
    let Some(kind) = event_kind(status) else {
        info!(
            message_sid = sid,
            status, "twilio status without a Herald event"
        );
        return Ok(());
    };
    let code = param(&params, "ErrorCode").filter(|c| !c.is_empty() && *c != "0");
    let mut detail = json!({ "status": status });
    if let Some(code) = code {
        detail["error_code"] = json!(code);
        detail["error"] = json!(format!("twilio error {code}"));
    }
    let event = ProviderEvent {
        gateway: TWILIO.into(),
        provider_message_id: sid.to_owned(),
        message_id: herald_id,
        kind,
        at: Utc::now(),
        detail,
    };
    // One callback per (message, status): a retry of it is a repeat.
    apply(webhooks, "twilio", &format!("{sid}:{status}"), vec![event]).await
}

pub(super) async fn inbound(State(webhooks): State<Arc<Webhooks>>, request: Request) -> Response {
    match process_inbound(&webhooks, request).await {
        Ok(reply) => twiml(reply.as_deref()),
        Err(refusal) => refuse(&webhooks, "twilio", refusal),
    }
}

async fn process_inbound(webhooks: &Webhooks, request: Request) -> Result<Option<String>, Refusal> {
    let (params, _) = signed_form(webhooks, INBOUND_PATH, request).await?;
    let field = |name: &str| param(&params, name).unwrap_or_default().to_owned();
    let sid = param(&params, "MessageSid")
        .or_else(|| param(&params, "SmsSid"))
        .ok_or_else(|| Refusal::Malformed("no MessageSid".into()))?;
    let to = field("To");
    let Some((tenant, replies)) = owner_of(webhooks, &to).await? else {
        info!(to = %crate::redact::Masked(&to), "inbound message for a number no tenant owns; ignored");
        return Ok(None);
    };
    super::forward::note_tenant(&tenant);
    let count: usize = field("NumMedia").parse().unwrap_or(0);
    let media_urls = (0..count.min(10))
        .filter_map(|i| param(&params, &format!("MediaUrl{i}")).map(str::to_owned))
        .collect();
    let body = field("Body");
    let arrival = Arrival {
        tenant,
        channel: Channel::Sms,
        gateway: TWILIO.into(),
        provider_message_id: sid.to_owned(),
        from: field("From"),
        to,
    };
    let mut message = InboundMessage::arrived(arrival, body);
    message.keyword = Keyword::of(&message.body);
    message.media_urls = media_urls;
    let received = webhooks.herald.receive(message, &replies).await?;
    if received.repeat {
        super::forward::withhold("a repeat of an inbound message already stored");
    }
    Ok(received.reply)
}

/// The tenant that receives texts at `to`, and its keyword replies: a configured number's,
/// else the tenant that registered it as a relay number (with the default replies).
async fn owner_of(
    webhooks: &Webhooks,
    to: &str,
) -> Result<Option<(TenantId, KeywordReplies)>, StoreError> {
    if let Some(n) = webhooks.config.number(to) {
        return Ok(Some((n.tenant.clone(), n.replies.clone())));
    }
    let Ok(number) = crate::domain::PhoneNumber::parse(to) else {
        return Ok(None);
    };
    let owner = webhooks.herald.relay.number_owner(&number).await?;
    Ok(owner.map(|n| (n.tenant, KeywordReplies::default())))
}

/// A TwiML answer: the reply as a message back to the sender, or nothing to send.
fn twiml(reply: Option<&str>) -> Response {
    let body = match reply {
        Some(text) => format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Message>{}</Message></Response>",
            crate::markup::escape(text)
        ),
        None => "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response/>".to_owned(),
    };
    ([(header::CONTENT_TYPE, "text/xml; charset=utf-8")], body).into_response()
}
