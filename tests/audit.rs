//! The audit log: each audited action leaves its row with who, what, when, from where and the
//! request id; no route changes or deletes a row; the CSV export streams 200,000 rows in
//! bounded memory.

use std::time::{Duration, Instant};

use futures::StreamExt;
use herald_tests::shared::domain::audit::{Actor, AuditAction, AuditEntry};
use herald_tests::shared::domain::suppression::Scope;
use herald_tests::shared::domain::TenantId;
use herald_tests::shared::ports::AuditFilter;
use herald_tests::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn email(to: &str) -> Value {
    json!({ "channel": "email", "priority": "P1", "to": to, "subject": "s", "body": "b" })
}

/// The tenant's audit entries through the API, newest first, every page.
async fn audit_of(s: &TestServer, key: &str, query: &str) -> Vec<Value> {
    let (mut all, mut after) = (Vec::new(), String::new());
    loop {
        let r = s
            .get_as(&format!("/v1/audit?limit=50{query}{after}"), key)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        all.extend(r.body["items"].as_array().cloned().unwrap_or_default());
        match r.body["next_after"].as_str() {
            Some(next) => after = format!("&after={next}"),
            None => return all,
        }
    }
}

/// The entry of `action` (the newest), or a panic that shows the log.
fn entry<'a>(log: &'a [Value], action: &str) -> &'a Value {
    log.iter()
        .find(|e| e["action"] == action)
        .unwrap_or_else(|| panic!("no {action} in {log:#?}"))
}

/// The platform's entries (what belongs to no tenant), newest first.
async fn platform_log(s: &TestServer) -> Vec<AuditEntry> {
    s.embedded
        .herald
        .audit
        .audit_page(&Scope::Global, &AuditFilter::default(), None, 500)
        .await
        .unwrap()
        .items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_audited_api_action_leaves_its_row() {
    let s = TestServer::start().await;
    let prefix = s.key.split('_').nth(1).unwrap().to_owned();
    let actor = format!("key:{prefix}");
    let put = s
        .put_as(
            "/v1/templates/welcome",
            &s.key,
            &json!({ "subject": "Hi", "text": "Hello" }),
        )
        .await;
    assert_eq!(put.status, StatusCode::CREATED, "{}", put.body);
    let request_id = put.headers["x-request-id"].to_str().unwrap().to_owned();
    s.delete("/v1/templates/welcome").await;
    let path = "/v1/suppressions/email/ann%40example.com";
    s.put_as(path, &s.key, &json!({})).await;
    s.delete(path).await;
    let csv = "channel,address\nemail,bob@example.com\nemail,not-an-address\n";
    let import = s.import_suppressions(&s.key, csv).await;
    assert_eq!(import.status, StatusCode::OK, "{}", import.body);
    s.put_as("/v1/sender-identities/example.com", &s.key, &json!({}))
        .await;
    s.delete("/v1/sender-identities/example.com").await;
    let mut later = email("cat@example.com");
    later["send_at"] = json!((chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339());
    let id = s.send(&later).await;
    assert_eq!(
        s.delete(&format!("/v1/messages/{id}")).await.status,
        StatusCode::OK
    );
    let redrive = s.post("/v1/dead-letters/redrive", &json!({})).await;
    assert_eq!(redrive.status, StatusCode::OK, "{}", redrive.body);

    let log = audit_of(&s, &s.key, "").await;
    let template = entry(&log, "template.put");
    assert_eq!(template["actor"], actor);
    assert_eq!(template["target"], "welcome");
    assert_eq!(template["client"], "127.0.0.1");
    assert_eq!(template["request_id"], request_id.as_str());
    assert_eq!(template["detail"]["created"], true);
    assert_eq!(entry(&log, "template.deleted")["target"], "welcome");
    assert_eq!(
        entry(&log, "suppression.added")["target"],
        "email:ann@example.com"
    );
    assert_eq!(
        entry(&log, "suppression.removed")["target"],
        "email:ann@example.com"
    );
    let imported = &entry(&log, "suppression.imported")["detail"];
    assert_eq!(
        (imported["imported"].as_u64(), imported["rejected"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(entry(&log, "sender_identity.put")["target"], "example.com");
    assert_eq!(
        entry(&log, "sender_identity.deleted")["target"],
        "example.com"
    );
    assert_eq!(entry(&log, "message.cancelled")["target"], id.as_str());
    assert_eq!(
        entry(&log, "dead_letters.redriven")["detail"]["asked"],
        "all"
    );
    assert!(log.iter().all(|e| e["actor"] == actor), "{log:#?}");
    let times: Vec<&str> = log.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert!(
        times.windows(2).all(|w| w[0] > w[1]),
        "newest first: {times:?}"
    );

    let only = audit_of(&s, &s.key, "&action=template.put").await;
    assert_eq!(only.len(), 1, "{only:#?}");
    let other = s.new_key("globex").await;
    assert!(
        audit_of(&s, &other, "").await.is_empty(),
        "a tenant sees only its own log"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_keys_and_foreign_ids_are_recorded() {
    let s = TestServer::start().await;
    let prefix = s.key.split('_').nth(1).unwrap().to_owned();
    let other = s.new_key("globex").await;
    let other_secret = other.split('_').nth(2).unwrap();
    // The right prefix with a wrong secret: in the key's tenant's log, by an anonymous caller
    // (whoever it is, it is not the key's holder), with the prefix in the detail.
    let forged = format!("hk_{prefix}_{other_secret}");
    let refused = s.get_as("/v1/suppressions", &forged).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let unknown = format!("hk_{}_{other_secret}", &other_secret[..8]);
    let refused = s.get_as("/v1/suppressions", &unknown).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let theirs = s
        .post_with("/v1/messages", &other, &[], &email("dan@example.com"))
        .await;
    let foreign = theirs.body["id"].as_str().unwrap();
    let probe = s.get(&format!("/v1/messages/{foreign}")).await;
    assert_eq!(probe.status, StatusCode::NOT_FOUND, "{}", probe.body);
    // A redrive naming it redrives nothing, and is a probe too.
    let redrive = s
        .post("/v1/dead-letters/redrive", &json!({ "ids": [foreign] }))
        .await;
    assert_eq!(redrive.body["redriven"], 0, "{}", redrive.body);
    // Another tenant's bulk send is a probe too; a bulk id no one has is not.
    let bulk = json!({ "channel": "email", "priority": "P3", "subject": "News", "body": "x",
                       "recipients": [{ "to": "b0@example.com" }] });
    let their_bulk = s.post_with("/v1/messages/bulk", &other, &[], &bulk).await;
    let their_bulk = their_bulk.body["bulk_id"].as_str().expect("bulk id");
    for id in [their_bulk, "bulk_0123456789abcdef0123456789abcdef"] {
        let probe = s.get(&format!("/v1/bulk/{id}")).await;
        assert_eq!(probe.status, StatusCode::NOT_FOUND, "{}", probe.body);
    }

    let log = audit_of(&s, &s.key, "&action=access.denied").await;
    assert_eq!(log.len(), 1, "{log:#?}");
    assert_eq!(log[0]["actor"], "anonymous");
    assert_eq!(log[0]["detail"]["key_prefix"], prefix.as_str());
    let malformed = s.get_as("/v1/suppressions", "hk_short").await;
    assert_eq!(malformed.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        log[0]["detail"]["reason"],
        "wrong secret for the key's prefix"
    );
    // The probe is recorded in the background, so the 404 takes no longer than any other.
    let deadline = Instant::now() + Duration::from_secs(10);
    let platform = loop {
        let platform = platform_log(&s).await;
        let probes = platform
            .iter()
            .filter(|e| [Some(foreign), Some(their_bulk)].contains(&e.target.as_deref()))
            .count();
        if probes == 3 || Instant::now() > deadline {
            break platform;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let denied: Vec<&AuditEntry> = platform
        .iter()
        .filter(|e| e.action == AuditAction::AccessDenied)
        .collect();
    assert_eq!(
        denied.len(),
        4,
        "the unknown key and three probes; a malformed key is only counted: {denied:#?}"
    );
    let bulk_probe = denied
        .iter()
        .find(|e| e.target.as_deref() == Some(their_bulk))
        .unwrap_or_else(|| panic!("no bulk probe in {denied:#?}"));
    assert_eq!(bulk_probe.detail["reason"], "another tenant's bulk send");
    assert_eq!(bulk_probe.actor, Actor::Key(prefix.clone()));
    assert!(
        denied
            .iter()
            .any(|e| e.actor == Actor::Anonymous && e.detail["reason"] == "unknown key"),
        "{denied:#?}"
    );
    let probes: Vec<_> = denied
        .iter()
        .filter(|e| e.target.as_deref() == Some(foreign))
        .collect();
    assert_eq!(probes.len(), 2, "the read and the redrive: {denied:#?}");
    for probe in probes {
        assert_eq!(probe.actor, Actor::Key(prefix.clone()));
        assert_eq!(probe.detail["tenant"], "acme");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn herald_records_what_it_does_by_itself() {
    let s = TestServer::start().await;
    let bounced = s.send(&email("bounce@simulator.amazonses.com")).await;
    s.wait_status(&bounced, "bounced").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = audit_of(&s, &s.key, "&actor=system").await;
        let added = log.iter().find(|e| e["action"] == "suppression.added");
        if let Some(added) = added {
            assert_eq!(added["target"], "email:bounce@simulator.amazonses.com");
            assert_eq!(added["detail"]["reason"], "hard_bounce");
            assert_eq!(added["detail"]["scope"], "global");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no automatic suppression in {log:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A global entry blocks every tenant's sends: the platform's log has it too.
    let platform = platform_log(&s).await;
    let global = platform
        .iter()
        .find(|e| e.action == AuditAction::SuppressionAdded)
        .unwrap_or_else(|| panic!("no global suppression in {platform:#?}"));
    assert_eq!(
        global.target.as_deref(),
        Some("email:bounce@simulator.amazonses.com")
    );
    assert_eq!(global.detail["tenant"], "acme");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_changes_or_deletes_an_entry() {
    let s = TestServer::start().await;
    s.put_as("/v1/templates/t", &s.key, &json!({ "text": "x" }))
        .await;
    let before = audit_of(&s, &s.key, "").await;
    let id = before[0]["id"].as_str().unwrap().to_owned();
    let body = Some(b"{}".to_vec());
    for method in [Method::PUT, Method::PATCH, Method::DELETE, Method::POST] {
        for path in [
            "/v1/audit".to_owned(),
            format!("/v1/audit/{id}"),
            "/v1/audit/export".into(),
        ] {
            let headers = [("content-type", "application/json")];
            let r = s
                .request(method.clone(), &path, Some(&s.key), &headers, body.clone())
                .await;
            assert!(
                r.status == StatusCode::METHOD_NOT_ALLOWED || r.status == StatusCode::NOT_FOUND,
                "{method} {path}: {} {}",
                r.status,
                r.body
            );
        }
    }
    assert_eq!(audit_of(&s, &s.key, "").await, before);
    let bad = s.get("/v1/audit?action=key.deleted").await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.body);
    let bad = s.get("/v1/audit?actor=root").await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.body);
    let bad = s.get("/v1/audit/export?limit=5").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    s.stop().await;
}

/// Kilobytes of this process's resident memory now (`VmRSS`).
fn rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_export_streams_200_000_rows_in_bounded_memory() {
    const ROWS: usize = 200_000;
    let s = TestServer::start().await;
    let tenant = Scope::Tenant(TenantId::parse("acme").unwrap());
    let log = s.embedded.herald.audit.clone();
    let started = Instant::now();
    futures::stream::iter(0..ROWS)
        .map(|i| {
            let entry = AuditEntry::now(tenant.clone(), Actor::System, AuditAction::TemplatePut)
                .target(format!("template-{i}"))
                .detail(json!({ "n": i }));
            let log = log.clone();
            async move { log.append(&entry).await.unwrap() }
        })
        .buffer_unordered(512)
        .collect::<Vec<()>>()
        .await;
    eprintln!("appended {ROWS} entries in {:?}", started.elapsed());

    let before = rss_kb();
    let res = s
        .client
        .get(format!("{}/v1/audit/export", s.url))
        .bearer_auth(&s.key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "text/csv; charset=utf-8");
    let (mut lines, mut bytes, mut peak, mut tail) = (0usize, 0usize, before, Vec::new());
    let mut res = res;
    let started = Instant::now();
    while let Some(chunk) = res.chunk().await.unwrap() {
        bytes += chunk.len();
        lines += chunk.iter().filter(|b| **b == b'\n').count();
        tail = chunk.to_vec();
        peak = peak.max(rss_kb());
    }
    let growth_mb = (peak.saturating_sub(before)) as f64 / 1024.0;
    eprintln!(
        "exported {lines} lines ({:.1} MB) in {:?}; RSS growth {growth_mb:.1} MB",
        bytes as f64 / 1e6,
        started.elapsed()
    );
    assert_eq!(lines, ROWS + 1, "a header and every row");
    assert!(
        String::from_utf8_lossy(&tail).contains("template-0,"),
        "the oldest row is last"
    );
    assert!(growth_mb < 50.0, "RSS grew {growth_mb:.1} MB");
    s.stop().await;
}

/// Lambda cannot stream a response and carries at most 6 MB: there an export past its cap is a
/// 422 that says how to narrow it, never a 5xx; a narrower export still answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_lambda_an_export_past_the_response_cap_is_a_422() {
    use herald_tests::shared::api::{router_with, BodyLimits};
    use tower::ServiceExt;
    let s = TestServer::start().await;
    let tenant = Scope::Tenant(TenantId::parse("acme").unwrap());
    for i in 0..100 {
        let entry = AuditEntry::now(tenant.clone(), Actor::System, AuditAction::TemplatePut)
            .target(format!("template-{i}"));
        s.embedded.herald.audit.append(&entry).await.unwrap();
    }
    let csv: String = std::iter::once("channel,address\n".to_owned())
        .chain((0..1_000).map(|i| format!("email,user{i}@example.com\n")))
        .collect();
    s.import_suppressions(&s.key, &csv).await;
    let limits = BodyLimits {
        export: Some(2_048),
        ..BodyLimits::LAMBDA
    };
    let app = router_with(s.embedded.herald.clone(), limits);
    let get = |path: &str| {
        let request = axum::http::Request::get(path)
            .header("authorization", format!("Bearer {}", s.key))
            .body(axum::body::Body::empty())
            .unwrap();
        let app = app.clone();
        async move {
            let res = app.oneshot(request).await.unwrap();
            let status = res.status();
            let body = axum::body::to_bytes(res.into_body(), 1 << 20)
                .await
                .unwrap();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
    };
    for path in ["/v1/audit/export", "/v1/suppressions/export"] {
        let (status, body) = get(path).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}: {body}");
        assert!(body.contains("export-too-large"), "{path}: {body}");
    }
    let (status, body) = get("/v1/audit/export?target=template-7").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body.lines().count(), 2, "{body}");
    s.stop().await;
}
