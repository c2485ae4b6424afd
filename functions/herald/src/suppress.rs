//! `herald suppress`: the tenant's suppression list, through the HTTP API.

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::cli::{SuppressArgs, SuppressCommand};
use crate::client::{call, http};

/// A path segment with the characters an address may hold escaped (`+` above all).
fn segment(raw: &str) -> String {
    raw.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'@' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

pub async fn run(args: SuppressArgs) -> anyhow::Result<()> {
    let client = http()?;
    let base = format!("{}/v1/suppressions", args.remote.url.trim_end_matches('/'));
    match args.command {
        SuppressCommand::Add {
            channel,
            address,
            reason,
            expires_at,
        } => {
            let mut body = json!({ "reason": reason });
            if let Some(at) = expires_at {
                body["expires_at"] = json!(at);
            }
            let url = format!("{base}/{}/{}", segment(&channel), segment(&address));
            let entry = call(client.put(url).json(&body), &args.remote).await?;
            println!("{entry}");
        }
        SuppressCommand::Remove { channel, address } => {
            let url = format!("{base}/{}/{}", segment(&channel), segment(&address));
            call(client.delete(url), &args.remote).await?;
            println!("removed {channel} {address}");
        }
        SuppressCommand::List {
            channel,
            reason,
            global,
        } => {
            let mut after: Option<String> = None;
            loop {
                let mut query = vec![("limit", "1000".to_owned())];
                for (k, v) in [
                    ("channel", &channel),
                    ("reason", &reason),
                    ("after", &after),
                ] {
                    if let Some(v) = v {
                        query.push((k, v.clone()));
                    }
                }
                if global {
                    query.push(("scope", "global".into()));
                }
                let page = call(client.get(&base).query(&query), &args.remote).await?;
                for item in page["items"].as_array().into_iter().flatten() {
                    println!("{item}");
                }
                match page["next_after"].as_str() {
                    Some(next) => after = Some(next.to_owned()),
                    None => break,
                }
            }
        }
        SuppressCommand::Import { file } => {
            let csv =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let report = call(
                client
                    .post(format!("{base}/import"))
                    .header("content-type", "text/csv")
                    .body(csv),
                &args.remote,
            )
            .await?;
            println!("{report}");
            if report["rejected"].as_array().is_some_and(|r| !r.is_empty()) {
                bail!("some rows were rejected (see `rejected` above)");
            }
        }
        SuppressCommand::Export => {
            let res = client
                .get(format!("{base}/export"))
                .bearer_auth(&args.remote.api_key)
                .send()
                .await
                .with_context(|| format!("calling {}", args.remote.url))?;
            let status = res.status();
            let text = res.text().await?;
            if !status.is_success() {
                let detail: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                bail!("{status}: {}", detail["detail"].as_str().unwrap_or(&text));
            }
            print!("{text}");
        }
    }
    Ok(())
}
