//! Threads: `GET /v1/threads`, `GET|PATCH /v1/threads/{id}`, `POST /v1/threads/{id}/read` and
//! `POST /v1/threads/{id}/messages` (a reply through the normal lanes). A tenant sees its own
//! threads only: another tenant's id is a 404, as a missing one is.

use std::sync::Arc;

use axum::extract::{rejection::PathRejection, Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::contacts::given;
use super::dto::SendMessageRequest;
use super::extract::{correlation_id, idempotency, AuthTenant, Caller, JsonBody};
use super::messages::{accept_problem, respond};
use super::paging::{Cursor, Flag, ListQuery, Page};
use super::problem::{AuthErrors, JsonBodyErrors, NotFound, Problem, QueryErrors};
use crate::domain::thread::{
    Direction, Thread, ThreadCursor, ThreadEntry, ThreadFilter, ThreadId, ThreadPatch,
    ThreadStatus, MAX_LABEL,
};
use crate::domain::{Channel, FieldError, MessageId, MessageStatus, Priority, TenantId};
use crate::engine::{Accepted, Herald, SendOutcome};

#[derive(Debug, Serialize, ToSchema)]
pub struct InsightsView {
    pub label: Option<String>,
    pub next_step: Option<String>,
    pub next_followup_at: Option<DateTime<Utc>>,
    pub summary: Option<String>,
    /// Who set them last: `key:<prefix>`, what the caller named in `set_by`, or `rule:<name>`.
    pub set_by: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EntryView {
    pub message_id: String,
    pub direction: Direction,
    pub channel: Channel,
    pub from: String,
    pub to: String,
    pub body: String,
    pub at: DateTime<Utc>,
    /// An outbound message's delivery status now.
    pub status: Option<MessageStatus>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ThreadView {
    pub id: String,
    pub contact_id: String,
    pub status: ThreadStatus,
    pub assignee: Option<String>,
    pub unread: u32,
    pub last_inbound_at: Option<DateTime<Utc>>,
    pub last_outbound_at: Option<DateTime<Utc>>,
    pub last_activity_at: DateTime<Utc>,
    /// Where a reply goes unless the caller says otherwise: the channel the contact last wrote
    /// on, to the address it wrote from, from the address it wrote to.
    pub reply_channel: Option<Channel>,
    pub reply_to: Option<String>,
    pub reply_from: Option<String>,
    pub insights: InsightsView,
    /// A person answers: inbound rules send no auto-replies (until the thread is closed).
    pub human_takeover: bool,
    pub created_at: DateTime<Utc>,
    /// `GET /v1/threads/{id}` only: inbound and outbound messages, oldest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeline: Option<Vec<EntryView>>,
    /// More of the timeline: `GET /v1/threads/{id}?after=<this>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeline_next_after: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ThreadPage {
    pub items: Vec<ThreadView>,
    pub next_after: Option<String>,
}

/// `GET /v1/threads`'s filters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ThreadQueryFilter {
    pub status: Option<ThreadStatus>,
    #[param(min_length = 1, max_length = 200)]
    pub label: Option<String>,
    #[param(min_length = 1, max_length = 200)]
    pub assignee: Option<String>,
    /// `true`: threads with unread messages; `false`: without.
    #[param(inline)]
    pub unread: Option<Flag>,
    /// The channel a reply would go on.
    pub channel: Option<Channel>,
    /// Threads whose `next_followup_at` is before this time (RFC 3339).
    pub followup_due_before: Option<DateTime<Utc>>,
}

impl Cursor for ThreadCursor {
    fn pattern() -> String {
        r"^[0-9]{13}\.[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
            .into()
    }

    fn decode(raw: &str) -> Option<ThreadCursor> {
        ThreadCursor::parse(raw)
    }

    fn encode(&self) -> String {
        self.key()
    }
}

pub type ThreadQuery = ListQuery<ThreadCursor, ThreadQueryFilter, 500>;
/// The timeline's page: `after` a message id.
/// At most 100 a page: each reply's status is read with it.
pub type TimelineQuery = ListQuery<MessageId, super::paging::NoFilter, 100>;

/// A change: a field given replaces the stored one, `null` clears it.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ThreadPatchInput {
    pub status: Option<ThreadStatus>,
    /// The platform's user id.
    #[serde(default, deserialize_with = "given")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub assignee: Option<Option<String>>,
    #[serde(default, deserialize_with = "given")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub label: Option<Option<String>>,
    #[serde(default, deserialize_with = "given")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 1000, pattern = r"^[^\u0000-\u0008\u000b-\u001f\u007f-\u009f]*$")]
    pub next_step: Option<Option<String>>,
    #[serde(default, deserialize_with = "given")]
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub next_followup_at: Option<Option<DateTime<Utc>>>,
    #[serde(default, deserialize_with = "given")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 4000, pattern = r"^[^\u0000-\u0008\u000b-\u001f\u007f-\u009f]*$")]
    pub summary: Option<Option<String>>,
    /// `true`: a person answers, and rules send no auto-replies until the thread is closed;
    /// `false` lets them again.
    pub human_takeover: Option<bool>,
    /// Who sets the insights (an AI worker's name, a user id); the API key's prefix if left
    /// out.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub set_by: Option<String>,
}

/// A reply: what `POST /v1/messages` takes, but `to` comes from the thread.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplyInput {
    /// The thread's reply channel if left out.
    pub channel: Option<Channel>,
    /// P1 if left out.
    pub priority: Option<Priority>,
    /// The address the contact last wrote to on this channel if left out (when the tenant may
    /// send as it).
    pub from: Option<String>,
    pub subject: Option<String>,
    pub body: Option<String>,
    pub html: Option<String>,
    pub template: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub data: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    #[schema(min_length = 1, max_length = 128)]
    pub message_type: Option<String>,
    #[schema(min_length = 1, max_length = 128)]
    pub external_id: Option<String>,
}

fn view(t: Thread) -> ThreadView {
    let i = t.insights;
    let reply = t.reply;
    ThreadView {
        id: t.id.to_string(),
        contact_id: t.contact.to_string(),
        status: t.status,
        assignee: t.assignee,
        unread: t.unread,
        last_inbound_at: t.last_inbound_at,
        last_outbound_at: t.last_outbound_at,
        last_activity_at: t.last_activity_at,
        reply_channel: reply.as_ref().map(|r| r.channel),
        reply_to: reply.as_ref().map(|r| r.to.clone()),
        reply_from: reply.map(|r| r.from),
        insights: InsightsView {
            label: i.label,
            next_step: i.next_step,
            next_followup_at: i.next_followup_at,
            summary: i.summary,
            set_by: i.set_by,
        },
        human_takeover: t.human_takeover,
        created_at: t.created_at,
        timeline: None,
        timeline_next_after: None,
    }
}

fn thread_id(path: Result<Path<String>, PathRejection>) -> Result<ThreadId, Problem> {
    path.ok()
        .and_then(|Path(raw)| ThreadId::parse(&raw))
        .ok_or_else(|| Problem::not_found("thread"))
}

async fn found(herald: &Herald, caller: &Caller, id: ThreadId) -> Result<Thread, Problem> {
    herald
        .threads
        .thread(&caller.tenant, id)
        .await?
        .ok_or_else(|| Problem::not_found("thread"))
}

/// The tenant's threads, latest activity first. A page reads at most 1,000 threads: when a
/// filter matches few, it comes back short, with `next_after` to read on.
#[utoipa::path(get, operation_id = "list_threads", path = "/v1/threads", tag = "threads",
    params(ThreadQuery),
    responses((status = 200, body = ThreadPage), AuthErrors, QueryErrors), security(("api_key" = [])))]
pub async fn list(
    State(herald): State<Arc<Herald>>,
    AuthTenant(tenant): AuthTenant,
    ListQuery { page, filter }: ThreadQuery,
) -> Result<Json<ThreadPage>, Problem> {
    for (name, value) in [("label", &filter.label), ("assignee", &filter.assignee)] {
        if value
            .as_deref()
            .is_some_and(|v| v.is_empty() || v.chars().count() > MAX_LABEL)
        {
            let detail = format!("`{name}` is 1 to {MAX_LABEL} characters");
            return Err(Problem::invalid(FieldError::new(
                format!("/{name}"),
                "invalid",
                detail,
            )));
        }
    }
    let filter = ThreadFilter {
        status: filter.status,
        label: filter.label,
        assignee: filter.assignee,
        unread: filter.unread.map(Flag::yes),
        channel: filter.channel,
        followup_due_before: filter.followup_due_before,
    };
    let scan = herald
        .threads
        .threads(&tenant, &filter, page.after, page.limit)
        .await?;
    // A short page with a cursor: the read budget ran out before the page filled.
    let next_after = scan.resume.map(|c| c.encode());
    let items = scan.items.into_iter().map(view).collect();
    Ok(Json(ThreadPage { items, next_after }))
}

/// The timeline's entries as shown: an outbound one with its message's status now.
async fn entry_views(
    herald: &Herald,
    caller: &Caller,
    entries: Vec<ThreadEntry>,
) -> Vec<EntryView> {
    use futures::StreamExt;
    let view = |e: ThreadEntry| async move {
        let status = match e.direction {
            Direction::Outbound => herald
                .store
                .get(&caller.tenant, e.message)
                .await
                .ok()
                .flatten()
                .map(|(m, _)| m.status),
            Direction::Inbound => None,
        };
        EntryView {
            message_id: e.message.to_string(),
            direction: e.direction,
            channel: e.channel,
            from: e.from,
            to: e.to,
            body: e.body,
            at: e.at,
            status,
        }
    };
    // The replies' statuses are read a few at a time, in order, not one after another.
    futures::stream::iter(entries)
        .map(view)
        .buffered(16)
        .collect()
        .await
}

/// A thread with a page of its timeline (`limit` entries, 100 by default, `after` a message id).
#[utoipa::path(get, operation_id = "get_thread", path = "/v1/threads/{id}", tag = "threads",
    params(("id" = String, Path, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"), TimelineQuery),
    responses((status = 200, body = ThreadView), AuthErrors, NotFound, QueryErrors), security(("api_key" = [])))]
pub async fn get(
    State(herald): State<Arc<Herald>>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    ListQuery { page, .. }: TimelineQuery,
) -> Result<Json<ThreadView>, Problem> {
    let thread = found(&herald, &caller, thread_id(path)?).await?;
    let entries = herald
        .threads
        .thread_entries(&caller.tenant, thread.id, page.after, page.limit)
        .await?;
    let next = Page::<MessageId, 100>::next_after(&page, &entries, |e| e.message);
    let mut v = view(thread);
    v.timeline = Some(entry_views(&herald, &caller, entries).await);
    v.timeline_next_after = next;
    Ok(Json(v))
}

/// Changes status, assignee or insights.
#[utoipa::path(patch, operation_id = "update_thread", path = "/v1/threads/{id}", tag = "threads",
    params(("id" = String, Path, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")), request_body = ThreadPatchInput,
    responses((status = 200, body = ThreadView), AuthErrors, NotFound, JsonBodyErrors), security(("api_key" = [])))]
pub async fn update(
    State(herald): State<Arc<Herald>>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    body: JsonBody<ThreadPatchInput>,
) -> Result<Json<ThreadView>, Problem> {
    let id = thread_id(path)?;
    let input = body.value;
    let patch = ThreadPatch {
        status: input.status,
        assignee: input.assignee,
        label: input.label,
        next_step: input.next_step,
        next_followup_at: input.next_followup_at,
        summary: input.summary,
        human_takeover: input.human_takeover,
        set_by: input.set_by.clone().unwrap_or_else(|| caller.actor()),
    };
    patch.check().map_err(Problem::invalid)?;
    let updated = herald
        .threads
        .update_thread(&caller.tenant, id, &patch)
        .await?
        .ok_or_else(|| Problem::not_found("thread"))?;
    Ok(Json(view(updated)))
}

/// Clears the unread count.
#[utoipa::path(post, operation_id = "read_thread", path = "/v1/threads/{id}/read", tag = "threads",
    params(("id" = String, Path, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")),
    responses((status = 200, body = ThreadView), AuthErrors, NotFound), security(("api_key" = [])))]
pub async fn read(
    State(herald): State<Arc<Herald>>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<ThreadView>, Problem> {
    let id = thread_id(path)?;
    let t = herald
        .threads
        .mark_read(&caller.tenant, id)
        .await?
        .ok_or_else(|| Problem::not_found("thread"))?;
    Ok(Json(view(t)))
}

/// The contact's address on `channel`: the one it last wrote from there, else its identity of
/// that kind.
async fn reply_to(herald: &Herald, t: &Thread, channel: Channel) -> Result<String, Problem> {
    herald.reply_address(t, channel).await?.ok_or_else(|| {
        Problem::invalid(FieldError::new(
            "/channel",
            "no_identity",
            format!("the thread's contact has no {} identity", channel.as_str()),
        ))
    })
}

/// Sends a reply through the normal lanes (P1 unless given) and adds it to the timeline.
#[utoipa::path(post, operation_id = "reply_in_thread", path = "/v1/threads/{id}/messages", tag = "threads",
    request_body = ReplyInput,
    params(("id" = String, Path, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"),
        ("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$",
            description = "replays the first response for the same body")),
    responses((status = 202, body = SendOutcome), AuthErrors, NotFound, JsonBodyErrors),
    security(("api_key" = [])))]
pub async fn reply(
    State(herald): State<Arc<Herald>>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: JsonBody<ReplyInput>,
) -> Result<Response, Problem> {
    let thread = found(&herald, &caller, thread_id(path)?).await?;
    let idem = idempotency(
        &headers,
        &format!("/v1/threads/{}/messages", thread.id),
        &body.raw,
    )?;
    let input = body.value;
    let channel = input
        .channel
        .or_else(|| thread.reply.as_ref().map(|r| r.channel))
        .ok_or_else(|| {
            Problem::invalid(FieldError::new(
                "/channel",
                "required",
                "the thread has no inbound message to reply to: give `channel`",
            ))
        })?;
    let to = reply_to(&herald, &thread, channel).await?;
    let from = match input.from {
        Some(from) => Some(from),
        None => default_from(&herald, &thread, channel).await?,
    };
    let request = SendMessageRequest {
        channel,
        priority: input.priority.unwrap_or(Priority::P1),
        to,
        from,
        subject: input.subject,
        body: input.body,
        html: input.html,
        template: input.template,
        data: input.data,
        message_type: input.message_type,
        source_type: Some("thread".into()),
        source_id: Some(thread.id.to_string()),
        metadata: input.metadata,
        send_at: None,
        external_id: input.external_id,
        thread_id: None,
    };
    let joining = Joining::of(Some(thread.id), &request);
    let mut draft = request
        .into_draft(&correlation_id(&headers))
        .map_err(Problem::invalid)?;
    // A reply in a conversation is not held by quiet hours: the contact wrote first.
    draft.conversational = true;
    let accepted = herald
        .send(&caller.tenant, draft, idem)
        .await
        .map_err(accept_problem)?;
    join(&herald, &caller.tenant, joining, &accepted).await;
    Ok(respond(accepted))
}

/// A message on its way into a thread: the thread it names (none: its recipient's, if a
/// contact has the address), and what its timeline entry shows.
pub(super) struct Joining {
    thread: Option<ThreadId>,
    channel: Channel,
    from: String,
    to: String,
    preview: String,
}

impl Joining {
    fn of(thread: Option<ThreadId>, r: &SendMessageRequest) -> Joining {
        let template = r.template.as_ref().map(|t| format!("[template {t}]"));
        Joining {
            thread,
            channel: r.channel,
            from: r.from.clone().unwrap_or_default(),
            to: r.to.clone(),
            preview: r.body.clone().or(template).unwrap_or_default(),
        }
    }
}

/// The thread a send joins: the tenant's thread it names with `thread_id` (else a 422 at
/// `/thread_id`), or, naming none, its recipient's.
pub(super) async fn joining(
    herald: &Herald,
    tenant: &TenantId,
    r: &SendMessageRequest,
) -> Result<Joining, Problem> {
    let Some(raw) = r.thread_id.as_deref() else {
        return Ok(Joining::of(None, r));
    };
    let unknown = || {
        Problem::invalid(FieldError::new(
            "/thread_id",
            "not_found",
            "no such thread of this tenant",
        ))
    };
    let id = ThreadId::parse(raw).ok_or_else(unknown)?;
    herald
        .threads
        .thread(tenant, id)
        .await?
        .ok_or_else(unknown)?;
    Ok(Joining::of(Some(id), r))
}

/// Adds an accepted message to its thread's timeline (again for a replayed request: the
/// thread keeps it once). The message is on its way whatever happens here, so a failure is
/// logged, not answered: a caller told "error" would send it again.
pub(super) async fn join(
    herald: &Herald,
    tenant: &TenantId,
    j: Joining,
    accepted: &Accepted<SendOutcome>,
) {
    let Some(id) = accepted.message_id() else {
        return;
    };
    let now = Utc::now();
    let thread = match j.thread {
        Some(thread) => thread,
        None => match herald.send_thread(tenant, j.channel, &j.to, now).await {
            Ok(Some(thread)) => thread,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(error = %e, message = %id, "a sent message's thread was not found");
                return;
            }
        },
    };
    let entry = ThreadEntry::new(
        id,
        Direction::Outbound,
        j.channel,
        (j.from, j.to),
        &j.preview,
        now,
    );
    if let Err(e) = herald.threads.record_outbound(tenant, thread, &entry).await {
        tracing::error!(error = %e, %thread, message = %id, "a sent message did not join its thread");
    }
}

/// The address the contact last wrote to, if the tenant may send as it; else the gateway's.
async fn default_from(
    herald: &Herald,
    thread: &Thread,
    channel: Channel,
) -> Result<Option<String>, Problem> {
    Ok(herald.reply_sender(thread, channel).await?)
}
