//! `POST /webhooks/telegram`: the bot's updates, with the `secret_token` given to setWebhook
//! in `X-Telegram-Bot-Api-Secret-Token`. Messages to the bot are stored as inbound.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::Response;
use chrono::DateTime;
use serde_json::Value;
use tracing::info;

use super::guard::clip;
use super::{admit, header_str, respond, Refusal, Webhooks};
use crate::domain::inbound::Arrival;
use crate::domain::secret::constant_time_eq;
use crate::domain::{Channel, InboundMessage, Keyword};
use crate::engine::inbound::KeywordReplies;
use crate::gateway::telegram::TELEGRAM;

pub(super) async fn handle(State(webhooks): State<Arc<Webhooks>>, request: Request) -> Response {
    respond(&webhooks, "telegram", process(&webhooks, request).await)
}

async fn process(webhooks: &Webhooks, request: Request) -> Result<(), Refusal> {
    let config = webhooks
        .config
        .telegram
        .as_ref()
        .ok_or(Refusal::NotConfigured("telegram"))?;
    let request = admit(request).await?;
    let body = request.body;
    let presented = header_str(&request.headers, "x-telegram-bot-api-secret-token")
        .ok_or_else(|| Refusal::BadSignature("no X-Telegram-Bot-Api-Secret-Token".into()))?;
    if !constant_time_eq(
        presented.as_bytes(),
        config.secret_token.expose().as_bytes(),
    ) {
        return Err(Refusal::BadSignature("wrong secret token".into()));
    }
    // The bot is the tenant's: everything it hears concerns that tenant.
    super::forward::note_tenant(&config.tenant);
    let update: Value = serde_json::from_slice(&body)
        .map_err(|e| Refusal::Malformed(format!("not JSON: {}", clip(&e.to_string()))))?;
    let message = &update["message"];
    let (Some(update_id), Some(chat)) =
        (update["update_id"].as_i64(), message["chat"]["id"].as_i64())
    else {
        info!("telegram update without a message; ignored");
        return Ok(());
    };
    let text = message["text"].as_str().unwrap_or_default();
    let arrival = Arrival {
        tenant: config.tenant.clone(),
        channel: Channel::Telegram,
        gateway: TELEGRAM.into(),
        // Telegram numbers updates per bot: a redelivered update has the same number.
        provider_message_id: update_id.to_string(),
        from: chat.to_string(),
        to: "bot".into(),
    };
    let mut inbound = InboundMessage::arrived(arrival, text.to_owned());
    // Bots' commands count as the words: /stop opts out, /start back in.
    inbound.keyword = Keyword::of(text.strip_prefix('/').unwrap_or(text));
    if let Some(sent) = message["date"]
        .as_i64()
        .and_then(|d| DateTime::from_timestamp(d, 0))
    {
        inbound.received_at = sent;
    }
    let received = webhooks
        .herald
        .receive(inbound, &KeywordReplies::default())
        .await?;
    if received.repeat {
        super::forward::withhold("a repeat of an update already stored");
    }
    Ok(())
}
