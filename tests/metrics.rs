//! `GET /metrics` of `herald serve`: on its own listener (not the API's), in Prometheus text
//! format that a Prometheus parser reads, with counters that move as messages flow.

use std::collections::HashMap;
use std::time::Duration;

use herald_tests::herald_binary;
use herald_tests::process::{create_key, send_log_len, Api, Serve};
use prometheus_parse::{Sample, Scrape, Value};
use serde_json::json;

async fn scrape(url: &str) -> Scrape {
    let res = reqwest::get(url).await.expect("GET /metrics");
    assert_eq!(res.status(), 200);
    let kind = res.headers()["content-type"]
        .to_str()
        .unwrap_or("")
        .to_owned();
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    let text = res.text().await.expect("metrics text");
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    Scrape::parse(lines).unwrap_or_else(|e| panic!("not Prometheus text ({e}):\n{text}"))
}

/// The value of the samples named `name` whose labels include `labels`, summed.
fn total(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let matching =
        |s: &&Sample| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v));
    scrape
        .samples
        .iter()
        .filter(matching)
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            Value::Summary(_) => 0.0,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_apart_from_the_api_and_move_with_the_messages() {
    let bin = herald_binary();
    let dir = tempfile::tempdir().expect("temp dir");
    let logs = tempfile::tempdir().expect("temp dir for stderr");
    let key = create_key(&bin, dir.path(), "metered");
    let serve = Serve::start(&bin, dir.path(), logs.path().join("serve.stderr"), &[]).await;
    let metrics = serve
        .banner
        .iter()
        .find_map(|l| l.strip_prefix("metrics on ").map(str::to_owned))
        .unwrap_or_else(|| panic!("no metrics line in {:?}", serve.banner));
    let api = Api {
        client: reqwest::Client::new(),
        url: serve.url.clone(),
        key,
    };
    let on_api = api
        .client
        .get(format!("{}/metrics", serve.url))
        .send()
        .await;
    assert_eq!(
        on_api.expect("GET").status(),
        404,
        "/metrics is not on the API's listener"
    );

    let before = scrape(&metrics).await;
    for i in 0..20 {
        let body = json!({ "channel": "email", "priority": if i % 2 == 0 { "P1" } else { "P3" },
                           "to": format!("m{i}@example.com"), "subject": "s", "body": "b" });
        api.post("/v1/messages", &body).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while send_log_len(dir.path()) < 20 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sends never went out"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    api.get("/v1/stats/queue").await;
    let after = scrape(&metrics).await;

    let moved = |name: &str, labels: &[(&str, &str)]| {
        total(&after, name, labels) - total(&before, name, labels)
    };
    let accepted = [
        ("route", "/v1/messages"),
        ("method", "POST"),
        ("status", "202"),
    ];
    assert_eq!(moved("herald_http_requests_total", &accepted), 20.0);
    assert_eq!(moved("herald_lane_handoffs_total", &[("lane", "P1")]), 10.0);
    assert_eq!(moved("herald_lane_handoffs_total", &[("lane", "P3")]), 10.0);
    assert_eq!(moved("herald_lane_claims_total", &[]), 20.0);
    assert_eq!(
        moved("herald_lane_dwell_seconds_count", &[("lane", "P1")]),
        10.0
    );
    assert_eq!(
        moved("herald_accept_to_sent_seconds_count", &[("lane", "P3")]),
        10.0
    );
    assert_eq!(
        moved(
            "herald_gateway_outcomes_total",
            &[("gateway", "sandbox"), ("class", "success")]
        ),
        20.0
    );
    assert!(moved("herald_sqlite_commit_seconds_count", &[]) >= 1.0);
    let by_lane: HashMap<String, f64> = after
        .samples
        .iter()
        .filter(|s| s.metric == "herald_lane_depth")
        .filter_map(|s| {
            Some((
                s.labels.get("lane")?.to_owned(),
                total(
                    &after,
                    "herald_lane_depth",
                    &[("lane", s.labels.get("lane")?)],
                ),
            ))
        })
        .collect();
    assert_eq!(by_lane.len(), 5, "a depth per lane: {by_lane:?}");
    assert_eq!(
        total(
            &after,
            "herald_gateway_breaker_state",
            &[("gateway", "sandbox")]
        ),
        0.0
    );
    // A route that does not exist is one label, whatever the caller typed.
    let stray = api
        .client
        .get(format!("{}/v1/nothing/{}", serve.url, "x".repeat(40)))
        .send()
        .await;
    assert_eq!(stray.expect("GET").status(), 404);
    let last = scrape(&metrics).await;
    assert!(last
        .samples
        .iter()
        .all(|s| !s.labels.values().any(|v| v.contains("xxxxxxxx"))));

    // Idle, the 24 lane workers look at their lanes every 100 ms; an idle priority worker's
    // parked look waits for an accept, and never for another worker's look (they would set
    // each other off, and the writer would spin).
    let commits = |s: &Scrape| total(s, "herald_sqlite_commit_seconds_count", &[]);
    let idle_from = commits(&scrape(&metrics).await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = commits(&scrape(&metrics).await) - idle_from;
    assert!(idle < 400.0, "{idle} commits in a second of idling");
    serve.kill9().await;
}
