//! The suppression list, embedded, over HTTP: checked at accept and again at dispatch, bulk
//! filtering, automatic entries (hard bounces, complaints, soft-bounce strikes, dead tokens),
//! and the CSV round trip.

use std::time::Duration;

use herald_tests::{timeline, TestServer};
use serde_json::json;
use shared::domain::MessageId;
use shared::engine::tracker::Notified;
use shared::ports::{EventClaim, ProviderEvent, ProviderEventKind, StoreError};

fn email(to: &str) -> serde_json::Value {
    json!({ "channel": "email", "priority": "P4", "to": to, "subject": "Hi", "body": "Hello" })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suppressed_address_is_stopped_at_accept() {
    let s = TestServer::start().await;
    let put = s
        .put_as(
            "/v1/suppressions/email/Ann@Example.com",
            &s.key,
            &json!({ "reason": "unsubscribe" }),
        )
        .await;
    assert_eq!(put.status.as_u16(), 201, "{}", put.body);
    assert_eq!(
        put.body["address"], "ann@example.com",
        "stored in canonical form"
    );
    let r = s.post("/v1/messages", &email("ann@example.com")).await;
    assert_eq!(r.status.as_u16(), 202);
    assert_eq!(r.body["status"], "suppressed", "the response says so");
    let view = s
        .get(&format!("/v1/messages/{}", r.body["id"].as_str().unwrap()))
        .await
        .body;
    assert_eq!(timeline(&view), ["suppressed"]);
    assert_eq!(
        view["events"][0]["detail"]["suppressed"]["reason"],
        "unsubscribe"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        s.handoffs_of(r.body["id"].as_str().unwrap()),
        0,
        "never handed over"
    );

    // Another tenant's list does not stop this tenant's sends.
    let other = s.new_key("globex").await;
    let r = s
        .post_with("/v1/messages", &other, &[], &email("ann@example.com"))
        .await;
    assert_eq!(r.body["status"], "queued");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_added_after_accept_stops_the_dispatch() {
    let s = TestServer::start().await;
    // 4 s ahead: time on a loaded machine for the send and the PUT before it is due.
    let later = chrono::Utc::now() + chrono::Duration::seconds(4);
    let mut body = email("late@example.com");
    body["send_at"] = json!(later.to_rfc3339());
    let id = s.send(&body).await;
    let put = s
        .put_as(
            "/v1/suppressions/email/late@example.com",
            &s.key,
            &json!({}),
        )
        .await;
    assert!(
        chrono::Utc::now() < later,
        "the send and the PUT took past send_at: the test no longer checks an entry added \
         before dispatch"
    );
    assert_eq!(put.status.as_u16(), 201);
    // Up to 4 s of waiting for send_at, then the dispatch: longer than `wait_status`'s 10 s.
    let view = s
        .wait_for(&id, Duration::from_secs(20), |st| st == "suppressed")
        .await;
    assert_eq!(view["status"], "suppressed", "{view:#}");
    assert_eq!(
        timeline(&view),
        ["queued", "sending", "suppressed"],
        "{view:#}"
    );
    assert_eq!(s.handoffs_of(&id), 0);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_filters_two_thousand_suppressed_out_of_ten_thousand() {
    let s = TestServer::start().await;
    let mut csv = String::from("channel,address,reason\n");
    for i in (0..10_000).step_by(5) {
        csv.push_str(&format!("email,reader{i}@example.com,unsubscribe\n"));
    }
    let imported = s.import_suppressions(&s.key, &csv).await;
    assert_eq!(imported.status.as_u16(), 200, "{}", imported.body);
    assert_eq!(imported.body["imported"], 2_000);
    let r = s
        .bulk_email("P2", 10_000, |i| format!("reader{i}@example.com"))
        .await;
    assert_eq!(r.status.as_u16(), 202, "{}", r.body);
    assert_eq!(
        (r.body["queued"].as_u64(), r.body["suppressed"].as_u64()),
        (Some(8_000), Some(2_000))
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while s.embedded.handoffs.lock().len() < 8_000 {
        assert!(std::time::Instant::now() < deadline, "bulk not handed over");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        s.embedded.handoffs.lock().len(),
        8_000,
        "no suppressed recipient was handed over"
    );
    let none = s.channel_stats("email", "none").await;
    assert_eq!(none["counts"]["suppressed"], 2_000, "{none:#}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounces_complaints_and_dead_tokens_add_entries() {
    let s = TestServer::start().await;
    let bounced = s.send(&email("bounce@simulator.amazonses.com")).await;
    s.wait_status(&bounced, "bounced").await;
    let complained = s.send(&email("complaint@simulator.amazonses.com")).await;
    s.wait_status(&complained, "complained").await;
    let token = s
        .send(&json!({ "channel": "push", "priority": "P1", "to": "unregistered-device-1", "body": "x" }))
        .await;
    s.wait_status(&token, "failed").await;

    // Each entry is added in the background after the message's status change: wait for it.
    let server = &s;
    let entry = |path: &'static str| async move {
        server
            .poll_get(path, "the entry", Duration::from_secs(10), |r| {
                r.status == reqwest::StatusCode::OK
            })
            .await
    };
    let hard = entry("/v1/suppressions/email/bounce@simulator.amazonses.com").await;
    assert_eq!(
        (hard.body["reason"].as_str(), hard.body["scope"].as_str()),
        (Some("hard_bounce"), Some("global"))
    );
    let complaint = entry("/v1/suppressions/email/complaint@simulator.amazonses.com").await;
    assert_eq!(
        (
            complaint.body["reason"].as_str(),
            complaint.body["scope"].as_str()
        ),
        (Some("complaint"), Some("acme"))
    );
    let dead = entry("/v1/suppressions/push/unregistered-device-1").await;
    assert_eq!(dead.body["reason"], "invalid_token");
    // A global entry is not the tenant's to remove.
    let removed = s
        .delete("/v1/suppressions/email/bounce@simulator.amazonses.com")
        .await;
    assert_eq!(removed.status.as_u16(), 409);
    assert_eq!(
        removed.body["type"],
        "https://herald.dev/problems/suppressed-globally"
    );
    // And the next send to it stops at accept.
    let r = s
        .post("/v1/messages", &email("bounce@simulator.amazonses.com"))
        .await;
    assert_eq!(r.body["status"], "suppressed");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_soft_bounces_in_thirty_days_suppress() {
    let s = TestServer::start().await;
    let herald = s.embedded.herald.clone();
    for strike in 1..=3 {
        let id = s.send(&email("full@example.com")).await;
        let view = s.wait_status(&id, "delivered").await;
        let event = ProviderEvent {
            gateway: "sandbox".into(),
            provider_message_id: view["provider_message_id"].as_str().unwrap().to_owned(),
            message_id: MessageId::parse(&id),
            kind: ProviderEventKind::Bounced { permanent: false },
            at: chrono::Utc::now(),
            detail: json!({ "bounce_type": "Transient" }),
        };
        let applied = herald
            .apply_notification("test", &format!("soft-{strike}"), vec![event.clone()])
            .await
            .unwrap();
        assert_eq!(applied, Notified::Applied);
        // The same notification again changes nothing, and does not count as a strike.
        let repeat = herald
            .apply_notification("test", &format!("soft-{strike}"), vec![event])
            .await
            .unwrap();
        assert_eq!(repeat, Notified::Repeat);
        let entry = s.get("/v1/suppressions/email/full@example.com").await;
        if strike < 3 {
            assert_eq!(
                entry.status.as_u16(),
                404,
                "strike {strike} alone does not suppress"
            );
        } else {
            assert_eq!(
                entry.body["reason"], "soft_bounce_strikes",
                "{}",
                entry.body
            );
        }
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_import_and_export_round_trip() {
    let s = TestServer::start().await;
    let csv = "channel,address,reason,expires_at\n\
               email,ann@example.com,unsubscribe,\n\
               sms,+15005550006,sms_opt_out,2030-01-01T00:00:00Z\n\
               email,not-an-address,manual,\n\
               push,token-1,invalid_reason,\n\
               email,bob@example.com,,\n";
    let r = s.import_suppressions(&s.key, csv).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.body);
    assert_eq!(
        (r.body["imported"].as_u64(), r.body["updated"].as_u64()),
        (Some(3), Some(0))
    );
    let lines: Vec<u64> = r.body["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [4, 5], "bad rows by line, the header being line 1");

    let export = s
        .client
        .get(format!("{}/v1/suppressions/export", s.url))
        .bearer_auth(&s.key)
        .send()
        .await
        .unwrap();
    assert_eq!(export.headers()["content-type"], "text/csv; charset=utf-8");
    let exported = export.text().await.unwrap();
    // Into a second tenant: the export is a valid import, entry for entry.
    let other = s.new_key("globex").await;
    let again = s.import_suppressions(&other, &exported).await;
    assert_eq!(again.body["imported"], 3, "{}", again.body);
    let listed = s.get_as("/v1/suppressions?limit=10", &other).await.body;
    let entries: Vec<(String, String, String)> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["channel"].as_str().unwrap().into(),
                e["address"].as_str().unwrap().into(),
                e["reason"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        entries,
        [
            (
                "email".into(),
                "ann@example.com".into(),
                "unsubscribe".into()
            ),
            ("email".into(), "bob@example.com".into(), "manual".into()),
            ("sms".into(), "+15005550006".into(), "sms_opt_out".into()),
        ]
    );
    let sms = s
        .get_as("/v1/suppressions/sms/%2B15005550006", &other)
        .await
        .body;
    assert_eq!(sms["expires_at"], "2030-01-01T00:00:00Z");
    // Paging and filters.
    let first = s.get("/v1/suppressions?limit=2").await.body;
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    let after = first["next_after"].as_str().unwrap();
    let second = s
        .get(&format!("/v1/suppressions?limit=2&after={after}"))
        .await
        .body;
    assert_eq!(second["items"][0]["channel"], "sms");
    let filtered = s
        .get("/v1/suppressions?channel=email&reason=manual")
        .await
        .body;
    assert_eq!(filtered["items"].as_array().unwrap().len(), 1);
    s.stop().await;
}

/// A try that died after claiming a bounce (a crash, a timeout) leaves a claim, not a mark:
/// a redelivery within its lease is asked to come back, one after it applies the bounce.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounce_whose_first_try_died_is_applied_by_a_retry() {
    let s = TestServer::start().await;
    let herald = s.embedded.herald.clone();
    let id = s.send(&email("gone@example.com")).await;
    let view = s.wait_status(&id, "delivered").await;
    let bounce = ProviderEvent {
        gateway: "sandbox".into(),
        provider_message_id: view["provider_message_id"].as_str().unwrap().to_owned(),
        message_id: MessageId::parse(&id),
        kind: ProviderEventKind::Bounced { permanent: true },
        at: chrono::Utc::now(),
        detail: json!({ "bounce_type": "Permanent" }),
    };
    let held = herald
        .events
        .claim_event("test", "hard-1", Duration::from_secs(60));
    assert!(matches!(held.await.unwrap(), EventClaim::First(_)));
    let early = herald
        .apply_notification("test", "hard-1", vec![bounce.clone()])
        .await;
    let early = early.unwrap_err();
    assert!(
        matches!(&early, StoreError::Busy(what) if what.contains("being applied")),
        "a claim still held: come back later: {early}"
    );
    let entry = s.get("/v1/suppressions/email/gone@example.com").await;
    assert_eq!(entry.status.as_u16(), 404, "nothing applied yet");

    // The same, after a lease that ran out (none here).
    let died = herald.events.claim_event("test", "hard-2", Duration::ZERO);
    assert!(matches!(died.await.unwrap(), EventClaim::First(_)));
    tokio::time::sleep(Duration::from_millis(5)).await;
    let retried = herald
        .apply_notification("test", "hard-2", vec![bounce])
        .await
        .unwrap();
    assert_eq!(retried, Notified::Applied);
    let entry = s.get("/v1/suppressions/email/gone@example.com").await;
    assert_eq!(entry.status.as_u16(), 200, "{}", entry.body);
    s.stop().await;
}
