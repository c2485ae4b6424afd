//! Development forwards on the embedded backend: verified provider webhooks reach the forwards
//! of the tenant they concern, with their original body and headers and a Standard Webhooks
//! signature the Python `standardwebhooks` package verifies; forged ones and other tenants'
//! never do; forwards are admin-only and held to the allow-list; `herald dev forward` and
//! `herald webhooks replay` deliver them to a local URL.

use std::time::Duration;

use herald_tests::receiver::Receiver;
use herald_tests::shared::webhooks::signature::{hub_signature_256, twilio_signature};
use herald_tests::{herald_binary, TestServer};
use reqwest::StatusCode;
use serde_json::{json, Value};

const PUBLIC: &str = "https://herald.example.com";
const TWILIO_TOKEN: &str = "twilio-auth-token";
const ACME_NUMBER: &str = "+15557654321";
const WHATSAPP_SECRET: &str = "meta-app-secret";
const ACME_WHATSAPP: &str = "15550001111";
const GLOBEX_WHATSAPP: &str = "15550002222";

struct Hooks {
    s: TestServer,
    /// Where the provider webhook routes are served.
    url: String,
}

/// Twilio webhooks verified with a known token, acme owning one number, forwards allowed to
/// 127.0.0.1, streams 1 s long.
async fn start() -> Hooks {
    let webhooks = serde_json::from_value(json!({
        "public_base_url": PUBLIC,
        "twilio": { "auth_token": TWILIO_TOKEN },
        "whatsapp": { "app_secret": WHATSAPP_SECRET, "verify_token": "verify-me" },
        "numbers": [
            { "number": ACME_NUMBER, "tenant": "acme" },
            { "number": ACME_WHATSAPP, "tenant": "acme" },
            { "number": GLOBEX_WHATSAPP, "tenant": "globex" }
        ]
    }))
    .expect("webhook settings");
    let s = TestServer::start_with(move |cfg| {
        cfg.webhooks = webhooks;
        let n = &mut cfg.engine.notify;
        n.dev_allow = herald_tests::shared::engine::notify::DevAllowList::parse(&["127.0.0.1"])
            .expect("allow-list");
        n.poll = Duration::from_millis(20);
        n.streams.window = Duration::from_secs(1);
        n.streams.poll = Duration::from_millis(20);
    })
    .await;
    let url = s.serve_provider_webhooks().await;
    Hooks { s, url }
}

impl Hooks {
    /// A Twilio callback, signed over the public URL unless `forged`; returns the status and
    /// the exact body and signature sent.
    async fn twilio(
        &self,
        path: &str,
        params: &[(&str, &str)],
        forged: bool,
    ) -> (u16, String, String) {
        let owned: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut signature = twilio_signature(TWILIO_TOKEN, &format!("{PUBLIC}{path}"), &owned);
        if forged {
            signature = twilio_signature("not-the-token", &format!("{PUBLIC}{path}"), &owned);
        }
        let body = serde_urlencoded::to_string(&owned).unwrap();
        let res = self
            .s
            .client
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-twilio-signature", &signature)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), body, signature)
    }

    async fn inbound(&self, sid: &str, text: &str) -> (u16, String, String) {
        let params = [
            ("MessageSid", sid),
            ("From", "+15550001234"),
            ("To", ACME_NUMBER),
            ("Body", text),
        ];
        self.twilio("/webhooks/twilio/inbound", &params, false)
            .await
    }

    /// A signed WhatsApp webhook with one inbound text per business number given.
    async fn whatsapp(&self, texts: &[(&str, &str)]) -> (u16, String) {
        let changes: Vec<Value> = texts
            .iter()
            .map(|(number, wamid)| {
                json!({ "field": "messages", "value": {
                    "metadata": { "display_phone_number": number, "phone_number_id": "1066" },
                    "messages": [{ "from": "15550003333", "id": wamid, "timestamp": "1700000000",
                                   "type": "text", "text": { "body": "hi" } }] } })
            })
            .collect();
        let body = json!({ "object": "whatsapp_business_account",
                           "entry": [{ "id": "waba", "changes": changes }] })
        .to_string();
        let signature = hub_signature_256(WHATSAPP_SECRET, body.as_bytes());
        let res = self
            .s
            .client
            .post(format!("{}/webhooks/whatsapp", self.url))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", signature)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), body)
    }

    async fn patch(&self, path: &str, body: &Value) -> herald_tests::Reply {
        let json = [("content-type", "application/json")];
        let body = Some(body.to_string().into_bytes());
        let key = Some(self.s.key.as_str());
        self.s
            .request(reqwest::Method::PATCH, path, key, &json, body)
            .await
    }

    async fn forward(&self, key: &str, url: &str, sources: &[&str]) -> Value {
        let body = json!({ "url": url, "sources": sources });
        let r = self.s.post_with("/v1/dev-forwards", key, &[], &body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        r.body
    }
}

fn forwarded(reqs: &[Value], raw: &str) -> Vec<Value> {
    reqs.iter().filter(|r| r["raw"] == raw).cloned().collect()
}

#[tokio::test]
async fn a_verified_webhook_reaches_its_own_tenants_forward_as_received_and_signed() {
    let h = start().await;
    let acme_key = h.s.key.clone();
    let globex_key = h.s.new_key("globex").await;
    let acme_rx = Receiver::start("");
    let fwd = h.forward(&acme_key, &acme_rx.url, &["twilio"]).await;
    acme_rx.trust(&[fwd["secret"].as_str().expect("secret shown once")]);
    assert_eq!(fwd["sources"], json!(["twilio"]));
    let globex_rx = Receiver::start("");
    h.forward(&globex_key, &globex_rx.url, &[]).await;

    // A status callback about acme's message, an inbound text to acme's number, a forgery.
    let id =
        h.s.send(&json!({"channel": "sms", "priority": "P1", "to": "+15550009999", "body": "hi"}))
            .await;
    let status_path = format!("/webhooks/twilio/status?herald_id={id}");
    let status_params = [("MessageSid", "SM1"), ("MessageStatus", "sent")];
    let (code, status_body, status_sig) = h.twilio(&status_path, &status_params, false).await;
    assert_eq!(code, 200);
    let (code, inbound_body, _) = h.inbound("SM2", "hello there").await;
    assert_eq!(code, 200);
    let forged_params = [("MessageSid", "SM3"), ("MessageStatus", "sent")];
    let (code, forged_body, _) = h.twilio(&status_path, &forged_params, true).await;
    assert_eq!(code, 401);

    let reqs = acme_rx
        .wait_for("both webhooks", |r| {
            !forwarded(r, &status_body).is_empty() && !forwarded(r, &inbound_body).is_empty()
        })
        .await;
    let status = &forwarded(&reqs, &status_body)[0];
    assert_eq!(status["verified_by"], json!([0]), "{status}");
    let headers = &status["headers"];
    assert_eq!(headers["x-twilio-signature"], status_sig.as_str());
    assert_eq!(headers["content-type"], "application/x-www-form-urlencoded");
    assert_eq!(headers["herald-forwarded-source"], "twilio");
    assert_eq!(headers["herald-forwarded-path"], status_path.as_str());
    assert!(
        forwarded(&reqs, &forged_body).is_empty(),
        "a forgery is never forwarded"
    );
    // Nothing of acme's reached globex, whose forward takes every provider's webhooks.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(globex_rx.requests(), Vec::<Value>::new());
    assert!(forwarded(&acme_rx.requests(), &forged_body).is_empty());

    // The receiver logs a request before it answers: Herald records the attempt a moment
    // after the log above showed it, so wait until both attempts are recorded.
    let path = format!(
        "/v1/dev-forwards/{}/deliveries",
        fwd["id"].as_str().unwrap()
    );
    let log =
        h.s.poll_get(
            &path,
            "an attempt recorded for each delivery",
            Duration::from_secs(10),
            |r| {
                r.status != StatusCode::OK
                    || r.body["items"].as_array().is_some_and(|items| {
                        items.len() >= 2
                            && items
                                .iter()
                                .all(|d| d["attempts"].as_array().is_some_and(|a| !a.is_empty()))
                    })
            },
        )
        .await;
    assert_eq!(log.status, StatusCode::OK, "{}", log.body);
    let items = log.body["items"].as_array().expect("deliveries");
    assert_eq!(items.len(), 2, "{:#}", log.body);
    for d in items {
        assert_eq!(d["event_type"], "provider_webhook.twilio");
        assert_eq!(d["attempts"][0]["status_code"], 200, "{d}");
    }
    h.s.stop().await;
}

#[tokio::test]
async fn forwards_are_admin_only_and_held_to_the_allow_list() {
    let h = start().await;
    let s = &h.s;
    let sender = s.new_key_with("acme", "send,read").await;
    let body = json!({ "url": "http://127.0.0.1:9/x" });
    let created = s.post_with("/v1/dev-forwards", &sender, &[], &body).await;
    assert_eq!(created.status, StatusCode::FORBIDDEN, "{}", created.body);
    for path in ["/v1/dev-forwards", "/v1/dev-forwards/stream"] {
        let r = s.get_as(path, &sender).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}: {}", r.body);
    }
    for (url, why) in [
        ("http://10.1.2.3/hooks", "private, not allow-listed"),
        ("https://169.254.169.254/latest", "metadata"),
        ("http://hooks.example.com/", "plain http to a public host"),
        ("http://127.0.0.2:3000/", "loopback outside the allow-list"),
    ] {
        let r = s.post("/v1/dev-forwards", &json!({ "url": url })).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{why}: {}",
            r.body
        );
        assert_eq!(r.body["errors"][0]["pointer"], "/url", "{}", r.body);
    }
    let r = s
        .post(
            "/v1/dev-forwards",
            &json!({ "url": "http://127.0.0.1:9/", "sources": ["smtp"] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);

    h.s.stop().await;
}

#[tokio::test]
async fn forwards_are_kept_apart_from_events_and_from_other_tenants() {
    let h = start().await;
    let s = &h.s;
    // Provider webhooks are not events: no endpoint or event stream may ask for them.
    let r = s
        .post(
            "/v1/webhook-endpoints",
            &json!({ "url": "https://hooks.example.com/", "event_types": ["message.sent", "provider_webhook.twilio"] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert_eq!(r.body["errors"][0]["pointer"], "/event_types/1");
    let r = s.get("/v1/events/stream?types=provider_webhook.ses").await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);

    // A forward is not an endpoint, and another tenant's is not found.
    let fwd = h
        .forward(&s.key, "http://127.0.0.1:9/hooks", &["ses"])
        .await;
    let id = fwd["id"].as_str().unwrap();
    assert_eq!(
        s.get(&format!("/v1/webhook-endpoints/{id}")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.get("/v1/webhook-endpoints").await.body["items"],
        json!([])
    );
    let list = s.get("/v1/dev-forwards").await;
    assert_eq!(list.body["items"][0]["id"], id, "{}", list.body);
    assert!(list.body["items"][0].get("secret").is_none());
    let globex = s.new_key("globex").await;
    for path in [
        format!("/v1/dev-forwards/{id}"),
        format!("/v1/dev-forwards/{id}/deliveries"),
    ] {
        assert_eq!(
            s.get_as(&path, &globex).await.status,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    assert_eq!(
        s.delete_as(&format!("/v1/dev-forwards/{id}"), &globex)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.delete(&format!("/v1/dev-forwards/{id}")).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        s.get(&format!("/v1/dev-forwards/{id}")).await.status,
        StatusCode::NOT_FOUND
    );
    // The forwards' stream: clear 4xx for a bad source, and an events stream's cursor does not
    // open it (a read key's stream never becomes a forward).
    let r = s.get("/v1/dev-forwards/stream?sources=twilio,smtp").await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    let mut events = s
        .client
        .get(format!("{}/v1/events/stream", s.url))
        .bearer_auth(&s.key)
        .send()
        .await
        .unwrap();
    let first = events.chunk().await.unwrap().expect("the open event");
    let first = String::from_utf8_lossy(&first).into_owned();
    let cursor = first
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .unwrap_or_else(|| panic!("no id in {first:?}"));
    let r = s
        .request(
            reqwest::Method::GET,
            "/v1/dev-forwards/stream",
            Some(&s.key),
            &[("last-event-id", cursor)],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    drop(events);
    let audit = s.get("/v1/audit?action=dev_forward.created").await;
    assert_eq!(audit.body["items"][0]["target"], id, "{}", audit.body);
    h.s.stop().await;
}

/// The first delivery in a forward's log, once there is one.
async fn wait_for_delivery(s: &TestServer, path: &str) -> String {
    for _ in 0..500 {
        let log = s.get(path).await;
        if let Some(id) = log.body["items"][0]["id"].as_str() {
            return id.to_owned();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no delivery in {path}");
}

/// Runs `herald` with the server's address and key.
fn herald(h: &Hooks, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(herald_binary());
    cmd.args(args)
        .env("HERALD_URL", &h.s.url)
        .env("HERALD_API_KEY", &h.s.key)
        .env("HERALD_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    cmd
}

#[tokio::test]
async fn herald_dev_forward_delivers_to_a_laptop_and_webhooks_replay_sends_one_again() {
    let h = start().await;
    let local = Receiver::start("");
    let mut dev = herald(
        &h,
        &[
            "dev",
            "forward",
            "--to",
            &local.url,
            "--sources",
            "twilio",
            "--max",
            "2",
        ],
    )
    .spawn()
    .expect("herald dev forward runs");
    herald_tests::await_following(&mut dev).await;
    let (_, first, sig) = h.inbound("SM10", "one").await;
    // Past the 1 s window: the second arrives over a reconnected stream.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, second, _) = h.inbound("SM11", "two").await;
    let out = tokio::time::timeout(Duration::from_secs(20), dev.wait_with_output())
        .await
        .expect("herald dev forward stops after --max webhooks")
        .expect("output");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = local.requests();
    let raws: Vec<&str> = got.iter().filter_map(|r| r["raw"].as_str()).collect();
    assert_eq!(raws, [first.as_str(), second.as_str()]);
    assert_eq!(got[0]["headers"]["x-twilio-signature"], sig.as_str());
    assert_eq!(
        got[0]["headers"]["herald-forwarded-path"],
        "/webhooks/twilio/inbound"
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("twilio POST /webhooks/twilio/inbound -> 200"),
        "{printed}"
    );

    // A stored forwarded webhook, replayed from the CLI straight to a local URL.
    let later = Receiver::start("");
    let fwd = h
        .forward(&h.s.key, "http://127.0.0.1:9/closed", &["twilio"])
        .await;
    let (_, third, _) = h.inbound("SM12", "three").await;
    let path = format!(
        "/v1/dev-forwards/{}/deliveries",
        fwd["id"].as_str().unwrap()
    );
    let delivery = wait_for_delivery(&h.s, &path).await;
    let out = herald(&h, &["webhooks", "replay", &delivery, "--to", &later.url])
        .output()
        .await
        .expect("herald webhooks replay runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = later.requests();
    assert_eq!(again.len(), 1, "{again:#?}");
    assert_eq!(again[0]["raw"], third.as_str());
    // Without --to, Herald makes a new delivery of it.
    let out = herald(&h, &["webhooks", "replay", &delivery])
        .output()
        .await
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("replayed as delivery "));
    h.s.stop().await;
}

#[tokio::test]
async fn a_webhook_with_any_part_not_the_tenants_or_a_replay_of_one_is_not_forwarded() {
    let h = start().await;
    let rx = Receiver::start("");
    let fwd = h.forward(&h.s.key, "http://localhost:1/unused", &[]).await;
    // Pointed at the receiver by PATCH, which re-checks the URL against the allow-list;
    // `localhost` reaches only the allow-listed 127.0.0.1, whatever else it resolves to.
    let local = rx.url.replace("127.0.0.1", "localhost");
    let path = format!("/v1/dev-forwards/{}", fwd["id"].as_str().unwrap());
    let patched = h
        .patch(&path, &json!({ "url": local, "enabled": true }))
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.body);
    assert_eq!(patched.body["url"], local.as_str());
    let refused = h.patch(&path, &json!({ "url": "http://10.0.0.1/" })).await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        refused.body
    );

    // One change on globex's number makes the whole batch nobody's; acme's alone is acme's.
    let (code, mixed) = h
        .whatsapp(&[(ACME_WHATSAPP, "wamid.A1"), (GLOBEX_WHATSAPP, "wamid.G1")])
        .await;
    assert_eq!(code, 200);
    let (code, unknown) = h
        .whatsapp(&[(ACME_WHATSAPP, "wamid.A2"), ("15559990000", "wamid.X1")])
        .await;
    assert_eq!(code, 200);
    let (code, own) = h.whatsapp(&[(ACME_WHATSAPP, "wamid.A3")]).await;
    assert_eq!(code, 200);
    // A replay of a webhook already handled (its original signature still valid) is not
    // forwarded again.
    let (_, first, _) = h.inbound("SM20", "once").await;
    let (code, _, _) = h.inbound("SM20", "once").await;
    assert_eq!(code, 200);
    let (_, marker, _) = h.inbound("SM21", "after the replay").await;
    let reqs = rx
        .wait_for("acme's own webhooks", |r| {
            !forwarded(r, &own).is_empty() && !forwarded(r, &marker).is_empty()
        })
        .await;
    assert!(
        forwarded(&reqs, &mixed).is_empty(),
        "a mixed batch leaks globex's text"
    );
    assert!(
        forwarded(&reqs, &unknown).is_empty(),
        "an unknown number's part"
    );
    assert_eq!(
        forwarded(&reqs, &first).len(),
        1,
        "the replay was forwarded again"
    );

    // The log leaves the bodies out; the delivery itself has it.
    let log = h.s.get(&format!("{path}/deliveries")).await;
    let item = &log.body["items"][0];
    assert!(
        item["payload"]["data"].get("body_base64").is_none(),
        "{item}"
    );
    assert!(
        item["payload"]["data"]["body_bytes"].as_u64() > Some(0),
        "{item}"
    );
    let one =
        h.s.get(&format!(
            "/v1/webhook-deliveries/{}",
            item["id"].as_str().unwrap()
        ))
        .await;
    assert!(
        one.body["payload"]["data"]["body_base64"].is_string(),
        "{}",
        one.body
    );
    h.s.stop().await;
}
