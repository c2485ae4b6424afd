//! Messages: search with the API's filters, a message's page with its timeline, and cancel.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::{Deserialize, Serialize};

use super::pages::{self, Page};
use super::session::{SignedIn, TokenForm};
use super::PageQuery;
use crate::domain::audit::AuditAction;
use crate::domain::{Channel, MessageId, MessageStatus, Priority};
use crate::engine::{CancelOutcome, Herald};
use crate::ports::MessageFilter;

const PAGE_SIZE: usize = 50;
const MAX_FIELD_CHARS: usize = 320;

/// The search form as the browser sends it: empty fields mean "any".
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct SearchForm {
    #[serde(default)]
    status: String,
    #[serde(default)]
    channel: String,
    #[serde(default)]
    priority: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    external_id: String,
    #[serde(default)]
    source_id: String,
    #[serde(default)]
    bulk_id: String,
    #[serde(default, skip_serializing)]
    after: String,
}

fn text(v: &str) -> Option<String> {
    let v = v.trim();
    (!v.is_empty()).then(|| v.chars().take(MAX_FIELD_CHARS).collect())
}

fn parsed<T: for<'de> Deserialize<'de>>(v: &str, what: &str) -> Result<Option<T>, String> {
    match text(v) {
        None => Ok(None),
        Some(v) => serde_json::from_value(serde_json::Value::String(v.clone()))
            .map(Some)
            .map_err(|_| format!("`{v}` is not a {what}")),
    }
}

impl SearchForm {
    fn filter(&self) -> Result<MessageFilter, String> {
        let channel: Option<Channel> = parsed(&self.channel, "channel")?;
        Ok(MessageFilter {
            status: parsed(&self.status, "status")?,
            channel,
            priority: parsed(&self.priority, "priority")?,
            to: text(&self.to).map(|to| Channel::stored_recipient(to, channel)),
            source_id: text(&self.source_id),
            external_id: text(&self.external_id),
            bulk_id: text(&self.bulk_id),
            ..MessageFilter::default()
        })
    }

    /// This search's link to the page after `after`.
    fn next_link(&self, after: MessageId) -> String {
        let query = serde_urlencoded::to_string(self).unwrap_or_default();
        format!("/console/messages?{query}&after={after}")
    }
}

/// `GET /console/messages`
pub async fn search(
    State(herald): State<Arc<Herald>>,
    who: SignedIn,
    PageQuery(form): PageQuery<SearchForm>,
) -> Response {
    let (items, next, problem) = match form.filter() {
        Ok(filter) => {
            let after = MessageId::parse(form.after.trim());
            match herald
                .store
                .search(&who.tenant, &filter, after, PAGE_SIZE)
                .await
            {
                Ok(found) => (found.items, found.resume_below, None),
                Err(_) => return pages::unavailable(),
            }
        }
        Err(problem) => (Vec::new(), None, Some(problem)),
    };
    let status = if problem.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let page = Page::new("messages.html", "Messages").with(minijinja::context! {
        who => super::who(&who),
        section => "messages",
        items => items,
        filters => &form,
        next_after => next.map(|id| id.to_string()),
        next_link => next.map(|id| form.next_link(id)),
        problem => problem,
        statuses => MessageStatus::ALL.map(MessageStatus::as_str),
        channels => Channel::ALL.map(Channel::as_str),
        priorities => Priority::ALL.map(Priority::as_str),
    });
    pages::render_status(status, &page)
}

/// `GET /console/messages/{id}`: another tenant's id is as unknown as a made-up one.
pub async fn page(
    State(herald): State<Arc<Herald>>,
    who: SignedIn,
    Path(raw): Path<String>,
) -> Response {
    show(&herald, &who, &raw, None).await
}

async fn show(herald: &Herald, who: &SignedIn, raw: &str, notice: Option<&str>) -> Response {
    let Some(id) = MessageId::parse(raw) else {
        return pages::not_found("message");
    };
    let (m, events) = match herald.message(&who.tenant, id).await {
        Ok(Some(found)) => found,
        Ok(None) => return pages::not_found("message"),
        Err(_) => return pages::unavailable(),
    };
    let route_reason = crate::domain::message::route_reason(&events);
    let events: Vec<_> = events
        .iter()
        .map(|e| minijinja::context! { at => e.at, kind => e.kind, detail => e.detail.to_string() })
        .collect();
    let cancellable = matches!(m.status, MessageStatus::Queued | MessageStatus::Deferred);
    let title = format!("Message to {}", m.to);
    pages::render(&Page::new("message.html", title).with(minijinja::context! {
        who => super::who(who),
        section => "messages",
        m => m,
        events => events,
        route_reason => route_reason,
        cancellable => cancellable,
        notice => notice,
    }))
}

/// `POST /console/messages/{id}/cancel` (admin): cancelled, or the page says why not.
pub async fn cancel(
    State(herald): State<Arc<Herald>>,
    who: SignedIn,
    Path(raw): Path<String>,
    Form(form): Form<TokenForm>,
) -> Response {
    if let Err(refused) = who.check_action(&form.csrf) {
        return refused;
    }
    let Some(id) = MessageId::parse(&raw) else {
        return pages::not_found("message");
    };
    match herald.cancel(&who.tenant, id).await {
        Ok(CancelOutcome::Cancelled) => {
            let entry = who
                .entry(AuditAction::MessageCancelled)
                .target(id.to_string());
            herald.record_audit(entry).await;
            Redirect::to(&format!("/console/messages/{id}")).into_response()
        }
        Ok(CancelOutcome::TooLate(status)) => {
            let why = format!(
                "Not cancelled: the message is {status}, so it already reached a gateway or ended."
            );
            let mut response = show(&herald, &who, &raw, Some(&why)).await;
            *response.status_mut() = StatusCode::CONFLICT;
            response
        }
        Ok(CancelOutcome::NotFound) => pages::not_found("message"),
        Err(_) => pages::unavailable(),
    }
}
