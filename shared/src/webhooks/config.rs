//! What the webhooks accept: each provider's verification secret, the allowed SNS topics, and
//! which tenant owns each receiving number. `[webhooks]` in herald.toml, `HERALD_WEBHOOKS`
//! (JSON) on AWS; secrets may name an environment variable.

use serde::Deserialize;

use crate::domain::{SenderIdentity, TenantId};
use crate::engine::inbound::KeywordReplies;
use crate::gateway::secret::Secret;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    /// The URL providers reach Herald at, before API Gateway or a proxy rewrites host and path
    /// (`https://herald.example.com`): Twilio signs the URL it called.
    pub public_base_url: Option<String>,
    pub ses: Option<SesWebhook>,
    pub twilio: Option<TwilioWebhook>,
    pub postal: Option<PostalWebhook>,
    pub whatsapp: Option<WhatsappWebhook>,
    pub telegram: Option<TelegramWebhook>,
    /// Receiving numbers (E.164; for WhatsApp also the phone-number id) and their tenants.
    #[serde(default)]
    pub numbers: Vec<InboundNumber>,
    /// Requests a second per source (SNS, Twilio, ...), with bursts of twice that.
    #[serde(default = "default_rate")]
    pub rate_per_second: f64,
}

fn default_rate() -> f64 {
    200.0
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            public_base_url: None,
            ses: None,
            twilio: None,
            postal: None,
            whatsapp: None,
            telegram: None,
            numbers: Vec::new(),
            rate_per_second: default_rate(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SesWebhook {
    /// SNS topics whose notifications (and subscription confirmations) are accepted.
    pub topic_arns: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwilioWebhook {
    /// The account's auth token (Twilio signs with it even when sends use an API key).
    pub auth_token: Secret,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostalWebhook {
    /// The server's webhook public key: PEM, or the base64 DER Postal shows.
    pub public_key: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhatsappWebhook {
    /// The Meta app secret that signs `X-Hub-Signature-256`.
    pub app_secret: Secret,
    /// What Meta must present in the GET verification handshake.
    pub verify_token: Secret,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelegramWebhook {
    /// The `secret_token` given to setWebhook, sent back in every update's header.
    pub secret_token: Secret,
    /// The tenant that owns the bot.
    pub tenant: TenantId,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundNumber {
    pub number: String,
    pub tenant: TenantId,
    #[serde(default)]
    pub replies: KeywordReplies,
}

impl WebhooksConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.rate_per_second.is_nan() || self.rate_per_second <= 0.0 {
            return Err("webhooks.rate_per_second must be above 0".into());
        }
        if let Some(base) = &self.public_base_url {
            if !(base.starts_with("https://") || base.starts_with("http://")) {
                return Err(format!(
                    "webhooks.public_base_url {base:?} is not an http(s) URL"
                ));
            }
        }
        if self.twilio.is_some() && self.public_base_url.is_none() {
            return Err(
                "webhooks.twilio needs webhooks.public_base_url: Twilio signs the URL it calls"
                    .into(),
            );
        }
        Ok(())
    }

    /// The number's owner and its keyword replies.
    /// Each receiving number is a sender identity of the tenant that owns it.
    pub fn sender_identities(&self) -> Vec<(TenantId, SenderIdentity)> {
        self.numbers
            .iter()
            .filter_map(|n| {
                let number = if n.number.starts_with('+') {
                    n.number.clone()
                } else {
                    format!("+{}", n.number)
                };
                SenderIdentity::parse(&number)
                    .ok()
                    .map(|id| (n.tenant.clone(), id))
            })
            .collect()
    }

    pub fn number(&self, to: &str) -> Option<&InboundNumber> {
        let digits = |s: &str| s.trim().trim_start_matches('+').to_owned();
        self.numbers
            .iter()
            .find(|n| digits(&n.number) == digits(to))
    }

    /// The signed URL of a route: the public base plus the route's path and the query string.
    pub fn public_url(&self, path: &str, query: Option<&str>) -> Option<String> {
        let base = self.public_base_url.as_deref()?.trim_end_matches('/');
        Some(match query {
            Some(q) if !q.is_empty() => format!("{base}{path}?{q}"),
            _ => format!("{base}{path}"),
        })
    }
}
