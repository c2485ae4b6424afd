//! Names of the stack's tables and queues, from the environment the SAM template sets
//! (see docs/aws-contract.md), or derived from a stack name for the CLI.

use std::time::Duration;

use std::collections::BTreeMap;

use crate::domain::deliverability::unsubscribe::UnsubscribeKeys;
use crate::domain::deliverability::warmup::WarmupSchedule;
use crate::domain::limits::RateLimits;
use crate::domain::media::MediaPolicy;
use crate::domain::Priority;
use crate::engine::notify::DevAllowList;
use crate::gateway::config::GatewaysConfig;
use crate::webhooks::WebhooksConfig;

/// The DynamoDB tables. A function only needs the ones it uses; using one that is not set
/// is a clear error at the first call.
#[derive(Debug, Clone, Default)]
pub struct Tables {
    pub messages: Option<String>,
    pub idempotency: Option<String>,
    pub templates: Option<String>,
    pub tenants: Option<String>,
    pub bulk: Option<String>,
    pub suppressions: Option<String>,
    pub rate_limits: Option<String>,
    pub health: Option<String>,
    /// Messages received from recipients (SMS, WhatsApp, Telegram).
    pub inbound: Option<String>,
    /// The audit log.
    pub audit: Option<String>,
    /// Tenants' webhook endpoints, and their deliveries with attempts.
    pub webhook_endpoints: Option<String>,
    pub webhook_deliveries: Option<String>,
    /// Tenants' contacts and whose each identity is.
    pub contacts: Option<String>,
}

/// The lane queues (P0..P4) and the bulk queue.
#[derive(Debug, Clone, Default)]
pub struct Queues {
    pub lanes: [Option<String>; 5],
    pub bulk: Option<String>,
    /// Webhooks out, first tries: events and new deliveries for the `notify` function, on a
    /// FIFO queue grouped by message (events) and by endpoint (deliveries), so an endpoint
    /// hears a message's events in order, and others' in order as far as concurrency allows.
    pub notify_ordered: Option<String>,
    /// Webhooks out, retries: a delivery whose try failed waits here (a standard queue,
    /// hidden until its next try), so it holds up no later event to its endpoint.
    pub notify: Option<String>,
    /// Inbound messages stored and waiting for the `inbound` function.
    pub inbound: Option<String>,
}

#[derive(Debug, Clone)]
pub struct SesSettings {
    /// Its event destination carries bounces, complaints and deliveries back to Herald.
    pub configuration_set: Option<String>,
    /// The sender when a message names none.
    pub default_from: Option<String>,
}

#[derive(Debug, Clone)]
pub struct AwsSettings {
    pub tables: Tables,
    pub queues: Queues,
    /// The lanes' redrive `maxReceiveCount`: a retry that would reach it is queued afresh.
    pub max_receive_count: u32,
    pub ses: Option<SesSettings>,
    /// How long final messages are kept (the messages table's TTL).
    pub retention: Duration,
    /// This function's lane (the `dispatch` function is deployed once per lane).
    pub lane: Option<Priority>,
    /// `HERALD_RATE_LIMITS`: the paces as JSON (the `[rate_limits]` of herald.toml).
    pub rate_limits: RateLimits,
    /// `HERALD_GATEWAYS`: provider gateways beside SES and the order per channel, as JSON
    /// (the `[gateways]` of herald.toml; secrets as `{"env": "NAME"}`).
    pub gateways: GatewaysConfig,
    /// `HERALD_WEBHOOKS`: what the provider webhooks accept, as JSON (the `[webhooks]` of
    /// herald.toml; secrets as `{"env": "NAME"}`). Only the `webhooks` function reads it.
    pub webhooks: WebhooksConfig,
    /// `HERALD_DEV_FORWARD_ALLOW`: addresses or CIDR blocks, comma-separated, that development
    /// forwards may reach beyond public https (the `notify` function reads it).
    pub dev_forward_allow: DevAllowList,
    /// `HERALD_MEDIA_BUCKET`: where inbound media is stored.
    pub media_bucket: Option<String>,
    /// `HERALD_MEDIA`: what media is stored and for how long, as JSON (the `[media]` of
    /// herald.toml).
    pub media: MediaPolicy,
    /// `HERALD_PUBLIC_URL` (the API's public address) and `HERALD_UNSUBSCRIBE_KEYS` (keys of
    /// at least 32 characters, comma-separated, newest first): Herald's one-click unsubscribe
    /// links, left out of email without both.
    pub unsubscribe: crate::engine::unsubscribe::UnsubscribeConfig,
    /// `HERALD_WARMUP`: warm-up schedules by gateway name, as JSON (the `[warmup]` of
    /// herald.toml).
    pub warmups: BTreeMap<String, WarmupSchedule>,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{name} must be {what}, not {value:?}")]
    Invalid {
        name: &'static str,
        what: &'static str,
        value: String,
    },
    #[error("{0} is not set")]
    Missing(&'static str),
}

pub const MESSAGES_TABLE: &str = "HERALD_MESSAGES_TABLE";
pub const IDEMPOTENCY_TABLE: &str = "HERALD_IDEMPOTENCY_TABLE";
pub const TEMPLATES_TABLE: &str = "HERALD_TEMPLATES_TABLE";
pub const TENANTS_TABLE: &str = "HERALD_TENANTS_TABLE";
pub const BULK_TABLE: &str = "HERALD_BULK_TABLE";
pub const SUPPRESSIONS_TABLE: &str = "HERALD_SUPPRESSIONS_TABLE";
pub const RATE_LIMITS_TABLE: &str = "HERALD_RATE_LIMITS_TABLE";
pub const HEALTH_TABLE: &str = "HERALD_HEALTH_TABLE";
pub const INBOUND_TABLE: &str = "HERALD_INBOUND_TABLE";
pub const AUDIT_TABLE: &str = "HERALD_AUDIT_TABLE";
pub const WEBHOOK_ENDPOINTS_TABLE: &str = "HERALD_WEBHOOK_ENDPOINTS_TABLE";
pub const WEBHOOK_DELIVERIES_TABLE: &str = "HERALD_WEBHOOK_DELIVERIES_TABLE";
pub const CONTACTS_TABLE: &str = "HERALD_CONTACTS_TABLE";
pub const NOTIFY_QUEUE_URL: &str = "HERALD_NOTIFY_QUEUE_URL";
pub const NOTIFY_ORDERED_QUEUE_URL: &str = "HERALD_NOTIFY_ORDERED_QUEUE_URL";
pub const WEBHOOKS: &str = "HERALD_WEBHOOKS";
pub const BULK_QUEUE_URL: &str = "HERALD_BULK_QUEUE_URL";
pub const INBOUND_QUEUE_URL: &str = "HERALD_INBOUND_QUEUE_URL";
pub const DEV_FORWARD_ALLOW: &str = "HERALD_DEV_FORWARD_ALLOW";
pub const LANE_QUEUE_URLS: [&str; 5] = [
    "HERALD_QUEUE_URL_P0",
    "HERALD_QUEUE_URL_P1",
    "HERALD_QUEUE_URL_P2",
    "HERALD_QUEUE_URL_P3",
    "HERALD_QUEUE_URL_P4",
];

impl AwsSettings {
    /// Reads the settings from environment variables through `var` (the process environment
    /// in a function's main; a map in tests).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<AwsSettings, SettingsError> {
        let get = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let number = |name: &'static str, default: u64| -> Result<u64, SettingsError> {
            match get(name) {
                None => Ok(default),
                Some(v) => v.trim().parse().map_err(|_| SettingsError::Invalid {
                    name,
                    what: "a whole number",
                    value: v,
                }),
            }
        };
        let lane = match get("HERALD_LANE") {
            None => None,
            Some(v) => Some(Priority::parse(v.trim()).ok_or(SettingsError::Invalid {
                name: "HERALD_LANE",
                what: "one of P0, P1, P2, P3, P4",
                value: v,
            })?),
        };
        let configuration_set = get("HERALD_SES_CONFIGURATION_SET");
        let default_from = get("HERALD_SES_FROM");
        let ses = (configuration_set.is_some() || default_from.is_some()).then_some(SesSettings {
            configuration_set,
            default_from,
        });
        let rate_limits = json_setting(
            get("HERALD_RATE_LIMITS"),
            "HERALD_RATE_LIMITS",
            "JSON like {\"gateways\":{\"ses\":{\"per_second\":14}}}",
            ("valid paces", RateLimits::validate),
        )?;
        let gateways = json_setting(
            get("HERALD_GATEWAYS"),
            "HERALD_GATEWAYS",
            "JSON like {\"twilio\":{\"account_sid\":\"AC…\",\"auth_token\":{\"env\":\"TWILIO_AUTH_TOKEN\"},\"from\":\"+1…\"}}",
            ("gateways", |_: &GatewaysConfig| Ok(())),
        )?;
        let webhooks = json_setting(
            get(WEBHOOKS),
            WEBHOOKS,
            "JSON like {\"public_base_url\":\"https://…\",\"twilio\":{\"auth_token\":{\"env\":\"TWILIO_AUTH_TOKEN\"}}}",
            ("valid webhook settings", WebhooksConfig::validate),
        )?;
        Ok(AwsSettings {
            tables: Tables {
                messages: get(MESSAGES_TABLE),
                idempotency: get(IDEMPOTENCY_TABLE),
                templates: get(TEMPLATES_TABLE),
                tenants: get(TENANTS_TABLE),
                bulk: get(BULK_TABLE),
                suppressions: get(SUPPRESSIONS_TABLE),
                rate_limits: get(RATE_LIMITS_TABLE),
                health: get(HEALTH_TABLE),
                inbound: get(INBOUND_TABLE),
                audit: get(AUDIT_TABLE),
                webhook_endpoints: get(WEBHOOK_ENDPOINTS_TABLE),
                webhook_deliveries: get(WEBHOOK_DELIVERIES_TABLE),
                contacts: get(CONTACTS_TABLE),
            },
            queues: Queues {
                lanes: LANE_QUEUE_URLS.map(get),
                bulk: get(BULK_QUEUE_URL),
                notify_ordered: get(NOTIFY_ORDERED_QUEUE_URL),
                notify: get(NOTIFY_QUEUE_URL),
                inbound: get(INBOUND_QUEUE_URL),
            },
            max_receive_count: number("HERALD_MAX_RECEIVE_COUNT", 5)?.clamp(1, 1000) as u32,
            ses,
            retention: Duration::from_secs(number("HERALD_RETENTION_DAYS", 30)? * 24 * 3600),
            lane,
            rate_limits,
            gateways,
            webhooks,
            dev_forward_allow: dev_forward_allow(get(DEV_FORWARD_ALLOW))?,
            media_bucket: get("HERALD_MEDIA_BUCKET"),
            media: json_setting(
                get("HERALD_MEDIA"),
                "HERALD_MEDIA",
                "JSON like {\"max_file_bytes\":10485760,\"retention_days\":90}",
                ("a media policy", MediaPolicy::validate),
            )?,
            unsubscribe: unsubscribe(get("HERALD_PUBLIC_URL"), get("HERALD_UNSUBSCRIBE_KEYS"))?,
            warmups: json_setting(
                get("HERALD_WARMUP"),
                "HERALD_WARMUP",
                "JSON like {\"ses\":{\"start\":\"2027-01-04\",\"target_per_day\":100000}}",
                (
                    "warm-up schedules",
                    |w: &BTreeMap<String, WarmupSchedule>| {
                        w.values().try_for_each(WarmupSchedule::validate)
                    },
                ),
            )?,
        })
    }

    pub fn from_env() -> Result<AwsSettings, SettingsError> {
        AwsSettings::from_vars(|name| std::env::var(name).ok())
    }
}

fn dev_forward_allow(value: Option<String>) -> Result<DevAllowList, SettingsError> {
    let Some(v) = value else {
        return Ok(DevAllowList::default());
    };
    let blocks: Vec<&str> = v
        .split(',')
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .collect();
    DevAllowList::parse(&blocks).map_err(|_| SettingsError::Invalid {
        name: DEV_FORWARD_ALLOW,
        what: "addresses or CIDR blocks, comma-separated",
        value: v.clone(),
    })
}

/// A setting given as JSON: absent is the default; unreadable JSON (`example` says what is
/// expected) or a value `validate` refuses names the variable.
fn json_setting<T: serde::de::DeserializeOwned + Default>(
    value: Option<String>,
    name: &'static str,
    example: &'static str,
    (valid, validate): (&'static str, impl Fn(&T) -> Result<(), String>),
) -> Result<T, SettingsError> {
    let Some(json) = value else {
        return Ok(T::default());
    };
    let parsed: T = serde_json::from_str(&json).map_err(|e| SettingsError::Invalid {
        name,
        what: example,
        value: e.to_string(),
    })?;
    validate(&parsed).map_err(|value| SettingsError::Invalid {
        name,
        what: valid,
        value,
    })?;
    Ok(parsed)
}

impl Tables {
    /// The table names `infra/template.yaml` gives a stack: `<stack>-<table>`.
    pub fn of_stack(stack: &str) -> Tables {
        let name = |t: &str| Some(format!("{stack}-{t}"));
        Tables {
            messages: name("messages"),
            idempotency: name("idempotency"),
            templates: name("templates"),
            tenants: name("tenants"),
            bulk: name("bulk"),
            suppressions: name("suppressions"),
            rate_limits: name("rate-limits"),
            health: name("health"),
            inbound: name("inbound"),
            audit: name("audit"),
            webhook_endpoints: name("webhook-endpoints"),
            webhook_deliveries: name("webhook-deliveries"),
            contacts: name("contacts"),
        }
    }
}

/// A table or queue name that must be set for the call at hand.
pub(crate) fn required<'a>(
    value: &'a Option<String>,
    name: &'static str,
) -> Result<&'a str, crate::ports::StoreError> {
    value
        .as_deref()
        .ok_or_else(|| crate::ports::StoreError::Unavailable(format!("{name} is not set")))
}

/// The unsubscribe links' base URL and keys.
fn unsubscribe(
    base_url: Option<String>,
    keys: Option<String>,
) -> Result<crate::engine::unsubscribe::UnsubscribeConfig, SettingsError> {
    let raw = keys.unwrap_or_default();
    let list: Vec<Vec<u8>> = raw
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(|k| k.as_bytes().to_vec())
        .collect();
    let keys = UnsubscribeKeys::new(list).map_err(|_| SettingsError::Invalid {
        name: "HERALD_UNSUBSCRIBE_KEYS",
        what: "keys of at least 32 characters, comma-separated",
        value: "(not shown)".into(),
    })?;
    Ok(crate::engine::unsubscribe::UnsubscribeConfig {
        base_url: base_url.map(|u| u.trim().trim_end_matches('/').to_owned()),
        keys,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn reads_names_and_rejects_bad_numbers() {
        let env: HashMap<&str, &str> = [
            (MESSAGES_TABLE, "herald-dev-messages"),
            ("HERALD_QUEUE_URL_P3", "http://q/p3"),
            ("HERALD_LANE", "P3"),
            ("HERALD_SES_FROM", "news@example.com"),
        ]
        .into();
        let s = AwsSettings::from_vars(|k| env.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(s.tables.messages.as_deref(), Some("herald-dev-messages"));
        assert_eq!(s.queues.lanes[3].as_deref(), Some("http://q/p3"));
        assert_eq!(s.queues.lanes[0], None);
        assert_eq!(s.lane, Some(Priority::P3));
        assert_eq!(s.max_receive_count, 5);
        assert_eq!(
            s.ses.and_then(|s| s.default_from).as_deref(),
            Some("news@example.com")
        );

        let bad =
            AwsSettings::from_vars(|k| (k == "HERALD_MAX_RECEIVE_COUNT").then(|| "five".into()));
        assert!(matches!(bad, Err(SettingsError::Invalid { .. })));
        let bad_lane = AwsSettings::from_vars(|k| (k == "HERALD_LANE").then(|| "P9".into()));
        assert!(bad_lane.is_err());
    }

    #[test]
    fn reads_webhooks_and_names_the_variable_when_wrong() {
        let with = |json: &'static str| {
            AwsSettings::from_vars(move |k| (k == WEBHOOKS).then(|| json.to_owned()))
        };
        let none = AwsSettings::from_vars(|_| None).unwrap();
        assert!(none.webhooks.twilio.is_none());
        assert!(none.webhooks.numbers.is_empty());

        // A secret named by a variable (PATH is always set) and a receiving number.
        let s = with(
            r#"{"public_base_url":"https://herald.example.com",
                "twilio":{"auth_token":{"env":"PATH"}},
                "numbers":[{"number":"+15557654321","tenant":"acme"}]}"#,
        )
        .unwrap();
        let twilio = s.webhooks.twilio.as_ref().unwrap();
        assert!(!twilio.auth_token.expose().is_empty());
        assert_eq!(
            s.webhooks.number("15557654321").unwrap().tenant.as_str(),
            "acme"
        );

        for bad in [
            "{not json",
            r#"{"twilio":{"auth_token":"t"}}"#, // Twilio signs the public URL: it is needed
            r#"{"telegram":{"secret_token":{"env":"HERALD_TEST_NO_SUCH_VARIABLE"},"tenant":"acme"}}"#,
            r#"{"unknown":1}"#,
        ] {
            match with(bad) {
                Err(e @ SettingsError::Invalid { .. }) => {
                    assert!(e.to_string().starts_with(WEBHOOKS), "{bad}: {e}")
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
