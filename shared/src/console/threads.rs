//! The inbox: the tenant's threads by latest activity (open, snoozed, closed, unread), and a
//! thread's merged timeline across channels, each sent message with its delivery status now,
//! and a reply box.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::{Deserialize, Serialize};

use super::pages::{self, Page};
use super::session::{random_token, SignedIn};
use super::PageQuery;
use crate::domain::thread::{Direction, Thread, ThreadFilter, ThreadId, ThreadStatus};
use crate::domain::{Channel, ContactId};
use crate::engine::accept::{AcceptError, IdempotencyInput};
use crate::engine::thread_reply::ReplyError;
use crate::engine::Herald;

const PAGE_SIZE: usize = 50;
const TIMELINE: usize = 200;

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct InboxForm {
    #[serde(default)]
    status: String,
    #[serde(default)]
    unread: String,
}

async fn contact_name(herald: &Herald, who: &SignedIn, id: ContactId) -> String {
    match herald.contacts.contact(&who.tenant, id).await {
        Ok(Some(c)) => c
            .fields
            .name
            .or_else(|| c.identities.first().map(|i| i.value().to_owned()))
            .unwrap_or_default(),
        _ => String::new(),
    }
}

async fn thread_view(herald: &Herald, who: &SignedIn, t: &Thread) -> minijinja::Value {
    minijinja::context! {
        id => t.id.to_string(),
        contact => contact_name(herald, who, t.contact).await,
        status => t.status,
        assignee => &t.assignee,
        unread => t.unread,
        last_activity_at => t.last_activity_at,
        reply_channel => t.reply.as_ref().map(|r| r.channel.as_str()),
        reply_to => t.reply.as_ref().map(|r| r.to.clone()),
        label => &t.insights.label,
        next_step => &t.insights.next_step,
        next_followup_at => t.insights.next_followup_at,
        summary => &t.insights.summary,
    }
}

/// `GET /console/threads`
pub async fn inbox(
    State(herald): State<Arc<Herald>>,
    who: SignedIn,
    PageQuery(form): PageQuery<InboxForm>,
) -> Response {
    let status = match form.status.as_str() {
        "open" => Some(ThreadStatus::Open),
        "snoozed" => Some(ThreadStatus::Snoozed),
        "closed" => Some(ThreadStatus::Closed),
        _ => None,
    };
    let filter = ThreadFilter {
        status,
        unread: (form.unread == "yes").then_some(true),
        ..ThreadFilter::default()
    };
    let Ok(scan) = herald
        .threads
        .threads(&who.tenant, &filter, None, PAGE_SIZE)
        .await
    else {
        return pages::unavailable();
    };
    let mut rows = Vec::with_capacity(scan.items.len());
    for t in &scan.items {
        rows.push(thread_view(&herald, &who, t).await);
    }
    let page = Page::new("threads.html", "Inbox").with(minijinja::context! {
        who => super::who(&who),
        section => "threads",
        items => rows,
        form => &form,
        more => scan.resume.is_some(),
    });
    pages::render(&page)
}

/// `GET /console/threads/{id}`: another tenant's thread is as unknown as a made-up one.
pub async fn thread(
    State(herald): State<Arc<Herald>>,
    who: SignedIn,
    Path(raw): Path<String>,
) -> Response {
    let Some(id) = ThreadId::parse(&raw) else {
        return pages::not_found("thread");
    };
    match herald.threads.thread(&who.tenant, id).await {
        Ok(Some(t)) => show(&herald, &who, &t, None, StatusCode::OK).await,
        Ok(None) => pages::not_found("thread"),
        Err(_) => pages::unavailable(),
    }
}

async fn show(
    herald: &Herald,
    who: &SignedIn,
    t: &Thread,
    problem: Option<&str>,
    status: StatusCode,
) -> Response {
    let Ok(entries) = herald
        .threads
        .thread_entries(&who.tenant, t.id, None, TIMELINE)
        .await
    else {
        return pages::unavailable();
    };
    let mut timeline = Vec::with_capacity(entries.len());
    for e in &entries {
        let status = match e.direction {
            Direction::Outbound => herald
                .store
                .get(&who.tenant, e.message)
                .await
                .ok()
                .flatten()
                .map(|(m, _)| m.status.as_str()),
            Direction::Inbound => None,
        };
        timeline.push(minijinja::context! {
            message => e.message.to_string(), direction => e.direction, channel => e.channel.as_str(),
            from => &e.from, to => &e.to, body => &e.body, at => e.at, status => status,
        });
    }
    let view = thread_view(herald, who, t).await;
    let title = format!(
        "Thread with {}",
        view.get_attr("contact")
            .ok()
            .map(|c| c.to_string())
            .unwrap_or_default()
    );
    let page = Page::new("thread.html", title).with(minijinja::context! {
        who => super::who(who),
        section => "threads",
        t => view,
        timeline => timeline,
        more => entries.len() == TIMELINE,
        nonce => random_token(),
        channels => REPLY_CHANNELS.map(Channel::as_str),
        problem => problem,
    });
    pages::render_status(status, &page)
}

/// The channels a typed reply may go on (push has no one to answer).
const REPLY_CHANNELS: [Channel; 4] = [
    Channel::Email,
    Channel::Sms,
    Channel::Whatsapp,
    Channel::Telegram,
];
/// A typed reply: a subject and a text, not a whole email.
const MAX_REPLY_CHARS: usize = 4000;

#[derive(Debug, Deserialize)]
pub struct ReplyForm {
    csrf: String,
    /// Random per rendered form: posting the same form twice sends once.
    nonce: String,
    channel: String,
    #[serde(default)]
    subject: String,
    body: String,
}

/// `POST /console/threads/{id}/reply` (admin): a typed reply through the normal lanes.
pub async fn reply(
    State(herald): State<Arc<Herald>>,
    who: SignedIn,
    Path(raw): Path<String>,
    Form(form): Form<ReplyForm>,
) -> Response {
    if let Err(refused) = who.check_action(&form.csrf) {
        return refused;
    }
    let Some(id) = ThreadId::parse(&raw) else {
        return pages::not_found("thread");
    };
    let t = match herald.threads.thread(&who.tenant, id).await {
        Ok(Some(t)) => t,
        Ok(None) => return pages::not_found("thread"),
        Err(_) => return pages::unavailable(),
    };
    let channel = REPLY_CHANNELS
        .into_iter()
        .find(|c| c.as_str() == form.channel);
    let body = form.body.trim();
    let (Some(channel), false, true) = (
        channel,
        body.is_empty(),
        body.chars().count() <= MAX_REPLY_CHARS && form.nonce.len() <= 64,
    ) else {
        let why = format!("Not sent: pick a channel and write 1 to {MAX_REPLY_CHARS} characters.");
        return show(
            &herald,
            &who,
            &t,
            Some(&why),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    };
    let subject = (channel == Channel::Email)
        .then(|| form.subject.trim().to_owned())
        .filter(|s| !s.is_empty());
    let key = IdempotencyInput {
        key: format!("console-reply:{}", form.nonce),
        request_hash: format!("{channel}\n{subject:?}\n{body}"),
    };
    match herald
        .reply_with_text(&t, channel, (subject, body.to_owned()), key)
        .await
    {
        Ok(_) => Redirect::to(&format!("/console/threads/{id}")).into_response(),
        Err(ReplyError::Accept(AcceptError::Store(_))) => pages::unavailable(),
        Err(e) => {
            let why = format!("Not sent: {e}.");
            show(
                &herald,
                &who,
                &t,
                Some(&why),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
    }
}
