//! Send, bulk send, status and cancel.

use std::sync::Arc;

use axum::extract::{rejection::PathRejection, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::json;

use super::dto::{BulkSendRequest, MessageView, SendMessageRequest};
use super::extract::{correlation_id, idempotency, AuthTenant, Caller, JsonBody};
use super::paging;
use super::problem::{AuthErrors, JsonBodyErrors, NotFound, Problem};
use crate::domain::audit::{AuditAction, AuditEntry};
use crate::domain::suppression::Scope;
use crate::domain::template::{RenderLimit, TemplateError};
use crate::domain::{FieldError, MessageId};
use crate::engine::{AcceptError, Accepted, BulkOutcome, CancelOutcome, Herald, SendOutcome};

pub(super) fn accept_problem(e: AcceptError) -> Problem {
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    match e {
        AcceptError::Invalid(fe) => Problem::invalid(fe),
        AcceptError::TemplateNotFound(name) => Problem::field(
            unprocessable,
            "template-not-found",
            FieldError::new(
                "/template",
                "not_found",
                format!("template `{name}` does not exist"),
            ),
        ),
        AcceptError::Template(TemplateError::MissingVariables { names }) => {
            let mut p = Problem::field(
                unprocessable,
                "missing-template-variable",
                FieldError::new(
                    "/data",
                    "missing_variable",
                    format!("missing template variable(s): {}", names.join(", ")),
                ),
            );
            p.missing = names;
            p
        }
        AcceptError::Template(TemplateError::Limit { limit, .. }) => {
            limit_problem("/template", limit)
        }
        AcceptError::BulkBudget(limit) => limit_problem("/recipients", limit),
        AcceptError::Template(other) => Problem::field(
            unprocessable,
            "template-invalid",
            FieldError::new("/template", "invalid", other.to_string()),
        ),
        AcceptError::KeyReused => Problem::new(
            unprocessable,
            "idempotency-key-reused",
            "this Idempotency-Key was already used with a different request body",
        ),
        AcceptError::Store(e) => Problem::unavailable(e),
    }
}

/// A render limit hit: a 422 that names the limit (`fuel`, `time`, `output_bytes`).
pub(crate) fn limit_problem(pointer: &str, limit: RenderLimit) -> Problem {
    let mut p = Problem::field(
        StatusCode::UNPROCESSABLE_ENTITY,
        "template-limit",
        FieldError::new(
            pointer,
            limit.name(),
            format!("rendering exceeded its limit on {limit}"),
        ),
    );
    p.limit = Some(limit.name().to_owned());
    p
}

pub(super) fn respond<T: Serialize>(accepted: Accepted<T>) -> Response {
    match accepted {
        Accepted::New(body) => (StatusCode::ACCEPTED, Json(body)).into_response(),
        Accepted::Replay { status, body } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::ACCEPTED);
            let mut res = (
                status,
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response();
            res.headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            res
        }
    }
}

pub(crate) fn message_id(path: Result<Path<String>, PathRejection>) -> Result<MessageId, Problem> {
    path.ok()
        .and_then(|Path(id)| paging::message_id(&id))
        .ok_or_else(|| Problem::not_found("message"))
}

/// Accept one message.
#[utoipa::path(post, operation_id = "send_message", path = "/v1/messages", tag = "messages",
    request_body = SendMessageRequest,
    params(("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$",
            description = "replays the first response for the same body")),
    responses((status = 202, body = SendOutcome, links(
                  ("GetMessage" = (operation_id = "get_message", parameters(("id" = "$response.body#/id")))),
                  ("CancelMessage" = (operation_id = "cancel_message", parameters(("id" = "$response.body#/id")))))),
              AuthErrors, JsonBodyErrors),
    security(("api_key" = [])))]
pub async fn send(
    State(herald): State<Arc<Herald>>,
    AuthTenant(tenant): AuthTenant,
    headers: HeaderMap,
    body: JsonBody<SendMessageRequest>,
) -> Result<Response, Problem> {
    let idem = idempotency(&headers, "/v1/messages", &body.raw)?;
    let joining = super::threads::joining(&herald, &tenant, &body.value).await?;
    let draft = body
        .value
        .into_draft(&correlation_id(&headers))
        .map_err(Problem::invalid)?;
    let accepted = herald
        .send(&tenant, draft, idem)
        .await
        .map_err(accept_problem)?;
    super::threads::join(&herald, &tenant, joining, &accepted).await;
    Ok(respond(accepted))
}

/// Accept up to 10,000 messages in one request.
#[utoipa::path(post, operation_id = "send_bulk", path = "/v1/messages/bulk", tag = "messages",
    request_body = BulkSendRequest,
    params(("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$",
            description = "replays the first response for the same body")),
    responses((status = 202, body = BulkOutcome), AuthErrors, JsonBodyErrors),
    security(("api_key" = [])))]
pub async fn send_bulk(
    State(herald): State<Arc<Herald>>,
    AuthTenant(tenant): AuthTenant,
    headers: HeaderMap,
    body: JsonBody<BulkSendRequest>,
) -> Result<Response, Problem> {
    let idem = idempotency(&headers, "/v1/messages/bulk", &body.raw)?;
    let draft = body
        .value
        .into_draft(&correlation_id(&headers))
        .map_err(Problem::invalid)?;
    let accepted = herald
        .send_bulk(&tenant, draft, idem)
        .await
        .map_err(accept_problem)?;
    Ok(respond(accepted))
}

/// A message, its status, and its events, oldest first.
#[utoipa::path(get, operation_id = "get_message", path = "/v1/messages/{id}", tag = "messages",
    params(("id" = String, Path, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
             description = "message id (paging::MESSAGE_ID_PATTERN)")),
    responses((status = 200, body = MessageView), AuthErrors, NotFound),
    security(("api_key" = [])))]
pub async fn get(
    State(herald): State<Arc<Herald>>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<MessageView>, Problem> {
    let id = message_id(path)?;
    let Some((m, events)) = herald.message(&caller.tenant, id).await? else {
        return Err(not_found(&herald, &caller, id).await);
    };
    Ok(Json(MessageView::new(m, Some(events))))
}

/// Cancel a message that has not reached a gateway yet.
#[utoipa::path(delete, operation_id = "cancel_message", path = "/v1/messages/{id}", tag = "messages",
    params(("id" = String, Path, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
             description = "message id (paging::MESSAGE_ID_PATTERN)")),
    responses((status = 200, body = SendOutcome), AuthErrors, NotFound,
              (status = 409, body = Problem, content_type = "application/problem+json", description = "already handed to a gateway")),
    security(("api_key" = [])))]
pub async fn cancel(
    State(herald): State<Arc<Herald>>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<SendOutcome>, Problem> {
    let id = message_id(path)?;
    match herald.cancel(&caller.tenant, id).await? {
        CancelOutcome::Cancelled => {
            let entry = caller.entry(AuditAction::MessageCancelled).target(id.to_string());
            herald.record_audit(entry).await;
            Ok(Json(SendOutcome {
                id,
                status: crate::domain::MessageStatus::Cancelled,
                not_before: None,
            }))
        }
        CancelOutcome::TooLate(status) => Err(Problem::new(
            StatusCode::CONFLICT,
            "already-dispatched",
            format!("the message is {status}: it already reached a gateway or ended, so it cannot be cancelled"),
        )),
        CancelOutcome::NotFound => Err(not_found(&herald, &caller, id).await),
    }
}

/// The 404 of a message id the caller's tenant does not have. When another tenant has it, the
/// probe is recorded in the platform's audit log; the caller cannot tell the two apart.
async fn not_found(herald: &Arc<Herald>, caller: &Caller, id: MessageId) -> Problem {
    record_foreign_probes(herald, caller, vec![id]);
    Problem::not_found("message")
}

/// Records, in the platform's audit log, a bulk id the caller's tenant does not have if it is
/// another tenant's bulk send (in the background, as for messages).
pub(super) fn record_foreign_bulk_probe(herald: &Arc<Herald>, caller: &Caller, bulk_id: String) {
    let template = probe_entry(caller, "another tenant's bulk send");
    let (herald, tenant) = (herald.clone(), caller.tenant.clone());
    tokio::spawn(async move {
        if let Ok(Some(owner)) = herald.store.bulk_owner(&bulk_id).await {
            if owner != tenant {
                herald.audit_denial(template.target(bulk_id)).await;
            }
        }
    });
}

/// A denial in the platform's log, naming the prober's tenant.
fn probe_entry(caller: &Caller, reason: &str) -> AuditEntry {
    let mut entry = caller
        .entry(AuditAction::AccessDenied)
        .detail(json!({ "reason": reason, "tenant": caller.tenant.as_str() }));
    entry.scope = Scope::Global;
    entry
}

/// The most ids of one request looked up as possible probes.
const MAX_PROBES_CHECKED: usize = 100;

/// Records, in the platform's audit log, each of `ids` that is another tenant's message. In
/// the background: an answer must not take longer when an id exists elsewhere.
pub(super) fn record_foreign_probes(herald: &Arc<Herald>, caller: &Caller, ids: Vec<MessageId>) {
    if ids.is_empty() {
        return;
    }
    let template = probe_entry(caller, "another tenant's message");
    let (herald, tenant) = (herald.clone(), caller.tenant.clone());
    tokio::spawn(async move {
        for id in ids.into_iter().take(MAX_PROBES_CHECKED) {
            if let Ok(Some(owner)) = herald.store.owner_of(id).await {
                if owner != tenant {
                    herald
                        .audit_denial(template.clone().target(id.to_string()))
                        .await;
                }
            }
        }
    });
}
