//! Dead letters, templates with their live preview, and bulk progress.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_and_redriven_by_an_admin() {
    let s = TestServer::start().await;
    let sms = |to: &str| json!({ "channel": "sms", "priority": "P4", "to": to, "body": "x" });
    let first = s.send(&sms("+15005550001")).await;
    let second = s.send(&sms("+15005550001")).await;
    s.wait_status(&first, "failed").await;
    s.wait_status(&second, "failed").await;

    let mut admin = signed_in(&s, &s.key).await;
    let page = admin.get("/console/dead-letters").await;
    assert!(
        page.html.contains(&first) && page.html.contains(&second),
        "{}",
        page.html
    );
    let csrf = page.csrf();

    let other_key = s.new_key("globex").await;
    let mut other = signed_in(&s, &other_key).await;
    let theirs = other.get("/console/dead-letters").await;
    assert!(!theirs.html.contains(&first));
    let probe = other
        .post(
            "/console/dead-letters/redrive",
            &[("csrf", &theirs.csrf()), ("id", &first)],
        )
        .await;
    assert_eq!(probe.status, StatusCode::SEE_OTHER);
    assert_eq!(
        s.get(&format!("/v1/messages/{first}")).await.body["attempts"],
        1
    );

    let none = admin
        .post("/console/dead-letters/redrive", &[("csrf", &csrf)])
        .await;
    assert_eq!(none.status, StatusCode::UNPROCESSABLE_ENTITY);
    let done = admin
        .post(
            "/console/dead-letters/redrive",
            &[("csrf", &csrf), ("id", &first)],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.html);
    // Back on its lane: it fails again, a second round of events on its timeline.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let view = s.get(&format!("/v1/messages/{first}")).await.body;
        if herald_tests::timeline(&view).len() >= 6 && view["status"] == "failed" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not redriven: {view:#}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let untouched = s.get(&format!("/v1/messages/{second}")).await.body;
    assert_eq!(herald_tests::timeline(&untouched).len(), 3, "{untouched:#}");
    let audit = s.get("/v1/audit?action=dead_letters.redriven").await.body;
    assert_eq!(audit["items"][0]["detail"]["redriven"], 1, "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_preview_with_the_send_engine_and_save_for_admins_only() {
    let s = TestServer::start().await;
    let mut admin = signed_in(&s, &s.key).await;
    let opened = admin.get("/console/templates?open=welcome").await;
    assert_eq!(opened.location(), "/console/templates/welcome");
    let editor = admin.get("/console/templates/welcome").await;
    assert_eq!(editor.status, StatusCode::OK);
    assert!(editor.html.contains("Not saved yet"));
    let csrf = editor.csrf();

    let form = |action: &str, subject: &str, sample: &str| {
        vec![
            ("csrf".to_owned(), csrf.clone()),
            ("subject".to_owned(), subject.to_owned()),
            (
                "text".to_owned(),
                "Dear {{ name }}, {{ plan.tier }}".to_owned(),
            ),
            ("sample".to_owned(), sample.to_owned()),
            ("action".to_owned(), action.to_owned()),
        ]
    };
    let post = |b: &mut Browser, path: &str, pairs: Vec<(String, String)>| {
        let pairs: Vec<(String, String)> = pairs;
        let path = path.to_owned();
        let client = b.client.clone();
        let url = format!("{}{path}", b.base);
        let cookie = b.cookie_header();
        async move {
            let r = client
                .post(url)
                .header(COOKIE, cookie)
                .form(&pairs)
                .send()
                .await
                .unwrap();
            (r.status(), r.text().await.unwrap())
        }
    };
    let sample = r#"{"name": "<Ann>", "plan": {"tier": "gold"}}"#;
    let (status, html) = post(
        &mut admin,
        "/console/templates/welcome",
        form("preview", "Hi {{ name }}", sample),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("Hi &lt;Ann&gt;") && html.contains("gold"),
        "{html}"
    );
    assert!(
        html.contains("<code>name</code>") && html.contains("<code>plan.tier</code>"),
        "{html}"
    );
    let (_, fragment) = post(
        &mut admin,
        "/console/templates/welcome/preview",
        form("", "Yo {{ name }}", sample),
    )
    .await;
    assert!(
        fragment.contains("Yo &lt;Ann&gt;") && !fragment.contains("<html"),
        "{fragment}"
    );

    // What sends refuse, the preview shows and saving refuses.
    let (status, html) = post(
        &mut admin,
        "/console/templates/welcome",
        form("save", "Hi {{ name", sample),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("Not saved"), "{html}");
    let endless =
        "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}";
    let (status, html) = post(
        &mut admin,
        "/console/templates/welcome/preview",
        form("", endless, "{}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("problem"), "a limit, shown: {html}");
    let (status, _) = post(
        &mut admin,
        "/console/templates/welcome",
        form("preview", "x", "[1]"),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        s.get("/v1/templates/welcome").await.status,
        StatusCode::NOT_FOUND
    );

    let (status, _) = post(
        &mut admin,
        "/console/templates/welcome",
        form("save", "Hi {{ name }}", sample),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        s.get("/v1/templates/welcome").await.body["subject"],
        "Hi {{ name }}"
    );
    let listed = admin.get("/console/templates").await;
    assert!(listed.html.contains("/console/templates/welcome"));
    let audit = s.get("/v1/audit?action=template.put").await.body;
    assert_eq!(audit["items"][0]["target"], "welcome", "{audit}");

    // A reader previews but cannot save; another tenant does not see it.
    let reader_key = s.new_key_with("acme", "read").await;
    let mut reader = signed_in(&s, &reader_key).await;
    let page = reader.get("/console/templates/welcome").await;
    assert!(page.html.contains("Hi {{ name }}") && !page.html.contains("value=\"save\""));
    let reader_form = |action: &str| {
        vec![
            ("csrf".to_owned(), page.csrf()),
            ("subject".to_owned(), "changed".to_owned()),
            ("action".to_owned(), action.to_owned()),
        ]
    };
    assert_eq!(
        post(
            &mut reader,
            "/console/templates/welcome",
            reader_form("preview")
        )
        .await
        .0,
        StatusCode::OK
    );
    assert_eq!(
        post(
            &mut reader,
            "/console/templates/welcome",
            reader_form("save")
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    let other_key = s.new_key("globex").await;
    let mut other = signed_in(&s, &other_key).await;
    assert!(!other
        .get("/console/templates")
        .await
        .html
        .contains("welcome"));
    assert!(other
        .get("/console/templates/welcome")
        .await
        .html
        .contains("Not saved yet"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_sends_are_listed_with_their_progress_to_their_tenant_only() {
    let s = TestServer::start().await;
    let reply = s
        .bulk_email("P3", 20, |i| format!("bulk{i}@example.com"))
        .await;
    let bulk_id = reply.body["bulk_id"]
        .as_str()
        .expect("a bulk id")
        .to_owned();
    let path = format!("/console/bulk/{bulk_id}");
    let mut admin = signed_in(&s, &s.key).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let page = admin.get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.html);
        if page.html.contains("20 of 20 recipients finished") {
            assert!(page.html.contains("<progress"), "{}", page.html);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", page.html);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // The list of bulk sends has it, finished, with a link to its page; the API lists it too.
    let list = admin.get("/console/bulk").await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.html);
    assert!(
        list.html
            .contains(&format!("href=\"/console/bulk/{bulk_id}\""))
            && list.html.contains("20 of 20 finished")
            && list.html.contains("1 bulk send<"),
        "{}",
        list.html
    );
    let api = s.get("/v1/bulk").await;
    assert_eq!(
        api.body["items"][0]["bulk_id"],
        bulk_id.as_str(),
        "{}",
        api.body
    );
    assert_eq!(api.body["items"][0]["recipients"], 20);

    let other_key = s.new_key("globex").await;
    let mut other = signed_in(&s, &other_key).await;
    assert_eq!(other.get(&path).await.status, StatusCode::NOT_FOUND);
    let theirs = other.get("/console/bulk").await;
    assert!(
        !theirs.html.contains(&bulk_id) && theirs.html.contains("No bulk sends"),
        "{}",
        theirs.html
    );
    let theirs = s.get_as("/v1/bulk", &other_key).await;
    assert_eq!(
        theirs.body["items"],
        serde_json::json!([]),
        "{}",
        theirs.body
    );
    assert_eq!(
        other.get("/console/bulk/not-a-bulk").await.status,
        StatusCode::NOT_FOUND
    );
}
