//! The inbox: the tenant's threads by latest activity (open, snoozed, closed, unread), and a
//! thread's merged timeline across channels, each sent message with its delivery status now.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::pages::{self, Page};
use super::session::SignedIn;
use crate::domain::thread::{Direction, Thread, ThreadFilter, ThreadId, ThreadStatus};
use crate::domain::ContactId;
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
    form: Result<Query<InboxForm>, QueryRejection>,
) -> Response {
    let form = form.map(|Query(f)| f).unwrap_or_default();
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
    let t = match herald.threads.thread(&who.tenant, id).await {
        Ok(Some(t)) => t,
        Ok(None) => return pages::not_found("thread"),
        Err(_) => return pages::unavailable(),
    };
    let Ok(entries) = herald
        .threads
        .thread_entries(&who.tenant, id, None, TIMELINE)
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
    let view = thread_view(&herald, &who, &t).await;
    let title = format!(
        "Thread with {}",
        view.get_attr("contact")
            .ok()
            .map(|c| c.to_string())
            .unwrap_or_default()
    );
    let page = Page::new("thread.html", title).with(minijinja::context! {
        who => super::who(&who),
        section => "threads",
        t => view,
        timeline => timeline,
        more => entries.len() == TIMELINE,
    });
    pages::render(&page)
}
