//! Sender identities: the `from` values a tenant may send as. A tenant with none configured
//! cannot set `from` at all (the gateway's default sender is used), so one tenant can never
//! send as another's brand or number.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::address::normalize_domain;
use super::{Channel, EmailAddress, PhoneNumber};

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum SenderIdentity {
    /// Every address at this domain (exactly this domain, not its subdomains).
    EmailDomain(String),
    EmailAddress(String),
    /// An E.164 number, for SMS and WhatsApp.
    Phone(String),
    /// An alphanumeric SMS sender id (1-11 characters, at least one letter).
    SmsSenderId(String),
}

impl SenderIdentity {
    /// `alerts@example.com`, `example.com`, `+15551234567` or `ACME`.
    pub fn parse(raw: &str) -> Result<SenderIdentity, String> {
        let raw = raw.trim();
        if raw.contains('@') {
            let a = EmailAddress::parse(raw).map_err(|e| e.to_string())?;
            return Ok(SenderIdentity::EmailAddress(a.to_string()));
        }
        if raw.starts_with('+') {
            let n = PhoneNumber::parse(raw).map_err(|e| e.to_string())?;
            return Ok(SenderIdentity::Phone(n.to_string()));
        }
        if raw.contains('.') {
            let d = normalize_domain(raw).map_err(|e| e.to_string())?;
            return Ok(SenderIdentity::EmailDomain(d));
        }
        if is_sender_id(raw) {
            return Ok(SenderIdentity::SmsSenderId(raw.to_owned()));
        }
        Err("a sender identity is an email address, a domain, an E.164 number or an alphanumeric SMS sender id".into())
    }

    pub fn as_str(&self) -> &str {
        match self {
            SenderIdentity::EmailDomain(s)
            | SenderIdentity::EmailAddress(s)
            | SenderIdentity::Phone(s)
            | SenderIdentity::SmsSenderId(s) => s,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            SenderIdentity::EmailDomain(_) => "email_domain",
            SenderIdentity::EmailAddress(_) => "email_address",
            SenderIdentity::Phone(_) => "phone",
            SenderIdentity::SmsSenderId(_) => "sms_sender_id",
        }
    }

    /// Whether a `from` (already parsed for `channel` at the edge) is this identity's.
    pub fn allows(&self, channel: Channel, from: &str) -> bool {
        match (self, channel) {
            (SenderIdentity::EmailAddress(a), Channel::Email) => a == from,
            (SenderIdentity::EmailDomain(d), Channel::Email) => {
                from.rsplit_once('@').is_some_and(|(_, domain)| domain == d)
            }
            (SenderIdentity::Phone(n), Channel::Sms | Channel::Whatsapp) => n == from,
            (SenderIdentity::SmsSenderId(id), Channel::Sms) => id.eq_ignore_ascii_case(from),
            _ => false,
        }
    }
}

/// Whether a channel's `from` names a sender (push's is a display label, not an identity).
pub fn needs_identity(channel: Channel) -> bool {
    !matches!(channel, Channel::Push)
}

fn is_sender_id(raw: &str) -> bool {
    !raw.is_empty()
        && raw.len() <= 11
        && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b' ')
        && raw.bytes().any(|b| b.is_ascii_alphabetic())
}

impl TryFrom<String> for SenderIdentity {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        SenderIdentity::parse(&s)
    }
}

impl From<SenderIdentity> for String {
    fn from(s: SenderIdentity) -> String {
        s.as_str().to_owned()
    }
}

impl fmt::Display for SenderIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_parse_by_shape() {
        let kinds: Vec<&str> = ["alerts@Example.com", "Example.COM", "+15551234567", "ACME"]
            .iter()
            .map(|r| SenderIdentity::parse(r).unwrap().kind())
            .collect();
        assert_eq!(
            kinds,
            ["email_address", "email_domain", "phone", "sms_sender_id"]
        );
        assert_eq!(
            SenderIdentity::parse("Example.COM").unwrap().as_str(),
            "example.com"
        );
        for bad in ["", "not a domain!", "+12", "ABCDEFGHIJKLMNOP", "a@"] {
            assert!(SenderIdentity::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_identity_allows_only_its_own_senders() {
        let domain = SenderIdentity::parse("acme.com").unwrap();
        assert!(domain.allows(Channel::Email, "ceo@acme.com"));
        assert!(!domain.allows(Channel::Email, "ceo@other-tenant-brand.com"));
        assert!(!domain.allows(Channel::Email, "ceo@evil.acme.com.attacker.io"));
        assert!(
            !domain.allows(Channel::Email, "ceo@mail.acme.com"),
            "not subdomains"
        );
        let phone = SenderIdentity::parse("+15551234567").unwrap();
        assert!(phone.allows(Channel::Sms, "+15551234567"));
        assert!(phone.allows(Channel::Whatsapp, "+15551234567"));
        assert!(!phone.allows(Channel::Email, "+15551234567"));
        let id = SenderIdentity::parse("ACME").unwrap();
        assert!(id.allows(Channel::Sms, "Acme"));
        assert!(!id.allows(Channel::Whatsapp, "ACME"));
    }
}
