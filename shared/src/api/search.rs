//! `GET /v1/messages` (search) and `GET /v1/bulk/{bulk_id}` (a bulk send's progress).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::dto::{label, MessageView};
use super::extract::{AuthTenant, Caller};
use super::paging::{Cursor, ListQuery};
use super::problem::{AuthErrors, NotFound, Problem, QueryErrors};
use crate::domain::{Channel, FieldError, MessageId, MessageStatus, Priority};
use crate::engine::Herald;
use crate::ports::{BulkSummary, MessageFilter};

/// `GET /v1/messages`'s filters, all optional and combined.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SearchFilters {
    pub status: Option<MessageStatus>,
    pub channel: Option<Channel>,
    pub priority: Option<Priority>,
    /// The recipient: an email address or E.164 number is matched as Herald stores it
    /// (normalised), other addresses exactly.
    #[param(min_length = 1, max_length = 320)]
    pub to: Option<String>,
    #[param(min_length = 1, max_length = 128)]
    pub source_type: Option<String>,
    #[param(min_length = 1, max_length = 128)]
    pub source_id: Option<String>,
    #[param(min_length = 1, max_length = 128)]
    pub external_id: Option<String>,
    #[param(min_length = 1, max_length = 128)]
    pub bulk_id: Option<String>,
    /// Accepted at or after this time (RFC 3339).
    pub created_after: Option<DateTime<Utc>>,
    /// Accepted before this time (RFC 3339).
    pub created_before: Option<DateTime<Utc>>,
}

/// `GET /v1/messages`'s query: filters, pages of up to 500.
pub type SearchQuery = ListQuery<MessageId, SearchFilters, 500>;

#[derive(Debug, Serialize, ToSchema)]
pub struct MessagePage {
    /// Newest first; without `body` and `html` (`GET /v1/messages/{id}` has them).
    pub items: Vec<MessageView>,
    /// Pass as `after` for the next (older) page; absent when nothing older matches. A page
    /// may be short, even empty, and still have a next one: each page reads a bounded slice
    /// of the tenant's messages.
    pub next_after: Option<String>,
}

fn filter_of(q: SearchFilters) -> Result<MessageFilter, Problem> {
    let checked = |name: &str, v: Option<String>| label(name, v).map_err(Problem::invalid);
    let to = match q.to {
        Some(t) if t.is_empty() || t.chars().count() > 320 => {
            return Err(Problem::invalid(FieldError::new(
                "/to",
                "invalid",
                "`to` must be 1-320 characters",
            )))
        }
        Some(t) => Some(Channel::stored_recipient(t, q.channel)),
        None => None,
    };
    Ok(MessageFilter {
        status: q.status,
        channel: q.channel,
        priority: q.priority,
        to,
        source_type: checked("source_type", q.source_type)?,
        source_id: checked("source_id", q.source_id)?,
        external_id: checked("external_id", q.external_id)?,
        bulk_id: checked("bulk_id", q.bulk_id)?,
        created_after: q.created_after,
        created_before: q.created_before,
    })
}

/// The tenant's messages, newest first, filtered.
#[utoipa::path(get, operation_id = "search_messages", path = "/v1/messages", tag = "messages", params(SearchQuery),
    responses((status = 200, body = MessagePage), AuthErrors, QueryErrors), security(("api_key" = [])))]
pub async fn list(
    State(herald): State<Arc<Herald>>,
    AuthTenant(tenant): AuthTenant,
    ListQuery { page, filter }: SearchQuery,
) -> Result<Json<MessagePage>, Problem> {
    let filter = filter_of(filter)?;
    let found = herald
        .store
        .search(&tenant, &filter, page.after, page.limit)
        .await?;
    let items = found
        .items
        .into_iter()
        .map(|mut m| {
            (m.content.body, m.content.html) = (None, None);
            MessageView::new(m, None)
        })
        .collect();
    Ok(Json(MessagePage {
        items,
        next_after: found.resume_below.map(|id| id.encode()),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BulkView {
    pub bulk_id: String,
    /// Recipients accepted (messages written, and those still being written).
    pub total: u64,
    /// Accepted recipients whose messages are still being written.
    pub pending: u64,
    /// Messages by their status now (absent statuses have none).
    #[schema(value_type = Object)]
    pub counts: BTreeMap<MessageStatus, u64>,
}

/// A bulk id as Herald hands them out.
pub const BULK_ID_PATTERN: &str = "^bulk_[0-9a-f]{32}$";

fn bulk_id(path: Result<Path<String>, PathRejection>) -> Result<String, Problem> {
    let Ok(Path(raw)) = path else {
        return Err(Problem::not_found("bulk send"));
    };
    let valid = raw.len() == 37
        && raw.strip_prefix("bulk_").is_some_and(|hex| {
            hex.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
    match valid {
        true => Ok(raw),
        false => Err(Problem::not_found("bulk send")),
    }
}

/// A bulk send's progress: its messages by status.
#[utoipa::path(get, operation_id = "get_bulk", path = "/v1/bulk/{bulk_id}", tag = "messages",
    params(("bulk_id" = String, Path, pattern = "^bulk_[0-9a-f]{32}$", description = "the `bulk_id` of the bulk send's 202 (search::BULK_ID_PATTERN)")),
    responses((status = 200, body = BulkView), AuthErrors, NotFound), security(("api_key" = [])))]
pub async fn bulk(
    State(herald): State<Arc<Herald>>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<BulkView>, Problem> {
    let bulk_id = bulk_id(path)?;
    let Some(progress) = herald.store.bulk_progress(&caller.tenant, &bulk_id).await? else {
        super::messages::record_foreign_bulk_probe(&herald, &caller, bulk_id);
        return Err(Problem::not_found("bulk send"));
    };
    Ok(Json(BulkView {
        total: progress.by_status.values().sum::<u64>() + progress.pending,
        pending: progress.pending,
        counts: progress.by_status,
        bulk_id,
    }))
}

/// A tenant's recent bulk sends.
#[derive(Debug, Serialize, ToSchema)]
pub struct BulkList {
    /// Newest first: at most 50, accepted in the last 30 days.
    pub items: Vec<BulkSummary>,
}

/// The tenant's recent bulk sends, newest first; each one's progress is `GET /v1/bulk/{id}`.
#[utoipa::path(get, operation_id = "list_bulk", path = "/v1/bulk", tag = "messages",
    responses((status = 200, body = BulkList), AuthErrors), security(("api_key" = [])))]
pub async fn bulk_list(
    State(herald): State<Arc<Herald>>,
    caller: Caller,
) -> Result<Json<BulkList>, Problem> {
    let items = herald.recent_bulk_sends(&caller.tenant).await?;
    Ok(Json(BulkList { items }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn bulk_ids_are_checked_before_any_read() {
        let ok = format!("bulk_{}", uuid::Uuid::now_v7().simple());
        assert_eq!(bulk_id(Ok(Path(ok.clone()))).unwrap(), ok);
        for bad in ["bulk_", "bulk_XYZ", "../etc", &format!("{ok}0")] {
            assert_eq!(bulk_id(Ok(Path(bad.to_owned()))).unwrap_err().status, 404);
        }
    }
}
