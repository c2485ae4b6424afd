//! Gateway health on AWS (moto): outcomes recorded by separate dispatcher instances add up in
//! DynamoDB, the health checker opens the breaker, every instance routes by it, and a probe
//! send closes it again.

use std::time::Duration;

use herald_tests::aws::AwsApi;
use shared::aws::lambda::lambda_engine_config;
use shared::aws::AwsBackend;
use shared::domain::health::{Breaker, HealthState, Outcome};
use shared::engine::EngineConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_from_many_instances_open_the_breaker_everywhere() {
    let api = AwsApi::start().await;
    let config = EngineConfig {
        breaker: shared::domain::health::BreakerConfig {
            cooldown: Duration::from_secs(1),
        },
        ..lambda_engine_config()
    };
    let instance = |_: usize| {
        let backend = AwsBackend::new(&api.stack.sdk, &api.stack.settings);
        backend.herald(&api.stack.settings, config.clone()).unwrap()
    };
    // Two dispatchers' invocations, each flushing its outcomes at the end.
    for i in 0..2 {
        let h = instance(i);
        for _ in 0..15 {
            h.health
                .record("ses", Outcome::Transient, Duration::from_millis(900));
        }
        h.health
            .record("ses", Outcome::Success, Duration::from_millis(40));
        h.health.flush().await.unwrap();
    }
    let checker = instance(2);
    let statuses = checker.check_gateways().await;
    let ses = statuses
        .iter()
        .find(|s| s.gateway == "ses")
        .expect("ses checked");
    assert_eq!(ses.counts.transient, 30, "both instances' outcomes add up");
    assert_eq!(ses.state, HealthState::Down);
    assert!(matches!(ses.breaker, Breaker::Open { .. }), "{ses:?}");

    // Any other instance (the API's, here) sees it.
    let (status, stats) = api
        .call(reqwest::Method::GET, "/v1/stats/channels", None)
        .await;
    assert_eq!(status, 200);
    let entry = stats["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["gateway"] == "ses")
        .unwrap()
        .clone();
    assert_eq!(entry["health"]["breaker"]["state"], "open", "{entry:#}");
    assert_eq!(entry["health"]["state"], "down");
    assert!(
        entry["health"]["latency_p95_ms"].as_f64().unwrap() >= 500.0,
        "{entry:#}"
    );

    // After the cool-down the checker lets probes through; a probe send that succeeds closes
    // the breaker for everyone.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let half = checker.check_gateways().await;
    assert!(
        matches!(half[0].breaker, Breaker::HalfOpen { .. }),
        "{half:?}"
    );
    let dispatcher = instance(3);
    let id = api
        .send(
            serde_json::json!({ "channel": "email", "priority": "P1", "to": "ann@example.com",
                                  "subject": "Hi", "body": "Hello" }),
        )
        .await;
    let herald = std::sync::Arc::new(dispatcher);
    api.stack
        .poll_once(
            api.stack.lane_url(shared::domain::Priority::P1),
            10,
            |event| {
                let herald = herald.clone();
                async move { shared::aws::lambda::dispatch(&herald, event).await }
            },
        )
        .await
        .unwrap();
    let view = api.view(&id).await;
    assert_eq!(view["status"], "sent", "{view:#}");
    assert!(
        view["route_reason"]
            .as_str()
            .unwrap()
            .starts_with("probe: ses"),
        "{view:#}"
    );
    let after = checker.gateway_health().await.unwrap();
    assert_eq!(after["ses"].breaker, Breaker::Closed, "{:?}", after["ses"]);
}
