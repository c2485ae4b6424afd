//! Numbers and threads: the routing simulator and the inbox.

use super::*;

#[tokio::test]
async fn the_routing_simulator_shows_its_trace_and_writes_nothing() {
    let s = TestServer::start().await;
    s.add_sandbox_numbers(&[("+15005550100", "front_desk"), ("+15005550101", "pool")])
        .await;
    let mut admin = signed_in(&s, &s.key).await;
    let page = admin.get("/console/numbers").await;
    assert!(page.html.contains("+15005550100") && page.html.contains("front_desk"));
    let csrf = page.csrf();
    let audit_before = s.get("/v1/audit").await.body["items"]
        .as_array()
        .unwrap()
        .len();

    let simulate = |to: &'static str, body: &'static str| {
        [
            ("csrf", csrf.clone()),
            ("to", to.into()),
            ("from", "+15005550199".into()),
            ("body", body.into()),
        ]
    };
    let form = simulate("+15005550100", "hello, is anyone there?");
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let result = admin.post("/console/numbers/simulate", &pairs).await;
    assert_eq!(result.status, StatusCode::OK, "{}", result.html);
    assert!(
        result.html.contains("Decision: front_desk"),
        "{}",
        result.html
    );
    assert!(
        result.html.contains("opt_out") || result.html.contains("keyword"),
        "the trace: {}",
        result.html
    );
    let form = simulate("+15005550100", "STOP");
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert!(admin
        .post("/console/numbers/simulate", &pairs)
        .await
        .html
        .contains("Decision: opt_out"));
    let form = simulate("+15005550177", "hi");
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(
        admin.post("/console/numbers/simulate", &pairs).await.status,
        StatusCode::NOT_FOUND
    );
    let bad = [
        ("csrf", csrf.as_str()),
        ("to", "+15005550100"),
        ("from", "nope"),
        ("body", "x"),
    ];
    assert_eq!(
        admin.post("/console/numbers/simulate", &bad).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let audit_after = s.get("/v1/audit").await.body["items"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(audit_before, audit_after, "the simulator writes nothing");

    let other_key = s.new_key("globex").await;
    let mut other = signed_in(&s, &other_key).await;
    let theirs = other.get("/console/numbers").await;
    assert!(!theirs.html.contains("+15005550100"));
    let form = [
        ("csrf", theirs.csrf()),
        ("to", "+15005550100".into()),
        ("from", "+15005550199".into()),
        ("body", "hi".into()),
    ];
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(
        other.post("/console/numbers/simulate", &pairs).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbox_shows_a_contacts_thread_with_its_timeline() {
    let s = TestServer::start().await;
    let ann = s
        .post(
            "/v1/contacts",
            &json!({"name": "Ann <Lee>", "identities": [{"kind": "email", "value": "ann@example.com"}]}),
        )
        .await;
    assert_eq!(ann.status, StatusCode::CREATED, "{}", ann.body);
    let sent = s
        .send(
            &json!({ "channel": "email", "priority": "P1", "to": "ann@example.com",
                       "subject": "Hi", "body": "Your flat viewing is at 5" }),
        )
        .await;
    s.wait_status(&sent, "delivered").await;

    let mut admin = signed_in(&s, &s.key).await;
    let inbox = admin.get("/console/threads").await;
    assert_eq!(inbox.status, StatusCode::OK);
    assert!(inbox.html.contains("Ann &lt;Lee&gt;"), "{}", inbox.html);
    let at = inbox.html.find("/console/threads/").expect("a thread link");
    let link = inbox.html[at..].split('"').next().unwrap().to_owned();
    let thread = admin.get(&link).await;
    assert_eq!(thread.status, StatusCode::OK);
    assert!(
        thread.html.contains("Your flat viewing is at 5"),
        "{}",
        thread.html
    );
    assert!(
        thread.html.contains(&format!("/console/messages/{sent}"))
            && thread.html.contains("delivered")
    );
    let closed = admin.get("/console/threads?status=closed").await;
    assert!(!closed.html.contains("Ann &lt;Lee&gt;"));

    // A reply from the box goes through the lanes and joins the timeline, once per form.
    let nonce_at = thread.html.find("name=\"nonce\" value=\"").unwrap() + 20;
    let nonce = thread.html[nonce_at..nonce_at + 64].to_owned();
    let reply = [
        ("csrf", thread.csrf()),
        ("nonce", nonce),
        ("channel", "email".to_owned()),
        ("subject", "Re: viewing".to_owned()),
        ("body", "Five works, see you then".to_owned()),
    ];
    let form: Vec<(&str, &str)> = reply.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let sent_reply = admin.post(&format!("{link}/reply"), &form).await;
    assert_eq!(
        sent_reply.status,
        StatusCode::SEE_OTHER,
        "{}",
        sent_reply.html
    );
    assert_eq!(
        admin.post(&format!("{link}/reply"), &form).await.status,
        StatusCode::SEE_OTHER
    );
    let to_ann = s.get("/v1/messages?to=ann%40example.com").await.body;
    assert_eq!(
        to_ann["items"].as_array().unwrap().len(),
        2,
        "one reply, not two: {to_ann}"
    );
    assert_eq!(to_ann["items"][0]["source_type"], "thread");
    assert_eq!(to_ann["items"][0]["priority"], "P1");
    let thread = admin.get(&link).await;
    assert!(
        thread.html.contains("Five works, see you then"),
        "{}",
        thread.html
    );
    let empty = [
        ("csrf", thread.csrf()),
        ("nonce", "n".repeat(64)),
        ("channel", "email".into()),
        ("body", " ".into()),
    ];
    let form: Vec<(&str, &str)> = empty.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(
        admin.post(&format!("{link}/reply"), &form).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let no_phone = [
        ("csrf", thread.csrf()),
        ("nonce", "m".repeat(64)),
        ("channel", "sms".into()),
        ("body", "hi".into()),
    ];
    let form: Vec<(&str, &str)> = no_phone.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let refused = admin.post(&format!("{link}/reply"), &form).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.html.contains("no sms identity"), "{}", refused.html);
    let reader_key = s.new_key_with("acme", "read").await;
    let mut reader = signed_in(&s, &reader_key).await;
    let page = reader.get(&link).await;
    assert!(!page.html.contains("Send reply"));
    let form = [
        ("csrf", page.csrf()),
        ("nonce", "r".repeat(64)),
        ("channel", "email".into()),
        ("body", "x".into()),
    ];
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(
        reader.post(&format!("{link}/reply"), &form).await.status,
        StatusCode::FORBIDDEN
    );

    let other_key = s.new_key("globex").await;
    let mut other = signed_in(&s, &other_key).await;
    assert!(!other.get("/console/threads").await.html.contains("Ann"));
    assert_eq!(other.get(&link).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        other.get("/console/threads/nope").await.status,
        StatusCode::NOT_FOUND
    );
}
