//! The HTTP API contract of DESIGN.md, end to end over loopback: idempotency, cancel, tenant
//! isolation, templates, scheduled sends, retries, dead letters and redrive, stats, OpenAPI.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use herald_tests::{timeline, Reply, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const PROBLEMS: &str = "https://herald.dev/problems/";
const SIMULATED_FAILURE: &str = "sandbox: simulated provider failure (503)";

fn email(to: &str) -> Value {
    json!({ "channel": "email", "priority": "P4", "to": to, "subject": "Hello", "body": "Hi there" })
}

/// An RFC 3339 timestamp with millisecond precision (what the store keeps).
fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Now plus `d`, truncated to whole milliseconds.
fn in_future(d: Duration) -> DateTime<Utc> {
    let t = Utc::now() + chrono::Duration::from_std(d).unwrap();
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap()
}

fn assert_problem(r: &Reply, status: StatusCode, slug: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(
        r.body["type"],
        format!("{PROBLEMS}{slug}"),
        "problem type: {}",
        r.body
    );
    assert_eq!(r.body["status"], status.as_u16(), "{}", r.body);
    assert_eq!(
        r.headers["content-type"], "application/problem+json",
        "{}",
        r.body
    );
}

/// Polls a message (as `key`) until `done(view)`; panics with the last view on timeout.
async fn wait_view(
    s: &TestServer,
    key: &str,
    id: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = s.get_as(&format!("/v1/messages/{id}"), key).await;
        assert_eq!(r.status, StatusCode::OK, "GET message: {}", r.body);
        if done(&r.body) {
            return r.body;
        }
        assert!(
            Instant::now() < deadline,
            "message {id} never reached: {what}: {:#}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls until `done()` holds; panics naming `what` on timeout.
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How many messages a tenant has, whatever their state (from `GET /v1/stats/channels`).
async fn message_count(s: &TestServer, key: &str) -> u64 {
    let r = s.get_as("/v1/stats/channels", key).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["channels"]
        .as_array()
        .expect("channels")
        .iter()
        .flat_map(|c| c["counts"].as_object().expect("counts").values())
        .map(|n| n.as_u64().expect("count"))
        .sum()
}

/// Sends the sandbox accepted for a message (its append-only send log: one line per accepted
/// send), as opposed to hand-offs, which include attempts that failed.
fn accepted_sends_of(s: &TestServer, id: &str) -> usize {
    let log = s
        .dir
        .path()
        .join(herald_tests::shared::embedded::SANDBOX_SEND_LOG);
    std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .filter(|line| line.split('\t').nth(1) == Some(id))
        .count()
}

fn events_of<'a>(view: &'a Value, kind: &str) -> Vec<&'a Value> {
    view["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["type"] == kind)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 1. Idempotency
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_replays_the_first_response_and_creates_one_message() {
    let s = TestServer::start().await;
    let globex = s.new_key("globex").await;
    let body = email("idem@example.com");
    let key = [("idempotency-key", "order-42-confirmation")];

    let first = s.post_with("/v1/messages", &s.key, &key, &body).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.body);
    assert!(
        first.headers.get("idempotent-replayed").is_none(),
        "a first request is not a replay"
    );
    assert_eq!(first.body["status"], "queued");
    let id = first.body["id"].as_str().expect("id").to_owned();

    let second = s.post_with("/v1/messages", &s.key, &key, &body).await;
    assert_eq!(second.status, StatusCode::ACCEPTED, "{}", second.body);
    assert_eq!(second.headers["idempotent-replayed"], "true");
    assert_eq!(second.body, first.body, "the replay is the first response");

    s.wait_status(&id, "delivered").await;
    assert_eq!(s.handoffs_of(&id), 1);
    assert_eq!(accepted_sends_of(&s, &id), 1);
    assert_eq!(
        message_count(&s, &s.key).await,
        1,
        "the replay made no message"
    );

    // Same key, another body: refused, and nothing is written.
    let mut changed = body.clone();
    changed["subject"] = json!("Hello again");
    let reused = s.post_with("/v1/messages", &s.key, &key, &changed).await;
    assert_problem(
        &reused,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency-key-reused",
    );
    assert!(reused.headers.get("idempotent-replayed").is_none());
    assert_eq!(message_count(&s, &s.key).await, 1);

    // The same key in another tenant is another key.
    let other = s.post_with("/v1/messages", &globex, &key, &body).await;
    assert_eq!(other.status, StatusCode::ACCEPTED, "{}", other.body);
    assert!(other.headers.get("idempotent-replayed").is_none());
    let other_id = other.body["id"].as_str().expect("id").to_owned();
    assert_ne!(other_id, id);
    assert_eq!(message_count(&s, &globex).await, 1);
    assert_eq!(message_count(&s, &s.key).await, 1);
    // Tenant A's key record did not change by B's use: A still replays its own response.
    let again = s.post_with("/v1/messages", &s.key, &key, &body).await;
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.body["id"], id.as_str());

    // Bulk: the replay returns the same bulk_id and writes nothing.
    let bulk = json!({
        "channel": "email", "priority": "P3", "subject": "News", "body": "Monthly news",
        "recipients": [{ "to": "a@example.com" }, { "to": "b@example.com" }],
    });
    let bkey = [("idempotency-key", "campaign-2024-06")];
    let b1 = s.post_with("/v1/messages/bulk", &s.key, &bkey, &bulk).await;
    assert_eq!(b1.status, StatusCode::ACCEPTED, "{}", b1.body);
    assert!(b1.headers.get("idempotent-replayed").is_none());
    assert_eq!(b1.body["queued"], 2);
    let bulk_id = b1.body["bulk_id"].as_str().expect("bulk_id").to_owned();
    let b2 = s.post_with("/v1/messages/bulk", &s.key, &bkey, &bulk).await;
    assert_eq!(b2.status, StatusCode::ACCEPTED, "{}", b2.body);
    assert_eq!(b2.headers["idempotent-replayed"], "true");
    assert_eq!(b2.body["bulk_id"], bulk_id.as_str());
    assert_eq!(b2.body, b1.body);
    assert_eq!(message_count(&s, &s.key).await, 3, "1 single + 2 bulk");

    let mut bigger = bulk.clone();
    bigger["recipients"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "to": "c@example.com" }));
    let b3 = s
        .post_with("/v1/messages/bulk", &s.key, &bkey, &bigger)
        .await;
    assert_problem(
        &b3,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency-key-reused",
    );
    assert_eq!(message_count(&s, &s.key).await, 3);

    let b4 = s
        .post_with("/v1/messages/bulk", &globex, &bkey, &bulk)
        .await;
    assert_eq!(b4.status, StatusCode::ACCEPTED, "{}", b4.body);
    assert!(b4.headers.get("idempotent-replayed").is_none());
    assert_ne!(b4.body["bulk_id"], bulk_id.as_str());
    assert_eq!(message_count(&s, &globex).await, 3);

    // Every message was handed over exactly once: 1 + 2 (acme) and 1 + 2 (globex).
    wait_until("6 hand-offs", || s.embedded.handoffs.lock().len() >= 6).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let handoffs = s.embedded.handoffs.lock().clone();
    let distinct: BTreeSet<String> = handoffs.iter().map(|h| h.message_id.to_string()).collect();
    assert_eq!(handoffs.len(), 6, "{handoffs:?}");
    assert_eq!(distinct.len(), 6, "{handoffs:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_with_one_idempotency_key_make_one_message() {
    let s = TestServer::start().await;
    let body = email("race@example.com");
    let key = [("idempotency-key", "race-1")];
    let replies = futures::future::join_all(
        (0..20).map(|_| s.post_with("/v1/messages", &s.key, &key, &body)),
    )
    .await;
    let mut ids = BTreeSet::new();
    let mut replayed = 0;
    for r in &replies {
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
        ids.insert(r.body["id"].as_str().expect("id").to_owned());
        if r.headers.get("idempotent-replayed").is_some() {
            assert_eq!(r.headers["idempotent-replayed"], "true");
            replayed += 1;
        }
    }
    assert_eq!(ids.len(), 1, "one key, one message: {ids:?}");
    assert_eq!(replayed, 19, "all but the first are replays");
    let id = ids.into_iter().next().unwrap();
    s.wait_status(&id, "delivered").await;
    assert_eq!(message_count(&s, &s.key).await, 1);
    assert_eq!(s.handoffs_of(&id), 1);
    assert_eq!(s.embedded.handoffs.lock().len(), 1);
    s.stop().await;
}

/// Stripe replays the stored response for the same key and body, whatever changed since: the
/// replay must not re-run validation or rendering against today's state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_replay_does_not_depend_on_the_template_still_existing() {
    let s = TestServer::start().await;
    let r = s
        .put_as(
            "/v1/templates/receipt",
            &s.key,
            &json!({ "subject": "Receipt {{ n }}", "text": "Order {{ n }}" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let body = json!({ "channel": "email", "priority": "P4", "to": "buyer@example.com",
                       "template": "receipt", "data": { "n": 7 } });
    let key = [("idempotency-key", "receipt-7")];
    let first = s.post_with("/v1/messages", &s.key, &key, &body).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.body);

    let r = s.delete("/v1/templates/receipt").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let replay = s.post_with("/v1/messages", &s.key, &key, &body).await;
    assert_eq!(
        replay.status,
        StatusCode::ACCEPTED,
        "a retried request must replay the first response: {}",
        replay.body
    );
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    assert_eq!(replay.body, first.body);
    assert_eq!(message_count(&s, &s.key).await, 1);
    s.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 2. Cancel
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_before_hand_off_is_final_and_after_hand_off_is_a_conflict() {
    let s = TestServer::start().await;

    // Scheduled an hour ahead.
    let mut later = email("later@example.com");
    later["send_at"] = json!(rfc3339(in_future(Duration::from_secs(3600))));
    let id = s.send(&later).await;
    let r = s.delete(&format!("/v1/messages/{id}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body, json!({ "id": id, "status": "cancelled" }));
    let view = s.get(&format!("/v1/messages/{id}")).await.body;
    assert_eq!(view["status"], "cancelled");
    assert_eq!(timeline(&view), ["queued", "cancelled"], "{view:#}");
    assert_eq!(view["attempts"], 0);

    // Due soon: its lane entry comes due after the cancel, and must not be sent. 4 s ahead
    // leaves a loaded machine time for the send and the cancel before it is due.
    let send_at = in_future(Duration::from_secs(4));
    let mut soon = email("soon@example.com");
    soon["send_at"] = json!(rfc3339(send_at));
    let soon_id = s.send(&soon).await;
    let r = s.delete(&format!("/v1/messages/{soon_id}")).await;
    assert!(
        Utc::now() < send_at,
        "the send and the cancel took past send_at: the test no longer checks a cancel \
         before the message came due"
    );
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["status"], "cancelled");
    while Utc::now() < send_at + chrono::Duration::milliseconds(800) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(s.handoffs_of(&id), 0);
    assert_eq!(s.handoffs_of(&soon_id), 0, "a cancelled message was sent");
    let view = s.get(&format!("/v1/messages/{soon_id}")).await.body;
    assert_eq!(view["status"], "cancelled");
    assert_eq!(timeline(&view), ["queued", "cancelled"], "{view:#}");

    // Cancel is idempotent and appends nothing.
    let r = s.delete(&format!("/v1/messages/{id}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body, json!({ "id": id, "status": "cancelled" }));
    let view = s.get(&format!("/v1/messages/{id}")).await.body;
    assert_eq!(timeline(&view), ["queued", "cancelled"], "{view:#}");

    // After hand-off: too late.
    let sent = s.send(&email("now@example.com")).await;
    s.wait_status(&sent, "delivered").await;
    let r = s.delete(&format!("/v1/messages/{sent}")).await;
    assert_problem(&r, StatusCode::CONFLICT, "already-dispatched");
    let view = s.get(&format!("/v1/messages/{sent}")).await.body;
    assert_eq!(view["status"], "delivered");
    assert_eq!(
        timeline(&view),
        ["queued", "sending", "sent", "delivered"],
        "{view:#}"
    );
    assert_eq!(s.handoffs_of(&sent), 1);
    s.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 3. Tenant isolation
// ---------------------------------------------------------------------------------------------

/// A request's id comes back in `X-Request-Id` and is its message's correlation id, so the
/// logs of the request and of the message's dispatch share it; an unusable one is replaced.
#[tokio::test]
async fn the_request_id_is_answered_and_follows_its_message() {
    let s = TestServer::start().await;
    let r = s
        .post_with(
            "/v1/messages",
            &s.key,
            &[("x-request-id", "req-7")],
            &email("a@example.com"),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(r.headers["x-request-id"], "req-7");
    let id = r.body["id"].as_str().expect("id").to_owned();
    let view = s.get(&format!("/v1/messages/{id}")).await;
    assert_eq!(view.body["correlation_id"], "req-7", "{:#}", view.body);
    let generated = view.headers["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(generated).is_ok(), "{generated}");

    // Even an anonymous caller's 401 names its request.
    let r = s
        .request(
            Method::GET,
            "/v1/messages/x",
            None,
            &[("x-request-id", "bad id")],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let named = r.headers["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(named).is_ok(), "{named}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_cannot_see_or_touch_each_others_messages_and_templates() {
    let s = TestServer::start().await;
    let b = s.new_key("globex").await;

    let mut scheduled = email("private@example.com");
    scheduled["send_at"] = json!(rfc3339(in_future(Duration::from_secs(3600))));
    let id = s.send(&scheduled).await;
    let path = format!("/v1/messages/{id}");

    assert_problem(
        &s.get_as(&path, &b).await,
        StatusCode::NOT_FOUND,
        "not-found",
    );
    assert_problem(
        &s.delete_as(&path, &b).await,
        StatusCode::NOT_FOUND,
        "not-found",
    );
    let view = s.get(&path).await.body;
    assert_eq!(view["status"], "queued", "B's DELETE touched A's message");
    assert_eq!(timeline(&view), ["queued"], "{view:#}");

    // A delivered message is just as invisible.
    let done = s.send(&email("done@example.com")).await;
    s.wait_status(&done, "delivered").await;
    assert_problem(
        &s.get_as(&format!("/v1/messages/{done}"), &b).await,
        StatusCode::NOT_FOUND,
        "not-found",
    );

    let unknown = format!("/v1/messages/{}", uuid::Uuid::now_v7());
    assert_problem(&s.get(&unknown).await, StatusCode::NOT_FOUND, "not-found");
    assert_problem(
        &s.delete(&unknown).await,
        StatusCode::NOT_FOUND,
        "not-found",
    );

    // Templates are per tenant.
    let tpl = json!({ "subject": "Welcome {{ name }}", "text": "Hi {{ name }}" });
    let r = s.put_as("/v1/templates/welcome", &s.key, &tpl).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_problem(
        &s.get_as("/v1/templates/welcome", &b).await,
        StatusCode::NOT_FOUND,
        "not-found",
    );
    let r = s
        .post_with(
            "/v1/messages",
            &b,
            &[],
            &json!({ "channel": "email", "priority": "P4", "to": "x@example.com",
                     "template": "welcome", "data": { "name": "X" } }),
        )
        .await;
    assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, "template-not-found");
    assert_eq!(r.body["errors"][0]["pointer"], "/template");
    assert_problem(
        &s.delete_as("/v1/templates/welcome", &b).await,
        StatusCode::NOT_FOUND,
        "not-found",
    );
    let r = s.get("/v1/templates/welcome").await;
    assert_eq!(r.status, StatusCode::OK, "B's DELETE removed A's template");
    assert_eq!(r.body["subject"], "Welcome {{ name }}");

    // B's template of the same name is its own: created, and A's is unchanged.
    let r = s
        .put_as(
            "/v1/templates/welcome",
            &b,
            &json!({ "subject": "Globex welcomes {{ name }}" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(
        s.get("/v1/templates/welcome").await.body["subject"],
        "Welcome {{ name }}"
    );
    assert_eq!(
        s.get_as("/v1/templates/welcome", &b).await.body["subject"],
        "Globex welcomes {{ name }}"
    );
    s.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 4. Templates
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_are_stored_rendered_escaped_and_deleted() {
    let s = TestServer::start().await;
    let first = json!({ "subject": "Welcome {{ user.name }}", "text": "Hi {{ user.name }}" });
    let r = s.put_as("/v1/templates/welcome", &s.key, &first).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["name"], "welcome");

    let tpl = json!({
        "subject": "Hello {{ user.name }}",
        "text": "Hi {{ user.name }}, your plan is {{ plan }}.",
        "html": "<p>Hi {{ user.name }}, your plan is {{ plan }}.</p>",
    });
    let r = s.put_as("/v1/templates/welcome", &s.key, &tpl).await;
    assert_eq!(r.status, StatusCode::OK, "a replace is 200: {}", r.body);
    let r = s.get("/v1/templates/welcome").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["name"], "welcome");
    assert_eq!(r.body["subject"], tpl["subject"]);
    assert_eq!(r.body["text"], tpl["text"]);
    assert_eq!(r.body["html"], tpl["html"]);

    let id = s
        .send(&json!({ "channel": "email", "priority": "P4", "to": "ann@example.com",
                       "template": "welcome", "data": { "user": { "name": "<b>Ann</b>" }, "plan": "pro" } }))
        .await;
    let view = s.get(&format!("/v1/messages/{id}")).await.body;
    assert_eq!(view["template"], "welcome");
    assert_eq!(view["subject"], "Hello <b>Ann</b>");
    assert_eq!(view["body"], "Hi <b>Ann</b>, your plan is pro.");
    let html = view["html"].as_str().expect("html");
    assert!(
        html.starts_with("<p>Hi &lt;b&gt;Ann&lt;"),
        "variables are HTML-escaped in the html part: {html}"
    );
    assert!(!html.contains("<b>"), "{html}");
    assert!(html.ends_with("b&gt;, your plan is pro.</p>"), "{html}");
    s.wait_status(&id, "delivered").await;

    // A missing variable is a 422 that names it.
    let r = s
        .post(
            "/v1/messages",
            &json!({ "channel": "email", "priority": "P4", "to": "ann@example.com",
                                      "template": "welcome", "data": { "plan": "pro" } }),
        )
        .await;
    assert_problem(
        &r,
        StatusCode::UNPROCESSABLE_ENTITY,
        "missing-template-variable",
    );
    assert_eq!(r.body["missing"], json!(["user.name"]), "{}", r.body);
    let r = s
        .post("/v1/messages", &json!({ "channel": "email", "priority": "P4", "to": "ann@example.com",
                                      "template": "welcome", "data": { "user": { "name": "Ann" } } }))
        .await;
    assert_problem(
        &r,
        StatusCode::UNPROCESSABLE_ENTITY,
        "missing-template-variable",
    );
    assert_eq!(r.body["missing"], json!(["plan"]), "{}", r.body);

    // Bulk: per-recipient data over the shared data; a recipient lacking a variable is rejected.
    let r = s.put_as("/v1/templates/digest",
        &s.key,
        &json!({ "subject": "News for {{ name }}", "text": "Hello {{ name }} from {{ team }}" }),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let names = [("u-1", "Ann"), ("u-2", "Bob"), ("u-3", "Cy")];
    let mut recipients: Vec<Value> = names
        .iter()
        .map(|(ext, name)| {
            json!({ "to": format!("{}@example.com", name.to_lowercase()),
                    "data": { "name": name }, "external_id": ext })
        })
        .collect();
    recipients.push(json!({ "to": "nameless@example.com", "external_id": "u-4" }));
    let r = s
        .post(
            "/v1/messages/bulk",
            &json!({ "channel": "email", "priority": "P2", "template": "digest",
                 "data": { "team": "Herald" }, "recipients": recipients }),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(r.body["queued"], 3, "{}", r.body);
    assert_eq!(r.body["suppressed"], 0);
    let rejected = r.body["rejected"].as_array().expect("rejected");
    assert_eq!(rejected.len(), 1, "{}", r.body);
    assert_eq!(rejected[0]["index"], 3);
    assert!(
        rejected[0]["reason"].as_str().unwrap().contains("name"),
        "the reason names the variable: {}",
        r.body
    );
    let bulk_id = r.body["bulk_id"].as_str().expect("bulk_id").to_owned();

    // Find the bulk's messages through the sandbox's hand-offs.
    let mut views: BTreeMap<String, Value> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while views.len() < 3 {
        assert!(
            Instant::now() < deadline,
            "bulk never handed over: {views:#?}"
        );
        let ids: Vec<String> = s
            .embedded
            .handoffs
            .lock()
            .iter()
            .map(|h| h.message_id.to_string())
            .collect();
        for hid in ids {
            let v = s.get(&format!("/v1/messages/{hid}")).await.body;
            if v["bulk_id"] == bulk_id.as_str() {
                views.insert(v["external_id"].as_str().expect("external_id").into(), v);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        views.keys().map(String::as_str).collect::<Vec<_>>(),
        ["u-1", "u-2", "u-3"]
    );
    for (ext, name) in names {
        let v = &views[ext];
        assert_eq!(v["to"], format!("{}@example.com", name.to_lowercase()));
        assert_eq!(v["subject"], format!("News for {name}"), "{v:#}");
        assert_eq!(v["body"], format!("Hello {name} from Herald"), "{v:#}");
        assert_eq!(v["template"], "digest");
    }

    // Delete, then it is gone.
    let r = s.delete("/v1/templates/welcome").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert_problem(
        &s.get("/v1/templates/welcome").await,
        StatusCode::NOT_FOUND,
        "not-found",
    );
    assert_problem(
        &s.delete("/v1/templates/welcome").await,
        StatusCode::NOT_FOUND,
        "not-found",
    );
    let r = s
        .post("/v1/messages", &json!({ "channel": "email", "priority": "P4", "to": "ann@example.com",
                                      "template": "welcome", "data": { "user": { "name": "Ann" }, "plan": "pro" } }))
        .await;
    assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, "template-not-found");
    s.stop().await;
}

/// "A missing variable is a 422 that names it": every variable the data lacks is named, not
/// only those of the first template part that failed to render.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_missing_template_variable_is_named() {
    let s = TestServer::start().await;
    let r = s
        .put_as(
            "/v1/templates/welcome",
            &s.key,
            &json!({ "subject": "Hello {{ user.name }}", "text": "Your plan is {{ plan }}." }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = s
        .post(
            "/v1/messages",
            &json!({ "channel": "email", "priority": "P4", "to": "ann@example.com",
                     "template": "welcome", "data": {} }),
        )
        .await;
    assert_problem(
        &r,
        StatusCode::UNPROCESSABLE_ENTITY,
        "missing-template-variable",
    );
    assert_eq!(
        r.body["missing"],
        json!(["plan", "user.name"]),
        "{}",
        r.body
    );
    s.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 5. Scheduled send
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_send_is_not_handed_over_before_send_at() {
    let s = TestServer::start().await;
    // 4 s ahead: time on a loaded machine for the send and some looks before it is due.
    let send_at = in_future(Duration::from_secs(4));
    let mut body = email("later@example.com");
    body["send_at"] = json!(rfc3339(send_at));
    let id = s.send(&body).await;
    let view = s.get(&format!("/v1/messages/{id}")).await.body;
    let echoed: DateTime<Utc> = view["send_at"]
        .as_str()
        .expect("send_at")
        .parse()
        .expect("RFC 3339");
    assert_eq!(echoed, send_at);

    let mut polls_before = 0;
    loop {
        // Hand-offs first, then the clock: a hand-off seen while the clock is still before
        // send_at happened before send_at.
        let handed = s.handoffs_of(&id);
        if Utc::now() >= send_at {
            break;
        }
        assert_eq!(handed, 0, "handed over before send_at");
        polls_before += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(polls_before > 0, "the test never looked before send_at");

    let view = s.wait_status(&id, "delivered").await;
    assert_eq!(
        timeline(&view),
        ["queued", "sending", "sent", "delivered"],
        "{view:#}"
    );
    let handoffs: Vec<_> = s
        .embedded
        .handoffs
        .lock()
        .iter()
        .filter(|h| h.message_id.to_string() == id)
        .cloned()
        .collect();
    assert_eq!(handoffs.len(), 1);
    assert!(
        handoffs[0].at_micros >= send_at.timestamp_micros(),
        "handed over {} µs before send_at",
        send_at.timestamp_micros() - handoffs[0].at_micros
    );
    let sending_at: DateTime<Utc> = view["events"][1]["at"].as_str().unwrap().parse().unwrap();
    assert!(
        sending_at >= send_at,
        "claimed at {sending_at}, due {send_at}"
    );
    s.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 6. Retries
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_until_delivered_with_one_successful_hand_off() {
    let s = TestServer::start_with(|cfg| {
        cfg.sandbox.failure_rate = 0.5;
        cfg.engine.max_attempts = 30;
        cfg.engine.backoff_base = Duration::from_millis(5);
        cfg.engine.backoff_max = Duration::from_millis(50);
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..50 {
        ids.push(s.send(&email(&format!("retry-{i}@example.com"))).await);
    }
    let mut retried = 0;
    for id in &ids {
        let view = s.wait_status(id, "delivered").await;
        let attempts = view["attempts"].as_u64().expect("attempts");
        assert!(attempts >= 1);
        assert_eq!(
            events_of(&view, "sending").len() as u64,
            attempts,
            "one sending event per attempt: {view:#}"
        );
        let deferred = events_of(&view, "deferred");
        assert_eq!(
            deferred.len() as u64,
            attempts - 1,
            "every failed attempt is deferred: {view:#}"
        );
        for d in &deferred {
            assert_eq!(d["detail"]["error"], SIMULATED_FAILURE, "{view:#}");
            assert_eq!(d["detail"]["gateway"], "sandbox");
            assert!(d["detail"]["retry_in_ms"].as_u64().is_some(), "{view:#}");
        }
        assert!(events_of(&view, "failed").is_empty(), "{view:#}");
        assert_eq!(
            timeline(&view).last().map(String::as_str),
            Some("delivered")
        );
        if attempts > 1 {
            retried += 1;
        }
        let handoffs: Vec<_> = s
            .embedded
            .handoffs
            .lock()
            .iter()
            .filter(|h| h.message_id.to_string() == *id)
            .cloned()
            .collect();
        // Every attempt is a hand-off, numbered 1..=attempts; only the last one was accepted.
        let numbers: Vec<u64> = handoffs.iter().map(|h| u64::from(h.attempt)).collect();
        assert_eq!(
            numbers,
            (1..=attempts).collect::<Vec<_>>(),
            "one hand-off per attempt: {handoffs:?}"
        );
        assert_eq!(
            accepted_sends_of(&s, id),
            1,
            "exactly one successful hand-off"
        );
    }
    assert!(retried > 0, "with a 50% failure rate some messages retry");
    s.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 7. Dead letters and redrive
// ---------------------------------------------------------------------------------------------

async fn dead_letter_ids(s: &TestServer, key: &str) -> Vec<String> {
    let r = s.get_as("/v1/dead-letters", key).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|m| m["id"].as_str().expect("id").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_retries_land_in_the_dead_letter_list() {
    let s = TestServer::start_with(|cfg| {
        cfg.sandbox.failure_rate = 1.0;
        cfg.engine.max_attempts = 2;
        cfg.engine.backoff_base = Duration::from_millis(5);
        cfg.engine.backoff_max = Duration::from_millis(5);
    })
    .await;
    let id = s.send(&email("doomed@example.com")).await;
    let view = s.wait_status(&id, "failed").await;
    assert_eq!(view["attempts"], 2, "{view:#}");
    assert_eq!(view["last_error"], SIMULATED_FAILURE);
    assert_eq!(
        timeline(&view),
        ["queued", "sending", "deferred", "sending", "failed"],
        "{view:#}"
    );
    assert!(view["events"][4]["detail"]["error"]
        .as_str()
        .unwrap()
        .starts_with("attempts exhausted"));
    assert_eq!(s.handoffs_of(&id), 2, "two attempts, two hand-offs");
    assert_eq!(accepted_sends_of(&s, &id), 0, "the sandbox accepted none");

    let r = s.get("/v1/dead-letters").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let items = r.body["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{}", r.body);
    assert_eq!(items[0]["id"], id.as_str());
    assert_eq!(items[0]["status"], "failed");
    assert_eq!(items[0]["last_error"], SIMULATED_FAILURE);
    assert_eq!(items[0]["attempts"], 2);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_requeues_failed_messages_of_the_calling_tenant_only() {
    let s = TestServer::start().await;
    let b = s.new_key("globex").await;
    let sms = |to: &str| json!({ "channel": "sms", "priority": "P4", "to": to, "body": "x" });

    let id = s.send(&sms("+15005550001")).await;
    let view = s.wait_status(&id, "failed").await;
    assert_eq!(timeline(&view), ["queued", "sending", "failed"]);
    assert!(dead_letter_ids(&s, &s.key).await.contains(&id));

    let r = s
        .post("/v1/dead-letters/redrive", &json!({ "ids": [id] }))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body, json!({ "redriven": 1, "ids": [id] }));
    let view = wait_view(&s, &s.key, &id, "failed after redrive", |v| {
        v["status"] == "failed" && timeline(v).len() == 6
    })
    .await;
    assert_eq!(
        timeline(&view),
        ["queued", "sending", "failed", "queued", "sending", "failed"],
        "{view:#}"
    );
    assert_eq!(view["events"][3]["detail"]["redriven"], true, "{view:#}");
    assert_eq!(view["events"][4]["detail"]["attempt"], 1, "{view:#}");
    assert_eq!(view["attempts"], 1, "attempts count from 1 again: {view:#}");
    assert!(view["last_error"].as_str().unwrap().starts_with("21211"));

    // Redrive without a body: every failed message of this tenant, none of another's.
    let other = s.send(&sms("+15005550009")).await;
    s.wait_status(&other, "failed").await;
    let theirs = s
        .post_with("/v1/messages", &b, &[], &sms("+15005550001"))
        .await;
    assert_eq!(theirs.status, StatusCode::ACCEPTED, "{}", theirs.body);
    let theirs = theirs.body["id"].as_str().unwrap().to_owned();
    wait_view(&s, &b, &theirs, "failed", |v| v["status"] == "failed").await;

    // B cannot redrive A's message.
    let r = s
        .post_with("/v1/dead-letters/redrive", &b, &[], &json!({ "ids": [id] }))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body, json!({ "redriven": 0, "ids": [] }));
    let view = s.get(&format!("/v1/messages/{id}")).await.body;
    assert_eq!(view["status"], "failed");
    assert_eq!(timeline(&view).len(), 6, "{view:#}");

    let r = s
        .request(
            Method::POST,
            "/v1/dead-letters/redrive",
            Some(&s.key),
            &[],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["redriven"], 2, "{}", r.body);
    let redriven: BTreeSet<&str> = r.body["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_str().unwrap())
        .collect();
    assert_eq!(
        redriven,
        BTreeSet::from([id.as_str(), other.as_str()]),
        "{}",
        r.body
    );
    wait_view(&s, &s.key, &id, "failed a third time", |v| {
        v["status"] == "failed" && timeline(v).len() == 9
    })
    .await;
    wait_view(&s, &s.key, &other, "failed again", |v| {
        v["status"] == "failed" && timeline(v).len() == 6
    })
    .await;

    let view = s.get_as(&format!("/v1/messages/{theirs}"), &b).await.body;
    assert_eq!(view["status"], "failed");
    assert_eq!(
        timeline(&view),
        ["queued", "sending", "failed"],
        "another tenant's failed message was redriven: {view:#}"
    );
    assert_eq!(dead_letter_ids(&s, &b).await, vec![theirs.as_str()]);
    let mine = dead_letter_ids(&s, &s.key).await;
    assert_eq!(mine.len(), 2, "{mine:?}");
    assert!(!mine.contains(&theirs));
    s.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 8. Stats
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_and_channel_stats_report_lanes_counts_and_health() {
    let s = TestServer::start().await;
    let b = s.new_key("globex").await;

    let r = s.get("/v1/stats/queue").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let lanes = r.body["lanes"].as_array().expect("lanes");
    assert_eq!(lanes.len(), 5, "{}", r.body);
    for (i, lane) in lanes.iter().enumerate() {
        assert_eq!(lane["lane"], format!("P{i}"));
        assert_eq!(lane["depth"], 0, "{}", r.body);
        assert_eq!(lane["in_flight"], 0, "{}", r.body);
        assert!(lane["oldest_age_seconds"].is_number(), "{}", r.body);
    }

    let send_at = rfc3339(in_future(Duration::from_secs(3600)));
    for i in 0..3 {
        s.send(
            &json!({ "channel": "email", "priority": "P2", "to": format!("news-{i}@example.com"),
                        "subject": "News", "body": "Later", "send_at": send_at }),
        )
        .await;
    }
    let r = s.get("/v1/stats/queue").await;
    let lanes = r.body["lanes"].as_array().expect("lanes");
    for (i, lane) in lanes.iter().enumerate() {
        let expected = if i == 2 { 3 } else { 0 };
        assert_eq!(lane["depth"], expected, "{}", r.body);
        assert_eq!(lane["delayed"], expected, "{}", r.body);
        assert_eq!(lane["in_flight"], 0, "{}", r.body);
        assert_eq!(
            lane["oldest_age_seconds"], 0.0,
            "nothing is due: {}",
            r.body
        );
    }

    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(s.send(&email(&format!("stats-{i}@example.com"))).await);
    }
    for id in &ids {
        s.wait_status(id, "delivered").await;
    }
    let r = s.get("/v1/stats/channels").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let channels = r.body["channels"].as_array().expect("channels");
    let entry = |channel: &str, gateway: &str| {
        channels
            .iter()
            .find(|c| c["channel"] == channel && c["gateway"] == gateway)
            .unwrap_or_else(|| panic!("no {channel}/{gateway} entry: {}", r.body))
    };
    let email_sandbox = entry("email", "sandbox");
    assert_eq!(
        email_sandbox["counts"],
        json!({ "delivered": 3 }),
        "{}",
        r.body
    );
    assert_eq!(email_sandbox["health"]["state"], "healthy");
    assert_eq!(email_sandbox["health"]["gateway"], "sandbox");
    assert!(
        email_sandbox["health"]["counts"]["success"]
            .as_u64()
            .unwrap()
            >= 3,
        "{}",
        r.body
    );
    assert_eq!(
        email_sandbox["health"]["breaker"]["state"], "closed",
        "{}",
        r.body
    );
    assert!(
        email_sandbox["health"]["latency_p95_ms"].is_number(),
        "{}",
        r.body
    );
    for channel in ["sms", "push"] {
        assert_eq!(entry(channel, "sandbox")["counts"], json!({}), "{}", r.body);
    }
    assert_eq!(
        entry("email", "none")["counts"],
        json!({ "queued": 3 }),
        "{}",
        r.body
    );

    // Counts are the caller's own.
    let r = s.get_as("/v1/stats/channels", &b).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    for c in r.body["channels"].as_array().unwrap() {
        assert_eq!(c["counts"], json!({}), "{}", r.body);
    }
    s.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 9. OpenAPI, liveness and readiness
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_documents_every_route_and_health_needs_no_key() {
    let s = TestServer::start().await;
    let r = s
        .request(Method::GET, "/openapi.json", None, &[], None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let doc = r.body;
    assert!(
        doc["openapi"].as_str().expect("openapi").starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let routes: &[(&str, &[&str])] = &[
        ("/v1/messages", &["post", "get"]),
        ("/v1/messages/bulk", &["post"]),
        ("/v1/bulk/{bulk_id}", &["get"]),
        ("/v1/messages/{id}", &["get", "delete"]),
        ("/v1/templates/{name}", &["put", "get", "delete"]),
        ("/v1/stats/queue", &["get"]),
        ("/v1/stats/channels", &["get"]),
        ("/v1/dead-letters", &["get"]),
        ("/v1/dead-letters/redrive", &["post"]),
        ("/healthz", &["get"]),
        ("/readyz", &["get"]),
    ];
    for (path, methods) in routes {
        let item = &doc["paths"][path];
        assert!(item.is_object(), "{path} is not documented");
        for m in *methods {
            assert!(item[m].is_object(), "{} {path} is not documented", m);
        }
    }
    assert!(
        doc["components"]["securitySchemes"]["api_key"].is_object(),
        "bearer auth is documented"
    );

    for (path, status) in [("/healthz", "ok"), ("/readyz", "ready")] {
        let r = s.request(Method::GET, path, None, &[], None).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.body);
        assert_eq!(r.body["status"], status);
    }
    // The API proper does need a key.
    let r = s
        .request(Method::GET, "/v1/stats/queue", None, &[], None)
        .await;
    assert_problem(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    s.stop().await;
}

/// The ids of every page of `GET /v1/messages?{query}`, following `next_after`.
async fn search_ids(s: &TestServer, key: &str, query: &str) -> Vec<String> {
    let (mut ids, mut after) = (Vec::new(), None::<String>);
    loop {
        let cursor = after.map(|a| format!("&after={a}")).unwrap_or_default();
        let r = s
            .get_as(&format!("/v1/messages?{query}{cursor}"), key)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{query}: {}", r.body);
        for m in r.body["items"].as_array().expect("items") {
            assert!(m["body"].is_null(), "a list carries no body: {m}");
            ids.push(m["id"].as_str().expect("id").to_owned());
        }
        match r.body["next_after"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => return ids,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_searched_by_every_filter_newest_first_and_per_tenant() {
    let s = TestServer::start().await;
    let globex = s.new_key("globex").await;
    let mut sent = Vec::new();
    for i in 0..6 {
        let mut body = email(&format!("Reader{}@Example.com", i % 2));
        body["external_id"] = json!(format!("order-{i}"));
        body["source_type"] = json!("invoice");
        body["source_id"] = json!(format!("inv-{}", i / 3));
        sent.push(s.send(&body).await);
    }
    sent.push(
        s.send(
            &json!({ "channel": "sms", "priority": "P1", "to": "+15005550006",
                              "body": "Your code is 1234" }),
        )
        .await,
    );
    s.post_with("/v1/messages", &globex, &[], &email("reader0@example.com"))
        .await;
    let newest_first: Vec<String> = sent.iter().rev().cloned().collect();

    assert_eq!(
        search_ids(&s, &s.key, "limit=2").await,
        newest_first,
        "pages of 2"
    );
    let to_reader0 = search_ids(&s, &s.key, "to=Reader0@EXAMPLE.COM").await;
    assert_eq!(
        to_reader0,
        [sent[4].clone(), sent[2].clone(), sent[0].clone()],
        "the address as stored: its domain lowercased"
    );
    assert_eq!(
        search_ids(&s, &s.key, "external_id=order-3").await,
        [sent[3].clone()]
    );
    assert_eq!(
        search_ids(&s, &s.key, "source_type=invoice&source_id=inv-1")
            .await
            .len(),
        3
    );
    assert_eq!(
        search_ids(&s, &s.key, "channel=sms&priority=P1").await,
        [sent[6].clone()]
    );
    assert_eq!(
        search_ids(&s, &s.key, "to=%2B15005550006").await,
        [sent[6].clone()]
    );
    let created = s.get(&format!("/v1/messages/{}", sent[6])).await.body["created_at"].clone();
    let after = format!(
        "created_after={}",
        created.as_str().expect("created_at").replace('+', "%2B")
    );
    // Messages accepted in the same millisecond as the last one are found with it.
    let found = search_ids(&s, &s.key, &after).await;
    assert!(
        found.first() == Some(&sent[6]) && newest_first.starts_with(&found) && found.len() < 7,
        "{found:?}"
    );
    s.wait_status(&sent[6], "delivered").await;
    assert_eq!(
        search_ids(&s, &s.key, "status=delivered&channel=sms").await,
        [sent[6].clone()]
    );

    // The other tenant sees only its own message, whatever it asks for.
    assert_eq!(search_ids(&s, &globex, "").await.len(), 1);
    assert!(search_ids(&s, &globex, "external_id=order-3")
        .await
        .is_empty());
    assert!(search_ids(&s, &globex, "to=reader1@example.com")
        .await
        .is_empty());

    for (query, status, slug) in [
        (
            "status=lost",
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
        ),
        ("to=", StatusCode::UNPROCESSABLE_ENTITY, "validation"),
        (
            "created_after=yesterday",
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
        ),
        ("limit=501", StatusCode::UNPROCESSABLE_ENTITY, "validation"),
        (
            "after=../../etc",
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
        ),
        ("colour=red", StatusCode::BAD_REQUEST, "invalid-query"),
        (
            "to=a@example.com&to=b@example.com",
            StatusCode::BAD_REQUEST,
            "invalid-query",
        ),
    ] {
        let r = s.get(&format!("/v1/messages?{query}")).await;
        assert_problem(&r, status, slug);
    }
    // Text that is no address finds nothing; it is not refused (any 1-320 characters are valid).
    assert!(search_ids(&s, &s.key, "channel=email&to=0")
        .await
        .is_empty());
    assert!(search_ids(&s, &s.key, "to=not%20an%20address@")
        .await
        .is_empty());
    let long = "x".repeat(129);
    assert_problem(
        &s.get(&format!("/v1/messages?external_id={long}")).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation",
    );
    let r = s
        .request(Method::GET, "/v1/messages", None, &[], None)
        .await;
    assert_problem(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_sends_progress_is_counted_for_its_own_tenant_only() {
    let s = TestServer::start().await;
    let globex = s.new_key("globex").await;
    let r = s
        .bulk_email("P3", 40, |i| format!("fan{i}@example.com"))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let bulk_id = r.body["bulk_id"].as_str().expect("bulk_id").to_owned();
    let path = format!("/v1/bulk/{bulk_id}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = s.get(&path).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["total"], 40, "{}", r.body);
        assert_eq!(r.body["bulk_id"], bulk_id.as_str());
        if r.body["counts"]["delivered"] == 40 {
            assert_eq!(r.body["pending"], 0);
            break;
        }
        assert!(Instant::now() < deadline, "never all delivered: {}", r.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        search_ids(&s, &s.key, &format!("bulk_id={bulk_id}"))
            .await
            .len(),
        40
    );
    assert_problem(
        &s.get_as(&path, &globex).await,
        StatusCode::NOT_FOUND,
        "not-found",
    );
    assert!(search_ids(&s, &globex, &format!("bulk_id={bulk_id}"))
        .await
        .is_empty());
    for bad in [
        "/v1/bulk/nonsense",
        "/v1/bulk/bulk_0000000000000000000000000000000g",
    ] {
        assert_problem(&s.get(bad).await, StatusCode::NOT_FOUND, "not-found");
    }
    let unknown = format!("/v1/bulk/bulk_{}", uuid::Uuid::now_v7().simple());
    assert_problem(&s.get(&unknown).await, StatusCode::NOT_FOUND, "not-found");
    s.stop().await;
}
