//! Assignments: a client and a worker linked for a window, texting each other through one
//! pool number. Herald picks the number: on it, each of the two has no other assignment whose
//! window (grace included) overlaps, so a text to the number from either finds exactly one
//! assignment, and the other party.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::number::TenantNumber;
use crate::domain::notify::v7_id;
use crate::domain::{ContactId, PhoneNumber, TenantId};

v7_id!(
    /// An assignment's id.
    AssignmentId
);

/// The longest grace period after an assignment's end.
pub const MAX_GRACE: Duration = Duration::days(30);
/// The longest window an assignment may have.
pub const MAX_WINDOW: Duration = Duration::days(366);

/// One side of an assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Party {
    /// Their own number: texts to them go there, and theirs come from it.
    pub number: PhoneNumber,
    pub name: Option<String>,
    /// The tenant's contact with that number.
    pub contact: Option<ContactId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Client,
    Worker,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Worker => "worker",
        }
    }

    pub fn other(self) -> Role {
        match self {
            Role::Client => Role::Worker,
            Role::Worker => Role::Client,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub id: AssignmentId,
    pub tenant: TenantId,
    pub client: Party,
    pub worker: Party,
    /// The pool number both text.
    pub number: PhoneNumber,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    /// After the end, texts still relay (and the sender hears the window is closing).
    pub grace: Duration,
    /// Ended before `ends_at` (a reassignment, or the platform ended it).
    pub ended_at: Option<DateTime<Utc>>,
    /// The assignment this one took over from.
    pub replaces: Option<AssignmentId>,
    pub created_at: DateTime<Utc>,
}

/// Where an assignment's window and grace fall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    NotYet,
    Active,
    Grace,
    Over,
}

impl Phase {
    /// As the API and the routing trace name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::NotYet => "not_started",
            Phase::Active => "active",
            Phase::Grace => "in_grace",
            Phase::Over => "over",
        }
    }
}

impl Assignment {
    /// When it ends: `ends_at`, or earlier if it was ended.
    pub fn end(&self) -> DateTime<Utc> {
        self.ended_at.map_or(self.ends_at, |e| e.min(self.ends_at))
    }

    /// The time the number is held for its parties: from the start to the end of the grace.
    pub fn held(&self) -> (DateTime<Utc>, DateTime<Utc>) {
        (self.starts_at, self.end() + self.grace)
    }

    pub fn phase(&self, at: DateTime<Utc>) -> Phase {
        if at < self.starts_at {
            Phase::NotYet
        } else if at < self.end() {
            Phase::Active
        } else if at < self.end() + self.grace {
            Phase::Grace
        } else {
            Phase::Over
        }
    }

    /// The role `number` has in it, if it is one of its parties.
    pub fn role_of(&self, number: &PhoneNumber) -> Option<Role> {
        if &self.client.number == number {
            Some(Role::Client)
        } else if &self.worker.number == number {
            Some(Role::Worker)
        } else {
            None
        }
    }

    pub fn party(&self, role: Role) -> &Party {
        match role {
            Role::Client => &self.client,
            Role::Worker => &self.worker,
        }
    }

    /// Whether its held time overlaps `[from, to)`.
    pub fn overlaps(&self, (from, to): (DateTime<Utc>, DateTime<Utc>)) -> bool {
        let (start, end) = self.held();
        start < to && from < end
    }

    /// It, ended at `at` if that is before its end, and with no grace unless `keep_grace`.
    pub fn ended(&self, at: DateTime<Utc>, keep_grace: bool) -> Assignment {
        let mut next = self.clone();
        if at < self.end() {
            next.ended_at = Some(at.max(self.starts_at));
        }
        // Ended before it began, it has no window for a grace to follow.
        if !keep_grace || at <= self.starts_at {
            next.grace = Duration::zero();
        }
        next
    }

    /// Whether it shares a party with another assignment.
    pub fn shares_party(&self, client: &PhoneNumber, worker: &PhoneNumber) -> bool {
        [client, worker].iter().any(|n| self.role_of(n).is_some())
    }
}

/// Why no number could be picked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PickError {
    /// Every pool number relays for the client or the worker with someone else then; the
    /// first in the way is named.
    #[error(
        "every pool number relays for the client or the worker then: assignment {0} is in the way"
    )]
    Conflict(AssignmentId),
    /// The pair already has an assignment then.
    #[error("the client and the worker already have assignment {0} then")]
    Duplicate(AssignmentId),
    #[error("the tenant has no active pool number")]
    NoPoolNumber,
}

/// The pool number a new assignment of `client` and `worker` for `held` (start to end of
/// grace) gets: an assignable pool number on which neither has another assignment whose held
/// time overlaps; the number the pair used last if it is one of those, else the first.
/// `theirs` are the assignments either party has (on any number), `previous` the pair's last
/// number.
pub fn pick_number(
    pool: &[TenantNumber],
    theirs: &[Assignment],
    (client, worker): (&PhoneNumber, &PhoneNumber),
    held: (DateTime<Utc>, DateTime<Utc>),
    previous: Option<&PhoneNumber>,
) -> Result<PhoneNumber, PickError> {
    let overlapping: Vec<&Assignment> = theirs
        .iter()
        .filter(|a| a.overlaps(held) && a.shares_party(client, worker))
        .collect();
    if let Some(same) = overlapping
        .iter()
        .find(|a| &a.client.number == client && &a.worker.number == worker)
    {
        return Err(PickError::Duplicate(same.id));
    }
    let usable: Vec<&TenantNumber> = pool
        .iter()
        .filter(|n| n.assignable(held.0) && n.capabilities.sms)
        .collect();
    if usable.is_empty() {
        return Err(PickError::NoPoolNumber);
    }
    let free = |n: &TenantNumber| !overlapping.iter().any(|a| a.number == n.number);
    let preferred =
        previous.and_then(|p| usable.iter().copied().find(|n| &n.number == p && free(n)));
    match preferred.or_else(|| usable.iter().copied().find(|n| free(n))) {
        Some(n) => Ok(n.number.clone()),
        None => Err(PickError::Conflict(
            overlapping.first().map_or_else(AssignmentId::new, |a| a.id),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::relay::number::{Capabilities, NumberRole, NumberState};

    fn phone(n: &str) -> PhoneNumber {
        PhoneNumber::parse(n).unwrap()
    }

    fn pool(numbers: &[&str]) -> Vec<TenantNumber> {
        numbers
            .iter()
            .map(|n| TenantNumber {
                number: phone(n),
                tenant: TenantId::parse("acme").unwrap(),
                role: NumberRole::Pool,
                provider: "sandbox".into(),
                capabilities: Capabilities {
                    sms: true,
                    ..Capabilities::default()
                },
                state: NumberState::Active,
                worker: None,
                reason: None,
                created_at: Utc::now(),
                version: 1,
            })
            .collect()
    }

    fn assignment(client: &str, worker: &str, number: &str, days: i64) -> Assignment {
        let now = Utc::now();
        let party = |n: &str| Party {
            number: phone(n),
            name: None,
            contact: None,
        };
        Assignment {
            id: AssignmentId::new(),
            tenant: TenantId::parse("acme").unwrap(),
            client: party(client),
            worker: party(worker),
            number: phone(number),
            starts_at: now,
            ends_at: now + Duration::days(days),
            grace: Duration::hours(12),
            ended_at: None,
            replaces: None,
            created_at: now,
        }
    }

    const ANN: &str = "+15550000001";
    const BOB: &str = "+15550000002";
    const CAT: &str = "+15550000003";
    const DAN: &str = "+15550000004";
    const P1: &str = "+15559000001";
    const P2: &str = "+15559000002";

    #[test]
    fn phases_follow_the_window_and_the_grace() {
        let a = assignment(ANN, BOB, P1, 1);
        assert_eq!(a.phase(a.starts_at - Duration::seconds(1)), Phase::NotYet);
        assert_eq!(a.phase(a.starts_at), Phase::Active);
        assert_eq!(a.phase(a.ends_at), Phase::Grace);
        assert_eq!(a.phase(a.ends_at + Duration::hours(12)), Phase::Over);
        let mut ended = a.clone();
        ended.ended_at = Some(a.starts_at + Duration::hours(1));
        assert_eq!(ended.phase(a.starts_at + Duration::hours(2)), Phase::Grace);
    }

    #[test]
    fn a_client_with_another_worker_on_a_number_takes_another_number() {
        let held = |days| (Utc::now(), Utc::now() + Duration::days(days));
        let ann_bob = assignment(ANN, BOB, P1, 3);
        let theirs = [ann_bob.clone()];
        let picked = pick_number(
            &pool(&[P1, P2]),
            &theirs,
            (&phone(ANN), &phone(CAT)),
            held(1),
            None,
        );
        assert_eq!(picked, Ok(phone(P2)));
        // Another client of Bob's cannot share P1 either: Bob's replies would be ambiguous.
        let picked = pick_number(
            &pool(&[P1, P2]),
            &theirs,
            (&phone(DAN), &phone(BOB)),
            held(1),
            None,
        );
        assert_eq!(picked, Ok(phone(P2)));
        // Strangers to Ann and Bob may use P1.
        let picked = pick_number(
            &pool(&[P1, P2]),
            &theirs,
            (&phone(CAT), &phone(DAN)),
            held(1),
            None,
        );
        assert_eq!(picked, Ok(phone(P1)));
        let full = pick_number(
            &pool(&[P1]),
            &theirs,
            (&phone(ANN), &phone(CAT)),
            held(1),
            None,
        );
        assert_eq!(full, Err(PickError::Conflict(ann_bob.id)));
        let again = pick_number(
            &pool(&[P1, P2]),
            &theirs,
            (&phone(ANN), &phone(BOB)),
            held(1),
            None,
        );
        assert_eq!(again, Err(PickError::Duplicate(ann_bob.id)));
    }

    #[test]
    fn the_pairs_number_is_preferred_and_ended_windows_free_a_number() {
        let later = (
            Utc::now() + Duration::days(10),
            Utc::now() + Duration::days(11),
        );
        let old = assignment(ANN, BOB, P1, 3);
        let picked = pick_number(
            &pool(&[P1, P2]),
            std::slice::from_ref(&old),
            (&phone(ANN), &phone(BOB)),
            later,
            Some(&phone(P2)),
        );
        assert_eq!(picked, Ok(phone(P2)), "the pair's last number");
        let picked = pick_number(
            &pool(&[P1, P2]),
            &[old],
            (&phone(ANN), &phone(CAT)),
            later,
            None,
        );
        assert_eq!(picked, Ok(phone(P1)), "Ann's old window is over by then");
        let none = pick_number(&[], &[], (&phone(ANN), &phone(BOB)), later, None);
        assert_eq!(none, Err(PickError::NoPoolNumber));
    }

    #[test]
    fn a_quarantined_number_is_never_picked() {
        let mut numbers = pool(&[P1, P2]);
        numbers[0].state = NumberState::Quarantined {
            until: Utc::now() + Duration::days(90),
        };
        let held = (Utc::now(), Utc::now() + Duration::days(1));
        let picked = pick_number(
            &numbers,
            &[],
            (&phone(ANN), &phone(BOB)),
            held,
            Some(&phone(P1)),
        );
        assert_eq!(picked, Ok(phone(P2)));
    }
}
