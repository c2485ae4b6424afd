//! The overview: each lane's depth, in flight, scheduled, oldest due message and sends per
//! minute, the last hour's throughput, and each gateway's health and warm-up. `/console/overview/live` is the same tables alone, which the
//! page's script fetches every few seconds; without script, a reload shows the same.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use chrono::{SecondsFormat, Utc};
use minijinja::Value;

use super::pages::{self, Page};
use super::session::SignedIn;
use crate::engine::Herald;

async fn live_context(herald: &Herald, who: &SignedIn) -> Result<Value, Response> {
    let lanes = herald
        .lane_snapshot(Some(&who.tenant))
        .await
        .map_err(|_| pages::unavailable())?;
    let since = Utc::now() - chrono::Duration::hours(1);
    let sent = herald
        .store
        .sent_per_minute(&who.tenant, since)
        .await
        .map_err(|_| pages::unavailable())?;
    let gateways = herald
        .gateway_views()
        .await
        .map_err(|_| pages::unavailable())?;
    Ok(minijinja::context! {
        lanes => lanes.as_ref().map(|l| &l.lanes),
        counted_at => lanes.as_ref().map(|l| l.at.to_rfc3339_opts(SecondsFormat::Secs, true)),
        lanes_per_tenant => herald.queue.stats_per_tenant(),
        gateways => gateways,
        chart => super::chart::throughput(&sent, Utc::now()),
    })
}

/// `GET /console`
pub async fn page(State(herald): State<Arc<Herald>>, who: SignedIn) -> Response {
    match live_context(&herald, &who).await {
        Ok(live) => pages::render(&Page::new("overview.html", "Overview").with(
            minijinja::context! {
                who => super::who(&who),
                section => "overview",
                live => true,
                ..live
            },
        )),
        Err(response) => response,
    }
}

/// `GET /console/overview/live`: the tables alone, for the page's refresh.
pub async fn live(State(herald): State<Arc<Herald>>, who: SignedIn) -> Response {
    match live_context(&herald, &who).await {
        Ok(live) => pages::render(&Page::new("overview_live.html", "Overview").with(live)),
        Err(response) => response,
    }
}
