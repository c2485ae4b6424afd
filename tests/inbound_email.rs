//! Inbound email on an embedded Herald: Postal's raw-message posts and SES's received mail
//! over SNS, each verified before anything is read from it, parsed, stored once for the tenant
//! that owns the mailbox, and threaded by the message a reply names, never into another
//! tenant's thread. Forgeries, bad bodies and oversize posts get 4xx problems.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use herald_tests::hooks::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

const ANN: &str = "ann@example.com";
const DESK: &str = "desk@acme.example";

async fn inbound(h: &Hooks, key: &str) -> Vec<Value> {
    let r = h.s.get_as("/v1/inbound", key).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["items"].as_array().unwrap().clone()
}

#[tokio::test]
async fn postal_mail_is_verified_parsed_and_stored_once_for_its_mailbox() {
    let h = Hooks::start().await;
    let raw = "From: Ann Lee <ann@example.com>\r\nTo: desk@acme.example\r\n\
        Subject: Photos\r\nMessage-ID: <m1@example.com>\r\nMIME-Version: 1.0\r\n\
        Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n\
        Content-Type: text/plain\r\n\r\nHere they are.\r\n-- \r\nAnn\r\n--b\r\n\
        Content-Type: image/png\r\nContent-Disposition: attachment; filename=\"dog.png\"\r\n\
        Content-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n--b--\r\n";
    let (body, _) = postal_raw(&h.postal_key, 41, DESK, raw);
    let json = ("content-type", "application/json");
    let forged = postal_raw(&rsa_key(), 41, DESK, raw).1;
    for headers in [
        vec![json],
        vec![json, ("x-postal-signature-256", forged.as_str())],
    ] {
        let (status, _) = h
            .post(
                "/webhooks/postal/inbound",
                &headers,
                body.clone().into_bytes(),
            )
            .await;
        assert_eq!(status, 401);
    }
    assert!(inbound(&h, &h.s.key).await.is_empty(), "nothing stored");

    assert_eq!(h.email_in(41, DESK, raw).await.0, 200);
    assert_eq!(h.email_in(41, DESK, raw).await.0, 200, "Postal's retry");
    let items = inbound(&h, &h.s.key).await;
    assert_eq!(items.len(), 1, "stored once: {items:#?}");
    let m = &items[0];
    assert_eq!(
        (m["channel"].as_str(), m["from"].as_str(), m["to"].as_str()),
        (Some("email"), Some(ANN), Some(DESK))
    );
    assert_eq!(
        m["body"], "Here they are.",
        "the signature is not the new part"
    );
    assert_eq!(m["provider_message_id"], "41#acme");
    assert_eq!(m["email"]["subject"], "Photos");
    assert_eq!(m["email"]["message_id"], "m1@example.com");
    assert_eq!(
        m["email"]["attachments"],
        json!([{ "filename": "dog.png", "content_type": "image/png", "size": 8 }])
    );
    // The sender is a contact of acme now, and the mail opened its thread.
    let threads = h.s.get("/v1/threads").await;
    assert_eq!(threads.body["items"].as_array().unwrap().len(), 1);

    // Mail for a mailbox no tenant owns is acknowledged and dropped.
    assert_eq!(h.email_in(42, "nobody@elsewhere.example", raw).await.0, 200);
    assert_eq!(inbound(&h, &h.s.key).await.len(), 1);
    // A whole domain's mailbox belongs to its tenant, who alone sees its mail.
    assert_eq!(h.email_in(43, "sales@globex.example", raw).await.0, 200);
    let globex = h.s.new_key("globex").await;
    let theirs = inbound(&h, &globex).await;
    assert_eq!(theirs.len(), 1);
    assert_eq!(
        inbound(&h, &h.s.key).await.len(),
        1,
        "acme sees only its own"
    );
    let their_id = theirs[0]["id"].as_str().unwrap();
    let peek = h.s.get(&format!("/v1/inbound/{their_id}")).await;
    assert_eq!(peek.status, StatusCode::NOT_FOUND);
    let anonymous =
        h.s.client
            .get(format!("{}/v1/inbound", h.s.url))
            .send()
            .await
            .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn bad_postal_posts_are_refused_with_problems() {
    let h = Hooks::start().await;
    let signed = |body: &str| {
        let signature = rsa_sign(&h.postal_key, false, body.as_bytes());
        (body.to_owned(), signature)
    };
    let good = raw_email(ANN, DESK, "Hi", None, "Hello");
    let cases = [
        signed("not json"),
        signed(&json!({ "rcpt_to": DESK, "message": "x" }).to_string()),
        signed(&json!({ "id": 1, "rcpt_to": DESK, "message": "***", "base64": true }).to_string()),
        signed(
            &json!({ "id": 2, "rcpt_to": DESK, "base64": true,
                        "message": STANDARD.encode("To: desk@acme.example\r\n\r\nno sender") })
            .to_string(),
        ),
    ];
    for (body, signature) in cases {
        let (status, answer) = h
            .post(
                "/webhooks/postal/inbound",
                &[("x-postal-signature-256", &signature)],
                body.clone().into_bytes(),
            )
            .await;
        assert_eq!(status, 400, "{body}: {answer}");
        let problem: Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(problem["status"], 400, "{answer}");
    }
    // Past the raw-email limit (10 MB) the body is not read at all.
    let huge = vec![b'a'; 10 * 1024 * 1024 + 1];
    let (status, _) = h
        .post(
            "/webhooks/postal/inbound",
            &[("x-postal-signature-256", "x")],
            huge,
        )
        .await;
    assert_eq!(status, 413);
    // A large message well inside it is received.
    let big = raw_email(ANN, DESK, "Big", None, &"many words ".repeat(200_000));
    assert_eq!(h.email_in(3, DESK, &big).await.0, 200);
    let items = inbound(&h, &h.s.key).await;
    assert_eq!(items.len(), 1);
    let one =
        h.s.get(&format!("/v1/inbound/{}", items[0]["id"].as_str().unwrap()))
            .await;
    assert_eq!(one.body["email"]["truncated"], true, "kept text is cut");
    assert_eq!(h.email_in(4, DESK, &good).await.0, 200);
}

#[tokio::test]
async fn ses_received_mail_comes_through_the_verified_sns_route() {
    let h = Hooks::start().await;
    let raw = raw_email("Ann <ann@example.com>", DESK, "Hello", None, "Is it free?");
    let received = json!({
        "notificationType": "Received",
        "mail": { "messageId": "ses-in-1", "source": ANN, "destination": [DESK] },
        "receipt": { "recipients": [DESK, "sales@globex.example"],
                     "action": { "type": "SNS", "encoding": "BASE64",
                                 "topicArn": TOPIC },
                     "spfVerdict": { "status": "PASS" }, "dkimVerdict": { "status": "PASS" },
                     "dmarcVerdict": { "status": "PASS" }, "spamVerdict": { "status": "PASS" },
                     "virusVerdict": { "status": "PASS" } },
        "content": STANDARD.encode(&raw),
    })
    .to_string();
    let hooks = &h;
    let post = move |v: Value| async move { hooks.post_sns(&v).await.0 };
    let forged = sns(&rsa_key(), 2, "Notification", &received, TOPIC, CERT_URL);
    assert_eq!(post(forged).await, 401);
    let genuine = sns(&h.sns_key, 2, "Notification", &received, TOPIC, CERT_URL);
    assert_eq!(post(genuine.clone()).await, 200);
    assert_eq!(post(genuine).await, 200, "SNS's retry");
    let ours = inbound(&h, &h.s.key).await;
    assert_eq!(ours.len(), 1, "{ours:#?}");
    assert_eq!(
        (
            ours[0]["gateway"].as_str(),
            ours[0]["provider_message_id"].as_str()
        ),
        (Some("ses"), Some("ses-in-1#acme"))
    );
    assert_eq!(ours[0]["body"], "Is it free?");
    assert_eq!(ours[0]["email"]["verdicts"]["dmarc"], "PASS");
    // The same mail was for globex too: it gets its own copy.
    let globex = h.s.new_key("globex").await;
    let theirs = inbound(&h, &globex).await;
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0]["provider_message_id"], "ses-in-1#globex");
}

#[tokio::test]
async fn a_reply_joins_only_its_own_tenants_thread() {
    let h = Hooks::start().await;
    assert_eq!(
        h.email_in(1, DESK, &raw_email(ANN, DESK, "Booking", None, "Tuesday?"))
            .await
            .0,
        200
    );
    let threads = h.s.get("/v1/threads").await;
    let thread = threads.body["items"][0]["id"].as_str().unwrap().to_owned();
    let reply =
        h.s.post(
            &format!("/v1/threads/{thread}/messages"),
            &json!({ "subject": "Re: Booking", "body": "Tuesday is free." }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    let sent = reply.body["id"].as_str().unwrap().to_owned();
    h.s.wait_status(&sent, "delivered").await;

    // Globex's mailbox gets a mail that names acme's message: it starts globex's own thread.
    let named = format!("<{sent}@herald>");
    let stranger = raw_email(
        "mallory@example.org",
        "x@globex.example",
        "Re: Booking",
        Some(&named),
        "Hi",
    );
    assert_eq!(h.email_in(2, "x@globex.example", &stranger).await.0, 200);
    let globex = h.s.new_key("globex").await;
    let theirs = inbound(&h, &globex).await;
    assert_ne!(theirs[0]["thread_id"], thread.as_str());
    let t = h.s.get(&format!("/v1/threads/{thread}")).await;
    assert_eq!(
        t.body["timeline"].as_array().unwrap().len(),
        2,
        "{}",
        t.body
    );

    // A stranger in acme's own mailbox who names the message (a forwarded copy) does not
    // join the thread, whose reply route stays Ann's.
    let forwarded = raw_email("eve@example.org", DESK, "Fwd", Some(&named), "Hijack");
    assert_eq!(h.email_in(3, DESK, &forwarded).await.0, 200);
    let eve = &inbound(&h, &h.s.key).await[0];
    assert_ne!(eve["thread_id"], thread.as_str(), "{eve:#}");
    let t = h.s.get(&format!("/v1/threads/{thread}")).await;
    assert_eq!(t.body["reply_to"], ANN, "{}", t.body);

    // A message sent in the thread to Ann's other address: her answer from there joins the
    // thread by In-Reply-To (by that address alone it would start a contact of its own), and
    // the SMTP-style id (`<id-without-dashes.attempt@domain>`) is understood too.
    let home = "ann@home.example";
    let sent =
        h.s.post(
            "/v1/messages",
            &json!({ "channel": "email", "priority": "P1", "to": home, "subject": "Re: Booking",
                     "body": "Or Wednesday?", "thread_id": thread }),
        )
        .await;
    assert_eq!(sent.status, StatusCode::ACCEPTED, "{}", sent.body);
    let sent = sent.body["id"].as_str().unwrap().to_owned();
    let simple = sent.replace('-', "");
    for (n, id) in [
        (4, format!("<{sent}@herald>")),
        (5, format!("<{simple}.1@acme.example>")),
    ] {
        let mail = raw_email(home, DESK, "Re: Booking", Some(&id), "Great");
        assert_eq!(h.email_in(n, DESK, &mail).await.0, 200);
        let m = &inbound(&h, &h.s.key).await[0];
        assert_eq!(m["thread_id"], thread.as_str(), "{m:#}");
    }
}
