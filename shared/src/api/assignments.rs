//! Assignments: `POST|GET /v1/assignments`, `GET /v1/assignments/{id}`,
//! `POST /v1/assignments/{id}/end` and `POST /v1/assignments/{id}/reassign`. Herald picks the
//! pool number; a conflict is a 409 naming the assignment in the way.

use std::sync::Arc;

use axum::extract::{rejection::PathRejection, Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::extract::{AuthTenant, Caller, JsonBody};
use super::numbers::phone;
use super::paging::{ListQuery, NoFilter};
use super::problem::{AuthErrors, JsonBodyErrors, NotFound, Problem, QueryErrors};
use crate::domain::audit::AuditAction;
use crate::domain::relay::assignment::{Assignment, AssignmentId, Party, MAX_GRACE, MAX_WINDOW};
use crate::domain::{Contact, ContactFields, FieldError, Identity, TemplateName, TenantId};
use crate::engine::relay_admin::RelayError;
use crate::engine::Herald;
use crate::ports::AssignmentDraft;

/// The grace after an assignment's end when the request names none.
const DEFAULT_GRACE_MINUTES: i64 = 60;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PartyInput {
    /// Their own number.
    #[schema(pattern = r"^\+[1-9][0-9]{7,14}$")]
    pub number: String,
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignmentInput {
    pub client: PartyInput,
    pub worker: PartyInput,
    /// Now if left out.
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: DateTime<Utc>,
    /// After the end, texts still relay and the sender hears the window is closing (0-43200;
    /// 60 if left out).
    #[schema(minimum = 0, maximum = 43200)]
    pub grace_minutes: Option<i64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndInput {
    /// Now if left out.
    pub at: Option<DateTime<Utc>>,
    /// Keep the grace after the end (true unless said otherwise).
    pub keep_grace: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReassignInput {
    /// Who takes over, now, for the rest of the window.
    pub worker: PartyInput,
    /// A template sent to the client from the assignment's number (data: `client_name`,
    /// `worker_name`, `ends_at`).
    #[schema(pattern = "^[a-z0-9][a-z0-9_.-]{0,127}$")]
    pub client_template: Option<String>,
    /// A template sent to the new worker, with the same data.
    #[schema(pattern = "^[a-z0-9][a-z0-9_.-]{0,127}$")]
    pub worker_template: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PartyView {
    pub number: String,
    pub name: Option<String>,
    pub contact_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AssignmentView {
    pub id: String,
    /// The pool number both text.
    pub number: String,
    pub client: PartyView,
    pub worker: PartyView,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub grace_minutes: i64,
    pub ended_at: Option<DateTime<Utc>>,
    pub replaces: Option<String>,
    /// `not_started`, `active`, `in_grace` or `over`, now.
    pub phase: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AssignmentPage {
    pub items: Vec<AssignmentView>,
    pub next_after: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReassignView {
    pub ended: AssignmentView,
    pub started: AssignmentView,
    /// The notices sent, by whom they went to.
    pub notices: Vec<String>,
}

impl super::paging::Cursor for AssignmentId {
    fn pattern() -> String {
        super::paging::MESSAGE_ID_PATTERN.into()
    }

    fn decode(raw: &str) -> Option<AssignmentId> {
        AssignmentId::parse(raw)
    }

    fn encode(&self) -> String {
        self.to_string()
    }
}

pub type AssignmentQuery = ListQuery<AssignmentId, NoFilter, 500>;

fn party_view(p: &Party) -> PartyView {
    PartyView {
        number: p.number.to_string(),
        name: p.name.clone(),
        contact_id: p.contact.map(|c| c.to_string()),
    }
}

pub(super) fn view(a: &Assignment) -> AssignmentView {
    AssignmentView {
        id: a.id.to_string(),
        number: a.number.to_string(),
        client: party_view(&a.client),
        worker: party_view(&a.worker),
        starts_at: a.starts_at,
        ends_at: a.ends_at,
        grace_minutes: a.grace.num_minutes(),
        ended_at: a.ended_at,
        replaces: a.replaces.map(|r| r.to_string()),
        phase: a.phase(Utc::now()).as_str().into(),
        created_at: a.created_at,
    }
}

fn assignment_id(path: Result<Path<String>, PathRejection>) -> Result<AssignmentId, Problem> {
    path.ok()
        .and_then(|Path(raw)| AssignmentId::parse(&raw))
        .ok_or_else(|| Problem::not_found("assignment"))
}

/// A party: their number, their name, and the tenant's contact with that number (made if
/// there is none, so the relay's people are the conversations' contacts).
async fn party(
    herald: &Herald,
    tenant: &TenantId,
    input: PartyInput,
    pointer: &str,
) -> Result<Party, Problem> {
    let number = phone(&input.number, &format!("{pointer}/number"))?;
    let name = match input.name {
        Some(n)
            if n.trim().is_empty()
                || n.chars().count() > 200
                || n.chars().any(char::is_control) =>
        {
            let detail = "1 to 200 characters, no control characters";
            return Err(Problem::invalid(FieldError::new(
                format!("{pointer}/name"),
                "invalid",
                detail,
            )));
        }
        other => other,
    };
    let identity = Identity::Phone(number.clone());
    let mut contact = herald
        .contacts
        .contact_by_identity(tenant, &identity)
        .await?;
    if contact.is_none() {
        let fields = ContactFields {
            name: name.clone(),
            ..ContactFields::default()
        };
        let c = Contact::new(tenant.clone(), fields, vec![identity.clone()]);
        contact = match herald.contacts.create_contact(&c).await {
            Ok(()) => Some(c.id),
            // Made meanwhile by another request: that one is theirs.
            Err(_) => {
                herald
                    .contacts
                    .contact_by_identity(tenant, &identity)
                    .await?
            }
        };
    }
    Ok(Party {
        number,
        name,
        contact,
    })
}

fn window(input: &AssignmentInput) -> Result<(DateTime<Utc>, DateTime<Utc>, Duration), Problem> {
    let invalid = |pointer: &str, detail: String| {
        Problem::invalid(FieldError::new(pointer, "invalid", detail))
    };
    let starts_at = input.starts_at.unwrap_or_else(Utc::now);
    if input.ends_at <= starts_at {
        return Err(invalid("/ends_at", "after `starts_at`".into()));
    }
    if input.ends_at - starts_at > MAX_WINDOW {
        return Err(invalid(
            "/ends_at",
            format!("a window of at most {} days", MAX_WINDOW.num_days()),
        ));
    }
    if input.ends_at <= Utc::now() {
        return Err(invalid("/ends_at", "a time to come".into()));
    }
    let minutes = input.grace_minutes.unwrap_or(DEFAULT_GRACE_MINUTES);
    if !(0..=MAX_GRACE.num_minutes()).contains(&minutes) {
        return Err(invalid(
            "/grace_minutes",
            format!("0 to {}", MAX_GRACE.num_minutes()),
        ));
    }
    Ok((starts_at, input.ends_at, Duration::minutes(minutes)))
}

/// Links a client and a worker for a window, on a pool number Herald picks.
#[utoipa::path(post, operation_id = "create_assignment", path = "/v1/assignments", tag = "relay",
    request_body = AssignmentInput,
    responses((status = 201, body = AssignmentView), AuthErrors, JsonBodyErrors,
        (status = 409, body = Problem, content_type = "application/problem+json", description = "no pool number is free for the pair; `conflicting` names the assignment in the way")),
    security(("api_key" = [])))]
pub async fn create(
    State(herald): State<Arc<Herald>>,
    caller: Caller,
    body: JsonBody<AssignmentInput>,
) -> Result<(StatusCode, Json<AssignmentView>), Problem> {
    let input = body.value;
    let (starts_at, ends_at, grace) = window(&input)?;
    let tenant = caller.tenant.clone();
    let (client, worker) = (
        phone(&input.client.number, "/client/number")?,
        phone(&input.worker.number, "/worker/number")?,
    );
    herald.check_parties((&client, &worker)).await?;
    let draft = AssignmentDraft {
        client: party(&herald, &tenant, input.client, "/client").await?,
        worker: party(&herald, &tenant, input.worker, "/worker").await?,
        tenant,
        starts_at,
        ends_at,
        grace,
        replaces: None,
        prefer: None,
    };
    let a = herald
        .relay
        .create_assignment(draft)
        .await?
        .map_err(RelayError::from)?;
    let entry = caller
        .entry(AuditAction::AssignmentCreated)
        .target(a.id.to_string());
    herald.record_audit(entry.detail(json!({ "number": a.number.as_str(), "client": a.client.number.as_str(), "worker": a.worker.number.as_str() }))).await;
    Ok((StatusCode::CREATED, Json(view(&a))))
}

/// The tenant's assignments, newest first.
#[utoipa::path(get, operation_id = "list_assignments", path = "/v1/assignments", tag = "relay",
    params(AssignmentQuery),
    responses((status = 200, body = AssignmentPage), AuthErrors, QueryErrors), security(("api_key" = [])))]
pub async fn list(
    State(herald): State<Arc<Herald>>,
    AuthTenant(tenant): AuthTenant,
    ListQuery { page, .. }: AssignmentQuery,
) -> Result<Json<AssignmentPage>, Problem> {
    let found = herald
        .relay
        .assignments(&tenant, page.after, page.limit)
        .await?;
    let next_after = page.next_after(&found, |a| a.id);
    Ok(Json(AssignmentPage {
        items: found.iter().map(view).collect(),
        next_after,
    }))
}

#[utoipa::path(get, operation_id = "get_assignment", path = "/v1/assignments/{id}", tag = "relay",
    params(("id" = String, Path, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")),
    responses((status = 200, body = AssignmentView), AuthErrors, NotFound), security(("api_key" = [])))]
pub async fn get(
    State(herald): State<Arc<Herald>>,
    AuthTenant(tenant): AuthTenant,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<AssignmentView>, Problem> {
    let id = assignment_id(path)?;
    let found = herald.relay.assignment(&tenant, id).await?;
    found
        .map(|a| Json(view(&a)))
        .ok_or_else(|| Problem::not_found("assignment"))
}

/// Ends an assignment (now unless `at` says otherwise), with its grace unless told not to.
#[utoipa::path(post, operation_id = "end_assignment", path = "/v1/assignments/{id}/end", tag = "relay",
    request_body = EndInput,
    params(("id" = String, Path, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")),
    responses((status = 200, body = AssignmentView), AuthErrors, NotFound, JsonBodyErrors), security(("api_key" = [])))]
pub async fn end(
    State(herald): State<Arc<Herald>>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    body: JsonBody<EndInput>,
) -> Result<Json<AssignmentView>, Problem> {
    let id = assignment_id(path)?;
    let at = body.value.at.unwrap_or_else(Utc::now);
    let keep_grace = body.value.keep_grace.unwrap_or(true);
    let ended = herald
        .relay
        .end_assignment(&caller.tenant, id, at, keep_grace)
        .await?;
    let a = ended.ok_or_else(|| Problem::not_found("assignment"))?;
    let entry = caller
        .entry(AuditAction::AssignmentEnded)
        .target(id.to_string());
    herald
        .record_audit(entry.detail(json!({ "at": at, "keep_grace": keep_grace })))
        .await;
    Ok(Json(view(&a)))
}

/// Replaces the worker now: the assignment ends (no grace) and another starts for the rest of
/// its window, on the same number when it is free; templated notices go to both sides.
#[utoipa::path(post, operation_id = "reassign", path = "/v1/assignments/{id}/reassign", tag = "relay",
    request_body = ReassignInput,
    params(("id" = String, Path, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")),
    responses((status = 200, body = ReassignView), AuthErrors, NotFound, JsonBodyErrors,
        (status = 409, body = Problem, content_type = "application/problem+json", description = "no pool number is free for the new pair")),
    security(("api_key" = [])))]
pub async fn reassign(
    State(herald): State<Arc<Herald>>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    body: JsonBody<ReassignInput>,
) -> Result<Json<ReassignView>, Problem> {
    let id = assignment_id(path)?;
    let input = body.value;
    let template = |raw: Option<String>, pointer: &str| {
        raw.map(|t| {
            TemplateName::parse(&t)
                .map_err(|e| Problem::invalid(FieldError::new(pointer, "invalid", e.to_string())))
        })
        .transpose()
    };
    let templates = (
        template(input.client_template, "/client_template")?,
        template(input.worker_template, "/worker_template")?,
    );
    let tenant = caller.tenant.clone();
    let worker = party(&herald, &tenant, input.worker, "/worker").await?;
    let (ended, started) = herald.reassign(&tenant, id, worker, Utc::now()).await?;
    let notices = herald.reassignment_notices(&started, templates).await?;
    for (action, a) in [
        (AuditAction::AssignmentEnded, &ended),
        (AuditAction::AssignmentCreated, &started),
    ] {
        let entry = caller.entry(action).target(a.id.to_string());
        herald
            .record_audit(entry.detail(json!({ "reassignment": true, "replaces": a.replaces })))
            .await;
    }
    Ok(Json(ReassignView {
        ended: view(&ended),
        started: view(&started),
        notices,
    }))
}
