//! Outbound webhooks end to end on the embedded backend: endpoints through the API, events from
//! real sends, every delivery verified by the Python `standardwebhooks` package, retries,
//! 410, address refusals and tenant isolation.

use std::time::Duration;

use herald_tests::receiver::Receiver;
use herald_tests::shared::domain::notify::{self, RetrySchedule};
use herald_tests::shared::ports::WebhookDelivery;
use herald_tests::TestServer;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Loopback endpoints allowed, retries 100 ms apart, a 1 s delivery timeout.
async fn server() -> TestServer {
    TestServer::start_with(|cfg| {
        let n = &mut cfg.engine.notify;
        n.policy.allow_loopback = true;
        n.retries = RetrySchedule(vec![Duration::from_millis(100); 7]);
        n.timeout = Duration::from_secs(1);
        n.poll = Duration::from_millis(20);
    })
    .await
}

async fn endpoint(s: &TestServer, url: &str, types: &[&str]) -> Value {
    let r = s
        .post(
            "/v1/webhook-endpoints",
            &json!({ "url": url, "event_types": types }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body
}

/// A receiver (Python `standardwebhooks`) registered for `types` and trusting its secret.
async fn trusted_endpoint(s: &TestServer, types: &[&str]) -> (Receiver, Value) {
    let rx = Receiver::start("");
    let ep = endpoint(s, &rx.url, types).await;
    rx.trust(&[ep["secret"].as_str().expect("secret")]);
    (rx, ep)
}

fn of_type<'a>(reqs: &'a [Value], t: &str, message: &str) -> Vec<&'a Value> {
    reqs.iter()
        .filter(|r| r["body"]["type"] == t && r["body"]["data"]["message_id"] == message)
        .collect()
}

#[tokio::test]
async fn deliveries_verify_with_an_independent_implementation_through_a_secret_rotation() {
    let s = server().await;
    let rx = Receiver::start("");
    let types = ["message.queued", "message.sent", "message.delivered"];
    let ep = endpoint(&s, &rx.url, &types).await;
    let first = ep["secret"]
        .as_str()
        .expect("secret shown at creation")
        .to_owned();
    assert!(first.starts_with("whsec_"));
    rx.trust(&[&first]);

    let id = s
        .send(
            &json!({"channel": "email", "priority": "P1", "to": "ann@example.com", "subject": "Hi", "body": "x",
                      "source_type": "crm", "source_id": "lead-7", "external_id": "ext-1",
                      "metadata": {"campaign": "spring"}}),
        )
        .await;
    let reqs = rx
        .wait_for("queued, sent and delivered", |r| {
            types.iter().all(|t| !of_type(r, t, &id).is_empty())
        })
        .await;
    for t in types {
        for r in of_type(&reqs, t, &id) {
            assert_eq!(r["verified_by"], json!([0]), "{r}");
            let data = &r["body"]["data"];
            assert_eq!(data["source_type"], "crm");
            assert_eq!(data["source_id"], "lead-7");
            assert_eq!(data["external_id"], "ext-1");
            assert_eq!(data["metadata"]["campaign"], "spring");
            assert!(r["body"]["timestamp"].is_string());
        }
    }

    // Rotation: for the overlap, both secrets sign, and either alone verifies.
    let ep_id = ep["id"].as_str().expect("id");
    let r = s
        .post(
            &format!("/v1/webhook-endpoints/{ep_id}/rotate-secret"),
            &json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let second = r.body["secret"].as_str().expect("new secret").to_owned();
    assert_ne!(first, second);
    assert!(r.body["previous_secret_expires_at"].is_string());
    rx.trust(&[&first, &second]);
    let id2 = s
        .send(&json!({"channel": "email", "priority": "P1", "to": "bo@example.com", "subject": "Hi", "body": "x"}))
        .await;
    let reqs = rx
        .wait_for("the second message's queued", |r| {
            !of_type(r, "message.queued", &id2).is_empty()
        })
        .await;
    let after = of_type(&reqs, "message.queued", &id2)[0];
    assert_eq!(after["verified_by"], json!([0, 1]), "{after}");
    assert_eq!(after["signatures"].as_array().map(Vec::len), Some(2));

    // Both changes are in the audit log, by the key that made them, without the secret.
    for action in [
        "webhook_endpoint.created",
        "webhook_endpoint.secret_rotated",
    ] {
        let audit = s.get(&format!("/v1/audit?action={action}")).await.body;
        assert_eq!(audit["items"][0]["target"], ep_id, "{action}: {audit}");
        assert!(audit["items"][0]["actor"]
            .as_str()
            .unwrap_or("")
            .starts_with("key:"));
        assert!(!audit.to_string().contains(&second[6..]), "{audit}");
    }

    // The secret is never shown again.
    for path in [
        "/v1/webhook-endpoints".to_owned(),
        format!("/v1/webhook-endpoints/{ep_id}"),
    ] {
        let text = s.get(&path).await.body.to_string();
        assert!(
            !text.contains(&first[6..]) && !text.contains(&second[6..]),
            "{path}: {text}"
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn a_failing_endpoint_is_retried_until_one_success_and_410_disables() {
    let s = server().await;
    let flaky = Receiver::start("500,500,500,sleep,200");
    let ep = endpoint(&s, &flaky.url, &["message.queued"]).await;
    flaky.trust(&[ep["secret"].as_str().expect("secret")]);
    let id = s
        .send(&json!({"channel": "email", "priority": "P1", "to": "cy@example.com", "subject": "Hi", "body": "x"}))
        .await;
    let reqs = flaky
        .wait_for("four failures and a success", |r| {
            // The timed-out try is logged when its answer is finally written, after the others.
            r.len() == 5 && r.iter().any(|x| x["planned"] == "200")
        })
        .await;
    let tries = of_type(&reqs, "message.queued", &id);
    assert_eq!(tries.len(), 5, "{tries:#?}");
    let ids: std::collections::HashSet<_> = tries.iter().map(|r| r["webhook_id"].clone()).collect();
    assert_eq!(ids.len(), 1, "retries share the webhook-id");

    let ep_id = ep["id"].as_str().expect("id");
    let log = wait_delivery(&s, ep_id, |d| d["state"] == "succeeded").await;
    let codes: Vec<Value> = log["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| a["status_code"].clone())
        .collect();
    assert_eq!(
        codes,
        vec![json!(500), json!(500), json!(500), Value::Null, json!(200)]
    );

    // 410 Gone turns the endpoint off, and says so in the audit log.
    let gone = Receiver::start("410");
    let ep = endpoint(&s, &gone.url, &["message.queued"]).await;
    let gone_id = ep["id"].as_str().expect("id").to_owned();
    s.send(&json!({"channel": "email", "priority": "P1", "to": "di@example.com", "subject": "Hi", "body": "x"}))
        .await;
    let view = wait_endpoint(&s, &gone_id, |e| e["enabled"] == false).await;
    assert!(
        view["disabled_reason"]
            .as_str()
            .unwrap_or("")
            .contains("410"),
        "{view}"
    );
    let audit = s.get("/v1/audit?action=webhook_endpoint.disabled").await;
    assert_eq!(
        audit.body["items"][0]["target"],
        gone_id.as_str(),
        "{}",
        audit.body
    );
    s.send(&json!({"channel": "email", "priority": "P1", "to": "ed@example.com", "subject": "Hi", "body": "x"}))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        gone.requests().len(),
        1,
        "nothing goes to a disabled endpoint"
    );
    s.stop().await;
}

/// Polls `path` until `pick` finds what the test waits for.
async fn wait_get(s: &TestServer, path: &str, pick: impl Fn(&Value) -> Option<Value>) -> Value {
    for _ in 0..400 {
        if let Some(found) = pick(&s.get(path).await.body) {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{path} never showed what the test waits for");
}

async fn wait_delivery(s: &TestServer, ep: &str, ready: impl Fn(&Value) -> bool) -> Value {
    wait_get(
        s,
        &format!("/v1/webhook-endpoints/{ep}/deliveries"),
        |page| page["items"].as_array()?.iter().find(|d| ready(d)).cloned(),
    )
    .await
}

async fn wait_endpoint(s: &TestServer, ep: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let path = format!("/v1/webhook-endpoints/{ep}");
    wait_get(s, &path, |view| ready(view).then(|| view.clone())).await
}

#[tokio::test]
async fn private_addresses_are_refused_when_saved_and_when_delivered() {
    // The default policy: public https only.
    let s = TestServer::start_with(|cfg| {
        cfg.engine.notify.poll = Duration::from_millis(20);
    })
    .await;
    for url in [
        "https://10.0.0.1/hooks",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::1]/hooks",
        "http://127.0.0.1:9/hooks",
        "https://localhost/hooks",
        "http://hooks.example.com/",
        "https://user:pw@hooks.example.com/",
    ] {
        let r = s
            .post("/v1/webhook-endpoints", &json!({ "url": url }))
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{url}: {}",
            r.body
        );
        assert_eq!(r.body["errors"][0]["pointer"], "/url", "{url}");
    }
    // A URL saved while it was allowed is checked again at every attempt: nothing is sent.
    let rx = Receiver::start("");
    let herald = &s.embedded.herald;
    let tenant = herald_tests::shared::domain::TenantId::parse("acme").expect("tenant");
    let url = herald_tests::shared::domain::notify::EndpointUrl::parse(&rx.url).expect("url");
    let new = herald_tests::shared::domain::notify::NewEndpoint {
        url,
        event_types: vec![],
        description: String::new(),
        enabled: true,
    };
    let ep = herald_tests::shared::domain::notify::WebhookEndpoint::create(
        tenant,
        new,
        chrono::Utc::now(),
    );
    herald
        .webhooks
        .as_ref()
        .expect("webhook store")
        .put_endpoint(&ep)
        .await
        .expect("put");
    // The notifier reads endpoints saved behind the API's back within two seconds (a round
    // later; more on a loaded machine): wait until its snapshot has it.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let kept = herald
            .refresh_subscriptions(Duration::from_secs(3600))
            .await;
        if kept.is_some_and(|k| k.endpoints.iter().any(|e| e.id == ep.id)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the notifier never read the endpoint"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.send(&json!({"channel": "email", "priority": "P1", "to": "fi@example.com", "subject": "Hi", "body": "x"}))
        .await;
    let d = wait_delivery(&s, &ep.id.to_string(), |d| {
        d["attempts"].as_array().is_some_and(|a| !a.is_empty())
    })
    .await;
    let excerpt = d["attempts"][0]["excerpt"].as_str().unwrap_or("");
    assert!(excerpt.starts_with("refused:"), "{d}");
    assert!(rx.requests().is_empty(), "the loopback receiver was called");
    s.stop().await;
}

#[tokio::test]
async fn another_tenants_endpoints_and_deliveries_are_not_found() {
    let s = server().await;
    let (rx, ep) = trusted_endpoint(&s, &["message.queued"]).await;
    let ep_id = ep["id"].as_str().expect("id").to_owned();
    let id = s
        .send(&json!({"channel": "email", "priority": "P1", "to": "gus@example.com", "subject": "Hi", "body": "x"}))
        .await;
    rx.wait_for("queued", |r| !of_type(r, "message.queued", &id).is_empty())
        .await;
    let delivery = wait_delivery(&s, &ep_id, |d| d["state"] == "succeeded").await;
    let d_id = delivery["id"].as_str().expect("delivery id").to_owned();

    let other = s.new_key("globex").await;
    let json_ct = [("content-type", "application/json")];
    for (method, path) in [
        (
            reqwest::Method::GET,
            format!("/v1/webhook-endpoints/{ep_id}"),
        ),
        (
            reqwest::Method::PATCH,
            format!("/v1/webhook-endpoints/{ep_id}"),
        ),
        (
            reqwest::Method::DELETE,
            format!("/v1/webhook-endpoints/{ep_id}"),
        ),
        (
            reqwest::Method::POST,
            format!("/v1/webhook-endpoints/{ep_id}/rotate-secret"),
        ),
        (
            reqwest::Method::GET,
            format!("/v1/webhook-endpoints/{ep_id}/deliveries"),
        ),
        (
            reqwest::Method::GET,
            format!("/v1/webhook-deliveries/{d_id}"),
        ),
        (
            reqwest::Method::POST,
            format!("/v1/webhook-deliveries/{d_id}/replay"),
        ),
    ] {
        let body = Some(b"{}".to_vec());
        let r = s
            .request(method.clone(), &path, Some(&other), &json_ct, body.clone())
            .await;
        assert_eq!(
            r.status,
            StatusCode::NOT_FOUND,
            "{method} {path}: {}",
            r.body
        );
        let anon = s.request(method.clone(), &path, None, &json_ct, body).await;
        assert_eq!(anon.status, StatusCode::UNAUTHORIZED, "{method} {path}");
    }
    let listed = s.get_as("/v1/webhook-endpoints", &other).await;
    assert_eq!(listed.body["items"], json!([]));

    // The owner replays: the event comes again with the same webhook-id.
    let r = s
        .post(&format!("/v1/webhook-deliveries/{d_id}/replay"), &json!({}))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let reqs = rx
        .wait_for("the replay", |r| {
            of_type(r, "message.queued", &id).len() == 2
        })
        .await;
    let ids: Vec<_> = of_type(&reqs, "message.queued", &id)
        .iter()
        .map(|r| r["webhook_id"].clone())
        .collect();
    assert_eq!(ids[0], ids[1]);
    assert_eq!(
        reqs.last().map(|r| r["verified_by"].clone()),
        Some(json!([0]))
    );
    s.stop().await;
}

#[tokio::test]
async fn an_endpoint_failing_past_the_limit_is_disabled_and_announced() {
    let s = TestServer::start_with(|cfg| {
        let n = &mut cfg.engine.notify;
        n.policy.allow_loopback = true;
        n.retries = RetrySchedule(vec![Duration::from_millis(150); 7]);
        n.poll = Duration::from_millis(20);
        // Three days in production; here the streak limit is reached by the third try.
        n.disable_after = Duration::from_millis(250);
    })
    .await;
    let down = Receiver::start("500,500,500,500,500,500,500,500");
    let watcher = Receiver::start("");
    let ep = endpoint(&s, &down.url, &["message.queued"]).await;
    let down_id = ep["id"].as_str().expect("id").to_owned();
    let w = endpoint(&s, &watcher.url, &["webhook_endpoint.disabled"]).await;
    watcher.trust(&[w["secret"].as_str().expect("secret")]);
    s.send(&json!({"channel": "email", "priority": "P1", "to": "hal@example.com", "subject": "Hi", "body": "x"}))
        .await;
    let view = wait_endpoint(&s, &down_id, |e| e["enabled"] == false).await;
    assert!(
        view["disabled_reason"]
            .as_str()
            .unwrap_or("")
            .contains("failed since"),
        "{view}"
    );
    let reqs = watcher
        .wait_for("webhook_endpoint.disabled", |r| !r.is_empty())
        .await;
    assert_eq!(reqs[0]["body"]["type"], "webhook_endpoint.disabled");
    assert_eq!(reqs[0]["body"]["data"]["endpoint_id"], down_id.as_str());
    assert_eq!(reqs[0]["verified_by"], json!([0]));
    let tries = down.requests().len();
    assert!((2..=4).contains(&tries), "{tries} tries before the limit");
    s.stop().await;
}

#[tokio::test]
async fn a_hanging_endpoint_holds_up_no_other_tenants_deliveries() {
    // A delivery timeout longer than this test takes on any machine: acme's first request is
    // still hanging when globex's event is delivered, unless globex's waited for it.
    let s = TestServer::start_with(|cfg| {
        let n = &mut cfg.engine.notify;
        n.policy.allow_loopback = true;
        n.retries = RetrySchedule(vec![Duration::from_millis(100); 7]);
        n.timeout = Duration::from_secs(30);
        n.poll = Duration::from_millis(20);
    })
    .await;
    // Each request to `hanging` is logged when it arrives, then held for 60 s.
    let hanging = Receiver::start("hang,hang,hang,hang,hang,hang,hang,hang");
    let healthy = Receiver::start("");
    let ep = endpoint(&s, &hanging.url, &["message.queued"]).await;
    let other = s.new_key("globex").await;
    let r = s
        .post_with(
            "/v1/webhook-endpoints",
            &other,
            &[],
            &json!({ "url": healthy.url, "event_types": ["message.queued"] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    // Five of acme's deliveries due at once.
    let store = s.embedded.herald.webhooks.clone().expect("webhook store");
    let acme = herald_tests::shared::domain::TenantId::parse("acme").expect("tenant");
    let ep_id = notify::EndpointId::parse(ep["id"].as_str().expect("id")).expect("endpoint id");
    let stored = store
        .endpoint(&acme, ep_id)
        .await
        .expect("read")
        .expect("endpoint");
    let due = (0..5)
        .map(|_| {
            let t = notify::EventType::MessageQueued;
            WebhookDelivery::new(notify::EventId::new(), &stored, t, "{}".into())
        })
        .collect();
    store.save_deliveries(due).await.expect("save");
    hanging
        .wait_for("acme's first delivery", |r| !r.is_empty())
        .await; // acme's deliveries are under way, the first one hanging
    let r = s
        .post_with(
            "/v1/messages",
            &other,
            &[],
            &json!({"channel": "email", "priority": "P1", "to": "v@example.com",
                    "subject": "Hi", "body": "x"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    healthy.wait_for("globex's event", |r| !r.is_empty()).await;
    // Had globex's event waited for acme's endpoint, acme's first attempt would have ended
    // (timed out, recorded) and its next request gone out before it.
    let acme_log = s
        .get(&format!(
            "/v1/webhook-endpoints/{}/deliveries",
            ep["id"].as_str().expect("id")
        ))
        .await
        .body;
    let items = acme_log["items"].as_array().expect("deliveries");
    assert_eq!(items.len(), 5, "{acme_log:#}");
    assert!(
        items
            .iter()
            .all(|d| d["attempts"].as_array().is_some_and(|a| a.is_empty())),
        "globex's event waited for acme's hanging endpoint: {acme_log:#}"
    );
    assert_eq!(
        hanging.requests().len(),
        1,
        "one request at a time to acme's endpoint, the first still hanging"
    );
    s.stop().await;
}

#[tokio::test]
async fn every_event_of_a_busy_endpoint_arrives_exactly_once() {
    let s = server().await;
    let types = ["message.queued", "message.sent", "message.delivered"];
    let (rx, _) = trusted_endpoint(&s, &types).await;
    let sends = 150;
    for i in 0..sends {
        s.send(&json!({"channel": "email", "priority": "P1", "to": format!("u{i}@example.com"), "subject": "Hi", "body": "x"}))
            .await;
    }
    let want = sends * types.len();
    rx.wait_for("every event", |r| r.len() >= want).await;
    // Rounds that overlap a finishing endpoint task once sent some events twice; give any
    // duplicate time to arrive before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reqs = rx.requests();
    let ids: std::collections::HashSet<_> = reqs.iter().map(|r| r["webhook_id"].clone()).collect();
    assert_eq!(ids.len(), want, "distinct events");
    assert_eq!(reqs.len(), want, "requests, duplicates included");
    s.stop().await;
}

#[tokio::test]
async fn a_bulk_sends_recipients_are_announced_queued_or_suppressed() {
    let s = server().await;
    let (rx, _) = trusted_endpoint(&s, &["message.queued", "message.suppressed"]).await;
    let put = s
        .put_as(
            "/v1/suppressions/email/b1%40example.com",
            &s.key,
            &json!({}),
        )
        .await;
    assert_eq!(put.status, StatusCode::CREATED, "{}", put.body);
    let bulk = s.bulk_email("P3", 3, |i| format!("b{i}@example.com")).await;
    assert_eq!(bulk.status, StatusCode::ACCEPTED, "{}", bulk.body);
    let bulk_id = bulk.body["bulk_id"].as_str().expect("bulk id");
    let reqs = rx
        .wait_for("three announcements", |r| {
            r.iter()
                .filter(|q| q["body"]["data"]["bulk_id"] == bulk_id)
                .count()
                >= 3
        })
        .await;
    let mut seen: Vec<(String, String)> = reqs
        .iter()
        .filter(|q| q["body"]["data"]["bulk_id"] == bulk_id)
        .map(|q| {
            let d = &q["body"]["data"];
            assert!(d["message_id"].is_string(), "{d}");
            assert_eq!(d["channel"], "email");
            (
                q["body"]["type"].as_str().unwrap_or_default().to_owned(),
                d["to"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    seen.sort();
    let want = [
        ("message.queued", "b0@example.com"),
        ("message.queued", "b2@example.com"),
        ("message.suppressed", "b1@example.com"),
    ]
    .map(|(t, to)| (t.to_owned(), to.to_owned()));
    assert_eq!(seen, want);
    assert!(reqs.iter().all(|q| q["verified_by"] == json!([0])));
    s.stop().await;
}
