//! `GET /v1/inbound`: messages the tenant's recipients sent back, newest first, paged.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::AuthTenant;
use super::problem::Problem;
use crate::domain::{Channel, FieldError, InboundMessage, Keyword, MessageId};
use crate::engine::Herald;

#[derive(Debug, Serialize, ToSchema)]
pub struct InboundView {
    #[schema(value_type = String, format = Uuid)]
    pub id: MessageId,
    pub channel: Channel,
    pub gateway: String,
    pub provider_message_id: String,
    pub from: String,
    pub to: String,
    pub body: String,
    pub media_urls: Vec<String>,
    /// The carrier keyword the body is (`stop`, `start`, `help`), acted on for SMS.
    #[schema(value_type = Option<String>)]
    pub keyword: Option<Keyword>,
    pub received_at: DateTime<Utc>,
}

impl From<InboundMessage> for InboundView {
    fn from(m: InboundMessage) -> Self {
        InboundView {
            id: m.id,
            channel: m.channel,
            gateway: m.gateway,
            provider_message_id: m.provider_message_id,
            from: m.from,
            to: m.to,
            body: m.body,
            media_urls: m.media_urls,
            keyword: m.keyword,
            received_at: m.received_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InboundPage {
    pub items: Vec<InboundView>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    pub next_before: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundQuery {
    limit: Option<usize>,
    before: Option<String>,
}

fn query_error(pointer: &str, detail: &str) -> Problem {
    Problem::invalid(FieldError::new(pointer, "invalid", detail))
}

/// The tenant's inbound messages, newest first.
#[utoipa::path(get, path = "/v1/inbound", tag = "inbound",
    params(("limit" = Option<usize>, Query, description = "1-1000, default 100"),
           ("before" = Option<String>, Query, description = "next_before of the previous page")),
    responses((status = 200, body = InboundPage), (status = 422, body = Problem)), security(("api_key" = [])))]
pub async fn list(
    State(herald): State<Arc<Herald>>,
    AuthTenant(tenant): AuthTenant,
    query: Result<Query<InboundQuery>, QueryRejection>,
) -> Result<Json<InboundPage>, Problem> {
    let Query(q) =
        query.map_err(|e| Problem::new(StatusCode::BAD_REQUEST, "invalid-query", e.body_text()))?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(query_error("/limit", "limit must be 1-1000"));
    }
    let before = q
        .before
        .as_deref()
        .map(|b| {
            MessageId::parse(b)
                .ok_or_else(|| query_error("/before", "pass next_before from the previous page"))
        })
        .transpose()?;
    let items = herald.inbound.list_inbound(&tenant, before, limit).await?;
    let next_before = (items.len() == limit)
        .then(|| items.last().map(|m| m.id.to_string()))
        .flatten();
    Ok(Json(InboundPage {
        items: items.into_iter().map(Into::into).collect(),
        next_before,
    }))
}
