//! Telegram: the Bot API's `sendMessage`.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Value};

use super::http;
use super::secret::Secret;
use crate::domain::suppression::Reason;
use crate::domain::Channel;
use crate::ports::{Gateway, GatewayError, GatewayReceipt, OutboundMessage};

pub const TELEGRAM: &str = "telegram";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelegramConfig {
    pub bot_token: Secret,
    #[serde(default = "default_base_url")]
    pub base_url: String,
}

fn default_base_url() -> String {
    "https://api.telegram.org".into()
}

impl TelegramConfig {
    pub(super) fn secrets(&self) -> Vec<(&'static str, &Secret)> {
        vec![("bot_token", &self.bot_token)]
    }

    /// The token's secret half on its own (`<bot id>:<secret>`; the bot id is public).
    pub(super) fn secret_forms(&self) -> Vec<String> {
        let token = self.bot_token.expose();
        token
            .split_once(':')
            .map(|(_, secret)| secret.to_owned())
            .into_iter()
            .collect()
    }
}

pub struct TelegramGateway {
    config: TelegramConfig,
    client: reqwest::Client,
}

impl TelegramGateway {
    pub fn new(config: TelegramConfig) -> TelegramGateway {
        TelegramGateway {
            config,
            client: http::client(),
        }
    }
}

#[async_trait]
impl Gateway for TelegramGateway {
    fn name(&self) -> &str {
        TELEGRAM
    }

    fn channels(&self) -> &[Channel] {
        &[Channel::Telegram]
    }

    fn suppression_for(&self, code: &str) -> Option<Reason> {
        // 403: the user blocked the bot; it will not deliver until they unblock it.
        (code == "403").then_some(Reason::Unsubscribe)
    }

    async fn send(&self, m: &OutboundMessage) -> Result<GatewayReceipt, GatewayError> {
        let chat: Value =
            m.to.parse::<i64>()
                .map(Value::from)
                .unwrap_or_else(|_| Value::from(m.to.clone()));
        let url = format!(
            "{}/bot{}/sendMessage",
            self.config.base_url.trim_end_matches('/'),
            self.config.bot_token.expose()
        );
        let http::Answer {
            status,
            headers,
            body: answer,
        } = http::call(
            TELEGRAM,
            self.client
                .post(url)
                .json(&json!({ "chat_id": chat, "text": m.content.body })),
        )
        .await?;
        if answer["ok"] == true {
            let chat_id = answer["result"]["chat"]["id"]
                .as_i64()
                .map_or(m.to.clone(), |c| c.to_string());
            let id = answer["result"]["message_id"].as_i64();
            return http::receipt(TELEGRAM, id.map(|id| format!("{chat_id}:{id}")));
        }
        let code = answer["error_code"]
            .as_u64()
            .unwrap_or(status.as_u16().into());
        let message = answer["description"]
            .as_str()
            .unwrap_or("no description")
            .to_owned();
        if code == 429 {
            let wait = answer["parameters"]["retry_after"]
                .as_u64()
                .map(std::time::Duration::from_secs);
            return Err(GatewayError::Throttled {
                retry_after: wait.or_else(|| http::retry_after(&headers)),
            });
        }
        Err(http::by_status(
            TELEGRAM,
            status,
            &headers,
            code.to_string(),
            message,
        ))
    }
}
