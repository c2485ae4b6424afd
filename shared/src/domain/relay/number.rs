//! A tenant's phone numbers: the front desk's public line, the pool that masked relays use,
//! and numbers dedicated to one worker. A pool number released from its last assignment
//! cools down (quarantined) before it is assigned again, so old contacts texting it do not
//! reach a new person.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::{PhoneNumber, TenantId};

/// How long a released pool number rests, unless the tenant's setting says otherwise.
pub const DEFAULT_COOL_DOWN_DAYS: u32 = 90;
/// The longest reason or provider name kept, in characters.
pub const MAX_NOTE: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NumberRole {
    /// The business's public line: texts nobody else takes go here.
    FrontDesk,
    /// Used for masked relays between a client and a worker.
    Pool,
    /// One worker's own number.
    Dedicated,
}

impl NumberRole {
    pub fn as_str(self) -> &'static str {
        match self {
            NumberRole::FrontDesk => "front_desk",
            NumberRole::Pool => "pool",
            NumberRole::Dedicated => "dedicated",
        }
    }

    pub fn parse(raw: &str) -> Option<NumberRole> {
        [
            NumberRole::FrontDesk,
            NumberRole::Pool,
            NumberRole::Dedicated,
        ]
        .into_iter()
        .find(|r| r.as_str() == raw)
    }
}

/// What a number can carry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    #[serde(default)]
    pub sms: bool,
    #[serde(default)]
    pub mms: bool,
    #[serde(default)]
    pub whatsapp: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberState {
    Active,
    /// Resting until then: it relays nothing new and is not assigned.
    Quarantined {
        until: DateTime<Utc>,
    },
    Inactive,
}

impl NumberState {
    pub fn as_str(self) -> &'static str {
        match self {
            NumberState::Active => "active",
            NumberState::Quarantined { .. } => "quarantined",
            NumberState::Inactive => "inactive",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantNumber {
    pub number: PhoneNumber,
    pub tenant: TenantId,
    pub role: NumberRole,
    /// The gateway that carries it (`twilio`, `sandbox`, ...).
    pub provider: String,
    pub capabilities: Capabilities,
    pub state: NumberState,
    /// A dedicated number's worker: their own number, where its texts go.
    pub worker: Option<PhoneNumber>,
    /// Why it was last quarantined or deactivated.
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
    /// Changes are compare-and-set on it.
    pub version: u64,
}

/// Why a number change is refused (409s, each naming what is in the way).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NumberRefusal {
    #[error("{0} is the tenant's last active front-desk number")]
    LastFrontDesk(String),
    #[error("{number} relays for {active} active assignment(s): quarantine it with `force` and a reason")]
    HasAssignments { number: String, active: usize },
    #[error("a dedicated number needs its worker")]
    NoWorker,
}

impl TenantNumber {
    /// Whether it may be given a new assignment at `at`: an active pool number (one whose
    /// quarantine ended counts as active again).
    pub fn assignable(&self, at: DateTime<Utc>) -> bool {
        self.role == NumberRole::Pool && self.is_active(at)
    }

    /// Active, or quarantined until a time that passed.
    pub fn is_active(&self, at: DateTime<Utc>) -> bool {
        match self.state {
            NumberState::Active => true,
            NumberState::Quarantined { until } => until <= at,
            NumberState::Inactive => false,
        }
    }

    /// The state a change asks for, checked against the guardrails: the last active front
    /// desk stays, and a number that relays for active assignments rests only when forced
    /// with a reason (`forced`: the change has `force` and a reason). `front_desks_active`
    /// counts the tenant's active front-desk numbers, this one included; `assignments_active`
    /// this number's active assignments.
    pub fn check_state(
        &self,
        next: NumberState,
        (front_desks_active, assignments_active): (usize, usize),
        forced: bool,
        at: DateTime<Utc>,
    ) -> Result<(), NumberRefusal> {
        let leaves_service = !matches!(next, NumberState::Active);
        if !leaves_service || !self.is_active(at) {
            return Ok(());
        }
        if self.role == NumberRole::FrontDesk && front_desks_active <= 1 {
            return Err(NumberRefusal::LastFrontDesk(self.number.to_string()));
        }
        if assignments_active > 0 && !forced {
            return Err(NumberRefusal::HasAssignments {
                number: self.number.to_string(),
                active: assignments_active,
            });
        }
        Ok(())
    }
}

/// When a pool number released at `at` may be assigned again.
pub fn cool_down_end(at: DateTime<Utc>, days: u32) -> DateTime<Utc> {
    at + Duration::days(i64::from(days))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(role: NumberRole, state: NumberState) -> TenantNumber {
        TenantNumber {
            number: PhoneNumber::parse("+15550001000").unwrap(),
            tenant: TenantId::parse("acme").unwrap(),
            role,
            provider: "sandbox".into(),
            capabilities: Capabilities {
                sms: true,
                ..Capabilities::default()
            },
            state,
            worker: None,
            reason: None,
            created_at: Utc::now(),
            version: 1,
        }
    }

    #[test]
    fn a_quarantined_number_is_assignable_only_after_its_cool_down() {
        let now = Utc::now();
        let until = cool_down_end(now, DEFAULT_COOL_DOWN_DAYS);
        let n = number(NumberRole::Pool, NumberState::Quarantined { until });
        assert!(!n.assignable(now));
        assert!(!n.assignable(until - Duration::seconds(1)));
        assert!(n.assignable(until));
        assert!(!number(NumberRole::Pool, NumberState::Inactive).assignable(now));
        assert!(!number(NumberRole::FrontDesk, NumberState::Active).assignable(now));
    }

    #[test]
    fn the_last_front_desk_stays_active() {
        let now = Utc::now();
        let desk = number(NumberRole::FrontDesk, NumberState::Active);
        let rest = NumberState::Inactive;
        assert_eq!(
            desk.check_state(rest, (1, 0), true, now),
            Err(NumberRefusal::LastFrontDesk("+15550001000".into()))
        );
        assert_eq!(desk.check_state(rest, (2, 0), false, now), Ok(()));
        assert_eq!(
            desk.check_state(NumberState::Active, (1, 0), false, now),
            Ok(())
        );
    }

    #[test]
    fn a_relaying_number_rests_only_when_forced_with_a_reason() {
        let now = Utc::now();
        let pool = number(NumberRole::Pool, NumberState::Active);
        let rest = NumberState::Quarantined { until: now };
        assert!(matches!(
            pool.check_state(rest, (1, 2), false, now),
            Err(NumberRefusal::HasAssignments { active: 2, .. })
        ));
        assert_eq!(pool.check_state(rest, (1, 2), true, now), Ok(()));
        assert_eq!(pool.check_state(rest, (1, 0), false, now), Ok(()));
    }
}
