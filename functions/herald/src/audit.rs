//! `herald audit export` (a tenant's audit log as CSV, streamed from a running server) and
//! `herald audit platform` (the platform's log, read from the store itself). Both write to
//! standard output or a file, a chunk at a time: an export has no row limit.

use std::io::Write;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use serde_json::Value;
use shared::domain::audit::{Actor, AuditAction};
use shared::domain::suppression::Scope;
use shared::engine::audit_csv::{csv_rows, CSV_HEADER};
use shared::ports::AuditFilter;

use crate::cli::{AuditCommand, AuditFilterArgs, Remote, StoreLocation};
use crate::store::DirectStore;

pub async fn run(cmd: AuditCommand) -> anyhow::Result<()> {
    match cmd {
        AuditCommand::Export { remote, filters } => export(&remote, &filters).await,
        AuditCommand::Platform { store, filters } => platform(&store, &filters).await,
    }
}

/// Where the CSV goes.
fn output(args: &AuditFilterArgs) -> anyhow::Result<Box<dyn Write>> {
    Ok(match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    })
}

async fn export(remote: &Remote, args: &AuditFilterArgs) -> anyhow::Result<()> {
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
    // No overall timeout: a large log takes as long as it takes.
    let client = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .build()?;
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
    let mut out = output(args)?;
    let mut lines = 0usize;
    while let Some(chunk) = res.chunk().await.context("the export broke off")? {
        lines += chunk.iter().filter(|b| **b == b'\n').count();
        out.write_all(&chunk)?;
    }
    out.flush()?;
    eprintln!("{} entries", lines.saturating_sub(1));
    Ok(())
}

/// The flags as the store's filter; a bad value is named.
fn filter_of(args: &AuditFilterArgs) -> anyhow::Result<AuditFilter> {
    let time = |flag: &str, v: &Option<String>| -> anyhow::Result<Option<DateTime<Utc>>> {
        v.as_deref()
            .map(|t| {
                DateTime::parse_from_rfc3339(t)
                    .map(|t| t.with_timezone(&Utc))
                    .with_context(|| format!("--{flag} must be an RFC 3339 time"))
            })
            .transpose()
    };
    Ok(AuditFilter {
        action: match &args.action {
            Some(a) => {
                Some(AuditAction::parse(a).with_context(|| format!("unknown action {a:?}"))?)
            }
            None => None,
        },
        actor: match &args.actor {
            Some(a) => Some(Actor::parse(a).with_context(|| {
                format!("--actor {a:?} is not key:<prefix>, cli:<user>, system or anonymous")
            })?),
            None => None,
        },
        target: args.target.clone(),
        after: time("created-after", &args.created_after)?,
        before: time("created-before", &args.created_before)?,
    })
}

async fn platform(location: &StoreLocation, args: &AuditFilterArgs) -> anyhow::Result<()> {
    let filter = filter_of(args)?;
    let store = DirectStore::open(location).await?;
    let written = write_platform_log(&store, &filter, output(args)?).await;
    store.close();
    eprintln!("{} entries", written?);
    Ok(())
}

async fn write_platform_log(
    store: &DirectStore,
    filter: &AuditFilter,
    mut out: Box<dyn Write>,
) -> anyhow::Result<usize> {
    out.write_all(CSV_HEADER.as_bytes())?;
    let (mut cursor, mut written) = (None, 0);
    loop {
        let page = store
            .audit()
            .audit_page(&Scope::Global, filter, cursor, 1_000)
            .await?;
        out.write_all(&csv_rows(&page.items)?)?;
        written += page.items.len();
        match page.resume_below {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    out.flush()?;
    Ok(written)
}
