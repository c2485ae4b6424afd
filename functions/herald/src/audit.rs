//! `herald audit export`: the tenant's audit log as CSV, streamed from a running server to
//! standard output or a file, a chunk at a time (an export has no row limit).

use std::io::Write;

use anyhow::{bail, Context};
use serde_json::Value;

use crate::cli::{AuditCommand, AuditExportArgs};

pub async fn run(cmd: AuditCommand) -> anyhow::Result<()> {
    match cmd {
        AuditCommand::Export(args) => export(args).await,
    }
}

async fn export(args: AuditExportArgs) -> anyhow::Result<()> {
    let query: Vec<(&str, &String)> = [
        ("action", &args.action),
        ("actor", &args.actor),
        ("target", &args.target),
        ("created_after", &args.created_after),
        ("created_before", &args.created_before),
    ]
    .into_iter()
    .filter_map(|(name, v)| v.as_ref().map(|v| (name, v)))
    .collect();
    // No overall timeout: a large log takes as long as it takes; a stalled one is cut by the
    // server's own limits.
    let client = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .build()?;
    let remote = &args.remote;
    let mut res = client
        .get(format!("{}/v1/audit/export", remote.url))
        .query(&query)
        .bearer_auth(&remote.api_key)
        .send()
        .await
        .with_context(|| format!("calling {}", remote.url))?;
    if !res.status().is_success() {
        let status = res.status();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        bail!(
            "{status}: {} {}",
            body["detail"].as_str().unwrap_or(""),
            body["errors"]
        );
    }
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut rows = 0usize;
    while let Some(chunk) = res.chunk().await.context("the export broke off")? {
        rows += chunk.iter().filter(|b| **b == b'\n').count();
        out.write_all(&chunk)?;
    }
    out.flush()?;
    eprintln!("{} entries", rows.saturating_sub(1));
    Ok(())
}
