//! The `herald` CLI against a running server: send, bulk send from CSV with a template, status,
//! keys, and clear errors for bad input.

use std::process::Command;

use herald_tests::{herald_binary, TestServer};
use serde_json::json;

fn herald(s: &TestServer, args: &[&str]) -> std::process::Output {
    Command::new(herald_binary())
        .args(args)
        .env("HERALD_URL", &s.url)
        .env("HERALD_API_KEY", &s.key)
        .env("HERALD_LOG", "warn")
        .output()
        .expect("run herald")
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_bulk_and_status_through_the_cli() {
    let s = TestServer::start().await;

    let out = herald(
        &s,
        &[
            "send",
            "--to",
            "success@simulator.amazonses.com",
            "--subject",
            "Hi",
            "--body",
            "Hello",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sent: serde_json::Value =
        serde_json::from_str(&stdout(&out)).expect("send prints the JSON response");
    let id = sent["id"].as_str().expect("id").to_owned();
    s.wait_status(&id, "delivered").await;

    let out = herald(&s, &["status", &id]);
    assert!(out.status.success());
    let text = stdout(&out);
    for step in ["queued", "sending", "sent", "delivered"] {
        assert!(text.contains(step), "status shows {step}:\n{text}");
    }

    let template =
        json!({ "subject": "Welcome {{ name }}", "text": "Hi {{ name }} from {{ city }}" });
    let r = s.put_as("/v1/templates/welcome", &s.key, &template).await;
    assert_eq!(r.status, 201);
    let csv = s.dir.path().join("recipients.csv");
    let mut rows = String::from("to,name,city,external_id\n");
    for i in 0..25 {
        rows.push_str(&format!("user{i}@example.com,User {i},Oslo,ext-{i}\n"));
    }
    rows.push_str("not-an-address,Nobody,Nowhere,ext-bad\n");
    std::fs::write(&csv, rows).unwrap();
    let out = herald(
        &s,
        &[
            "send",
            "--bulk",
            csv.to_str().unwrap(),
            "--template",
            "welcome",
            "--priority",
            "P2",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_str(&stdout(&out)).expect("bulk prints a JSON summary");
    assert_eq!(summary["queued"], 25);
    assert_eq!(summary["rejected"][0]["index"], 25);

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while s.embedded.handoffs.lock().len() < 26 {
        assert!(
            std::time::Instant::now() < deadline,
            "bulk messages were not handed over"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let any = s
        .embedded
        .handoffs
        .lock()
        .iter()
        .map(|h| h.message_id.to_string())
        .find(|m| *m != id)
        .unwrap();
    let view = s.get(&format!("/v1/messages/{any}")).await.body;
    let n = view["external_id"]
        .as_str()
        .unwrap()
        .trim_start_matches("ext-")
        .to_owned();
    assert_eq!(view["subject"], format!("Welcome User {n}"));
    assert_eq!(view["body"], format!("Hi User {n} from Oslo"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_reports_bad_input_clearly() {
    let s = TestServer::start().await;
    let out = herald(
        &s,
        &[
            "send",
            "--to",
            "not-an-address",
            "--subject",
            "Hi",
            "--body",
            "x",
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("422") && err.contains("/to"),
        "error names the status and the field: {err}"
    );

    let out = herald(
        &s,
        &["send", "--bulk", "/nonexistent.csv", "--template", "t"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.csv"));

    let out = Command::new(herald_binary())
        .args(["serve", "--lane-workers", "P9=3"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown lane"));
    s.stop().await;
}

#[test]
fn keys_create_prints_the_key_last_and_revoke_disables_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let out = Command::new(herald_binary())
        .args(["keys", "create", "--tenant", "acme", "--data-dir", data])
        .output()
        .unwrap();
    assert!(out.status.success());
    let key = stdout(&out).lines().last().unwrap_or_default().to_owned();
    assert!(key.starts_with("hk_") && key.len() == 50, "{key}");
    let prefix = &key[3..11];
    let out = Command::new(herald_binary())
        .args(["keys", "revoke", prefix, "--data-dir", data])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(herald_binary())
        .args(["keys", "revoke", prefix, "--data-dir", data])
        .output()
        .unwrap();
    assert!(!out.status.success(), "revoking twice is an error");
    let out = Command::new(herald_binary())
        .args(["keys", "create", "--tenant", "Bad Name", "--data-dir", data])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let out = Command::new(herald_binary())
        .args([
            "keys",
            "create",
            "--tenant",
            "acme",
            "--scopes",
            "send,owner",
            "--data-dir",
            data,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("`owner` is not a scope"));
    keys_left_audit_entries(dir.path(), prefix);
}

/// The creation and the revocation of `prefix` are in the tenant's audit log, by the operator.
fn keys_left_audit_entries(data_dir: &std::path::Path, prefix: &str) {
    use herald_tests::shared::domain::audit::{Actor, AuditAction};
    use herald_tests::shared::domain::{suppression::Scope, TenantId};
    use herald_tests::shared::ports::{AuditFilter, AuditLog};
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let backend = herald_tests::shared::embedded::open_backend(data_dir).unwrap();
    let scope = Scope::Tenant(TenantId::parse("acme").unwrap());
    let page = runtime
        .block_on(backend.audit_page(&scope, &AuditFilter::default(), None, 10))
        .unwrap();
    let actions: Vec<AuditAction> = page.items.iter().map(|e| e.action).collect();
    assert_eq!(actions, [AuditAction::KeyRevoked, AuditAction::KeyCreated]);
    assert_eq!(
        page.items[1].detail,
        json!({ "scopes": "send,read,admin" }),
        "a key's scopes are in its creation entry"
    );
    let user = std::env::var("USER").unwrap_or_default();
    for e in &page.items {
        assert_eq!(e.target.as_deref(), Some(format!("key:{prefix}").as_str()));
        assert!(
            matches!(&e.actor, Actor::Cli(u) if user.is_empty() || *u == user),
            "{e:?}"
        );
    }
    backend.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_export_writes_the_tenants_log_as_csv() {
    let s = TestServer::start().await;
    for name in ["a", "b"] {
        let body = json!({ "text": "hi" });
        let r = s
            .put_as(&format!("/v1/templates/{name}"), &s.key, &body)
            .await;
        assert!(r.status.is_success(), "{}", r.body);
    }
    s.delete("/v1/templates/a").await;
    let out = herald(&s, &["audit", "export", "--action", "template.put"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = stdout(&out);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "id,at,actor,action,target,client,request_id,detail"
    );
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(lines[1].contains(",template.put,b,127.0.0.1,"), "{csv}");
    assert!(lines[2].contains(",template.put,a,"), "{csv}");
    let file = s.dir.path().join("audit.csv");
    let out = herald(&s, &["audit", "export", "-o", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = std::fs::read_to_string(&file).unwrap();
    assert!(
        written
            .lines()
            .nth(1)
            .unwrap()
            .contains(",template.deleted,a,"),
        "{written}"
    );
    let out = herald(&s, &["audit", "export", "--action", "nope"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("422"),
        "{out:?}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suppress_add_list_import_export_remove() {
    let s = TestServer::start().await;
    let out = herald(
        &s,
        &[
            "suppress",
            "add",
            "--channel",
            "sms",
            "+15005550006",
            "--reason",
            "sms_opt_out",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let entry: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(
        (entry["address"].as_str(), entry["reason"].as_str()),
        (Some("+15005550006"), Some("sms_opt_out"))
    );

    let csv = s.dir.path().join("list.csv");
    std::fs::write(
        &csv,
        "channel,address\nemail,ann@example.com\nemail,bob@example.com\n",
    )
    .unwrap();
    let out = herald(&s, &["suppress", "import", csv.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = stdout(&herald(&s, &["suppress", "list", "--channel", "email"]));
    assert_eq!(listed.lines().count(), 2, "{listed}");
    let exported = stdout(&herald(&s, &["suppress", "export"]));
    assert!(exported.starts_with("channel,address,reason"), "{exported}");
    assert_eq!(
        exported.lines().count(),
        4,
        "header and three entries: {exported}"
    );

    let out = herald(
        &s,
        &["suppress", "remove", "--channel", "sms", "+15005550006"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = s.get("/v1/suppressions/sms/%2B15005550006").await;
    assert_eq!(r.status.as_u16(), 404);
    let out = herald(&s, &["suppress", "remove", "nobody@example.com"]);
    assert!(
        !out.status.success(),
        "removing what is not there is an error"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_list_and_bulk_search_through_the_cli() {
    let s = TestServer::start().await;
    let email = |to: &str| json!({ "channel": "email", "priority": "P4", "to": to, "subject": "s", "body": "b" });
    let first = s.send(&email("ann@example.com")).await;
    let _other = s.send(&email("bob@example.com")).await;
    let second = s.send(&email("ann@example.com")).await;

    let out = herald(&s, &["messages", "list", "--to", "ann@example.com"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with(&second) && lines[1].starts_with(&first),
        "newest first: {lines:?}"
    );

    let out = herald(&s, &["messages", "list", "--json", "--max", "2"]);
    assert!(out.status.success());
    let rows: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON object per line"))
        .collect();
    assert_eq!(rows.len(), 2, "--max caps what is shown");
    assert_eq!(rows[0]["id"], second.as_str());

    let out = herald(&s, &["messages", "list", "--status", "lost"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("422") && err.contains("status"), "{err}");

    let r = s.bulk_email("P3", 5, |i| format!("b{i}@example.com")).await;
    let bulk_id = r.body["bulk_id"].as_str().expect("bulk_id").to_owned();
    let out = herald(&s, &["messages", "bulk", &bulk_id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let progress: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(progress["total"], 5, "{progress}");
    let out = herald(&s, &["messages", "bulk", "bulk_nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"));
    s.stop().await;
}

#[test]
fn audit_platform_reads_the_platform_log_from_the_store() {
    use herald_tests::shared::domain::audit::{Actor, AuditAction, AuditEntry};
    use herald_tests::shared::domain::suppression::Scope;
    use herald_tests::shared::ports::AuditLog;
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let backend = herald_tests::shared::embedded::open_backend(dir.path()).unwrap();
    let entries = [
        AuditEntry::now(Scope::Global, Actor::Anonymous, AuditAction::AccessDenied)
            .target("/v1/templates")
            .detail(json!({ "reason": "unknown key" })),
        AuditEntry::now(
            Scope::Global,
            Actor::System,
            AuditAction::GatewayHealthChanged,
        )
        .target("sandbox"),
    ];
    for e in &entries {
        runtime.block_on(backend.append(e)).unwrap();
    }
    backend.close();
    drop(runtime);
    let data = dir.path().to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["audit", "platform", "--data-dir", data];
        args.extend_from_slice(extra);
        Command::new(herald_binary()).args(&args).output().unwrap()
    };
    let out = run(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = stdout(&out);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(
        lines[1].contains(",system,gateway.health_changed,sandbox,"),
        "{csv}"
    );
    assert!(
        lines[2].contains(",anonymous,access.denied,/v1/templates,"),
        "{csv}"
    );
    assert!(lines[2].contains("unknown key"), "{csv}");
    let out = run(&["--action", "access.denied"]);
    assert_eq!(stdout(&out).lines().count(), 2);
    let out = run(&["--actor", "root"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--actor"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_import_and_relay_simulate_through_the_cli() {
    let s = TestServer::start().await;
    let csv = s.dir.path().join("numbers.csv");
    std::fs::write(
        &csv,
        "number,role,provider,capabilities,worker\n\
         +15559000000,front_desk,sandbox,sms,\n\
         +15559000001,pool,sandbox,sms|mms,\n\
         +15559000002,dedicated,sandbox,sms,+15550002002\n\
         +15559000003,pool,sandbox,fax,\n\
         +15559000001,pool,sandbox,sms,\n",
    )
    .unwrap();
    let out = herald(&s, &["numbers", "import", csv.to_str().unwrap()]);
    let text = stdout(&out);
    assert!(
        !out.status.success(),
        "a refused line fails the import: {text}"
    );
    assert!(
        text.contains("line 5: unknown capability \"fax\""),
        "{text}"
    );
    assert!(text.contains("line 6: registered already"), "{text}");
    assert!(
        text.contains("3 added, 1 registered already, 1 refused"),
        "{text}"
    );
    let listed = s.get("/v1/numbers").await;
    assert_eq!(listed.body["items"].as_array().map(Vec::len), Some(3));
    assert_eq!(
        listed.body["items"][1]["capabilities"],
        json!({"sms": true, "mms": true, "whatsapp": false})
    );

    let out = herald(
        &s,
        &[
            "relay",
            "simulate",
            "--to",
            "+15559000002",
            "--from",
            "+15550001001",
            "--body",
            "hello",
        ],
    );
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.starts_with("route: to the worker +15550002002 from +15559000002"),
        "{text}"
    );
    assert!(text.contains("4. dedicated_number"), "{text}");
    assert!(
        text.contains("yes  a dedicated number: its worker gets it"),
        "{text}"
    );
    let out = herald(
        &s,
        &[
            "relay",
            "simulate",
            "--to",
            "+15559000099",
            "--from",
            "+15550001001",
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("404"),
        "{out:?}"
    );
}
