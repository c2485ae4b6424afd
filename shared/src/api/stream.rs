//! `GET /v1/events/stream`: a tenant's events as they happen, as server-sent events.
//!
//! The first event (`open`) names the stream; each later one is a webhook payload whose SSE
//! `id` is the reader's cursor. A connection ends after the stream window (minutes embedded,
//! 20 s on Lambda); the client reconnects with `Last-Event-ID` and goes on where it was.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use tokio::time::Instant;
use utoipa::IntoParams;

use super::extract::AuthTenant;
use super::paging::FilterQuery;
use super::problem::{AuthErrors, NotFound, Problem, QueryErrors};
use crate::domain::notify::EventType;
use crate::domain::{FieldError, TenantId};
use crate::engine::notify::stream::{StreamCursor, StreamOf, StreamReader};
use crate::engine::Herald;

/// The most event types one stream may name.
const MAX_TYPES: usize = 32;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Event types to follow, comma-separated (`message.sent,message.failed`); none: every
    /// type. Ignored when resuming: a stream keeps the types it was opened with.
    #[param(max_length = 1024)]
    pub types: Option<String>,
}

/// Follows the tenant's events live. Send `Last-Event-ID` (the `id` of the last event seen) to
/// resume a stream after a disconnect; events kept since then are sent first.
#[utoipa::path(get, operation_id = "stream_events", path = "/v1/events/stream", tag = "webhooks",
    params(StreamQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "resume the stream after this event")),
    responses(
        (status = 200, content_type = "text/event-stream", body = String,
            description = "`open`, then one event per webhook event type, each with its payload"),
        AuthErrors, QueryErrors, NotFound,
        (status = 429, body = Problem, content_type = "application/problem+json",
            description = "the tenant (or the server) has as many streams open as allowed")),
    security(("api_key" = [])))]
pub async fn stream(
    State(herald): State<Arc<Herald>>,
    AuthTenant(tenant): AuthTenant,
    FilterQuery(query): FilterQuery<StreamQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Problem> {
    let types = types_of(query.types.as_deref())?;
    follow(herald, &tenant, &headers, StreamOf::Events(types)).await
}

/// Opens (or resumes, by `Last-Event-ID`) a stream and sends its events for one window.
pub(super) async fn follow(
    herald: Arc<Herald>,
    tenant: &TenantId,
    headers: &HeaderMap,
    of: StreamOf,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Problem> {
    let cursor = cursor_of(headers)?;
    let reader = herald
        .open_stream(tenant, cursor, of)
        .await
        .map_err(|e| match e {
            crate::engine::notify::EndpointError::NotFound => {
                Problem::not_found("event stream (it may have lapsed: open a new one)")
            }
            other => other.into(),
        })?;
    let opened = Event::default()
        .event("open")
        .id(reader.cursor.to_string())
        .retry(std::time::Duration::from_millis(500))
        .json_data(serde_json::json!({
            "stream": reader.cursor.stream,
            "event_types": reader.event_types,
        }))
        .map_err(|_| Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "event"))?;
    let state = Reading {
        deadline: Instant::now() + herald.config.notify.streams.window,
        herald,
        reader,
        ready: VecDeque::new(),
    };
    let opened = futures::stream::once(async { Ok(opened) });
    let events = opened.chain(futures::stream::unfold(state, next_event));
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

fn cursor_of(headers: &HeaderMap) -> Result<Option<StreamCursor>, Problem> {
    let Some(raw) = headers.get("last-event-id") else {
        return Ok(None);
    };
    raw.to_str()
        .ok()
        .and_then(StreamCursor::parse)
        .map(Some)
        .ok_or_else(|| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "bad-header",
                "Last-Event-ID is not the id of an event of this stream",
            )
        })
}

/// The non-empty, trimmed items of a comma-separated query parameter.
pub(super) fn comma_list(raw: Option<&str>) -> Vec<&str> {
    raw.into_iter()
        .flat_map(|r| r.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

fn types_of(raw: Option<&str>) -> Result<Vec<EventType>, Problem> {
    let names = comma_list(raw);
    if names.len() > MAX_TYPES {
        let why = format!("at most {MAX_TYPES} types");
        return Err(Problem::invalid(FieldError::new("/types", "too-many", why)));
    }
    names
        .into_iter()
        .map(|n| {
            EventType::parse(n)
                .filter(|t| !t.is_forward())
                .ok_or_else(|| {
                    let why = format!("`{n}` is not an event type (provider webhooks are followed with GET /v1/dev-forwards/stream)");
                    Problem::invalid(FieldError::new("/types", "invalid", why))
                })
        })
        .collect()
}

/// One connection's place: it ends at `deadline`, the stream window after it opened.
struct Reading {
    herald: Arc<Herald>,
    reader: StreamReader,
    deadline: Instant,
    ready: VecDeque<Event>,
}

async fn next_event(mut st: Reading) -> Option<(Result<Event, Infallible>, Reading)> {
    let poll = st.herald.config.notify.streams.poll;
    loop {
        if let Some(e) = st.ready.pop_front() {
            return Some((Ok(e), st));
        }
        let now = Instant::now();
        if now >= st.deadline {
            return None;
        }
        let stream = st.reader.cursor.stream;
        match st.herald.read_stream(&mut st.reader).await {
            Ok(batch) if !batch.is_empty() => {
                st.ready.extend(batch.into_iter().map(|d| {
                    let id = StreamCursor {
                        stream,
                        after: Some(d.id),
                    };
                    Event::default()
                        .event(d.event_type.as_str())
                        .id(id.to_string())
                        .data(d.payload)
                }));
            }
            Ok(_) => tokio::time::sleep(poll.min(st.deadline - now)).await,
            Err(e) => {
                // The client reconnects with its cursor and nothing is skipped.
                tracing::warn!(error = %e, %stream, "event stream read failed; ending the connection");
                return None;
            }
        }
    }
}
