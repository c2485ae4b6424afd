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
/// no assignment for them; anyone else. The first step that matches decides.
pub fn route(f: &RoutingFacts) -> RoutingDecision {
    let mut t = Trace(Vec::new());
    let decided = |route, t: Trace| RoutingDecision { route, trace: t.0 };
    let keyword = f.keyword.map(Keyword::as_str);
    let why = match keyword {
        Some(k) => format!("the body is the carrier keyword {k}"),
        None => "the body is no carrier keyword".into(),
    };
    if let Some(keyword) = f.keyword {
        t.step("opt_out_keyword", true, json!({ "keyword": keyword }), why);
        return decided(Route::OptOut { keyword }, t);
    }
    t.step("opt_out_keyword", false, json!({ "keyword": null }), why);

    let pool = f.number.role == NumberRole::Pool;
    for (step, phase) in [
        ("active_assignment", Phase::Active),
        ("grace_period", Phase::Grace),
    ] {
        let found = f
            .assignments
            .iter()
            .filter(|a| a.role_of(&f.from).is_some())
            .find(|a| a.phase(f.at) == phase);
        let inputs = json!({
            "number_role": f.number.role.as_str(),
            "assignments_of_sender": f.assignments.iter().map(|a| json!({
                "id": a.id, "phase": phase_name(a.phase(f.at)),
            })).collect::<Vec<_>>(),
        });
        match (pool, found) {
            (true, Some(a)) => {
                let closing = phase == Phase::Grace;
                let why = format!("assignment {} is {} at {}", a.id, phase_name(phase), f.at);
                t.step(step, true, inputs, why);
                return decided(relay(a, &f.from, closing), t);
            }
            (false, _) => t.step(step, false, inputs, "not a pool number".into()),
            (true, None) => {
                let why = format!(
                    "no assignment of the sender on this number is {}",
                    phase_name(phase)
                );
                t.step(step, false, inputs, why)
            }
        };
    }

    let worker = f
        .number
        .worker
        .as_ref()
        .filter(|_| f.number.role == NumberRole::Dedicated);
    let inputs =
        json!({ "number_role": f.number.role.as_str(), "worker": worker.map(|w| w.as_str()) });
    match worker {
        Some(w) if w != &f.from => {
            let why = "a dedicated number: its worker gets it".to_owned();
            t.step("dedicated_number", true, inputs, why);
            let route = Route::Worker {
                to: w.to_string(),
                from: f.number.number.to_string(),
            };
            return decided(route, t);
        }
        Some(_) => t.step(
            "dedicated_number",
            false,
            inputs,
            "the worker wrote to their own number".into(),
        ),
        None => t.step(
            "dedicated_number",
            false,
            inputs,
            "not a dedicated number".into(),
        ),
    };

    let participant = pool && f.known_participant;
    let inputs =
        json!({ "number_role": f.number.role.as_str(), "known_participant": f.known_participant });
    let why = match (pool, f.known_participant) {
        (true, true) => "a participant wrote to a pool number with no assignment for them",
        (false, _) => "not a pool number",
        (true, false) => "the sender is no participant",
    };
    if t.step(
        "participant_without_assignment",
        participant,
        inputs,
        why.into(),
    ) {
        return decided(Route::FrontDesk { auto_reply: true }, t);
    }
    t.step("front_desk", true, json!({}), "nothing else took it".into());
    decided(Route::FrontDesk { auto_reply: false }, t)
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

fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::NotYet => "not_started",
        Phase::Active => "active",
        Phase::Grace => "in_grace",
        Phase::Over => "over",
    }
}
