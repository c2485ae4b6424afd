//! `GET /v1/inbound`: messages the tenant's recipients sent back, newest first, paged, and
//! `GET /v1/inbound/{id}`: one, with what the inbound pipeline decided.

use std::sync::Arc;

use axum::extract::{rejection::PathRejection, Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
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
use crate::domain::media::{MediaId, MediaItem, MediaState};
use crate::domain::rules::Decision;
use crate::domain::MessageStatus;
use crate::domain::{Channel, InboundMessage, Keyword, MessageId};
use crate::engine::Herald;
use crate::ports::MediaBody;

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
    /// Its files (MMS, WhatsApp media, email attachments) as Herald stored them.
    pub media: Vec<MediaView>,
    /// For a text the relay sent on: the status of the relayed message and of the notice to
    /// the sender, now (`GET /v1/inbound/{id}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay_status: Option<RelayStatus>,
}

#[derive(Debug, Default, Serialize, ToSchema)]
pub struct RelayStatus {
    pub relayed: Option<MessageStatus>,
    pub notice: Option<MessageStatus>,
}

/// A file of an inbound message; `url` is Herald's own (`GET /v1/media/{id}`) once stored.
#[derive(Debug, Serialize, ToSchema)]
pub struct MediaView {
    #[serde(flatten)]
    pub item: MediaItem,
    pub url: Option<String>,
}

impl From<MediaItem> for MediaView {
    fn from(item: MediaItem) -> Self {
        let url = (item.state == MediaState::Stored).then(|| format!("/v1/media/{}", item.id));
        MediaView { item, url }
    }
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
            media: m.media.into_iter().map(Into::into).collect(),
            relay_status: None,
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
    let relay = m.progress.decision.as_ref().and_then(|d| d.relay.clone());
    let mut view = InboundView::from(m);
    if let Some(r) = relay {
        let status = |id: Option<MessageId>| {
            let herald = &herald;
            let tenant = &caller.tenant;
            async move {
                let Some(id) = id else { return Ok(None) };
                Ok::<_, Problem>(herald.store.get(tenant, id).await?.map(|(m, _)| m.status))
            }
        };
        view.relay_status = Some(RelayStatus {
            relayed: status(r.relayed_message_id).await?,
            notice: status(r.notice_message_id).await?,
        });
    }
    Ok(Json(view))
}

/// One stored file of the tenant's inbound messages: its bytes (embedded), or a redirect to a
/// presigned URL that serves it for a few minutes (AWS). Always as a download
/// (`Content-Disposition: attachment`, `nosniff`), so no file renders in Herald's origin.
/// Another tenant's id, an expired file and a malformed id are all a 404.
#[utoipa::path(get, operation_id = "get_media", path = "/v1/media/{id}", tag = "inbound",
    params(("id" = String, Path, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")),
    responses((status = 200, description = "The file", content_type = "application/octet-stream"),
              (status = 302, description = "A presigned URL that serves the file"),
              AuthErrors, NotFound), security(("api_key" = [])))]
pub async fn media(
    State(herald): State<Arc<Herald>>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    let missing = || Problem::not_found("media");
    let Path(raw) = path.map_err(|_| missing())?;
    let id = MediaId::parse(&raw).ok_or_else(missing)?;
    let body = herald
        .media
        .open_media(&caller.tenant, id)
        .await?
        .ok_or_else(missing)?;
    Ok(match body {
        MediaBody::Url(url) => (
            StatusCode::FOUND,
            [
                (header::LOCATION, url),
                (header::CACHE_CONTROL, "no-store".into()),
            ],
        )
            .into_response(),
        MediaBody::Bytes {
            content_type,
            filename,
            bytes,
        } => {
            let name: String = filename
                .unwrap_or_else(|| id.to_string())
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ' '))
                .take(100)
                .collect();
            let headers = [
                (header::CONTENT_TYPE, content_type),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{name}\""),
                ),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff".into()),
                (header::CACHE_CONTROL, "private, max-age=300".into()),
            ];
            (headers, bytes).into_response()
        }
    })
}
