//! Bulk sends: the tenant's recent ones, and a send's progress (its recipients by status),
//! each with a bar of those that have finished.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Response;

use super::pages::{self, Page};
use super::session::SignedIn;
use crate::domain::MessageStatus;
use crate::engine::Herald;
use crate::ports::BulkProgress;

/// Herald's bulk ids: `bulk_` and 32 hex digits. Anything else is no bulk send.
fn is_bulk_id(raw: &str) -> bool {
    raw.strip_prefix("bulk_")
        .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Progress bars are drawn for the newest this many; older ones link to their page.
const WITH_PROGRESS: usize = 10;

/// (recipients, those finished: no longer queued, deferred, sending or being written).
fn totals(progress: &BulkProgress) -> (u64, u64) {
    let waiting = [
        MessageStatus::Queued,
        MessageStatus::Deferred,
        MessageStatus::Sending,
    ];
    let total = progress.by_status.values().sum::<u64>() + progress.pending;
    let unfinished = progress.pending
        + waiting
            .iter()
            .filter_map(|s| progress.by_status.get(s))
            .sum::<u64>();
    (total, total - unfinished)
}

/// `GET /console/bulk`: the tenant's recent bulk sends, newest first.
pub async fn list(State(herald): State<Arc<Herald>>, who: SignedIn) -> Response {
    let sends = match herald.recent_bulk_sends(&who.tenant).await {
        Ok(sends) => sends,
        Err(_) => return pages::unavailable(),
    };
    let mut rows = Vec::with_capacity(sends.len());
    for (i, send) in sends.iter().enumerate() {
        let progress = match i < WITH_PROGRESS {
            true => match herald.store.bulk_progress(&who.tenant, &send.bulk_id).await {
                Ok(progress) => progress.map(|p| totals(&p)),
                Err(_) => return pages::unavailable(),
            },
            false => None,
        };
        rows.push(minijinja::context! {
            send => send,
            created_at => send.created_at.to_rfc3339(),
            finished => progress.map(|(_, finished)| finished),
        });
    }
    let page = Page::new("bulk_list.html", "Bulk sends").with(minijinja::context! {
        who => super::who(&who),
        section => "bulk",
        rows => rows,
        with_progress => WITH_PROGRESS,
    });
    pages::render(&page)
}

/// `GET /console/bulk/{bulk_id}`: another tenant's job is as unknown as a made-up one.
pub async fn page(
    State(herald): State<Arc<Herald>>,
    who: SignedIn,
    Path(bulk_id): Path<String>,
) -> Response {
    if !is_bulk_id(&bulk_id) {
        return pages::not_found("bulk send");
    }
    let progress = match herald.store.bulk_progress(&who.tenant, &bulk_id).await {
        Ok(Some(progress)) => progress,
        Ok(None) => return pages::not_found("bulk send"),
        Err(_) => return pages::unavailable(),
    };
    let (total, finished) = totals(&progress);
    let counts: Vec<_> = progress
        .by_status
        .iter()
        .map(|(status, n)| minijinja::context! { status => status.as_str(), count => n })
        .collect();
    let page = Page::new("bulk.html", format!("Bulk send {bulk_id}")).with(minijinja::context! {
        who => super::who(&who),
        section => "bulk",
        bulk_id => &bulk_id,
        total => total,
        finished => finished,
        pending => progress.pending,
        counts => counts,
    });
    pages::render(&page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_herald_bulk_ids_are_read() {
        assert!(is_bulk_id("bulk_0123456789abcdef0123456789abcdef"));
        for bad in [
            "bulk_",
            "bulk_xyz",
            "../etc",
            "bulk_0123456789abcdef0123456789abcdef0",
        ] {
            assert!(!is_bulk_id(bad), "{bad}");
        }
    }
}
