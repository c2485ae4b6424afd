//! Inbound email: Postal's HTTP endpoint (`POST /webhooks/postal/inbound`, the raw message in
//! JSON, signed like Postal's other webhooks) and SES receiving (a receipt rule's SNS action,
//! through the verified SNS route). Each message is parsed, given to every tenant that owns one
//! of its recipient addresses, and threaded by the message it replies to.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::Response;
use base64::Engine;
use serde::Deserialize;
use serde_json::Value;
use tracing::info;

use super::guard::clip;
use super::{admit, forward, postal, respond, Refusal, Webhooks};
use crate::domain::inbound::Arrival;
use crate::domain::inbound_email::{ParsedEmail, Verdicts};
use crate::domain::{Channel, InboundMessage, TenantId};
use crate::gateway::postal::POSTAL;
use crate::gateway::ses_events::SES;

pub(super) const POSTAL_INBOUND_PATH: &str = "/webhooks/postal/inbound";

/// The largest raw email Postal may post (base64 in JSON: about 7.5 MB of message).
pub(super) const MAX_EMAIL_BYTES: usize = 10 * 1024 * 1024;

/// The largest SNS notification read: SES hands mail of up to 150 KB to SNS (larger mail
/// bounces to its sender), as base64 inside the notification's JSON.
pub(super) const MAX_SNS_BYTES: usize = 320 * 1024;

/// What Postal posts for a route whose endpoint sends the raw message as JSON.
#[derive(Deserialize)]
struct PostalRaw {
    id: Value,
    rcpt_to: String,
    message: String,
    #[serde(default)]
    base64: bool,
}

pub(super) async fn postal_inbound(
    State(webhooks): State<Arc<Webhooks>>,
    request: Request,
) -> Response {
    respond(
        &webhooks,
        "postal",
        process_postal(&webhooks, request).await,
    )
}

async fn process_postal(webhooks: &Webhooks, request: Request) -> Result<(), Refusal> {
    let key = postal::postal_key(webhooks)?;
    let request = admit(request).await?;
    postal::verify(key, &request.headers, &request.body)?;
    let posted: PostalRaw = serde_json::from_slice(&request.body).map_err(|e| {
        Refusal::Malformed(format!(
            "not Postal's raw message JSON: {}",
            clip(&e.to_string())
        ))
    })?;
    let id = match &posted.id {
        Value::Number(n) => n.to_string(),
        Value::String(s) if !s.is_empty() => s.clone(),
        _ => return Err(Refusal::Malformed("no message id".into())),
    };
    let raw = match posted.base64 {
        true => decode_base64(&posted.message)?,
        false => posted.message.into_bytes(),
    };
    receive(webhooks, POSTAL, &id, &[posted.rcpt_to], &raw, None).await
}

/// An SES `Received` notification (from a receipt rule's SNS action, content included).
pub(super) async fn ses_received(webhooks: &Webhooks, notification: &Value) -> Result<(), Refusal> {
    let id = notification["mail"]["messageId"]
        .as_str()
        .filter(|id| !id.is_empty())
        .ok_or_else(|| Refusal::Malformed("SES mail without a messageId".into()))?;
    let recipients: Vec<String> = notification["receipt"]["recipients"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let Some(content) = notification["content"].as_str() else {
        // A rule whose action stores mail elsewhere (S3): nothing here to receive.
        info!(
            ses_message_id = id,
            "SES received mail without content; ignored"
        );
        return Ok(());
    };
    let raw = match notification["receipt"]["action"]["encoding"].as_str() {
        Some("BASE64") => decode_base64(content)?,
        _ => content.as_bytes().to_vec(),
    };
    let receipt = &notification["receipt"];
    let verdict = |name: &str| receipt[name]["status"].as_str().map(str::to_owned);
    let verdicts = Verdicts {
        spf: verdict("spfVerdict"),
        dkim: verdict("dkimVerdict"),
        dmarc: verdict("dmarcVerdict"),
        spam: verdict("spamVerdict"),
        virus: verdict("virusVerdict"),
    };
    receive(webhooks, SES, id, &recipients, &raw, Some(verdicts)).await
}

fn decode_base64(text: &str) -> Result<Vec<u8>, Refusal> {
    // Postal wraps its base64 in lines.
    let compact: String = text.split_ascii_whitespace().collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|e| Refusal::Malformed(format!("message is not base64: {e}")))
}

/// Stores the email once for each tenant that owns one of its recipients, under the
/// provider's id and the tenant (a provider may hand the same mail over again for another
/// recipient).
async fn receive(
    webhooks: &Webhooks,
    gateway: &str,
    provider_id: &str,
    recipients: &[String],
    raw: &[u8],
    verdicts: Option<Verdicts>,
) -> Result<(), Refusal> {
    let mut owners: Vec<(&TenantId, &str)> = Vec::new();
    for r in recipients {
        if let Some(tenant) = webhooks.config.mailbox(r) {
            if !owners.iter().any(|(t, _)| *t == tenant) {
                owners.push((tenant, r));
            }
        }
    }
    if owners.is_empty() {
        info!(
            gateway,
            provider_id, "inbound email for no tenant's mailbox; ignored"
        );
        return Ok(());
    }
    let mut parsed = ParsedEmail::parse(raw).map_err(Refusal::Malformed)?;
    if verdicts.as_ref().is_some_and(Verdicts::infected) {
        // Kept as a record, never stored as files anyone could download.
        info!(
            gateway,
            provider_id, "inbound email failed the virus scan; attachments dropped"
        );
        parsed.attachments.clear();
    }
    parsed.email.verdicts = verdicts;
    if let [(tenant, _)] = owners[..] {
        forward::note_tenant(tenant);
    }
    for (tenant, recipient) in owners {
        let provider_message_id = format!("{provider_id}#{tenant}");
        let media = webhooks
            .herald
            .store_attachments(
                tenant,
                (gateway, &provider_message_id),
                parsed.attachments.clone(),
            )
            .await?;
        let arrival = Arrival {
            tenant: tenant.clone(),
            channel: Channel::Email,
            gateway: gateway.to_owned(),
            provider_message_id,
            from: parsed.from.clone(),
            to: recipient.to_owned(),
        };
        let mut message = InboundMessage::arrived(arrival, parsed.new_part.clone());
        message.email = Some(Box::new(parsed.email.clone()));
        message.media = media;
        if webhooks.herald.receive_email(message).await?.repeat {
            forward::withhold("a repeat of an inbound message already stored");
        }
    }
    Ok(())
}
