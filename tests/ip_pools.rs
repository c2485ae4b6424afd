//! Several gateways of one kind (IP pools): two Postal servers as named instances, a warm-up
//! on the first whose day cap overflows to the second, and each server's signed events
//! reaching only its own messages through `/webhooks/postal/<name>`.

use chrono::Utc;
use reqwest::StatusCode;
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use serde_json::{json, Value};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use herald_tests::hooks::{rsa_key, rsa_sign};
use herald_tests::TestServer;

/// A Postal server that takes every message as its id 4711: ids are per server.
async fn postal_server(api_key: &str) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/send/message"))
        .and(header("x-server-api-key", api_key))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "status": "success",
            "data": { "message_id": "<m@postal>",
                      "messages": { "ann@example.com": { "id": 4711, "token": "tok" },
                                    "bob@example.com": { "id": 4711, "token": "tok" } } }
        })))
        .mount(&server)
        .await;
    server
}

fn postal_event(event: &str, uuid: &str) -> String {
    let message = json!({ "id": 4711, "token": "tok", "direction": "outgoing" });
    json!({ "event": event, "timestamp": Utc::now().timestamp(), "uuid": uuid,
            "payload": { "status": "Sent", "details": "250 OK", "output": "250 OK",
                         "message": message, "original_message": message,
                         "bounce": { "id": 9 } } })
    .to_string()
}

async fn post_event(
    base: &str,
    instance: &str,
    key: &rsa::RsaPrivateKey,
    body: String,
) -> StatusCode {
    let signature = rsa_sign(key, false, body.as_bytes());
    reqwest::Client::new()
        .post(format!("{base}/webhooks/postal/{instance}"))
        .header("content-type", "application/json")
        .header("x-postal-signature-256", signature)
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postal_pools_warm_up_overflow_and_hear_their_own_events() {
    let (pool_a, pool_b) = (postal_server("key-a").await, postal_server("key-b").await);
    let key = rsa_key();
    let public = key
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    let today = Utc::now().date_naive();
    let gateways = json!({
        "order": { "email": ["postal-pool-a", "postal-pool-b"] },
        "instances": {
            "postal-pool-a": { "kind": "postal", "base_url": pool_a.uri(), "api_key": "key-a",
                               "from": "news@acme.example" },
            "postal-pool-b": { "kind": "postal", "base_url": pool_b.uri(), "api_key": "key-b",
                               "from": "news@acme.example" }
        }
    });
    let webhooks = json!({ "postal_instances": {
        "postal-pool-a": { "public_key": public }, "postal-pool-b": { "public_key": public }
    } });
    let s = TestServer::start_with(|c| {
        c.gateways = serde_json::from_value(gateways).unwrap();
        c.webhooks = serde_json::from_value(webhooks).unwrap();
        c.engine.warmups.insert(
            "postal-pool-a".into(),
            serde_json::from_value(json!({ "start": today, "target_per_day": 1000, "caps": [1] }))
                .unwrap(),
        );
    })
    .await;
    let mut views = Vec::new();
    for to in ["ann@example.com", "bob@example.com"] {
        let id = s
            .send(&json!({ "channel": "email", "priority": "P1", "to": to,
                           "subject": "Hi", "body": "Hello" }))
            .await;
        views.push((id.clone(), s.wait_status(&id, "sent").await));
    }
    let gateway = |v: &Value| v["gateway"].as_str().unwrap_or_default().to_owned();
    assert_eq!(gateway(&views[0].1), "postal-pool-a", "{:#}", views[0].1);
    assert_eq!(gateway(&views[1].1), "postal-pool-b", "{:#}", views[1].1);
    let reason = views[1].1["route_reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("warm-up overflow"), "{reason}");
    for server in [&pool_a, &pool_b] {
        assert_eq!(server.received_requests().await.unwrap().len(), 1);
    }

    let hooks = s.serve_provider_webhooks().await;
    let sent = postal_event("MessageSent", "u-1");
    assert_eq!(
        post_event(&hooks, "postal-pool-b", &rsa_key(), sent.clone()).await,
        StatusCode::UNAUTHORIZED,
        "another key"
    );
    assert_eq!(
        post_event(&hooks, "postal-pool-c", &key, sent.clone()).await,
        StatusCode::NOT_FOUND,
        "no such instance"
    );
    assert_eq!(
        post_event(&hooks, "postal-pool-b", &key, sent).await,
        StatusCode::OK
    );
    s.wait_status(&views[1].0, "delivered").await;
    let bounced = postal_event("MessageBounced", "u-2");
    assert_eq!(
        post_event(&hooks, "postal-pool-a", &key, bounced).await,
        StatusCode::OK
    );
    s.wait_status(&views[0].0, "bounced").await;
    let first = s.get(&format!("/v1/messages/{}", views[1].0)).await.body;
    assert_eq!(
        first["status"], "delivered",
        "pool b's message kept its own state"
    );

    let listed = s.get("/v1/gateways").await.body;
    let pool = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "postal-pool-a")
        .cloned()
        .unwrap_or_default();
    let warmup = &pool["warmup"];
    assert_eq!(
        (
            warmup["cap_today"].as_u64(),
            warmup["used_today"]["sends"].as_u64()
        ),
        (Some(1), Some(1)),
        "{listed:#}"
    );
    assert_eq!(warmup["used_today"]["bounces"], 1, "{listed:#}");
}

#[tokio::test]
async fn an_instance_with_a_built_in_name_or_ses_kind_stops_the_embedded_start() {
    for (instances, complaint) in [
        (
            json!({ "postal": { "kind": "postal", "base_url": "http://127.0.0.1:9", "api_key": "k" } }),
            "built-in gateway's name",
        ),
        (
            json!({ "ses-dedicated": { "kind": "ses", "configuration_set": "herald-dedicated" } }),
            "runs on AWS only",
        ),
        (
            json!({ "pool-a": { "kind": "postal", "base_url": "http://127.0.0.1:9", "api_key": "" } }),
            "gateways.instances.pool-a.api_key is empty",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut config = shared::embedded::EmbeddedConfig::new(dir.path());
        config.gateways = serde_json::from_value(json!({ "instances": instances })).unwrap();
        let Err(e) = shared::embedded::Embedded::start(config).await else {
            panic!("{instances} started");
        };
        assert!(format!("{e:#}").contains(complaint), "{e:#}");
    }
}
