//! The web console over HTTP, as a browser without script uses it: sign-in and sessions, the
//! overview, message search and pages, cancel, and what a hostile or anonymous caller gets.

use std::collections::BTreeMap;

use chrono::{SecondsFormat, Utc};
use herald_tests::TestServer;
use reqwest::header::{HeaderMap, CONTENT_SECURITY_POLICY, COOKIE, LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::json;

/// A cookie-keeping client that does not follow redirects, so each answer can be checked.
struct Browser {
    base: String,
    client: reqwest::Client,
    cookies: BTreeMap<String, String>,
}

struct Page {
    status: StatusCode,
    headers: HeaderMap,
    html: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The CSRF token of the page's first form.
    fn csrf(&self) -> String {
        let at = self
            .html
            .find("name=\"csrf\" value=\"")
            .expect("a form token")
            + 19;
        self.html[at..at + 64].to_owned()
    }
}

impl Browser {
    fn new(server: &TestServer) -> Browser {
        Browser {
            base: server.url.clone(),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: BTreeMap::new(),
        }
    }

    fn cookie_header(&self) -> String {
        let pairs: Vec<String> = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        pairs.join("; ")
    }

    async fn keep(&mut self, response: reqwest::Response) -> Page {
        for raw in response.headers().get_all(SET_COOKIE) {
            let raw = raw.to_str().unwrap();
            let (pair, _) = raw.split_once(';').unwrap_or((raw, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        Page {
            status: response.status(),
            headers: response.headers().clone(),
            html: response.text().await.unwrap(),
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .header(COOKIE, self.cookie_header())
            .send()
            .await
            .unwrap();
        self.keep(response).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .header(COOKIE, self.cookie_header())
            .form(form)
            .send()
            .await
            .unwrap();
        self.keep(response).await
    }

    async fn sign_in(&mut self, key: &str) -> Page {
        let form = self.get("/console/sign-in").await;
        let csrf = form.csrf();
        self.post("/console/sign-in", &[("key", key), ("csrf", &csrf)])
            .await
    }
}

async fn signed_in(server: &TestServer, key: &str) -> Browser {
    let mut browser = Browser::new(server);
    let answer = browser.sign_in(key).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.html);
    assert_eq!(answer.location(), "/console");
    browser
}

fn scheduled_email(to: &str) -> serde_json::Value {
    let later =
        (Utc::now() + chrono::Duration::hours(1)).to_rfc3339_opts(SecondsFormat::Millis, true);
    json!({ "channel": "email", "priority": "P2", "to": to, "subject": "Later", "body": "b",
            "send_at": later })
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_sends_progress_is_shown_to_its_tenant_only() {
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
    let other_key = s.new_key("globex").await;
    let mut other = signed_in(&s, &other_key).await;
    assert_eq!(other.get(&path).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        other.get("/console/bulk/not-a-bulk").await.status,
        StatusCode::NOT_FOUND
    );
}

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

#[tokio::test]
async fn the_routing_simulator_shows_its_trace_and_writes_nothing() {
    let s = TestServer::start().await;
    for (number, role) in [("+15005550100", "front_desk"), ("+15005550101", "pool")] {
        let r = s
            .post(
                "/v1/numbers",
                &json!({"number": number, "role": role, "provider": "sandbox"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
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
