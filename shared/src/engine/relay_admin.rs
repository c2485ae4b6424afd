//! Changing the relay's setup: a number's role, capabilities and state under the guardrails,
//! assignments and reassignments.

use chrono::{DateTime, Utc};

use super::Herald;
use crate::domain::relay::assignment::{Assignment, AssignmentId, Party, PickError};
use crate::domain::relay::number::{
    cool_down_end, Capabilities, NumberRefusal, NumberRole, NumberState, TenantNumber,
};
use crate::domain::{FieldError, PhoneNumber, TenantId};
use crate::ports::{AssignmentDraft, NumberWriteError, StoreError};

/// The state a change asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateChange {
    Active,
    /// Until the date given, else for the tenant's cool-down.
    Quarantined(Option<DateTime<Utc>>),
    Inactive,
}

/// A change to a number; what is left out stays.
#[derive(Debug, Clone, Default)]
pub struct NumberChange {
    pub role: Option<NumberRole>,
    pub capabilities: Option<Capabilities>,
    pub worker: Option<Option<PhoneNumber>>,
    pub state: Option<StateChange>,
    /// Take a number with active assignments out of service (they end now).
    pub force: bool,
    pub reason: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("no such {0}")]
    NotFound(&'static str),
    #[error(transparent)]
    Refused(#[from] NumberRefusal),
    #[error(transparent)]
    Pick(#[from] PickError),
    #[error("{}", .0.detail)]
    Invalid(FieldError),
    #[error("it changed meanwhile: read it again")]
    Changed,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<NumberWriteError> for RelayError {
    fn from(e: NumberWriteError) -> RelayError {
        match e {
            NumberWriteError::Changed | NumberWriteError::Exists(_) => RelayError::Changed,
            NumberWriteError::Store(s) => RelayError::Store(s),
        }
    }
}

impl Herald {
    /// Changes a number; returns it as changed, and the assignments a forced change ended.
    pub async fn change_number(
        &self,
        tenant: &TenantId,
        number: &PhoneNumber,
        change: NumberChange,
        now: DateTime<Utc>,
    ) -> Result<(TenantNumber, Vec<Assignment>), RelayError> {
        let was = self
            .relay
            .number(tenant, number)
            .await?
            .ok_or(RelayError::NotFound("number"))?;
        let next = self.changed_number(&was, &change, now).await?;
        let active = self.relay.assignments_of(tenant, number, now).await?;
        let active: Vec<Assignment> = active.into_iter().filter(|a| &a.number == number).collect();
        self.guard(&was, &next, active.len(), &change, now).await?;
        self.relay.update_number(&next).await?;
        let mut ended = Vec::new();
        if !next.is_active(now) || next.role != NumberRole::Pool {
            for a in active {
                if let Some(a) = self.relay.end_assignment(tenant, a.id, now, false).await? {
                    ended.push(a);
                }
            }
        }
        Ok((next, ended))
    }

    /// The number as the change leaves it.
    async fn changed_number(
        &self,
        was: &TenantNumber,
        change: &NumberChange,
        now: DateTime<Utc>,
    ) -> Result<TenantNumber, RelayError> {
        let mut next = was.clone();
        next.role = change.role.unwrap_or(was.role);
        next.capabilities = change.capabilities.unwrap_or(was.capabilities);
        if let Some(worker) = &change.worker {
            next.worker.clone_from(worker);
        }
        if change.reason.is_some() {
            next.reason.clone_from(&change.reason);
        }
        next.state = match change.state {
            None => was.state,
            Some(StateChange::Active) => NumberState::Active,
            Some(StateChange::Inactive) => NumberState::Inactive,
            Some(StateChange::Quarantined(Some(until))) => NumberState::Quarantined { until },
            Some(StateChange::Quarantined(None)) => {
                let days = self.rules.relay_settings(&was.tenant).await?.cool_down_days;
                NumberState::Quarantined {
                    until: cool_down_end(now, days),
                }
            }
        };
        if next.role == NumberRole::Dedicated && next.worker.is_none() {
            return Err(RelayError::Refused(NumberRefusal::NoWorker));
        }
        next.version = was.version + 1;
        Ok(next)
    }

    /// The guardrails: the tenant keeps an active front desk, and a number relaying for
    /// active assignments leaves service only when forced with a reason.
    async fn guard(
        &self,
        was: &TenantNumber,
        next: &TenantNumber,
        assignments: usize,
        change: &NumberChange,
        now: DateTime<Utc>,
    ) -> Result<(), RelayError> {
        let numbers = self.relay.numbers(&was.tenant, None, 5000).await?;
        let desks = numbers
            .iter()
            .filter(|n| n.role == NumberRole::FrontDesk && n.is_active(now))
            .count();
        let leaves_desk = was.role == NumberRole::FrontDesk
            && was.is_active(now)
            && (next.role != NumberRole::FrontDesk || !next.is_active(now));
        if leaves_desk && desks <= 1 {
            return Err(NumberRefusal::LastFrontDesk(was.number.to_string()).into());
        }
        let forced = change.force && change.reason.is_some();
        // A pool number that stops being one leaves its assignments as surely as one that
        // rests: its clients' texts would go elsewhere.
        let leaves_pool = was.role == NumberRole::Pool && next.role != NumberRole::Pool;
        if leaves_pool && assignments > 0 && !forced {
            return Err(NumberRefusal::HasAssignments {
                number: was.number.to_string(),
                active: assignments,
            }
            .into());
        }
        Ok(was.check_state(next.state, (desks, assignments), forced, now)?)
    }

    /// Ends `id` now (no grace: the new worker takes over at once) and links the client with
    /// `worker` for the rest of its window, on the same number if it is free.
    pub async fn reassign(
        &self,
        tenant: &TenantId,
        id: AssignmentId,
        worker: Party,
        now: DateTime<Utc>,
    ) -> Result<(Assignment, Assignment), RelayError> {
        let old = self
            .relay
            .assignment(tenant, id)
            .await?
            .ok_or(RelayError::NotFound("assignment"))?;
        if old.end() <= now {
            return Err(RelayError::Invalid(FieldError::new(
                "/assignment",
                "ended",
                format!("assignment {id} has ended: make a new one"),
            )));
        }
        self.check_parties((&old.client.number, &worker.number))
            .await?;
        let draft = AssignmentDraft {
            tenant: tenant.clone(),
            client: old.client.clone(),
            worker,
            starts_at: now.max(old.starts_at),
            ends_at: old.ends_at,
            grace: old.grace,
            replaces: Some(id),
            prefer: Some(old.number.clone()),
        };
        // Tried first without the old assignment, so a reassignment that cannot be made
        // leaves the old one running.
        self.dry_pick(&draft, id).await?;
        let ended = self
            .relay
            .end_assignment(tenant, id, now, false)
            .await?
            .ok_or(RelayError::NotFound("assignment"))?;
        let new = self.relay.create_assignment(draft).await??;
        Ok((ended, new))
    }

    /// Two people, neither of them a relay number (a relay to a relay number would loop).
    pub async fn check_parties(
        &self,
        (client, worker): (&PhoneNumber, &PhoneNumber),
    ) -> Result<(), RelayError> {
        if client == worker {
            let detail = "the client and the worker are two people";
            return Err(RelayError::Invalid(FieldError::new(
                "/worker/number",
                "invalid",
                detail,
            )));
        }
        for (party, pointer) in [(client, "/client/number"), (worker, "/worker/number")] {
            if self.relay.number_owner(party).await?.is_some() {
                let detail = "a relay number cannot be a party";
                return Err(RelayError::Invalid(FieldError::new(
                    pointer, "invalid", detail,
                )));
            }
        }
        Ok(())
    }

    /// Whether another tenant sends from or receives at `number` by configuration: it
    /// cannot become this tenant's relay number.
    pub fn configured_elsewhere(&self, tenant: &TenantId, number: &PhoneNumber) -> bool {
        self.config.senders.iter().any(|(owner, ids)| {
            owner != tenant
                && ids
                    .iter()
                    .any(|id| id.allows(crate::domain::Channel::Sms, number.as_str()))
        })
    }

    /// Whether `draft` would find a number if assignment `without` were over.
    async fn dry_pick(
        &self,
        draft: &AssignmentDraft,
        without: AssignmentId,
    ) -> Result<(), RelayError> {
        let tenant = &draft.tenant;
        let numbers = self.relay.numbers(tenant, None, 5000).await?;
        let mut theirs = Vec::new();
        for party in [&draft.client.number, &draft.worker.number] {
            theirs.extend(
                self.relay
                    .assignments_of(tenant, party, draft.starts_at)
                    .await?,
            );
        }
        theirs.retain(|a| a.id != without);
        draft.clone().pick(&numbers, &theirs, None)?;
        Ok(())
    }
}
