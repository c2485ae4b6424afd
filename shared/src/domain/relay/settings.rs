//! A tenant's relay settings: how long a released number rests, the contact-sharing policy,
//! and what Herald tells senders on the relay's behalf.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::number::DEFAULT_COOL_DOWN_DAYS;
use super::sharing::SharingPolicy;
use crate::domain::FieldError;

/// The longest notice, in characters (three SMS segments).
pub const MAX_NOTICE: usize = 459;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RelaySettings {
    /// Days a quarantined number rests when no date is given (1-3650).
    #[serde(default = "cool_down")]
    #[schema(minimum = 1, maximum = 3650)]
    pub cool_down_days: u32,
    #[serde(default)]
    pub sharing: SharingPolicy,
    /// Sent to a participant who writes to a pool number with no assignment for them.
    #[serde(default = "no_assignment_reply")]
    #[schema(min_length = 1, max_length = 459)]
    pub no_assignment_reply: String,
    /// Sent to the sender of a text relayed after the window, in its grace.
    #[serde(default = "closing_notice")]
    #[schema(min_length = 1, max_length = 459)]
    pub closing_notice: String,
    /// Sent to the sender of a text the sharing policy blocked.
    #[serde(default = "blocked_notice")]
    #[schema(min_length = 1, max_length = 459)]
    pub blocked_notice: String,
}

fn cool_down() -> u32 {
    DEFAULT_COOL_DOWN_DAYS
}

fn no_assignment_reply() -> String {
    "This number is not linked to a booking right now. We have passed your message to our team."
        .into()
}

fn closing_notice() -> String {
    "Your booking has ended: this conversation closes soon. Contact us for anything else.".into()
}

fn blocked_notice() -> String {
    "Your message was not delivered: please keep contact details out of messages.".into()
}

impl Default for RelaySettings {
    fn default() -> RelaySettings {
        RelaySettings {
            cool_down_days: cool_down(),
            sharing: SharingPolicy::default(),
            no_assignment_reply: no_assignment_reply(),
            closing_notice: closing_notice(),
            blocked_notice: blocked_notice(),
        }
    }
}

impl RelaySettings {
    pub fn check(&self) -> Result<(), FieldError> {
        if !(1..=3650).contains(&self.cool_down_days) {
            let detail = "1 to 3650 days";
            return Err(FieldError::new("/cool_down_days", "out_of_range", detail));
        }
        let notices = [
            ("no_assignment_reply", &self.no_assignment_reply),
            ("closing_notice", &self.closing_notice),
            ("blocked_notice", &self.blocked_notice),
        ];
        for (name, text) in notices {
            let bad = text.trim().is_empty()
                || text.chars().count() > MAX_NOTICE
                || text.chars().any(|c| c.is_control() && c != '\n');
            if bad {
                let detail = format!("1 to {MAX_NOTICE} characters, no control characters");
                return Err(FieldError::new(format!("/{name}"), "invalid", detail));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_what_is_left_out_and_limits_hold() {
        let s: RelaySettings = serde_json::from_str(r#"{"cool_down_days": 30}"#).unwrap();
        assert_eq!(s.cool_down_days, 30);
        assert_eq!(s.closing_notice, RelaySettings::default().closing_notice);
        assert!(s.check().is_ok());
        let zero = RelaySettings {
            cool_down_days: 0,
            ..RelaySettings::default()
        };
        assert_eq!(zero.check().unwrap_err().pointer, "/cool_down_days");
        let long = RelaySettings {
            blocked_notice: "x".repeat(MAX_NOTICE + 1),
            ..RelaySettings::default()
        };
        assert_eq!(long.check().unwrap_err().pointer, "/blocked_notice");
    }
}
