//! Twilio SMS and MMS: the Messages API (form-encoded, basic auth), with a StatusCallback back
//! to Herald's webhook that carries Herald's id.

use async_trait::async_trait;
use serde::Deserialize;

use super::http;
use super::secret::Secret;
use crate::domain::suppression::Reason;
use crate::domain::Channel;
use crate::ports::{Gateway, GatewayError, GatewayReceipt, OutboundMessage};

pub const TWILIO: &str = "twilio";
/// Where Twilio reports on a message: each send names it as its StatusCallback, and the webhook
/// router serves it.
pub const STATUS_PATH: &str = "/webhooks/twilio/status";
/// Where Twilio posts messages to Herald's numbers (set on the number in Twilio's console).
pub const INBOUND_PATH: &str = "/webhooks/twilio/inbound";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwilioConfig {
    pub account_sid: String,
    /// The account's auth token; or give `api_key_sid` and `api_key_secret` instead.
    pub auth_token: Option<Secret>,
    pub api_key_sid: Option<String>,
    pub api_key_secret: Option<Secret>,
    /// The sending number (E.164), or use a Messaging Service.
    pub from: Option<String>,
    pub messaging_service_sid: Option<String>,
    /// Herald's public base URL; status callbacks go to `<it>/webhooks/twilio/status`.
    pub public_base_url: Option<String>,
    #[serde(default = "default_base_url")]
    pub base_url: String,
}

fn default_base_url() -> String {
    "https://api.twilio.com".into()
}

impl TwilioConfig {
    pub(super) fn secrets(&self) -> Vec<(&'static str, &Secret)> {
        let mut out = Vec::new();
        if let Some(token) = &self.auth_token {
            out.push(("auth_token", token));
        }
        if let Some(secret) = &self.api_key_secret {
            out.push(("api_key_secret", secret));
        }
        out
    }

    /// The basic-auth user and password: the API key when there is one, else the account's.
    pub fn credentials(&self) -> (&str, &str) {
        match (&self.api_key_sid, &self.api_key_secret) {
            (Some(sid), Some(secret)) => (sid, secret.expose()),
            _ => (
                &self.account_sid,
                self.auth_token
                    .as_ref()
                    .map(Secret::expose)
                    .unwrap_or_default(),
            ),
        }
    }

    /// The basic-auth pairs (`user:secret`): base64-encoded, they are the Authorization header.
    pub(super) fn secret_forms(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(token) = &self.auth_token {
            out.push(format!("{}:{}", self.account_sid, token.expose()));
        }
        if let (Some(sid), Some(secret)) = (&self.api_key_sid, &self.api_key_secret) {
            out.push(format!("{sid}:{}", secret.expose()));
        }
        out
    }
}

pub struct TwilioGateway {
    config: TwilioConfig,
    client: reqwest::Client,
}

/// Twilio error codes that mean this message can never go, whatever we retry.
const PERMANENT_CODES: &[u64] = &[
    21211, // invalid 'To' number
    21408, // permission to send to this region not enabled
    21610, // the recipient replied STOP
    21612, // 'To' cannot be reached by SMS
    21614, // 'To' is not a mobile number
    21617, // body too long
    21660, // 'From' not owned by the account
    30004, // message blocked
    30005, // unknown destination handset
    30006, // landline or unreachable carrier
];

impl TwilioGateway {
    pub fn new(config: TwilioConfig) -> Result<TwilioGateway, String> {
        let has_token = config.auth_token.is_some();
        let has_key = config.api_key_sid.is_some() && config.api_key_secret.is_some();
        if !has_token && !has_key {
            return Err("twilio needs auth_token, or api_key_sid and api_key_secret".into());
        }
        if config.from.is_none() && config.messaging_service_sid.is_none() {
            return Err("twilio needs `from` or `messaging_service_sid`".into());
        }
        Ok(TwilioGateway {
            config,
            client: http::client(),
        })
    }

    fn credentials(&self) -> (&str, &str) {
        self.config.credentials()
    }
}

#[async_trait]
impl Gateway for TwilioGateway {
    fn name(&self) -> &str {
        TWILIO
    }

    fn channels(&self) -> &[Channel] {
        &[Channel::Sms]
    }

    fn suppression_for(&self, code: &str) -> Option<Reason> {
        (code == "21610").then_some(Reason::SmsOptOut)
    }

    async fn send(&self, m: &OutboundMessage) -> Result<GatewayReceipt, GatewayError> {
        let mut form: Vec<(&str, String)> = vec![
            ("To", m.to.clone()),
            ("Body", m.content.body.clone().unwrap_or_default()),
        ];
        // The message's own sender, else the Messaging Service, else the configured number
        // (`new` made sure there is one of the last two).
        if let Some(from) = &m.from {
            form.push(("From", from.clone()));
        } else if let Some(service) = &self.config.messaging_service_sid {
            form.push(("MessagingServiceSid", service.clone()));
        } else if let Some(from) = &self.config.from {
            form.push(("From", from.clone()));
        }
        if let Some(base) = &self.config.public_base_url {
            form.push((
                "StatusCallback",
                format!(
                    "{}{}?herald_id={}",
                    base.trim_end_matches('/'),
                    STATUS_PATH,
                    m.id
                ),
            ));
        }
        for url in &m.media_urls {
            form.push(("MediaUrl", url.clone()));
        }
        let url = format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            self.config.base_url.trim_end_matches('/'),
            self.config.account_sid
        );
        let (user, password) = self.credentials();
        let http::Answer {
            status,
            headers,
            body,
        } = http::call(
            TWILIO,
            self.client
                .post(url)
                .basic_auth(user, Some(password))
                .form(&form),
        )
        .await?;
        if status.is_success() {
            return http::receipt(TWILIO, body["sid"].as_str().map(str::to_owned));
        }
        let code = body["code"].as_u64();
        let message = body["message"].as_str().unwrap_or("no message").to_owned();
        Err(match code {
            Some(c) if PERMANENT_CODES.contains(&c) => GatewayError::Permanent {
                code: c.to_string(),
                message,
            },
            // 20429: too many requests.
            Some(20429) => GatewayError::Throttled {
                retry_after: http::retry_after(&headers),
            },
            Some(c) => http::by_status(TWILIO, status, &headers, c.to_string(), message),
            None => http::by_status(
                TWILIO,
                status,
                &headers,
                status.as_u16().to_string(),
                message,
            ),
        })
    }
}
