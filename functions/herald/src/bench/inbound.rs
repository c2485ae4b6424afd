//! The inbound phase: messages received from recipients stored and threaded (identity ->
//! contact -> thread, in the writer job that stores each) straight on the embedded store,
//! from many tasks and a few thousand senders, as webhooks would deliver them.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use shared::domain::inbound::Arrival;
use shared::domain::{Channel, InboundMessage, TenantId};
use shared::ports::InboundStore;
use shared::sqlite::SqliteBackend;

use super::{timed, Figures};
use crate::cli::BenchArgs;

/// Senders the messages come from: most of them write more than once, as in a conversation.
const SENDERS: usize = 2_000;
const TASKS: usize = 32;

fn message(tenant: &TenantId, i: usize) -> InboundMessage {
    let arrival = Arrival {
        tenant: tenant.clone(),
        channel: Channel::Sms,
        gateway: "twilio".into(),
        provider_message_id: format!("SM-bench-{i}"),
        from: format!("+1415555{:04}", i % SENDERS),
        to: "+15557654321".into(),
    };
    InboundMessage::arrived(arrival, format!("Is the flat still free? ({i})"))
}

async fn record(
    store: Arc<SqliteBackend>,
    tenant: TenantId,
    ids: Vec<usize>,
) -> anyhow::Result<Vec<f64>> {
    let mut lat = Vec::with_capacity(ids.len());
    for i in ids {
        let t = Instant::now();
        store
            .record_inbound(&message(&tenant, i), &Default::default())
            .await?;
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(lat)
}

pub async fn bench_inbound(
    args: &BenchArgs,
    dir: &Path,
    figures: &mut Figures,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let store = Arc::new(SqliteBackend::open(&dir.join("herald.db"))?);
    let tenant = TenantId::parse("bench").map_err(anyhow::Error::msg)?;
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let ids = (0..args.inbound).filter(|i| i % TASKS == t).collect();
            tokio::spawn(record(store.clone(), tenant.clone(), ids))
        })
        .collect();
    let (rate, p50, p99, n) = timed(tasks, started).await?;
    println!(
        "inbound stored and threaded (SQLite, {TASKS} tasks, {SENDERS} senders): {rate:.0} msg/s  p50 {p50:.2} ms  p99 {p99:.2} ms  ({n} messages)"
    );
    figures.add("inbound_msg_per_s", rate);
    figures.add("inbound_p50_ms", p50);
    figures.add("inbound_p99_ms", p99);
    Ok(())
}
