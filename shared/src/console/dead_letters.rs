//! Dead letters: the tenant's failed messages with their last error, and redrive of the
//! selected ones or of all.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::json;

use super::pages::{self, Page};
use super::session::SignedIn;
use super::PageQuery;
use crate::domain::audit::AuditAction;
use crate::domain::MessageId;
use crate::engine::Herald;

const PAGE_SIZE: usize = 100;
/// The most ids one redrive form may carry (a page shows 100).
const MAX_IDS: usize = 500;

#[derive(Debug, Default, Deserialize)]
pub struct ListForm {
    #[serde(default)]
    after: String,
}

/// `GET /console/dead-letters`
pub async fn list(
    State(herald): State<Arc<Herald>>,
    who: SignedIn,
    PageQuery(form): PageQuery<ListForm>,
) -> Response {
    let after = MessageId::parse(form.after.trim());
    let Ok(items) = herald.dead_letters(&who.tenant, after, PAGE_SIZE).await else {
        return pages::unavailable();
    };
    let next = (items.len() == PAGE_SIZE)
        .then(|| {
            items
                .last()
                .map(|m| format!("/console/dead-letters?after={}", m.id))
        })
        .flatten();
    pages::render(
        &Page::new("dead_letters.html", "Dead letters").with(minijinja::context! {
            who => super::who(&who),
            section => "dead-letters",
            items => items,
            next => next,
        }),
    )
}

/// `POST /console/dead-letters/redrive` (admin): `id` repeated for the selected ones, or
/// `all=1`. The form is read as pairs, since an `id` may come many times.
pub async fn redrive(State(herald): State<Arc<Herald>>, who: SignedIn, body: Bytes) -> Response {
    let Ok(pairs) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body) else {
        return pages::error(StatusCode::BAD_REQUEST, "That form could not be read.");
    };
    let field = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if let Err(refused) = who.check_action(field("csrf").unwrap_or_default()) {
        return refused;
    }
    let ids: Vec<MessageId> = pairs
        .iter()
        .filter(|(k, _)| k == "id")
        .filter_map(|(_, v)| MessageId::parse(v))
        .take(MAX_IDS)
        .collect();
    let everything = field("all") == Some("1");
    if ids.is_empty() && !everything {
        return pages::error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Nothing to redrive: select messages, or redrive all.",
        );
    }
    let asked = (!everything).then_some(ids);
    let count = asked.as_ref().map(Vec::len);
    let Ok(redriven) = herald.redrive(&who.tenant, asked).await else {
        return pages::unavailable();
    };
    let entry = who.entry(AuditAction::DeadLettersRedriven).detail(json!({
        "asked": count.map_or(json!("all"), |n| json!(n)),
        "redriven": redriven.len(),
        "first_ids": redriven.iter().take(100).map(|i| i.to_string()).collect::<Vec<_>>(),
    }));
    herald.record_audit(entry).await;
    match (field("back"), redriven.as_slice()) {
        (Some("message"), [id]) => Redirect::to(&format!("/console/messages/{id}")).into_response(),
        _ => Redirect::to("/console/dead-letters").into_response(),
    }
}
