//! `GET /v1/inbound`: messages the tenant's recipients sent back, newest first, paged, and
//! `GET /v1/inbound/{id}`: one, with what the inbound pipeline decided.

use std::sync::Arc;

use axum::extract::{rejection::PathRejection, Path, State};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::extract::{AuthTenant, Caller};
use super::messages::message_id;
use super::paging::{ListQuery, NoFilter};
use super::problem::{AuthErrors, NotFound, Problem, QueryErrors};
use crate::domain::inbound::InboundState;
use crate::domain::inbound_email::InboundEmail;
use crate::domain::rules::Decision;
use crate::domain::{Channel, InboundMessage, Keyword, MessageId};
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
    /// The thread it joined (`GET /v1/threads/{id}`).
    pub thread_id: Option<String>,
    /// `received`, `processing`, `processed` or `failed`.
    pub state: InboundState,
    /// What the inbound rules decided, once processed.
    pub decision: Option<Decision>,
    /// Why processing failed (or its last try did).
    pub error: Option<String>,
    pub attempts: u32,
    pub processed_at: Option<DateTime<Utc>>,
    /// An email's subject, message ids, addresses and attachments (its `body` is the new part
    /// of the text). Lists leave out the whole `text` and `html`: they are in
    /// `GET /v1/inbound/{id}`.
    pub email: Option<InboundEmail>,
}

impl InboundView {
    /// The view a list shows: an email without its whole text and HTML.
    fn summary(m: InboundMessage) -> InboundView {
        let mut view = InboundView::from(m);
        if let Some(e) = &mut view.email {
            e.text = None;
            e.html = None;
        }
        view
    }
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
            thread_id: m.thread.map(|t| t.to_string()),
            state: m.progress.state,
            decision: m.progress.decision,
            error: m.progress.error,
            attempts: m.progress.attempts,
            processed_at: m.progress.processed_at,
            email: m.email.map(|e| *e),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InboundPage {
    pub items: Vec<InboundView>,
    /// Pass as `after` for the next (older) page; absent on the last page.
    pub next_after: Option<String>,
}

/// `GET /v1/inbound`'s query: no filters, pages of up to 1,000.
pub type InboundQuery = ListQuery<MessageId, NoFilter, 1000>;

/// The tenant's inbound messages, newest first.
#[utoipa::path(get, operation_id = "list_inbound", path = "/v1/inbound", tag = "inbound", params(InboundQuery),
    responses((status = 200, body = InboundPage), AuthErrors, QueryErrors), security(("api_key" = [])))]
pub async fn list(
    State(herald): State<Arc<Herald>>,
    AuthTenant(tenant): AuthTenant,
    ListQuery { page, .. }: InboundQuery,
) -> Result<Json<InboundPage>, Problem> {
    let items = herald
        .inbound
        .list_inbound(&tenant, page.after, page.limit)
        .await?;
    let next_after = page.next_after(&items, |m| m.id);
    Ok(Json(InboundPage {
        items: items.into_iter().map(InboundView::summary).collect(),
        next_after,
    }))
}

/// One inbound message, with the pipeline's state and decision. Another tenant's id is a 404.
#[utoipa::path(get, operation_id = "get_inbound", path = "/v1/inbound/{id}", tag = "inbound",
    params(("id" = String, Path, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")),
    responses((status = 200, body = InboundView), AuthErrors, NotFound), security(("api_key" = [])))]
pub async fn get(
    State(herald): State<Arc<Herald>>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<InboundView>, Problem> {
    let id = message_id(path).map_err(|_| Problem::not_found("inbound message"))?;
    let m = herald
        .inbound
        .inbound_message(&caller.tenant, id)
        .await?
        .ok_or_else(|| Problem::not_found("inbound message"))?;
    Ok(Json(m.into()))
}
