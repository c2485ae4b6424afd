//! The `webhooks` function over DynamoDB (moto): its settings read from `HERALD_WEBHOOKS` as
//! the template passes them, the Router it runs (`lambda::webhooks_router`) served over HTTP
//! and fed an API Gateway event from `events/webhooks/`. A signed Twilio STOP is stored once,
//! answered with TwiML and puts the sender on the list; a forged one changes nothing.

use std::path::Path;

use aws_sdk_dynamodb::types::AttributeValue;

use herald_tests::aws::AwsApi;
use http_body_util::BodyExt;
use lambda_http::http::HeaderValue;
use reqwest::Method;
use serde_json::json;
use shared::aws::lambda::{self, ColdStart};
use shared::aws::settings::WEBHOOKS;
use shared::aws::AwsSettings;
use shared::domain::inbound::InboundState;
use shared::domain::suppression::{Reason, Scope};
use shared::domain::{Channel, InboundMessage, TenantId};
use shared::webhooks::signature::twilio_signature;
use tower::ServiceExt;

const PUBLIC: &str = "https://herald.example.com";
const INBOUND: &str = "/webhooks/twilio/inbound";
/// The token `events/webhooks/twilio-inbound-stop.json` is signed with.
const TOKEN: &str = "twilio-auth-token";
const NUMBER: &str = "+15557654321";

/// The stack's settings with `HERALD_WEBHOOKS` read as the function reads it.
fn settings(api: &AwsApi) -> AwsSettings {
    settings_with(api, json!({}))
}

/// The same, with `more` added to `HERALD_WEBHOOKS`.
fn settings_with(api: &AwsApi, more: serde_json::Value) -> AwsSettings {
    let mut config = json!({
        "public_base_url": PUBLIC,
        "twilio": { "auth_token": TOKEN },
        "numbers": [{ "number": NUMBER, "tenant": "acme" }]
    });
    config
        .as_object_mut()
        .unwrap()
        .extend(more.as_object().unwrap().clone());
    let config = config.to_string();
    let read = AwsSettings::from_vars(|name| (name == WEBHOOKS).then(|| config.clone()))
        .expect("HERALD_WEBHOOKS");
    AwsSettings {
        webhooks: read.webhooks,
        ..api.stack.settings.clone()
    }
}

/// The webhooks function's Router over the same tables as `api`.
fn webhooks_router(api: &AwsApi) -> axum::Router {
    let cold = ColdStart::with(&api.stack.sdk, settings(api)).unwrap();
    lambda::webhooks_router(cold).unwrap()
}

async fn inbound(api: &AwsApi) -> Vec<InboundMessage> {
    let acme = TenantId::parse("acme").unwrap();
    api.herald
        .inbound
        .list_inbound(&acme, None, 50)
        .await
        .unwrap()
}

fn form(params: &[(&str, &str)]) -> Vec<(String, String)> {
    params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_twilio_stop_is_stored_once_and_suppresses_the_sender() {
    let api = AwsApi::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let router = webhooks_router(&api);
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    let from = "+15551230077";
    let params = form(&[
        ("MessageSid", "SM0aws0stop"),
        ("AccountSid", "AC0123"),
        ("From", from),
        ("To", NUMBER),
        ("Body", "STOP"),
        ("NumMedia", "0"),
    ]);
    let post = |params: Vec<(String, String)>, signature: String| {
        let client = api.client.clone();
        let url = format!("{url}{INBOUND}");
        async move {
            let res = client
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .header("x-twilio-signature", signature)
                .body(serde_urlencoded::to_string(&params).unwrap())
                .send()
                .await
                .unwrap();
            let status = res.status().as_u16();
            let content_type = res
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            (status, content_type, res.text().await.unwrap())
        }
    };
    let signature = twilio_signature(TOKEN, &format!("{PUBLIC}{INBOUND}"), &params);

    let (status, content_type, reply) = post(params.clone(), signature.clone()).await;
    assert_eq!(status, 200, "{reply}");
    assert!(content_type.starts_with("text/xml"), "{content_type}");
    assert!(
        reply.contains("<Response><Message>You are unsubscribed"),
        "TwiML: {reply}"
    );
    let stored = inbound(&api).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0].from, from);
    assert_eq!(stored[0].to, NUMBER);
    assert_eq!(stored[0].body, "STOP");
    assert_eq!(stored[0].gateway, "twilio");
    assert_eq!(stored[0].provider_message_id, "SM0aws0stop");

    // Through the API (tenant acme's key) and through the port.
    let (status, entry) = api
        .call(
            Method::GET,
            &format!("/v1/suppressions/sms/{}", from.replace('+', "%2B")),
            None,
        )
        .await;
    assert_eq!(status, 200, "{entry}");
    assert_eq!(entry["reason"], "sms_opt_out", "{entry}");
    let acme = Scope::Tenant(TenantId::parse("acme").unwrap());
    let entry = api
        .herald
        .suppressions
        .get_suppression(&acme, Channel::Sms, from)
        .await
        .unwrap()
        .expect("suppressed");
    assert_eq!(entry.reason, Reason::SmsOptOut);
    assert_eq!(entry.source.as_deref(), Some("twilio:SM0aws0stop"));

    // Twilio retries a callback it got no answer to: the same reply, nothing stored twice.
    let (status, _, again) = post(params.clone(), signature.clone()).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again, reply);
    assert_eq!(inbound(&api).await.len(), 1, "stored once");

    // Forged: a valid signature of other parameters, and one signed with another token.
    let other = "+15551230078";
    let forged = form(&[
        ("MessageSid", "SM0aws0forged"),
        ("From", other),
        ("To", NUMBER),
        ("Body", "STOP"),
    ]);
    let (status, _, body) = post(forged.clone(), signature).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("bad-signature"), "{body}");
    let wrong_token = twilio_signature("not-the-token", &format!("{PUBLIC}{INBOUND}"), &forged);
    let (status, _, body) = post(forged, wrong_token).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(inbound(&api).await.len(), 1, "nothing stored");
    let none = api
        .herald
        .suppressions
        .get_suppression(&acme, Channel::Sms, other)
        .await
        .unwrap();
    assert!(none.is_none(), "{none:?}");
}

fn fixture(path: &str) -> String {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../events")
        .join(path);
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("events/{path}: {e}"))
}

async fn call(router: &axum::Router, request: lambda_http::Request) -> (u16, String) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_gateway_event_reaches_the_webhooks_function() {
    let api = AwsApi::start().await;
    let router = webhooks_router(&api);
    let event = fixture("webhooks/twilio-inbound-stop.json");
    let parse = || {
        lambda_http::request::from_str(&event)
            .unwrap_or_else(|e| panic!("not an API Gateway request: {e}"))
    };

    // Tampered first: nothing may come of it.
    let mut forged = parse();
    forged.headers_mut().insert(
        "x-twilio-signature",
        HeaderValue::from_static("AAAAAAAAAAAAAAAAAAAAAAAAAAA="),
    );
    let (status, body) = call(&router, forged).await;
    assert_eq!(status, 401, "{body}");
    assert!(inbound(&api).await.is_empty());

    // The base64 form body API Gateway passes, signed over the public URL.
    let (status, reply) = call(&router, parse()).await;
    assert_eq!(status, 200, "{reply}");
    assert!(reply.contains("<Message>You are unsubscribed"), "{reply}");
    let stored = inbound(&api).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0].from, "+15551239876");
    let (status, entry) = api
        .call(Method::GET, "/v1/suppressions/sms/%2B15551239876", None)
        .await;
    assert_eq!(status, 200, "{entry}");
    assert_eq!(entry["reason"], "sms_opt_out");

    let (status, _) = call(&router, parse()).await;
    assert_eq!(status, 200);
    assert_eq!(inbound(&api).await.len(), 1, "a retry is stored once");

    // Providers left out of HERALD_WEBHOOKS are not served.
    let mut telegram = parse();
    *telegram.uri_mut() = "/webhooks/telegram".parse().unwrap();
    let (status, body) = call(&router, telegram).await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgeries_are_counted_per_api_gateway_source_ip() {
    let api = AwsApi::start().await;
    let router = webhooks_router(&api);
    let event = fixture("webhooks/twilio-inbound-stop.json");
    // Same X-Forwarded-For, another caller as API Gateway saw it.
    let other_caller = event.replace(
        "\"sourceIp\": \"54.172.60.1\"",
        "\"sourceIp\": \"198.51.100.20\"",
    );
    assert_ne!(other_caller, event);
    let forged = |event: &str| {
        let mut request = lambda_http::request::from_str(event).unwrap();
        request.headers_mut().insert(
            "x-twilio-signature",
            HeaderValue::from_static("AAAAAAAAAAAAAAAAAAAAAAAAAAA="),
        );
        request
    };
    let mut statuses = Vec::new();
    for _ in 0..25 {
        statuses.push(call(&router, forged(&event)).await.0);
    }
    // The default allowance: 10 a second, bursts of 20.
    assert!(statuses[..20].iter().all(|s| *s == 401), "{statuses:?}");
    assert!(statuses[20..].contains(&429), "{statuses:?}");
    assert_eq!(
        call(&router, forged(&other_caller)).await.0,
        401,
        "another caller"
    );
    let genuine = lambda_http::request::from_str(&event).unwrap();
    let (status, reply) = call(&router, genuine).await;
    assert_eq!(
        status, 200,
        "the genuine STOP from the same address: {reply}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_start_never_lifts_a_later_stop() {
    let api = AwsApi::start().await;
    let router = webhooks_router(&api);
    let from = "+15551230079";
    let signed = |sid: &str, body: &str| signed_text(sid, from, body);
    for (sid, body) in [("SM-k1", "STOP"), ("SM-k2", "START"), ("SM-k3", "STOP")] {
        let (status, reply) = call(&router, signed(sid, body)).await;
        assert_eq!(status, 200, "{reply}");
    }
    let acme = Scope::Tenant(TenantId::parse("acme").unwrap());
    let opted_out = || async {
        api.herald
            .suppressions
            .get_suppression(&acme, Channel::Sms, from)
            .await
            .unwrap()
            .is_some()
    };
    assert!(opted_out().await);
    // A year on: past any event-id retention.
    let table = api.stack.settings.tables.idempotency.clone().unwrap();
    for sid in ["SM-k1", "SM-k2", "SM-k3"] {
        api.stack
            .dynamo
            .update_item()
            .table_name(&table)
            .key(
                "pk",
                AttributeValue::S(format!("event#keyword#twilio:{sid}")),
            )
            .update_expression("SET expires_at = expires_at - :year")
            .expression_attribute_values(":year", AttributeValue::N((365 * 86400).to_string()))
            .send()
            .await
            .unwrap();
    }
    let (status, reply) = call(&router, signed("SM-k2", "START")).await;
    assert_eq!(status, 200, "{reply}");
    assert!(opted_out().await, "the replayed START changed nothing");
}

/// A text from `from` to acme's number, as the API Gateway hands it to the webhooks function.
fn signed_text(sid: &str, from: &str, body: &str) -> lambda_http::Request {
    signed_text_to(sid, (from, NUMBER), body)
}

/// A text from `from` to `to`, signed as Twilio signs it.
fn signed_text_to(sid: &str, (from, to): (&str, &str), body: &str) -> lambda_http::Request {
    let params = form(&[
        ("MessageSid", sid),
        ("From", from),
        ("To", to),
        ("Body", body),
    ]);
    let signature = twilio_signature(TOKEN, &format!("{PUBLIC}{INBOUND}"), &params);
    lambda_http::http::Request::builder()
        .method("POST")
        .uri(INBOUND)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", signature)
        .body(lambda_http::Body::from(
            serde_urlencoded::to_string(&params).unwrap(),
        ))
        .unwrap()
}

/// The inbound pipeline on AWS: the webhooks function stores a message and puts it on the
/// inbound queue; the `inbound` function processes it once (a redelivery changes nothing);
/// a message whose announcement was lost is announced again by the sweep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbound_function_processes_each_message_once() {
    let api = AwsApi::start().await;
    let router = webhooks_router(&api);
    let from = "+15551230099";
    let text_in = |sid: &'static str, body: &'static str| {
        let request = signed_text(sid, from, body);
        let router = router.clone();
        async move { assert_eq!(call(&router, request).await.0, 200) }
    };
    let tpl = json!({ "text": "Thanks, we will answer soon. You wrote: {{ body }}" });
    let (status, body) = api.call(Method::PUT, "/v1/templates/ack", Some(tpl)).await;
    assert_eq!(status, 201, "{body}");
    let rules = json!({ "rules": [{ "name": "ack", "when": { "keywords": ["quote"] },
        "actions": [{ "type": "label", "label": "lead" },
                    { "type": "auto_reply", "template": "ack" }] }] });
    let (status, body) = api
        .call(Method::PUT, "/v1/inbound-rules", Some(rules))
        .await;
    assert_eq!(status, 200, "{body}");

    text_in("SM0aws0quote", "A quote for Friday, please").await;
    let queue = api.stack.settings.queues.inbound.clone().unwrap();
    let herald = api.herald.clone();
    let (event, response) = api
        .stack
        .poll_once(&queue, 10, |event| async move {
            lambda::inbound(&herald, event).await
        })
        .await
        .expect("the stored message was announced");
    assert_eq!(event.records.len(), 1);
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    let stored = inbound(&api).await;
    let m = &stored[0];
    assert_eq!(m.progress.state, InboundState::Processed, "{m:?}");
    let decision = m.progress.decision.clone().unwrap();
    assert_eq!(decision.rule.as_deref(), Some("ack"));
    let reply = decision.actions[1]
        .message_id
        .clone()
        .expect("auto-reply sent");
    let view = api.view(&reply).await;
    assert_eq!(
        (view["to"].as_str(), view["priority"].as_str()),
        (Some(from), Some("P1"))
    );
    let thread = api
        .herald
        .threads
        .thread(&m.tenant, m.thread.unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(thread.insights.label.as_deref(), Some("lead"));

    // SQS delivers the entry again: nothing is done twice.
    let again = lambda::inbound(&api.herald, event).await;
    assert!(again.batch_item_failures.is_empty(), "{again:?}");
    let (status, sent) = api
        .call(Method::GET, "/v1/messages?source_type=inbound_rule", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(sent["items"].as_array().map(Vec::len), Some(1), "{sent}");

    // An announcement lost: the sweep finds the message waiting and announces it again.
    text_in("SM0aws0lost", "hello?").await;
    let herald = api.herald.clone();
    api.stack
        .poll_once(&queue, 10, |_| async { Default::default() })
        .await
        .expect("announced, then lost");
    assert_eq!(
        herald
            .announce_pending(std::time::Duration::ZERO)
            .await
            .unwrap(),
        1
    );
    let (_, response) = api
        .stack
        .poll_once(&queue, 10, |event| async move {
            lambda::inbound(&herald, event).await
        })
        .await
        .expect("announced again");
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    assert_eq!(
        inbound(&api).await[0].progress.state,
        InboundState::Processed
    );
}

/// The webhooks function with a Postal server's key and acme's mailbox `desk@acme.example`.
struct PostalMail {
    key: rsa::RsaPrivateKey,
    router: axum::Router,
}

impl PostalMail {
    fn new(api: &AwsApi) -> PostalMail {
        use rsa::pkcs8::{EncodePublicKey, LineEnding};
        let key = herald_tests::hooks::rsa_key();
        let public = key
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        let more = json!({ "postal": { "public_key": public },
                           "mailboxes": [{ "address": "desk@acme.example", "tenant": "acme" }] });
        let cold = ColdStart::with(&api.stack.sdk, settings_with(api, more)).unwrap();
        let router = lambda::webhooks_router(cold).unwrap();
        PostalMail { key, router }
    }

    /// Mail for acme's mailbox, posted by Postal (its id `id`) and signed.
    async fn send(&self, id: u64, raw: &str) -> (u16, String) {
        let (body, signature) =
            herald_tests::hooks::postal_raw(&self.key, id, "desk@acme.example", raw);
        let request = lambda_http::http::Request::builder()
            .method("POST")
            .uri("/webhooks/postal/inbound")
            .header("content-type", "application/json")
            .header("x-postal-signature-256", signature)
            .body(lambda_http::Body::from(body))
            .unwrap();
        call(&self.router, request).await
    }
}

/// Inbound email on AWS: Postal's raw message through the webhooks function, stored in
/// DynamoDB once, and a reply that names a message sent through the thread joins it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_email_is_threaded_by_the_message_it_answers() {
    use herald_tests::hooks::raw_email;
    let api = AwsApi::start().await;
    let mail = PostalMail::new(&api);
    let mail_in = |id: u64, raw: String| {
        let mail = &mail;
        async move { mail.send(id, &raw).await }
    };
    let first = raw_email(
        "ann@example.com",
        "desk@acme.example",
        "Booking",
        None,
        "Tuesday?",
    );
    assert_eq!(mail_in(1, first.clone()).await.0, 200);
    assert_eq!(mail_in(1, first).await.0, 200);
    let stored = inbound(&api).await;
    assert_eq!(stored.len(), 1, "stored once");
    assert_eq!(stored[0].channel, Channel::Email);
    let thread = stored[0].thread.unwrap();
    // Sent in the thread to Ann's other address: her answer from there joins the thread.
    let (status, sent) = api
        .call(
            Method::POST,
            "/v1/messages",
            Some(
                json!({ "channel": "email", "priority": "P1", "to": "ann@home.example",
                         "subject": "Re: Booking", "body": "Tuesday is free.",
                         "thread_id": thread.to_string() }),
            ),
        )
        .await;
    assert_eq!(status, 202, "{sent}");
    let named = format!("<{}@herald>", sent["id"].as_str().unwrap());
    let reply = raw_email(
        "ann@home.example",
        "desk@acme.example",
        "Re",
        Some(&named),
        "Great",
    );
    assert_eq!(mail_in(2, reply).await.0, 200);
    let stored = inbound(&api).await;
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].thread, Some(thread), "joined by In-Reply-To");
    assert_eq!(stored[0].body, "Great");
    assert_eq!(
        stored[0].email.as_ref().unwrap().in_reply_to,
        [named.trim_matches(['<', '>'])]
    );
}

/// An email attachment on AWS: stored in the media bucket under its tenant, listed on the
/// message, and served by the API as a redirect to a presigned URL that works; another
/// tenant's key finds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_attachments_are_kept_in_s3_and_served_by_presigned_urls() {
    use base64::Engine;
    let png: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0";
    let api = AwsApi::start().await;
    let mail = PostalMail::new(&api);
    let raw = format!(
        "From: ann@example.com\r\nTo: desk@acme.example\r\nSubject: Dog\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n\
         Content-Type: text/plain\r\n\r\nHere.\r\n--b\r\n\
         Content-Type: image/png\r\nContent-Disposition: attachment; filename=\"dog.png\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{}\r\n--b--\r\n",
        base64::engine::general_purpose::STANDARD.encode(png)
    );
    assert_eq!(mail.send(7, &raw).await.0, 200);
    let stored = inbound(&api).await;
    let media = &stored[0].media;
    assert_eq!(media.len(), 1, "{media:?}");
    assert_eq!(media[0].content_type.as_deref(), Some("image/png"));

    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let url = format!("{}/v1/media/{}", api.url, media[0].id);
    let answer = no_redirects
        .get(&url)
        .bearer_auth(&api.key)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 302);
    let presigned = answer.headers()["location"].to_str().unwrap().to_owned();
    assert!(presigned.contains("X-Amz-Signature="), "{presigned}");
    let file = reqwest::get(&presigned).await.unwrap();
    assert_eq!(file.status(), 200);
    assert_eq!(file.bytes().await.unwrap().as_ref(), png);
    let globex = api.key_of("globex").await;
    let theirs = no_redirects
        .get(&url)
        .bearer_auth(&globex)
        .send()
        .await
        .unwrap();
    assert_eq!(theirs.status(), 404);
}

/// The relay on AWS: numbers and an assignment through the API; a text to the pool number
/// through the webhooks function (which finds the tenant by the registered number) is routed
/// by the inbound function and sent on from the pool number, once even when SQS delivers
/// the entry again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_routes_a_text_to_the_other_party_once() {
    let api = AwsApi::start().await;
    let router = webhooks_router(&api);
    let (pool, client, worker) = ("+15559000001", "+15550001001", "+15550002002");
    for (number, role) in [("+15559000000", "front_desk"), (pool, "pool")] {
        let n = json!({ "number": number, "role": role, "provider": "twilio" });
        let (status, body) = api.call(Method::POST, "/v1/numbers", Some(n)).await;
        assert_eq!(status, 201, "{body}");
    }
    let ends_at = chrono::Utc::now() + chrono::Duration::hours(1);
    let a = json!({ "client": { "number": client }, "worker": { "number": worker }, "ends_at": ends_at });
    let (status, assignment) = api.call(Method::POST, "/v1/assignments", Some(a)).await;
    assert_eq!(status, 201, "{assignment}");
    assert_eq!(assignment["number"], pool);

    let request = signed_text_to("SM0aws0relay", (client, pool), "Rex needs a walk");
    assert_eq!(call(&router, request).await.0, 200);
    let queue = api.stack.settings.queues.inbound.clone().unwrap();
    let herald = api.herald.clone();
    let (event, response) = api
        .stack
        .poll_once(&queue, 10, |event| async move {
            lambda::inbound(&herald, event).await
        })
        .await
        .expect("the stored message was announced");
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    let m = &inbound(&api).await[0];
    let decision = m.progress.decision.clone().unwrap();
    let relay = decision.relay.expect("routed by the relay");
    let relayed = relay.relayed_message_id.expect("sent on").to_string();
    let view = api.view(&relayed).await;
    assert_eq!(
        (view["to"].as_str(), view["from"].as_str()),
        (Some(worker), Some(pool)),
        "{view:#}"
    );
    assert_eq!(relay.decision.trace[1].step, "active_assignment");

    let again = lambda::inbound(&api.herald, event).await;
    assert!(again.batch_item_failures.is_empty(), "{again:?}");
    let (status, sent) = api
        .call(Method::GET, "/v1/messages?source_type=relay", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(sent["items"].as_array().map(Vec::len), Some(1), "{sent}");
    let (status, sim) = api
        .call(
            Method::POST,
            "/v1/routing/simulate",
            Some(json!({ "to": pool, "from": worker, "body": "ok" })),
        )
        .await;
    assert_eq!(status, 200, "{sim}");
    assert_eq!(sim["route"]["to"], client);
}
