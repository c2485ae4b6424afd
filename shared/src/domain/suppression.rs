//! The suppression list: addresses Herald must not send to, globally or for one tenant, with
//! why and until when.

use crate::domain::FieldError;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Channel, TenantId};

/// Whose list an entry is on. A mailbox that does not exist, or a dead push token, is dead for
/// every tenant; a complaint or an opt-out is about one sender.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Global,
    Tenant(TenantId),
}

impl Scope {
    /// The stored form: `*` cannot be a tenant name, so it never collides with one.
    pub fn key(&self) -> &str {
        match self {
            Scope::Global => "*",
            Scope::Tenant(t) => t.as_str(),
        }
    }

    pub fn from_key(key: &str) -> Option<Scope> {
        match key {
            "*" => Some(Scope::Global),
            t => TenantId::parse(t).ok().map(Scope::Tenant),
        }
    }

    /// As the API names it.
    pub fn label(&self) -> &str {
        match self {
            Scope::Global => "global",
            Scope::Tenant(t) => t.as_str(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    HardBounce,
    Complaint,
    Unsubscribe,
    SmsOptOut,
    SoftBounceStrikes,
    Manual,
    InvalidToken,
}

impl Reason {
    pub const ALL: [Reason; 7] = [
        Reason::HardBounce,
        Reason::Complaint,
        Reason::Unsubscribe,
        Reason::SmsOptOut,
        Reason::SoftBounceStrikes,
        Reason::Manual,
        Reason::InvalidToken,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::HardBounce => "hard_bounce",
            Reason::Complaint => "complaint",
            Reason::Unsubscribe => "unsubscribe",
            Reason::SmsOptOut => "sms_opt_out",
            Reason::SoftBounceStrikes => "soft_bounce_strikes",
            Reason::Manual => "manual",
            Reason::InvalidToken => "invalid_token",
        }
    }

    pub fn parse(s: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// One entry. `address` is in the channel's canonical form (see [`canonical_address`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suppression {
    pub scope: Scope,
    pub channel: Channel,
    pub address: String,
    pub reason: Reason,
    /// What added it: a provider event id, "api", "import", "cli".
    pub source: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl Suppression {
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }
}

/// An entry's channel and address as a person gives them, parsed, in the form entries are
/// matched in.
pub fn entry_address(channel: &str, address: &str) -> Result<(Channel, String), FieldError> {
    let channel = Channel::parse(channel).ok_or_else(|| {
        FieldError::new(
            "/channel",
            "invalid",
            format!("unknown channel {channel:?}"),
        )
    })?;
    let parsed = channel
        .parse_recipient(address)
        .map_err(|e| FieldError::new("/address", e.code(), e.to_string()))?;
    Ok((channel, canonical_address(channel, parsed.as_str())))
}

/// The form an address is matched in: email case-insensitively (mailbox providers treat the
/// local part so, whatever RFC 5321 allows), numbers and tokens exactly.
pub fn canonical_address(channel: Channel, address: &str) -> String {
    match channel {
        Channel::Email => address.trim().to_ascii_lowercase(),
        Channel::Sms | Channel::Push | Channel::Whatsapp | Channel::Telegram => {
            address.trim().to_owned()
        }
    }
}

/// A list a recipient can leave without leaving everything (`newsletter`, `offers`): 1-64
/// lowercase letters, digits, `_`, `-` or `.`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Topic(String);

impl Topic {
    pub fn parse(raw: &str) -> Result<Topic, String> {
        let ok = (1..=64).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.".contains(&b));
        ok.then(|| Topic(raw.to_owned())).ok_or_else(|| {
            format!("`{raw}` is not a topic: 1-64 lowercase letters, digits, `_`, `-` or `.`")
        })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Topic {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Topic::parse(&s)
    }
}

impl From<Topic> for String {
    fn from(t: Topic) -> String {
        t.0
    }
}

impl std::fmt::Display for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a topic's entry is kept: beside the address's own, under the address and the topic
/// (a space cannot be in a canonical address, so the two never collide).
pub fn topic_key(address: &str, topic: &Topic) -> String {
    format!("{address} topic:{topic}")
}

/// A stored address and the topic its entry is for, if any.
pub fn split_topic(key: &str) -> (&str, Option<&str>) {
    match key.split_once(" topic:") {
        Some((address, topic)) => (address, Some(topic)),
        None => (key, None),
    }
}

/// Soft bounces to the same address that add it to the list, within [`SOFT_BOUNCE_WINDOW_DAYS`].
pub const SOFT_BOUNCE_STRIKES: u32 = 3;
pub const SOFT_BOUNCE_WINDOW_DAYS: i64 = 30;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_and_reasons_round_trip() {
        let acme = Scope::Tenant(TenantId::parse("acme").unwrap());
        assert_eq!(Scope::from_key(acme.key()), Some(acme.clone()));
        assert_eq!(Scope::from_key(Scope::Global.key()), Some(Scope::Global));
        assert_eq!(Scope::from_key("Not A Tenant"), None);
        for r in Reason::ALL {
            assert_eq!(Reason::parse(r.as_str()), Some(r));
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
    }

    #[test]
    fn email_matches_ignore_case() {
        assert_eq!(
            canonical_address(Channel::Email, " Ann@Example.COM"),
            "ann@example.com"
        );
        assert_eq!(
            canonical_address(Channel::Sms, "+15005550006"),
            "+15005550006"
        );
    }
}
