//! The audit log: who did what to a tenant's setup, when and from where. Entries are appended
//! and never changed; only retention removes old ones.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::suppression::Scope;

/// How long entries are kept: 13 months, so a year's review still finds its whole year.
pub const RETENTION_DAYS: i64 = 400;

/// An entry's id: a UUIDv7, so ids sort by time and a time range is an id range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AuditId(Uuid);

impl AuditId {
    pub fn new() -> AuditId {
        AuditId(Uuid::now_v7())
    }

    pub fn from_uuid(id: Uuid) -> AuditId {
        AuditId(id)
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }

    /// The hyphenated form, and only it.
    pub fn parse(s: &str) -> Option<AuditId> {
        (s.len() == 36).then(|| Uuid::parse_str(s).ok().map(AuditId))?
    }
}

impl Default for AuditId {
    fn default() -> Self {
        AuditId::new()
    }
}

impl std::fmt::Display for AuditId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// Who acted: an API key (by its public prefix, never the key), an operator at the CLI, Herald
/// itself (automatic suppressions, gateway health), or a caller with no valid key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    Key(String),
    Cli(String),
    System,
    Anonymous,
}

impl Actor {
    /// The stored and shown form: `key:<prefix>`, `cli:<user>`, `system`, `anonymous`.
    pub fn label(&self) -> String {
        match self {
            Actor::Key(prefix) => format!("key:{prefix}"),
            Actor::Cli(user) => format!("cli:{user}"),
            Actor::System => "system".into(),
            Actor::Anonymous => "anonymous".into(),
        }
    }

    pub fn parse(s: &str) -> Option<Actor> {
        let named = |rest: &str| {
            let chars = rest.chars().count();
            ((1..=64).contains(&chars) && !rest.contains(char::is_control)).then(|| rest.to_owned())
        };
        match s.split_once(':') {
            Some(("key", prefix)) => named(prefix).map(Actor::Key),
            Some(("cli", user)) => named(user).map(Actor::Cli),
            None if s == "system" => Some(Actor::System),
            None if s == "anonymous" => Some(Actor::Anonymous),
            _ => None,
        }
    }
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum AuditAction {
    #[serde(rename = "key.created")]
    KeyCreated,
    #[serde(rename = "key.revoked")]
    KeyRevoked,
    #[serde(rename = "template.put")]
    TemplatePut,
    #[serde(rename = "template.deleted")]
    TemplateDeleted,
    #[serde(rename = "suppression.added")]
    SuppressionAdded,
    #[serde(rename = "suppression.removed")]
    SuppressionRemoved,
    #[serde(rename = "suppression.imported")]
    SuppressionsImported,
    #[serde(rename = "sender_identity.put")]
    SenderIdentityPut,
    #[serde(rename = "sender_identity.deleted")]
    SenderIdentityDeleted,
    #[serde(rename = "dead_letters.redriven")]
    DeadLettersRedriven,
    #[serde(rename = "message.cancelled")]
    MessageCancelled,
    #[serde(rename = "access.denied")]
    AccessDenied,
    #[serde(rename = "gateway.health_changed")]
    GatewayHealthChanged,
    #[serde(rename = "webhook_endpoint.created")]
    WebhookEndpointCreated,
    #[serde(rename = "webhook_endpoint.updated")]
    WebhookEndpointUpdated,
    #[serde(rename = "webhook_endpoint.deleted")]
    WebhookEndpointDeleted,
    #[serde(rename = "webhook_endpoint.secret_rotated")]
    WebhookSecretRotated,
    #[serde(rename = "webhook_endpoint.disabled")]
    WebhookEndpointDisabled,
    #[serde(rename = "webhook_deliveries.replayed")]
    WebhookReplayed,
    #[serde(rename = "dev_forward.created")]
    DevForwardCreated,
    #[serde(rename = "dev_forward.updated")]
    DevForwardUpdated,
    #[serde(rename = "dev_forward.deleted")]
    DevForwardDeleted,
    #[serde(rename = "contact.merged")]
    ContactMerged,
    #[serde(rename = "inbound_rules.put")]
    InboundRulesPut,
    #[serde(rename = "thread_policy.put")]
    ThreadPolicyPut,
    #[serde(rename = "relay_settings.put")]
    RelaySettingsPut,
    #[serde(rename = "number.added")]
    NumberAdded,
    #[serde(rename = "number.changed")]
    NumberChanged,
    #[serde(rename = "assignment.created")]
    AssignmentCreated,
    #[serde(rename = "assignment.ended")]
    AssignmentEnded,
    /// Where the relay's routing engine sent an inbound text, and why.
    #[serde(rename = "relay.routed")]
    RelayRouted,
    /// A relayed text shared a contact detail; the detail says what the policy did.
    #[serde(rename = "policy.violation")]
    PolicyViolation,
    #[serde(rename = "quiet_hours.put")]
    QuietHoursPut,
    #[serde(rename = "reputation.settings_put")]
    ReputationSettingsPut,
    /// Bounce or complaint rates stopped the tenant's bulk lanes.
    #[serde(rename = "reputation.paused")]
    ReputationPaused,
    #[serde(rename = "reputation.resumed")]
    ReputationResumed,
    #[serde(rename = "template.locale_put")]
    TemplateLocalePut,
    #[serde(rename = "template.locale_deleted")]
    TemplateLocaleDeleted,
    /// A gateway's warm-up schedule did not advance.
    #[serde(rename = "warmup.held")]
    WarmupHeld,
}

impl AuditAction {
    pub const ALL: &'static [AuditAction] = &[
        AuditAction::KeyCreated,
        AuditAction::KeyRevoked,
        AuditAction::TemplatePut,
        AuditAction::TemplateDeleted,
        AuditAction::SuppressionAdded,
        AuditAction::SuppressionRemoved,
        AuditAction::SuppressionsImported,
        AuditAction::SenderIdentityPut,
        AuditAction::SenderIdentityDeleted,
        AuditAction::DeadLettersRedriven,
        AuditAction::MessageCancelled,
        AuditAction::AccessDenied,
        AuditAction::GatewayHealthChanged,
        AuditAction::WebhookEndpointCreated,
        AuditAction::WebhookEndpointUpdated,
        AuditAction::WebhookEndpointDeleted,
        AuditAction::WebhookSecretRotated,
        AuditAction::WebhookEndpointDisabled,
        AuditAction::WebhookReplayed,
        AuditAction::DevForwardCreated,
        AuditAction::DevForwardUpdated,
        AuditAction::DevForwardDeleted,
        AuditAction::ContactMerged,
        AuditAction::InboundRulesPut,
        AuditAction::ThreadPolicyPut,
        AuditAction::RelaySettingsPut,
        AuditAction::NumberAdded,
        AuditAction::NumberChanged,
        AuditAction::AssignmentCreated,
        AuditAction::AssignmentEnded,
        AuditAction::RelayRouted,
        AuditAction::PolicyViolation,
        AuditAction::QuietHoursPut,
        AuditAction::ReputationSettingsPut,
        AuditAction::ReputationPaused,
        AuditAction::ReputationResumed,
        AuditAction::TemplateLocalePut,
        AuditAction::TemplateLocaleDeleted,
        AuditAction::WarmupHeld,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::KeyCreated => "key.created",
            AuditAction::KeyRevoked => "key.revoked",
            AuditAction::TemplatePut => "template.put",
            AuditAction::TemplateDeleted => "template.deleted",
            AuditAction::SuppressionAdded => "suppression.added",
            AuditAction::SuppressionRemoved => "suppression.removed",
            AuditAction::SuppressionsImported => "suppression.imported",
            AuditAction::SenderIdentityPut => "sender_identity.put",
            AuditAction::SenderIdentityDeleted => "sender_identity.deleted",
            AuditAction::DeadLettersRedriven => "dead_letters.redriven",
            AuditAction::MessageCancelled => "message.cancelled",
            AuditAction::AccessDenied => "access.denied",
            AuditAction::GatewayHealthChanged => "gateway.health_changed",
            AuditAction::WebhookEndpointCreated => "webhook_endpoint.created",
            AuditAction::WebhookEndpointUpdated => "webhook_endpoint.updated",
            AuditAction::WebhookEndpointDeleted => "webhook_endpoint.deleted",
            AuditAction::WebhookSecretRotated => "webhook_endpoint.secret_rotated",
            AuditAction::WebhookEndpointDisabled => "webhook_endpoint.disabled",
            AuditAction::WebhookReplayed => "webhook_deliveries.replayed",
            AuditAction::DevForwardCreated => "dev_forward.created",
            AuditAction::DevForwardUpdated => "dev_forward.updated",
            AuditAction::DevForwardDeleted => "dev_forward.deleted",
            AuditAction::ContactMerged => "contact.merged",
            AuditAction::InboundRulesPut => "inbound_rules.put",
            AuditAction::ThreadPolicyPut => "thread_policy.put",
            AuditAction::RelaySettingsPut => "relay_settings.put",
            AuditAction::NumberAdded => "number.added",
            AuditAction::NumberChanged => "number.changed",
            AuditAction::AssignmentCreated => "assignment.created",
            AuditAction::AssignmentEnded => "assignment.ended",
            AuditAction::RelayRouted => "relay.routed",
            AuditAction::PolicyViolation => "policy.violation",
            AuditAction::QuietHoursPut => "quiet_hours.put",
            AuditAction::ReputationSettingsPut => "reputation.settings_put",
            AuditAction::ReputationPaused => "reputation.paused",
            AuditAction::ReputationResumed => "reputation.resumed",
            AuditAction::TemplateLocalePut => "template.locale_put",
            AuditAction::TemplateLocaleDeleted => "template.locale_deleted",
            AuditAction::WarmupHeld => "warmup.held",
        }
    }
}

impl AuditAction {
    pub fn parse(s: &str) -> Option<AuditAction> {
        AuditAction::ALL.iter().copied().find(|a| a.as_str() == s)
    }
}

/// One entry. `scope` is whose log it is in: a tenant's, or the platform's (`Global`) for
/// what belongs to no tenant: an unknown key, a gateway's health.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub id: AuditId,
    pub scope: Scope,
    pub at: DateTime<Utc>,
    pub actor: Actor,
    pub action: AuditAction,
    /// What it was done to: a template name, an address, a message id, a gateway.
    pub target: Option<String>,
    pub detail: serde_json::Value,
    /// The caller's IP address.
    pub client: Option<String>,
    pub request_id: Option<String>,
}

impl AuditEntry {
    /// An entry made now, with no target, detail or request.
    pub fn now(scope: Scope, actor: Actor, action: AuditAction) -> AuditEntry {
        let id = AuditId::new();
        AuditEntry {
            at: time_of(id),
            id,
            scope,
            actor,
            action,
            target: None,
            detail: serde_json::Value::Null,
            client: None,
            request_id: None,
        }
    }

    pub fn target(mut self, target: impl Into<String>) -> AuditEntry {
        self.target = Some(target.into());
        self
    }

    pub fn detail(mut self, detail: serde_json::Value) -> AuditEntry {
        self.detail = detail;
        self
    }
}

/// The time a UUIDv7 id was made, to the millisecond.
fn time_of(id: AuditId) -> DateTime<Utc> {
    let (secs, nanos) = id
        .as_uuid()
        .get_timestamp()
        .map(|t| t.to_unix())
        .unwrap_or_default();
    DateTime::from_timestamp(secs as i64, nanos / 1_000_000 * 1_000_000).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn actors_and_actions_round_trip_their_labels() {
        for actor in [
            Actor::Key("abcd1234".into()),
            Actor::Cli("ops".into()),
            Actor::System,
            Actor::Anonymous,
        ] {
            assert_eq!(Actor::parse(&actor.label()), Some(actor));
        }
        for bad in ["", "key:", "root", "cli:a\nb", "system:x"] {
            assert_eq!(Actor::parse(bad), None, "{bad:?}");
        }
        for action in AuditAction::ALL {
            assert_eq!(AuditAction::parse(action.as_str()), Some(*action));
        }
        assert_eq!(AuditAction::parse("key.deleted"), None);
    }

    #[test]
    fn an_entry_is_dated_by_its_id() {
        let before = Utc::now() - chrono::Duration::milliseconds(1);
        let e = AuditEntry::now(Scope::Global, Actor::System, AuditAction::KeyCreated);
        assert!(e.at >= before && e.at <= Utc::now(), "{}", e.at);
        assert_eq!(AuditId::parse(&e.id.to_string()), Some(e.id));
        assert_eq!(AuditId::parse(&e.id.as_uuid().simple().to_string()), None);
    }
}
