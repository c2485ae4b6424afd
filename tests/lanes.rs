//! Lanes: P0 and P4 never wait behind a P3 backlog.

use std::time::{Duration, Instant};

use herald_tests::shared::domain::Priority;
use herald_tests::TestServer;
use serde_json::json;

const BACKLOG: usize = 100_000;
const SANDBOX_LATENCY: Duration = Duration::from_millis(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p0_and_p4_overtake_a_100k_p3_backlog() {
    let s = TestServer::start_with(|cfg| cfg.sandbox.latency = SANDBOX_LATENCY).await;
    let p3 = s.embedded.herald.config.lane(Priority::P3);
    let p3_workers = p3.workers;
    // A bulk worker hands its batch over concurrently, each hand-off stepping aside at the gate
    // first; those already past the gate when a priority message arrives still go (routing,
    // pacing, then the gateway). Nothing more may.
    let in_flight = p3.workers * p3.batch;

    for chunk in 0..BACKLOG / 10_000 {
        let recipients: Vec<_> = (0..10_000)
            .map(|i| json!({ "to": format!("reader{}@example.com", chunk * 10_000 + i) }))
            .collect();
        let r = s
            .post(
                "/v1/messages/bulk",
                &json!({ "channel": "email", "priority": "P3", "subject": "News", "body": "Weekly news",
                         "recipients": recipients }),
            )
            .await;
        assert_eq!(r.status, 202, "{}", r.body);
        assert_eq!(r.body["queued"], 10_000);
    }
    // Let the P3 workers get going on the backlog.
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.embedded.handoffs.lock().len() < 200 {
        assert!(
            Instant::now() < deadline,
            "P3 backlog did not start draining"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    for round in 0..10 {
        let priority = if round % 2 == 0 { "P0" } else { "P4" };
        let requested_at = chrono::Utc::now().timestamp_micros();
        let id = s
            .send(&json!({ "channel": "sms", "priority": priority, "to": "+15005550006", "body": format!("alert {round}") }))
            .await;
        // Accepted = acknowledged with a 202; from here the bulk lanes yield.
        let accepted_at = chrono::Utc::now().timestamp_micros();
        let deadline = Instant::now() + Duration::from_secs(5);
        let handed_at = loop {
            let found = s
                .embedded
                .handoffs
                .lock()
                .iter()
                .find(|h| h.message_id.to_string() == id)
                .map(|h| h.at_micros);
            if let Some(at) = found {
                break at;
            }
            assert!(
                Instant::now() < deadline,
                "{priority} message {id} was not handed over within 5 s"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let handoffs = s.embedded.handoffs.lock().clone();
        let p3_between = handoffs
            .iter()
            .filter(|h| {
                h.priority == Priority::P3 && h.at_micros > accepted_at && h.at_micros < handed_at
            })
            .count();
        let p3_done = handoffs
            .iter()
            .filter(|h| h.priority == Priority::P3)
            .count();
        println!(
            "{priority}: request -> hand-off {:.2} ms, 202 -> hand-off {:.2} ms, P3 hand-offs in between: \
             {p3_between} (P3 workers: {p3_workers}), P3 handed so far: {p3_done}",
            (handed_at - requested_at) as f64 / 1000.0,
            (handed_at - accepted_at).max(0) as f64 / 1000.0
        );
        assert!(p3_done < BACKLOG, "the P3 backlog must still be draining");
        assert!(
            p3_between <= in_flight,
            "{p3_between} P3 messages were handed over while a {priority} message waited (limit {in_flight})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = s.get("/v1/stats/queue").await.body;
    let p3 = stats["lanes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["lane"] == "P3")
        .cloned()
        .unwrap();
    assert!(
        p3["depth"].as_u64().unwrap() > 0,
        "P3 still has a backlog at the end: {p3}"
    );
    s.stop().await;
}
