use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::address::{AddressError, DeviceToken, EmailAddress, PhoneNumber, TelegramChat};

/// A delivery channel. Adding one means a variant here, its address kind in [`Recipient`], its
/// content rules, and a gateway that declares it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Email,
    Sms,
    Push,
    Whatsapp,
    Telegram,
}

impl Channel {
    pub const ALL: [Channel; 5] = [
        Channel::Email,
        Channel::Sms,
        Channel::Push,
        Channel::Whatsapp,
        Channel::Telegram,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::Push => "push",
            Channel::Whatsapp => "whatsapp",
            Channel::Telegram => "telegram",
        }
    }

    pub fn parse(s: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Parses a recipient address in the form this channel expects.
    /// The recipient as Herald stores it, for a search: an address or number in the form
    /// accept would have given it, anything else as it is (it matches no message, and a
    /// search for it is empty rather than refused).
    pub fn stored_recipient(raw: String, channel: Option<Channel>) -> String {
        let kind = channel.or(match raw.as_bytes().first() {
            _ if raw.contains('@') => Some(Channel::Email),
            Some(b'+') => Some(Channel::Sms),
            _ => None,
        });
        kind.and_then(|k| k.parse_recipient(&raw).ok())
            .map_or(raw, |r| r.as_str().to_owned())
    }

    pub fn parse_recipient(self, raw: &str) -> Result<Recipient, AddressError> {
        Ok(match self {
            Channel::Email => Recipient::Email(EmailAddress::parse(raw)?),
            Channel::Sms => Recipient::Phone(PhoneNumber::parse(raw)?),
            Channel::Push => Recipient::Device(DeviceToken::parse(raw)?),
            // A WhatsApp user is addressed by their phone number.
            Channel::Whatsapp => Recipient::Phone(PhoneNumber::parse(raw)?),
            Channel::Telegram => Recipient::Chat(TelegramChat::parse(raw)?),
        })
    }
}

impl std::fmt::Display for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed recipient address; its variant fixes which channels can carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    Email(EmailAddress),
    Phone(PhoneNumber),
    Device(DeviceToken),
    Chat(TelegramChat),
}

impl Recipient {
    pub fn as_str(&self) -> &str {
        match self {
            Recipient::Email(a) => a.as_str(),
            Recipient::Phone(p) => p.as_str(),
            Recipient::Device(d) => d.as_str(),
            Recipient::Chat(c) => c.as_str(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn recipients_are_matched_as_stored() {
        assert_eq!(
            Channel::stored_recipient("Ann@Example.COM".into(), None),
            Channel::Email
                .parse_recipient("Ann@Example.COM")
                .unwrap()
                .as_str()
        );
        assert_eq!(
            Channel::stored_recipient("+1 555 010 0123".into(), None),
            Channel::Sms
                .parse_recipient("+1 555 010 0123")
                .unwrap()
                .as_str()
        );
        assert_eq!(Channel::stored_recipient("chat-42".into(), None), "chat-42");
        // Not an address: searched as it is (and found nowhere), not refused.
        assert_eq!(
            Channel::stored_recipient("0".into(), Some(Channel::Email)),
            "0"
        );
        assert_eq!(
            Channel::stored_recipient("not an address@".into(), None),
            "not an address@"
        );
    }
}
