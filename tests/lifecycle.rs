//! Every channel through the sandbox, over HTTP: the lifecycle and its timeline.

use std::time::Duration;

use herald_tests::{timeline, TestServer};
use serde_json::json;

fn email(to: &str) -> serde_json::Value {
    json!({ "channel": "email", "priority": "P4", "to": to, "subject": "Hello", "body": "Hi there" })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_sms_and_push_reach_delivered_with_ordered_timelines() {
    let s = TestServer::start().await;
    let ids = [
        s.send(&email("success@simulator.amazonses.com")).await,
        s.send(&json!({ "channel": "sms", "priority": "P1", "to": "+15005550006", "body": "Your code is 123" })).await,
        s.send(&json!({ "channel": "push", "priority": "P0", "to": "fcm-device-token-abc", "subject": "Alert",
                        "body": "Storm warning" }))
            .await,
    ];
    for id in &ids {
        let view = s.wait_status(id, "delivered").await;
        assert_eq!(
            timeline(&view),
            ["queued", "sending", "sent", "delivered"],
            "{view:#}"
        );
        let ats: Vec<&str> = view["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["at"].as_str().unwrap())
            .collect();
        assert!(
            ats.windows(2).all(|w| w[0] <= w[1]),
            "events out of time order: {ats:?}"
        );
        assert_eq!(view["gateway"], "sandbox");
        assert_eq!(view["attempts"], 1);
        assert_eq!(s.handoffs_of(id), 1);
    }
    let sms = s.get(&format!("/v1/messages/{}", ids[1])).await.body;
    assert_eq!(
        sms["sms"],
        json!({ "encoding": "gsm7", "segments": 1, "units": 16 })
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulator_addresses_bounce_complain_and_ooto_delivers() {
    let s = TestServer::start().await;
    let bounce = s.send(&email("bounce@simulator.amazonses.com")).await;
    let complaint = s.send(&email("complaint@simulator.amazonses.com")).await;
    let suppressed = s
        .send(&email("suppressionlist@simulator.amazonses.com"))
        .await;
    let ooto = s.send(&email("ooto@simulator.amazonses.com")).await;

    let view = s.wait_status(&bounce, "bounced").await;
    assert_eq!(timeline(&view), ["queued", "sending", "sent", "bounced"]);
    assert_eq!(view["events"][3]["detail"]["bounce"], "hard");

    let view = s.wait_status(&complaint, "complained").await;
    assert_eq!(
        timeline(&view),
        ["queued", "sending", "sent", "delivered", "complained"]
    );

    let view = s.wait_status(&suppressed, "bounced").await;
    assert!(view["events"][3]["detail"]["diagnostic"]
        .as_str()
        .unwrap()
        .contains("suppression list"));

    s.wait_status(&ooto, "delivered").await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_test_numbers_fail_permanently_into_the_dead_letter_list() {
    let s = TestServer::start().await;
    let invalid = s
        .send(&json!({ "channel": "sms", "priority": "P4", "to": "+15005550001", "body": "x" }))
        .await;
    let unroutable = s
        .send(&json!({ "channel": "sms", "priority": "P4", "to": "+15005550009", "body": "x" }))
        .await;
    let view = s.wait_status(&invalid, "failed").await;
    assert_eq!(timeline(&view), ["queued", "sending", "failed"]);
    assert!(
        view["last_error"].as_str().unwrap().starts_with("21211"),
        "{view:#}"
    );
    assert_eq!(view["attempts"], 1, "a permanent error is not retried");
    let view = s.wait_status(&unroutable, "failed").await;
    assert!(view["last_error"].as_str().unwrap().starts_with("21612"));

    let dead = s.get("/v1/dead-letters").await.body;
    let ids: Vec<&str> = dead["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&invalid.as_str()) && ids.contains(&unroutable.as_str()),
        "{dead:#}"
    );
    assert!(
        s.wait_for(&invalid, Duration::from_millis(100), |_| false)
            .await["events"]
            .as_array()
            .unwrap()
            .len()
            == 3
    );
    s.stop().await;
}
