//! Postal (self-hosted mail server): `POST /api/v1/send/message` with `X-Server-API-Key`.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;

use super::http;
use super::mime::unsubscribe_headers;
use super::secret::Secret;
use crate::domain::Channel;
use crate::ports::{Gateway, GatewayError, GatewayReceipt, OutboundMessage};

pub const POSTAL: &str = "postal";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostalConfig {
    /// The Postal server, e.g. https://postal.example.com
    pub base_url: String,
    pub api_key: Secret,
    /// The sender when a message names none.
    pub from: Option<String>,
}

impl PostalConfig {
    pub(super) fn secrets(&self) -> Vec<(&'static str, &Secret)> {
        vec![("api_key", &self.api_key)]
    }
}

pub struct PostalGateway {
    /// `postal`, or an instance's own name (`[gateways.instances.<name>]`).
    name: String,
    config: PostalConfig,
    client: reqwest::Client,
}

impl PostalGateway {
    pub fn new(config: PostalConfig) -> PostalGateway {
        PostalGateway {
            name: POSTAL.into(),
            config,
            client: http::client(),
        }
    }

    /// The same gateway under an instance's name (another Postal server or IP pool).
    pub fn named(self, name: &str) -> PostalGateway {
        PostalGateway {
            name: name.into(),
            ..self
        }
    }
}

#[async_trait]
impl Gateway for PostalGateway {
    fn name(&self) -> &str {
        &self.name
    }

    fn channels(&self) -> &[Channel] {
        &[Channel::Email]
    }

    async fn send(&self, m: &OutboundMessage) -> Result<GatewayReceipt, GatewayError> {
        let Some(from) = m.from.as_ref().or(self.config.from.as_ref()) else {
            return Err(GatewayError::Permanent {
                code: "NoSender".into(),
                message: "the message names no sender and postal has no `from`".into(),
            });
        };
        let mut body = json!({
            "to": [m.to],
            "from": from,
            "subject": m.content.subject,
            "plain_body": m.content.body,
            "html_body": m.content.html,
            "tag": format!("herald-{}", m.tenant),
            "headers": { "X-Herald-Id": m.id.to_string() },
        });
        for (name, value) in unsubscribe_headers(m).unwrap_or_default() {
            body["headers"][name] = json!(value);
        }
        let url = format!(
            "{}/api/v1/send/message",
            self.config.base_url.trim_end_matches('/')
        );
        let http::Answer {
            status,
            headers,
            body: answer,
        } = http::call(
            POSTAL,
            self.client
                .post(url)
                .header("X-Server-API-Key", self.config.api_key.expose())
                .json(&body),
        )
        .await?;
        if status.is_success() && answer["status"] == "success" {
            // Postal's per-recipient message id is what its webhooks name.
            let id = answer["data"]["messages"][&m.to]["id"]
                .as_u64()
                .map(|id| id.to_string())
                .or_else(|| answer["data"]["message_id"].as_str().map(str::to_owned));
            return http::receipt(&self.name, id);
        }
        let code = answer["data"]["code"]
            .as_str()
            .unwrap_or("unknown")
            .to_owned();
        let message = answer["data"]["message"]
            .as_str()
            .unwrap_or("no message")
            .to_owned();
        // Postal answers 200 with status "parameter-error" or "error" for refusals.
        Err(match (status.is_success(), answer["status"].as_str()) {
            (true, Some("parameter-error")) => GatewayError::Permanent { code, message },
            (true, _) if code == "InvalidServerAPIKey" || code == "ServerSuspended" => {
                GatewayError::Transient(format!("postal: {code}: {message}"))
            }
            (true, _) => GatewayError::Permanent { code, message },
            (false, _) => http::by_status(&self.name, status, &headers, code, message),
        })
    }
}
