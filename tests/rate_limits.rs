//! Pace, embedded: a recipient domain's bucket holds its rate, the bulk lanes leave room for
//! P0, and a provider's Retry-After pauses its gateway.

use std::time::Duration;

use herald_tests::{timeline, TestServer};
use serde_json::json;
use shared::domain::limits::Rate;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gmail_at_100_per_second_holds_its_rate_and_nothing_fails() {
    let s = TestServer::start_with(|cfg| {
        cfg.engine
            .rate_limits
            .domains
            .insert("gmail".into(), Rate::per_second(100.0));
    })
    .await;
    let r = s
        .bulk_email("P2", 5_000, |i| format!("user{i}@gmail.com"))
        .await;
    assert_eq!(r.body["queued"], 5_000, "{}", r.body);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while s.embedded.handoffs.lock().len() < 5_000 {
        assert!(std::time::Instant::now() < deadline, "not all handed over");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut at: Vec<i64> = s
        .embedded
        .handoffs
        .lock()
        .iter()
        .map(|h| h.at_micros)
        .collect();
    at.sort_unstable();
    // After the first second's burst (a full bucket), the steady pace.
    let (from, to) = (at[1_000], at[4_999]);
    let rate = 3_999.0 / ((to - from) as f64 / 1e6);
    println!("gmail pace: {rate:.1} sends/s (limit 100)");
    // The bucket must never let more than its rate through, so the upper bound stays tight.
    // The lower bound is loose (50/s): stalls of a loaded machine can only slow the measured
    // pace over these 40 s, never speed it up; it still catches a bucket that paces at well
    // under half its rate.
    assert!(
        (50.0..=110.0).contains(&rate),
        "measured {rate:.1}/s against 100/s"
    );

    // Nothing failed, and throttling used up no attempt.
    let sample = s.embedded.handoffs.lock()[4_000].message_id.to_string();
    let view = s.wait_status(&sample, "delivered").await;
    assert_eq!(view["attempts"], 1, "{view:#}");
    let sandbox = s.channel_stats("email", "sandbox").await;
    assert!(sandbox["counts"].get("failed").is_none(), "{sandbox:#}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p0_finds_tokens_while_p3_saturates_the_bucket() {
    let s = TestServer::start_with(|cfg| {
        cfg.engine
            .rate_limits
            .domains
            .insert("gmail".into(), Rate::per_second(50.0));
    })
    .await;
    let recipients: Vec<_> = (0..2_000)
        .map(|i| json!({ "to": format!("user{i}@gmail.com") }))
        .collect();
    s.post(
        "/v1/messages/bulk",
        &json!({ "channel": "email", "priority": "P3", "subject": "News", "body": "News",
                 "recipients": recipients }),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1_500)).await; // P3 is now pacing on the bucket
    let mut urgent = Vec::new();
    for i in 0..5 {
        urgent.push(
            s.send(
                &json!({ "channel": "email", "priority": "P0", "to": format!("alert{i}@gmail.com"),
                            "subject": "Alert", "body": "Now" }),
            )
            .await,
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for id in &urgent {
        let view = s.wait_status(id, "delivered").await;
        assert_eq!(
            timeline(&view),
            ["queued", "sending", "sent", "delivered"],
            "P0 took a token at once, never deferred: {view:#}"
        );
    }
    let handed = s.embedded.handoffs.lock().len();
    assert!(
        handed < 2_000 + 5,
        "P3 was still pacing ({handed} handed over)"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_pauses_the_gateway_for_that_long() {
    let s = TestServer::start().await;
    let throttled = s
        .send(
            &json!({ "channel": "email", "priority": "P1", "to": "throttle@simulator.amazonses.com",
                       "subject": "Hi", "body": "x" }),
        )
        .await;
    let deferred = s
        .wait_for(&throttled, Duration::from_secs(5), |st| st == "deferred")
        .await;
    let paused_at =
        chrono::DateTime::parse_from_rfc3339(deferred["updated_at"].as_str().unwrap()).unwrap();
    let other = s
        .send(
            &json!({ "channel": "email", "priority": "P1", "to": "ann@example.com",
                                "subject": "Hi", "body": "x" }),
        )
        .await;
    for id in [&throttled, &other] {
        let view = s.wait_status(id, "delivered").await;
        assert_eq!(view["attempts"], 1, "a throttle uses no attempt: {view:#}");
    }
    // Both were handed over again only once the provider's 1 s had passed.
    let last_handoffs: Vec<i64> = s
        .embedded
        .handoffs
        .lock()
        .iter()
        .filter(|h| h.message_id.to_string() == other || h.message_id.to_string() == throttled)
        .map(|h| h.at_micros)
        .collect();
    let resumed = *last_handoffs.iter().max().unwrap();
    let pause_end = paused_at.timestamp_micros() + 900_000;
    assert!(
        resumed >= pause_end,
        "a send went through the paused gateway"
    );
    // Held while the gateway was paced, it was never tried then: a hold leaves no trace on
    // the timeline (the claim's `sending` is taken back), only the send that went.
    let other_view = s.get(&format!("/v1/messages/{other}")).await.body;
    assert_eq!(
        timeline(&other_view),
        ["queued", "sending", "sent", "delivered"],
        "{other_view:#}"
    );
    s.stop().await;
}
