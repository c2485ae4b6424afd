//! Failover, embedded: with the primary sandbox failing every send, the breaker opens and
//! traffic moves to the backup; when the primary recovers, a half-open probe brings it back.
//! Every message is delivered, and sent exactly once (the sandboxes' durable send logs).

use std::collections::HashMap;
use std::time::Duration;

use herald_tests::TestServer;
use serde_json::json;
use shared::gateway::SandboxConfig;

fn email(i: usize) -> serde_json::Value {
    json!({ "channel": "email", "priority": "P4", "to": format!("user{i}@example.com"),
            "subject": "Hi", "body": "Hello" })
}

/// How many times each message id appears in the sandboxes' send logs.
fn sends(dir: &std::path::Path) -> HashMap<String, usize> {
    let mut count = HashMap::new();
    for log in ["sandbox-sends.log", "sandbox-b-sends.log"] {
        let text = std::fs::read_to_string(dir.join(log)).unwrap_or_default();
        for line in text.lines() {
            let id = line.split('\t').nth(1).unwrap().to_owned();
            *count.entry(id).or_default() += 1;
        }
    }
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_fails_over_and_comes_back_with_every_message_sent_once() {
    let s = TestServer::start_with(|cfg| {
        cfg.sandbox.failure_rate = 1.0;
        cfg.backup_sandboxes.push(SandboxConfig {
            name: "sandbox-b".into(),
            ..cfg.sandbox.clone()
        });
        cfg.backup_sandboxes[0].failure_rate = 0.0;
        cfg.engine.health_interval = Duration::from_millis(100);
        cfg.engine.breaker.cooldown = Duration::from_millis(1_500);
        cfg.engine.backoff_base = Duration::from_millis(20);
        cfg.engine.backoff_max = Duration::from_millis(200);
        cfg.engine.max_attempts = 20;
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..60 {
        ids.push(s.send(&email(i)).await);
    }
    for id in &ids {
        s.wait_status(id, "delivered").await;
    }
    // Failed over: the later messages went straight to the backup, by the breaker.
    let late = s.get(&format!("/v1/messages/{}", ids[59])).await.body;
    assert_eq!(late["gateway"], "sandbox-b", "{late:#}");
    assert!(
        late["route_reason"]
            .as_str()
            .unwrap()
            .starts_with("failover: sandbox down"),
        "{late:#}"
    );
    let primary = s.channel_stats("email", "sandbox").await;
    assert_eq!(primary["health"]["state"], "down", "{primary:#}");
    assert_ne!(
        primary["health"]["breaker"]["state"], "closed",
        "{primary:#}"
    );
    let primary_handoffs = |from: usize| {
        s.embedded.handoffs.lock()[from..]
            .iter()
            .filter(|h| h.gateway == "sandbox")
            .count()
    };
    let mark = s.embedded.handoffs.lock().len();
    let started = std::time::Instant::now();
    let mut more = Vec::new();
    for i in 60..100 {
        more.push(s.send(&email(i)).await);
    }
    for id in &more {
        s.wait_status(id, "delivered").await;
    }
    let probes = primary_handoffs(mark);
    // The breaker lets about one probe through per cool-down (1.5 s), so how many the primary
    // may see grows with how long these sends took on this machine: one for a breaker already
    // half-open at the mark, one per cool-down begun since, and one to spare.
    let elapsed = started.elapsed();
    // Capped, so a run made slow by sends that all went to the primary still fails.
    let allowed = (2 + (elapsed.as_secs_f64() / 1.5).ceil() as usize).min(10);
    assert!(
        probes <= allowed,
        "the open breaker keeps traffic off the primary (probes only): {probes} hand-offs to \
         the primary in {elapsed:?}, at most {allowed} allowed"
    );

    // The primary recovers: after the cool-down a probe succeeds and closes the breaker.
    s.embedded.sandboxes[0].set_failure_rate(0.0);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut back = None;
    let mut i = 100;
    while back.is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the primary never came back"
        );
        let id = s.send(&email(i)).await;
        i += 1;
        let view = s.wait_status(&id, "delivered").await;
        if view["gateway"] == "sandbox" && view["route_reason"] == "primary healthy" {
            back = Some(id);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all_sent = sends(s.dir.path());
    assert_eq!(all_sent.len(), i, "every message was sent");
    let twice: Vec<_> = all_sent.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "sent more than once: {twice:?}");
    health_changes_are_in_the_platform_audit_log(&s).await;
    s.stop().await;
}

/// The primary went down and came back: both changes are in the platform's audit log, by Herald.
async fn health_changes_are_in_the_platform_audit_log(s: &TestServer) {
    use herald_tests::shared::domain::audit::{Actor, AuditAction};
    use herald_tests::shared::domain::suppression::Scope;
    use herald_tests::shared::ports::AuditFilter;
    let filter = AuditFilter {
        action: Some(AuditAction::GatewayHealthChanged),
        target: Some("sandbox".into()),
        ..AuditFilter::default()
    };
    let changes = s
        .embedded
        .herald
        .audit
        .audit_page(&Scope::Global, &filter, None, 100)
        .await
        .unwrap()
        .items;
    assert!(changes.iter().all(|e| e.actor == Actor::System));
    let down = changes
        .iter()
        .position(|e| e.detail["to"]["state"] == "down")
        .unwrap_or_else(|| panic!("no change to down in {changes:#?}"));
    let closed_again = changes[..down]
        .iter()
        .any(|e| e.detail["to"]["breaker"].to_string().contains("closed"));
    assert!(
        closed_again,
        "no newer change back to a closed breaker: {changes:#?}"
    );
}
