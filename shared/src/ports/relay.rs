//! The relay's numbers and assignments. A number belongs to one tenant (an inbound text finds
//! its tenant by the number it was sent to); an assignment is created with its pool number
//! picked in the same unit that checks the parties' other assignments, so two creations for
//! one party cannot both take a number.

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::domain::relay::assignment::{pick_number, Assignment, AssignmentId, Party, PickError};
use crate::domain::relay::number::{Capabilities, NumberRole, NumberState, TenantNumber};
use crate::domain::{ContactId, PhoneNumber, TenantId};

/// How far back a party's assignments are read for routing: the trace shows those that ended
/// within it.
pub const RECENT: Duration = Duration::days(30);

/// A new assignment, before its number is picked.
#[derive(Debug, Clone)]
pub struct AssignmentDraft {
    pub tenant: TenantId,
    pub client: Party,
    pub worker: Party,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub grace: Duration,
    pub replaces: Option<AssignmentId>,
    /// The number to prefer when the pair has none of its own (a reassignment keeps the
    /// client's number).
    pub prefer: Option<PhoneNumber>,
}

impl AssignmentDraft {
    /// The assignment it makes on `number`, and the number the pick chose.
    pub fn on(self, number: PhoneNumber) -> Assignment {
        Assignment {
            id: AssignmentId::new(),
            tenant: self.tenant,
            client: self.client,
            worker: self.worker,
            number,
            starts_at: self.starts_at,
            ends_at: self.ends_at,
            grace: self.grace,
            ended_at: None,
            replaces: self.replaces,
            // Stores keep milliseconds: what is returned is what is read back.
            created_at: at(Utc::now().timestamp_millis()),
        }
    }

    /// Picks its number from what the store read: the tenant's numbers, the parties'
    /// assignments, the pair's last number.
    pub fn pick(
        self,
        numbers: &[TenantNumber],
        theirs: &[Assignment],
        previous: Option<&PhoneNumber>,
    ) -> Result<Assignment, PickError> {
        let held = (self.starts_at, self.ends_at + self.grace);
        let parties = (&self.client.number, &self.worker.number);
        let previous = previous.or(self.prefer.as_ref());
        let number = pick_number(numbers, theirs, parties, held, previous)?;
        Ok(self.on(number))
    }
}

/// Why a number could not be added or changed.
#[derive(Debug, thiserror::Error)]
pub enum NumberWriteError {
    #[error("{0} is registered already")]
    Exists(String),
    /// Changed meanwhile (the version read is gone): read again.
    #[error("the number changed meanwhile")]
    Changed,
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[async_trait]
pub trait RelayStore: Send + Sync + 'static {
    /// Registers a number; refused if any tenant has it.
    async fn add_number(&self, n: &TenantNumber) -> Result<(), NumberWriteError>;
    async fn number(
        &self,
        tenant: &TenantId,
        number: &PhoneNumber,
    ) -> Result<Option<TenantNumber>, StoreError>;
    /// The number, whichever tenant has it (an inbound text finds its tenant).
    async fn number_owner(&self, number: &PhoneNumber) -> Result<Option<TenantNumber>, StoreError>;
    /// The tenant's numbers in number order, after `after`.
    async fn numbers(
        &self,
        tenant: &TenantId,
        after: Option<&PhoneNumber>,
        limit: usize,
    ) -> Result<Vec<TenantNumber>, StoreError>;
    /// Replaces a number read at version `n.version - 1`.
    async fn update_number(&self, n: &TenantNumber) -> Result<(), NumberWriteError>;

    /// Creates the draft's assignment on the number [`AssignmentDraft::pick`] picks from the
    /// tenant's numbers and the parties' assignments, read and written as one unit.
    async fn create_assignment(
        &self,
        draft: AssignmentDraft,
    ) -> Result<Result<Assignment, PickError>, StoreError>;
    async fn assignment(
        &self,
        tenant: &TenantId,
        id: AssignmentId,
    ) -> Result<Option<Assignment>, StoreError>;
    /// The tenant's assignments, newest first, older than `before`.
    async fn assignments(
        &self,
        tenant: &TenantId,
        before: Option<AssignmentId>,
        limit: usize,
    ) -> Result<Vec<Assignment>, StoreError>;
    /// The assignments `party` is in (as client, worker, or as their pool number) whose
    /// number is held after `since` (its window and grace end later).
    async fn assignments_of(
        &self,
        tenant: &TenantId,
        party: &PhoneNumber,
        since: DateTime<Utc>,
    ) -> Result<Vec<Assignment>, StoreError>;
    /// Whether `party` was ever client or worker of one of the tenant's assignments.
    async fn is_participant(
        &self,
        tenant: &TenantId,
        party: &PhoneNumber,
    ) -> Result<bool, StoreError>;
    /// Ends an assignment at `at` (if it ends later), with its grace after or (`keep_grace`
    /// false: a reassignment, a number taken out of service) none; none when there is no
    /// such assignment.
    async fn end_assignment(
        &self,
        tenant: &TenantId,
        id: AssignmentId,
        at: DateTime<Utc>,
        keep_grace: bool,
    ) -> Result<Option<Assignment>, StoreError>;
}

/// A number as both backends store it, as JSON.
#[derive(Serialize, Deserialize)]
pub struct NumberRecord {
    role: String,
    provider: String,
    capabilities: Capabilities,
    state: String,
    quarantined_until: Option<i64>,
    worker: Option<String>,
    reason: Option<String>,
    created_at: i64,
    version: u64,
}

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

impl NumberRecord {
    pub fn to_json(n: &TenantNumber) -> String {
        let until = match n.state {
            NumberState::Quarantined { until } => Some(until.timestamp_millis()),
            _ => None,
        };
        let record = NumberRecord {
            role: n.role.as_str().to_owned(),
            provider: n.provider.clone(),
            capabilities: n.capabilities,
            state: n.state.as_str().to_owned(),
            quarantined_until: until,
            worker: n.worker.as_ref().map(|w| w.to_string()),
            reason: n.reason.clone(),
            created_at: n.created_at.timestamp_millis(),
            version: n.version,
        };
        serde_json::to_string(&record).unwrap_or_default()
    }

    pub fn read(tenant: &str, number: &str, json: &str) -> Result<TenantNumber, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("number {number}: {what}"));
        let r: NumberRecord = serde_json::from_str(json).map_err(|_| corrupt("record"))?;
        let state = match (r.state.as_str(), r.quarantined_until) {
            ("active", _) => NumberState::Active,
            ("inactive", _) => NumberState::Inactive,
            ("quarantined", Some(until)) => NumberState::Quarantined { until: at(until) },
            _ => return Err(corrupt("state")),
        };
        let phone = |n: &str| PhoneNumber::parse(n).map_err(|_| corrupt("number"));
        Ok(TenantNumber {
            number: phone(number)?,
            tenant: TenantId::parse(tenant).map_err(|_| corrupt("tenant"))?,
            role: NumberRole::parse(&r.role).ok_or_else(|| corrupt("role"))?,
            provider: r.provider,
            capabilities: r.capabilities,
            state,
            worker: r.worker.as_deref().map(phone).transpose()?,
            reason: r.reason,
            created_at: at(r.created_at),
            version: r.version,
        })
    }
}

#[derive(Serialize, Deserialize)]
struct PartyRecord {
    number: String,
    name: Option<String>,
    contact: Option<String>,
}

/// An assignment as both backends store it, as JSON.
#[derive(Serialize, Deserialize)]
pub struct AssignmentRecord {
    client: PartyRecord,
    worker: PartyRecord,
    number: String,
    starts_at: i64,
    ends_at: i64,
    grace_ms: i64,
    ended_at: Option<i64>,
    replaces: Option<String>,
    created_at: i64,
}

impl AssignmentRecord {
    pub fn to_json(a: &Assignment) -> String {
        let party = |p: &Party| PartyRecord {
            number: p.number.to_string(),
            name: p.name.clone(),
            contact: p.contact.map(|c| c.to_string()),
        };
        let record = AssignmentRecord {
            client: party(&a.client),
            worker: party(&a.worker),
            number: a.number.to_string(),
            starts_at: a.starts_at.timestamp_millis(),
            ends_at: a.ends_at.timestamp_millis(),
            grace_ms: a.grace.num_milliseconds(),
            ended_at: a.ended_at.map(|e| e.timestamp_millis()),
            replaces: a.replaces.map(|r| r.to_string()),
            created_at: a.created_at.timestamp_millis(),
        };
        serde_json::to_string(&record).unwrap_or_default()
    }

    pub fn read(tenant: &str, id: &str, json: &str) -> Result<Assignment, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("assignment {id}: {what}"));
        let r: AssignmentRecord = serde_json::from_str(json).map_err(|_| corrupt("record"))?;
        let phone = |n: &str| PhoneNumber::parse(n).map_err(|_| corrupt("number"));
        let party = |p: PartyRecord| -> Result<Party, StoreError> {
            Ok(Party {
                number: phone(&p.number)?,
                name: p.name,
                contact: p.contact.as_deref().and_then(ContactId::parse),
            })
        };
        Ok(Assignment {
            id: AssignmentId::parse(id).ok_or_else(|| corrupt("id"))?,
            tenant: TenantId::parse(tenant).map_err(|_| corrupt("tenant"))?,
            client: party(r.client)?,
            worker: party(r.worker)?,
            number: phone(&r.number)?,
            starts_at: at(r.starts_at),
            ends_at: at(r.ends_at),
            grace: Duration::milliseconds(r.grace_ms),
            ended_at: r.ended_at.map(at),
            replaces: r.replaces.as_deref().and_then(AssignmentId::parse),
            created_at: at(r.created_at),
        })
    }
}
