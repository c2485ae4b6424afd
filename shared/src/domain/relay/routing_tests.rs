//! Every step of the routing order, each with what its trace says.

use chrono::{Duration, Utc};

use super::assignment::{Assignment, AssignmentId, Party};
use super::number::{Capabilities, NumberRole, NumberState, TenantNumber};
use super::routing::{route, Route, RoutingFacts};
use crate::domain::{Keyword, PhoneNumber, TenantId};

const CLIENT: &str = "+15550000001";
const WORKER: &str = "+15550000002";
const POOL: &str = "+15559000001";

fn phone(n: &str) -> PhoneNumber {
    PhoneNumber::parse(n).unwrap()
}

fn number(role: NumberRole) -> TenantNumber {
    TenantNumber {
        number: phone(POOL),
        tenant: TenantId::parse("acme").unwrap(),
        role,
        provider: "sandbox".into(),
        capabilities: Capabilities::default(),
        state: NumberState::Active,
        worker: None,
        reason: None,
        created_at: Utc::now(),
        version: 1,
    }
}

/// An assignment of CLIENT and WORKER on POOL that ended `ago` (negative: ends in the future).
fn assignment(ended_ago: Duration) -> Assignment {
    let now = Utc::now();
    let party = |n: &str| Party {
        number: phone(n),
        name: None,
        contact: None,
    };
    Assignment {
        id: AssignmentId::new(),
        tenant: TenantId::parse("acme").unwrap(),
        client: party(CLIENT),
        worker: party(WORKER),
        number: phone(POOL),
        starts_at: now - Duration::days(2),
        ends_at: now - ended_ago,
        grace: Duration::hours(6),
        ended_at: None,
        replaces: None,
        created_at: now,
    }
}

fn facts(from: &str, role: NumberRole, assignments: Vec<Assignment>) -> RoutingFacts {
    RoutingFacts {
        number: number(role),
        from: phone(from),
        at: Utc::now(),
        keyword: None,
        assignments,
        known_participant: false,
    }
}

fn steps(d: &super::routing::RoutingDecision) -> Vec<(&str, bool)> {
    d.trace
        .iter()
        .map(|s| (s.step.as_str(), s.matched))
        .collect()
}

#[test]
fn opt_out_keywords_come_first_and_go_nowhere_else() {
    let mut f = facts(
        CLIENT,
        NumberRole::Pool,
        vec![assignment(-Duration::days(1))],
    );
    f.keyword = Some(Keyword::Stop);
    let d = route(&f);
    assert_eq!(
        d.route,
        Route::OptOut {
            keyword: Keyword::Stop
        }
    );
    assert_eq!(steps(&d), [("opt_out_keyword", true)]);
    assert!(d.trace[0].why.contains("stop"), "{:?}", d.trace);
}

#[test]
fn an_active_assignment_relays_to_the_other_party_from_the_pool_number() {
    let a = assignment(-Duration::days(1));
    let d = route(&facts(CLIENT, NumberRole::Pool, vec![a.clone()]));
    assert_eq!(
        d.route,
        Route::Relay {
            assignment_id: a.id,
            sender_role: "client".into(),
            to: WORKER.into(),
            from: POOL.into(),
            closing: false,
        }
    );
    assert_eq!(
        steps(&d),
        [("opt_out_keyword", false), ("active_assignment", true)]
    );
    assert_eq!(
        d.trace[1].inputs["assignments_of_sender"][0]["phase"],
        "active"
    );
    // The worker's reply goes back to the client.
    let back = route(&facts(WORKER, NumberRole::Pool, vec![a]));
    assert!(
        matches!(back.route, Route::Relay { ref to, ref sender_role, .. } if to == CLIENT && sender_role == "worker")
    );
}

#[test]
fn in_the_grace_period_it_relays_and_says_the_window_is_closing() {
    let d = route(&facts(
        CLIENT,
        NumberRole::Pool,
        vec![assignment(Duration::hours(1))],
    ));
    assert!(
        matches!(d.route, Route::Relay { closing: true, .. }),
        "{:?}",
        d.route
    );
    assert_eq!(
        steps(&d),
        [
            ("opt_out_keyword", false),
            ("active_assignment", false),
            ("grace_period", true)
        ]
    );
    assert!(
        d.trace[1].why.contains("no assignment"),
        "{}",
        d.trace[1].why
    );
}

#[test]
fn a_dedicated_number_goes_to_its_worker() {
    let mut f = facts(CLIENT, NumberRole::Dedicated, Vec::new());
    f.number.worker = Some(phone(WORKER));
    let d = route(&f);
    assert_eq!(
        d.route,
        Route::Worker {
            to: WORKER.into(),
            from: POOL.into()
        }
    );
    assert_eq!(
        d.trace.last().map(|s| (s.step.as_str(), s.matched)),
        Some(("dedicated_number", true))
    );
    assert_eq!(d.trace[1].why, "not a pool number");
    // The worker texting their own number is not sent back to them.
    let own = RoutingFacts {
        from: phone(WORKER),
        ..f
    };
    assert_eq!(route(&own).route, Route::FrontDesk { auto_reply: false });
}

#[test]
fn a_participant_without_an_assignment_reaches_the_front_desk_with_an_auto_reply() {
    let mut f = facts(
        CLIENT,
        NumberRole::Pool,
        vec![assignment(Duration::days(1))],
    );
    f.known_participant = true;
    let d = route(&f);
    assert_eq!(d.route, Route::FrontDesk { auto_reply: true });
    assert_eq!(
        steps(&d),
        [
            ("opt_out_keyword", false),
            ("active_assignment", false),
            ("grace_period", false),
            ("dedicated_number", false),
            ("participant_without_assignment", true),
        ]
    );
    assert_eq!(
        d.trace[1].inputs["assignments_of_sender"][0]["phase"],
        "over"
    );
}

#[test]
fn anyone_else_reaches_the_front_desk() {
    for role in [NumberRole::Pool, NumberRole::FrontDesk] {
        let d = route(&facts("+15550000009", role, Vec::new()));
        assert_eq!(d.route, Route::FrontDesk { auto_reply: false });
        assert_eq!(d.trace.len(), 6, "every step was evaluated: {:?}", d.trace);
        assert_eq!(d.trace.last().map(|s| s.step.as_str()), Some("front_desk"));
        assert!(d.trace[..5].iter().all(|s| !s.matched));
    }
}

#[test]
fn an_assignment_not_yet_started_does_not_relay() {
    let mut a = assignment(-Duration::days(3));
    a.starts_at = Utc::now() + Duration::days(1);
    let d = route(&facts(CLIENT, NumberRole::Pool, vec![a]));
    assert_eq!(d.route, Route::FrontDesk { auto_reply: false });
    assert_eq!(
        d.trace[1].inputs["assignments_of_sender"][0]["phase"],
        "not_started"
    );
}

#[test]
fn a_number_out_of_service_relays_nothing() {
    let mut f = facts(
        CLIENT,
        NumberRole::Pool,
        vec![assignment(-Duration::days(1))],
    );
    f.number.state = NumberState::Quarantined {
        until: Utc::now() + Duration::days(90),
    };
    f.known_participant = true;
    let d = route(&f);
    assert_eq!(d.route, Route::FrontDesk { auto_reply: true });
    assert_eq!(d.trace[1].why, "the number is quarantined: out of service");
    let mut dedicated = facts(CLIENT, NumberRole::Dedicated, Vec::new());
    dedicated.number.worker = Some(phone(WORKER));
    dedicated.number.state = NumberState::Inactive;
    let d = route(&dedicated);
    assert_eq!(d.route, Route::FrontDesk { auto_reply: false });
    assert_eq!(d.trace[3].why, "the number is inactive: out of service");
}
