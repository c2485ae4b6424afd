//! A tenant's thread policy: which thread a message joins. By default a contact has one
//! thread across every channel, kept for good; a tenant may keep one per channel, and open a
//! new one when the conversation has been silent for some days (a support desk's "ticket").

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::thread::Thread;
use super::{Channel, FieldError};

/// The longest silence a policy may name, in days (ten years).
pub const MAX_SILENT_DAYS: u32 = 3650;

/// What a contact's threads are divided by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ThreadScope {
    /// One thread across every channel.
    #[default]
    Contact,
    /// One thread per channel the contact writes on or is written to on.
    Channel,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ThreadPolicy {
    /// `contact`: one thread per contact; `channel`: one per contact and channel.
    #[serde(default)]
    pub per: ThreadScope,
    /// A message to or from a contact whose thread has had no activity for this many days
    /// opens a new thread; the old one keeps its history. None: threads last for good.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole_days"
    )]
    #[schema(minimum = 1, maximum = 3650)]
    pub new_after_silent_days: Option<u32>,
    /// A message sent to an address a contact has joins that contact's thread without
    /// `thread_id` (true unless turned off).
    #[serde(default = "joined")]
    pub join_sends: bool,
}

fn joined() -> bool {
    true
}

/// A count of days: a JSON integer, also written with a fraction of zero (`30.0`).
pub fn whole_days<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    use serde::de::Error;
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    let whole = n.as_u64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= f64::from(u32::MAX))
            .map(|f| f as u64)
    });
    whole
        .and_then(|w| u32::try_from(w).ok())
        .map(Some)
        .ok_or_else(|| D::Error::custom(format!("{n} is not a whole number of days")))
}

impl Default for ThreadPolicy {
    fn default() -> ThreadPolicy {
        ThreadPolicy {
            per: ThreadScope::Contact,
            new_after_silent_days: None,
            join_sends: true,
        }
    }
}

/// Which of a contact's threads is current for a message: the one across channels, or the
/// one of a channel. Stored as the key of the contact's pointer to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadSlot(Option<Channel>);

impl ThreadSlot {
    /// The slot of a contact's one thread across channels.
    pub const CONTACT: ThreadSlot = ThreadSlot(None);

    /// `*` for the thread across channels, else the channel's name.
    pub fn as_str(self) -> &'static str {
        self.0.map_or("*", Channel::as_str)
    }

    pub fn parse(raw: &str) -> Option<ThreadSlot> {
        match raw {
            "*" => Some(ThreadSlot::CONTACT),
            other => Channel::parse(other).map(|c| ThreadSlot(Some(c))),
        }
    }
}

impl ThreadPolicy {
    pub fn check(&self) -> Result<(), FieldError> {
        match self.new_after_silent_days {
            Some(d) if d == 0 || d > MAX_SILENT_DAYS => Err(FieldError::new(
                "/new_after_silent_days",
                "out_of_range",
                format!("1 to {MAX_SILENT_DAYS} days"),
            )),
            _ => Ok(()),
        }
    }

    /// The slot a message on `channel` looks for its thread in.
    pub fn slot(&self, channel: Channel) -> ThreadSlot {
        match self.per {
            ThreadScope::Contact => ThreadSlot::CONTACT,
            ThreadScope::Channel => ThreadSlot(Some(channel)),
        }
    }

    /// Whether a message at `now` still joins `current`, or opens a new thread because the
    /// conversation went silent.
    pub fn keeps(&self, current: &Thread, now: DateTime<Utc>) -> bool {
        let Some(days) = self.new_after_silent_days else {
            return true;
        };
        now.signed_duration_since(current.last_activity_at) < chrono::Duration::days(days.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ContactId, TenantId};

    fn thread_active_at(at: DateTime<Utc>) -> Thread {
        let tenant = TenantId::parse("acme").expect("tenant");
        Thread::open(tenant, ContactId::new(), at)
    }

    #[test]
    fn the_default_is_one_lasting_thread_per_contact_that_sends_join() {
        let p: ThreadPolicy = serde_json::from_str("{}").expect("policy");
        assert_eq!(p, ThreadPolicy::default());
        assert!(p.join_sends);
        assert_eq!(p.slot(Channel::Sms), ThreadSlot::CONTACT);
        assert_eq!(p.slot(Channel::Email), ThreadSlot::CONTACT);
        let old = thread_active_at(Utc::now() - chrono::Duration::days(4000));
        assert!(p.keeps(&old, Utc::now()));
    }

    #[test]
    fn per_channel_threads_have_a_slot_per_channel() {
        let p = ThreadPolicy {
            per: ThreadScope::Channel,
            ..ThreadPolicy::default()
        };
        assert_ne!(p.slot(Channel::Sms), p.slot(Channel::Whatsapp));
        assert_eq!(p.slot(Channel::Sms).as_str(), "sms");
        for slot in [p.slot(Channel::Email), ThreadSlot::CONTACT] {
            assert_eq!(ThreadSlot::parse(slot.as_str()), Some(slot));
        }
    }

    #[test]
    fn a_thread_silent_for_the_policys_days_is_not_kept() {
        let p = ThreadPolicy {
            new_after_silent_days: Some(7),
            ..ThreadPolicy::default()
        };
        let now = Utc::now();
        assert!(p.keeps(&thread_active_at(now - chrono::Duration::days(6)), now));
        assert!(!p.keeps(&thread_active_at(now - chrono::Duration::days(7)), now));
    }

    #[test]
    fn silence_is_bounded() {
        for days in [0, MAX_SILENT_DAYS + 1] {
            let p = ThreadPolicy {
                new_after_silent_days: Some(days),
                ..ThreadPolicy::default()
            };
            let e = p.check().expect_err("out of range");
            assert_eq!(e.pointer, "/new_after_silent_days");
        }
        let unknown = serde_json::from_str::<ThreadPolicy>(r#"{"per":"galaxy"}"#);
        assert!(unknown.is_err());
        let float: ThreadPolicy =
            serde_json::from_str(r#"{"new_after_silent_days":3650.0}"#).unwrap();
        assert_eq!(float.new_after_silent_days, Some(3650));
        assert!(serde_json::from_str::<ThreadPolicy>(r#"{"new_after_silent_days":1.5}"#).is_err());
    }
}
