//! Crash safety of `herald serve` as a real process: kill -9 in the middle of a drain, start
//! again on the same data directory, and check the sandbox's durable send log.
//! Also: one process per data directory, and the dev key printed on first start only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use herald_tests::herald_binary;
use herald_tests::process::{
    create_key, read_lossy, send_log, send_log_len, serve_command, Api, Serve,
};
use herald_tests::shared::engine::{EngineConfig, LaneConfig};
use serde_json::{json, Value};

const BULK_REQUESTS: usize = 2;
const BULK_SIZE: usize = 10_000;
const SINGLES: usize = 50;
const TOTAL: usize = BULK_REQUESTS * BULK_SIZE + SINGLES;
/// Simulated provider latency: makes the drain last long enough for the kill to land in it.
const SANDBOX_LATENCY_MS: &str = "2";
const SERVE_ARGS: &[&str] = &["--sandbox-latency-ms", SANDBOX_LATENCY_MS];
/// How far ahead the bulk sends are scheduled: longer than accepting them takes.
const BULK_DELAY_SECS: i64 = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_drain_then_restart_sends_every_message_at_least_once() {
    kill_9_mid_drain(SERVE_ARGS, EngineConfig::default()).await;
}

/// The same with few workers and large batches: more claims open per worker at the kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_large_batches_sends_every_message_at_least_once() {
    let mut engine = EngineConfig::default();
    engine.lanes[3] = LaneConfig {
        workers: 2,
        batch: 512,
    };
    let mut args = SERVE_ARGS.to_vec();
    args.extend(["--lane-workers", "P3=2x512"]);
    kill_9_mid_drain(&args, engine).await;
}

/// `engine` is the lane configuration that `args` give the server: the most messages it can
/// have in hand-off at once bounds the resends after the kill.
async fn kill_9_mid_drain(args: &[&str], engine: EngineConfig) {
    let bin = herald_binary();
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let logs = tempfile::tempdir().expect("temp dir for stderr");
    let data = dir.path().to_owned();
    let key = create_key(&bin, &data, "crash");

    // --- first run: accept everything, kill -9 in the middle of the drain ---
    let first = Serve::start(&bin, &data, logs.path().join("first.stderr"), args).await;
    let api = Api {
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("http client"),
        url: first.url.clone(),
        key,
    };
    let mut singles = Vec::new();
    // The bulk sends start once all are accepted: a drain that raced the accepting (whole
    // batches of 512 finish at once) could otherwise end before the kill.
    let bulk_at = (chrono::Utc::now() + chrono::Duration::seconds(BULK_DELAY_SECS)).to_rfc3339();
    for b in 0..BULK_REQUESTS {
        let recipients: Vec<Value> = (b * BULK_SIZE..(b + 1) * BULK_SIZE)
            .map(|i| json!({ "to": format!("user{i}@example.com"), "external_id": i.to_string() }))
            .collect();
        let reply = api
            .post(
                "/v1/messages/bulk",
                &json!({ "channel": "email", "priority": "P3", "subject": "Campaign",
                         "body": "Hello from the crash test", "recipients": recipients,
                         "send_at": bulk_at }),
            )
            .await;
        assert_eq!(reply["queued"], BULK_SIZE, "bulk {b}: {reply}");
        assert_eq!(reply["suppressed"], 0, "bulk {b}: {reply}");
        assert_eq!(reply["rejected"], json!([]), "bulk {b}: {reply}");
        if b == 0 {
            for i in 0..SINGLES {
                let reply = api
                    .post(
                        "/v1/messages",
                        &json!({ "channel": "email", "priority": "P0", "to": format!("alert{i}@example.com"),
                                 "subject": "Alert", "body": format!("alert {i}") }),
                    )
                    .await;
                assert_eq!(reply["status"], "queued", "P0 send {i}: {reply}");
                singles.push(reply["id"].as_str().expect("id").to_owned());
            }
        }
    }
    let accepted_after = started.elapsed();
    let sent_at_accept = send_log_len(&data);
    assert!(
        sent_at_accept < TOTAL,
        "the whole drain finished before every message was even accepted; raise the sandbox latency"
    );

    // Kill once a good part has been sent, and well before the end.
    let kill_at = (TOTAL / 4).max(sent_at_accept + 1);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = send_log_len(&data);
        if n >= kill_at {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the drain did not reach {kill_at} sends within 60 s (at {n}); stderr:\n{}",
            first.stderr()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let first_stderr_path = first.stderr_path.clone();
    first.kill9().await;
    let killed_after = started.elapsed();

    // The process is gone: this part of the log is final.
    let before_kill = send_log(&data);
    let lines_at_kill = before_kill.len();
    println!(
        "accepted {TOTAL} in {accepted_after:.1?} ({sent_at_accept} sent by then); \
         killed at {killed_after:.1?} with {lines_at_kill} sends logged"
    );
    assert!(
        lines_at_kill > 0 && lines_at_kill < TOTAL,
        "the kill did not land mid-drain: {lines_at_kill} of {TOTAL} sends logged"
    );
    let stderr = read_lossy(&first_stderr_path);
    assert!(
        !stderr.contains("panicked"),
        "first run panicked:\n{stderr}"
    );

    // --- second run on the same data directory ---
    let second = Serve::start(&bin, &data, logs.path().join("second.stderr"), args).await;
    let api = Api {
        url: second.url.clone(),
        ..api
    };
    assert!(
        !second.banner.iter().any(|l| l.starts_with("hk_")),
        "the dev key was printed again on restart: {:?}",
        second.banner
    );

    // Every lane empties and every message reaches a final state.
    let non_final = ["queued", "deferred", "sending"];
    let deadline = Instant::now() + Duration::from_secs(60);
    let counts = loop {
        let work = api.queued_work().await;
        let counts = api.counts().await;
        let pending: u64 = non_final.iter().filter_map(|s| counts.get(*s)).sum();
        if work == 0 && pending == 0 {
            break counts;
        }
        assert!(
            Instant::now() < deadline,
            "not drained 60 s after the restart: {work} on the lanes, counts {counts:?}; stderr:\n{}",
            second.stderr()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let drained_after = started.elapsed();
    let total: u64 = counts.values().sum();
    assert_eq!(total, TOTAL as u64, "message count by status: {counts:?}");
    let reached_gateway: u64 = ["sent", "delivered"]
        .iter()
        .filter_map(|s| counts.get(*s))
        .sum();
    assert_eq!(
        reached_gateway, TOTAL as u64,
        "every message should be sent or delivered: {counts:?}"
    );

    // The durable send log: every message at least once, twice only across the kill.
    let log = send_log(&data);
    let mut by_id: BTreeMap<&str, Vec<(usize, u32)>> = BTreeMap::new();
    for (i, (id, attempt)) in log.iter().enumerate() {
        by_id.entry(id.as_str()).or_default().push((i, *attempt));
    }
    assert_eq!(
        by_id.len(),
        TOTAL,
        "distinct message ids in the send log ({} lines)",
        log.len()
    );
    for id in &singles {
        assert!(
            by_id.contains_key(id.as_str()),
            "P0 message {id} was never sent"
        );
    }
    let duplicates: Vec<(&str, &Vec<(usize, u32)>)> = by_id
        .iter()
        .filter(|(_, sends)| sends.len() > 1)
        .map(|(id, sends)| (*id, sends))
        .collect();
    let bound = engine.max_in_hand_off();
    println!(
        "drained at {drained_after:.1?}: {} sends logged for {TOTAL} messages, {} sent twice \
         (bound: {bound} in hand-off at once); counts {counts:?}",
        log.len(),
        duplicates.len()
    );
    for (id, sends) in &duplicates {
        // In hand-off at the kill: one send before it, the retry after the restart.
        assert_eq!(
            sends.len(),
            2,
            "message {id} sent more than twice: {sends:?}"
        );
        assert!(
            sends[0].0 < lines_at_kill && sends[1].0 >= lines_at_kill,
            "message {id} was sent twice without a crash between: log lines {sends:?}, kill at line {lines_at_kill}"
        );
        assert!(
            sends[1].1 > sends[0].1,
            "the resend of {id} should be a later attempt: {sends:?}"
        );
    }
    assert!(
        duplicates.len() <= bound,
        "{} messages sent twice, more than the {bound} that can be in hand-off at once",
        duplicates.len()
    );
    for (id, _) in duplicates.iter().take(5) {
        let view = api.get(&format!("/v1/messages/{id}")).await;
        let sending = view["events"]
            .as_array()
            .expect("events")
            .iter()
            .filter(|e| e["type"] == "sending")
            .count();
        assert_eq!(sending, 2, "message {id} sent twice: {view:#}");
    }

    // The sandbox's callbacks: every message to example.com should end `delivered`. Wait until
    // nothing is left in `sent`, or the count has not moved for 5 s.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut last_sent, mut last_change) = (u64::MAX, Instant::now());
    let counts = loop {
        let counts = api.counts().await;
        let sent = counts.get("sent").copied().unwrap_or(0);
        if sent != last_sent {
            (last_sent, last_change) = (sent, Instant::now());
        }
        if sent == 0 || last_change.elapsed() > Duration::from_secs(5) || Instant::now() > deadline
        {
            break counts;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!("final counts: {counts:?}");
    let delivered = counts.get("delivered").copied().unwrap_or(0);
    if delivered != TOTAL as u64 {
        // Which ones: look at the sends logged last before the kill.
        let mut stuck = Vec::new();
        for (back, (id, _)) in before_kill.iter().rev().take(500).enumerate() {
            let view = api.get(&format!("/v1/messages/{id}")).await;
            if view["status"] == "sent" {
                stuck.push(back + 1);
            }
        }
        panic!(
            "every message to example.com should end delivered, but the counts are {counts:?}. \
             Of the last 500 sends logged before the kill, {} are still `sent` (positions from \
             the end of the log at the kill: {stuck:?}): their delivery callbacks were lost \
             with the killed process and nothing recovers them after the restart",
            stuck.len()
        );
    }

    let stderr = second.stderr();
    assert!(
        !stderr.contains("panicked"),
        "second run panicked:\n{stderr}"
    );
    second.kill9().await;
    println!("total {:.1?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_process_per_data_dir_and_the_dev_key_is_printed_once() {
    let bin = herald_binary();
    let dir = tempfile::tempdir().expect("temp dir");
    let logs = tempfile::tempdir().expect("temp dir for stderr");
    let data = dir.path();

    let first = Serve::start(&bin, data, logs.path().join("first.stderr"), SERVE_ARGS).await;
    let keys: Vec<&String> = first
        .banner
        .iter()
        .filter(|l| l.starts_with("hk_"))
        .collect();
    assert_eq!(
        keys.len(),
        1,
        "first start should print the dev key once: {:?}",
        first.banner
    );
    let dev_key = keys[0].trim().to_owned();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client");
    let res = client
        .get(format!("{}/v1/stats/queue", first.url))
        .bearer_auth(&dev_key)
        .send()
        .await
        .expect("GET /v1/stats/queue");
    assert_eq!(res.status(), 200, "the printed dev key is refused");

    // A second process on the same data directory is refused.
    let second = serve_command(&bin, data, SERVE_ARGS)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn a second herald serve");
    let out = tokio::time::timeout(Duration::from_secs(60), second.wait_with_output())
        .await
        .expect("a second herald serve on a locked data dir should exit within 60 s")
        .expect("wait for the second herald serve");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a second herald serve on the same data dir should fail; stdout: {stdout}; stderr: {stderr}"
    );
    assert!(
        stderr.to_lowercase().contains("lock"),
        "stderr should mention the lock: {stderr}"
    );
    assert!(
        !stdout.contains("herald listening on") && !stdout.lines().any(|l| l.starts_with("hk_")),
        "the refused process should neither listen nor print a key: {stdout}"
    );
    // The first process is unaffected.
    let res = client
        .get(format!("{}/readyz", first.url))
        .send()
        .await
        .expect("GET /readyz");
    assert_eq!(res.status(), 200, "the first server stopped answering");
    first.kill9().await;

    // After the owner is gone, the data directory can be used again; no new dev key.
    let again = Serve::start(&bin, data, logs.path().join("again.stderr"), SERVE_ARGS).await;
    assert!(
        !again.banner.iter().any(|l| l.starts_with("hk_")),
        "the dev key was printed again on the second start: {:?}",
        again.banner
    );
    let res = client
        .get(format!("{}/v1/stats/queue", again.url))
        .bearer_auth(&dev_key)
        .send()
        .await
        .expect("GET /v1/stats/queue");
    assert_eq!(
        res.status(),
        200,
        "the dev key no longer works after a restart"
    );
    again.kill9().await;
}
