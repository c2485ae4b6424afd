//! WhatsApp: the Cloud API's `/{phone-number-id}/messages`, text or template messages.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;

use super::http;
use super::secret::Secret;
use crate::domain::Channel;
use crate::ports::{Gateway, GatewayError, GatewayReceipt, OutboundMessage};

pub const WHATSAPP: &str = "whatsapp";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhatsappConfig {
    pub phone_number_id: String,
    pub access_token: Secret,
    #[serde(default = "default_base_url")]
    pub base_url: String,
    #[serde(default = "default_version")]
    pub api_version: String,
}

fn default_base_url() -> String {
    "https://graph.facebook.com".into()
}

fn default_version() -> String {
    "v21.0".into()
}

impl WhatsappConfig {
    pub(super) fn secrets(&self) -> Vec<(&'static str, &Secret)> {
        vec![("access_token", &self.access_token)]
    }
}

/// Cloud API error codes that are about this message or recipient, not the service.
const PERMANENT_CODES: &[u64] = &[
    131026, // undeliverable: not a WhatsApp user, or an old app
    131047, // more than 24 hours since the user last wrote: only templates may go
    131051, // unsupported message type
    131052, // media download error
    132000, // template parameters do not match
    132001, // template does not exist
    132007, // template format policy
    100,    // invalid parameter
];
/// Rate limits: the account's, or the pair's (too many to one user).
const THROTTLE_CODES: &[u64] = &[130429, 131048, 131056, 80007];

pub struct WhatsappGateway {
    config: WhatsappConfig,
    client: reqwest::Client,
}

impl WhatsappGateway {
    pub fn new(config: WhatsappConfig) -> WhatsappGateway {
        WhatsappGateway {
            config,
            client: http::client(),
        }
    }
}

#[async_trait]
impl Gateway for WhatsappGateway {
    fn name(&self) -> &str {
        WHATSAPP
    }

    fn channels(&self) -> &[Channel] {
        &[Channel::Whatsapp]
    }

    async fn send(&self, m: &OutboundMessage) -> Result<GatewayReceipt, GatewayError> {
        // The Cloud API takes the number without its '+'.
        let to = m.to.trim_start_matches('+');
        let body = match &m.whatsapp_template {
            Some(template) => json!({
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": to,
                "type": "template",
                "template": template,
            }),
            None => json!({
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": to,
                "type": "text",
                "text": { "preview_url": false, "body": m.content.body },
            }),
        };
        let url = format!(
            "{}/{}/{}/messages",
            self.config.base_url.trim_end_matches('/'),
            self.config.api_version,
            self.config.phone_number_id
        );
        let http::Answer {
            status,
            headers,
            body: answer,
        } = http::call(
            WHATSAPP,
            self.client
                .post(url)
                .bearer_auth(self.config.access_token.expose())
                .json(&body),
        )
        .await?;
        if status.is_success() {
            return http::receipt(
                WHATSAPP,
                answer["messages"][0]["id"].as_str().map(str::to_owned),
            );
        }
        let error = &answer["error"];
        let code = error["code"].as_u64().unwrap_or(0);
        let message = error["message"].as_str().unwrap_or("no message").to_owned();
        Err(if THROTTLE_CODES.contains(&code) {
            GatewayError::Throttled {
                retry_after: http::retry_after(&headers),
            }
        } else if PERMANENT_CODES.contains(&code) {
            GatewayError::Permanent {
                code: code.to_string(),
                message,
            }
        } else {
            http::by_status(WHATSAPP, status, &headers, code.to_string(), message)
        })
    }
}
