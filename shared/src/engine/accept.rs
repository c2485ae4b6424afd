//! Accept: validate, render, persist as `queued` with its event, and wake the lane.

use chrono::Utc;
use serde::Serialize;
use utoipa::ToSchema;

use super::suppress::suppression_note;
use super::Herald;
use crate::domain::compose::{Addressee, Composer};
use crate::domain::template::TemplateError;
use crate::domain::{
    BulkJob, BulkJobRecipient, ComposeError, FieldError, MessageId, MessageStatus, NewMessage,
    Recipient, Template, TemplateName, TenantId,
};
pub use crate::domain::{ContentSource, Envelope};
use crate::ports::{AcceptBatch, AcceptOutcome, IdempotencyRecord, StoreError};

#[derive(Debug, Clone)]
pub struct SendDraft {
    pub envelope: Envelope,
    pub to: Recipient,
}

#[derive(Debug, Clone)]
pub struct BulkRecipient {
    pub index: usize,
    pub to: Recipient,
    pub data: Option<serde_json::Value>,
    pub external_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct BulkDraft {
    pub envelope: Envelope,
    pub recipients: Vec<BulkRecipient>,
    /// Recipients refused while parsing; reported beside the ones refused at render time.
    pub rejected: Vec<RejectedRecipient>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RejectedRecipient {
    pub index: usize,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SendOutcome {
    #[schema(value_type = String, format = Uuid)]
    pub id: MessageId,
    pub status: MessageStatus,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BulkOutcome {
    pub bulk_id: String,
    pub queued: usize,
    pub suppressed: usize,
    pub rejected: Vec<RejectedRecipient>,
}

#[derive(Debug, Clone)]
pub struct IdempotencyInput {
    pub key: String,
    pub request_hash: String,
}

/// A new response, or the stored one for a replayed `Idempotency-Key`.
#[derive(Debug, Clone)]
pub enum Accepted<T> {
    New(T),
    Replay { status: u16, body: String },
}

#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error("{}", .0.detail)]
    Invalid(FieldError),
    #[error("template `{0}` does not exist")]
    TemplateNotFound(TemplateName),
    #[error("{0}")]
    Template(TemplateError),
    #[error("this Idempotency-Key was used with a different request")]
    KeyReused,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ComposeError> for AcceptError {
    fn from(e: ComposeError) -> AcceptError {
        match e {
            ComposeError::Invalid(fe) => AcceptError::Invalid(fe),
            ComposeError::Template(te) => AcceptError::Template(te),
            ComposeError::TemplateMissing(name) => AcceptError::TemplateNotFound(name),
        }
    }
}

/// What one accept writes.
enum Work {
    Single(NewMessage),
    Bulk(BulkJob),
}

const ACCEPTED: u16 = 202;

impl Herald {
    pub async fn send(
        &self,
        tenant: &TenantId,
        draft: SendDraft,
        idempotency: Option<IdempotencyInput>,
    ) -> Result<Accepted<SendOutcome>, AcceptError> {
        // A replay answers from the stored response, whatever changed since (templates, ...).
        if let Some(replay) = self.replay(tenant, idempotency.as_ref()).await? {
            return Ok(replay);
        }
        let template = self.load_template(tenant, &draft.envelope.content).await?;
        let mut message = Composer::new(&draft.envelope, template.as_ref())?.compose(
            tenant,
            Addressee {
                id: MessageId::new(),
                to: draft.to.as_str(),
                data: None,
                bulk_id: None,
                external_id: None,
                suppressed: None,
            },
            Utc::now(),
        )?;
        let channel = draft.envelope.channel;
        if let Some(entry) = self
            .suppressed_recipients(tenant, channel, &[draft.to.as_str()])
            .await?
            .into_values()
            .next()
        {
            message.status = MessageStatus::Suppressed;
            message.note = Some(suppression_note(&entry));
        }
        let outcome = SendOutcome {
            id: message.id,
            status: message.status,
        };
        let lane = message.priority;
        let queued = message.status == MessageStatus::Queued;
        let due_now = queued && message.send_at.is_none_or(|at| at <= Utc::now());
        let replay = self
            .persist(tenant, Work::Single(message), idempotency, &outcome)
            .await?;
        if replay.is_none() && queued {
            if due_now {
                self.priority_gate.arrived(lane, 1);
            }
            self.wake(lane, false);
        }
        Ok(replay.unwrap_or(Accepted::New(outcome)))
    }

    pub async fn send_bulk(
        &self,
        tenant: &TenantId,
        draft: BulkDraft,
        idempotency: Option<IdempotencyInput>,
    ) -> Result<Accepted<BulkOutcome>, AcceptError> {
        // A replay answers from the stored response, whatever changed since (templates, ...).
        if let Some(replay) = self.replay(tenant, idempotency.as_ref()).await? {
            return Ok(replay);
        }
        let env = draft.envelope;
        let template = self.load_template(tenant, &env.content).await?;
        // Compiled once; each recipient is rendered here to validate it, and rendered again
        // when its message is written, from the stored job.
        let composer = Composer::new(&env, template.as_ref())?;
        let bulk_id = format!("bulk_{}", uuid::Uuid::now_v7().simple());
        let created_at = Utc::now();
        let mut rejected = draft.rejected;
        let mut accepted = Vec::with_capacity(draft.recipients.len());
        for r in draft.recipients {
            let id = MessageId::new();
            let checked = composer.compose(
                tenant,
                Addressee {
                    id,
                    to: r.to.as_str(),
                    data: r.data.as_ref(),
                    bulk_id: Some(&bulk_id),
                    external_id: r.external_id.as_deref(),
                    suppressed: None,
                },
                created_at,
            );
            match checked {
                Ok(_) => accepted.push(BulkJobRecipient {
                    id,
                    to: r.to.as_str().to_owned(),
                    data: r.data,
                    external_id: r.external_id,
                    suppressed: None,
                }),
                Err(e) => rejected.push(RejectedRecipient {
                    index: r.index,
                    reason: e.to_string(),
                }),
            }
        }
        drop(composer);
        rejected.sort_by_key(|r| r.index);
        // One batched look-up for every recipient, never one per recipient.
        let addresses: Vec<&str> = accepted.iter().map(|r| r.to.as_str()).collect();
        let found = self
            .suppressed_recipients(tenant, env.channel, &addresses)
            .await?;
        let mut suppressed = 0;
        for r in &mut accepted {
            if let Some(entry) = found.get(&r.to) {
                r.suppressed = Some(suppression_note(entry));
                suppressed += 1;
            }
        }
        let queued = accepted.len() - suppressed;
        let due_now = if env.send_at.is_none_or(|at| at <= Utc::now()) {
            queued
        } else {
            0
        };
        let lane = env.priority;
        let outcome = BulkOutcome {
            bulk_id: bulk_id.clone(),
            queued,
            suppressed,
            rejected,
        };
        let job = BulkJob {
            bulk_id,
            tenant: tenant.clone(),
            envelope: env,
            template,
            recipients: accepted,
            created_at,
        };
        let replay = self
            .persist(tenant, Work::Bulk(job), idempotency, &outcome)
            .await?;
        if replay.is_none() {
            self.priority_gate.arrived(lane, due_now);
            self.wake(lane, true);
        }
        Ok(replay.unwrap_or(Accepted::New(outcome)))
    }

    /// The template a send names, loaded once per request.
    async fn load_template(
        &self,
        tenant: &TenantId,
        source: &ContentSource,
    ) -> Result<Option<Template>, AcceptError> {
        match source {
            ContentSource::Inline(_) => Ok(None),
            ContentSource::Template(name) => self
                .templates
                .get(tenant, name)
                .await?
                .map(Some)
                .ok_or_else(|| AcceptError::TemplateNotFound(name.clone())),
        }
    }

    async fn replay<T>(
        &self,
        tenant: &TenantId,
        idempotency: Option<&IdempotencyInput>,
    ) -> Result<Option<Accepted<T>>, AcceptError> {
        let Some(input) = idempotency else {
            return Ok(None);
        };
        match self.store.find_idempotency(tenant, &input.key).await? {
            None => Ok(None),
            Some(stored) => replay_of(input, stored).map(Some),
        }
    }

    /// Writes messages and the idempotency record in one unit; `Some` when the key was seen before.
    async fn persist<T: Serialize>(
        &self,
        tenant: &TenantId,
        work: Work,
        idempotency: Option<IdempotencyInput>,
        response: &T,
    ) -> Result<Option<Accepted<T>>, AcceptError> {
        let record = idempotency.as_ref().map(|i| IdempotencyRecord {
            tenant: tenant.clone(),
            key: i.key.clone(),
            request_hash: i.request_hash.clone(),
            response_status: ACCEPTED,
            response_body: serde_json::to_string(response).unwrap_or_default(),
        });
        let stored = match work {
            Work::Single(message) => {
                self.store
                    .accept(AcceptBatch {
                        messages: vec![message],
                        idempotency: record,
                    })
                    .await?
            }
            Work::Bulk(job) => self.store.accept_bulk(job, record).await?,
        };
        match stored {
            AcceptOutcome::Accepted => Ok(None),
            AcceptOutcome::KeyExists(existing) => match idempotency {
                Some(input) => replay_of(&input, existing).map(Some),
                None => Err(AcceptError::KeyReused),
            },
        }
    }
}

/// Stripe semantics: the same key with the same request replays; with another request it is refused.
fn replay_of<T>(
    input: &IdempotencyInput,
    stored: IdempotencyRecord,
) -> Result<Accepted<T>, AcceptError> {
    if input.request_hash == stored.request_hash {
        Ok(Accepted::Replay {
            status: stored.response_status,
            body: stored.response_body,
        })
    } else {
        Err(AcceptError::KeyReused)
    }
}
