//! `GET /v1/audit` (the tenant's audit log, newest first) and `GET /v1/audit/export` (all of
//! it that matches, as CSV, streamed page by page in constant memory). Neither this nor any
//! other route changes or deletes an entry.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::AuthTenant;
use super::paging::{Cursor, FilterQuery, ListQuery, MESSAGE_ID_PATTERN};
use super::problem::{AuthErrors, Problem, QueryErrors};
use super::ExportLimit;
use crate::domain::audit::{Actor, AuditAction, AuditEntry, AuditId};
use crate::domain::suppression::Scope;
use crate::domain::FieldError;
use crate::engine::Herald;
use crate::ports::{AuditFilter, AuditLog};

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

/// Entries read per page of an export.
const EXPORT_PAGE: usize = 1_000;
/// The export's first line.
pub const CSV_HEADER: &str = "id,at,actor,action,target,client,request_id,detail\n";

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
        Some(cap) => Body::from(buffered(rows, cap).await?),
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

/// How long a buffered export may read: API Gateway gives a Lambda answer 30 s.
const BUFFERED_EXPORT_TIME: std::time::Duration = std::time::Duration::from_secs(20);

/// The whole export in memory, where a response cannot stream (Lambda); refused past `cap`
/// bytes, or past [`BUFFERED_EXPORT_TIME`] (a narrow filter over a large log).
async fn buffered(
    rows: impl Stream<Item = Result<Bytes, std::io::Error>>,
    cap: usize,
) -> Result<Vec<u8>, Problem> {
    let deadline = tokio::time::Instant::now() + BUFFERED_EXPORT_TIME;
    let mut out = Vec::new();
    let mut rows = std::pin::pin!(rows);
    while let Some(chunk) = rows.next().await {
        let chunk = chunk.map_err(Problem::unavailable)?;
        if out.len() + chunk.len() > cap || tokio::time::Instant::now() > deadline {
            return Err(Problem::export_too_large(
                cap,
                "narrow it with created_after and created_before, or read GET /v1/audit page by page",
            ));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// The CSV, one chunk per page: the header, then each page's rows as it is read. A store
/// failure mid-way ends the body with an error, so the client sees a broken transfer rather
/// than a short file that looks whole.
fn csv_pages(
    log: Arc<dyn AuditLog>,
    scope: Scope,
    filter: AuditFilter,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> {
    enum At {
        Header,
        Below(Option<AuditId>),
        Done,
    }
    futures::stream::unfold(At::Header, move |at| {
        let (log, scope, filter) = (log.clone(), scope.clone(), filter.clone());
        async move {
            let cursor = match at {
                At::Header => return Some((Ok(Bytes::from(CSV_HEADER)), At::Below(None))),
                At::Below(cursor) => cursor,
                At::Done => return None,
            };
            let page = match log.audit_page(&scope, &filter, cursor, EXPORT_PAGE).await {
                Ok(page) => page,
                Err(e) => return Some((Err(std::io::Error::other(e.to_string())), At::Done)),
            };
            let next = page.resume_below.map_or(At::Done, |id| At::Below(Some(id)));
            Some((csv_rows(&page.items), next))
        }
    })
}

/// A cell a spreadsheet will not run as a formula: text a caller chose (a request id, a path)
/// that starts like one gets a leading `'` (OWASP's advice for CSV exports). A number such as
/// `+15551234567` is not a formula and stays as it is.
fn spreadsheet_safe(cell: &str) -> String {
    let number = |rest: &str| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit());
    let formula = match cell.as_bytes().first() {
        Some(b'=' | b'@' | b'\t' | b'\r') => true,
        Some(b'+' | b'-') => !number(&cell[1..]),
        _ => false,
    };
    match formula {
        true => format!("'{cell}"),
        false => cell.to_owned(),
    }
}

/// Entries as CSV lines, under [`CSV_HEADER`].
pub fn csv_rows(entries: &[AuditEntry]) -> Result<Bytes, std::io::Error> {
    let mut out = csv::Writer::from_writer(Vec::with_capacity(entries.len() * 160));
    for e in entries {
        let detail = match &e.detail {
            serde_json::Value::Null => String::new(),
            d => d.to_string(),
        };
        let actor = e.actor.label();
        let cells = [
            e.id.to_string(),
            e.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            spreadsheet_safe(&actor),
            e.action.as_str().to_owned(),
            spreadsheet_safe(e.target.as_deref().unwrap_or_default()),
            e.client.clone().unwrap_or_default(),
            spreadsheet_safe(e.request_id.as_deref().unwrap_or_default()),
            detail,
        ];
        out.write_record(&cells)?;
    }
    out.into_inner()
        .map(Bytes::from)
        .map_err(|e| std::io::Error::other(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_that_start_like_a_formula_are_quoted_and_numbers_are_not() {
        for (cell, safe) in [
            ("=HYPERLINK(\"x\")", "'=HYPERLINK(\"x\")"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
            ("-2+3", "'-2+3"),
            ("+15551234567", "+15551234567"),
            ("welcome", "welcome"),
            ("", ""),
        ] {
            assert_eq!(spreadsheet_safe(cell), safe, "{cell}");
        }
    }
}
