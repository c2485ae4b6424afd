//! Which provider gateways run, with their credentials, and each channel's failover order:
//! `[gateways]` in herald.toml, `HERALD_GATEWAYS` (JSON) on AWS.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

use super::fcm::{FcmConfig, FcmGateway, FCM};
use super::instances::{check_names, InstanceConfig, SesInstanceConfig};
use super::postal::{PostalConfig, PostalGateway, POSTAL};
use super::redact::Redactor;
use super::secret::Secret;
use super::smtp::{SmtpConfig, SmtpGateway, SMTP};
use super::telegram::{TelegramConfig, TelegramGateway, TELEGRAM};
use super::twilio::{TwilioConfig, TwilioGateway, TWILIO};
use super::whatsapp::{WhatsappConfig, WhatsappGateway, WHATSAPP};
use super::GatewayRegistry;
use crate::domain::Channel;
use crate::ports::Gateway;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaysConfig {
    /// Per channel, gateway names in failover order. A channel not named here uses its
    /// configured providers, and the sandbox only when it has none.
    #[serde(default)]
    pub order: BTreeMap<Channel, Vec<String>>,
    pub smtp: Option<SmtpConfig>,
    pub postal: Option<PostalConfig>,
    pub twilio: Option<TwilioConfig>,
    pub fcm: Option<FcmConfig>,
    pub telegram: Option<TelegramConfig>,
    pub whatsapp: Option<WhatsappConfig>,
    /// Further gateways of those kinds (and SES) under their own names, e.g. one per IP pool.
    #[serde(default)]
    pub instances: BTreeMap<String, InstanceConfig>,
}

impl GatewaysConfig {
    /// Every configured credential, named by its place in the configuration
    /// (`gateways.twilio.auth_token`).
    fn secrets(&self) -> Vec<(String, &Secret)> {
        let by_gateway = [
            self.smtp.as_ref().map(|c| (SMTP, c.secrets())),
            self.postal.as_ref().map(|c| (POSTAL, c.secrets())),
            self.twilio.as_ref().map(|c| (TWILIO, c.secrets())),
            self.fcm.as_ref().map(|c| (FCM, c.secrets())),
            self.telegram.as_ref().map(|c| (TELEGRAM, c.secrets())),
            self.whatsapp.as_ref().map(|c| (WHATSAPP, c.secrets())),
        ];
        let instances = self
            .instances
            .iter()
            .map(|(name, c)| (format!("instances.{name}"), c.secrets()));
        by_gateway
            .into_iter()
            .flatten()
            .map(|(gateway, fields)| (gateway.to_owned(), fields))
            .chain(instances)
            .flat_map(|(gateway, fields)| {
                fields
                    .into_iter()
                    .map(move |(field, secret)| (format!("gateways.{gateway}.{field}"), secret))
            })
            .collect()
    }

    /// Refuses an empty credential at start: the gateway could only fail every send, and the
    /// redactor cannot hide an empty value.
    pub fn validate(&self) -> Result<(), String> {
        check_names(&self.instances)?;
        let empty: Vec<String> = self
            .secrets()
            .into_iter()
            .filter(|(_, secret)| secret.expose().trim().is_empty())
            .map(|(field, _)| field)
            .collect();
        match empty.as_slice() {
            [] => Ok(()),
            [field] => Err(format!(
                "{field} is empty: give the credential (a variable named by `env` must hold it)"
            )),
            fields => Err(format!(
                "{} are empty: give the credentials (a variable named by `env` must hold them)",
                fields.join(", ")
            )),
        }
    }

    /// The redactor for every configured credential and the forms the gateways send it in.
    pub fn redactor(&self) -> Redactor {
        let mut values: Vec<String> = self
            .secrets()
            .into_iter()
            .map(|(_, secret)| secret.expose().to_owned())
            .collect();
        values.extend(self.smtp.iter().flat_map(SmtpConfig::secret_forms));
        values.extend(self.twilio.iter().flat_map(TwilioConfig::secret_forms));
        values.extend(self.fcm.iter().flat_map(FcmConfig::secret_forms));
        values.extend(self.telegram.iter().flat_map(TelegramConfig::secret_forms));
        values.extend(
            self.instances
                .values()
                .flat_map(InstanceConfig::secret_forms),
        );
        Redactor::new(values)
    }

    /// The provider gateways this configuration names.
    pub fn providers(&self) -> Result<Vec<Arc<dyn Gateway>>, String> {
        self.validate()?;
        let mut out: Vec<Arc<dyn Gateway>> = Vec::new();
        if let Some(c) = &self.smtp {
            out.push(Arc::new(SmtpGateway::new(c.clone())?));
        }
        if let Some(c) = &self.postal {
            out.push(Arc::new(PostalGateway::new(c.clone())));
        }
        if let Some(c) = &self.twilio {
            out.push(Arc::new(TwilioGateway::new(c.clone())?));
        }
        if let Some(c) = &self.fcm {
            out.push(Arc::new(FcmGateway::new(c.clone())?));
        }
        if let Some(c) = &self.telegram {
            out.push(Arc::new(TelegramGateway::new(c.clone())));
        }
        if let Some(c) = &self.whatsapp {
            out.push(Arc::new(WhatsappGateway::new(c.clone())));
        }
        for (name, c) in &self.instances {
            out.extend(c.build(name)?);
        }
        Ok(out)
    }

    /// The SES instances, which only the AWS backend can build.
    pub fn ses_instances(&self) -> impl Iterator<Item = (&str, &SesInstanceConfig)> {
        self.instances.iter().filter_map(|(name, c)| match c {
            InstanceConfig::Ses(ses) => Some((name.as_str(), ses)),
            _ => None,
        })
    }

    /// The registry: `providers` (configured ones first, e.g. SES, then these) and `fallbacks`
    /// (the sandboxes), ordered per channel.
    pub fn registry(
        &self,
        mut providers: Vec<Arc<dyn Gateway>>,
        fallbacks: Vec<Arc<dyn Gateway>>,
    ) -> Result<GatewayRegistry, String> {
        self.validate()?;
        let redactor = self.redactor();
        // A gateway's start-up complaint may quote what it was given.
        providers.extend(self.providers().map_err(|e| redactor.redact(&e))?);
        if let Some((name, _)) = self
            .ses_instances()
            .find(|(name, _)| !providers.iter().any(|g| g.name() == *name))
        {
            return Err(format!(
                "gateways.instances.{name}: kind ses runs on AWS only (the embedded server has no SES)"
            ));
        }
        let mut registry = GatewayRegistry::redacting(redactor);
        for channel in Channel::ALL {
            let chain: Vec<Arc<dyn Gateway>> = match self.order.get(&channel) {
                Some(names) => names
                    .iter()
                    .map(|name| {
                        providers
                            .iter()
                            .chain(&fallbacks)
                            .find(|g| g.name() == name)
                            .filter(|g| g.channels().contains(&channel))
                            .cloned()
                            .ok_or_else(|| {
                                format!("gateways.order.{channel}: no configured gateway {name} sends {channel}")
                            })
                    })
                    .collect::<Result<_, _>>()?,
                None => {
                    let serving = |g: &&Arc<dyn Gateway>| g.channels().contains(&channel);
                    let real: Vec<_> = providers.iter().filter(serving).cloned().collect();
                    if real.is_empty() {
                        fallbacks.iter().filter(serving).cloned().collect()
                    } else {
                        real
                    }
                }
            };
            for g in chain {
                registry.register_for(channel, g);
            }
        }
        Ok(registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::sandbox::{SandboxConfig, SandboxGateway};
    use crate::ports::{GatewayError, GatewayReceipt, OutboundMessage};
    use base64::Engine;
    use serde_json::json;

    #[test]
    fn an_empty_credential_is_refused_by_its_name() {
        let cases = [
            (
                "twilio.auth_token",
                json!({ "twilio": { "account_sid": "AC1", "auth_token": "", "from": "+15550001111" } }),
            ),
            (
                "twilio.api_key_secret",
                json!({ "twilio": { "account_sid": "AC1", "api_key_sid": "SK1", "api_key_secret": " ", "from": "+15550001111" } }),
            ),
            (
                "postal.api_key",
                json!({ "postal": { "base_url": "https://postal.example.com", "api_key": "" } }),
            ),
            (
                "smtp.password",
                json!({ "smtp": { "host": "smtp.example.com", "username": "herald", "password": "" } }),
            ),
            (
                "fcm.service_account",
                json!({ "fcm": { "project_id": "p", "service_account": "" } }),
            ),
            (
                "telegram.bot_token",
                json!({ "telegram": { "bot_token": "" } }),
            ),
            (
                "whatsapp.access_token",
                json!({ "whatsapp": { "phone_number_id": "1", "access_token": "\n" } }),
            ),
        ];
        for (field, value) in cases {
            let config: GatewaysConfig = serde_json::from_value(value).unwrap();
            let e = config.validate().unwrap_err();
            assert!(e.starts_with(&format!("gateways.{field} is empty")), "{e}");
            let built = config.registry(Vec::new(), Vec::new());
            assert!(built.is_err_and(|e| e.contains(field)), "{field}");
        }
        let two: GatewaysConfig = serde_json::from_value(json!({
            "telegram": { "bot_token": "" }, "whatsapp": { "phone_number_id": "1", "access_token": "" }
        }))
        .unwrap();
        assert_eq!(
            two.validate().unwrap_err(),
            "gateways.telegram.bot_token, gateways.whatsapp.access_token are empty: give the \
             credentials (a variable named by `env` must hold them)"
        );
        assert!(GatewaysConfig::default().validate().is_ok());
    }

    /// A provider that quotes its credentials back, as a careless one does.
    struct Echo;

    #[async_trait::async_trait]
    impl Gateway for Echo {
        fn name(&self) -> &str {
            "echo"
        }
        fn channels(&self) -> &[Channel] {
            &[Channel::Sms]
        }
        async fn send(&self, _: &OutboundMessage) -> Result<GatewayReceipt, GatewayError> {
            let basic = base64::engine::general_purpose::STANDARD.encode("AC1:tw-secret");
            Err(GatewayError::Permanent {
                code: "tw-secret".into(),
                message: format!(
                    "POST /bot123:tg-secret/sendMessage Authorization: Basic {basic}; \
                     X-Server-API-Key: pk-secret; Bearer wa-secret; tg-secret"
                ),
            })
        }
    }

    fn outbound() -> OutboundMessage {
        OutboundMessage {
            id: crate::domain::MessageId::new(),
            tenant: "acme".into(),
            channel: Channel::Sms,
            priority: crate::domain::Priority::P1,
            to: "+15550002222".into(),
            from: None,
            content: crate::domain::Content {
                subject: None,
                body: Some("hi".into()),
                html: None,
            },
            attempt: 1,
            correlation_id: "c".into(),
            unsubscribe_url: None,
            one_click_url: None,
            media_urls: Vec::new(),
            whatsapp_template: None,
        }
    }

    #[tokio::test]
    async fn a_routes_failure_comes_back_without_the_configured_secrets() {
        let config: GatewaysConfig = serde_json::from_value(json!({
            "telegram": { "bot_token": "123:tg-secret" },
            "postal": { "base_url": "https://postal.example.com", "api_key": "pk-secret" },
            "whatsapp": { "phone_number_id": "1", "access_token": "wa-secret" },
            "twilio": { "account_sid": "AC1", "auth_token": "tw-secret", "from": "+15550001111",
                        "base_url": "http://127.0.0.1:9" },
            "order": { "sms": ["echo"] }
        }))
        .unwrap();
        let registry = config.registry(vec![Arc::new(Echo)], Vec::new()).unwrap();
        let route = registry
            .route(Channel::Sms, &std::collections::HashMap::new())
            .unwrap();
        let Err(GatewayError::Permanent { code, message }) = route.send(&outbound()).await else {
            panic!("the echo gateway fails");
        };
        assert_eq!(code, "[redacted]");
        for leak in ["secret", "QUMxOnR3"] {
            assert!(!message.contains(leak), "{leak} in {message}");
        }
        assert!(
            message.starts_with("POST /bot[redacted]/sendMessage"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn channels_use_their_providers_and_the_sandbox_only_without_one() {
        let config: GatewaysConfig = serde_json::from_value(serde_json::json!({
            "telegram": { "bot_token": "123:abc" },
            "order": { "push": ["sandbox"] }
        }))
        .unwrap();
        let (sandbox, _callbacks) = SandboxGateway::new(SandboxConfig::default()).unwrap();
        let registry = config
            .registry(Vec::new(), vec![Arc::new(sandbox)])
            .unwrap();
        let names = |c: Channel| -> Vec<String> {
            registry
                .gateways()
                .filter(|(ch, _)| *ch == c)
                .map(|(_, g)| g.name().to_owned())
                .collect()
        };
        assert_eq!(names(Channel::Telegram), ["telegram"]);
        assert_eq!(names(Channel::Email), ["sandbox"]);
        assert_eq!(names(Channel::Push), ["sandbox"]);
        let bad: GatewaysConfig =
            serde_json::from_value(serde_json::json!({ "order": { "sms": ["twilio"] } })).unwrap();
        assert!(
            bad.registry(Vec::new(), Vec::new()).is_err(),
            "unconfigured gateway in the order"
        );
    }
}
