//! Accept: validate, render, persist as `queued` with its event, and wake the lane.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::Herald;
use crate::domain::content::{self, ContentOrigin};
use crate::domain::sms::SmsInfo;
use crate::domain::template::{CompiledTemplate, TemplateError};
use crate::domain::{
    Channel, Content, FieldError, MessageId, MessageStatus, NewMessage, Priority, Recipient,
    Template, TemplateName, TenantId,
};
use crate::ports::{AcceptBatch, AcceptOutcome, IdempotencyRecord, StoreError};

#[derive(Debug, Clone)]
pub enum ContentSource {
    Inline(Content),
    Template(TemplateName),
}

/// Fields every send carries, single or bulk.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub channel: Channel,
    pub priority: Priority,
    pub from: Option<String>,
    pub content: ContentSource,
    pub data: serde_json::Value,
    pub message_type: Option<String>,
    pub source_type: Option<String>,
    pub source_id: Option<String>,
    pub metadata: Option<serde_json::Value>,
    pub send_at: Option<DateTime<Utc>>,
    pub correlation_id: String,
}

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
        let source = self.load_content(tenant, &draft.envelope.content).await?;
        let (content, sms) = source
            .compile()?
            .render(draft.envelope.channel, &draft.envelope.data)?;
        let message = new_message(
            tenant,
            &draft.envelope,
            draft.to.as_str(),
            content,
            sms,
            None,
            None,
        );
        let outcome = SendOutcome {
            id: message.id,
            status: message.status,
        };
        let lane = message.priority;
        let due_now = message.send_at.is_none_or(|at| at <= Utc::now());
        let replay = self
            .persist(tenant, vec![message], idempotency, &outcome)
            .await?;
        if replay.is_none() {
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
        let env = &draft.envelope;
        let source = self.load_content(tenant, &env.content).await?;
        // Compiled once, rendered per recipient.
        let renderer = source.compile()?;
        let bulk_id = format!("bulk_{}", uuid::Uuid::now_v7().simple());
        let mut rejected = draft.rejected;
        let mut messages = Vec::with_capacity(draft.recipients.len());
        for r in draft.recipients {
            let merged;
            let data = match &r.data {
                Some(own) => {
                    merged = merge_data(&env.data, own);
                    &merged
                }
                None => &env.data,
            };
            match renderer.render(env.channel, data) {
                Ok((content, sms)) => messages.push(new_message(
                    tenant,
                    env,
                    r.to.as_str(),
                    content,
                    sms,
                    Some(bulk_id.clone()),
                    r.external_id,
                )),
                Err(e) => rejected.push(RejectedRecipient {
                    index: r.index,
                    reason: e.to_string(),
                }),
            }
        }
        rejected.sort_by_key(|r| r.index);
        let suppressed = messages
            .iter()
            .filter(|m| m.status == MessageStatus::Suppressed)
            .count();
        let due_now = if env.send_at.is_none_or(|at| at <= Utc::now()) {
            messages.len() - suppressed
        } else {
            0
        };
        let outcome = BulkOutcome {
            bulk_id,
            queued: messages.len() - suppressed,
            suppressed,
            rejected,
        };
        let replay = self
            .persist(tenant, messages, idempotency, &outcome)
            .await?;
        if replay.is_none() {
            self.priority_gate.arrived(env.priority, due_now);
            self.wake(env.priority, true);
        }
        Ok(replay.unwrap_or(Accepted::New(outcome)))
    }

    async fn load_content<'a>(
        &self,
        tenant: &TenantId,
        source: &'a ContentSource,
    ) -> Result<Source<'a>, AcceptError> {
        match source {
            ContentSource::Inline(content) => Ok(Source::Inline(content)),
            ContentSource::Template(name) => self
                .templates
                .get(tenant, name)
                .await?
                .map(Source::Template)
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
        messages: Vec<NewMessage>,
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
        match self
            .store
            .accept(AcceptBatch {
                messages,
                idempotency: record,
            })
            .await?
        {
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

/// The request's data with one recipient's data over it.
fn merge_data(shared: &serde_json::Value, own: &serde_json::Value) -> serde_json::Value {
    match (shared, own) {
        (serde_json::Value::Object(base), serde_json::Value::Object(extra)) => {
            let mut merged = base.clone();
            merged.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
            serde_json::Value::Object(merged)
        }
        (_, own) => own.clone(),
    }
}

/// A request's content as loaded: inline, or the stored template it names.
enum Source<'a> {
    Inline(&'a Content),
    Template(Template),
}

impl Source<'_> {
    fn compile(&self) -> Result<Renderer<'_>, AcceptError> {
        Ok(match self {
            Source::Inline(content) => Renderer::Inline(content),
            Source::Template(t) => Renderer::Template(Box::new(
                CompiledTemplate::compile(t).map_err(AcceptError::Template)?,
            )),
        })
    }
}

/// Content ready to render per recipient: the template is compiled once.
enum Renderer<'a> {
    Inline(&'a Content),
    Template(Box<CompiledTemplate<'a>>),
}

impl Renderer<'_> {
    /// Renders for one recipient's data and checks the result against the channel's rules; for
    /// SMS it returns the encoding and segments to store.
    fn render(
        &self,
        channel: Channel,
        data: &serde_json::Value,
    ) -> Result<(Content, Option<SmsInfo>), AcceptError> {
        let (content, origin) = match self {
            Renderer::Inline(content) => ((*content).clone(), ContentOrigin::Inline),
            Renderer::Template(t) => (
                t.render(data).map_err(AcceptError::Template)?,
                ContentOrigin::Template,
            ),
        };
        let sms = content::check(channel, &content, origin).map_err(AcceptError::Invalid)?;
        Ok((content, sms))
    }
}

fn new_message(
    tenant: &TenantId,
    env: &Envelope,
    to: &str,
    content: Content,
    sms: Option<SmsInfo>,
    bulk_id: Option<String>,
    external_id: Option<String>,
) -> NewMessage {
    NewMessage {
        id: MessageId::new(),
        tenant: tenant.clone(),
        channel: env.channel,
        priority: env.priority,
        to: to.to_owned(),
        from: env.from.clone(),
        content,
        template: match &env.content {
            ContentSource::Template(n) => Some(n.as_str().to_owned()),
            ContentSource::Inline(_) => None,
        },
        sms,
        message_type: env.message_type.clone(),
        source_type: env.source_type.clone(),
        source_id: env.source_id.clone(),
        metadata: env.metadata.clone(),
        send_at: env.send_at,
        bulk_id,
        external_id,
        correlation_id: env.correlation_id.clone(),
        status: MessageStatus::Queued,
        created_at: Utc::now(),
    }
}
