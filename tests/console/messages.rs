//! Message search, a message's page and cancel, and what another tenant or bad input gets.

use super::*;

#[tokio::test]
async fn search_finds_a_message_and_its_page_shows_the_timeline() {
    let s = TestServer::start().await;
    let id = s
        .send(
            &json!({ "channel": "email", "priority": "P1", "to": "reader@example.com",
                       "subject": "<b>Hello</b>", "body": "b" }),
        )
        .await;
    s.wait_status(&id, "delivered").await;
    let other = s
        .send(&json!({ "channel": "email", "priority": "P1",
                                "to": "someone@example.com", "subject": "x", "body": "b" }))
        .await;
    let mut browser = signed_in(&s, &s.key).await;

    let found = browser
        .get("/console/messages?to=reader%40example.com&status=delivered")
        .await;
    assert_eq!(found.status, StatusCode::OK);
    assert!(
        found.html.contains(&format!("/console/messages/{id}")),
        "{}",
        found.html
    );
    assert!(!found.html.contains(&other), "filtered out");
    assert!(
        found.html.contains("&lt;b&gt;Hello") && !found.html.contains("<b>Hello"),
        "escaped: {}",
        found.html
    );

    let bad = browser.get("/console/messages?status=lost").await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.html.contains("not a status"), "{}", bad.html);

    let page = browser.get(&format!("/console/messages/{id}")).await;
    assert_eq!(page.status, StatusCode::OK);
    for step in ["queued", "sending", "sent", "delivered", "sandbox"] {
        assert!(page.html.contains(step), "the timeline lacks {step}");
    }
    assert!(
        !page.html.contains("Cancel this message"),
        "delivered: nothing to cancel"
    );
}

#[tokio::test]
async fn cancel_needs_an_admin_session_and_its_token() {
    let s = TestServer::start().await;
    let id = s.send(&scheduled_email("later@example.com")).await;
    let path = format!("/console/messages/{id}");

    let reader_key = s.new_key_with("acme", "read").await;
    let mut reader = signed_in(&s, &reader_key).await;
    let page = reader.get(&path).await;
    assert!(
        !page.html.contains("Cancel this message"),
        "a reader sees no button"
    );
    let refused = reader
        .post(&format!("{path}/cancel"), &[("csrf", &page.csrf())])
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);

    let mut admin = signed_in(&s, &s.key).await;
    let page = admin.get(&path).await;
    assert!(page.html.contains("Cancel this message"));
    let forged = admin
        .post(&format!("{path}/cancel"), &[("csrf", &"a".repeat(64))])
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert_eq!(
        s.get(&format!("/v1/messages/{id}")).await.body["status"],
        "queued"
    );

    let done = admin
        .post(&format!("{path}/cancel"), &[("csrf", &page.csrf())])
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.html);
    assert_eq!(
        s.get(&format!("/v1/messages/{id}")).await.body["status"],
        "cancelled"
    );
    let page = admin.get(&path).await;
    assert!(page.html.contains("cancelled") && !page.html.contains("Cancel this message"));

    let audit = s.get("/v1/audit?action=message.cancelled").await.body;
    let prefix = s.key.split('_').nth(1).unwrap();
    assert_eq!(
        audit["items"][0]["actor"],
        format!("key:{prefix}"),
        "{audit}"
    );
}

#[tokio::test]
async fn another_tenants_message_and_bad_input_get_4xx_pages() {
    let s = TestServer::start().await;
    let theirs = s.send(&scheduled_email("private@example.com")).await;
    let other_key = s.new_key("globex").await;
    let mut stranger = signed_in(&s, &other_key).await;
    let page = stranger.get(&format!("/console/messages/{theirs}")).await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    assert!(!page.html.contains("private@example.com"));
    let own = stranger.get("/console").await;
    let cancel = stranger
        .post(
            &format!("/console/messages/{theirs}/cancel"),
            &[("csrf", &own.csrf())],
        )
        .await;
    assert_eq!(cancel.status, StatusCode::NOT_FOUND);
    assert_eq!(
        s.get(&format!("/v1/messages/{theirs}")).await.body["status"],
        "queued"
    );

    for path in ["/console/messages/not-an-id", "/console/nowhere"] {
        assert_eq!(
            stranger.get(path).await.status,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    let huge = "k".repeat(64 * 1024);
    let answer = stranger
        .post("/console/sign-in", &[("key", &huge), ("csrf", "x")])
        .await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    let no_form = stranger
        .client
        .post(format!("{}/console/sign-in", s.url))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert!(no_form.status().is_client_error(), "{}", no_form.status());
}
