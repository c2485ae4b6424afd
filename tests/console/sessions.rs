//! Sign-in, sessions and the overview: what the cookie holds, the headers every page carries,
//! and what a revoked or read-less key gets.

use super::*;

#[tokio::test]
async fn signing_in_keeps_a_session_id_never_the_key() {
    let s = TestServer::start().await;
    let mut browser = Browser::new(&s);
    let anonymous = browser.get("/console").await;
    assert_eq!(anonymous.status, StatusCode::SEE_OTHER);
    assert_eq!(anonymous.location(), "/console/sign-in");
    assert_eq!(
        browser.get("/console/messages").await.location(),
        "/console/sign-in"
    );

    let form = browser.get("/console/sign-in").await;
    let csp = form.headers[CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );

    let wrong = browser
        .post(
            "/console/sign-in",
            &[("key", "hk_abcdefgh_nope"), ("csrf", &form.csrf())],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.html.contains("not"), "{}", wrong.html);
    // The right prefix with a wrong secret: refused, and recorded in the tenant's log.
    let mut forged_key = s.key.clone();
    let last = if forged_key.ends_with('a') { "b" } else { "a" };
    forged_key.replace_range(forged_key.len() - 1.., last);
    let form = browser.get("/console/sign-in").await;
    let wrong = browser
        .post(
            "/console/sign-in",
            &[("key", &forged_key), ("csrf", &form.csrf())],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let denied = s.get("/v1/audit?action=access.denied").await.body;
    assert_eq!(denied["items"][0]["target"], "/console/sign-in", "{denied}");
    assert_eq!(denied["items"][0]["actor"], "anonymous", "{denied}");

    // No sign-in token (a cross-site post): refused before the key is looked at.
    let mut stranger = Browser::new(&s);
    let forged = stranger
        .post(
            "/console/sign-in",
            &[("key", &s.key), ("csrf", &"0".repeat(64))],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);

    let answer = browser.sign_in(&s.key).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.html);
    let set: Vec<&str> = answer
        .headers
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    let session = set
        .iter()
        .find(|c| c.starts_with("herald_console="))
        .expect("a session cookie");
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Strict"),
        "{session}"
    );
    let secret = s.key.rsplit('_').next().unwrap();
    assert!(!session.contains(secret), "the key is not in the cookie");

    let overview = browser.get("/console").await;
    assert_eq!(overview.status, StatusCode::OK, "{}", overview.html);
    for text in ["Lanes", "P0", "P4", "Gateways", "sandbox", "acme"] {
        assert!(overview.html.contains(text), "overview lacks {text}");
    }
    assert!(
        !overview.html.contains(secret),
        "the key is not in the page"
    );
    let live = browser.get("/console/overview/live").await;
    assert!(
        live.html.contains("Lanes") && !live.html.contains("<html"),
        "{}",
        live.html
    );

    // Sign-out needs the page's token; afterwards the old cookie opens nothing.
    let csrf = overview.csrf();
    let cookie = browser.cookies.clone();
    assert_eq!(
        browser
            .post("/console/sign-out", &[("csrf", "x")])
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let out = browser.post("/console/sign-out", &[("csrf", &csrf)]).await;
    assert_eq!(out.location(), "/console/sign-in");
    browser.cookies = cookie;
    assert_eq!(browser.get("/console").await.location(), "/console/sign-in");
}

#[tokio::test]
async fn a_key_that_is_revoked_or_cannot_read_opens_no_session() {
    let s = TestServer::start().await;
    let send_only = s.new_key_with("acme", "send").await;
    let refused = Browser::new(&s).sign_in(&send_only).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert!(refused.html.contains("read scope"), "{}", refused.html);

    let key = s.new_key_with("acme", "read").await;
    let mut browser = signed_in(&s, &key).await;
    assert_eq!(browser.get("/console").await.status, StatusCode::OK);
    let prefix = key.split('_').nth(1).unwrap();
    assert!(s.embedded.herald.tenants.revoke_key(prefix).await.unwrap());
    assert_eq!(browser.get("/console").await.location(), "/console/sign-in");
}

/// Sends reach the overview: the chart's total and caption, the lane's sends per minute, and
/// the update time as a `<time>` in UTC for the script to show locally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_charts_the_last_hours_sends() {
    let s = TestServer::start().await;
    let mut browser = signed_in(&s, &s.key).await;
    let idle = browser.get("/console/overview/live").await;
    assert!(
        idle.html.contains("0 sent in the last hour"),
        "{}",
        idle.html
    );
    for i in 0..3 {
        let id = s
            .send(&json!({ "channel": "email", "priority": "P1",
                           "to": format!("chart{i}@example.com"), "subject": "s", "body": "b" }))
            .await;
        s.wait_for(&id, std::time::Duration::from_secs(10), |status| {
            status == "sent" || status == "delivered"
        })
        .await;
    }
    let live = browser.get("/console/overview/live").await;
    // One minute with sends, or two if the minute turned between them (then at most 2 in one).
    let bars = live.html.matches("<rect class=\"bar\"").count();
    assert!((1..=2).contains(&bars), "{bars} bars: {}", live.html);
    let most = if bars == 1 { "3" } else { "2" };
    assert!(
        live.html.contains(&format!(
            "3 sent in the last hour, at most {most} in a minute"
        )),
        "{}",
        live.html
    );
    // P1's row ends with its sends in the last minute (the minute may have just turned, which
    // still counts most of the last one's).
    let p1_row = live
        .html
        .split("<tr>")
        .find(|row| row.starts_with("<th scope=\"row\">P1</th>"))
        .expect("a P1 row");
    let rate = p1_row
        .rsplit("<td class=\"num\">")
        .next()
        .and_then(|cell| cell.split('<').next())
        .and_then(|n| n.parse::<u64>().ok())
        .expect("a rate");
    assert!((1..=3).contains(&rate), "{p1_row}");
    assert!(
        live.html.contains("Counted <time datetime=\"") && live.html.contains(" UTC\">"),
        "{}",
        live.html
    );

    // Another tenant's overview counts none of them.
    let other = s.new_key_with("globex", "read").await;
    let mut theirs = signed_in(&s, &other).await;
    let page = theirs.get("/console/overview/live").await;
    assert!(
        page.html.contains("0 sent in the last hour"),
        "{}",
        page.html
    );
}

/// `herald serve` as a process, logging everything (trace): a sign-in, a wrong key, pages and a
/// sign-out leave neither the key's secret nor the session id in its logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_or_session_id_reaches_the_logs() {
    use herald_tests::process::{create_key, Serve};
    let bin = herald_tests::herald_binary();
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let key = create_key(&bin, dir.path(), "acme");
    let serve = Serve::start_logging(
        &bin,
        dir.path(),
        logs.path().join("serve.stderr"),
        &[],
        "trace",
    )
    .await;
    let secret = key.rsplit('_').next().unwrap().to_owned();
    // The key with its last character changed (to one it is not: a random key may end in x).
    let last = if key.ends_with('x') { 'y' } else { 'x' };
    let wrong = format!("{}{last}", &key[..key.len() - 1]);
    assert_eq!(
        Browser::at(&serve.url).sign_in(&wrong).await.status,
        StatusCode::UNAUTHORIZED
    );
    let mut browser = herald_tests::console::signed_in_at(&serve.url, &key).await;
    let session = browser.cookies["herald_console"].clone();
    for page in ["/console", "/console/messages", "/console/suppressions"] {
        assert_eq!(browser.get(page).await.status, StatusCode::OK, "{page}");
    }
    let csrf = browser.get("/console").await.csrf();
    browser.post("/console/sign-out", &[("csrf", &csrf)]).await;

    let log = serve.stderr();
    assert!(log.contains("serving"), "the server's log was read: {log}");
    for (what, value) in [
        ("key", &secret),
        ("wrong key", &wrong),
        ("session id", &session),
    ] {
        assert!(
            !log.contains(value.as_str()),
            "the {what} is in the log:\n{log}"
        );
    }
    serve.kill9().await;
}
