//! What the webhooks accept: each provider's verification secret, the allowed SNS topics, and
//! which tenant owns each receiving number. `[webhooks]` in herald.toml, `HERALD_WEBHOOKS`
//! (JSON) on AWS; secrets may name an environment variable.

use std::collections::BTreeMap;

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
    /// Postal gateway instances (`[gateways.instances.<name>]`, `kind = "postal"`), each at
    /// `/webhooks/postal/<name>` with its server's key (the same key for servers of one
    /// Postal installation).
    #[serde(default)]
    pub postal_instances: BTreeMap<String, PostalWebhook>,
    pub whatsapp: Option<WhatsappWebhook>,
    pub telegram: Option<TelegramWebhook>,
    /// Receiving numbers (E.164; for WhatsApp also the phone-number id) and their tenants.
    #[serde(default)]
    pub numbers: Vec<InboundNumber>,
    /// Receiving email addresses (or whole domains) and their tenants.
    #[serde(default)]
    pub mailboxes: Vec<InboundMailbox>,
    /// Failed verifications a second per client address, with bursts of twice that; past it a
    /// client's failures are answered 429. Valid requests are never counted.
    #[serde(default = "default_rate")]
    pub rate_per_second: f64,
}

fn default_rate() -> f64 {
    10.0
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            public_base_url: None,
            ses: None,
            twilio: None,
            postal: None,
            postal_instances: BTreeMap::new(),
            whatsapp: None,
            telegram: None,
            numbers: Vec::new(),
            mailboxes: Vec::new(),
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

/// An address mail is received at (`support@acme.example`), or a whole domain
/// (`acme.example`), and the tenant that owns it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundMailbox {
    pub address: String,
    pub tenant: TenantId,
}

impl InboundMailbox {
    fn identity(&self) -> Result<SenderIdentity, String> {
        match SenderIdentity::parse(&self.address)? {
            id @ (SenderIdentity::EmailAddress(_) | SenderIdentity::EmailDomain(_)) => Ok(id),
            _ => Err("is neither an email address nor a domain".into()),
        }
    }
}

impl WebhooksConfig {
    pub fn validate(&self) -> Result<(), String> {
        for m in &self.mailboxes {
            m.identity()
                .map_err(|e| format!("webhooks.mailboxes: {:?} {e}", m.address))?;
        }
        if !self.rate_per_second.is_finite() || self.rate_per_second <= 0.0 {
            return Err("webhooks.rate_per_second must be above 0".into());
        }
        if let Some(empty) = self.empty_secret() {
            return Err(format!(
                "{empty} is empty: a webhook secret anyone can match is no secret"
            ));
        }
        if self
            .ses
            .as_ref()
            .is_some_and(|s| s.topic_arns.iter().any(|t| t.trim().is_empty()))
        {
            return Err("webhooks.ses.topic_arns holds an empty topic".into());
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

    /// The first configured secret that is empty (or only blanks), by its setting's name.
    fn empty_secret(&self) -> Option<&'static str> {
        let blank = |s: &Secret| s.expose().trim().is_empty();
        let mut secrets: Vec<(&'static str, bool)> = Vec::new();
        if let Some(t) = &self.twilio {
            secrets.push(("webhooks.twilio.auth_token", blank(&t.auth_token)));
        }
        if let Some(p) = &self.postal {
            secrets.push(("webhooks.postal.public_key", p.public_key.trim().is_empty()));
        }
        if let Some(w) = &self.whatsapp {
            secrets.push(("webhooks.whatsapp.app_secret", blank(&w.app_secret)));
            secrets.push(("webhooks.whatsapp.verify_token", blank(&w.verify_token)));
        }
        if let Some(t) = &self.telegram {
            secrets.push(("webhooks.telegram.secret_token", blank(&t.secret_token)));
        }
        secrets
            .into_iter()
            .find(|(_, empty)| *empty)
            .map(|(name, _)| name)
    }

    /// The number's owner and its keyword replies.
    /// Each receiving number and mailbox is a sender identity of the tenant that owns it.
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
            .chain(
                self.mailboxes
                    .iter()
                    .filter_map(|m| Some((m.tenant.clone(), m.identity().ok()?))),
            )
            .collect()
    }

    /// The tenant that receives mail at `address`: its own mailbox first, else its domain's.
    pub fn mailbox(&self, address: &str) -> Option<&TenantId> {
        let address = SenderIdentity::parse(address).ok()?;
        let SenderIdentity::EmailAddress(address) = address else {
            return None;
        };
        let domain = address.rsplit_once('@').map(|(_, d)| d)?;
        let owned = |wanted: &dyn Fn(&SenderIdentity) -> bool| {
            self.mailboxes
                .iter()
                .find(|m| m.identity().is_ok_and(|id| wanted(&id)))
                .map(|m| &m.tenant)
        };
        owned(&|id| matches!(id, SenderIdentity::EmailAddress(a) if a.eq_ignore_ascii_case(&address)))
            .or_else(|| owned(&|id| matches!(id, SenderIdentity::EmailDomain(d) if d.eq_ignore_ascii_case(domain))))
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

#[cfg(test)]
mod tests {
    use super::WebhooksConfig;

    fn config(extra: serde_json::Value) -> WebhooksConfig {
        let mut v = serde_json::json!({ "public_base_url": "https://herald.example.com" });
        if let (Some(base), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
            base.extend(extra.clone());
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn empty_secrets_are_refused_at_start_by_name() {
        let good = config(serde_json::json!({
            "twilio": { "auth_token": "t" },
            "postal": { "public_key": "k" },
            "whatsapp": { "app_secret": "a", "verify_token": "v" },
            "telegram": { "secret_token": "s", "tenant": "acme" },
            "ses": { "topic_arns": ["arn:aws:sns:us-east-1:1:t"] }
        }));
        assert_eq!(good.validate(), Ok(()));
        for (setting, extra) in [
            (
                "webhooks.twilio.auth_token",
                serde_json::json!({ "twilio": { "auth_token": "" } }),
            ),
            (
                "webhooks.postal.public_key",
                serde_json::json!({ "postal": { "public_key": " " } }),
            ),
            (
                "webhooks.whatsapp.app_secret",
                serde_json::json!({ "whatsapp": { "app_secret": "", "verify_token": "v" } }),
            ),
            (
                "webhooks.whatsapp.verify_token",
                serde_json::json!({ "whatsapp": { "app_secret": "a", "verify_token": "\t" } }),
            ),
            (
                "webhooks.telegram.secret_token",
                serde_json::json!({ "telegram": { "secret_token": "", "tenant": "acme" } }),
            ),
            (
                "webhooks.ses.topic_arns",
                serde_json::json!({ "ses": { "topic_arns": [""] } }),
            ),
        ] {
            let refused = config(extra).validate().unwrap_err();
            assert!(refused.starts_with(setting), "{setting}: {refused}");
        }
    }
}
