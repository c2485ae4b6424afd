//! Operations: queue and channel stats, the dead-letter list, liveness and readiness.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use chrono::Utc;
use serde::Serialize;
use utoipa::ToSchema;

use super::dto::{
    ChannelStatsResponse, ChannelStatsView, DeadLetterPage, MessageView, QueueStatsView,
    RedriveRequest, RedriveResponse,
};
use super::extract::{AuthTenant, Caller, OptionalJsonBody};
use super::paging::{self, ListQuery, NoFilter};
use super::problem::{AuthErrors, JsonBodyErrors, Problem, QueryErrors};
use crate::domain::audit::AuditAction;
use crate::domain::{FieldError, MessageId};
use crate::engine::Herald;
use serde_json::json;

/// Per lane: depth, in-flight count and the age of the oldest due message.
#[utoipa::path(get, operation_id = "queue_stats", path = "/v1/stats/queue", tag = "stats",
    responses((status = 200, body = QueueStatsView), AuthErrors), security(("api_key" = [])))]
pub async fn queue_stats(
    State(herald): State<Arc<Herald>>,
    AuthTenant(tenant): AuthTenant,
) -> Result<Json<QueueStatsView>, Problem> {
    let per_tenant = herald.queue.stats_per_tenant();
    Ok(Json(QueueStatsView {
        lanes: herald.queue.stats(Utc::now(), Some(&tenant)).await?,
        scope: if per_tenant { "tenant" } else { "all_tenants" }.to_owned(),
    }))
}

/// Per channel and gateway: this tenant's counts by outcome, and the gateway's health.
#[utoipa::path(get, operation_id = "channel_stats", path = "/v1/stats/channels", tag = "stats",
    responses((status = 200, body = ChannelStatsResponse), AuthErrors), security(("api_key" = [])))]
pub async fn channel_stats(
    State(herald): State<Arc<Herald>>,
    AuthTenant(tenant): AuthTenant,
) -> Result<Json<ChannelStatsResponse>, Problem> {
    let counts = herald.store.channel_counts(&tenant).await?;
    let health = herald.gateway_health().await?;
    let mut channels = Vec::new();
    for (channel, gateway) in herald.gateways.gateways() {
        let mut by_status = BTreeMap::new();
        for c in counts
            .iter()
            .filter(|c| c.channel == channel && c.gateway.as_deref() == Some(gateway.name()))
        {
            by_status.insert(c.status.as_str().to_owned(), c.count);
        }
        channels.push(ChannelStatsView {
            channel,
            gateway: gateway.name().to_owned(),
            counts: by_status,
            health: health.get(gateway.name()).cloned(),
        });
    }
    // Messages no gateway has taken yet (queued, cancelled, ...) are listed under "none".
    for channel in crate::domain::Channel::ALL {
        let waiting: BTreeMap<String, u64> = counts
            .iter()
            .filter(|c| c.channel == channel && c.gateway.is_none())
            .map(|c| (c.status.as_str().to_owned(), c.count))
            .collect();
        if !waiting.is_empty() {
            channels.push(ChannelStatsView {
                channel,
                gateway: "none".into(),
                counts: waiting,
                health: None,
            });
        }
    }
    // The tenant's reputation pause of its bulk lanes, if there is one.
    let reputation_paused = herald.reputation_state(&tenant).await?.paused;
    Ok(Json(ChannelStatsResponse {
        channels,
        reputation_paused,
    }))
}

/// `GET /v1/dead-letters`'s query: no filters, pages of up to 500 (whole messages).
pub type DeadLetterQuery = ListQuery<MessageId, NoFilter, 500>;

/// Failed messages with their last error, newest first.
#[utoipa::path(get, operation_id = "list_dead_letters", path = "/v1/dead-letters", tag = "dead-letters", params(DeadLetterQuery),
    responses((status = 200, body = DeadLetterPage), AuthErrors, QueryErrors), security(("api_key" = [])))]
pub async fn dead_letters(
    State(herald): State<Arc<Herald>>,
    AuthTenant(tenant): AuthTenant,
    ListQuery { page, .. }: DeadLetterQuery,
) -> Result<Json<DeadLetterPage>, Problem> {
    let items = herald.dead_letters(&tenant, page.after, page.limit).await?;
    let next_after = page.next_after(&items, |m| m.id);
    Ok(Json(DeadLetterPage {
        items: items
            .into_iter()
            .map(|m| MessageView::new(m, None))
            .collect(),
        next_after,
    }))
}

/// Put failed messages back on their lanes with fresh attempts.
#[utoipa::path(post, operation_id = "redrive_dead_letters", path = "/v1/dead-letters/redrive", tag = "dead-letters",
    request_body(content = Option<RedriveRequest>, description = "may be left out: redrive all"),
    responses((status = 200, body = RedriveResponse), AuthErrors, JsonBodyErrors), security(("api_key" = [])))]
pub async fn redrive(
    State(herald): State<Arc<Herald>>,
    caller: Caller,
    OptionalJsonBody(req): OptionalJsonBody<RedriveRequest>,
) -> Result<Json<RedriveResponse>, Problem> {
    let ids = match req.ids {
        Some(ids) => Some(
            ids.iter()
                .enumerate()
                .map(|(i, s)| {
                    paging::message_id(s).ok_or_else(|| {
                        Problem::invalid(FieldError::new(
                            format!("/ids/{i}"),
                            "invalid",
                            "not a message id",
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        None => None,
    };
    let asked = ids.as_ref().map(Vec::len);
    let requested = ids.clone().unwrap_or_default();
    let redriven = herald.redrive(&caller.tenant, ids).await?;
    // An id not redriven may be another tenant's: a probe, recorded as one.
    let skipped: Vec<_> = requested
        .into_iter()
        .filter(|id| !redriven.contains(id))
        .collect();
    super::messages::record_foreign_probes(&herald, &caller, skipped);
    let entry = caller
        .entry(AuditAction::DeadLettersRedriven)
        .detail(json!({
            "asked": asked.map_or(json!("all"), |n| json!(n)),
            "redriven": redriven.len(),
            "first_ids": redriven.iter().take(100).map(|i| i.to_string()).collect::<Vec<_>>(),
        }));
    herald.record_audit(entry).await;
    Ok(Json(RedriveResponse {
        redriven: redriven.len(),
        ids: redriven.iter().map(|i| i.to_string()).collect(),
    }))
}

/// Alive.
#[utoipa::path(get, operation_id = "healthz", path = "/healthz", tag = "health", responses((status = 200, body = HealthView)))]
pub async fn healthz() -> Json<HealthView> {
    Json(HealthView { status: "ok" })
}

/// Ready: the store answers.
#[utoipa::path(get, operation_id = "readyz", path = "/readyz", tag = "health", responses((status = 200, body = HealthView), (status = 503, body = Problem, content_type = "application/problem+json")))]
pub async fn readyz(State(herald): State<Arc<Herald>>) -> Result<Json<HealthView>, Problem> {
    herald.store.ping().await?;
    Ok(Json(HealthView { status: "ready" }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HealthView {
    /// `ok` (alive) or `ready`.
    pub status: &'static str,
}
