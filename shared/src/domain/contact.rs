//! A tenant's contacts: the people it talks with, each known by one or more identities (an
//! email address, a phone number, a WhatsApp number, a Telegram chat). An identity belongs to
//! one contact per tenant.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::notify::v7_id;
use super::{EmailAddress, FieldError, PhoneNumber, TelegramChat, TenantId};

v7_id!(
    /// A contact's id.
    ContactId
);

/// The most identities a contact has.
pub const MAX_IDENTITIES: usize = 20;
/// The longest `name` and `external_id`, in characters.
pub const MAX_NAME: usize = 200;
/// The most bytes of a contact's `metadata`, as JSON.
pub const MAX_METADATA_BYTES: usize = 4096;

/// The kinds of identity a contact may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum IdentityKind {
    /// An email address.
    Email,
    /// An E.164 number, for SMS.
    Phone,
    /// An E.164 number on WhatsApp.
    Whatsapp,
    /// A Telegram chat id or @username.
    Telegram,
}

impl IdentityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityKind::Email => "email",
            IdentityKind::Phone => "phone",
            IdentityKind::Whatsapp => "whatsapp",
            IdentityKind::Telegram => "telegram",
        }
    }

    /// The kind of identity a channel reaches a contact by (push has none: a device token is
    /// not a person's).
    pub fn for_channel(channel: super::Channel) -> Option<IdentityKind> {
        use super::Channel;
        match channel {
            Channel::Email => Some(IdentityKind::Email),
            Channel::Sms => Some(IdentityKind::Phone),
            Channel::Whatsapp => Some(IdentityKind::Whatsapp),
            Channel::Telegram => Some(IdentityKind::Telegram),
            Channel::Push => None,
        }
    }

    pub fn parse(raw: &str) -> Option<IdentityKind> {
        [
            IdentityKind::Email,
            IdentityKind::Phone,
            IdentityKind::Whatsapp,
            IdentityKind::Telegram,
        ]
        .into_iter()
        .find(|k| k.as_str() == raw)
    }
}

/// How Herald knows a contact on a channel.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    Email(EmailAddress),
    Phone(PhoneNumber),
    WhatsApp(PhoneNumber),
    Telegram(TelegramChat),
}

impl Identity {
    /// Parses `value` as an identity of `kind` (`email`, `phone`, `whatsapp`, `telegram`).
    pub fn parse(kind: &str, value: &str) -> Result<Identity, String> {
        let kind =
            IdentityKind::parse(kind).ok_or("kind must be email, phone, whatsapp or telegram")?;
        Identity::of(kind, value)
    }

    /// Parses `value` as an identity of `kind`.
    pub fn of(kind: IdentityKind, value: &str) -> Result<Identity, String> {
        let bad = |e: super::AddressError| e.to_string();
        match kind {
            IdentityKind::Email => EmailAddress::parse(value).map(Identity::Email).map_err(bad),
            IdentityKind::Phone => PhoneNumber::parse(value).map(Identity::Phone).map_err(bad),
            IdentityKind::Whatsapp => PhoneNumber::parse(value)
                .map(Identity::WhatsApp)
                .map_err(bad),
            IdentityKind::Telegram => TelegramChat::parse(value)
                .map(Identity::Telegram)
                .map_err(bad),
        }
    }

    pub fn kind(&self) -> &'static str {
        self.identity_kind().as_str()
    }

    pub fn identity_kind(&self) -> IdentityKind {
        match self {
            Identity::Email(_) => IdentityKind::Email,
            Identity::Phone(_) => IdentityKind::Phone,
            Identity::WhatsApp(_) => IdentityKind::Whatsapp,
            Identity::Telegram(_) => IdentityKind::Telegram,
        }
    }

    pub fn value(&self) -> &str {
        match self {
            Identity::Email(a) => a.as_str(),
            Identity::Phone(n) | Identity::WhatsApp(n) => n.as_str(),
            Identity::Telegram(c) => c.as_str(),
        }
    }

    /// What makes two identities the same person: `kind:value`, an email address in lower
    /// case (mail systems treat `Ann@` and `ann@` as one mailbox).
    pub fn key(&self) -> String {
        match self {
            Identity::Email(a) => format!("email:{}", a.as_str().to_lowercase()),
            other => format!("{}:{}", other.kind(), other.value()),
        }
    }

    /// The same number on the other phone channel: a WhatsApp message from a contact's SMS
    /// number (or the other way round) is most likely from that contact.
    pub fn sibling(&self) -> Option<Identity> {
        match self {
            Identity::Phone(n) => Some(Identity::WhatsApp(n.clone())),
            Identity::WhatsApp(n) => Some(Identity::Phone(n.clone())),
            _ => None,
        }
    }

    /// Reads an identity back from its parts as stored (they were parsed before).
    pub fn stored(kind: &str, value: &str) -> Option<Identity> {
        Identity::parse(kind, value).ok()
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind(), self.value())
    }
}

/// A contact.
#[derive(Debug, Clone, PartialEq)]
pub struct Contact {
    pub id: ContactId,
    pub tenant: TenantId,
    pub fields: ContactFields,
    /// In the order they were added.
    pub identities: Vec<Identity>,
    /// Set when this contact was merged into another: its identities moved there.
    pub merged_into: Option<ContactId>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What the platform sets on a contact.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContactFields {
    pub name: Option<String>,
    /// The platform's own id for the person.
    pub external_id: Option<String>,
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

impl ContactFields {
    /// The contact's `metadata.locale`, when it is a locale.
    pub fn locale(&self) -> Option<super::locale::Locale> {
        let raw = self.metadata.get("locale")?.as_str()?;
        super::locale::Locale::parse(raw).ok()
    }

    /// The contact's `metadata.timezone`, when it is an IANA zone.
    pub fn timezone(&self) -> Option<chrono_tz::Tz> {
        self.metadata.get("timezone")?.as_str()?.parse().ok()
    }

    /// Checks the limits; the error points at the field.
    pub fn check(&self) -> Result<(), FieldError> {
        for (field, value) in [("name", &self.name), ("external_id", &self.external_id)] {
            if let Some(v) = value {
                if v.chars().count() > MAX_NAME || v.chars().any(char::is_control) {
                    let detail =
                        format!("at most {MAX_NAME} characters, none of them control characters");
                    return Err(FieldError::new(format!("/{field}"), "invalid", detail));
                }
            }
        }
        let size = serde_json::to_string(&self.metadata).map_or(usize::MAX, |s| s.len());
        if size > MAX_METADATA_BYTES {
            let detail = format!("at most {MAX_METADATA_BYTES} bytes of JSON");
            return Err(FieldError::new("/metadata", "too_large", detail));
        }
        Ok(())
    }
}

impl Contact {
    pub fn new(tenant: TenantId, fields: ContactFields, identities: Vec<Identity>) -> Contact {
        let now = Utc::now();
        Contact {
            id: ContactId::new(),
            tenant,
            fields,
            identities,
            merged_into: None,
            created_at: now,
            updated_at: now,
        }
    }
}

/// Why a change to contacts was refused.
#[derive(Debug, thiserror::Error)]
pub enum ContactError {
    #[error("{identity} belongs to contact {owner}")]
    Taken { identity: String, owner: ContactId },
    #[error("no such contact")]
    NotFound,
    #[error("a contact has at most {MAX_IDENTITIES} identities")]
    TooManyIdentities,
    #[error("a contact cannot be merged into itself, or into or from a merged contact")]
    CannotMerge,
    #[error("the contact was merged into {0}")]
    Merged(ContactId),
    #[error(transparent)]
    Store(#[from] crate::ports::StoreError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_parse_by_kind_and_key_emails_without_case() {
        let a = Identity::parse("email", "Ann@Example.com").expect("email");
        let b = Identity::parse("email", "ann@example.com").expect("email");
        assert_eq!(a.key(), b.key());
        assert_eq!(a.key(), "email:ann@example.com");
        let p = Identity::parse("phone", "+1 (415) 555-0100").expect("phone");
        assert_eq!(p.to_string(), "phone:+14155550100");
        assert_ne!(
            p.key(),
            Identity::parse("whatsapp", "+14155550100")
                .expect("wa")
                .key()
        );
        assert!(Identity::parse("fax", "1").is_err());
        assert!(Identity::parse("phone", "555").is_err());
        assert!(Identity::parse("telegram", "@ab").is_err());
    }

    #[test]
    fn fields_are_bounded() {
        let mut f = ContactFields::default();
        assert!(f.check().is_ok());
        f.name = Some("x".repeat(MAX_NAME + 1));
        assert_eq!(f.check().map_err(|e| e.pointer), Err("/name".into()));
        f.name = None;
        f.metadata
            .insert("k".into(), "v".repeat(MAX_METADATA_BYTES).into());
        assert_eq!(f.check().map_err(|e| e.pointer), Err("/metadata".into()));
    }
}
