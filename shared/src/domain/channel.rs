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
