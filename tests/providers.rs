//! The provider gateways against wiremock: the exact request each sends (method, path, auth,
//! form or JSON fields, headers, as the providers document them) and how each answer maps to
//! sent, retry, give up or slow down.

use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};
use shared::domain::{Channel, Content, MessageId, Priority};
use shared::gateway::fcm::{FcmConfig, FcmGateway};
use shared::gateway::postal::{PostalConfig, PostalGateway};
use shared::gateway::secret::Secret;
use shared::gateway::telegram::{TelegramConfig, TelegramGateway};
use shared::gateway::twilio::{TwilioConfig, TwilioGateway};
use shared::gateway::whatsapp::{WhatsappConfig, WhatsappGateway};
use shared::ports::{Gateway, GatewayError, OutboundMessage};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

fn message(channel: Channel, to: &str) -> OutboundMessage {
    OutboundMessage {
        id: MessageId::new(),
        tenant: "acme".into(),
        channel,
        priority: Priority::P1,
        to: to.into(),
        from: None,
        content: Content {
            subject: Some("Storm warning".into()),
            body: Some("Stay inside.".into()),
            html: Some("<p>Stay inside.</p>".into()),
        },
        attempt: 1,
        correlation_id: "c-1".into(),
        unsubscribe_url: None,
        one_click_url: None,
        media_urls: Vec::new(),
        whatsapp_template: None,
    }
}

async fn only_request(server: &MockServer) -> Request {
    let mut all = server.received_requests().await.unwrap();
    assert_eq!(all.len(), 1, "one request");
    all.remove(0)
}

fn form(r: &Request) -> Vec<(String, String)> {
    serde_urlencoded::from_bytes(&r.body).unwrap()
}

fn header<'a>(r: &'a Request, name: &str) -> &'a str {
    r.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

async fn answer(server: &MockServer, status: u16, body: Value) {
    server.reset().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(status)
                .set_body_json(body)
                .insert_header("Retry-After", "3"),
        )
        .mount(server)
        .await;
}

fn twilio(server: &MockServer) -> TwilioGateway {
    TwilioGateway::new(TwilioConfig {
        account_sid: "AC0123456789abcdef".into(),
        auth_token: Some(Secret::new("token-1")),
        api_key_sid: None,
        api_key_secret: None,
        from: Some("+15005550006".into()),
        messaging_service_sid: None,
        public_base_url: Some("https://herald.example.com".into()),
        base_url: server.uri(),
    })
    .unwrap()
}

#[tokio::test]
async fn twilio_sends_the_documented_form_and_maps_its_errors() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(
            "/2010-04-01/Accounts/AC0123456789abcdef/Messages.json",
        ))
        .respond_with(
            ResponseTemplate::new(201).set_body_json(json!({ "sid": "SM123", "status": "queued" })),
        )
        .mount(&server)
        .await;
    let gateway = twilio(&server);
    let mut m = message(Channel::Sms, "+15005550010");
    m.media_urls = vec![
        "https://example.com/a.png".into(),
        "https://example.com/b.png".into(),
    ];
    let receipt = gateway.send(&m).await.unwrap();
    assert_eq!(receipt.provider_message_id, "SM123");
    let r = only_request(&server).await;
    let expected_auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("AC0123456789abcdef:token-1")
    );
    assert_eq!(header(&r, "authorization"), expected_auth);
    assert_eq!(
        header(&r, "content-type"),
        "application/x-www-form-urlencoded"
    );
    let f = form(&r);
    let get = |k: &str| {
        f.iter()
            .filter(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(get("To"), ["+15005550010"]);
    assert_eq!(get("From"), ["+15005550006"]);
    assert_eq!(get("Body"), ["Stay inside."]);
    assert_eq!(
        get("MediaUrl"),
        ["https://example.com/a.png", "https://example.com/b.png"]
    );
    assert_eq!(
        get("StatusCallback"),
        [format!(
            "https://herald.example.com/webhooks/twilio/status?herald_id={}",
            m.id
        )
        .as_str()]
    );

    answer(
        &server,
        400,
        json!({ "code": 21211, "message": "Invalid 'To' Phone Number", "status": 400 }),
    )
    .await;
    assert!(
        matches!(gateway.send(&m).await, Err(GatewayError::Permanent { code, .. }) if code == "21211")
    );
    answer(
        &server,
        400,
        json!({ "code": 21610, "message": "Attempt to send to unsubscribed recipient" }),
    )
    .await;
    match gateway.send(&m).await {
        Err(GatewayError::Permanent { code, .. }) => {
            assert_eq!(
                gateway.suppression_for(&code),
                Some(shared::domain::suppression::Reason::SmsOptOut)
            )
        }
        other => panic!("{other:?}"),
    }
    answer(
        &server,
        429,
        json!({ "code": 20429, "message": "Too Many Requests" }),
    )
    .await;
    assert!(matches!(gateway.send(&m).await,
        Err(GatewayError::Throttled { retry_after: Some(d) }) if d == Duration::from_secs(3)));
    answer(
        &server,
        503,
        json!({ "code": 20500, "message": "Internal error" }),
    )
    .await;
    assert!(matches!(
        gateway.send(&m).await,
        Err(GatewayError::Transient(_))
    ));
}

#[tokio::test]
async fn twilio_with_an_api_key_and_a_messaging_service() {
    let server = MockServer::start().await;
    answer(&server, 201, json!({ "sid": "SM9" })).await;
    let gateway = TwilioGateway::new(TwilioConfig {
        account_sid: "AC1".into(),
        auth_token: None,
        api_key_sid: Some("SK1".into()),
        api_key_secret: Some(Secret::new("secret")),
        from: None,
        messaging_service_sid: Some("MG1".into()),
        public_base_url: None,
        base_url: server.uri(),
    })
    .unwrap();
    gateway
        .send(&message(Channel::Sms, "+15005550010"))
        .await
        .unwrap();
    let r = only_request(&server).await;
    assert_eq!(
        header(&r, "authorization"),
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("SK1:secret")
        )
    );
    let f = form(&r);
    assert!(f.contains(&("MessagingServiceSid".into(), "MG1".into())));
    assert!(!f.iter().any(|(k, _)| k == "From" || k == "StatusCallback"));
}

#[tokio::test]
async fn postal_sends_its_json_with_the_server_key() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/send/message"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "status": "success", "time": 0.05, "flags": {},
            "data": { "message_id": "abc@postal.example.com",
                      "messages": { "ann@example.com": { "id": 4711, "token": "tok" } } } })))
        .mount(&server)
        .await;
    let gateway = PostalGateway::new(PostalConfig {
        base_url: server.uri(),
        api_key: Secret::new("server-key"),
        from: Some("news@example.com".into()),
    });
    let mut m = message(Channel::Email, "ann@example.com");
    m.unsubscribe_url = Some("https://example.com/u/ann".into());
    assert_eq!(gateway.send(&m).await.unwrap().provider_message_id, "4711");
    let r = only_request(&server).await;
    assert_eq!(header(&r, "x-server-api-key"), "server-key");
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["to"], json!(["ann@example.com"]));
    assert_eq!(body["from"], "news@example.com");
    assert_eq!(body["subject"], "Storm warning");
    assert_eq!(body["plain_body"], "Stay inside.");
    assert_eq!(body["html_body"], "<p>Stay inside.</p>");
    assert_eq!(
        body["headers"]["List-Unsubscribe"],
        "<https://example.com/u/ann>"
    );
    assert_eq!(
        body["headers"]["List-Unsubscribe-Post"],
        "List-Unsubscribe=One-Click"
    );

    answer(&server, 200, json!({ "status": "parameter-error",
        "data": { "code": "UnauthenticatedFromAddress", "message": "The From address is not authorised" } })).await;
    assert!(matches!(gateway.send(&m).await,
        Err(GatewayError::Permanent { code, .. }) if code == "UnauthenticatedFromAddress"));
    answer(&server, 500, json!({})).await;
    assert!(matches!(
        gateway.send(&m).await,
        Err(GatewayError::Transient(_))
    ));
}

#[tokio::test]
async fn telegram_calls_send_message_for_the_bot() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/bot123:secret/sendMessage"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "ok": true, "result": { "message_id": 42, "chat": { "id": -1001234 }, "text": "Stay inside." } })))
        .mount(&server)
        .await;
    let gateway = TelegramGateway::new(TelegramConfig {
        bot_token: Secret::new("123:secret"),
        base_url: server.uri(),
    });
    let m = message(Channel::Telegram, "-1001234");
    assert_eq!(
        gateway.send(&m).await.unwrap().provider_message_id,
        "-1001234:42"
    );
    let body: Value = serde_json::from_slice(&only_request(&server).await.body).unwrap();
    assert_eq!(body, json!({ "chat_id": -1001234, "text": "Stay inside." }));

    answer(
        &server,
        429,
        json!({ "ok": false, "error_code": 429, "description": "Too Many Requests: retry after 12",
                                 "parameters": { "retry_after": 12 } }),
    )
    .await;
    assert!(matches!(gateway.send(&m).await,
        Err(GatewayError::Throttled { retry_after: Some(d) }) if d == Duration::from_secs(12)));
    answer(&server, 403, json!({ "ok": false, "error_code": 403, "description": "Forbidden: bot was blocked by the user" })).await;
    match gateway.send(&m).await {
        Err(GatewayError::Permanent { code, .. }) => {
            assert!(gateway.suppression_for(&code).is_some())
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn whatsapp_sends_text_and_template_messages() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v21.0/1055/messages"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "messaging_product": "whatsapp", "contacts": [{ "input": "15005550010", "wa_id": "15005550010" }],
            "messages": [{ "id": "wamid.HBgL" }] })))
        .mount(&server)
        .await;
    let gateway = WhatsappGateway::new(WhatsappConfig {
        phone_number_id: "1055".into(),
        access_token: Secret::new("EAAG"),
        base_url: server.uri(),
        api_version: "v21.0".into(),
    });
    let mut m = message(Channel::Whatsapp, "+15005550010");
    assert_eq!(
        gateway.send(&m).await.unwrap().provider_message_id,
        "wamid.HBgL"
    );
    m.whatsapp_template = Some(json!({ "name": "order_shipped", "language": { "code": "en_US" } }));
    gateway.send(&m).await.unwrap();
    let requests = server.received_requests().await.unwrap();
    assert_eq!(header(&requests[0], "authorization"), "Bearer EAAG");
    let text: Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(
        text,
        json!({ "messaging_product": "whatsapp", "recipient_type": "individual",
                             "to": "15005550010", "type": "text",
                             "text": { "preview_url": false, "body": "Stay inside." } })
    );
    let template: Value = serde_json::from_slice(&requests[1].body).unwrap();
    assert_eq!(template["type"], "template");
    assert_eq!(template["template"]["name"], "order_shipped");

    answer(
        &server,
        400,
        json!({ "error": { "message": "Message undeliverable", "type": "OAuthException",
                                            "code": 131026, "fbtrace_id": "x" } }),
    )
    .await;
    assert!(
        matches!(gateway.send(&m).await, Err(GatewayError::Permanent { code, .. }) if code == "131026")
    );
    answer(
        &server,
        400,
        json!({ "error": { "message": "Rate limit hit", "code": 130429 } }),
    )
    .await;
    assert!(matches!(
        gateway.send(&m).await,
        Err(GatewayError::Throttled { .. })
    ));
}

/// A service account key like Google's, with a key made for this test.
fn service_account(token_uri: &str) -> (String, rsa::RsaPublicKey) {
    use rsa::pkcs8::EncodePrivateKey;
    let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
    let pem = key.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF).unwrap();
    let json = json!({ "type": "service_account", "project_id": "herald-test", "private_key_id": "k1",
                       "private_key": pem.as_str(), "client_email": "herald@herald-test.iam.gserviceaccount.com",
                       "client_id": "1", "token_uri": token_uri });
    (json.to_string(), key.to_public_key())
}

#[tokio::test]
async fn fcm_exchanges_a_signed_jwt_for_a_token_and_caches_it() {
    use rsa::pkcs1v15::{Signature, VerifyingKey};
    use rsa::signature::Verifier;
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": "ya29.test", "expires_in": 3599, "token_type": "Bearer" })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/projects/herald-test/messages:send"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({ "name": "projects/herald-test/messages/0:1" })),
        )
        .mount(&server)
        .await;
    let (account, public) = service_account(&format!("{}/token", server.uri()));
    let gateway = FcmGateway::new(FcmConfig {
        project_id: "herald-test".into(),
        service_account: Secret::new(account),
        base_url: server.uri(),
    })
    .unwrap();
    let m = message(Channel::Push, "device-token-1");
    for _ in 0..2 {
        assert_eq!(
            gateway.send(&m).await.unwrap().provider_message_id,
            "projects/herald-test/messages/0:1"
        );
    }
    let requests = server.received_requests().await.unwrap();
    let grants: Vec<_> = requests
        .iter()
        .filter(|r| r.url.path() == "/token")
        .collect();
    assert_eq!(grants.len(), 1, "the token is cached");
    let grant = form(grants[0]);
    assert!(grant.contains(&(
        "grant_type".into(),
        "urn:ietf:params:oauth:grant-type:jwt-bearer".into()
    )));
    let jwt = &grant.iter().find(|(k, _)| k == "assertion").unwrap().1;
    let parts: Vec<&str> = jwt.split('.').collect();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let claims: Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(claims["iss"], "herald@herald-test.iam.gserviceaccount.com");
    assert_eq!(
        claims["scope"],
        "https://www.googleapis.com/auth/firebase.messaging"
    );
    assert_eq!(claims["aud"], format!("{}/token", server.uri()));
    let signature = Signature::try_from(b64.decode(parts[2]).unwrap().as_slice()).unwrap();
    VerifyingKey::<sha2::Sha256>::new(public)
        .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
        .expect("RS256 signature by the service account's key");
    let send = requests
        .iter()
        .find(|r| r.url.path().ends_with("messages:send"))
        .unwrap();
    assert_eq!(header(send, "authorization"), "Bearer ya29.test");
    let body: Value = serde_json::from_slice(&send.body).unwrap();
    assert_eq!(body["message"]["token"], "device-token-1");
    assert_eq!(
        body["message"]["notification"],
        json!({ "title": "Storm warning", "body": "Stay inside." })
    );

    server.reset().await;
    Mock::given(method("POST"))
        .and(path("/v1/projects/herald-test/messages:send"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({ "error": { "code": 404,
            "message": "Requested entity was not found.", "status": "NOT_FOUND",
            "details": [{ "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNREGISTERED" }] } })))
        .mount(&server)
        .await;
    match gateway.send(&m).await {
        Err(GatewayError::Permanent { code, .. }) => {
            assert_eq!(code, "UNREGISTERED");
            assert!(
                gateway.suppression_for(&code).is_some(),
                "a dead token is suppressed"
            );
        }
        other => panic!("{other:?}"),
    }
    server.reset().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).set_body_json(json!({ "error": { "code": 429,
            "status": "RESOURCE_EXHAUSTED",
            "details": [{ "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "QUOTA_EXCEEDED" }] } })))
        .mount(&server)
        .await;
    assert!(matches!(
        gateway.send(&m).await,
        Err(GatewayError::Throttled { .. })
    ));
}
