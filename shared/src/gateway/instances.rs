//! Further gateways of a kind Herald already has, under their own names:
//! `[gateways.instances.<name>]` with `kind` (`smtp`, `postal`, `ses`) and that kind's
//! settings. They are how IP pools are used: a Postal server or SMTP relay per pool, or an SES
//! configuration set bound to a dedicated IP pool. Each is a gateway of its own for the
//! channel order, paces, health, warm-up and reputation.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

use super::fcm::FCM;
use super::postal::{PostalConfig, PostalGateway, POSTAL};
use super::secret::Secret;
use super::ses_events::SES;
use super::smtp::{SmtpConfig, SmtpGateway, SMTP};
use super::telegram::TELEGRAM;
use super::twilio::TWILIO;
use super::whatsapp::WHATSAPP;
use crate::ports::Gateway;

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum InstanceConfig {
    Smtp(SmtpConfig),
    Postal(PostalConfig),
    Ses(SesInstanceConfig),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SesInstanceConfig {
    /// The configuration set its sends name (e.g. one bound to a dedicated IP pool). Its event
    /// destination must publish to Herald's SES events topic, as the stack's own sets do.
    pub configuration_set: String,
    /// The sender when a message names none.
    pub from: Option<String>,
}

/// Names an instance cannot take: the built-in gateways', and the Postal inbound path's.
const RESERVED: &[&str] = &[
    SES, SMTP, POSTAL, TWILIO, FCM, TELEGRAM, WHATSAPP, "sandbox", "inbound",
];

/// An instance name: 1 to 40 of `a-z`, `0-9` and `-`, starting with a letter or digit. It
/// travels in URLs (`/webhooks/postal/<name>`) and SES message tags, which allow no more.
pub fn is_instance_name(name: &str) -> bool {
    (1..=40).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Refuses a name that is not one, or that a built-in gateway has.
pub(super) fn check_names(instances: &BTreeMap<String, InstanceConfig>) -> Result<(), String> {
    for name in instances.keys() {
        if !is_instance_name(name) {
            return Err(format!(
                "gateways.instances.{name}: a name is 1 to 40 of a-z, 0-9 and -"
            ));
        }
        if RESERVED.contains(&name.as_str()) {
            return Err(format!(
                "gateways.instances.{name}: {name} is a built-in gateway's name; choose another"
            ));
        }
    }
    Ok(())
}

impl InstanceConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            InstanceConfig::Smtp(_) => SMTP,
            InstanceConfig::Postal(_) => POSTAL,
            InstanceConfig::Ses(_) => SES,
        }
    }

    pub(super) fn secrets(&self) -> Vec<(&'static str, &Secret)> {
        match self {
            InstanceConfig::Smtp(c) => c.secrets(),
            InstanceConfig::Postal(c) => c.secrets(),
            InstanceConfig::Ses(_) => Vec::new(),
        }
    }

    pub(super) fn secret_forms(&self) -> Vec<String> {
        match self {
            InstanceConfig::Smtp(c) => c.secret_forms(),
            InstanceConfig::Postal(_) | InstanceConfig::Ses(_) => Vec::new(),
        }
    }

    /// The gateway, or `None` for SES: the AWS backend builds those, with its client.
    pub(super) fn build(&self, name: &str) -> Result<Option<Arc<dyn Gateway>>, String> {
        Ok(match self {
            InstanceConfig::Smtp(c) => Some(Arc::new(
                SmtpGateway::new(c.clone())
                    .map_err(|e| format!("gateways.instances.{name}: {e}"))?
                    .named(name),
            )),
            InstanceConfig::Postal(c) => Some(Arc::new(PostalGateway::new(c.clone()).named(name))),
            InstanceConfig::Ses(_) => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_lowercase_and_not_built_in() {
        for good in ["postal-pool-a", "ses-dedicated", "a", "1st"] {
            assert!(is_instance_name(good), "{good}");
        }
        for bad in ["", "-a", "Pool", "pool_a", "pool/a", &"a".repeat(41)] {
            assert!(!is_instance_name(bad), "{bad}");
        }
        let named = |name: &str| {
            let config = serde_json::json!({ name: { "kind": "ses", "configuration_set": "c" } });
            check_names(&serde_json::from_value(config).unwrap())
        };
        assert!(named("ses-dedicated").is_ok());
        assert!(named("ses").unwrap_err().contains("built-in"));
        assert!(named("inbound").unwrap_err().contains("built-in"));
        assert!(named("Pool A").unwrap_err().contains("a-z"));
    }

    #[test]
    fn the_kind_picks_the_settings_and_refuses_what_it_does_not_know() {
        let parse = |v: serde_json::Value| serde_json::from_value::<InstanceConfig>(v);
        let postal = parse(serde_json::json!({
            "kind": "postal", "base_url": "https://p.example.com", "api_key": "k"
        }))
        .unwrap();
        assert_eq!(postal.kind(), POSTAL);
        assert!(parse(serde_json::json!({ "kind": "twilio", "account_sid": "AC1" })).is_err());
        assert!(
            parse(serde_json::json!({ "kind": "ses", "configuration_set": "c",
                                          "colour": "red" }))
            .is_err()
        );
        assert!(parse(serde_json::json!({ "configuration_set": "c" })).is_err());
    }
}
