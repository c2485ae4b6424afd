//! Which provider gateways run, with their credentials, and each channel's failover order:
//! `[gateways]` in herald.toml, `HERALD_GATEWAYS` (JSON) on AWS.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

use super::fcm::{FcmConfig, FcmGateway};
use super::postal::{PostalConfig, PostalGateway};
use super::smtp::{SmtpConfig, SmtpGateway};
use super::telegram::{TelegramConfig, TelegramGateway};
use super::twilio::{TwilioConfig, TwilioGateway};
use super::whatsapp::{WhatsappConfig, WhatsappGateway};
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
}

impl GatewaysConfig {
    /// The provider gateways this configuration names.
    pub fn providers(&self) -> Result<Vec<Arc<dyn Gateway>>, String> {
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
        Ok(out)
    }

    /// The registry: `providers` (configured ones first, e.g. SES, then these) and `fallbacks`
    /// (the sandboxes), ordered per channel.
    pub fn registry(
        &self,
        mut providers: Vec<Arc<dyn Gateway>>,
        fallbacks: Vec<Arc<dyn Gateway>>,
    ) -> Result<GatewayRegistry, String> {
        providers.extend(self.providers()?);
        let mut registry = GatewayRegistry::new();
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
