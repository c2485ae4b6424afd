//! The routing engine: for an inbound text to one of the tenant's numbers, who gets it, in a
//! fixed order of steps, each recorded in a trace with its inputs and why it matched or not.
//! It is a pure function of the facts the caller gathered, so the simulator and the inbound
//! pipeline decide alike and a decision can be replayed.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::assignment::{Assignment, AssignmentId, Phase, Role};
use super::number::{NumberRole, TenantNumber};
use crate::domain::{Keyword, PhoneNumber};

/// What is known when a text arrives.
#[derive(Debug, Clone)]
pub struct RoutingFacts {
    /// The tenant's number it was sent to.
    pub number: TenantNumber,
    pub from: PhoneNumber,
    pub at: DateTime<Utc>,
    pub keyword: Option<Keyword>,
    /// The assignments on this number that the sender is a party of (recent ones: whatever
    /// phase they are in).
    pub assignments: Vec<Assignment>,
    /// The sender is a party of some assignment of the tenant, on any number.
    pub known_participant: bool,
}

/// Where the text goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Route {
    /// A carrier keyword: handled as opt-out, start or help, and routed nowhere else.
    OptOut { keyword: Keyword },
    /// To the other party of an assignment, from the pool number.
    Relay {
        assignment_id: AssignmentId,
        sender_role: String,
        to: String,
        from: String,
        /// In the grace after the window: the sender is told the window is closing.
        closing: bool,
    },
    /// To the worker a dedicated number belongs to, from that number.
    Worker { to: String, from: String },
    /// To the business's inbox; `auto_reply` when a participant wrote to a pool number with
    /// no assignment for them (they hear where to turn).
    FrontDesk { auto_reply: bool },
}

/// One step the engine evaluated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceStep {
    pub step: String,
    pub matched: bool,
    pub inputs: Value,
    pub why: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingDecision {
    pub route: Route,
    pub trace: Vec<TraceStep>,
}

/// What the relay did with an inbound text: the decision and its trace, and the messages it
/// sent (the relayed text, a notice to the sender), linked by id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayRecord {
    #[serde(flatten)]
    pub decision: RoutingDecision,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relayed_message_id: Option<crate::domain::MessageId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice_message_id: Option<crate::domain::MessageId>,
    /// The contact details the text shared, and what the tenant's policy did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sharing: Option<SharingOutcome>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharingOutcome {
    pub kinds: Vec<super::sharing::SharedKind>,
    pub action: super::sharing::SharingAction,
}

struct Trace(Vec<TraceStep>);

impl Trace {
    fn step(&mut self, step: &'static str, matched: bool, inputs: Value, why: String) -> bool {
        self.0.push(TraceStep {
            step: step.to_owned(),
            matched,
            inputs,
            why,
        });
        matched
    }
}

/// Decides, in order: opt-out keywords; an active assignment of the sender on this number;
/// one in its grace; a dedicated number's worker; a participant writing to a pool number with
/// no assignment for them; anyone else. The first step that matches decides. A number out of
/// service (quarantined, inactive) relays nothing: its texts reach the front desk.
pub fn route(f: &RoutingFacts) -> RoutingDecision {
    let mut t = Trace(Vec::new());
    let route = opt_out(f, &mut t)
        .or_else(|| assignment(f, &mut t, ("active_assignment", Phase::Active)))
        .or_else(|| assignment(f, &mut t, ("grace_period", Phase::Grace)))
        .or_else(|| dedicated(f, &mut t))
        .or_else(|| participant(f, &mut t))
        .unwrap_or_else(|| {
            t.step("front_desk", true, json!({}), "nothing else took it".into());
            Route::FrontDesk { auto_reply: false }
        });
    RoutingDecision { route, trace: t.0 }
}

fn opt_out(f: &RoutingFacts, t: &mut Trace) -> Option<Route> {
    let Some(keyword) = f.keyword else {
        let why = "the body is no carrier keyword".to_owned();
        t.step("opt_out_keyword", false, json!({ "keyword": null }), why);
        return None;
    };
    let why = format!("the body is the carrier keyword {}", keyword.as_str());
    t.step("opt_out_keyword", true, json!({ "keyword": keyword }), why);
    Some(Route::OptOut { keyword })
}

/// Why a number relays nothing, if it does not.
fn out_of_service(f: &RoutingFacts) -> Option<String> {
    (!f.number.is_active(f.at))
        .then(|| format!("the number is {}: out of service", f.number.state.as_str()))
}

fn assignment(
    f: &RoutingFacts,
    t: &mut Trace,
    (step, phase): (&'static str, Phase),
) -> Option<Route> {
    let found = f
        .assignments
        .iter()
        .filter(|a| a.role_of(&f.from).is_some())
        .find(|a| a.phase(f.at) == phase);
    let inputs = json!({
        "number_role": f.number.role.as_str(),
        "number_state": f.number.state.as_str(),
        "assignments_of_sender": f.assignments.iter().map(|a| json!({
            "id": a.id, "phase": a.phase(f.at).as_str(),
        })).collect::<Vec<_>>(),
    });
    let why = if f.number.role != NumberRole::Pool {
        "not a pool number".to_owned()
    } else if let Some(why) = out_of_service(f) {
        why
    } else if let Some(a) = found {
        let why = format!("assignment {} is {} at {}", a.id, phase.as_str(), f.at);
        t.step(step, true, inputs, why);
        return Some(relay(a, &f.from, phase == Phase::Grace));
    } else {
        format!(
            "no assignment of the sender on this number is {}",
            phase.as_str()
        )
    };
    t.step(step, false, inputs, why);
    None
}

fn dedicated(f: &RoutingFacts, t: &mut Trace) -> Option<Route> {
    let worker = f
        .number
        .worker
        .as_ref()
        .filter(|_| f.number.role == NumberRole::Dedicated);
    let inputs =
        json!({ "number_role": f.number.role.as_str(), "worker": worker.map(|w| w.as_str()) });
    let why = match (worker, out_of_service(f)) {
        (None, _) => "not a dedicated number".to_owned(),
        (Some(_), Some(why)) => why,
        (Some(w), None) if w == &f.from => "the worker wrote to their own number".to_owned(),
        (Some(w), None) => {
            t.step(
                "dedicated_number",
                true,
                inputs,
                "a dedicated number: its worker gets it".into(),
            );
            let (to, from) = (w.to_string(), f.number.number.to_string());
            return Some(Route::Worker { to, from });
        }
    };
    t.step("dedicated_number", false, inputs, why);
    None
}

fn participant(f: &RoutingFacts, t: &mut Trace) -> Option<Route> {
    let pool = f.number.role == NumberRole::Pool;
    let inputs =
        json!({ "number_role": f.number.role.as_str(), "known_participant": f.known_participant });
    let why = match (pool, f.known_participant) {
        (true, true) => "a participant wrote to a pool number with no assignment for them",
        (false, _) => "not a pool number",
        (true, false) => "the sender is no participant",
    };
    let matched = pool && f.known_participant;
    t.step(
        "participant_without_assignment",
        matched,
        inputs,
        why.into(),
    );
    matched.then_some(Route::FrontDesk { auto_reply: true })
}

fn relay(a: &Assignment, from: &PhoneNumber, closing: bool) -> Route {
    let role = a.role_of(from).unwrap_or(Role::Client);
    Route::Relay {
        assignment_id: a.id,
        sender_role: role.as_str().to_owned(),
        to: a.party(role.other()).number.to_string(),
        from: a.number.to_string(),
        closing,
    }
}
