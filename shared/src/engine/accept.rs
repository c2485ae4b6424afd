//! Accept: validate, render, persist as `queued` with its event, and wake the lane.

use chrono::Utc;
use serde::Serialize;
use utoipa::ToSchema;

use super::suppress::suppression_note;
use super::Herald;
use crate::domain::compose::{Addressee, Composer};
use crate::domain::sender::{self, SenderIdentity};
use crate::domain::template::{RenderLimit, RenderLimits, TemplateError};
use crate::domain::{
    BulkIds, BulkJob, BulkJobRecipient, Channel, ComposeError, DeliveryOptions, FieldError,
    MessageId, MessageStatus, NewMessage, Priority, Recipient, Template, TemplateName, TenantId,
    MAX_BULK_RECIPIENTS,
};
pub use crate::domain::{ContentSource, Envelope};
use crate::ports::{AcceptBatch, AcceptOutcome, IdempotencyRecord, StoreError};

#[derive(Debug, Clone)]
pub struct SendDraft {
    pub envelope: Envelope,
    pub to: Recipient,
    /// The caller's own id for this message (searchable: `GET /v1/messages?external_id=`).
    pub external_id: Option<String>,
    /// A turn in a conversation (a relayed text, an auto-reply, a reply in a thread): quiet
    /// hours do not hold it, since the person just wrote.
    pub conversational: bool,
}

impl SendDraft {
    /// A turn Herald takes in a conversation on its own (an auto-reply, a relay leg, a
    /// reassignment notice, a reply typed in the console): P1, not held by quiet hours, sent
    /// now. Callers set `from`, `data`, `message_type` and `metadata` as they need.
    pub fn conversational(
        (channel, to): (Channel, Recipient),
        content: ContentSource,
        (source_type, source_id): (&str, String),
        correlation_id: String,
    ) -> SendDraft {
        SendDraft {
            envelope: Envelope {
                channel,
                priority: crate::domain::Priority::P1,
                from: None,
                content,
                data: serde_json::json!({}),
                message_type: None,
                source_type: Some(source_type.to_owned()),
                source_id: Some(source_id),
                metadata: None,
                send_at: None,
                correlation_id,
                locale: None,
            },
            to,
            external_id: None,
            conversational: true,
        }
    }
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
    /// Set when quiet hours hold the message (`status` is `deferred`): when it will go.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_before: Option<chrono::DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BulkOutcome {
    pub bulk_id: String,
    /// Accepted to go: due now or scheduled, and those quiet hours hold.
    pub queued: usize,
    /// Of `queued`, those held by quiet hours (`deferred` until their window opens).
    pub deferred: usize,
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

impl Accepted<SendOutcome> {
    /// The message accepted (or accepted before, for a replay).
    pub fn message_id(&self) -> Option<crate::domain::MessageId> {
        match self {
            Accepted::New(outcome) => Some(outcome.id),
            Accepted::Replay { body, .. } => serde_json::from_str::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v["id"].as_str().and_then(crate::domain::MessageId::parse)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error("{}", .0.detail)]
    Invalid(FieldError),
    #[error("template `{0}` does not exist")]
    TemplateNotFound(TemplateName),
    #[error("{0}")]
    Template(TemplateError),
    #[error("the bulk request exceeds its total render budget on {0}")]
    BulkBudget(RenderLimit),
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

/// Recipients validated per trip to the render pool: other requests' renders run in between.
const CHECK_CHUNK: usize = 500;

/// A bulk send's recipients sorted into accepted and rejected.
struct CheckedBulk {
    envelope: Envelope,
    template: Option<Template>,
    accepted: Vec<BulkJobRecipient>,
    rejected: Vec<RejectedRecipient>,
}

impl CheckedBulk {
    fn check_chunk(
        &mut self,
        chunk: Vec<BulkRecipient>,
        limits: RenderLimits,
        tenant: &TenantId,
        job: BulkIds,
        created_at: chrono::DateTime<Utc>,
        spent: &mut BulkBudget,
    ) -> Result<(), AcceptError> {
        let composer = Composer::new(&self.envelope, self.template.as_ref(), limits)?;
        let bulk_id = job.bulk_id();
        for r in chunk {
            // The n-th accepted recipient's id is the job's n-th: see `domain::bulk_ids`.
            let Some(id) = job.recipient(self.accepted.len()) else {
                self.rejected.push(RejectedRecipient {
                    index: r.index,
                    reason: format!("a bulk send takes at most {MAX_BULK_RECIPIENTS} recipients"),
                });
                continue;
            };
            let who = Addressee {
                id,
                to: r.to.as_str(),
                data: r.data.as_ref(),
                bulk_id: Some(&bulk_id),
                external_id: r.external_id.as_deref(),
                suppressed: None,
                deferred: None,
            };
            match composer.compose(tenant, who, created_at) {
                Ok(message) => {
                    spent.add_bytes(message.content.byte_len());
                    self.accepted.push(BulkJobRecipient {
                        id,
                        to: r.to.as_str().to_owned(),
                        data: r.data,
                        external_id: r.external_id,
                        suppressed: None,
                        deferred: None,
                    });
                }
                Err(e) => self.rejected.push(RejectedRecipient {
                    index: r.index,
                    reason: e.to_string(),
                }),
            }
        }
        Ok(())
    }
}

/// What a whole bulk request may spend rendering: every recipient's content together, and the
/// time the renders take. Over either, the request is refused before anything is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkRenderBudget {
    pub bytes: usize,
    pub time: std::time::Duration,
}

impl BulkRenderBudget {
    const UNLIMITED: BulkRenderBudget = BulkRenderBudget {
        bytes: usize::MAX,
        time: std::time::Duration::MAX,
    };
}

impl Default for BulkRenderBudget {
    fn default() -> Self {
        BulkRenderBudget {
            bytes: 256 * 1024 * 1024,
            time: std::time::Duration::from_secs(30),
        }
    }
}

/// A budget being spent.
struct BulkBudget {
    limit: BulkRenderBudget,
    bytes: usize,
    time: std::time::Duration,
    started: std::time::Instant,
}

impl BulkBudget {
    fn new(limit: BulkRenderBudget) -> BulkBudget {
        BulkBudget {
            limit,
            bytes: 0,
            time: std::time::Duration::ZERO,
            started: std::time::Instant::now(),
        }
    }

    fn add_bytes(&mut self, n: usize) {
        self.bytes = self.bytes.saturating_add(n);
    }

    /// Adds a chunk's spending (its bytes, and the time since it was started).
    fn spend(&mut self, chunk: BulkBudget) -> Result<(), AcceptError> {
        self.bytes = self.bytes.saturating_add(chunk.bytes);
        self.time += chunk.started.elapsed();
        if self.bytes > self.limit.bytes {
            return Err(AcceptError::BulkBudget(RenderLimit::Bytes(
                self.limit.bytes,
            )));
        }
        if self.time > self.limit.time {
            return Err(AcceptError::BulkBudget(RenderLimit::Time(self.limit.time)));
        }
        Ok(())
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
        let conversational = draft.conversational;
        let (mut message, options) = self.compose_single(tenant, draft).await?;
        if let Some(entry) = self
            .suppressed_for(
                tenant,
                message.channel,
                &[message.to.as_str()],
                options.topic.as_ref(),
            )
            .await?
            .into_values()
            .next()
        {
            message.status = MessageStatus::Suppressed;
            message.note = Some(suppression_note(&entry));
        }
        let not_before = match conversational {
            true => None,
            false => {
                let zone = options.recipient_timezone.map(|t| t.0);
                self.hold_single(tenant, &mut message, zone).await?
            }
        };
        let outcome = SendOutcome {
            id: message.id,
            status: message.status,
            not_before,
        };
        let lane = message.priority;
        // A message quiet hours hold is queued as far as the platform is concerned.
        let announced_status = match message.status {
            MessageStatus::Deferred => MessageStatus::Queued,
            other => other,
        };
        let announced = (message.id, announced_status, message.note.clone());
        let pending = message.status.is_pending();
        let due_now = message.status == MessageStatus::Queued
            && message.send_at.is_none_or(|at| at <= Utc::now());
        let counted = usize::from(pending && due_now);
        let replay = self
            .persist_counted(
                lane,
                counted,
                tenant,
                Work::Single(message),
                idempotency,
                &outcome,
            )
            .await?;
        if replay.is_none() {
            let (id, status, note) = announced;
            let detail = note.unwrap_or(serde_json::Value::Null);
            self.notify_message(Some(tenant), id, status.into(), Utc::now(), &detail)
                .await;
            if pending {
                self.wake(lane, false);
            }
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
        let mut draft = draft;
        let options = self.check_envelope(tenant, &mut draft.envelope).await?;
        let template = self.load_template(tenant, &draft.envelope.content).await?;
        let template = pick_variant(&mut draft.envelope, template);
        let created_at = Utc::now();
        let job_ids = BulkIds::new(created_at);
        let bulk_id = job_ids.bulk_id();
        let checked = self
            .check_recipients(tenant, draft, template, job_ids, created_at)
            .await?;
        let CheckedBulk {
            envelope: env,
            template,
            mut accepted,
            mut rejected,
        } = checked;
        rejected.sort_by_key(|r| r.index);
        // One batched look-up for every recipient, never one per recipient.
        let addresses: Vec<&str> = accepted.iter().map(|r| r.to.as_str()).collect();
        let found = self
            .suppressed_for(tenant, env.channel, &addresses, options.topic.as_ref())
            .await?;
        let mut suppressed = 0;
        for r in &mut accepted {
            if let Some(entry) = found.get(&r.to) {
                r.suppressed = Some(suppression_note(entry));
                suppressed += 1;
            }
        }
        let zone = options.recipient_timezone.map(|t| t.0);
        let deferred = self.hold_bulk(tenant, &env, zone, &mut accepted).await?;
        let queued = accepted.len() - suppressed;
        let due_now = if env.send_at.is_none_or(|at| at <= Utc::now()) {
            queued - deferred
        } else {
            0
        };
        let lane = env.priority;
        let outcome = BulkOutcome {
            bulk_id: bulk_id.clone(),
            queued,
            deferred,
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
        let notices = self.bulk_notices(&job).await;
        let replay = self
            .persist_counted(
                lane,
                due_now,
                tenant,
                Work::Bulk(job),
                idempotency,
                &outcome,
            )
            .await?;
        if replay.is_none() {
            self.announce_bulk(notices).await;
            self.wake(lane, true);
        }
        Ok(replay.unwrap_or(Accepted::New(outcome)))
    }

    /// Renders every recipient once to validate it, in chunks on the render pool, within the
    /// bulk budget; nothing rendered is kept (the messages are rendered again when written).
    async fn check_recipients(
        &self,
        tenant: &TenantId,
        draft: BulkDraft,
        template: Option<Template>,
        job: BulkIds,
        created_at: chrono::DateTime<Utc>,
    ) -> Result<CheckedBulk, AcceptError> {
        let mut checked = CheckedBulk {
            envelope: draft.envelope,
            template,
            accepted: Vec::with_capacity(draft.recipients.len()),
            rejected: draft.rejected,
        };
        let mut budget = BulkBudget::new(self.config.bulk_render);
        let mut pending = draft.recipients.into_iter().peekable();
        while pending.peek().is_some() {
            let chunk: Vec<BulkRecipient> = pending.by_ref().take(CHECK_CHUNK).collect();
            let (limits, owner) = (self.config.render, tenant.clone());
            let (back, spent) = self
                .render_off_async(move || {
                    let mut spent = BulkBudget::new(BulkRenderBudget::UNLIMITED);
                    let result =
                        checked.check_chunk(chunk, limits, &owner, job, created_at, &mut spent);
                    (checked, result.map(|()| spent))
                })
                .await?;
            checked = back;
            budget.spend(spent?)?;
        }
        Ok(checked)
    }

    /// Runs `work` on a blocking thread, at most one per permit of the render pool.
    pub(crate) async fn render_off_async<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, AcceptError> {
        let _permit = self
            .render_pool
            .acquire()
            .await
            .map_err(|_| StoreError::Unavailable("render pool closed".into()))?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| AcceptError::Store(StoreError::Unavailable(format!("render failed: {e}"))))
    }

    /// The message of a single send. Inline content is only checked; a template runs in the
    /// render pool, never on the async workers, so a slow one cannot stall other requests.
    async fn compose_single(
        &self,
        tenant: &TenantId,
        mut draft: SendDraft,
    ) -> Result<(NewMessage, DeliveryOptions), AcceptError> {
        let options = self.check_envelope(tenant, &mut draft.envelope).await?;
        let template_named = matches!(draft.envelope.content, ContentSource::Template(_));
        let template = self.load_template(tenant, &draft.envelope.content).await?;
        if template.as_ref().is_some_and(|t| !t.locales.is_empty())
            && draft.envelope.locale.is_none()
        {
            let contact = self.recipient_contact(tenant, draft.envelope.channel, draft.to.as_str());
            draft.envelope.locale = contact.await?.and_then(|f| f.locale());
        }
        let template = pick_variant(&mut draft.envelope, template);
        let limits = self.config.render;
        let owner = tenant.clone();
        let compose = move || {
            let who = Addressee {
                id: MessageId::new(),
                to: draft.to.as_str(),
                data: None,
                bulk_id: None,
                external_id: draft.external_id.as_deref(),
                suppressed: None,
                deferred: None,
            };
            Composer::new(&draft.envelope, template.as_ref(), limits)?.compose(
                &owner,
                who,
                Utc::now(),
            )
        };
        let message = match template_named {
            false => compose()?,
            true => self.render_off_async(compose).await??,
        };
        Ok((message, options))
    }

    /// What every send is held to before any rendering: its delivery options parse (parsed
    /// once here, for the whole accept; the locale asked for goes on the envelope), and its
    /// `from` is one of the tenant's sender identities.
    async fn check_envelope(
        &self,
        tenant: &TenantId,
        env: &mut Envelope,
    ) -> Result<DeliveryOptions, AcceptError> {
        let options =
            DeliveryOptions::from_metadata(env.metadata.as_ref()).map_err(AcceptError::Invalid)?;
        env.locale = options.locale.clone();
        let Some(from) = env.from.as_deref() else {
            return Ok(options);
        };
        if !sender::needs_identity(env.channel)
            || self.may_send_as(tenant, env.channel, from).await?
        {
            return Ok(options);
        }
        Err(AcceptError::Invalid(FieldError::new(
            "/from",
            "sender_not_allowed",
            format!(
                "`{from}` is not one of this tenant's sender identities; add it with \
                 PUT /v1/sender-identities/{{identity}}, or leave `from` out to use the gateway's sender"
            ),
        )))
    }

    /// Whether `from` is one of the tenant's sender identities for `channel` (configured, or
    /// added through the API).
    pub async fn may_send_as(
        &self,
        tenant: &TenantId,
        channel: Channel,
        from: &str,
    ) -> Result<bool, StoreError> {
        let allows = |ids: &[SenderIdentity]| ids.iter().any(|i| i.allows(channel, from));
        if self
            .config
            .senders
            .get(tenant)
            .is_some_and(|ids| allows(ids))
            || allows(&self.tenants.sender_identities(tenant).await?)
        {
            return Ok(true);
        }
        self.owns_active_number(tenant, channel, from).await
    }

    /// Whether `from` is one of the tenant's relay numbers, active, and able to carry
    /// `channel`.
    async fn owns_active_number(
        &self,
        tenant: &TenantId,
        channel: Channel,
        from: &str,
    ) -> Result<bool, StoreError> {
        let number = match (channel, crate::domain::PhoneNumber::parse(from)) {
            (Channel::Sms | Channel::Whatsapp, Ok(n)) => n,
            _ => return Ok(false),
        };
        let Some(n) = self.relay.number(tenant, &number).await? else {
            return Ok(false);
        };
        let carries = match channel {
            Channel::Whatsapp => n.capabilities.whatsapp,
            _ => n.capabilities.sms,
        };
        Ok(carries && n.is_active(chrono::Utc::now()))
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

    /// `persist`, with the `due` messages counted for the bulk workers' priority gate before they
    /// are stored (their claim can come the moment they are: `pool.rs`, parked claims, and a
    /// claim before its count would leave the count up for good), and the count taken back when
    /// nothing new was stored.
    async fn persist_counted<T: Serialize>(
        &self,
        lane: Priority,
        due: usize,
        tenant: &TenantId,
        work: Work,
        idempotency: Option<IdempotencyInput>,
        response: &T,
    ) -> Result<Option<Accepted<T>>, AcceptError> {
        self.priority_gate.arrived(lane, due);
        let replay = self.persist(tenant, work, idempotency, response).await;
        if !matches!(replay, Ok(None)) {
            self.priority_gate.withdrawn(lane, due);
        }
        replay
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

/// The template variant for the envelope's locale; the envelope then records the one chosen
/// (none for the template's default, and for inline content).
fn pick_variant(env: &mut Envelope, template: Option<Template>) -> Option<Template> {
    let (chosen, variant) = match template {
        None => (None, None),
        Some(t) => {
            let (chosen, variant) = t.variant(env.locale.as_ref());
            (chosen, Some(variant))
        }
    };
    env.locale = chosen;
    variant
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
