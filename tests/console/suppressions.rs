//! Suppressions: add, look up, remove own entries, import with a report, export.

use super::*;

#[tokio::test]
async fn suppressions_are_added_looked_up_and_removed_own_entries_only() {
    use shared::domain::suppression::{Reason, Scope, Suppression};
    use shared::domain::Channel;
    let s = TestServer::start().await;
    let global = Suppression {
        scope: Scope::Global,
        channel: Channel::Email,
        address: "dead@example.com".into(),
        reason: Reason::HardBounce,
        source: None,
        created_at: Utc::now(),
        expires_at: None,
    };
    let herald = &s.embedded.herald;
    herald
        .suppressions
        .put_suppressions(vec![global])
        .await
        .unwrap();
    let mut admin = signed_in(&s, &s.key).await;
    let page = admin.get("/console/suppressions").await;
    let csrf = page.csrf();

    let add = [
        ("csrf", csrf.as_str()),
        ("channel", "email"),
        ("address", "Gone@Example.com"),
        ("reason", "unsubscribe"),
    ];
    assert_eq!(
        admin.post("/console/suppressions/add", &add).await.status,
        StatusCode::SEE_OTHER
    );
    let listed = admin.get("/console/suppressions").await;
    assert!(listed.html.contains("gone@example.com") && listed.html.contains("unsubscribe"));
    let api = s.get("/v1/suppressions/email/gone@example.com").await;
    assert_eq!(api.body["source"], "console", "{}", api.body);

    let bad = [
        ("csrf", csrf.as_str()),
        ("channel", "email"),
        ("address", "not an address"),
    ];
    let refused = admin.post("/console/suppressions/add", &bad).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);

    let found = admin
        .get("/console/suppressions?channel=email&address=dead%40example.com")
        .await;
    assert!(found.html.contains("global list"), "{}", found.html);

    // Another tenant sees none of acme's entries and cannot remove them.
    let other_key = s.new_key("globex").await;
    let mut other = signed_in(&s, &other_key).await;
    let theirs = other.get("/console/suppressions").await;
    assert!(!theirs.html.contains("gone@example.com"));
    let remove = |csrf: &str| {
        vec![
            ("csrf".to_owned(), csrf.to_owned()),
            ("channel".to_owned(), "email".to_owned()),
            ("address".to_owned(), "gone@example.com".to_owned()),
        ]
    };
    let pairs = remove(&theirs.csrf());
    let form: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        other
            .post("/console/suppressions/remove", &form)
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    let global_remove = [
        ("csrf", csrf.as_str()),
        ("channel", "email"),
        ("address", "dead@example.com"),
    ];
    let kept = admin
        .post("/console/suppressions/remove", &global_remove)
        .await;
    assert_eq!(kept.status, StatusCode::CONFLICT);

    let pairs = remove(&csrf);
    let form: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        admin
            .post("/console/suppressions/remove", &form)
            .await
            .status,
        StatusCode::SEE_OTHER
    );
    let gone = s.get("/v1/suppressions/email/gone@example.com").await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    let audit = s.get("/v1/audit?action=suppression.removed").await.body;
    assert_eq!(
        audit["items"][0]["target"], "email:gone@example.com",
        "{audit}"
    );

    // A reader sees the list but gets no form, and a post is refused.
    let reader_key = s.new_key_with("acme", "read").await;
    let mut reader = signed_in(&s, &reader_key).await;
    let page = reader.get("/console/suppressions").await;
    assert!(!page.html.contains("Add an entry"));
    let add = [
        ("csrf", page.csrf()),
        ("channel", "email".into()),
        ("address", "x@example.com".into()),
    ];
    let form: Vec<(&str, &str)> = add.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(
        reader.post("/console/suppressions/add", &form).await.status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suppressions_import_with_a_report_and_export_as_csv() {
    let s = TestServer::start().await;
    let mut admin = signed_in(&s, &s.key).await;
    let csrf = admin.get("/console/suppressions").await.csrf();
    let csv = "channel,address,reason\nemail,One@Example.com,complaint\nsms,not-a-number,\nemail,two@example.com,\nfax,x,manual\n";
    let report = admin
        .post(
            "/console/suppressions/import",
            &[("csrf", csrf.as_str()), ("csv", csv)],
        )
        .await;
    assert_eq!(report.status, StatusCode::OK, "{}", report.html);
    assert!(
        report.html.contains("2 new entries imported"),
        "{}",
        report.html
    );
    assert!(report.html.contains("2 lines refused"), "{}", report.html);
    assert!(
        report.html.contains("<td>3</td>") && report.html.contains("<td>5</td>"),
        "{}",
        report.html
    );
    let audit = s.get("/v1/audit?action=suppression.imported").await.body;
    assert_eq!(audit["items"][0]["detail"]["rejected"], 2, "{audit}");

    let no_header = admin
        .post(
            "/console/suppressions/import",
            &[("csrf", csrf.as_str()), ("csv", "a,b\n1,2\n")],
        )
        .await;
    assert_eq!(no_header.status, StatusCode::UNPROCESSABLE_ENTITY);

    let export = admin.get("/console/suppressions/export").await;
    assert_eq!(export.status, StatusCode::OK);
    assert!(export.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let lines: Vec<&str> = export.html.lines().collect();
    assert_eq!(
        lines[0],
        "channel,address,reason,expires_at,source,created_at"
    );
    assert!(
        lines[1].starts_with("email,one@example.com,complaint,,console,"),
        "{lines:?}"
    );
    assert_eq!(lines.len(), 3, "{lines:?}");

    let reader_key = s.new_key_with("acme", "read").await;
    let mut reader = signed_in(&s, &reader_key).await;
    let page = reader.get("/console/suppressions").await;
    assert!(!page.html.contains("/console/suppressions/import"));
    let refused = reader
        .post(
            "/console/suppressions/import",
            &[("csrf", page.csrf().as_str()), ("csv", csv)],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
}
