//! Provider webhooks end to end on an embedded Herald: messages go out through real gateway
//! code to wiremock, the providers' callbacks come back signed as the providers sign them, and
//! only genuine ones change anything. Replays, over-size bodies, rate limits, inbound SMS
//! keywords (STOP, START, HELP) and `GET /v1/inbound`.

use std::time::Duration;

use chrono::Utc;
use herald_tests::hooks::*;
use herald_tests::timeline;
use hmac::{Hmac, Mac};
use rsa::RsaPrivateKey;
use serde_json::{json, Value};
use wiremock::matchers::method;
use wiremock::{Mock, ResponseTemplate};

fn sms(to: &str) -> Value {
    json!({ "channel": "sms", "priority": "P1", "to": to, "body": "Storm warning" })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_status_callbacks_are_verified_applied_once_and_can_suppress() {
    let h = Hooks::start().await;
    h.answer(json!({ "sid": "SM0001", "status": "queued" }))
        .await;
    let id = h.s.send(&sms("+15551230001")).await;
    h.s.wait_status(&id, "sent").await;
    let sent = h.provider.received_requests().await.unwrap();
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&sent[0].body).unwrap();
    let callback = form
        .iter()
        .find(|(k, _)| k == "StatusCallback")
        .unwrap()
        .1
        .clone();
    let path = callback.strip_prefix(PUBLIC).unwrap().to_owned();
    assert_eq!(path, format!("/webhooks/twilio/status?herald_id={id}"));

    let delivered = [
        ("MessageSid", "SM0001"),
        ("MessageStatus", "delivered"),
        ("AccountSid", "AC0123"),
    ];
    let (status, _) = h.twilio(&path, &delivered, true).await;
    assert_eq!(status, 401, "a tampered parameter fails the signature");
    let (status, _) = h
        .post(
            &path,
            &[("content-type", "application/x-www-form-urlencoded")],
            b"MessageSid=SM0001&MessageStatus=delivered".to_vec(),
        )
        .await;
    assert_eq!(status, 401, "no signature at all");
    assert_eq!(
        h.s.get(&format!("/v1/messages/{id}")).await.body["status"],
        "sent",
        "nothing changed"
    );

    assert_eq!(h.twilio(&path, &delivered, false).await.0, 200);
    let view = h.s.wait_status(&id, "delivered").await;
    assert_eq!(
        h.twilio(&path, &delivered, false).await.0,
        200,
        "a replay is accepted"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let view_after = h.s.get(&format!("/v1/messages/{id}")).await.body;
    assert_eq!(timeline(&view_after), timeline(&view), "and dropped");
    assert_eq!(timeline(&view), ["queued", "sending", "sent", "delivered"]);

    // Undelivered because the recipient opted out at Twilio (21610): failed, and suppressed.
    h.answer(json!({ "sid": "SM0002", "status": "queued" }))
        .await;
    let id = h.s.send(&sms("+15551230002")).await;
    h.s.wait_status(&id, "sent").await;
    let path = format!("/webhooks/twilio/status?herald_id={id}");
    let undelivered = [
        ("MessageSid", "SM0002"),
        ("MessageStatus", "undelivered"),
        ("ErrorCode", "21610"),
    ];
    assert_eq!(h.twilio(&path, &undelivered, false).await.0, 200);
    let view = h.s.wait_status(&id, "failed").await;
    assert_eq!(view["last_error"], "twilio error 21610", "{view:#}");
    let entry = h.s.get("/v1/suppressions/sms/+15551230002").await;
    assert_eq!(entry.status.as_u16(), 200, "{}", entry.body);
    assert_eq!(entry.body["reason"], "sms_opt_out");

    // A status Herald has no event for (`sent`) is a 200, so Twilio stops retrying.
    let sent = [("MessageSid", "SM0002"), ("MessageStatus", "sent")];
    assert_eq!(h.twilio(&path, &sent, false).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_start_and_help_keywords_on_inbound_sms() {
    let h = Hooks::start().await;
    h.answer(json!({ "sid": "SM0100", "status": "queued" }))
        .await;
    let from = "+15551239999";
    let inbound = |sid: &'static str, body: &'static str| {
        [
            ("MessageSid", sid),
            ("From", from),
            ("To", "+15557654321"),
            ("Body", body),
            ("NumMedia", "0"),
        ]
    };
    let (status, reply) = h
        .twilio(
            "/webhooks/twilio/inbound",
            &inbound("SM-in-1", " Stop "),
            false,
        )
        .await;
    assert_eq!(status, 200);
    assert!(reply.contains("<Message>You are unsubscribed"), "{reply}");
    let r = h.s.post("/v1/messages", &sms(from)).await;
    assert_eq!(
        r.body["status"], "suppressed",
        "STOP, then a send to that number: {}",
        r.body
    );
    let entry = h.s.get(&format!("/v1/suppressions/sms/{from}")).await.body;
    assert_eq!(entry["reason"], "sms_opt_out");

    let (_, reply) = h
        .twilio(
            "/webhooks/twilio/inbound",
            &inbound("SM-in-2", "help"),
            false,
        )
        .await;
    assert!(
        reply.contains("<Message>Acme alerts. Reply STOP to opt out.</Message>"),
        "{reply}"
    );

    let (_, reply) = h
        .twilio(
            "/webhooks/twilio/inbound",
            &inbound("SM-in-3", "START"),
            false,
        )
        .await;
    assert!(reply.contains("subscribed again"), "{reply}");
    let id = h.s.send(&sms(from)).await;
    h.s.wait_status(&id, "sent").await;

    // Twilio retries the STOP: stored once, and the opt-out is not applied again.
    let (status, _) = h
        .twilio(
            "/webhooks/twilio/inbound",
            &inbound("SM-in-1", " Stop "),
            false,
        )
        .await;
    assert_eq!(status, 200);
    let r = h.s.post("/v1/messages", &sms(from)).await;
    assert_eq!(
        r.body["status"], "queued",
        "a replayed STOP does not undo the START"
    );

    // An ordinary reply with a picture.
    let mms = [
        ("MessageSid", "MM-in-4"),
        ("From", from),
        ("To", "+15557654321"),
        ("Body", "See photo"),
        ("NumMedia", "1"),
        ("MediaUrl0", "https://api.twilio.com/media/ME1"),
    ];
    let (status, reply) = h.twilio("/webhooks/twilio/inbound", &mms, false).await;
    assert_eq!(
        (status, reply.contains("<Message>")),
        (200, false),
        "{reply}"
    );

    let page = h.s.get("/v1/inbound?limit=2").await.body;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{page:#}");
    assert_eq!(items[0]["body"], "See photo");
    assert_eq!(
        items[0]["media_urls"],
        json!(["https://api.twilio.com/media/ME1"])
    );
    assert_eq!(items[1]["keyword"], "start");
    let after = page["next_after"].as_str().unwrap();
    let rest = h.s.get(&format!("/v1/inbound?after={after}")).await.body;
    let bodies: Vec<&str> = rest["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(
        bodies,
        ["help", " Stop "],
        "four messages, the retried STOP stored once"
    );
    let other = h.s.new_key("other").await;
    let theirs = h.s.get_as("/v1/inbound", &other).await.body;
    assert_eq!(theirs["items"], json!([]), "another tenant sees none");

    // A number blocked for another reason stays blocked through STOP and START.
    let blocked = "+15551238888";
    let put =
        h.s.put_as(
            &format!("/v1/suppressions/sms/{blocked}"),
            &h.s.key,
            &json!({ "reason": "manual" }),
        )
        .await;
    assert_eq!(put.status.as_u16(), 201, "{}", put.body);
    for (sid, body) in [("SM-in-5", "STOP"), ("SM-in-6", "START")] {
        let params = [
            ("MessageSid", sid),
            ("From", blocked),
            ("To", "+15557654321"),
            ("Body", body),
        ];
        assert_eq!(
            h.twilio("/webhooks/twilio/inbound", &params, false).await.0,
            200
        );
    }
    let r = h.s.post("/v1/messages", &sms(blocked)).await;
    assert_eq!(r.body["status"], "suppressed", "{}", r.body);
    let entry =
        h.s.get(&format!("/v1/suppressions/sms/{blocked}"))
            .await
            .body;
    assert_eq!(entry["reason"], "manual");
}

fn ses_bounce(herald_id: &str, to: &str) -> String {
    json!({ "eventType": "Bounce",
            "mail": { "messageId": "ses-1", "timestamp": Utc::now().to_rfc3339(),
                      "destination": [to], "tags": { "herald_id": [herald_id] } },
            "bounce": { "bounceType": "Permanent", "bounceSubType": "General",
                        "bouncedRecipients": [{ "emailAddress": to, "status": "5.1.1" }],
                        "timestamp": Utc::now().to_rfc3339(), "feedbackId": "fb-1" } })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sns_notifications_pass_only_when_signed_by_sns_for_an_allowed_topic() {
    let h = Hooks::start().await;
    let email = json!({ "channel": "email", "priority": "P1", "to": "ann@example.com",
                        "subject": "Hi", "body": "Hello" });
    // The sandbox sends it (and reports it delivered); SES's bounce comes later over SNS.
    let id = h.s.send(&email).await;
    h.s.wait_status(&id, "delivered").await;
    let hooks = &h;
    let post = move |v: Value| async move { hooks.post_sns(&v).await.0 };
    let bounce = ses_bounce(&id, "ann@example.com");

    let other_host = "https://sns.us-east-1.amazonaws.com.evil.example/cert.pem";
    assert_eq!(
        post(sns(
            &h.sns_key,
            1,
            "Notification",
            &bounce,
            TOPIC,
            other_host
        ))
        .await,
        401,
        "wrong host"
    );
    let other_topic = "arn:aws:sns:us-east-1:123456789012:someone-else";
    assert_eq!(
        post(sns(
            &h.sns_key,
            1,
            "Notification",
            &bounce,
            other_topic,
            CERT_URL
        ))
        .await,
        401,
        "wrong topic"
    );
    let mut tampered = sns(&h.sns_key, 2, "Notification", &bounce, TOPIC, CERT_URL);
    tampered["Message"] = json!(ses_bounce(&id, "bob@example.com"));
    assert_eq!(post(tampered).await, 401, "tampered body");
    let stranger = rsa_key();
    assert_eq!(
        post(sns(&stranger, 2, "Notification", &bounce, TOPIC, CERT_URL)).await,
        401,
        "another key"
    );
    let mut moved = sns(&h.sns_key, 2, "Notification", &bounce, TOPIC, CERT_URL);
    moved["Timestamp"] = json!((Utc::now() - chrono::Duration::minutes(6))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    assert_eq!(post(moved).await, 401, "a Timestamp changed after signing");
    assert_eq!(
        h.s.get(&format!("/v1/messages/{id}")).await.body["status"],
        "delivered",
        "nothing changed"
    );
    assert_eq!(
        h.s.get("/v1/suppressions/email/ann@example.com?scope=global")
            .await
            .status
            .as_u16(),
        404
    );

    let cert_fetches = || {
        h.sns
            .fetched
            .lock()
            .iter()
            .filter(|u| *u == CERT_URL)
            .count()
    };
    // Every refusal above fetched it anew: only a certificate that verified is kept.
    let fetched_before = cert_fetches();
    for version in [1, 2] {
        let to = format!("v{version}@example.com");
        let id = h.s.send(&json!({ "channel": "email", "priority": "P1", "to": to, "subject": "Hi", "body": "Hello" })).await;
        h.s.wait_status(&id, "delivered").await;
        let notification = sns(
            &h.sns_key,
            version,
            "Notification",
            &ses_bounce(&id, &to),
            TOPIC,
            CERT_URL,
        );
        assert_eq!(
            post(notification.clone()).await,
            200,
            "SignatureVersion {version}"
        );
        let view = h.s.wait_status(&id, "bounced").await;
        assert_eq!(post(notification).await, 200, "a replay");
        // The hard bounce's entry is added after the status change, in the background.
        h.s.poll_get(
            "/v1/suppressions?scope=global",
            &format!("a hard_bounce entry for {to}"),
            Duration::from_secs(10),
            |r| {
                r.body["items"].as_array().is_some_and(|items| {
                    items
                        .iter()
                        .any(|e| e["address"] == to && e["reason"] == "hard_bounce")
                })
            },
        )
        .await;
        // A replay would show as a second event; give it a moment to appear.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            timeline(&h.s.get(&format!("/v1/messages/{id}")).await.body),
            timeline(&view),
            "applied once"
        );
    }
    let fetched = h.sns.fetched.lock().clone();
    assert_eq!(
        cert_fetches(),
        fetched_before + 1,
        "once it verified, the certificate is fetched no more: {fetched:?}"
    );
    assert!(
        !fetched.iter().any(|u| u.contains("evil")),
        "never from another host"
    );

    // Subscription confirmations: confirmed for an allowed topic only.
    let confirm = sns(
        &h.sns_key,
        2,
        "SubscriptionConfirmation",
        "You have chosen to subscribe",
        other_topic,
        CERT_URL,
    );
    assert_eq!(post(confirm).await, 401);
    assert!(!h
        .sns
        .fetched
        .lock()
        .iter()
        .any(|u| u.contains("ConfirmSubscription")));
    let confirm = sns(
        &h.sns_key,
        1,
        "SubscriptionConfirmation",
        "You have chosen to subscribe",
        TOPIC,
        CERT_URL,
    );
    assert_eq!(post(confirm).await, 200);
    assert!(h
        .sns
        .fetched
        .lock()
        .iter()
        .any(|u| u.contains("ConfirmSubscription&Token=token-1")));

    // A genuine notification that is no SES event: 200 and ignored.
    assert_eq!(
        post(sns(
            &h.sns_key,
            2,
            "Notification",
            "{\"hello\":1}",
            TOPIC,
            CERT_URL
        ))
        .await,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postal_events_are_verified_with_the_servers_key() {
    let h = Hooks::start_with("postal", |_| {}).await;
    h.answer(
        json!({ "status": "success", "data": { "message_id": "<m1@postal>",
                     "messages": { "cat@example.com": { "id": 4711, "token": "tok" } } } }),
    )
    .await;
    let s = &h.s;
    let id = s
        .send(
            &json!({ "channel": "email", "priority": "P1", "to": "cat@example.com",
                              "subject": "Hi", "body": "Hello" }),
        )
        .await;
    let view = s.wait_status(&id, "sent").await;
    assert_eq!(view["gateway"], "postal", "{view:#}");
    let event = |name: &str, uuid: &str| {
        json!({ "event": name, "timestamp": 1_700_000_000.5, "uuid": uuid,
                "payload": { "status": "Sent", "details": "250 OK", "output": "250 OK",
                             "message": { "id": 4711, "token": "tok", "direction": "outgoing" },
                             "url": "https://acme.example/offer" } })
        .to_string()
    };
    let hooks = &h;
    let post = move |body: String, header: &'static str, key: RsaPrivateKey| async move {
        let signature = rsa_sign(&key, header == "x-postal-signature", body.as_bytes());
        hooks
            .post(
                "/webhooks/postal",
                &[("content-type", "application/json"), (header, &signature)],
                body.into_bytes(),
            )
            .await
            .0
    };
    let sent = event("MessageSent", "u-1");
    assert_eq!(
        post(sent.clone(), "x-postal-signature-256", rsa_key()).await,
        401,
        "another key"
    );
    assert_eq!(
        post(
            sent.replace("4711", "4712").replace("u-1", "u-0"),
            "x-postal-signature-256",
            h.postal_key.clone()
        )
        .await,
        200,
        "unknown message, valid: 200"
    );
    let mut bad = sent.clone();
    let signature = rsa_sign(&h.postal_key, false, bad.as_bytes());
    bad = bad.replace("250 OK", "251 OK");
    let (status, _) = h
        .post(
            "/webhooks/postal",
            &[("x-postal-signature-256", &signature)],
            bad.into_bytes(),
        )
        .await;
    assert_eq!(status, 401, "tampered body");
    assert_eq!(
        s.get(&format!("/v1/messages/{id}")).await.body["status"],
        "sent"
    );

    assert_eq!(
        post(sent.clone(), "x-postal-signature-256", h.postal_key.clone()).await,
        200
    );
    s.wait_status(&id, "delivered").await;
    // An older Postal signs with SHA-1 only.
    assert_eq!(
        post(
            event("MessageLinkClicked", "u-2"),
            "x-postal-signature",
            h.postal_key.clone()
        )
        .await,
        200
    );
    let view = s.wait_status(&id, "clicked").await;
    assert_eq!(
        post(
            event("MessageLinkClicked", "u-2"),
            "x-postal-signature",
            h.postal_key.clone()
        )
        .await,
        200
    );
    assert_eq!(
        post(
            event("DomainDNSError", "u-3"),
            "x-postal-signature-256",
            h.postal_key.clone()
        )
        .await,
        200,
        "unknown event"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        timeline(&s.get(&format!("/v1/messages/{id}")).await.body),
        timeline(&view)
    );
    assert_eq!(
        timeline(&view),
        ["queued", "sending", "sent", "delivered", "clicked"]
    );
}

fn hub_signature(body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"meta-app-secret").unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whatsapp_handshake_statuses_and_messages() {
    let h = Hooks::start().await;
    let get = |q: &str| {
        let url = format!("{}/webhooks/whatsapp?{q}", h.url);
        async move {
            let r = reqwest::get(url).await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(
        get("hub.mode=subscribe&hub.verify_token=verify-me&hub.challenge=1158201444").await,
        (200, "1158201444".into())
    );
    assert_eq!(
        get("hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1")
            .await
            .0,
        401
    );

    h.answer(json!({ "messaging_product": "whatsapp", "messages": [{ "id": "wamid.A1" }] }))
        .await;
    let id =
        h.s.send(
            &json!({ "channel": "whatsapp", "priority": "P1", "to": "+15551230005", "body": "Hi" }),
        )
        .await;
    h.s.wait_status(&id, "sent").await;
    let update = json!({ "object": "whatsapp_business_account", "entry": [{ "id": "WABA", "changes": [{
        "field": "messages",
        "value": { "messaging_product": "whatsapp",
                   "metadata": { "display_phone_number": "15550001111", "phone_number_id": "1066" },
                   "statuses": [{ "id": "wamid.A1", "status": "read", "timestamp": "1700000000", "recipient_id": "15551230005" }],
                   "messages": [{ "from": "15551230005", "id": "wamid.IN1", "timestamp": "1700000001",
                                  "type": "text", "text": { "body": "Thanks!" } }] } }] }] })
    .to_string()
    .into_bytes();
    let (status, _) = h
        .post(
            "/webhooks/whatsapp",
            &[("x-hub-signature-256", "sha256=00")],
            update.clone(),
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(
        h.s.get("/v1/inbound").await.body["items"],
        json!([]),
        "nothing stored"
    );
    let signature = hub_signature(&update);
    for _ in 0..2 {
        let (status, _) = h
            .post(
                "/webhooks/whatsapp",
                &[("x-hub-signature-256", &signature)],
                update.clone(),
            )
            .await;
        assert_eq!(status, 200);
    }
    h.s.wait_status(&id, "opened").await;
    let inbound = h.s.get("/v1/inbound").await.body;
    let items = inbound["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "stored once: {inbound:#}");
    assert_eq!(
        (
            items[0]["channel"].as_str(),
            items[0]["from"].as_str(),
            items[0]["body"].as_str()
        ),
        (Some("whatsapp"), Some("+15551230005"), Some("Thanks!"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_needs_the_secret_token() {
    let h = Hooks::start().await;
    let update = json!({ "update_id": 90001, "message": { "message_id": 5, "date": 1700000000,
                         "chat": { "id": 424242, "type": "private" }, "text": "/start" } })
    .to_string()
    .into_bytes();
    let (status, _) = h
        .post(
            "/webhooks/telegram",
            &[("x-telegram-bot-api-secret-token", "guess")],
            update.clone(),
        )
        .await;
    assert_eq!(status, 401);
    let (status, _) = h.post("/webhooks/telegram", &[], update.clone()).await;
    assert_eq!(status, 401);
    for _ in 0..2 {
        let (status, _) = h
            .post(
                "/webhooks/telegram",
                &[("x-telegram-bot-api-secret-token", "tg-secret")],
                update.clone(),
            )
            .await;
        assert_eq!(status, 200);
    }
    let items = h.s.get("/v1/inbound").await.body["items"].clone();
    assert_eq!(items.as_array().unwrap().len(), 1, "{items:#}");
    assert_eq!(
        (items[0]["from"].as_str(), items[0]["body"].as_str()),
        (Some("424242"), Some("/start"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_bodies_unconfigured_sources_and_floods_are_refused() {
    let h = Hooks::start_with("sandbox", |w| {
        w.rate_per_second = 2.0;
        w.telegram = None;
    })
    .await;
    let big = vec![b'a'; 64 * 1024 + 1];
    let (status, body) = h
        .post(
            "/webhooks/postal",
            &[("x-postal-signature-256", "AAAA")],
            big,
        )
        .await;
    assert_eq!(status, 413, "{body}");
    let (status, _) = h.post("/webhooks/telegram", &[], b"{}".to_vec()).await;
    assert_eq!(status, 404, "not configured");
    // Burst of twice the rate, then 429 with Retry-After; other sources are not affected.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(
            h.post(
                "/webhooks/whatsapp",
                &[("x-hub-signature-256", "sha256=00")],
                b"{}".to_vec(),
            )
            .await
            .0,
        );
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        2,
        "{statuses:?}"
    );
    let (status, _) = h
        .twilio(
            "/webhooks/twilio/status",
            &[("MessageSid", "SM9"), ("MessageStatus", "sent")],
            false,
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_forgeries_does_not_crowd_out_a_signed_stop() {
    let h = Hooks::start().await;
    let from = "+15551237777";
    let stop = [
        ("MessageSid", "SM-flood-stop"),
        ("From", from),
        ("To", "+15557654321"),
        ("Body", "STOP"),
    ];
    let forged_body = serde_urlencoded::to_string(stop).unwrap();
    let forged = || {
        h.post(
            "/webhooks/twilio/inbound",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("x-twilio-signature", "bm90IGEgc2lnbmF0dXJl"),
            ],
            forged_body.clone().into_bytes(),
        )
    };
    let wave = || async {
        futures::future::join_all((0..50).map(|_| forged()))
            .await
            .into_iter()
            .map(|(status, _)| status)
            .collect::<Vec<u16>>()
    };
    let mut statuses = Vec::new();
    for _ in 0..30 {
        statuses.extend(wave().await);
    }
    assert_eq!(statuses.len(), 1500);
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
    assert!(
        statuses.iter().filter(|s| **s == 429).count() > 1000,
        "the forger's own bucket ran dry"
    );
    let (status, reply) = h.twilio("/webhooks/twilio/inbound", &stop, false).await;
    assert_eq!(status, 200, "{reply}");
    assert!(reply.contains("You are unsubscribed"), "{reply}");
    let r = h.s.post("/v1/messages", &sms(from)).await;
    assert_eq!(
        r.body["status"], "suppressed",
        "the STOP took effect: {}",
        r.body
    );
    // Its bucket refills while the STOP is handled (slowly on a busy machine), so look at a
    // burst, not one request: the forger is still held back after the genuine request.
    let after = wave().await;
    assert!(
        after.contains(&429) && after.iter().all(|s| *s == 401 || *s == 429),
        "the forger is still held back after the genuine request: {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sns_retries_with_an_old_timestamp_apply_once() {
    let h = Hooks::start().await;
    let to = "late@example.com";
    let id =
        h.s.send(&json!({ "channel": "email", "priority": "P1", "to": to,
                                "subject": "Hi", "body": "Hello" }))
            .await;
    h.s.wait_status(&id, "delivered").await;
    // SNS retries for up to an hour with the first attempt's Timestamp.
    let mut retry = sns(
        &h.sns_key,
        2,
        "Notification",
        &ses_bounce(&id, to),
        TOPIC,
        CERT_URL,
    );
    retry["Timestamp"] = json!((Utc::now() - chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    sign_sns(&h.sns_key, &mut retry);
    let (status, body) = h.post_sns(&retry).await;
    assert_eq!(status, 200, "{body}");
    let view = h.s.wait_status(&id, "bounced").await;
    let (status, _) = h.post_sns(&retry).await;
    assert_eq!(status, 200, "a replay is answered");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        timeline(&h.s.get(&format!("/v1/messages/{id}")).await.body),
        timeline(&view),
        "and dropped by its MessageId"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sns_certificates_are_cached_by_normalised_url_after_they_verify() {
    let h = Hooks::start().await;
    let hooks = &h;
    let post = move |v: Value| async move { hooks.post_sns(&v).await.0 };
    let fetches = || {
        h.sns
            .fetched
            .lock()
            .iter()
            .filter(|u| *u == CERT_URL)
            .count()
    };
    let hello = "{\"hello\":1}";
    // A forgery fetches the certificate but leaves nothing cached.
    let forged = sns(&rsa_key(), 2, "Notification", hello, TOPIC, CERT_URL);
    assert_eq!(post(forged).await, 401);
    assert_eq!(fetches(), 1);
    assert_eq!(
        post(sns(&h.sns_key, 2, "Notification", hello, TOPIC, CERT_URL)).await,
        200
    );
    assert_eq!(fetches(), 2, "fetched again: the forgery cached nothing");
    for spelling in [
        "https://sns.us-east-1.amazonaws.com:443/./SimpleNotificationService-test.pem",
        "HTTPS://SNS.US-EAST-1.AMAZONAWS.COM/SimpleNotificationService-test.pem",
        "https://sns.us-east-1.amazonaws.com/x/../SimpleNotificationService-test.pem",
    ] {
        let signed = sns(&h.sns_key, 1, "Notification", hello, TOPIC, spelling);
        assert_eq!(post(signed).await, 200, "{spelling}");
    }
    assert_eq!(fetches(), 2, "every spelling is the one cached certificate");
    let fetched = h.sns.fetched.lock().clone();
    assert!(fetched.iter().all(|u| u == CERT_URL), "{fetched:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_callbacks_before_sent_is_recorded_are_parked_then_applied() {
    let h = Hooks::start().await;
    for (sid, to, path) in [
        (
            "SM0early1",
            "+15551230011",
            "/webhooks/twilio/status?herald_id=",
        ),
        // No Herald id: the message is found by its sid, which is not recorded yet either.
        ("SM0early2", "+15551230012", "/webhooks/twilio/status"),
    ] {
        // Twilio answers slowly: the message stays `sending` meanwhile. 5 s leaves a loaded
        // machine ample time for the callback and the GET below before the answer comes
        // (the gateway's HTTP timeout is 15 s, the engine's send timeout 30 s).
        h.provider.reset().await;
        Mock::given(method("POST"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({ "sid": sid, "status": "queued" }))
                    .set_delay(Duration::from_secs(5)),
            )
            .mount(&h.provider)
            .await;
        let id = h.s.send(&sms(to)).await;
        h.s.wait_status(&id, "sending").await;
        let path = if path.ends_with('=') {
            format!("{path}{id}")
        } else {
            path.to_owned()
        };
        let delivered = [("MessageSid", sid), ("MessageStatus", "delivered")];
        let (status, body) = h.twilio(&path, &delivered, false).await;
        assert_eq!(status, 200, "parked, not refused: {body}");
        let view = h.s.get(&format!("/v1/messages/{id}")).await.body;
        assert_eq!(view["status"], "sending", "{view:#}");
        // Up to 5 s of that are Twilio's delay: wait longer than `wait_status`'s 10 s.
        let view =
            h.s.wait_for(&id, Duration::from_secs(20), |st| st == "delivered")
                .await;
        assert_eq!(view["status"], "delivered", "{view:#}");
        assert_eq!(timeline(&view), ["queued", "sending", "sent", "delivered"]);
    }
}
