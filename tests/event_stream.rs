//! `GET /v1/events/stream` and `herald tail` on the embedded backend: events arrive live, a
//! reconnect with `Last-Event-ID` resumes with nothing missed or repeated, and other tenants,
//! anonymous callers and bad input get clear 4xx answers.

use std::time::Duration;

use herald_tests::{herald_binary, TestServer};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// Streams end after 1 s here (five minutes by default), so the tests see reconnects.
async fn server() -> TestServer {
    TestServer::start_with(|cfg| {
        let streams = &mut cfg.engine.notify.streams;
        streams.window = Duration::from_secs(1);
        streams.poll = Duration::from_millis(20);
        cfg.engine.notify.poll = Duration::from_millis(20);
    })
    .await
}

#[derive(Debug, Clone)]
struct Received {
    event: String,
    id: String,
    data: Value,
}

/// Opens a stream and forwards its events until the server ends the connection.
async fn open(
    s: &TestServer,
    key: &str,
    query: &str,
    last: Option<&str>,
) -> (StatusCode, mpsc::UnboundedReceiver<Received>) {
    let mut req = s
        .client
        .get(format!("{}/v1/events/stream{query}", s.url))
        .bearer_auth(key);
    if let Some(id) = last {
        req = req.header("last-event-id", id);
    }
    let mut res = req.send().await.expect("stream request");
    let (tx, rx) = mpsc::unbounded_channel();
    let status = res.status();
    if status.is_success() {
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        tokio::spawn(async move {
            let (mut buf, mut current) = (String::new(), Vec::<String>::new());
            loop {
                // Ends when the test drops the receiver: the connection closes with it.
                let chunk = tokio::select! {
                    chunk = res.chunk() => chunk,
                    _ = tx.closed() => return,
                };
                let Ok(Some(chunk)) = chunk else { return };
                buf.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
                while let Some(end) = buf.find('\n') {
                    let line: String = buf.drain(..=end).collect();
                    let line = line.trim_end().to_owned();
                    if !line.is_empty() {
                        current.push(line);
                        continue;
                    }
                    let field = |name: &str| {
                        current
                            .iter()
                            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                            .map(str::to_owned)
                    };
                    if let (Some(event), Some(id)) = (field("event"), field("id")) {
                        let data = serde_json::from_str(&field("data").unwrap_or_default())
                            .expect("data is JSON");
                        let _ = tx.send(Received { event, id, data });
                    }
                    current.clear();
                }
            }
        });
    }
    (status, rx)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Received>) -> Option<Received> {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("an event or the end of the connection within 10 s")
}

async fn send(s: &TestServer, to: &str) -> String {
    s.send(&json!({"channel": "email", "priority": "P1", "to": to, "subject": "Hi", "body": "x"}))
        .await
}

#[tokio::test]
async fn events_arrive_live_and_a_reconnect_resumes_without_gaps_or_repeats() {
    let s = server().await;
    let (status, mut rx) = open(&s, &s.key, "?types=message.queued", None).await;
    assert_eq!(status, StatusCode::OK);
    let opened = next(&mut rx).await.expect("open");
    assert_eq!(opened.event, "open");
    assert_eq!(opened.data["event_types"], json!(["message.queued"]));

    let mut sent = vec![send(&s, "a@example.com").await];
    let mut seen = Vec::new();
    let mut last = opened.id.clone();
    // Send while connections end and resume: every message is seen once, in order.
    for round in 0..3 {
        while let Some(e) = next(&mut rx).await {
            assert_eq!(e.event, "message.queued");
            seen.push(
                e.data["data"]["message_id"]
                    .as_str()
                    .expect("id")
                    .to_owned(),
            );
            last = e.id;
            if seen.len() == sent.len() {
                break;
            }
        }
        // Between connections: these wait for the reconnect.
        sent.push(send(&s, &format!("b{round}@example.com")).await);
        sent.push(send(&s, &format!("c{round}@example.com")).await);
        while next(&mut rx).await.is_some() {} // the window closes
        let (status, again) = open(&s, &s.key, "", Some(&last)).await;
        assert_eq!(status, StatusCode::OK);
        rx = again;
        let reopened = next(&mut rx).await.expect("open");
        assert_eq!(reopened.id, last, "the cursor carries over");
    }
    while seen.len() < sent.len() {
        let e = next(&mut rx).await.expect("the rest");
        seen.push(
            e.data["data"]["message_id"]
                .as_str()
                .expect("id")
                .to_owned(),
        );
    }
    assert_eq!(seen, sent);
    s.stop().await;
}

#[tokio::test]
async fn other_tenants_anonymous_callers_and_bad_input_are_refused() {
    let s = server().await;
    let (_, mut rx) = open(&s, &s.key, "", None).await;
    let cursor = next(&mut rx).await.expect("open").id;

    let other = s.new_key("globex").await;
    let (status, _) = open(&s, &other, "", Some(&cursor)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another tenant's stream");
    let id = send(&s, "x@example.com").await;
    let (_, mut theirs) = open(&s, &other, "", None).await;
    next(&mut theirs).await.expect("open");
    let e = next(&mut rx).await.expect("our event");
    assert_eq!(e.data["data"]["message_id"], id.as_str());
    // Globex's connection ends with its window, having carried nothing of acme's.
    let theirs_seen = next(&mut theirs).await;
    assert!(theirs_seen.is_none(), "globex saw {theirs_seen:?}");

    let anon = s
        .client
        .get(format!("{}/v1/events/stream", s.url))
        .send()
        .await
        .expect("request");
    assert_eq!(anon.status(), StatusCode::UNAUTHORIZED);
    for (query, last, want) in [
        (
            "?types=message.nope",
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        ("?limit=5", None, StatusCode::BAD_REQUEST),
        ("", Some("not-a-cursor"), StatusCode::BAD_REQUEST),
        (
            "",
            Some("0190a0c0-0000-7000-8000-000000000000"),
            StatusCode::NOT_FOUND,
        ),
    ] {
        let (status, _) = open(&s, &s.key, query, last).await;
        assert_eq!(status, want, "{query} {last:?}");
    }
    s.stop().await;
}

#[tokio::test]
async fn a_tenant_may_hold_only_a_few_streams_open() {
    let s = TestServer::start_with(|cfg| {
        cfg.engine.notify.streams.window = Duration::from_secs(30);
    })
    .await;
    let mut open_ones = Vec::new();
    for _ in 0..4 {
        let (status, rx) = open(&s, &s.key, "", None).await;
        assert_eq!(status, StatusCode::OK);
        open_ones.push(rx);
    }
    let (status, _) = open(&s, &s.key, "", None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let other = s.new_key("globex").await;
    let (status, _) = open(&s, &other, "", None).await;
    assert_eq!(status, StatusCode::OK, "another tenant is not held up");
    drop(open_ones.pop()); // a client goes away: its place is free again
    let mut freed = StatusCode::TOO_MANY_REQUESTS;
    for _ in 0..50 {
        freed = open(&s, &s.key, "", None).await.0;
        if freed == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(freed, StatusCode::OK);
    s.stop().await;
}

#[tokio::test]
async fn herald_tail_prints_events_across_reconnects() {
    let s = server().await;
    let (url, key) = (s.url.clone(), s.key.clone());
    let mut tail = tokio::process::Command::new(herald_binary())
        .args(["tail", "--json", "--max", "4", "--types", "message.queued"])
        .env("HERALD_URL", &url)
        .env("HERALD_API_KEY", &key)
        .env("HERALD_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("herald tail runs");
    // Events from before the stream opened are not its own: wait for it.
    herald_tests::await_following(&mut tail).await;
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(send(&s, &format!("t{i}@example.com")).await);
        // Past the 1 s window: the later sends reach a reconnected tail.
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let out = tokio::time::timeout(Duration::from_secs(20), tail.wait_with_output())
        .await
        .expect("herald tail stops after --max events")
        .expect("output");
    assert!(out.status.success());
    let printed: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("one JSON payload per line");
            v["data"]["message_id"].as_str().expect("id").to_owned()
        })
        .collect();
    assert_eq!(printed, ids);
    s.stop().await;
}
