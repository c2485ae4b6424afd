//! A conversation's provider side for tests: Herald with Twilio and WhatsApp webhooks verified
//! by known secrets, and signed inbound messages from a contact.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::shared::webhooks::signature::{hub_signature_256, twilio_signature};
use crate::TestServer;

pub const PUBLIC: &str = "https://herald.example.com";
pub const TWILIO_TOKEN: &str = "twilio-auth-token";
pub const WHATSAPP_SECRET: &str = "meta-app-secret";
pub const ACME_NUMBER: &str = "+15557654321";
pub const ACME_WHATSAPP: &str = "15550001111";
pub const ANN: &str = "+15550003333";
pub const ACME_MAILBOX: &str = "desk@acme.example";

/// Herald with Twilio and WhatsApp webhooks verified by known secrets, and the provider
/// routes served at the returned URL.
pub async fn start() -> (TestServer, String) {
    start_tuned(|_| {}).await
}

pub async fn start_tuned(
    tune: impl FnOnce(&mut crate::shared::embedded::EmbeddedConfig),
) -> (TestServer, String) {
    let webhooks = serde_json::from_value(json!({
        "public_base_url": PUBLIC,
        "twilio": { "auth_token": TWILIO_TOKEN },
        "whatsapp": { "app_secret": WHATSAPP_SECRET, "verify_token": "verify-me" },
        "postal": { "public_key": postal_public_key() },
        "mailboxes": [{ "address": ACME_MAILBOX, "tenant": "acme" }],
        "numbers": [
            { "number": ACME_NUMBER, "tenant": "acme" },
            { "number": ACME_WHATSAPP, "tenant": "acme" }
        ]
    }))
    .expect("webhook settings");
    let s = TestServer::start_with(move |cfg| {
        cfg.webhooks = webhooks;
        tune(cfg);
    })
    .await;
    let url = s.serve_provider_webhooks().await;
    (s, url)
}

/// One Postal server key per test binary: making one takes a while.
fn postal_key() -> &'static rsa::RsaPrivateKey {
    static KEY: std::sync::OnceLock<rsa::RsaPrivateKey> = std::sync::OnceLock::new();
    KEY.get_or_init(crate::hooks::rsa_key)
}

fn postal_public_key() -> String {
    use rsa::pkcs8::{EncodePublicKey, LineEnding};
    postal_key()
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("a PEM public key")
}

/// An email to acme's mailbox, posted by Postal (its id `postal_id`) and signed.
pub async fn email_in(s: &TestServer, hooks: &str, postal_id: u64, raw: &str) {
    let (body, signature) = crate::hooks::postal_raw(postal_key(), postal_id, ACME_MAILBOX, raw);
    let res = s
        .client
        .post(format!("{hooks}/webhooks/postal/inbound"))
        .header("content-type", "application/json")
        .header("x-postal-signature-256", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "{}",
        res.text().await.unwrap()
    );
}

/// A text from `from` to acme's SMS number, signed as Twilio signs it.
pub async fn sms_in(s: &TestServer, hooks: &str, sid: &str, from: &str, text: &str) {
    let status = post_sms(&s.client, hooks, sid, from, text).await.unwrap();
    assert_eq!(status, StatusCode::OK);
}

/// POSTs a text from `from` to acme's SMS number, signed as Twilio signs it, to the provider
/// routes at `hooks`.
pub async fn post_sms(
    client: &reqwest::Client,
    hooks: &str,
    sid: &str,
    from: &str,
    text: &str,
) -> reqwest::Result<StatusCode> {
    let params = [
        ("MessageSid", sid),
        ("From", from),
        ("To", ACME_NUMBER),
        ("Body", text),
    ];
    post_twilio_inbound(client, hooks, &params).await
}

/// POSTs Twilio's inbound-message callback with `params` (To, From, Body, NumMedia,
/// MediaUrl0, ...), signed as Twilio signs it.
pub async fn post_twilio_inbound(
    client: &reqwest::Client,
    hooks: &str,
    params: &[(&str, &str)],
) -> reqwest::Result<StatusCode> {
    let path = "/webhooks/twilio/inbound";
    let params: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let signature = twilio_signature(TWILIO_TOKEN, &format!("{PUBLIC}{path}"), &params);
    let res = client
        .post(format!("{hooks}{path}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", signature)
        .body(serde_urlencoded::to_string(&params).unwrap())
        .send()
        .await?;
    Ok(res.status())
}

/// A WhatsApp text from Ann's number to acme's business number, signed as Meta signs it.
pub async fn whatsapp_in(s: &TestServer, hooks: &str, wamid: &str, text: &str) {
    let message = json!({ "from": ANN.trim_start_matches('+'), "id": wamid,
                          "timestamp": "1700000000", "type": "text", "text": { "body": text } });
    whatsapp_message_in(s, hooks, message).await
}

/// A WhatsApp message (as Meta's `messages[]` entry) from Ann to acme's number, signed.
pub async fn whatsapp_message_in(s: &TestServer, hooks: &str, message: Value) {
    let body = json!({ "object": "whatsapp_business_account", "entry": [{ "id": "waba",
        "changes": [{ "field": "messages", "value": {
            "metadata": { "display_phone_number": ACME_WHATSAPP, "phone_number_id": "1066" },
            "messages": [message]
        } }] }] })
    .to_string();
    let res = s
        .client
        .post(format!("{hooks}/webhooks/whatsapp"))
        .header("content-type", "application/json")
        .header(
            "x-hub-signature-256",
            hub_signature_256(WHATSAPP_SECRET, body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

pub async fn patch(s: &TestServer, path: &str, key: &str, body: &Value) -> crate::Reply {
    let json = [("content-type", "application/json")];
    s.request(
        Method::PATCH,
        path,
        Some(key),
        &json,
        Some(body.to_string().into_bytes()),
    )
    .await
}

pub async fn only_thread(s: &TestServer) -> Value {
    let list = s.get("/v1/threads").await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    let items = list.body["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 1, "{}", list.body);
    items[0].clone()
}
