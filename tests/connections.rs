//! `herald serve`'s connection limits as a real process: slow and idle sockets are closed by
//! their deadlines and cannot lock a new client out; SIGTERM under load exits promptly and
//! loses or repeats no message.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use herald_tests::herald_binary;
use herald_tests::process::{create_key, send_log, send_log_len, Api, Serve};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

const HEADER_SECS: u64 = 2;
const BODY_SECS: u64 = 2;
const IDLE_SECS: u64 = 4;
const MAX_CONNECTIONS: usize = 256;

fn limit_args() -> Vec<String> {
    [
        ("--http-header-read-timeout-secs", HEADER_SECS.to_string()),
        ("--http-body-read-timeout-secs", BODY_SECS.to_string()),
        ("--http-idle-timeout-secs", IDLE_SECS.to_string()),
        ("--http-request-timeout-secs", "20".to_string()),
        ("--http-max-connections", MAX_CONNECTIONS.to_string()),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.to_string(), value])
    .collect()
}

/// This process opens ~1,700 sockets: raise its own open-file limit for them.
fn ensure_open_files(needed: u64) {
    let limit = rlimit::increase_nofile_limit(needed).expect("read the open-file limit");
    assert!(
        limit >= needed,
        "this test opens about {needed} sockets but the open-file limit is {limit}: raise the \
         hard limit (ulimit -Hn {needed}) and run it again"
    );
}

fn host(url: &str) -> String {
    url.trim_start_matches("http://").to_owned()
}

/// Opens a socket and sends `bytes` (possibly none); the request is left unfinished.
async fn open(addr: &str, bytes: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect to herald");
    if !bytes.is_empty() {
        s.write_all(bytes).await.expect("write to herald");
    }
    s
}

/// Reads until the server closes the socket; returns what it sent and when it closed
/// (`None` if it was still open after `within`).
fn watch_close(mut s: TcpStream, within: Duration) -> JoinHandle<(Vec<u8>, Option<Instant>)> {
    tokio::spawn(async move {
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return (got, Some(Instant::now())),
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                Err(_) => return (got, None),
            }
        }
    })
}

/// `GET /healthz` on a fresh connection: its status line and how long it took.
async fn healthz(addr: &str) -> (String, Duration) {
    let started = Instant::now();
    let mut s = open(
        addr,
        b"GET /healthz HTTP/1.1\r\nHost: herald\r\nConnection: close\r\n\r\n",
    )
    .await;
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut reply))
        .await
        .expect("healthz answered within 10 s")
        .expect("read healthz");
    let text = String::from_utf8_lossy(&reply);
    let status = text.lines().next().unwrap_or_default().to_owned();
    (status, started.elapsed())
}

const PARTIAL_HEAD: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: herald\r\nX-Slow: ";

fn slow_body_head(key: &str) -> Vec<u8> {
    format!(
        "POST /v1/messages/bulk HTTP/1.1\r\nHost: herald\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: 30000000\r\n\r\n{{"
    )
    .into_bytes()
}

/// When each socket was closed, in seconds after `from`; panics on one still open.
async fn closed_after(
    what: &str,
    watchers: Vec<JoinHandle<(Vec<u8>, Option<Instant>)>>,
    from: Instant,
) -> Vec<f64> {
    let mut secs = Vec::new();
    for w in watchers {
        let (_, closed) = w.await.expect("watcher");
        let closed = closed.unwrap_or_else(|| panic!("a {what} connection was never closed"));
        secs.push(closed.duration_since(from).as_secs_f64());
    }
    secs.sort_by(f64::total_cmp);
    secs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_connections_are_closed_and_cannot_lock_out_healthz() {
    ensure_open_files(4096);
    let bin = herald_binary();
    let dir = tempfile::tempdir().expect("temp dir");
    let logs = tempfile::tempdir().expect("temp dir for stderr");
    let key = create_key(&bin, dir.path(), "conn");
    let args = limit_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let serve = Serve::start(&bin, dir.path(), logs.path().join("serve.stderr"), &args).await;
    let addr = host(&serve.url);

    an_event_stream_outlives_the_idle_deadline(&addr, &key).await;
    under_the_cap_each_deadline_applies(&addr, &key).await;
    at_the_cap_healthz_keeps_answering(&addr, &key).await;

    let stderr = serve.stderr();
    assert!(!stderr.contains("panicked"), "herald panicked:\n{stderr}");
    serve.kill9().await;
}

/// A server-sent event stream is a request in progress while it streams: the idle deadline,
/// which runs between requests, does not close it.
async fn an_event_stream_outlives_the_idle_deadline(addr: &str, key: &str) {
    let head = format!(
        "GET /v1/events/stream HTTP/1.1\r\nhost: herald\r\nauthorization: Bearer {key}\r\n\r\n"
    );
    let stream = open(addr, head.as_bytes()).await;
    let (got, closed) = watch_close(stream, Duration::from_secs(IDLE_SECS + 3))
        .await
        .expect("watcher");
    let got = String::from_utf8_lossy(&got);
    assert!(got.contains("event: open"), "{got}");
    assert!(closed.is_none(), "the stream was cut at {closed:?}:\n{got}");
}

/// Fewer sockets than the cap: each kind is closed by its own deadline.
async fn under_the_cap_each_deadline_applies(addr: &str, key: &str) {
    let watch_for = Duration::from_secs(IDLE_SECS + 10);
    let start = Instant::now();
    let mut partial = Vec::new();
    let mut silent = Vec::new();
    for _ in 0..50 {
        partial.push(watch_close(open(addr, PARTIAL_HEAD).await, watch_for));
        silent.push(watch_close(open(addr, b"").await, watch_for));
    }
    let slow_body = watch_close(open(addr, &slow_body_head(key)).await, watch_for);
    // A kept-alive connection after one answer: only the idle timeout closes it.
    let mut kept = open(addr, b"GET /healthz HTTP/1.1\r\nHost: herald\r\n\r\n").await;
    let mut first = [0u8; 512];
    let n = kept.read(&mut first).await.expect("read the first answer");
    assert!(
        first[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&first[..n])
    );
    let answered = Instant::now();
    let kept = watch_close(kept, watch_for);

    let (status, took) = healthz(addr).await;
    assert!(status.starts_with("HTTP/1.1 200"), "healthz: {status}");
    println!("healthz beside 100 slow sockets: {took:.1?}");

    let header = HEADER_SECS as f64;
    for (what, list) in [("partial-header", partial), ("silent", silent)] {
        let secs = closed_after(what, list, start).await;
        println!(
            "{what} connections closed after {:.2}..{:.2} s",
            secs[0],
            secs[secs.len() - 1]
        );
        assert!(
            secs[0] >= header * 0.75 && secs[secs.len() - 1] <= header + 5.0,
            "{what} connections should close about {header} s in (header read timeout): {secs:?}"
        );
    }
    let (reply, closed) = slow_body.await.expect("watcher");
    let closed = closed.expect("the slow-body request was never closed");
    let reply = String::from_utf8_lossy(&reply);
    let secs = closed.duration_since(start).as_secs_f64();
    println!(
        "slow body: {} after {secs:.2} s",
        reply.lines().next().unwrap_or("closed")
    );
    assert!(
        reply.is_empty() || reply.starts_with("HTTP/1.1 408"),
        "a stalled body gets a 408 or a closed connection: {reply}"
    );
    assert!(
        reply.contains("body-read-timeout"),
        "the 408 names the limit: {reply}"
    );
    assert!(
        secs <= BODY_SECS as f64 + 5.0,
        "the slow body closed after {secs:.2} s"
    );
    let (_, closed) = kept.await.expect("watcher");
    let idle = closed
        .expect("the kept-alive connection was never closed")
        .duration_since(answered);
    println!("kept-alive connection closed after {idle:.2?} idle");
    assert!(
        idle >= Duration::from_secs(IDLE_SECS) * 3 / 4
            && idle <= Duration::from_secs(IDLE_SECS + 5),
        "an idle kept-alive connection should close about {IDLE_SECS} s in: {idle:?}"
    );
}

/// Far more slow and idle sockets than the cap: a new client still gets its answer promptly,
/// and every attacking socket is closed within the header timeout (or sooner, for room).
async fn at_the_cap_healthz_keeps_answering(addr: &str, key: &str) {
    let watch_for = Duration::from_secs(HEADER_SECS + 10);
    let start = Instant::now();
    let mut attackers = Vec::new();
    for _ in 0..500 {
        attackers.push(watch_close(open(addr, PARTIAL_HEAD).await, watch_for));
    }
    let slow_body = watch_close(open(addr, &slow_body_head(key)).await, watch_for);
    for _ in 0..1_100 {
        attackers.push(watch_close(open(addr, b"").await, watch_for));
    }
    let opened = start.elapsed();
    let mut latencies = Vec::new();
    for _ in 0..10 {
        let (status, took) = healthz(addr).await;
        assert!(
            status.starts_with("HTTP/1.1 200"),
            "healthz under attack: {status}"
        );
        latencies.push(took);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    latencies.sort();
    println!(
        "1,601 slow/idle sockets opened in {opened:.1?} (cap {MAX_CONNECTIONS}); healthz on a \
         fresh connection: median {:.1?}, max {:.1?}",
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );
    assert!(
        latencies[latencies.len() - 1] < Duration::from_secs(1),
        "healthz should answer within 1 s beside slow and idle sockets: {latencies:?}"
    );
    let secs = closed_after("attacking", attackers, start).await;
    println!(
        "attacking connections closed after {:.2}..{:.2} s",
        secs[0],
        secs[secs.len() - 1]
    );
    assert!(
        secs[secs.len() - 1] <= opened.as_secs_f64() + HEADER_SECS as f64 + 5.0,
        "every slow or idle socket should be closed by the header timeout: {:?}",
        &secs[secs.len() - 5..]
    );
    let (reply, closed) = slow_body.await.expect("watcher");
    assert!(closed.is_some(), "the slow-body request was never closed");
    let reply = String::from_utf8_lossy(&reply);
    assert!(
        reply.is_empty() || reply.starts_with("HTTP/1.1 408"),
        "a stalled body gets a 408 or a closed connection: {reply}"
    );
}

const BULK: usize = 10_000;
const SENDERS: usize = 4;

/// One single send that the client keeps trying (with its Idempotency-Key) until answered.
struct Single {
    key: String,
    id: Option<String>,
}

async fn send_single(
    client: &reqwest::Client,
    url: &str,
    api_key: &str,
    key: &str,
) -> Option<String> {
    let n = key.trim_start_matches("single-");
    let res = client
        .post(format!("{url}/v1/messages"))
        .bearer_auth(api_key)
        .header("Idempotency-Key", key)
        .json(
            &json!({ "channel": "email", "priority": "P0", "to": format!("alert-{n}@example.com"),
                       "subject": "Alert", "body": "alert" }),
        )
        .send()
        .await
        .ok()?;
    if res.status() != 202 {
        return None;
    }
    let body: Value = res.json().await.ok()?;
    body["id"].as_str().map(str::to_owned)
}

/// Single sends from `SENDERS` tasks until the server stops answering.
fn keep_sending(api: &Api) -> Vec<JoinHandle<Vec<Single>>> {
    (0..SENDERS)
        .map(|task| {
            let (client, url, api_key) = (api.client.clone(), api.url.clone(), api.key.clone());
            tokio::spawn(async move {
                let mut sent = Vec::new();
                for i in 0.. {
                    let key = format!("single-{task}-{i}");
                    let id = send_single(&client, &url, &api_key, &key).await;
                    let stop = id.is_none();
                    sent.push(Single { key, id });
                    if stop {
                        return sent;
                    }
                }
                sent
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_promptly_then_every_message_is_sent_once() {
    let bin = herald_binary();
    let dir = tempfile::tempdir().expect("temp dir");
    let logs = tempfile::tempdir().expect("temp dir for stderr");
    let data = dir.path().to_owned();
    let key = create_key(&bin, &data, "term");
    let args = ["--sandbox-latency-ms", "5"];
    let first = Serve::start(&bin, &data, logs.path().join("first.stderr"), &args).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client");
    let api = Api {
        client,
        url: first.url.clone(),
        key,
    };
    let recipients: Vec<Value> = (0..BULK)
        .map(|i| json!({ "to": format!("user{i}@example.com") }))
        .collect();
    let reply = api
        .post(
            "/v1/messages/bulk",
            &json!({ "channel": "email", "priority": "P3", "subject": "Campaign",
                     "body": "Hello", "recipients": recipients }),
        )
        .await;
    assert_eq!(reply["queued"], BULK, "{reply}");
    let senders = keep_sending(&api);
    wait_for_sends(&data, BULK / 10).await;

    let (status, took) = first.terminate(Duration::from_secs(10)).await;
    let at_exit = send_log_len(&data);
    println!("SIGTERM with {at_exit} of {BULK}+ sent: exited ({status}) after {took:.2?}");
    assert!(
        status.success(),
        "herald serve should exit 0 on SIGTERM: {status}"
    );
    assert!(
        at_exit < BULK,
        "the drain had finished before SIGTERM; raise the sandbox latency"
    );
    let first_stderr =
        std::fs::read_to_string(logs.path().join("first.stderr")).unwrap_or_default();
    assert!(
        !first_stderr.contains("panicked"),
        "first run panicked:\n{first_stderr}"
    );
    let mut singles = Vec::new();
    for s in senders {
        singles.extend(s.await.expect("sender task"));
    }

    let second = Serve::start(&bin, &data, logs.path().join("second.stderr"), &args).await;
    let api = Api {
        url: second.url.clone(),
        ..api
    };
    // Unanswered sends are retried with their keys: accepted once, whatever happened before.
    for s in singles.iter_mut().filter(|s| s.id.is_none()) {
        s.id = send_single(&api.client, &api.url, &api.key, &s.key).await;
        assert!(s.id.is_some(), "the retry of {} was refused", s.key);
    }
    let total = BULK + singles.len();
    let counts = wait_for_delivery(&api, total).await;
    println!(
        "{} singles around the SIGTERM; after the restart: {counts:?}",
        singles.len()
    );

    let log = send_log(&data);
    let mut sends: BTreeMap<&str, usize> = BTreeMap::new();
    for (id, _) in &log {
        *sends.entry(id.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = sends.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "sent more than once across a graceful stop: {twice:?}"
    );
    assert_eq!(
        sends.len(),
        total,
        "every message sent once ({} log lines)",
        log.len()
    );
    for s in &singles {
        let id = s.id.as_deref().expect("answered");
        assert!(
            sends.contains_key(id),
            "single {} ({id}) was never sent",
            s.key
        );
    }
    let stderr = second.stderr();
    assert!(
        !stderr.contains("panicked"),
        "second run panicked:\n{stderr}"
    );
    second.kill9().await;
}

async fn wait_for_sends(data: &Path, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while send_log_len(data) < n {
        assert!(
            Instant::now() < deadline,
            "the drain did not reach {n} sends in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until every one of `total` messages is delivered; returns the counts by status.
async fn wait_for_delivery(api: &Api, total: usize) -> BTreeMap<String, u64> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let counts = api.counts().await;
        let all: u64 = counts.values().sum();
        if counts.get("delivered").copied().unwrap_or(0) == total as u64 && all == total as u64 {
            return counts;
        }
        assert!(
            Instant::now() < deadline,
            "not every message delivered 90 s after the restart: {counts:?} (expected {total})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
