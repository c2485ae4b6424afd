//! The audit log (admin keys only, as `GET /v1/audit`): newest first, by action and actor, and
//! the same filters as a CSV download, streamed where the server can stream.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde::{Deserialize, Serialize};

use super::pages::{self, Page};
use super::session::SignedIn;
use super::ExportCap;
use super::PageQuery;
use crate::domain::audit::{Actor, AuditAction, AuditId};
use crate::domain::suppression::Scope;
use crate::engine::audit_csv::{buffered, csv_pages};
use crate::engine::Herald;
use crate::ports::AuditFilter;

const PAGE_SIZE: usize = 100;

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct AuditForm {
    #[serde(default)]
    action: String,
    #[serde(default)]
    actor: String,
    #[serde(default, skip_serializing)]
    after: String,
}

impl AuditForm {
    fn filter(&self) -> Result<AuditFilter, String> {
        let action = match self.action.trim() {
            "" => None,
            a => Some(AuditAction::parse(a).ok_or_else(|| format!("`{a}` is not an action"))?),
        };
        let actor = match self.actor.trim() {
            "" => None,
            a => Some(Actor::parse(a).ok_or_else(|| {
                "An actor is key:<prefix>, cli:<user>, system or anonymous.".to_owned()
            })?),
        };
        Ok(AuditFilter {
            action,
            actor,
            ..AuditFilter::default()
        })
    }
}

/// The filter an admin asked for, or the page that refuses.
fn admin_filter(who: &SignedIn, form: &AuditForm) -> Result<AuditFilter, Response> {
    who.require_admin()?;
    form.filter()
        .map_err(|why| pages::error(StatusCode::UNPROCESSABLE_ENTITY, &why))
}

/// `GET /console/audit`
pub async fn list(
    State(herald): State<Arc<Herald>>,
    who: SignedIn,
    PageQuery(form): PageQuery<AuditForm>,
) -> Response {
    let filter = match admin_filter(&who, &form) {
        Ok(filter) => filter,
        Err(refused) => return refused,
    };
    let scope = Scope::Tenant(who.tenant.clone());
    let after = AuditId::parse(form.after.trim());
    let Ok(found) = herald
        .audit
        .audit_page(&scope, &filter, after, PAGE_SIZE)
        .await
    else {
        return pages::unavailable();
    };
    let query = serde_urlencoded::to_string(&form).unwrap_or_default();
    let entries: Vec<_> = found
        .items
        .iter()
        .map(|e| {
            minijinja::context! {
                at => e.at, actor => e.actor.label(), action => e.action.as_str(),
                target => &e.target, client => &e.client,
                detail => if e.detail.is_null() { String::new() } else { e.detail.to_string() },
            }
        })
        .collect();
    let page = Page::new("audit.html", "Audit log").with(minijinja::context! {
        who => super::who(&who),
        section => "audit",
        items => entries,
        form => &form,
        actions => AuditAction::ALL.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
        export => format!("/console/audit/export?{query}"),
        next => found.resume_below.map(|id| format!("/console/audit?{query}&after={id}")),
    });
    pages::render(&page)
}

/// `GET /console/audit/export`: every matching entry as CSV.
pub async fn export(
    State(herald): State<Arc<Herald>>,
    who: SignedIn,
    Extension(ExportCap(cap)): Extension<ExportCap>,
    PageQuery(form): PageQuery<AuditForm>,
) -> Response {
    let filter = match admin_filter(&who, &form) {
        Ok(filter) => filter,
        Err(refused) => return refused,
    };
    let rows = csv_pages(
        herald.audit.clone(),
        Scope::Tenant(who.tenant.clone()),
        filter,
    );
    let body = match cap {
        None => Body::from_stream(rows),
        Some(cap) => match buffered(rows, cap).await {
            Ok(all) => Body::from(all),
            Err(_) => {
                let why = "The export is larger than this server answers at once: filter it by action or actor.";
                return pages::error(StatusCode::UNPROCESSABLE_ENTITY, why);
            }
        },
    };
    let headers = [
        (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
        (
            header::CONTENT_DISPOSITION,
            "attachment; filename=\"audit.csv\"",
        ),
    ];
    (headers, body).into_response()
}
