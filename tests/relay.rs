//! The masked-number relay end to end on the embedded backend: signed Twilio texts in, the
//! sandbox SMS gateway out. A client and a worker text each other through a pool number and
//! neither sees the other's number; after the window and its grace the front desk takes
//! over; the sharing policy flags, redacts and blocks; the number guardrails and the pick
//! hold; the simulator writes nothing; other tenants see none of it.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use herald_tests::conversation::{post_twilio_inbound, start};
use herald_tests::TestServer;

const DESK: &str = "+15559000000";
const P1: &str = "+15559000001";
const P2: &str = "+15559000002";
const CLIENT: &str = "+15550001001";
const WORKER: &str = "+15550002002";
const OTHER_WORKER: &str = "+15550002003";
const STRANGER: &str = "+15550009009";

async fn add_numbers(s: &TestServer) {
    s.add_sandbox_numbers(&[(DESK, "front_desk"), (P1, "pool"), (P2, "pool")])
        .await;
}

async fn assign(s: &TestServer, client: &str, worker: &str, extra: Value) -> reqwest::Response {
    let mut body = json!({
        "client": {"number": client, "name": "Ann"},
        "worker": {"number": worker, "name": "Bob"},
        "ends_at": chrono::Utc::now() + chrono::Duration::hours(2),
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    s.client
        .post(format!("{}/v1/assignments", s.url))
        .bearer_auth(&s.key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Texts `body` from `from` to `to` through the signed Twilio webhook, and returns the
/// inbound message once processed.
async fn text(
    s: &TestServer,
    hooks: &str,
    sid: &str,
    (from, to): (&str, &str),
    body: &str,
) -> Value {
    let params = [
        ("MessageSid", sid),
        ("From", from),
        ("To", to),
        ("Body", body),
    ];
    let status = post_twilio_inbound(&s.client, hooks, &params)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let list = s.get("/v1/inbound?limit=1").await;
        let m = list.body["items"][0].clone();
        if m["provider_message_id"] == sid && (m["state"] == "processed" || m["state"] == "failed")
        {
            return s
                .get(&format!("/v1/inbound/{}", m["id"].as_str().unwrap()))
                .await
                .body;
        }
        assert!(std::time::Instant::now() < deadline, "not processed: {m}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn relay(m: &Value) -> &Value {
    &m["decision"]["relay"]
}

/// The message the relay sent for `m` under `key`, once delivered.
async fn sent(s: &TestServer, m: &Value, key: &str) -> Value {
    let id = relay(m)[key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key}: {m:#}"));
    s.wait_status(id, "delivered").await
}

#[tokio::test]
async fn a_client_and_a_worker_text_through_a_pool_number() {
    let (s, hooks) = start().await;
    add_numbers(&s).await;
    let r = assign(&s, CLIENT, WORKER, json!({"grace_minutes": 30})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let a: Value = r.json().await.unwrap();
    assert_eq!(
        (a["number"].as_str(), a["phase"].as_str()),
        (Some(P1), Some("active"))
    );
    let id = a["id"].as_str().unwrap().to_owned();

    let m = text(
        &s,
        &hooks,
        "SM-r1",
        (CLIENT, P1),
        "Hi Bob, Rex needs a walk at 5",
    )
    .await;
    assert_eq!(m["decision"]["outcome"], "relayed", "{m:#}");
    assert_eq!(relay(&m)["route"]["action"], "relay");
    let steps: Vec<&str> = relay(&m)["trace"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["opt_out_keyword", "active_assignment"]);
    let out = sent(&s, &m, "relayed_message_id").await;
    assert_eq!(
        (out["to"].as_str(), out["from"].as_str()),
        (Some(WORKER), Some(P1)),
        "{out:#}"
    );
    assert_eq!(out["metadata"]["relayed_from"], m["id"]);
    let seen = s
        .get(&format!("/v1/inbound/{}", m["id"].as_str().unwrap()))
        .await;
    assert_eq!(
        seen.body["relay_status"]["relayed"], "delivered",
        "the outbound leg's status"
    );

    let reply = text(&s, &hooks, "SM-r2", (WORKER, P1), "On my way!").await;
    let back = sent(&s, &reply, "relayed_message_id").await;
    assert_eq!(
        (back["to"].as_str(), back["from"].as_str()),
        (Some(CLIENT), Some(P1))
    );

    // The sharing policy: the worker's numbers are redacted, the client's emails blocked.
    let settings = json!({"sharing": {"client": "block", "worker": "redact"}});
    let put = s.put_as("/v1/relay-settings", &s.key, &settings).await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.body);
    let shared = text(
        &s,
        &hooks,
        "SM-r3",
        (WORKER, P1),
        "call me at 555-123-4567 instead",
    )
    .await;
    let redacted = sent(&s, &shared, "relayed_message_id").await;
    assert_eq!(
        redacted["body"], "call me at [phone number removed] instead",
        "{redacted:#}"
    );
    let blocked = text(
        &s,
        &hooks,
        "SM-r4",
        (CLIENT, P1),
        "email me: ann@example.com",
    )
    .await;
    assert!(
        relay(&blocked)["relayed_message_id"].is_null(),
        "{blocked:#}"
    );
    let told = sent(&s, &blocked, "notice_message_id").await;
    assert_eq!(
        (told["to"].as_str(), told["from"].as_str()),
        (Some(CLIENT), Some(P1))
    );
    let violations = s
        .get(&format!("/v1/policy/violations?assignment_id={id}"))
        .await;
    let actions: Vec<&str> = violations.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["detail"]["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["block", "redact"], "{}", violations.body);
    // Flagged: delivered as written, and recorded.
    let flag = json!({"sharing": {"client": "flag", "worker": "allow"}});
    assert_eq!(
        s.put_as("/v1/relay-settings", &s.key, &flag).await.status,
        StatusCode::OK
    );
    let flagged = text(&s, &hooks, "SM-r4b", (CLIENT, P1), "my insta is ann_walks").await;
    let delivered = sent(&s, &flagged, "relayed_message_id").await;
    assert_eq!(delivered["body"], "my insta is ann_walks");
    assert_eq!(
        relay(&flagged)["sharing"],
        json!({"kinds": ["handle"], "action": "flag"})
    );
    let allowed = text(&s, &hooks, "SM-r4c", (WORKER, P1), "bob@example.com works").await;
    assert!(
        relay(&allowed)["sharing"].is_null(),
        "allowed: no violation"
    );
    let violations = s
        .get(&format!("/v1/policy/violations?assignment_id={id}"))
        .await;
    assert_eq!(violations.body["items"].as_array().map(Vec::len), Some(3));

    // Ended now with its grace: the client still reaches the worker, and hears it closes.
    let end = s
        .post(&format!("/v1/assignments/{id}/end"), &json!({}))
        .await;
    assert_eq!(end.body["phase"], "in_grace", "{}", end.body);
    let late = text(&s, &hooks, "SM-r5", (CLIENT, P1), "Thanks again").await;
    assert_eq!(relay(&late)["route"]["closing"], true, "{late:#}");
    sent(&s, &late, "relayed_message_id").await;
    let closing = sent(&s, &late, "notice_message_id").await;
    assert_eq!(closing["to"], CLIENT);

    // After the grace: the front desk, and the participant hears where to turn.
    let over = s
        .post(
            &format!("/v1/assignments/{id}/end"),
            &json!({"keep_grace": false}),
        )
        .await;
    assert_eq!(over.body["phase"], "over", "{}", over.body);
    let after = text(&s, &hooks, "SM-r6", (CLIENT, P1), "Hello?").await;
    assert_eq!(
        relay(&after)["route"],
        json!({"action": "front_desk", "auto_reply": true})
    );
    assert_eq!(
        after["decision"]["outcome"], "no_rule",
        "the rules ran on it"
    );
    sent(&s, &after, "notice_message_id").await;
    let stranger = text(&s, &hooks, "SM-r7", (STRANGER, P1), "Who is this?").await;
    assert_eq!(
        relay(&stranger)["route"],
        json!({"action": "front_desk", "auto_reply": false})
    );
    assert_eq!(relay(&stranger)["trace"].as_array().map(Vec::len), Some(6));

    // STOP is handled first and goes nowhere else.
    let stop = text(&s, &hooks, "SM-r8", (STRANGER, P1), "STOP").await;
    assert_eq!(relay(&stop)["route"]["action"], "opt_out");
    let routed = s.get("/v1/audit?action=relay.routed").await;
    assert_eq!(routed.body["items"].as_array().map(Vec::len), Some(10));
}

#[tokio::test]
async fn the_pool_honours_conflicts_quarantine_and_guardrails() {
    let (s, _hooks) = start().await;
    add_numbers(&s).await;
    let first: Value = assign(&s, CLIENT, WORKER, json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(first["number"], P1);
    let first_id = first["id"].as_str().unwrap();

    // P2 rests: the client's second worker finds no number, and the 409 names the first.
    let rest = json!({"state": "quarantined"});
    let q = s
        .request(
            Method::PATCH,
            &format!("/v1/numbers/{P2}"),
            Some(&s.key),
            &[("content-type", "application/json")],
            Some(rest.to_string().into_bytes()),
        )
        .await;
    assert_eq!(q.status, StatusCode::OK, "{}", q.body);
    let until: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(q.body["quarantined_until"].clone()).unwrap();
    assert!(
        until > chrono::Utc::now() + chrono::Duration::days(89),
        "the 90-day cool-down"
    );
    let r = assign(&s, CLIENT, OTHER_WORKER, json!({})).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["conflicting"], first_id, "{problem}");
    // After the cool-down P2 may be assigned again: with P1 the pair's then, the client's
    // other worker gets P2.
    let later = json!({"starts_at": until + chrono::Duration::days(1), "ends_at": until + chrono::Duration::days(2)});
    let r = assign(&s, CLIENT, WORKER, later.clone()).await;
    assert_eq!(r.json::<Value>().await.unwrap()["number"], P1);
    let r = assign(&s, CLIENT, OTHER_WORKER, later).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.json::<Value>().await.unwrap()["number"], P2);
    // The same pair again is a conflict with their own assignment.
    let again = assign(&s, CLIENT, WORKER, json!({})).await;
    assert_eq!(again.status(), StatusCode::CONFLICT);

    // Guardrails: the last front desk stays; a relaying number rests only when forced.
    let patch = |n: &str, body: Value| {
        let s = &s;
        let path = format!("/v1/numbers/{n}");
        async move {
            s.request(
                Method::PATCH,
                &path,
                Some(&s.key),
                &[("content-type", "application/json")],
                Some(body.to_string().into_bytes()),
            )
            .await
        }
    };
    let desk = patch(DESK, json!({"state": "inactive"})).await;
    assert_eq!(desk.status, StatusCode::CONFLICT, "{}", desk.body);
    assert!(desk.body["type"]
        .as_str()
        .unwrap()
        .ends_with("last-front-desk"));
    let busy = patch(P1, json!({"state": "quarantined"})).await;
    assert!(
        busy.body["type"]
            .as_str()
            .unwrap()
            .ends_with("number-in-use"),
        "{}",
        busy.body
    );
    let role = patch(P1, json!({"role": "front_desk"})).await;
    assert!(
        role.body["type"]
            .as_str()
            .unwrap()
            .ends_with("number-in-use"),
        "{}",
        role.body
    );
    let unexplained = patch(P1, json!({"state": "quarantined", "force": true})).await;
    assert_eq!(unexplained.status, StatusCode::UNPROCESSABLE_ENTITY);

    // Reassignment keeps the client's number, ends the first at once, and tells both sides.
    let tpl = json!({"text": "{{ worker_name }} looks after you until {{ ends_at }}."});
    let t = s.put_as("/v1/templates/reassigned", &s.key, &tpl).await;
    assert!(t.status.is_success(), "{}", t.body);
    let r = s
        .post(
            &format!("/v1/assignments/{first_id}/reassign"),
            &json!({"worker": {"number": OTHER_WORKER, "name": "Cat"},
                    "client_template": "reassigned", "worker_template": "reassigned"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["notices"], json!(["client", "worker"]));
    let notices = s.get("/v1/messages?source_type=assignment").await;
    let mut to: Vec<&str> = notices.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["to"].as_str().unwrap())
        .collect();
    to.sort_unstable();
    assert_eq!(to, [CLIENT, OTHER_WORKER], "{}", notices.body);
    assert_eq!(r.body["ended"]["phase"], "over");
    assert_eq!(r.body["started"]["number"], P1);
    assert_eq!(r.body["started"]["replaces"], first_id);
    let forced = patch(
        P1,
        json!({"state": "quarantined", "force": true, "reason": "carrier complaints"}),
    )
    .await;
    assert_eq!(forced.status, StatusCode::OK, "{}", forced.body);
    let started = s
        .get(&format!(
            "/v1/assignments/{}",
            r.body["started"]["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(
        started.body["phase"], "over",
        "a forced rest ends the number's assignments"
    );
    let changes = s.get("/v1/audit?action=number.changed").await;
    assert_eq!(changes.body["items"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn the_simulator_writes_nothing_and_tenants_see_their_own() {
    let (s, _hooks) = start().await;
    add_numbers(&s).await;
    let a: Value = assign(&s, CLIENT, WORKER, json!({}))
        .await
        .json()
        .await
        .unwrap();
    let audit_before = s.get("/v1/audit?limit=500").await.body["items"]
        .as_array()
        .map(Vec::len);
    let sim = s
        .post(
            "/v1/routing/simulate",
            &json!({"to": P1, "from": WORKER, "body": "text me on 555 123 4567"}),
        )
        .await;
    assert_eq!(sim.status, StatusCode::OK, "{}", sim.body);
    assert_eq!(sim.body["route"]["to"], CLIENT);
    assert_eq!(sim.body["trace"][1]["matched"], true);
    assert_eq!(sim.body["sharing"]["kinds"], json!(["phone"]));
    assert_eq!(
        s.get("/v1/audit?limit=500").await.body["items"]
            .as_array()
            .map(Vec::len),
        audit_before
    );
    assert_eq!(
        s.get("/v1/messages").await.body["items"],
        json!([]),
        "nothing sent"
    );
    assert_eq!(s.get("/v1/inbound").await.body["items"], json!([]));

    let globex = s.new_key("globex").await;
    let id = a["id"].as_str().unwrap();
    for path in [format!("/v1/numbers/{P1}"), format!("/v1/assignments/{id}")] {
        assert_eq!(
            s.get_as(&path, &globex).await.status,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    assert_eq!(
        s.get_as("/v1/numbers", &globex).await.body["items"],
        json!([])
    );
    assert_eq!(
        s.get_as("/v1/assignments", &globex).await.body["items"],
        json!([])
    );
    let theirs = s
        .post_with(
            "/v1/routing/simulate",
            &globex,
            &[],
            &json!({"to": P1, "from": WORKER, "body": "hi"}),
        )
        .await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND);
    let theirs = s
        .request(
            Method::PATCH,
            &format!("/v1/numbers/{P1}"),
            Some(&globex),
            &[("content-type", "application/json")],
            Some(b"{\"state\":\"inactive\"}".to_vec()),
        )
        .await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND, "{}", theirs.body);
    let taken = s
        .post_with(
            "/v1/numbers",
            &globex,
            &[],
            &json!({"number": P1, "role": "pool", "provider": "sandbox"}),
        )
        .await;
    assert_eq!(taken.status, StatusCode::CONFLICT);
    for (path, body) in [
        (format!("/v1/assignments/{id}/end"), json!({})),
        (
            format!("/v1/assignments/{id}/reassign"),
            json!({"worker": {"number": OTHER_WORKER}}),
        ),
    ] {
        let r = s.post_with(&path, &globex, &[], &body).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}: {}", r.body);
    }
    let reader = s.new_key_with("acme", "read").await;
    let r = s
        .post_with(
            "/v1/numbers",
            &reader,
            &[],
            &json!({"number": "+15559000009", "role": "pool", "provider": "sandbox"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let anonymous = s.request(Method::GET, "/v1/numbers", None, &[], None).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);

    let soon = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    for (path, body, pointer) in [
        (
            "/v1/numbers",
            json!({"number": "555-0100", "role": "pool", "provider": "sandbox"}),
            "/number",
        ),
        (
            "/v1/numbers",
            json!({"number": "+15559000010", "role": "dedicated", "provider": "sandbox"}),
            "/worker",
        ),
        (
            "/v1/numbers",
            json!({"number": "+15559000010", "role": "pool", "provider": "Twilio!"}),
            "/provider",
        ),
        (
            "/v1/assignments",
            json!({"client": {"number": CLIENT}, "worker": {"number": CLIENT}, "ends_at": soon}),
            "/worker/number",
        ),
        (
            "/v1/assignments",
            json!({"client": {"number": CLIENT}, "worker": {"number": WORKER}, "ends_at": "2001-01-01T00:00:00Z"}),
            "/ends_at",
        ),
        (
            "/v1/assignments",
            json!({"client": {"number": CLIENT}, "worker": {"number": WORKER}, "ends_at": soon, "grace_minutes": -5}),
            "/grace_minutes",
        ),
        (
            "/v1/assignments",
            json!({"client": {"number": CLIENT}, "worker": {"number": P2}, "ends_at": soon}),
            "/worker/number",
        ),
        (
            "/v1/assignments",
            json!({"client": {"number": CLIENT}, "worker": {"number": "+1 555 000 1001"}, "ends_at": soon}),
            "/worker/number",
        ),
        (
            "/v1/routing/simulate",
            json!({"to": P1, "from": "nobody", "body": "x"}),
            "/from",
        ),
        (
            "/v1/routing/simulate",
            json!({"to": P1, "from": WORKER, "body": "x".repeat(1601)}),
            "/body",
        ),
    ] {
        let r = s.post(path, &body).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{path} {body}: {}",
            r.body
        );
        assert_eq!(r.body["errors"][0]["pointer"], pointer, "{}", r.body);
    }
    let r = s
        .put_as("/v1/relay-settings", &s.key, &json!({"cool_down_days": 0}))
        .await;
    assert_eq!(r.body["errors"][0]["pointer"], "/cool_down_days");
    let r = s
        .post(
            "/v1/numbers",
            &json!({"number": P1, "role": "pool", "provider": "sandbox", "colour": "red"}),
        )
        .await;
    assert!(r.status.is_client_error());
    assert_eq!(
        s.get("/v1/numbers/not-a-number").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.get("/v1/assignments/42").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_number_whose_texts_fail_is_flagged() {
    let (s, hooks) = start().await;
    add_numbers(&s).await;
    // The sandbox's carrier filters every text to this worker (Twilio's 30007).
    let filtered = "+15005550007";
    let r = assign(&s, CLIENT, filtered, json!({})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    for i in 0..20 {
        let m = text(
            &s,
            &hooks,
            &format!("SM-h{i}"),
            (CLIENT, P1),
            "Are you there?",
        )
        .await;
        s.wait_status(relay(&m)["relayed_message_id"].as_str().unwrap(), "failed")
            .await;
    }
    let flagged = s.get("/v1/numbers?flagged=true").await;
    assert_eq!(flagged.status, StatusCode::OK, "{}", flagged.body);
    let items = flagged.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{}", flagged.body);
    let health = &items[0]["health"];
    assert_eq!(items[0]["number"], P1);
    assert_eq!(
        (health["inbound"].as_u64(), health["outbound"].as_u64()),
        (Some(20), Some(20))
    );
    assert_eq!(health["carrier_errors"], 20);
    assert_eq!(health["reasons"], json!(["failure_rate", "carrier_errors"]));
    let healthy = s.get("/v1/numbers?flagged=false").await;
    assert_eq!(healthy.body["items"].as_array().map(Vec::len), Some(2));
    let one = s.get(&format!("/v1/numbers/{P2}")).await;
    assert_eq!(one.body["health"]["flagged"], false);
}
