//! `GET /v1/audit` (the tenant's audit log, newest first) and `GET /v1/audit/export` (all of
//! it that matches, as CSV, streamed page by page in constant memory). Neither this nor any
//! other route changes or deletes an entry.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::AuthTenant;
use super::paging::{Cursor, FilterQuery, ListQuery, MESSAGE_ID_PATTERN};
use super::problem::{AuthErrors, Problem, QueryErrors};
use super::ExportLimit;
use crate::domain::audit::{Actor, AuditAction, AuditEntry, AuditId};
use crate::domain::suppression::Scope;
use crate::domain::FieldError;
use crate::engine::audit_csv::{buffered, csv_pages, BufferedError};
use crate::engine::Herald;
use crate::ports::AuditFilter;

/// The filters of both routes, all optional and combined.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditFilters {
    pub action: Option<AuditAction>,
    /// `key:<prefix>`, `cli:<user>`, `system` or `anonymous`.
    #[param(pattern = "^((key|cli):[^\\x00-\\x1f\\x7f-\\x9f]{1,64}|system|anonymous)$")]
    pub actor: Option<String>,
    /// What the action was done to (a template name, `email:ann@example.com`, a message id).
    #[param(min_length = 1, max_length = 400)]
    pub target: Option<String>,
    /// At or after this time (RFC 3339).
    pub created_after: Option<DateTime<Utc>>,
    /// Before this time (RFC 3339).
    pub created_before: Option<DateTime<Utc>>,
}

/// Entries are ordered by id, newest first; a page resumes below the last id it showed.
impl Cursor for AuditId {
    fn pattern() -> String {
        MESSAGE_ID_PATTERN.into()
    }

    fn decode(raw: &str) -> Option<AuditId> {
        AuditId::parse(raw)
    }

    fn encode(&self) -> String {
        self.to_string()
    }
}

pub type AuditQuery = ListQuery<AuditId, AuditFilters, 500>;

fn filter_of(q: AuditFilters) -> Result<AuditFilter, Problem> {
    let actor = match q.actor {
        Some(raw) => Some(Actor::parse(&raw).ok_or_else(|| {
            Problem::invalid(FieldError::new(
                "/actor",
                "invalid",
                "`actor` is key:<prefix>, cli:<user>, system or anonymous",
            ))
        })?),
        None => None,
    };
    if q.target
        .as_ref()
        .is_some_and(|t| t.is_empty() || t.chars().count() > 400)
    {
        return Err(Problem::invalid(FieldError::new(
            "/target",
            "invalid",
            "`target` must be 1-400 characters",
        )));
    }
    Ok(AuditFilter {
        action: q.action,
        actor,
        target: q.target,
        after: q.created_after,
        before: q.created_before,
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditView {
    pub id: String,
    pub at: DateTime<Utc>,
    /// `key:<prefix>` (never the key), `cli:<user>`, `system` or `anonymous`.
    pub actor: String,
    pub action: AuditAction,
    pub target: Option<String>,
    /// What the action was, in detail (null when there is nothing to add).
    #[schema(value_type = Option<Object>)]
    pub detail: serde_json::Value,
    /// The caller's IP address.
    pub client: Option<String>,
    pub request_id: Option<String>,
}

impl From<AuditEntry> for AuditView {
    fn from(e: AuditEntry) -> AuditView {
        AuditView {
            id: e.id.to_string(),
            at: e.at,
            actor: e.actor.label(),
            action: e.action,
            target: e.target,
            detail: e.detail,
            client: e.client,
            request_id: e.request_id,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPageView {
    pub items: Vec<AuditView>,
    /// Pass as `after` for the next (older) page; absent at the end. A page may be short, even
    /// empty, and still have a next one: each reads a bounded slice of the log.
    pub next_after: Option<String>,
}

/// The tenant's audit log, newest first, filtered.
#[utoipa::path(get, operation_id = "list_audit", path = "/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = AuditPageView), AuthErrors, QueryErrors), security(("api_key" = [])))]
pub async fn list(
    State(herald): State<Arc<Herald>>,
    AuthTenant(tenant): AuthTenant,
    ListQuery { page, filter }: AuditQuery,
) -> Result<Json<AuditPageView>, Problem> {
    let filter = filter_of(filter)?;
    let found = herald
        .audit
        .audit_page(&Scope::Tenant(tenant), &filter, page.after, page.limit)
        .await?;
    Ok(Json(AuditPageView {
        items: found.items.into_iter().map(AuditView::from).collect(),
        next_after: found.resume_below.map(|id| id.encode()),
    }))
}

/// Every entry of the tenant's audit log that matches, newest first, as CSV.
#[utoipa::path(get, operation_id = "export_audit", path = "/v1/audit/export", tag = "audit", params(FilterQuery<AuditFilters>),
    responses((status = 200, content_type = "text/csv", body = String), AuthErrors, QueryErrors), security(("api_key" = [])))]
pub async fn export(
    State(herald): State<Arc<Herald>>,
    AuthTenant(tenant): AuthTenant,
    Extension(ExportLimit(cap)): Extension<ExportLimit>,
    FilterQuery(filter): FilterQuery<AuditFilters>,
) -> Result<Response, Problem> {
    let filter = filter_of(filter)?;
    let rows = csv_pages(herald.audit.clone(), Scope::Tenant(tenant), filter);
    let body = match cap {
        None => Body::from_stream(rows),
        Some(cap) => Body::from(buffered(rows, cap).await.map_err(|e| match e {
            BufferedError::TooLarge => Problem::export_too_large(
                cap,
                "narrow it with created_after and created_before, or read GET /v1/audit page by page",
            ),
            BufferedError::Read(e) => Problem::unavailable(e),
        })?),
    };
    let headers = [
        (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
        (
            header::CONTENT_DISPOSITION,
            "attachment; filename=\"audit.csv\"",
        ),
    ];
    Ok((headers, body).into_response())
}
