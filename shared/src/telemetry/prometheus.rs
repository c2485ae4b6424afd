//! `GET /metrics` in Prometheus text format, for `herald serve`'s metrics listener (apart from
//! the API's, so scrapes are not exposed with it). Lane and breaker gauges are sampled at the
//! scrape; counters and histograms are recorded where the work happens.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use chrono::Utc;
use metrics::gauge;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use super::{GATEWAY_BREAKER, LANE_DEPTH, LANE_IN_FLIGHT, LANE_OLDEST_AGE};
use crate::domain::health::Breaker;
use crate::engine::Herald;

/// Histogram buckets, in seconds: from a fast commit to a slow provider.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder as the process's metrics recorder, once; `None` when
/// another recorder was installed first (then that one gets the metrics).
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(BUCKETS)
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            super::describe();
            let upkeep = handle.clone();
            // Histograms hold samples until upkeep folds them in.
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    upkeep.run_upkeep();
                }
            });
            Some(handle)
        })
        .clone()
}

/// The metrics listener's Router.
pub fn router(herald: Arc<Herald>, handle: PrometheusHandle) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state((herald, handle))
}

async fn scrape(
    State((herald, handle)): State<(Arc<Herald>, PrometheusHandle)>,
) -> impl IntoResponse {
    sample_gauges(&herald).await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
}

/// Lane depths and breaker states as they are now.
async fn sample_gauges(herald: &Herald) {
    match herald.queue.stats(Utc::now(), None).await {
        Ok(lanes) => {
            for s in lanes {
                let lane = s.lane.as_str();
                gauge!(LANE_DEPTH, "lane" => lane).set(s.depth as f64);
                gauge!(LANE_IN_FLIGHT, "lane" => lane).set(s.in_flight as f64);
                if let Some(age) = s.oldest_age_seconds {
                    gauge!(LANE_OLDEST_AGE, "lane" => lane).set(age);
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "lane stats unavailable for /metrics"),
    }
    if let Ok(gateways) = herald.gateway_health().await {
        for (name, status) in gateways {
            let state = match status.breaker {
                Breaker::Closed => 0.0,
                Breaker::HalfOpen { .. } => 1.0,
                Breaker::Open { .. } => 2.0,
            };
            gauge!(GATEWAY_BREAKER, "gateway" => name).set(state);
        }
    }
}
