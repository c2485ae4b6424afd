//! Provider credentials never reach a tenant, the database or the logs. `herald serve` runs as
//! a real process with every provider gateway configured with a recognisable secret, and each
//! gateway is made to fail in every way a test can provoke: nothing listening, refusals and
//! outages whose answers quote the request back (URL, headers, body), and answers that are not
//! the provider's format. Then each secret, in the forms it travels in, is searched for in the
//! API's answers, in every file of the data directory (SQLite, its WAL) and in the process's
//! output at debug level.
//! Also: an empty credential stops `herald serve` with the field's name.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use herald_tests::herald_binary;
use rand::Rng;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const TWILIO_SID: &str = "AC0123456789abcdef";
const SMTP_USER: &str = "herald-relay";
const FCM_ENV: &str = "HERALD_TEST_FCM_SERVICE_ACCOUNT";

/// How the providers misbehave in one run.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// Nothing listens where the gateways connect.
    Closed,
    /// 4xx refusals (SMTP: 550 to RCPT) that quote the whole request.
    Refusal,
    /// 5xx outages (SMTP: 535 to AUTH; FCM: a refused token grant) that quote the request.
    Outage,
    /// Answers in no provider's format, quoting the request.
    Garbage,
}

/// Every credential of a run, recognisable and unique to it.
struct Secrets {
    telegram: String,
    twilio: String,
    postal: String,
    whatsapp: String,
    smtp: String,
    fcm_account: String,
    fcm_key_pem: String,
    fcm_access: String,
}

impl Secrets {
    fn new() -> Secrets {
        let tag = format!("{:08x}", rand::thread_rng().gen::<u32>());
        Secrets {
            telegram: format!("123456:SECRET-telegram-{tag}"),
            twilio: format!("SECRET-twilio-{tag}"),
            postal: format!("SECRET-postal-{tag}"),
            whatsapp: format!("SECRET-whatsapp-{tag}"),
            smtp: format!("SECRET-smtp-{tag}"),
            fcm_account: String::new(),
            fcm_key_pem: fcm_key().to_owned(),
            fcm_access: format!("ya29.SECRET-fcm-access-{tag}"),
        }
    }

    /// What must appear nowhere: each secret as is and in the forms it is sent in, and the
    /// JWT assertions the FCM gateway signed.
    fn needles(&self, assertions: &[String]) -> Vec<(String, String)> {
        let mut out = vec![
            ("telegram bot token".into(), self.telegram.clone()),
            (
                "telegram token's secret half".into(),
                self.telegram.split_once(':').unwrap().1.to_owned(),
            ),
            ("twilio auth token".into(), self.twilio.clone()),
            (
                "twilio basic auth".into(),
                STANDARD.encode(format!("{TWILIO_SID}:{}", self.twilio)),
            ),
            ("postal api key".into(), self.postal.clone()),
            ("whatsapp access token".into(), self.whatsapp.clone()),
            ("smtp password".into(), self.smtp.clone()),
            ("smtp password base64".into(), STANDARD.encode(&self.smtp)),
            (
                "smtp AUTH PLAIN".into(),
                STANDARD.encode(format!("\0{SMTP_USER}\0{}", self.smtp)),
            ),
            ("fcm access token".into(), self.fcm_access.clone()),
        ];
        // Lines long enough not to turn up in a binary file by chance.
        let key_lines = (self.fcm_key_pem.lines()).filter(|l| l.len() >= 16 && !l.starts_with('-'));
        out.extend(key_lines.map(|l| ("fcm private key line".into(), l.to_owned())));
        for jwt in assertions {
            let signature = jwt.rsplit('.').next().unwrap_or(jwt);
            out.push(("fcm JWT assertion signature".into(), signature.to_owned()));
        }
        out
    }
}

/// One RSA key for the whole run (making one takes a while).
fn fcm_key() -> &'static str {
    static KEY: OnceLock<String> = OnceLock::new();
    KEY.get_or_init(|| {
        use rsa::pkcs8::EncodePrivateKey;
        let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
        key.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
            .unwrap()
            .to_string()
    })
}

fn service_account(key_pem: &str, token_uri: &str) -> String {
    json!({ "type": "service_account", "project_id": "herald-test", "private_key_id": "k1",
            "private_key": key_pem, "client_email": "herald@herald-test.iam.gserviceaccount.com",
            "client_id": "1", "token_uri": token_uri })
    .to_string()
}

/// The whole request, as a careless provider quotes it back.
fn echo(r: &Request) -> String {
    format!(
        "{} {} headers={:?} body={}",
        r.method,
        r.url,
        r.headers,
        String::from_utf8_lossy(&r.body)
    )
}

/// The HTTP providers (Telegram, Twilio, Postal, WhatsApp, FCM and its token endpoint) on one
/// fake server, told apart by path.
struct Providers {
    mode: Mode,
    access_token: String,
}

impl Respond for Providers {
    fn respond(&self, r: &Request) -> ResponseTemplate {
        let path = r.url.path();
        let said = echo(r);
        let text = |status: u16| {
            ResponseTemplate::new(status)
                .set_body_raw(format!("<html><pre>{said}</pre></html>"), "text/html")
        };
        let token = json!({ "access_token": self.access_token, "expires_in": 3600 });
        match (self.mode, path) {
            (Mode::Outage, "/token") => ResponseTemplate::new(400)
                .set_body_json(json!({ "error": "invalid_grant", "error_description": said })),
            (_, "/token") => ResponseTemplate::new(200).set_body_json(token),
            (Mode::Garbage, _) if path.starts_with("/bot") => text(404),
            (Mode::Garbage, _) if path.contains("/Accounts/") => text(400),
            (Mode::Garbage, _) if path.ends_with("messages:send") => text(500),
            (Mode::Garbage, _) => text(200),
            (mode, _) => quoted(mode, path, said),
        }
    }
}

/// A provider's own error shape, its message quoting the request.
fn quoted(mode: Mode, path: &str, said: String) -> ResponseTemplate {
    let refusal = mode == Mode::Refusal;
    let (status, body) = if path.starts_with("/bot") {
        let code = if refusal { 401 } else { 502 };
        (
            code,
            json!({ "ok": false, "error_code": code, "description": said }),
        )
    } else if path.contains("/Accounts/") {
        let (status, code) = if refusal { (401, 20003) } else { (503, 20500) };
        (status, json!({ "code": code, "message": said }))
    } else if path.starts_with("/api/v1/send") {
        let (status, code) = if refusal {
            (200, "InvalidServerAPIKey")
        } else {
            (500, "InternalError")
        };
        (
            status,
            json!({ "status": "error", "data": { "code": code, "message": said } }),
        )
    } else if path.ends_with("messages:send") {
        (
            401,
            json!({ "error": { "code": 401, "message": said, "status": "UNAUTHENTICATED" } }),
        )
    } else {
        let (status, code) = if refusal { (401, 190) } else { (500, 2) };
        (
            status,
            json!({ "error": { "message": said, "code": code } }),
        )
    };
    ResponseTemplate::new(status).set_body_json(body)
}

/// An SMTP server that misbehaves as `mode` says, quoting the client's AUTH back.
async fn smtp_server(mode: Mode) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = smtp_session(stream, mode).await;
            });
        }
    });
    port
}

async fn smtp_session(stream: TcpStream, mode: Mode) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    if mode == Mode::Garbage {
        let junk = "HTTP/1.1 400 Bad Request\r\n\r\nwhat is this\r\n";
        return write.write_all(junk.as_bytes()).await;
    }
    write.write_all(b"220 fake ESMTP\r\n").await?;
    let mut auth = String::new();
    while let Some(line) = lines.next_line().await? {
        let verb = line
            .split(' ')
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        let reply = match verb.as_str() {
            "EHLO" => "250-fake\r\n250 AUTH PLAIN LOGIN".to_owned(),
            "AUTH" => {
                let b64 = line.rsplit(' ').next().unwrap_or_default();
                let plain = String::from_utf8_lossy(&STANDARD.decode(b64).unwrap_or_default())
                    .replace('\0', " ");
                auth = format!("you sent {line:?} = {plain:?}");
                if mode == Mode::Outage {
                    format!("535 5.7.8 Authentication credentials invalid: {auth}")
                } else {
                    "235 2.7.0 OK".to_owned()
                }
            }
            "MAIL" => "250 2.1.0 OK".to_owned(),
            "RCPT" => format!("550 5.7.1 Relaying denied: {auth}"),
            "QUIT" => return write.write_all(b"221 Bye\r\n").await,
            _ => "250 OK".to_owned(),
        };
        write.write_all(format!("{reply}\r\n").as_bytes()).await?;
    }
    Ok(())
}

/// A port nothing listens on.
/// A port bound but never listening: connections to it are refused, and no other test's
/// server can take it while the socket lives (a dropped listener's port could be reused and
/// answer with silence).
fn closed_port() -> (tokio::net::TcpSocket, u16) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = socket.local_addr().unwrap().port();
    (socket, port)
}

fn toml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// herald.toml: every provider gateway, email through `email` (smtp or postal).
fn config(s: &Secrets, email: &str, http_base: &str, smtp_port: u16) -> String {
    format!(
        r#"
[gateways.order]
email = ["{email}"]

[gateways.smtp]
host = "127.0.0.1"
port = {smtp_port}
tls = "none"
username = "{SMTP_USER}"
password = {smtp}
from = "alerts@example.com"
pool_size = 1

[gateways.postal]
base_url = "{http_base}"
api_key = {postal}
from = "alerts@example.com"

[gateways.twilio]
account_sid = "{TWILIO_SID}"
auth_token = {twilio}
from = "+15550001111"
base_url = "{http_base}"

[gateways.fcm]
project_id = "herald-test"
service_account = {{ env = "{FCM_ENV}" }}
base_url = "{http_base}"

[gateways.telegram]
bot_token = {telegram}
base_url = "{http_base}"

[gateways.whatsapp]
phone_number_id = "1055"
access_token = {whatsapp}
base_url = "{http_base}"
"#,
        smtp = toml_str(&s.smtp),
        postal = toml_str(&s.postal),
        twilio = toml_str(&s.twilio),
        telegram = toml_str(&s.telegram),
        whatsapp = toml_str(&s.whatsapp),
    )
}

/// A `herald serve` child process and everything it printed.
struct Serve {
    child: Child,
    url: String,
    key: String,
    stdout: Arc<Mutex<String>>,
    stderr_path: PathBuf,
}

impl Serve {
    async fn start(dir: &Path, config: &str, fcm_account: &str) -> Serve {
        let config_path = dir.join("herald.toml");
        std::fs::write(&config_path, config).unwrap();
        let stderr_path = dir.join("stderr.log");
        let mut child = Command::new(herald_binary())
            .args(["serve", "--bind", "127.0.0.1:0", "--max-attempts", "2"])
            .args(["--backoff-base-ms", "5", "--data-dir"])
            .arg(dir.join("data"))
            .arg("--config")
            .arg(&config_path)
            .env("HERALD_LOG", "debug")
            .env(FCM_ENV, fcm_account)
            .env_remove("HERALD_LANE_WORKERS")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&stderr_path).unwrap()))
            .kill_on_drop(true)
            .spawn()
            .expect("spawn herald serve");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let stdout = Arc::new(Mutex::new(String::new()));
        let (mut key, mut url) = (String::new(), String::new());
        let banner = async {
            while let Some(line) = lines.next_line().await.unwrap() {
                stdout.lock().unwrap().push_str(&format!("{line}\n"));
                if line.starts_with("hk_") {
                    key = line.trim().to_owned();
                } else if let Some(rest) = line.strip_prefix("herald listening on ") {
                    url = rest.split_whitespace().next().unwrap().to_owned();
                    return;
                }
            }
        };
        let started = tokio::time::timeout(Duration::from_secs(60), banner).await;
        assert!(
            started.is_ok() && !url.is_empty() && !key.is_empty(),
            "herald serve did not start: {}\n{}",
            stdout.lock().unwrap(),
            std::fs::read_to_string(&stderr_path).unwrap_or_default()
        );
        let rest = stdout.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                rest.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
        Serve {
            child,
            url,
            key,
            stdout,
            stderr_path,
        }
    }

    /// SIGTERM (a graceful drain, with its last log lines), then the output so far.
    async fn stop(mut self) -> String {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        if tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
        let stderr = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        format!("{}{stderr}", self.stdout.lock().unwrap())
    }
}

/// The messages of a run: one per channel, each to a gateway that will fail.
fn messages() -> Vec<Value> {
    [
        ("email", "ann@example.com"),
        ("sms", "+15550002222"),
        ("push", "device-token-1"),
        ("telegram", "-1001234"),
        ("whatsapp", "+15550003333"),
    ]
    .into_iter()
    .map(|(channel, to)| {
        let mut m =
            json!({ "channel": channel, "priority": "P1", "to": to, "body": "Stay inside." });
        if matches!(channel, "email" | "push") {
            m["subject"] = json!("Storm");
        }
        m
    })
    .collect()
}

/// Sends every message, waits until all failed, and returns the API's answers about them.
async fn drive(client: &reqwest::Client, serve: &Serve) -> Vec<String> {
    let mut ids = Vec::new();
    for m in messages() {
        let r = client
            .post(format!("{}/v1/messages", serve.url))
            .bearer_auth(&serve.key)
            .json(&m)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
        let body: Value = r.json().await.unwrap();
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    let get = |path: String| async move {
        let r = client
            .get(format!("{}{path}", serve.url))
            .bearer_auth(&serve.key);
        r.send().await.unwrap().text().await.unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut answers = Vec::new();
    for id in &ids {
        loop {
            let view = get(format!("/v1/messages/{id}")).await;
            let status = serde_json::from_str::<Value>(&view).unwrap()["status"].clone();
            if status == "failed" || Instant::now() > deadline {
                assert_eq!(status, "failed", "{view}");
                answers.push(view);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for path in ["/v1/dead-letters", "/v1/stats/channels", "/v1/stats/queue"] {
        answers.push(get(path.to_owned()).await);
    }
    answers
}

/// Every file under `dir`, as bytes, with its path.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path, bytes));
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// One run: providers failing as `mode` says, email through `email`; then the search.
async fn run(mode: Mode, email: &str) {
    let mut secrets = Secrets::new();
    let provider = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(Providers {
            mode,
            access_token: secrets.fcm_access.clone(),
        })
        .mount(&provider)
        .await;
    let (closed, port) = closed_port();
    let (http_base, smtp_port) = match mode {
        Mode::Closed => (format!("http://127.0.0.1:{port}"), port),
        _ => (provider.uri(), smtp_server(mode).await),
    };
    secrets.fcm_account = service_account(&secrets.fcm_key_pem, &format!("{http_base}/token"));
    let dir = tempfile::tempdir().unwrap();
    let toml = config(&secrets, email, &http_base, smtp_port);
    let serve = Serve::start(dir.path(), &toml, &secrets.fcm_account).await;
    let answers = drive(&reqwest::Client::new(), &serve).await;
    let output = serve.stop().await;
    drop(closed);
    let assertions: Vec<String> = provider
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.url.path() == "/token")
        .filter_map(|r| {
            let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&r.body).ok()?;
            form.into_iter()
                .find(|(k, _)| k == "assertion")
                .map(|(_, v)| v)
        })
        .collect();
    if mode != Mode::Closed {
        assert!(!assertions.is_empty(), "the FCM gateway asked for a token");
    }
    let answers = answers.join("\n");
    let mut stored = files(&dir.path().join("data"));
    stored.push(("API answers".into(), answers.clone().into_bytes()));
    stored.push(("herald's output".into(), output.into_bytes()));
    let mut leaks = Vec::new();
    for (what, needle) in secrets.needles(&assertions) {
        for (place, bytes) in &stored {
            if contains(bytes, &needle) {
                leaks.push(format!("{what} in {}", place.display()));
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "{mode:?} with {email}: secrets leaked:\n{}\n\nAPI answers:\n{answers}",
        leaks.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening() {
    tokio::join!(run(Mode::Closed, "smtp"), run(Mode::Closed, "postal"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_that_quote_the_request() {
    tokio::join!(run(Mode::Refusal, "smtp"), run(Mode::Refusal, "postal"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outages_that_quote_the_request() {
    tokio::join!(run(Mode::Outage, "smtp"), run(Mode::Outage, "postal"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_in_no_providers_format() {
    tokio::join!(run(Mode::Garbage, "smtp"), run(Mode::Garbage, "postal"));
}

#[tokio::test]
async fn an_empty_credential_stops_the_start_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("herald.toml");
    std::fs::write(
        &config_path,
        "[gateways.telegram]\nbot_token = \"\"\n\n[gateways.postal]\nbase_url = \"https://postal.example.com\"\napi_key = \"k\"\n",
    )
    .unwrap();
    let out = Command::new(herald_binary())
        .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--config")
        .arg(&config_path)
        .env("HERALD_LOG", "warn")
        .stdin(Stdio::null())
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("herald serve stops at once")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started with an empty bot token");
    assert!(
        stderr.contains("gateways.telegram.bot_token is empty"),
        "{stderr}"
    );
}
