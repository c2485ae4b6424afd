//! Operations: queue and channel stats, the dead-letter list, liveness and readiness.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{rejection::QueryRejection, Query, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::Utc;
use serde::Deserialize;

use super::dto::{
    ChannelStatsResponse, ChannelStatsView, DeadLetterPage, MessageView, QueueStatsView,
    RedriveRequest, RedriveResponse,
};
use super::extract::{parse_json, AuthTenant};
use super::problem::Problem;
use crate::domain::{FieldError, MessageId};
use crate::engine::Herald;

/// Per lane: depth, in-flight count and the age of the oldest due message.
#[utoipa::path(get, path = "/v1/stats/queue", tag = "stats",
    responses((status = 200, body = QueueStatsView)), security(("api_key" = [])))]
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
#[utoipa::path(get, path = "/v1/stats/channels", tag = "stats",
    responses((status = 200, body = ChannelStatsResponse)), security(("api_key" = [])))]
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
    Ok(Json(ChannelStatsResponse { channels }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    limit: Option<usize>,
    before: Option<String>,
}

/// Failed messages with their last error, newest first.
#[utoipa::path(get, path = "/v1/dead-letters", tag = "dead-letters",
    params(("limit" = Option<usize>, Query, description = "1-500, default 100"),
           ("before" = Option<String>, Query, description = "next_before of the previous page")),
    responses((status = 200, body = DeadLetterPage), (status = 400, body = Problem)), security(("api_key" = [])))]
pub async fn dead_letters(
    State(herald): State<Arc<Herald>>,
    AuthTenant(tenant): AuthTenant,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<DeadLetterPage>, Problem> {
    let Query(q) =
        query.map_err(|e| Problem::new(StatusCode::BAD_REQUEST, "invalid-query", e.body_text()))?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(Problem::invalid(FieldError::new(
            "/limit",
            "out_of_range",
            "limit must be 1-500",
        )));
    }
    let before = match q.before {
        Some(b) => Some(MessageId::parse(&b).ok_or_else(|| {
            Problem::invalid(FieldError::new(
                "/before",
                "invalid",
                "before must be a message id",
            ))
        })?),
        None => None,
    };
    let items = herald.dead_letters(&tenant, before, limit).await?;
    let next_before = (items.len() == limit)
        .then(|| items.last().map(|m| m.id.to_string()))
        .flatten();
    Ok(Json(DeadLetterPage {
        items: items
            .into_iter()
            .map(|m| MessageView::new(m, None))
            .collect(),
        next_before,
    }))
}

/// Put failed messages back on their lanes with fresh attempts.
#[utoipa::path(post, path = "/v1/dead-letters/redrive", tag = "dead-letters", request_body = RedriveRequest,
    responses((status = 200, body = RedriveResponse), (status = 422, body = Problem)), security(("api_key" = [])))]
pub async fn redrive(
    State(herald): State<Arc<Herald>>,
    AuthTenant(tenant): AuthTenant,
    body: axum::body::Bytes,
) -> Result<Json<RedriveResponse>, Problem> {
    let req: RedriveRequest = if body.is_empty() {
        RedriveRequest::default()
    } else {
        parse_json(&body)?
    };
    let ids = match req.ids {
        Some(ids) => Some(
            ids.iter()
                .enumerate()
                .map(|(i, s)| {
                    MessageId::parse(s).ok_or_else(|| {
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
    let redriven = herald.redrive(&tenant, ids).await?;
    Ok(Json(RedriveResponse {
        redriven: redriven.len(),
        ids: redriven.iter().map(|i| i.to_string()).collect(),
    }))
}

/// Alive.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200)))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// Ready: the store answers.
#[utoipa::path(get, path = "/readyz", tag = "health", responses((status = 200), (status = 503, body = Problem)))]
pub async fn readyz(State(herald): State<Arc<Herald>>) -> Result<Json<serde_json::Value>, Problem> {
    herald.store.ping().await?;
    Ok(Json(serde_json::json!({ "status": "ready" })))
}
