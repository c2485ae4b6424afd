//! `herald messages list` and `herald messages bulk`: message search and bulk progress
//! through a running server.

use serde_json::Value;

use crate::cli::{MessagesCommand, SearchArgs};
use crate::client::{call, http};

pub async fn run(cmd: MessagesCommand) -> anyhow::Result<()> {
    match cmd {
        MessagesCommand::List(args) => list(*args).await,
        MessagesCommand::Bulk { remote, bulk_id } => {
            let url = format!("{}/v1/bulk/{bulk_id}", remote.url);
            let res = call(http()?.get(url), &remote).await?;
            println!("{}", serde_json::to_string_pretty(&res)?);
            Ok(())
        }
    }
}

/// The query parameters the flags give.
fn filters(args: &SearchArgs) -> Vec<(&'static str, String)> {
    [
        ("status", &args.status),
        ("channel", &args.channel),
        ("priority", &args.priority),
        ("to", &args.to),
        ("source_type", &args.source_type),
        ("source_id", &args.source_id),
        ("external_id", &args.external_id),
        ("bulk_id", &args.bulk_id),
        ("created_after", &args.created_after),
        ("created_before", &args.created_before),
    ]
    .into_iter()
    .filter_map(|(name, v)| v.clone().map(|v| (name, v)))
    .collect()
}

/// Prints up to `--max` matches, newest first, one line each (or one JSON object per line).
async fn list(args: SearchArgs) -> anyhow::Result<()> {
    let client = http()?;
    let url = format!("{}/v1/messages", args.remote.url);
    let (mut shown, mut after) = (0usize, None::<String>);
    while shown < args.max {
        let mut query = filters(&args);
        query.push(("limit", (args.max - shown).min(500).to_string()));
        if let Some(a) = after.take() {
            query.push(("after", a));
        }
        let page = call(client.get(&url).query(&query), &args.remote).await?;
        for m in page["items"].as_array().into_iter().flatten() {
            print_message(m, args.json)?;
            shown += 1;
        }
        match page["next_after"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    Ok(())
}

fn print_message(m: &Value, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(m)?);
        return Ok(());
    }
    let text = |k: &str| m[k].as_str().unwrap_or("-").to_owned();
    println!(
        "{}  {}  {:<8} {}  {:<10} {}",
        text("id"),
        text("created_at"),
        text("channel"),
        text("priority"),
        text("status"),
        text("to")
    );
    Ok(())
}
