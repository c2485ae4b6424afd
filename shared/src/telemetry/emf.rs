//! The Lambda functions' metrics: the same `metrics` calls as `herald serve`, written to the
//! function's log after each invocation in CloudWatch's embedded metric format, which
//! CloudWatch turns into metrics without an API request.

use std::sync::OnceLock;

use metrics_cloudwatch_embedded::Collector;

/// The CloudWatch namespace of Herald's metrics.
pub const NAMESPACE: &str = "Herald";

static COLLECTOR: OnceLock<Option<&'static Collector>> = OnceLock::new();

/// The process's collector, installed as its metrics recorder on first use; `None` when a
/// recorder was installed before (the metrics then go there).
pub fn collector() -> Option<&'static Collector> {
    *COLLECTOR.get_or_init(|| {
        let function = std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "local".into());
        let installed = metrics_cloudwatch_embedded::Builder::new()
            .cloudwatch_namespace(NAMESPACE)
            .with_dimension("function", function)
            .lambda_cold_start_metric("herald_cold_starts_total")
            .init();
        match installed {
            Ok(c) => {
                super::describe();
                Some(c)
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics are not written (embedded metric format)");
                None
            }
        }
    })
}

/// Serves a Router (API Gateway's HTTP API), flushing metrics after each request.
pub async fn run_http(router: axum::Router) -> Result<(), lambda_runtime::Error> {
    match collector() {
        Some(c) => metrics_cloudwatch_embedded::lambda::service::run_http(c, router).await,
        None => lambda_http::run(router).await,
    }
}

/// Serves an event function, flushing metrics after each invocation.
pub async fn run_events<E, R, F, Fut>(handler: F) -> Result<(), lambda_runtime::Error>
where
    E: serde::de::DeserializeOwned + Send + 'static,
    R: serde::Serialize + Send + 'static,
    F: Fn(lambda_runtime::LambdaEvent<E>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<R, lambda_runtime::Error>> + Send + 'static,
{
    let service = lambda_runtime::service_fn(handler);
    match collector() {
        Some(c) => metrics_cloudwatch_embedded::lambda::service::run(c, service).await,
        None => lambda_runtime::run(service).await,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use crate::domain::health::Outcome;

    /// The process's recorder becomes the collector here: no other test of this crate
    /// installs one.
    #[test]
    fn herald_metrics_come_out_as_embedded_metric_format() {
        let collector = super::collector().expect("the first recorder of this process");
        let latency = std::time::Duration::from_millis(40);
        crate::telemetry::gateway_outcome("emf-test", Outcome::Success, latency);
        crate::telemetry::gateway_outcome("emf-test", Outcome::Success, latency);
        let mut out = Vec::new();
        collector.flush(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let line = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|v| {
                v["gateway"] == "emf-test" && v.get(crate::telemetry::GATEWAY_OUTCOMES).is_some()
            })
            .unwrap_or_else(|| panic!("no outcome counter in {text}"));
        assert_eq!(line[crate::telemetry::GATEWAY_OUTCOMES], 2);
        assert_eq!(line["class"], "success");
        assert_eq!(line["function"], "local");
        let directive = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "Herald");
    }
}
