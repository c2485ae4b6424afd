//! The admin pages: the audit log and webhook deliveries.

use super::*;

#[tokio::test]
async fn the_audit_log_is_for_admins_filtered_and_exported() {
    let s = TestServer::start().await;
    let mut admin = signed_in(&s, &s.key).await;
    let csrf = admin.get("/console/suppressions").await.csrf();
    for address in ["a@example.com", "b@example.com"] {
        let add = [
            ("csrf", csrf.as_str()),
            ("channel", "email"),
            ("address", address),
        ];
        admin.post("/console/suppressions/add", &add).await;
    }
    let other_key = s.new_key("globex").await;
    let mut other = signed_in(&s, &other_key).await;
    let other_csrf = other.get("/console/suppressions").await.csrf();
    let add = [
        ("csrf", other_csrf.as_str()),
        ("channel", "email"),
        ("address", "secret@example.com"),
    ];
    other.post("/console/suppressions/add", &add).await;

    let page = admin.get("/console/audit?action=suppression.added").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.html.contains("email:a@example.com") && page.html.contains("email:b@example.com"));
    assert!(
        !page.html.contains("secret@example.com"),
        "another tenant's entry"
    );
    let prefix = s.key.split('_').nth(1).unwrap();
    assert!(page.html.contains(&format!("key:{prefix}")));

    let export = admin
        .get("/console/audit/export?action=suppression.added")
        .await;
    assert_eq!(export.status, StatusCode::OK);
    let lines: Vec<&str> = export.html.lines().collect();
    assert_eq!(
        lines[0],
        "id,at,actor,action,target,client,request_id,detail"
    );
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines.iter().all(|l| !l.contains("secret@example.com")));

    let bad = admin.get("/console/audit?action=nothing.such").await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    let reader_key = s.new_key_with("acme", "read").await;
    let mut reader = signed_in(&s, &reader_key).await;
    assert_eq!(
        reader.get("/console/audit").await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        reader.get("/console/audit/export").await.status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_deliveries_show_their_attempts_and_replay_for_admins() {
    let s = TestServer::start_with(|cfg| {
        cfg.engine.notify.policy.allow_loopback = true;
        cfg.engine.notify.poll = std::time::Duration::from_millis(20);
    })
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let hook = format!("http://{host}/hook");
    let app = axum::Router::new().route("/hook", axum::routing::post(|| async { "thanks" }));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let ep = s
        .post(
            "/v1/webhook-endpoints",
            &json!({ "url": hook, "event_types": ["message.queued"] }),
        )
        .await;
    assert_eq!(ep.status, StatusCode::CREATED, "{}", ep.body);
    let ep_id = ep.body["id"].as_str().unwrap().to_owned();
    s.send(&scheduled_email("hooked@example.com")).await;

    let mut admin = signed_in(&s, &s.key).await;
    let list = admin.get("/console/webhooks").await;
    assert!(list.html.contains(&host), "{}", list.html);
    let path = format!("/console/webhooks/{ep_id}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let page = loop {
        let page = admin.get(&path).await;
        if page.html.contains("thanks") {
            break page;
        }
        assert!(std::time::Instant::now() < deadline, "{}", page.html);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(
        page.html.contains("message.queued") && page.html.contains("200"),
        "{}",
        page.html
    );
    let at = page.html.find("/console/webhooks/deliveries/").unwrap();
    let action = page.html[at..].split('"').next().unwrap().to_owned();
    let replayed = admin.post(&action, &[("csrf", &page.csrf())]).await;
    assert_eq!(replayed.status, StatusCode::SEE_OTHER, "{}", replayed.html);
    assert_eq!(replayed.location(), path);
    let audit = s
        .get("/v1/audit?action=webhook_deliveries.replayed")
        .await
        .body;
    assert_eq!(audit["items"][0]["target"], ep_id.as_str(), "{audit}");

    let reader_key = s.new_key_with("acme", "read").await;
    let mut reader = signed_in(&s, &reader_key).await;
    assert_eq!(reader.get(&path).await.status, StatusCode::FORBIDDEN);
    let other_key = s.new_key("globex").await;
    let mut other = signed_in(&s, &other_key).await;
    assert_eq!(other.get(&path).await.status, StatusCode::NOT_FOUND);
    assert!(!other.get("/console/webhooks").await.html.contains(&host));
    let other_csrf = other.get("/console").await.csrf();
    let forged = other.post(&action, &[("csrf", &other_csrf)]).await;
    assert_eq!(forged.status, StatusCode::NOT_FOUND);
}
