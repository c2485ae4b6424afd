//! Inbound media on an embedded Herald: MMS files downloaded from a local HTTP server with
//! Twilio's credentials, WhatsApp media through the Graph API, email attachments; the type
//! read from the bytes (a spoofed header refused), the size cap, a failed download tried
//! again, files served only to their tenant, and retention removing them.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use herald_tests::conversation::{
    email_in, post_twilio_inbound, start_tuned, whatsapp_message_in, ACME_MAILBOX, ACME_NUMBER, ANN,
};
use herald_tests::TestServer;
use reqwest::StatusCode;
use serde_json::{json, Value};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const PNG: &[u8] =
    b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89";
const ACCOUNT: &str = "AC0media";
const TOKEN: &str = "media-auth-token";

fn basic_auth() -> String {
    format!("Basic {}", STANDARD.encode(format!("{ACCOUNT}:{TOKEN}")))
}

async fn serve(provider: &MockServer, at: &str, answer: ResponseTemplate) {
    Mock::given(method("GET"))
        .and(path(at))
        .and(header("authorization", basic_auth().as_str()))
        .respond_with(answer)
        .mount(provider)
        .await;
}

fn file(bytes: &[u8], content_type: &str) -> ResponseTemplate {
    ResponseTemplate::new(200)
        .set_body_bytes(bytes.to_vec())
        .insert_header("content-type", content_type)
}

/// Herald with Twilio's and WhatsApp's APIs at `provider`, files capped at 64 KB.
async fn start(provider: &MockServer, retention_days: u32) -> (TestServer, String) {
    let gateways = json!({
        "twilio": { "account_sid": ACCOUNT, "auth_token": TOKEN, "from": ACME_NUMBER,
                    "base_url": provider.uri() },
        "whatsapp": { "phone_number_id": "1066", "access_token": "wa-token",
                      "base_url": provider.uri() },
    });
    start_tuned(move |cfg| {
        cfg.gateways = serde_json::from_value(gateways).unwrap();
        cfg.engine.media.max_file_bytes = 64 * 1024;
        cfg.engine.media.retention_days = retention_days;
        cfg.engine.notify.policy.allow_loopback = true;
        cfg.engine.notify.poll = Duration::from_millis(20);
    })
    .await
}

/// Waits until the inbound message from `provider_id` is processed; returns it.
async fn processed(s: &TestServer, provider_id: &str) -> Value {
    for _ in 0..200 {
        let list = s.get("/v1/inbound").await;
        let found = list.body["items"]
            .as_array()
            .and_then(|items| {
                items
                    .iter()
                    .find(|m| m["provider_message_id"] == provider_id)
            })
            .cloned();
        if let Some(m) = found.filter(|m| m["state"] == "processed") {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{provider_id} was never processed");
}

fn states(m: &Value) -> Vec<(String, String)> {
    m["media"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let what = f["error"].as_str().or(f["content_type"].as_str());
            (f["state"].as_str().unwrap().into(), what.unwrap().into())
        })
        .collect()
}

#[tokio::test]
async fn mms_files_are_downloaded_checked_and_served_to_their_tenant_only() {
    let provider = MockServer::start().await;
    let media = |n: &str| format!("/2010-04-01/Accounts/{ACCOUNT}/Messages/MM1/Media/{n}");
    serve(&provider, &media("ME1"), file(PNG, "image/png")).await;
    let page = b"<html><script>alert(1)</script></html>";
    serve(&provider, &media("ME2"), file(page, "image/png")).await;
    let mut big = PNG.to_vec();
    big.resize(65 * 1024, 0);
    serve(&provider, &media("ME3"), file(&big, "image/png")).await;
    // Fails once, then works: the message is tried again.
    Mock::given(method("GET"))
        .and(path(media("ME4")))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&provider)
        .await;
    serve(&provider, &media("ME4"), file(PNG, "image/png")).await;
    let (s, hooks) = start(&provider, 90).await;
    let rx = herald_tests::receiver::Receiver::start("");
    let ep = json!({ "url": rx.url, "event_types": ["inbound.received"] });
    let ep = s.post("/v1/webhook-endpoints", &ep).await;
    assert_eq!(ep.status, StatusCode::CREATED, "{}", ep.body);
    rx.trust(&[ep.body["secret"].as_str().unwrap()]);
    let urls: Vec<String> = ["ME1", "ME2", "ME3", "ME4"]
        .iter()
        .map(|n| format!("{}{}", provider.uri(), media(n)))
        .collect();
    let mut params = vec![
        ("MessageSid", "MM1"),
        ("From", ANN),
        ("To", ACME_NUMBER),
        ("Body", "Photos of the flat"),
        ("NumMedia", "4"),
    ];
    let names = ["MediaUrl0", "MediaUrl1", "MediaUrl2", "MediaUrl3"];
    params.extend(names.iter().zip(&urls).map(|(n, u)| (*n, u.as_str())));
    let status = post_twilio_inbound(&s.client, &hooks, &params)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);

    let m = processed(&s, "MM1").await;
    let want = [
        ("stored", "image/png"),
        ("refused", "type_mismatch"),
        ("refused", "too_large"),
        ("stored", "image/png"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(states(&m), want, "{m:#}");
    assert!(m["attempts"].as_u64().unwrap() >= 2, "tried again: {m:#}");
    // Each try announced `inbound.received`, with the same id: delivered once.
    let got = rx.wait_for("inbound.received", |r| !r.is_empty()).await;
    assert_eq!(got[0]["body"]["data"]["inbound_id"], m["id"], "{got:#?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.requests().len(), 1, "{:#?}", rx.requests());

    let url = m["media"][0]["url"].as_str().unwrap().to_owned();
    let got = s
        .client
        .get(format!("{}{url}", s.url))
        .bearer_auth(&s.key)
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(got.headers()["content-type"], "image/png");
    assert_eq!(got.headers()["x-content-type-options"], "nosniff");
    assert!(got.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .starts_with("attachment"));
    assert_eq!(got.bytes().await.unwrap().as_ref(), PNG);
    assert_eq!(
        m["media"][1]["url"],
        Value::Null,
        "a refused file has no URL"
    );

    let globex = s.new_key("globex").await;
    assert_eq!(s.get_as(&url, &globex).await.status, StatusCode::NOT_FOUND);
    let anonymous = s
        .client
        .get(format!("{}{url}", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    for bad in [
        "/v1/media/nope",
        "/v1/media/00000000-0000-0000-0000-000000000000",
    ] {
        let r = s.get(bad).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{bad}");
        assert_eq!(r.headers["content-type"], "application/problem+json");
    }
}

#[tokio::test]
async fn whatsapp_media_comes_through_the_graph_api() {
    let provider = MockServer::start().await;
    let file_url = format!("{}/whatsapp-cdn/abc", provider.uri());
    Mock::given(method("GET"))
        .and(path("/v21.0/MEDIA1"))
        .and(header("authorization", "Bearer wa-token"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(
                json!({ "url": file_url, "mime_type": "image/png", "id": "MEDIA1" }),
            ),
        )
        .mount(&provider)
        .await;
    Mock::given(method("GET"))
        .and(path("/whatsapp-cdn/abc"))
        .and(header("authorization", "Bearer wa-token"))
        .respond_with(file(PNG, "image/png"))
        .mount(&provider)
        .await;
    let (s, hooks) = start(&provider, 90).await;
    let message = json!({ "from": ANN.trim_start_matches('+'), "id": "wamid.media1",
        "timestamp": "1700000000", "type": "image",
        "image": { "id": "MEDIA1", "mime_type": "image/png", "caption": "The dog" } });
    whatsapp_message_in(&s, &hooks, message).await;
    let m = processed(&s, "wamid.media1").await;
    assert_eq!(m["body"], "The dog");
    assert_eq!(
        states(&m),
        [("stored".to_string(), "image/png".to_string())]
    );
}

#[tokio::test]
async fn email_attachments_are_stored_and_go_when_retention_ends() {
    let provider = MockServer::start().await;
    let (s, hooks) = start(&provider, 0).await;
    let png = STANDARD.encode(PNG);
    let fake = STANDARD.encode("MZ not really a picture");
    let raw = format!(
        "From: {ANN_EMAIL}\r\nTo: {ACME_MAILBOX}\r\nSubject: Files\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n\
         Content-Type: text/plain\r\n\r\nTwo files.\r\n--b\r\n\
         Content-Type: image/png\r\nContent-Disposition: attachment; filename=\"dog.png\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{png}\r\n--b\r\n\
         Content-Type: image/png\r\nContent-Disposition: attachment; filename=\"cat.png\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{fake}\r\n--b--\r\n"
    );
    email_in(&s, &hooks, 77, &raw).await;
    let m = processed(&s, "77#acme").await;
    assert_eq!(
        states(&m),
        [
            ("stored".to_string(), "image/png".to_string()),
            ("refused".to_string(), "type_mismatch".to_string())
        ]
    );
    assert_eq!(m["media"][0]["filename"], "dog.png");
    let media_dir = s.dir.path().join("media").join("acme");
    assert_eq!(
        std::fs::read_dir(&media_dir).unwrap().count(),
        2,
        "the file and its description"
    );
    // Kept for 0 days: never served, and the retention purge removes it.
    let url = m["media"][0]["url"].as_str().unwrap();
    assert_eq!(s.get(url).await.status, StatusCode::NOT_FOUND);
    shared::engine::maintenance::purge_once(&s.embedded.herald).await;
    assert_eq!(std::fs::read_dir(&media_dir).unwrap().count(), 0);
}

const ANN_EMAIL: &str = "ann@example.com";
