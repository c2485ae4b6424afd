//! The inbound pipeline and rules on the embedded backend, through signed Twilio webhooks and
//! the API: each condition and action, the auto-reply loop guard, a human takeover, the rule
//! tester without side effects, a duplicate delivery processed once, a worker that died
//! mid-processing, tenant isolation and bad input.

use std::time::Duration;

use herald_tests::conversation::{patch, sms_in, start, start_tuned, ACME_NUMBER, ANN};
use herald_tests::shared::domain::inbound::InboundClaim;
use herald_tests::shared::domain::{MessageId, TenantId};
use herald_tests::shared::ports::contract::inbound;
use herald_tests::TestServer;
use reqwest::StatusCode;
use serde_json::{json, Value};

const BOB: &str = "+15550004444";
const CAROL: &str = "+15550005555";

fn rules() -> Value {
    json!({ "rules": [
        { "name": "urgent", "when": { "pattern": "(?i)\\burgent\\b" },
          "actions": [
            { "type": "label", "label": "urgent" },
            { "type": "assign", "assignee": "agent-1" },
            { "type": "set_followup", "in_hours": 2, "next_step": "call back" },
            { "type": "webhook" } ] },
        { "name": "welcome", "when": { "channels": ["sms"], "keywords": ["hello", "hi"] },
          "actions": [ { "type": "auto_reply", "template": "hours", "every_hours": 24 } ] },
        { "name": "vip", "when": { "labels": ["urgent"] },
          "actions": [ { "type": "human_takeover" } ] }
    ] })
}

async fn set_up(s: &TestServer) {
    let tpl = json!({ "text": "We answer 9-5. You wrote: {{ body }}" });
    let r = s.put_as("/v1/templates/hours", &s.key, &tpl).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = s.put_as("/v1/inbound-rules", &s.key, &rules()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

/// The newest inbound message, once the pipeline has finished with it.
async fn processed(s: &TestServer) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let list = s.get("/v1/inbound?limit=1").await;
        assert_eq!(list.status, StatusCode::OK, "{}", list.body);
        let m = list.body["items"][0].clone();
        if m["state"] == "processed" || m["state"] == "failed" {
            return m;
        }
        assert!(std::time::Instant::now() < deadline, "not processed: {m}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn results(m: &Value) -> Vec<(String, String, String)> {
    let actions = m["decision"]["actions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    actions
        .iter()
        .map(|a| {
            let text = |k: &str| a[k].as_str().unwrap_or_default().to_owned();
            (text("type"), text("result"), text("reason"))
        })
        .collect()
}

fn result(kind: &str, outcome: &str, reason: &str) -> (String, String, String) {
    (kind.into(), outcome.into(), reason.into())
}

async fn thread_of(s: &TestServer, m: &Value) -> Value {
    let r = s
        .get(&format!("/v1/threads/{}", m["thread_id"].as_str().unwrap()))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body
}

async fn auto_replies(s: &TestServer) -> Vec<Value> {
    let r = s
        .get("/v1/messages?source_type=inbound_rule&limit=100")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["items"].as_array().cloned().unwrap_or_default()
}

/// Webhooks to a receiver on loopback, looked for often.
fn webhooks_to_loopback(cfg: &mut herald_tests::shared::embedded::EmbeddedConfig) {
    let n = &mut cfg.engine.notify;
    n.policy.allow_loopback = true;
    n.poll = Duration::from_millis(20);
}

/// A receiver for `events`, subscribed as an endpoint of acme's.
async fn receiver_of(s: &TestServer, events: &[&str]) -> herald_tests::receiver::Receiver {
    let rx = herald_tests::receiver::Receiver::start("");
    let ep = s
        .post(
            "/v1/webhook-endpoints",
            &json!({ "url": rx.url, "event_types": events }),
        )
        .await;
    assert_eq!(ep.status, StatusCode::CREATED, "{}", ep.body);
    rx.trust(&[ep.body["secret"].as_str().unwrap()]);
    rx
}

#[tokio::test]
async fn rules_label_assign_follow_up_announce_and_take_over() {
    let (s, hooks) = start_tuned(webhooks_to_loopback).await;
    set_up(&s).await;
    let rx = receiver_of(&s, &["inbound.matched"]).await;

    sms_in(&s, &hooks, "SM-r1", ANN, "URGENT: the boiler leaks").await;
    let m = processed(&s).await;
    assert_eq!(
        (
            m["decision"]["outcome"].as_str(),
            m["decision"]["rule"].as_str()
        ),
        (Some("rule"), Some("urgent")),
        "{m}"
    );
    let applied = |k| result(k, "applied", "");
    assert_eq!(
        results(&m),
        [
            applied("label"),
            applied("assign"),
            applied("set_followup"),
            applied("webhook")
        ]
    );
    let t = thread_of(&s, &m).await;
    assert_eq!(t["insights"]["label"], "urgent", "{t}");
    assert_eq!(t["assignee"], "agent-1");
    assert_eq!(t["insights"]["next_step"], "call back");
    assert_eq!(t["insights"]["set_by"], "rule:urgent");
    let received: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(m["received_at"].clone()).unwrap();
    let due: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(t["insights"]["next_followup_at"].clone()).unwrap();
    assert_eq!(due - received, chrono::Duration::hours(2));
    let got = rx.wait_for("inbound.matched", |r| !r.is_empty()).await;
    let event = &got[0]["body"];
    assert_eq!(event["data"]["rule"], "urgent", "{event}");
    assert_eq!(event["data"]["inbound_id"], m["id"]);

    // The thread is labelled now: the labels condition holds, and a person takes over.
    sms_in(&s, &hooks, "SM-r2", ANN, "are you there?").await;
    let m = processed(&s).await;
    assert_eq!(m["decision"]["rule"], "vip", "{m}");
    assert_eq!(thread_of(&s, &m).await["human_takeover"], true);

    // A carrier keyword comes before any rule.
    sms_in(&s, &hooks, "SM-r3", ANN, "STOP").await;
    let m = processed(&s).await;
    assert_eq!(m["decision"]["outcome"], "keyword", "{m}");
    assert_eq!(results(&m), []);
    assert_eq!(rx.requests().len(), 1, "inbound.matched once");
}

#[tokio::test]
async fn auto_replies_come_once_per_window_and_never_after_a_takeover() {
    let (s, hooks) = start().await;
    set_up(&s).await;
    sms_in(&s, &hooks, "SM-a1", BOB, "Hello, are you open?").await;
    let m = processed(&s).await;
    assert_eq!(m["decision"]["rule"], "welcome", "{m}");
    assert_eq!(results(&m), [result("auto_reply", "applied", "")]);
    let reply_id = m["decision"]["actions"][0]["message_id"].as_str().unwrap();
    let reply = s.wait_status(reply_id, "delivered").await;
    assert_eq!(
        reply["body"],
        "We answer 9-5. You wrote: Hello, are you open?"
    );
    assert_eq!(reply["to"], BOB, "{reply}");
    assert_eq!(reply["priority"], "P1");
    let t = thread_of(&s, &m).await;
    let timeline = t["timeline"].as_array().unwrap();
    assert_eq!(timeline.len(), 2, "{t}");
    assert_eq!(timeline[1]["message_id"], reply_id);

    // Bob's (or another bot's) answer within the window gets no second reply: no loop.
    sms_in(&s, &hooks, "SM-a2", BOB, "hi again").await;
    let m = processed(&s).await;
    assert_eq!(results(&m), [result("auto_reply", "skipped", "loop_guard")]);
    assert_eq!(auto_replies(&s).await.len(), 1);

    // Carol's thread is taken over by a person: no auto-reply until it is closed.
    sms_in(&s, &hooks, "SM-a3", CAROL, "good morning").await;
    let m = processed(&s).await;
    assert_eq!(m["decision"]["outcome"], "no_rule", "{m}");
    let path = format!("/v1/threads/{}", m["thread_id"].as_str().unwrap());
    let r = patch(&s, &path, &s.key, &json!({ "human_takeover": true })).await;
    assert_eq!(
        (r.status, &r.body["human_takeover"]),
        (StatusCode::OK, &json!(true))
    );
    sms_in(&s, &hooks, "SM-a4", CAROL, "hello?").await;
    let m = processed(&s).await;
    assert_eq!(
        results(&m),
        [result("auto_reply", "skipped", "human_takeover")]
    );
    let r = patch(&s, &path, &s.key, &json!({ "status": "closed" })).await;
    assert_eq!(r.body["human_takeover"], false, "{}", r.body);
    sms_in(&s, &hooks, "SM-a5", CAROL, "hello, anyone?").await;
    let m = processed(&s).await;
    assert_eq!(results(&m), [result("auto_reply", "applied", "")]);
    assert_eq!(auto_replies(&s).await.len(), 2);
}

#[tokio::test]
async fn the_rule_tester_decides_without_side_effects() {
    let (s, _hooks) = start().await;
    set_up(&s).await;
    let server = &s;
    let test = |body: Value| async move { server.post("/v1/inbound-rules/test", &body).await };
    let r = test(json!({ "message": { "channel": "sms", "body": "hi there", "from": ANN } })).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["decision"]["rule"], "welcome", "{}", r.body);
    assert_eq!(r.body["decision"]["actions"][0]["result"], "planned");
    let r =
        test(json!({ "message": { "channel": "sms", "body": "fine" }, "thread_label": "urgent" }))
            .await;
    assert_eq!(r.body["decision"]["rule"], "vip", "{}", r.body);
    let r = test(json!({ "message": { "channel": "whatsapp", "body": "stop" } })).await;
    assert_eq!(r.body["decision"]["outcome"], "keyword", "{}", r.body);
    // Rules not saved yet, tried as given.
    let draft = json!({ "rules": [{ "name": "night", "when": { "business_hours": {
        "timezone": "Europe/Paris", "start": "22:00", "end": "06:00" } },
        "actions": [{ "type": "label", "label": "night" }] }] });
    let at_night =
        json!({ "channel": "email", "body": "x", "received_at": "2026-12-01T23:30:00Z" });
    let r = test(json!({ "message": at_night, "rules": draft })).await;
    assert_eq!(r.body["decision"]["rule"], "night", "{}", r.body);
    let by_day = json!({ "channel": "email", "body": "x", "received_at": "2026-12-01T12:00:00Z" });
    let r = test(json!({ "message": by_day, "rules": draft })).await;
    assert_eq!(r.body["decision"]["outcome"], "no_rule", "{}", r.body);
    let bad = json!({ "rules": [{ "name": "a", "actions": [] }] });
    let r = test(json!({ "message": by_day, "rules": bad })).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert_eq!(
        r.body["errors"][0]["pointer"], "/rules/rules/0/actions",
        "{}",
        r.body
    );
    // Nothing was stored, threaded or sent.
    for path in ["/v1/inbound", "/v1/threads", "/v1/messages"] {
        let r = s.get(path).await;
        assert_eq!(r.body["items"], json!([]), "{path}: {}", r.body);
    }
    assert_eq!(s.get("/v1/inbound-rules").await.body, rules());
}

#[tokio::test]
async fn rules_are_a_tenants_own_and_bad_input_is_a_problem() {
    let (s, hooks) = start().await;
    set_up(&s).await;
    let globex = s.new_key("globex").await;
    let r = s.get_as("/v1/inbound-rules", &globex).await;
    assert_eq!(
        (r.status, &r.body),
        (StatusCode::OK, &json!({ "rules": [] }))
    );
    let reader = s.new_key_with("acme", "read").await;
    assert_eq!(
        s.get_as("/v1/inbound-rules", &reader).await.status,
        StatusCode::OK
    );
    let r = s.put_as("/v1/inbound-rules", &reader, &rules()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let anonymous = s
        .request(reqwest::Method::GET, "/v1/inbound-rules", None, &[], None)
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);

    let many: Vec<Value> = (0..51)
        .map(|i| json!({ "name": format!("r{i}"), "actions": [{ "type": "webhook" }] }))
        .collect();
    for (body, status) in [
        (
            json!({ "rules": [{ "name": "a", "when": { "pattern": "(" }, "actions": [{ "type": "webhook" }] }] }),
            422,
        ),
        (
            json!({ "rules": [{ "name": "a", "when": { "pattern": "\\w{1000}\\w{1000}" }, "actions": [{ "type": "webhook" }] }] }),
            422,
        ),
        (
            json!({ "rules": [{ "name": "a", "actions": [{ "type": "auto_reply" }] }] }),
            422,
        ),
        (
            json!({ "rules": [{ "name": "a", "actions": [{ "type": "set_followup", "in_hours": 100000 }] }] }),
            422,
        ),
        (json!({ "rules": many }), 422),
        (json!({ "rules": "all of them" }), 422),
        (json!([]), 422),
    ] {
        let r = s.put_as("/v1/inbound-rules", &s.key, &body).await;
        assert_eq!(r.status.as_u16(), status, "{body}: {}", r.body);
        assert!(r.body["type"].is_string(), "a problem: {}", r.body);
        assert_eq!(
            r.headers["content-type"], "application/problem+json",
            "{body}"
        );
    }
    assert_eq!(s.get("/v1/inbound-rules").await.body, rules(), "unchanged");

    // Another tenant's inbound message is not found, as an unknown id or a malformed one is.
    sms_in(&s, &hooks, "SM-i1", ANN, "hello").await;
    let m = processed(&s).await;
    let path = format!("/v1/inbound/{}", m["id"].as_str().unwrap());
    assert_eq!(s.get(&path).await.status, StatusCode::OK);
    for (p, key) in [
        (path.as_str(), globex.as_str()),
        (
            "/v1/inbound/0190a000-0000-7000-8000-000000000000",
            s.key.as_str(),
        ),
        ("/v1/inbound/not-an-id", s.key.as_str()),
    ] {
        let r = s.get_as(p, key).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{p}: {}", r.body);
    }
}

/// A provider's retry stores and processes one message; a worker that died holding a claim
/// leaves the message to the next one once its lease ends, across a restart, and the
/// auto-reply goes out once.
#[tokio::test]
async fn duplicates_and_dead_workers_process_each_message_once() {
    let (s, hooks) = start_tuned(|cfg| cfg.run_workers = false).await;
    set_up(&s).await;
    sms_in(&s, &hooks, "SM-d1", BOB, "hello").await;
    sms_in(&s, &hooks, "SM-d1", BOB, "hello").await;
    let list = s.get("/v1/inbound").await;
    let items = list.body["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1, "{}", list.body);
    assert_eq!(items[0]["state"], "received");
    // A worker claims it and dies (the process stops with the claim held).
    let id = MessageId::parse(items[0]["id"].as_str().unwrap()).unwrap();
    let acme = TenantId::parse("acme").unwrap();
    let claim = s
        .embedded
        .herald
        .inbound
        .claim_inbound(&acme, id, Duration::from_secs(1), chrono::Utc::now())
        .await
        .unwrap();
    assert!(matches!(claim, InboundClaim::Claimed(_)), "{claim:?}");
    let s = s
        .restart_with(|cfg| {
            cfg.run_workers = true;
            cfg.engine.inbound_lease = Duration::from_secs(1);
        })
        .await;
    let m = processed(&s).await;
    assert_eq!(
        (m["state"].as_str(), m["attempts"].as_u64()),
        (Some("processed"), Some(2)),
        "{m}"
    );
    assert_eq!(results(&m), [result("auto_reply", "applied", "")]);
    assert_eq!(auto_replies(&s).await.len(), 1);
}

/// `inbound.received` is announced by the pipeline: a message stored by a process that died
/// before anything else happened is announced after the restart, once although a worker
/// died holding its claim, and before its `inbound.matched`.
#[tokio::test]
async fn a_message_stored_before_a_crash_is_announced_once() {
    let (s, _hooks) = start_tuned(|cfg| {
        webhooks_to_loopback(cfg);
        cfg.run_workers = false;
    })
    .await;
    set_up(&s).await;
    let rx = receiver_of(&s, &["inbound.received", "inbound.matched"]).await;
    let acme = TenantId::parse("acme").unwrap();
    let mut message = inbound(&acme, "SM-c1", "urgent: call me");
    // Carol's text to acme's number, with no media to fetch.
    message.from = CAROL.into();
    message.to = ACME_NUMBER.into();
    message.media_urls.clear();
    // Stored as the provider webhook stores it; the process dies right after.
    let herald = &s.embedded.herald;
    let policy = herald.thread_policy(&acme).await.unwrap();
    let stored = herald.inbound.record_inbound(&message, &policy).await;
    assert!(stored.unwrap(), "stored the first time");
    // A worker of the next process claims it and dies too.
    let lease = Duration::from_secs(1);
    let claim = herald
        .inbound
        .claim_inbound(&acme, message.id, lease, chrono::Utc::now());
    assert!(matches!(claim.await.unwrap(), InboundClaim::Claimed(_)));
    let s = s
        .restart_with(|cfg| {
            webhooks_to_loopback(cfg);
            cfg.engine.inbound_lease = lease;
        })
        .await;
    let m = processed(&s).await;
    assert_eq!(
        (m["attempts"].as_u64(), &m["decision"]["rule"]),
        (Some(2), &json!("urgent"))
    );
    let got = rx.wait_for("both events", |r| r.len() >= 2).await;
    let types: Vec<&Value> = got.iter().map(|r| &r["body"]["type"]).collect();
    assert_eq!(types, ["inbound.received", "inbound.matched"], "{got:#?}");
    let received = &got[0]["body"]["data"];
    assert_eq!(received["inbound_id"], m["id"], "{received}");
    assert_eq!(
        (&received["from"], &received["body"]),
        (&json!(CAROL), &json!("urgent: call me"))
    );
    // Nothing more comes (the dead worker's try announced nothing; had it, the same ids).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.requests().len(), 2, "{:#?}", rx.requests());
}
