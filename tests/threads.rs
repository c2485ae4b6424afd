//! Threads on the embedded backend, through signed provider webhooks and the API: a
//! conversation over SMS, email and WhatsApp with one contact is one thread with its timeline
//! in order and its unread count right; replies go through the lanes and join the thread;
//! other tenants and anonymous callers see nothing; bad input is a 4xx problem.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use herald_tests::conversation::{
    email_in, only_thread, patch, sms_in, start, start_tuned, whatsapp_in, ACME_MAILBOX, ANN,
};
use herald_tests::hooks::raw_email;

#[tokio::test]
async fn a_conversation_over_three_channels_is_one_thread() {
    let (s, hooks) = start().await;
    let ann = s
        .post(
            "/v1/contacts",
            &json!({"name": "Ann", "identities": [{"kind": "phone", "value": ANN},
                                                  {"kind": "email", "value": "ann@example.com"}]}),
        )
        .await;
    assert_eq!(ann.status, StatusCode::CREATED, "{}", ann.body);

    sms_in(&s, &hooks, "SM-c1", ANN, "Is the flat still free?").await;
    sms_in(&s, &hooks, "SM-c1", ANN, "Is the flat still free?").await;
    let thread = only_thread(&s).await;
    assert_eq!(thread["contact_id"], ann.body["id"]);
    assert_eq!(
        (thread["unread"].as_u64(), thread["reply_channel"].as_str()),
        (Some(1), Some("sms"))
    );
    let id = thread["id"].as_str().unwrap().to_owned();

    let reply = s
        .post(
            &format!("/v1/threads/{id}/messages"),
            &json!({"channel": "email", "subject": "The flat", "body": "Yes, come and see it."}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    let sent = reply.body["id"].as_str().unwrap().to_owned();
    let emailed = sent.clone();
    let message = s.wait_status(&sent, "delivered").await;
    assert_eq!(message["to"], "ann@example.com");
    assert_eq!(message["priority"], "P1");

    whatsapp_in(&s, &hooks, "wamid.c2", "Sent you photos of my dog").await;
    let t = s.get(&format!("/v1/threads/{id}")).await;
    assert_eq!(t.status, StatusCode::OK, "{}", t.body);
    let timeline: Vec<(String, String)> = t.body["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["direction"].as_str().unwrap().into(),
                e["channel"].as_str().unwrap().into(),
            )
        })
        .collect();
    let expected = [
        ("inbound", "sms"),
        ("outbound", "email"),
        ("inbound", "whatsapp"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(d, c)| (d.to_string(), c.to_string()))
        .collect();
    assert_eq!(timeline, expected, "{}", t.body);
    assert_eq!(t.body["timeline"][1]["status"], "delivered");
    assert_eq!(t.body["timeline"][1]["message_id"], sent.as_str());
    assert_eq!(
        (t.body["unread"].as_u64(), t.body["reply_channel"].as_str()),
        (Some(2), Some("whatsapp"))
    );

    // A reply with no channel goes where Ann last wrote.
    let reply = s
        .post(
            &format!("/v1/threads/{id}/messages"),
            &json!({"body": "Lovely dog!"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    let message = s
        .wait_status(reply.body["id"].as_str().unwrap(), "delivered")
        .await;
    assert_eq!(
        (message["channel"].as_str(), message["to"].as_str()),
        (Some("whatsapp"), Some(ANN))
    );

    // A send that names the thread joins it; another tenant's thread is refused.
    let sent = s
        .post(
            "/v1/messages",
            &json!({"channel": "sms", "priority": "P2", "to": ANN, "body": "Reminder: Monday 10:00",
                    "thread_id": id}),
        )
        .await;
    assert_eq!(sent.status, StatusCode::ACCEPTED, "{}", sent.body);
    let t = s.get(&format!("/v1/threads/{id}")).await;
    assert_eq!(
        t.body["timeline"][4]["message_id"], sent.body["id"],
        "{}",
        t.body
    );
    assert_eq!(t.body["timeline"][4]["body"], "Reminder: Monday 10:00");
    let globex = s.new_key("globex").await;
    let theirs = s
        .post_with(
            "/v1/messages",
            &globex,
            &[],
            &json!({"channel": "sms", "priority": "P2", "to": ANN, "body": "x", "thread_id": id}),
        )
        .await;
    assert_eq!(
        theirs.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        theirs.body
    );
    assert_eq!(theirs.body["errors"][0]["pointer"], "/thread_id");

    let read = s.post(&format!("/v1/threads/{id}/read"), &json!({})).await;
    assert_eq!(read.body["unread"], 0, "{}", read.body);
    let changed = patch(
        &s,
        &format!("/v1/threads/{id}"),
        &s.key,
        &json!({"status": "snoozed", "assignee": "agent-7", "label": "viewing",
                "next_step": "show the flat", "next_followup_at": "2030-01-01T09:00:00Z"}),
    )
    .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
    assert_eq!(changed.body["insights"]["label"], "viewing");
    assert!(changed.body["insights"]["set_by"]
        .as_str()
        .unwrap()
        .starts_with("key:"));
    for (query, found) in [
        ("status=snoozed", 1),
        ("status=open", 0),
        ("label=viewing&assignee=agent-7", 1),
        ("unread=true", 0),
        ("channel=whatsapp", 1),
        ("followup_due_before=2031-01-01T00:00:00Z", 1),
        ("followup_due_before=2029-01-01T00:00:00Z", 0),
    ] {
        let r = s.get(&format!("/v1/threads?{query}")).await;
        assert_eq!(r.status, StatusCode::OK, "{query}: {}", r.body);
        assert_eq!(
            r.body["items"].as_array().map(Vec::len),
            Some(found),
            "{query}: {}",
            r.body
        );
    }
    // Ann writes again: the snoozed thread opens.
    sms_in(&s, &hooks, "SM-c3", ANN, "When can I come?").await;
    let t = only_thread(&s).await;
    assert_eq!(
        (t["status"].as_str(), t["unread"].as_u64()),
        (Some("open"), Some(1))
    );

    // Ann answers the email; its In-Reply-To names Herald's message, sent to her, so it
    // joins this thread. Postal's retry of it is stored once.
    let raw = raw_email(
        "Ann Lee <ann@example.com>",
        ACME_MAILBOX,
        "Re: The flat",
        Some(&format!("<{emailed}@herald>")),
        "Saturday suits me.\n\nOn Mon, 30 Nov 2026, Acme <desk@acme.example> wrote:\n> Yes, come and see it.",
    );
    email_in(&s, &hooks, 9001, &raw).await;
    email_in(&s, &hooks, 9001, &raw).await;
    let t = only_thread(&s).await;
    assert_eq!(
        (t["id"].as_str(), t["unread"].as_u64()),
        (Some(id.as_str()), Some(2))
    );
    let t = s.get(&format!("/v1/threads/{id}")).await;
    let last = t.body["timeline"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(
        (
            last["direction"].as_str(),
            last["channel"].as_str(),
            last["body"].as_str()
        ),
        (Some("inbound"), Some("email"), Some("Saturday suits me.")),
        "{}",
        t.body
    );
    assert_eq!(t.body["reply_channel"], "email");
    let inbound = s.get("/v1/inbound").await;
    let newest = &inbound.body["items"][0];
    assert_eq!(newest["thread_id"], id.as_str(), "{}", inbound.body);
    assert_eq!(newest["email"]["subject"], "Re: The flat");
    assert_eq!(
        newest["email"]["text"],
        Value::Null,
        "lists leave the whole text out"
    );
    let one = s
        .get(&format!("/v1/inbound/{}", newest["id"].as_str().unwrap()))
        .await;
    assert!(one.body["email"]["text"]
        .as_str()
        .unwrap()
        .contains("> Yes, come"));
    assert_eq!(
        inbound.body["items"].as_array().unwrap().len(),
        4,
        "{}",
        inbound.body
    );
}

#[tokio::test]
async fn strangers_get_threads_and_lists_page_by_activity() {
    let (s, hooks) = start().await;
    for (i, from) in ["+15550000001", "+15550000002", "+15550000003"]
        .iter()
        .enumerate()
    {
        sms_in(&s, &hooks, &format!("SM-p{i}"), from, "hello").await;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let first = s.get("/v1/threads?limit=2").await;
    assert_eq!(first.body["items"].as_array().map(Vec::len), Some(2));
    assert_eq!(first.body["items"][0]["reply_to"], "+15550000003");
    let after = first.body["next_after"].as_str().unwrap();
    let rest = s.get(&format!("/v1/threads?limit=2&after={after}")).await;
    assert_eq!(rest.status, StatusCode::OK, "{}", rest.body);
    assert_eq!(rest.body["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(rest.body["items"][0]["reply_to"], "+15550000001");
    let contact = rest.body["items"][0]["contact_id"].as_str().unwrap();
    let c = s.get(&format!("/v1/contacts/{contact}")).await;
    assert_eq!(
        c.body["identities"][0]["value"], "+15550000001",
        "{}",
        c.body
    );
}

#[tokio::test]
async fn threads_are_their_tenants_own_and_bad_input_is_refused() {
    let (s, hooks) = start().await;
    sms_in(&s, &hooks, "SM-i1", ANN, "hi").await;
    let id = only_thread(&s).await["id"].as_str().unwrap().to_owned();
    let globex = s.new_key("globex").await;
    let path = format!("/v1/threads/{id}");
    assert_eq!(s.get_as(&path, &globex).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        s.get_as("/v1/threads", &globex).await.body["items"],
        json!([])
    );
    let r = patch(&s, &path, &globex, &json!({"label": "x"})).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    for tail in ["read", "messages"] {
        let r = s
            .post_with(
                &format!("{path}/{tail}"),
                &globex,
                &[],
                &json!({"body": "x"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{tail}");
    }
    let anonymous = s.request(Method::GET, &path, None, &[], None).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let reader = s.new_key_with("acme", "read").await;
    let r = s
        .post_with(
            &format!("{path}/messages"),
            &reader,
            &[],
            &json!({"body": "x"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "a read key does not reply");
    assert_eq!(only_thread(&s).await["insights"]["label"], Value::Null);

    for (body, pointer) in [
        (json!({"label": "x".repeat(201)}), "/label"),
        (json!({"assignee": "a\nb"}), "/assignee"),
        (json!({"set_by": ""}), "/set_by"),
        (json!({"status": "archived"}), "/status"),
    ] {
        let r = patch(&s, &path, &s.key, &body).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            r.body
        );
        assert_eq!(r.headers["content-type"], "application/problem+json");
        assert_eq!(r.body["errors"][0]["pointer"], pointer, "{}", r.body);
    }
    let r = patch(&s, &path, &s.key, &json!({"colour": "red"})).await;
    assert!(r.status.is_client_error());
    for query in [
        "unread=maybe",
        "after=zzz",
        "status=lost",
        "limit=0",
        "colour=red",
    ] {
        let r = s.get(&format!("/v1/threads?{query}")).await;
        assert!(r.status.is_client_error(), "{query}: {}", r.status);
    }
    assert_eq!(
        s.get("/v1/threads/not-an-id").await.status,
        StatusCode::NOT_FOUND
    );
    let r = s
        .post(
            &format!("{path}/messages"),
            &json!({"channel": "push", "body": "x"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert_eq!(r.body["errors"][0]["pointer"], "/channel");
    let r = s
        .post(
            &format!("{path}/messages"),
            &json!({"channel": "email", "body": "x"}),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "no email identity: {}",
        r.body
    );
    let r = s.post(&format!("{path}/messages"), &json!({})).await;
    assert_eq!(
        r.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "no content: {}",
        r.body
    );
}

/// `thread.followup_due` reaches a subscribed endpoint once when the follow-up time passes,
/// and not again after a restart.
#[tokio::test]
async fn a_followup_is_announced_once_also_across_a_restart() {
    let tune = |cfg: &mut herald_tests::shared::embedded::EmbeddedConfig| {
        cfg.engine.followup_interval = std::time::Duration::from_millis(50);
        let n = &mut cfg.engine.notify;
        n.policy.allow_loopback = true;
        n.poll = std::time::Duration::from_millis(20);
    };
    let (s, hooks) = start_tuned(tune).await;
    let rx = herald_tests::receiver::Receiver::start("");
    let ep = s
        .post(
            "/v1/webhook-endpoints",
            &json!({ "url": rx.url, "event_types": ["thread.followup_due"] }),
        )
        .await;
    assert_eq!(ep.status, StatusCode::CREATED, "{}", ep.body);
    rx.trust(&[ep.body["secret"].as_str().unwrap()]);
    sms_in(&s, &hooks, "SM-f1", ANN, "Call me back in a moment").await;
    let id = only_thread(&s).await["id"].as_str().unwrap().to_owned();
    let due = (chrono::Utc::now() + chrono::Duration::milliseconds(300)).to_rfc3339();
    let r = patch(
        &s,
        &format!("/v1/threads/{id}"),
        &s.key,
        &json!({"next_followup_at": due, "next_step": "call back", "set_by": "ai-worker"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let got = rx
        .wait_for("thread.followup_due", |reqs| !reqs.is_empty())
        .await;
    let event = &got[0]["body"];
    assert_eq!(event["type"], "thread.followup_due", "{event}");
    assert_eq!(event["data"]["thread_id"], id.as_str());
    assert_eq!(event["data"]["next_step"], "call back");
    // Delivered is recorded after the endpoint answers: restarting before that would deliver
    // it again (at least once, under the same webhook-id), which is not what this tests.
    let deliveries = format!(
        "/v1/webhook-endpoints/{}/deliveries",
        ep.body["id"].as_str().unwrap()
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while s.get(&deliveries).await.body["items"][0]["state"] != "succeeded" {
        assert!(
            std::time::Instant::now() < deadline,
            "the delivery was never recorded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let s = s.restart_with(tune).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        rx.requests().len(),
        1,
        "announced once: {:#?}",
        rx.requests()
    );
    let t = s.get(&format!("/v1/threads/{id}")).await;
    assert_eq!(t.body["insights"]["next_step"], "call back");
}

/// STOP and START work on WhatsApp as on SMS: the number is suppressed on WhatsApp (not on
/// SMS), and START lifts only what STOP set.
#[tokio::test]
async fn stop_and_start_apply_on_whatsapp() {
    let (s, hooks) = start().await;
    let entry = format!("/v1/suppressions/whatsapp/{ANN}");
    whatsapp_in(&s, &hooks, "wamid.s1", "Stop").await;
    let r = s.get(&entry).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["reason"], "unsubscribe");
    let sms = s.get(&format!("/v1/suppressions/sms/{ANN}")).await;
    assert_eq!(sms.status, StatusCode::NOT_FOUND, "SMS is another channel");
    let sent = s
        .post(
            "/v1/messages",
            &json!({"channel": "whatsapp", "priority": "P1", "to": ANN, "body": "x"}),
        )
        .await;
    assert_eq!(sent.status, StatusCode::ACCEPTED, "{}", sent.body);
    s.wait_status(sent.body["id"].as_str().unwrap(), "suppressed")
        .await;
    whatsapp_in(&s, &hooks, "wamid.s2", "START").await;
    assert_eq!(s.get(&entry).await.status, StatusCode::NOT_FOUND);
    // The keywords are in the thread's timeline like any message.
    let t = only_thread(&s).await;
    assert_eq!(t["unread"], 2);
}
