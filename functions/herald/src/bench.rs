//! `herald bench`: the embedded engine with the sandbox gateway, measured over loopback HTTP.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use shared::domain::{MessageId, Priority};
use shared::embedded::{Embedded, EmbeddedConfig};

use crate::cli::BenchArgs;

struct Server {
    embedded: Embedded,
    url: String,
    key: String,
    task: tokio::task::JoinHandle<()>,
}

async fn start(args: &BenchArgs, dir: &Path, workers: bool) -> anyhow::Result<Server> {
    let mut cfg = EmbeddedConfig::new(dir);
    if let Some(spec) = &args.lane_workers {
        crate::config::apply_lane_workers(&mut cfg.engine, spec)?;
    }
    cfg.run_workers = workers;
    cfg.sandbox.record_handoffs = true;
    cfg.sandbox.callback_delay = Duration::from_millis(5);
    let embedded = Embedded::start(cfg).await?;
    let tenant = shared::domain::TenantId::parse("bench").map_err(anyhow::Error::msg)?;
    let key = shared::embedded::create_key(embedded.herald.tenants.as_ref(), &tenant)
        .await?
        .expose();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let router = embedded.router();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(Server {
        embedded,
        url,
        key,
        task,
    })
}

impl Server {
    async fn stop(self) {
        self.task.abort();
        self.embedded.shutdown().await;
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(str::to_owned)
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn single_body(priority: &str, i: usize) -> Value {
    json!({ "channel": "email", "priority": priority, "to": format!("user{i}@example.com"),
            "subject": "Your code", "body": format!("Code {i}") })
}

async fn bulk(
    client: &reqwest::Client,
    s: &Server,
    priority: &str,
    total: usize,
) -> anyhow::Result<()> {
    let mut sent = 0;
    while sent < total {
        let n = (total - sent).min(10_000);
        let recipients: Vec<Value> = (sent..sent + n)
            .map(|i| json!({ "to": format!("reader{i}@example.com"), "data": { "name": format!("Reader {i}") } }))
            .collect();
        let body = json!({ "channel": "email", "priority": priority, "subject": "Weekly news",
                           "body": "Hello, here is the news.", "recipients": recipients });
        let res = client
            .post(format!("{}/v1/messages/bulk", s.url))
            .bearer_auth(&s.key)
            .json(&body)
            .send()
            .await?;
        if res.status() != 202 {
            bail!(
                "bulk accept failed: {} {}",
                res.status(),
                res.text().await.unwrap_or_default()
            );
        }
        sent += n;
    }
    Ok(())
}

async fn bench_single(args: &BenchArgs, dir: &Path) -> anyhow::Result<()> {
    let s = Arc::new(start(args, dir, true).await?);
    let client = reqwest::Client::new();
    let per_client = args.requests.div_ceil(args.concurrency.max(1));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..args.concurrency.max(1) {
        let (client, s) = (client.clone(), s.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_client);
            for i in 0..per_client {
                let t = Instant::now();
                let res = client
                    .post(format!("{}/v1/messages", s.url))
                    .bearer_auth(&s.key)
                    .json(&single_body("P4", c * per_client + i))
                    .send()
                    .await;
                match res {
                    Ok(r) if r.status() == 202 => lat.push(t.elapsed().as_secs_f64() * 1000.0),
                    Ok(r) => return Err(anyhow::anyhow!("send failed: {}", r.status())),
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    println!(
        "single send (HTTP, {} clients): {:.0} req/s  p50 {:.2} ms  p99 {:.2} ms  ({} requests)",
        args.concurrency,
        lat.len() as f64 / elapsed,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.len()
    );
    if let Ok(s) = Arc::try_unwrap(s) {
        s.stop().await;
    }
    Ok(())
}

async fn bench_bulk_and_drain(args: &BenchArgs, dir: &Path) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let s = start(args, dir, false).await?;
    let started = Instant::now();
    bulk(&client, &s, "P3", args.bulk_recipients).await?;
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "bulk accept (HTTP, 10,000 per request): {:.0} recipients/s  ({} recipients in {:.2} s)",
        args.bulk_recipients as f64 / elapsed,
        args.bulk_recipients,
        elapsed
    );
    s.stop().await;

    // Drain what was accepted: workers on, until every message is handed over and recorded.
    let total = args.bulk_recipients.min(args.drain).max(1);
    let s = start(args, dir, true).await?;
    let started = Instant::now();
    // Watch the in-memory hand-off count (cheap); confirm with the queue stats (a scan of the
    // queue table) only once everything was handed over, so the measuring costs no CPU.
    loop {
        if s.embedded.handoffs.lock().len() >= total {
            let stats = s
                .embedded
                .herald
                .queue
                .stats(chrono::Utc::now(), None)
                .await?;
            if stats.iter().all(|l| l.depth + l.in_flight == 0) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        if started.elapsed() > Duration::from_secs(600) {
            bail!("drain did not finish in 10 minutes");
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let handed = s.embedded.handoffs.lock().len();
    println!(
        "drain (queued -> handed to gateway -> recorded sent, durable): {:.0} messages/s  ({handed} messages in {:.2} s)",
        handed as f64 / elapsed,
        elapsed
    );
    s.stop().await;
    Ok(())
}

async fn bench_dwell(args: &BenchArgs, dir: &Path) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let s = start(args, dir, false).await?;
    let t = Instant::now();
    bulk(&client, &s, "P3", args.backlog).await?;
    println!(
        "loaded a P3 backlog of {} in {:.1} s",
        args.backlog,
        t.elapsed().as_secs_f64()
    );
    s.stop().await;

    let s = start(args, dir, true).await?;
    tokio::time::sleep(Duration::from_millis(500)).await; // P3 workers are busy draining now
    let mut accepted: Vec<(MessageId, Priority, i64)> = Vec::new();
    for i in 0..args.probes * 2 {
        let priority = if i % 2 == 0 { "P0" } else { "P4" };
        let before = chrono::Utc::now().timestamp_micros();
        let res: Value = client
            .post(format!("{}/v1/messages", s.url))
            .bearer_auth(&s.key)
            .json(&single_body(priority, i))
            .send()
            .await?
            .json()
            .await?;
        let id = res["id"]
            .as_str()
            .and_then(MessageId::parse)
            .context("no id in response")?;
        accepted.push((
            id,
            Priority::parse(priority).unwrap_or(Priority::P0),
            before,
        ));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let handoffs = s.embedded.handoffs.lock().clone();
    let stats = s
        .embedded
        .herald
        .queue
        .stats(chrono::Utc::now(), None)
        .await?;
    let p3_left = stats
        .iter()
        .find(|l| l.lane == Priority::P3)
        .map(|l| l.depth)
        .unwrap_or(0);
    for lane in [Priority::P0, Priority::P4] {
        let mut dwell: Vec<f64> = accepted
            .iter()
            .filter(|(_, p, _)| *p == lane)
            .filter_map(|(id, _, at)| {
                handoffs
                    .iter()
                    .find(|h| h.message_id == *id)
                    .map(|h| (h.at_micros - at) as f64 / 1000.0)
            })
            .collect();
        let missing = args.probes - dwell.len();
        dwell.sort_by(f64::total_cmp);
        println!(
            "{lane} dwell behind a {} P3 backlog (accept -> gateway): p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  ({} probes{})",
            args.backlog,
            percentile(&dwell, 0.5),
            percentile(&dwell, 0.99),
            dwell.last().copied().unwrap_or(0.0),
            dwell.len(),
            if missing > 0 { format!(", {missing} not handed over yet") } else { String::new() }
        );
    }
    println!("P3 backlog still queued when the probes finished: {p3_left}");
    s.stop().await;
    Ok(())
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let root: PathBuf = args
        .data_dir
        .clone()
        .unwrap_or_else(|| tmp.path().to_owned());
    println!(
        "herald bench: embedded SQLite + sandbox gateway, data in {}",
        root.display()
    );
    bench_single(&args, &root.join("single")).await?;
    bench_bulk_and_drain(&args, &root.join("bulk")).await?;
    bench_dwell(&args, &root.join("dwell")).await?;
    println!("peak RSS: {:.0} MB", peak_rss_mb());
    Ok(())
}
