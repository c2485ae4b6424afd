//! `herald bench`: a `herald serve` child process (embedded SQLite + sandbox gateway) loaded
//! over loopback HTTP by this process. Hand-offs are read from the sandbox's send log, so the
//! server runs exactly as it ships, and its memory is measured apart from the load's.

mod inbound;
mod send_log;
mod server;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use shared::domain::MessageId;

use crate::cli::BenchArgs;
use send_log::SendLog;
use server::Server;

/// The figures of a run, printed one per line at the end for scripts (`name value`).
#[derive(Default)]
struct Figures {
    lines: Vec<(&'static str, f64)>,
    server_peak_rss_mb: f64,
}

impl Figures {
    fn add(&mut self, name: &'static str, value: f64) {
        self.lines.push((name, value));
    }

    fn server_stopped(&mut self, rss_mb: f64) {
        self.server_peak_rss_mb = self.server_peak_rss_mb.max(rss_mb);
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Waits for tasks that each time their calls (ms); returns the rate since `started`, p50,
/// p99 and the number of calls.
async fn timed(
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<Vec<f64>>>>,
    started: Instant,
) -> anyhow::Result<(f64, f64, f64, usize)> {
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    let rate = lat.len() as f64 / started.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    Ok((
        rate,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.len(),
    ))
}

fn single_body(priority: &str, i: usize) -> Value {
    json!({ "channel": "email", "priority": priority, "to": format!("user{i}@example.com"),
            "subject": "Your code", "body": format!("Code {i}") })
}

/// The bulk request bodies for recipients `from..to`, 10,000 per request.
fn bulk_bodies(priority: &str, from: usize, to: usize) -> Vec<Vec<u8>> {
    (from..to)
        .step_by(10_000)
        .map(|first| {
            let recipients: Vec<Value> = (first..to.min(first + 10_000))
                .map(|i| json!({ "to": format!("reader{i}@example.com"), "data": { "name": format!("Reader {i}") } }))
                .collect();
            let body = json!({ "channel": "email", "priority": priority, "subject": "Weekly news",
                               "body": "Hello, here is the news.", "recipients": recipients });
            body.to_string().into_bytes()
        })
        .collect()
}

/// Posts bulk request bodies one after another, each to its 202.
async fn post_bulk(
    client: &reqwest::Client,
    s: &Server,
    bodies: Vec<Vec<u8>>,
) -> anyhow::Result<()> {
    for body in bodies {
        let res = client
            .post(format!("{}/v1/messages/bulk", s.url))
            .bearer_auth(&s.key)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        if res.status() != 202 {
            bail!(
                "bulk accept failed: {} {}",
                res.status(),
                res.text().await.unwrap_or_default()
            );
        }
    }
    Ok(())
}

/// Posts bulk request bodies from `clients` clients at once, each posting its share in turn.
async fn post_bulk_concurrently(
    client: &reqwest::Client,
    s: &Server,
    bodies: Vec<Vec<u8>>,
    clients: usize,
) -> anyhow::Result<()> {
    let clients = clients.max(1);
    let mut shares: Vec<Vec<Vec<u8>>> = (0..clients).map(|_| Vec::new()).collect();
    for (i, body) in bodies.into_iter().enumerate() {
        shares[i % clients].push(body);
    }
    let posting = shares.into_iter().map(|share| post_bulk(client, s, share));
    futures::future::try_join_all(posting).await?;
    Ok(())
}

/// Accepts `total` bulk recipients, building each request just before it is sent (so a large
/// backlog does not sit in this process's memory).
async fn bulk(
    client: &reqwest::Client,
    s: &Server,
    priority: &str,
    total: usize,
) -> anyhow::Result<()> {
    for first in (0..total).step_by(10_000) {
        post_bulk(
            client,
            s,
            bulk_bodies(priority, first, total.min(first + 10_000)),
        )
        .await?;
    }
    Ok(())
}

/// Waits until `n` accepted messages are queued: part of the bulk figure, so the rate counts
/// recipients stored, not only accepted (a backend may write them after its 202).
async fn wait_stored(client: &reqwest::Client, s: &Server, n: usize) -> anyhow::Result<()> {
    while s.backlog(client, Some("P3")).await? < n as u64 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// One client's run of single sends; their latencies in ms.
async fn single_client(
    client: reqwest::Client,
    s: Arc<Server>,
    first: usize,
    count: usize,
) -> anyhow::Result<Vec<f64>> {
    let mut lat = Vec::with_capacity(count);
    for i in first..first + count {
        let t = Instant::now();
        let res = client
            .post(format!("{}/v1/messages", s.url))
            .bearer_auth(&s.key)
            .json(&single_body("P4", i))
            .send()
            .await?;
        if res.status() != 202 {
            bail!("send failed: {}", res.status());
        }
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(lat)
}

async fn bench_single(args: &BenchArgs, dir: &Path, figures: &mut Figures) -> anyhow::Result<()> {
    let s = Arc::new(Server::start(args, dir, true, None).await?);
    let client = reqwest::Client::new();
    let clients = args.concurrency.max(1);
    let per_client = args.requests.div_ceil(clients);
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            tokio::spawn(single_client(
                client.clone(),
                s.clone(),
                c * per_client,
                per_client,
            ))
        })
        .collect();
    let (rate, p50, p99, n) = timed(tasks, started).await?;
    println!(
        "single send (HTTP, {clients} clients): {rate:.0} req/s  p50 {p50:.2} ms  p99 {p99:.2} ms  ({n} requests)"
    );
    figures.add("single_send_req_per_s", rate);
    figures.add("single_send_p50_ms", p50);
    figures.add("single_send_p99_ms", p99);
    let s = Arc::try_unwrap(s).map_err(|_| anyhow::anyhow!("a client still holds the server"))?;
    figures.server_stopped(s.stop().await?);
    Ok(())
}

async fn bench_bulk_and_drain(
    args: &BenchArgs,
    dir: &Path,
    figures: &mut Figures,
) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let s = Server::start(args, dir, false, None).await?;
    // Built before the clock starts: the load generator's JSON is not the server's work.
    let bodies = bulk_bodies("P3", 0, args.bulk_recipients);
    let started = Instant::now();
    post_bulk_concurrently(&client, &s, bodies, args.bulk_clients).await?;
    wait_stored(&client, &s, args.bulk_recipients).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let rate = args.bulk_recipients as f64 / elapsed;
    let clients = match args.bulk_clients.max(1) {
        1 => "1 client".to_owned(),
        n => format!("{n} clients"),
    };
    println!(
        "bulk accept (HTTP, 10,000 per request, {clients}): {rate:.0} recipients/s  ({} recipients in {elapsed:.2} s)",
        args.bulk_recipients
    );
    figures.add("bulk_accept_recipients_per_s", rate);
    let key = s.key.clone();
    figures.server_stopped(s.stop().await?);

    // Drain what was accepted: workers on, until every message is handed over and recorded.
    let total = args.bulk_recipients.max(1);
    let s = Server::start(args, dir, true, Some(&key)).await?;
    let mut log = SendLog::new(&s.dir);
    let started = Instant::now();
    loop {
        log.read_new(&mut HashMap::new())?;
        if log.lines >= total && s.backlog(&client, None).await? == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        if started.elapsed() > Duration::from_secs(600) {
            bail!("drain did not finish in 10 minutes");
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let rate = log.lines as f64 / elapsed;
    println!(
        "drain (queued -> handed to gateway -> recorded sent, durable): {rate:.0} messages/s  ({} messages in {elapsed:.2} s)",
        log.lines
    );
    figures.add("drain_msgs_per_s", rate);
    figures.server_stopped(s.stop().await?);
    Ok(())
}

/// Sends P0 and P4 probes while the backlog drains; their accept times (micros) by id.
async fn send_probes(
    client: &reqwest::Client,
    s: &Server,
    probes: usize,
) -> anyhow::Result<Vec<(MessageId, &'static str, i64)>> {
    let mut accepted = Vec::with_capacity(probes * 2);
    for i in 0..probes * 2 {
        let priority = if i % 2 == 0 { "P0" } else { "P4" };
        let before = chrono::Utc::now().timestamp_micros();
        let res: Value = client
            .post(format!("{}/v1/messages", s.url))
            .bearer_auth(&s.key)
            .json(&single_body(priority, i))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let id = res["id"]
            .as_str()
            .and_then(MessageId::parse)
            .context("no id in response")?;
        accepted.push((id, priority, before));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(accepted)
}

async fn bench_dwell(args: &BenchArgs, dir: &Path, figures: &mut Figures) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let s = Server::start(args, dir, false, None).await?;
    let t = Instant::now();
    bulk(&client, &s, "P3", args.backlog).await?;
    wait_stored(&client, &s, args.backlog).await?;
    println!(
        "loaded a P3 backlog of {} in {:.1} s",
        args.backlog,
        t.elapsed().as_secs_f64()
    );
    let key = s.key.clone();
    figures.server_stopped(s.stop().await?);

    let s = Server::start(args, dir, true, Some(&key)).await?;
    tokio::time::sleep(Duration::from_millis(500)).await; // P3 workers are busy draining now
    let p3_before = s.backlog(&client, Some("P3")).await?;
    let probing = Instant::now();
    let accepted = send_probes(&client, &s, args.probes).await?;
    let p3_left = s.backlog(&client, Some("P3")).await?;
    let p3_rate = p3_before.saturating_sub(p3_left) as f64 / probing.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut watch: HashMap<MessageId, Option<i64>> =
        accepted.iter().map(|(id, _, _)| (*id, None)).collect();
    SendLog::new(&s.dir).read_new(&mut watch)?;
    for lane in ["P0", "P4"] {
        let mut dwell: Vec<f64> = accepted
            .iter()
            .filter(|(_, p, _)| *p == lane)
            .filter_map(|(id, _, at)| {
                watch
                    .get(id)
                    .copied()
                    .flatten()
                    .map(|h| (h - at) as f64 / 1000.0)
            })
            .collect();
        let missing = args.probes - dwell.len();
        dwell.sort_by(f64::total_cmp);
        let (p50, p99) = (percentile(&dwell, 0.5), percentile(&dwell, 0.99));
        println!(
            "{lane} dwell behind a {} P3 backlog (accept -> gateway): p50 {p50:.2} ms  p99 {p99:.2} ms  max {:.2} ms  ({} probes{})",
            args.backlog,
            dwell.last().copied().unwrap_or(0.0),
            dwell.len(),
            if missing > 0 { format!(", {missing} not handed over yet") } else { String::new() }
        );
        let (p50_name, p99_name) = match lane {
            "P0" => ("p0_dwell_p50_ms", "p0_dwell_p99_ms"),
            _ => ("p4_dwell_p50_ms", "p4_dwell_p99_ms"),
        };
        figures.add(p50_name, p50);
        figures.add(p99_name, p99);
        figures.add(
            if lane == "P0" {
                "p0_probes_missing"
            } else {
                "p4_probes_missing"
            },
            missing as f64,
        );
    }
    // Dwell figures compare only at the same bulk load: how fast the backlog drained meanwhile.
    println!(
        "P3 backlog drained during the probes: {p3_rate:.0} messages/s ({p3_before} queued when they started, {p3_left} when they finished{})",
        if p3_left == 0 { "; later probes met no backlog and the rate is a lower bound: raise --backlog" } else { "" }
    );
    figures.add("p3_drain_during_probes_msgs_per_s", p3_rate);
    figures.add("p3_left_after_probes", p3_left as f64);
    figures.server_stopped(s.stop().await?);
    Ok(())
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let root: PathBuf = args
        .data_dir
        .clone()
        .unwrap_or_else(|| tmp.path().to_owned());
    println!(
        "herald bench: a `herald serve` child process (embedded SQLite + sandbox gateway), data in {}",
        root.display()
    );
    let mut figures = Figures::default();
    bench_single(&args, &root.join("single"), &mut figures).await?;
    bench_bulk_and_drain(&args, &root.join("bulk"), &mut figures).await?;
    bench_dwell(&args, &root.join("dwell"), &mut figures).await?;
    if args.inbound > 0 {
        inbound::bench_inbound(&args, &root.join("inbound"), &mut figures).await?;
    }
    let own_rss = server::peak_rss_mb("/proc/self/status");
    println!(
        "peak RSS: server {:.0} MB (the `herald serve` child, highest of its runs), load generator {own_rss:.0} MB",
        figures.server_peak_rss_mb
    );
    figures.add("server_peak_rss_mb", figures.server_peak_rss_mb);
    figures.add("bench_peak_rss_mb", own_rss);
    println!("# figures (name value)");
    for (name, value) in &figures.lines {
        println!("{name} {value:.2}");
    }
    Ok(())
}
