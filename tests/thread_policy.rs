//! The tenant's thread policy on the embedded backend, through signed provider webhooks and
//! the API: a thread per channel when the tenant asks for it, sends to a contact's address
//! joining the contact's thread without `thread_id`, and the policy endpoint's tenancy,
//! scopes and bad input.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use herald_tests::conversation::{sms_in, start, whatsapp_in, ANN};
use herald_tests::TestServer;

async fn threads(s: &TestServer) -> Vec<Value> {
    let r = s.get("/v1/threads").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["items"].as_array().unwrap().clone()
}

async fn timeline(s: &TestServer, thread: &Value) -> Vec<Value> {
    let r = s
        .get(&format!("/v1/threads/{}", thread["id"].as_str().unwrap()))
        .await;
    r.body["timeline"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_thread_per_channel_and_sends_that_join_by_address() {
    let (s, hooks) = start().await;
    let put = s
        .put_as("/v1/thread-policy", &s.key, &json!({"per": "channel"}))
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.body);
    assert_eq!(put.body, json!({"per": "channel", "join_sends": true}));

    sms_in(&s, &hooks, "SM-p1", ANN, "Texting about the flat").await;
    whatsapp_in(&s, &hooks, "wamid.p2", "And photos on WhatsApp").await;
    let both = threads(&s).await;
    assert_eq!(both.len(), 2, "{both:#?}");
    assert_eq!(both[0]["contact_id"], both[1]["contact_id"]);
    let by_channel = |c: &str| {
        both.iter()
            .find(|t| t["reply_channel"] == c)
            .unwrap_or_else(|| panic!("a {c} thread: {both:#?}"))
            .clone()
    };
    let (sms, wa) = (by_channel("sms"), by_channel("whatsapp"));

    // A plain send to Ann's number joins her SMS thread; one to a stranger joins nothing.
    let sent = s
        .post(
            "/v1/messages",
            &json!({"channel": "sms", "priority": "P1", "to": ANN, "body": "Viewing at 10?"}),
        )
        .await;
    assert_eq!(sent.status, StatusCode::ACCEPTED, "{}", sent.body);
    let stranger = s
        .post(
            "/v1/messages",
            &json!({"channel": "sms", "priority": "P1", "to": "+15550009999", "body": "Hello"}),
        )
        .await;
    assert_eq!(stranger.status, StatusCode::ACCEPTED, "{}", stranger.body);
    s.wait_status(sent.body["id"].as_str().unwrap(), "delivered")
        .await;
    let entries = timeline(&s, &sms).await;
    assert_eq!(entries.len(), 2, "{entries:#?}");
    assert_eq!(entries[1]["message_id"], sent.body["id"]);
    assert_eq!(entries[1]["direction"], "outbound");
    assert_eq!(entries[1]["status"], "delivered");
    assert_eq!(timeline(&s, &wa).await.len(), 1);
    assert_eq!(threads(&s).await.len(), 2, "the stranger got no thread");

    // Turned off, sends join only the thread they name.
    let off = json!({"per": "channel", "join_sends": false});
    let off = s.put_as("/v1/thread-policy", &s.key, &off).await;
    assert_eq!(off.status, StatusCode::OK, "{}", off.body);
    let unjoined = s
        .post(
            "/v1/messages",
            &json!({"channel": "sms", "priority": "P1", "to": ANN, "body": "Not threaded"}),
        )
        .await;
    assert_eq!(unjoined.status, StatusCode::ACCEPTED, "{}", unjoined.body);
    assert_eq!(timeline(&s, &sms).await.len(), 2);
}

#[tokio::test]
async fn the_policy_is_the_tenants_own_and_bad_input_is_refused() {
    let (s, _hooks) = start().await;
    let policy = json!({"per": "contact", "new_after_silent_days": 30, "join_sends": true});
    let put = |key: String, body: Value| {
        let s = &s;
        async move { s.put_as("/v1/thread-policy", &key, &body).await }
    };
    assert_eq!(
        put(s.key.clone(), policy.clone()).await.status,
        StatusCode::OK
    );
    assert_eq!(s.get("/v1/thread-policy").await.body, policy);

    let globex = s.new_key("globex").await;
    let theirs = s.get_as("/v1/thread-policy", &globex).await;
    assert_eq!(theirs.body, json!({"per": "contact", "join_sends": true}));
    let reader = s.new_key_with("acme", "read").await;
    let r = put(reader, json!({"per": "channel"})).await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "a read key does not change it"
    );
    let anonymous = s
        .request(Method::GET, "/v1/thread-policy", None, &[], None)
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);

    for (body, pointer) in [
        (
            json!({"new_after_silent_days": 0}),
            "/new_after_silent_days",
        ),
        (
            json!({"new_after_silent_days": 3651}),
            "/new_after_silent_days",
        ),
        (json!({"per": "galaxy"}), ""),
        (json!({"per": "channel", "tickets": true}), ""),
        (json!({"new_after_silent_days": -1}), ""),
    ] {
        let r = put(s.key.clone(), body.clone()).await;
        assert!(r.status.is_client_error(), "{body}: {}", r.status);
        let kind = r.headers.get("content-type").and_then(|v| v.to_str().ok());
        assert_eq!(kind, Some("application/problem+json"), "{body}");
        if !pointer.is_empty() {
            assert_eq!(r.body["errors"][0]["pointer"], pointer, "{}", r.body);
        }
    }
    assert_eq!(s.get("/v1/thread-policy").await.body, policy, "unchanged");
    let audit = s.get("/v1/audit?action=thread_policy.put").await;
    assert_eq!(audit.status, StatusCode::OK, "{}", audit.body);
    assert_eq!(audit.body["items"].as_array().map(Vec::len), Some(1));
}
