//! Test harness: an embedded Herald on a temporary data directory, served over loopback HTTP,
//! with a client that speaks the API.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use shared::domain::TenantId;
use shared::embedded::{create_key, Embedded, EmbeddedConfig};

pub use shared;

pub mod aws;
pub mod console;
pub mod conversation;
pub mod hooks;
pub mod meter;
pub mod process;
pub mod receiver;
pub mod stream;

pub struct TestServer {
    pub embedded: Embedded,
    pub url: String,
    /// A key of tenant `acme`.
    pub key: String,
    pub client: reqwest::Client,
    server: tokio::task::JoinHandle<()>,
    pub dir: tempfile::TempDir,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(|_| {}).await
    }

    /// Starts with test-friendly defaults (fast callbacks, recorded hand-offs), then `tune`.
    pub async fn start_with(tune: impl FnOnce(&mut EmbeddedConfig)) -> TestServer {
        TestServer::start_in(tempfile::tempdir().expect("temp dir"), tune).await
    }

    /// Stops this server and starts another on the same data directory, as a restart does.
    pub async fn restart_with(self, tune: impl FnOnce(&mut EmbeddedConfig)) -> TestServer {
        self.server.abort();
        self.embedded.shutdown().await;
        TestServer::start_in(self.dir, tune).await
    }

    async fn start_in(
        dir: tempfile::TempDir,
        tune: impl FnOnce(&mut EmbeddedConfig),
    ) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let mut cfg = EmbeddedConfig::new(dir.path());
        cfg.sandbox.record_handoffs = true;
        cfg.sandbox.callback_delay = Duration::from_millis(5);
        cfg.engine.idle_poll = Duration::from_millis(20);
        // Unsubscribe links point here, as `herald serve` points them at its bind address.
        cfg.engine.unsubscribe.base_url = Some(url.clone());
        tune(&mut cfg);
        let embedded = Embedded::start(cfg).await.expect("embedded herald starts");
        let router = embedded.router();
        // Peers' addresses reach handlers as `herald serve` gives them (the audit log's client).
        let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, service).await;
        });
        let mut s = TestServer {
            embedded,
            url,
            key: String::new(),
            client: reqwest::Client::new(),
            server,
            dir,
        };
        s.key = s.new_key("acme").await;
        s
    }

    /// Serves the provider webhook routes (Twilio, WhatsApp, ...) on a port of their own, as
    /// `herald serve` does beside the API; returns their base URL.
    pub async fn serve_provider_webhooks(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let router = shared::webhooks::router(self.embedded.webhooks.clone());
        tokio::spawn(async move {
            let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
            let _ = axum::serve(listener, service).await;
        });
        url
    }

    pub async fn new_key(&self, tenant: &str) -> String {
        self.new_key_with(tenant, "send,read,admin").await
    }

    /// A key with only `scopes` (comma-separated).
    pub async fn new_key_with(&self, tenant: &str, scopes: &str) -> String {
        let tenant = TenantId::parse(tenant).expect("tenant name");
        let scopes = shared::domain::KeyScopes::parse(scopes).expect("scopes");
        create_key(self.embedded.herald.tenants.as_ref(), &tenant, scopes)
            .await
            .expect("create key")
            .expose()
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Reply {
        let mut req = self.client.request(method, format!("{}{}", self.url, path));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        for (h, v) in headers {
            req = req.header(*h, *v);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let res = req.send().await.expect("request reaches the server");
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.bytes().await.expect("response body");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.post_with(path, &self.key, &[], body).await
    }

    pub async fn post_with(
        &self,
        path: &str,
        key: &str,
        headers: &[(&str, &str)],
        body: &Value,
    ) -> Reply {
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        self.request(
            reqwest::Method::POST,
            path,
            Some(key),
            &all,
            Some(body.to_string().into_bytes()),
        )
        .await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.request(reqwest::Method::GET, path, Some(&self.key), &[], None)
            .await
    }

    pub async fn get_as(&self, path: &str, key: &str) -> Reply {
        self.request(reqwest::Method::GET, path, Some(key), &[], None)
            .await
    }

    pub async fn put_as(&self, path: &str, key: &str, body: &Value) -> Reply {
        let headers = [("content-type", "application/json")];
        self.request(
            reqwest::Method::PUT,
            path,
            Some(key),
            &headers,
            Some(body.to_string().into_bytes()),
        )
        .await
    }

    pub async fn delete_as(&self, path: &str, key: &str) -> Reply {
        self.request(reqwest::Method::DELETE, path, Some(key), &[], None)
            .await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.request(reqwest::Method::DELETE, path, Some(&self.key), &[], None)
            .await
    }

    /// `POST /v1/suppressions/import` of `csv`, as the tenant of `key`.
    pub async fn import_suppressions(&self, key: &str, csv: &str) -> Reply {
        let headers = [("content-type", "text/csv")];
        let body = Some(csv.as_bytes().to_vec());
        self.request(
            reqwest::Method::POST,
            "/v1/suppressions/import",
            Some(key),
            &headers,
            body,
        )
        .await
    }

    /// Adds relay numbers on the sandbox provider: (number, role) each.
    pub async fn add_sandbox_numbers(&self, numbers: &[(&str, &str)]) {
        for (number, role) in numbers {
            let body = serde_json::json!({"number": number, "role": role, "provider": "sandbox"});
            let r = self.post("/v1/numbers", &body).await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        }
    }

    /// Sends one message and returns its id; panics unless it was accepted.
    pub async fn send(&self, body: &Value) -> String {
        let r = self.post("/v1/messages", body).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "send refused: {}", r.body);
        r.body["id"].as_str().expect("id").to_owned()
    }

    /// A bulk email ("News") to `count` addresses made by `address(i)`, on `priority`.
    pub async fn bulk_email(
        &self,
        priority: &str,
        count: usize,
        address: impl Fn(usize) -> String,
    ) -> Reply {
        let recipients: Vec<Value> = (0..count)
            .map(|i| serde_json::json!({ "to": address(i) }))
            .collect();
        let body = serde_json::json!({ "channel": "email", "priority": priority, "subject": "News",
                                       "body": "News", "recipients": recipients });
        self.post("/v1/messages/bulk", &body).await
    }

    /// One entry of `GET /v1/stats/channels`.
    pub async fn channel_stats(&self, channel: &str, gateway: &str) -> Value {
        let stats = self.get("/v1/stats/channels").await.body;
        stats["channels"]
            .as_array()
            .and_then(|all| {
                all.iter()
                    .find(|c| c["channel"] == channel && c["gateway"] == gateway)
                    .cloned()
            })
            .unwrap_or_else(|| panic!("no {channel}/{gateway} in {stats:#}"))
    }

    /// Polls a message until `done(status)` or the timeout; returns the last view.
    pub async fn wait_for(
        &self,
        id: &str,
        timeout: Duration,
        done: impl Fn(&str) -> bool,
    ) -> Value {
        let path = format!("/v1/messages/{id}");
        let (r, _) = self
            .poll(&path, timeout, |r| {
                assert_eq!(r.status, StatusCode::OK, "GET message: {}", r.body);
                done(r.body["status"].as_str().unwrap_or(""))
            })
            .await;
        r.body
    }

    /// Polls `GET path` until `done(reply)` holds (up to `timeout`); returns that reply, or
    /// panics naming `what` with the last reply's status and body.
    pub async fn poll_get(
        &self,
        path: &str,
        what: &str,
        timeout: Duration,
        done: impl Fn(&Reply) -> bool,
    ) -> Reply {
        let (r, held) = self.poll(path, timeout, done).await;
        assert!(
            held,
            "GET {path} never showed {what} within {timeout:?}; last reply {}: {:#}",
            r.status, r.body
        );
        r
    }

    /// `GET path` every 20 ms until `done(reply)` holds or `timeout` passes: the last reply,
    /// and whether it held.
    async fn poll(
        &self,
        path: &str,
        timeout: Duration,
        done: impl Fn(&Reply) -> bool,
    ) -> (Reply, bool) {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.get(path).await;
            if done(&r) {
                return (r, true);
            }
            if Instant::now() > deadline {
                return (r, false);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn wait_status(&self, id: &str, status: &str) -> Value {
        let view = self
            .wait_for(id, Duration::from_secs(10), |s| s == status)
            .await;
        assert_eq!(
            view["status"], status,
            "message never became {status}: {view:#}"
        );
        view
    }

    /// How many times the sandbox took this message.
    pub fn handoffs_of(&self, id: &str) -> usize {
        self.embedded
            .handoffs
            .lock()
            .iter()
            .filter(|h| h.message_id.to_string() == id)
            .count()
    }

    pub async fn stop(self) {
        self.server.abort();
        self.embedded.shutdown().await;
    }
}

/// An IANA zone where it is now 02:00-02:59 local time, and its offset from UTC in hours
/// (`Etc/GMT±n` has the opposite sign of its offset): quiet hours hold a text sent there.
pub fn a_zone_at_night() -> (String, i64) {
    let hour = i64::from(chrono::Timelike::hour(&chrono::Utc::now()));
    // Local hour = UTC hour + offset.
    let offset = (2 - hour).rem_euclid(24);
    let offset = if offset > 12 { offset - 24 } else { offset };
    let name = match offset {
        0 => "Etc/GMT".to_owned(),
        o if o > 0 => format!("Etc/GMT-{o}"),
        o => format!("Etc/GMT+{}", -o),
    };
    (name, offset)
}

/// The event types of a message view, oldest first.
pub fn timeline(view: &Value) -> Vec<String> {
    view["events"]
        .as_array()
        .map(|evs| {
            evs.iter()
                .filter_map(|e| e["type"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits (up to a minute) until a `herald` client says on stderr that it follows its stream:
/// events from before that are not its own.
pub async fn await_following(child: &mut tokio::process::Child) {
    let stderr = child.stderr.take().expect("stderr piped");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stderr));
    let opened = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("following the stream") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(opened, Ok(true), "the client said it follows the stream");
}

/// Path of the `herald` binary, built on demand (integration tests of another package cannot
/// use CARGO_BIN_EXE_herald).
pub fn herald_binary() -> std::path::PathBuf {
    static BINARY: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BINARY.get_or_init(build_herald_binary).clone()
}

fn build_herald_binary() -> std::path::PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = std::process::Command::new(cargo);
    // --workspace: every member's features unified, as `cargo test --workspace` built
    // `shared`, so only the binary is compiled (with `-p herald`, `shared` and the AWS stack
    // are built again with herald's own features, minutes in the middle of the test run).
    build.args(["build", "--quiet", "--workspace", "--bin", "herald"]);
    // Cargo gives this test process the tests crate's own variables; a nested build that
    // inherits them looks like a changed environment to build scripts (ring watches
    // CARGO_MANIFEST_DIR) and rebuilds the TLS and AWS stack twice per test run.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        let set_for_this_crate = name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_MANIFEST_")
            || matches!(
                name.as_str(),
                "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "OUT_DIR"
            );
        if set_for_this_crate {
            build.env_remove(&name);
        }
    }
    let status = build
        .status()
        .expect("run cargo build for the herald binary");
    assert!(status.success(), "building the herald binary failed");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target")
        });
    let bin = target.join("debug").join("herald");
    assert!(bin.exists(), "herald binary not found at {}", bin.display());
    bin
}
