//! `herald send` and `herald status`: a thin client of the HTTP API.

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Map, Value};

use crate::cli::{Remote, SendArgs, StatusArgs};

/// Recipients per bulk request (the API's maximum).
const BULK_CHUNK: usize = 10_000;

pub fn http() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(120))
        .build()?)
}

pub async fn call(req: reqwest::RequestBuilder, remote: &Remote) -> anyhow::Result<Value> {
    let res = req
        .bearer_auth(&remote.api_key)
        .send()
        .await
        .with_context(|| format!("calling {}", remote.url))?;
    let status = res.status();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let detail = body.get("detail").and_then(Value::as_str).unwrap_or("");
        let errors = body
            .get("errors")
            .map(|e| e.to_string())
            .unwrap_or_default();
        bail!("{status}: {detail} {errors}");
    }
    Ok(body)
}

fn base_body(args: &SendArgs) -> anyhow::Result<Map<String, Value>> {
    let mut body = Map::new();
    body.insert("channel".into(), json!(args.channel));
    body.insert("priority".into(), json!(args.priority));
    for (k, v) in [
        ("from", &args.from),
        ("subject", &args.subject),
        ("body", &args.body),
        ("html", &args.html),
        ("template", &args.template),
        ("send_at", &args.send_at),
    ] {
        if let Some(v) = v {
            body.insert(k.into(), json!(v));
        }
    }
    if let Some(data) = &args.data {
        body.insert(
            "data".into(),
            serde_json::from_str(data).context("--data must be a JSON object")?,
        );
    }
    Ok(body)
}

pub async fn send(args: SendArgs) -> anyhow::Result<()> {
    let client = http()?;
    let mut body = base_body(&args)?;
    let Some(csv_path) = &args.bulk else {
        body.insert("to".into(), json!(args.to));
        let mut req = client
            .post(format!("{}/v1/messages", args.remote.url))
            .json(&body);
        if let Some(k) = &args.idempotency_key {
            req = req.header("Idempotency-Key", k);
        }
        let res = call(req, &args.remote).await?;
        println!("{}", serde_json::to_string_pretty(&res)?);
        return Ok(());
    };
    let recipients = read_recipients(csv_path)?;
    let bar = ProgressBar::new(recipients.len() as u64);
    bar.set_style(ProgressStyle::with_template(
        "{bar:40} {pos}/{len} recipients ({per_sec}, eta {eta})",
    )?);
    let (mut queued, mut suppressed, mut rejected) = (0u64, 0u64, Vec::new());
    for (chunk_no, chunk) in recipients.chunks(BULK_CHUNK).enumerate() {
        body.insert("recipients".into(), json!(chunk));
        let mut req = client
            .post(format!("{}/v1/messages/bulk", args.remote.url))
            .json(&body);
        if let Some(k) = &args.idempotency_key {
            req = req.header("Idempotency-Key", format!("{k}-{chunk_no}"));
        }
        let res = call(req, &args.remote).await?;
        queued += res["queued"].as_u64().unwrap_or(0);
        suppressed += res["suppressed"].as_u64().unwrap_or(0);
        for r in res["rejected"].as_array().into_iter().flatten() {
            let index = r["index"].as_u64().unwrap_or(0) as usize + chunk_no * BULK_CHUNK;
            rejected.push(json!({ "index": index, "reason": r["reason"] }));
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish();
    println!(
        "{}",
        serde_json::to_string_pretty(
            &json!({ "queued": queued, "suppressed": suppressed, "rejected": rejected })
        )?
    );
    Ok(())
}

/// Rows of a CSV with a `to` column; `external_id` is kept apart, other columns become data.
fn read_recipients(path: &std::path::Path) -> anyhow::Result<Vec<Value>> {
    let mut reader =
        csv::Reader::from_path(path).with_context(|| format!("opening {}", path.display()))?;
    let headers = reader.headers()?.clone();
    if !headers.iter().any(|h| h == "to") {
        bail!("{} has no `to` column", path.display());
    }
    let mut out = Vec::new();
    for (line, row) in reader.records().enumerate() {
        let row = row.with_context(|| format!("{} row {}", path.display(), line + 2))?;
        let mut recipient = Map::new();
        let mut data = Map::new();
        for (h, v) in headers.iter().zip(row.iter()) {
            match h {
                "to" | "external_id" => {
                    recipient.insert(h.into(), json!(v));
                }
                _ => {
                    data.insert(h.into(), json!(v));
                }
            }
        }
        if !data.is_empty() {
            recipient.insert("data".into(), Value::Object(data));
        }
        out.push(Value::Object(recipient));
    }
    Ok(out)
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

pub async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let client = http()?;
    let res = call(
        client.get(format!("{}/v1/messages/{}", args.remote.url, args.id)),
        &args.remote,
    )
    .await?;
    println!(
        "{} {} -> {}  [{}]",
        text(&res["id"]),
        text(&res["channel"]),
        text(&res["to"]),
        text(&res["status"])
    );
    for e in res["events"].as_array().into_iter().flatten() {
        println!(
            "  {}  {:<10} {}",
            e["at"].as_str().unwrap_or(""),
            e["type"].as_str().unwrap_or(""),
            e["detail"]
        );
    }
    Ok(())
}
