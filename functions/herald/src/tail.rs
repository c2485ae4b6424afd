//! `herald tail`: follows the tenant's events over `GET /v1/events/stream`. A connection ends
//! when the server's stream window closes (or the network drops it); this reconnects with the
//! last event's id, so nothing the server kept is missed or shown twice.

use std::time::Duration;

use anyhow::bail;
use serde_json::Value;

use crate::cli::TailArgs;

/// What one server-sent event carried.
#[derive(Debug, Default, PartialEq)]
struct SseEvent {
    event: String,
    id: Option<String>,
    data: String,
}

/// Splits a byte stream into events at blank lines (the SSE framing).
#[derive(Default)]
struct SseParser {
    /// Bytes, not text: a chunk may end inside a character.
    buf: Vec<u8>,
    current: SseEvent,
}

impl SseParser {
    fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
            let raw: Vec<u8> = self.buf.drain(..=end).collect();
            let line = String::from_utf8_lossy(&raw);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                let done = std::mem::take(&mut self.current);
                if !done.data.is_empty() || done.event == "open" {
                    out.push(done);
                }
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => self.current.event = value.to_owned(),
                "id" => self.current.id = Some(value.to_owned()),
                "data" if self.current.data.is_empty() => self.current.data = value.to_owned(),
                "data" => {
                    self.current.data.push('\n');
                    self.current.data.push_str(value);
                }
                _ => {} // comments (keep-alives) and retry
            }
        }
        out
    }
}

pub async fn run(args: TailArgs) -> anyhow::Result<()> {
    // No total timeout: a stream stays open; keep-alives arrive every 15 s.
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(60))
        .build()?;
    let url = format!("{}/v1/events/stream", args.remote.url);
    let (mut last, mut shown, mut backoff) = (None::<String>, 0usize, Duration::from_millis(500));
    let mut opened = false;
    loop {
        let mut req = client.get(&url).bearer_auth(&args.remote.api_key);
        if let Some(types) = &args.types {
            req = req.query(&[("types", types)]);
        }
        if let Some(id) = &last {
            req = req.header("last-event-id", id);
        }
        let mut res = match req.send().await {
            Ok(res) => res,
            Err(e) => {
                eprintln!("herald tail: {e}; reconnecting in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        let status = res.status();
        if status == reqwest::StatusCode::NOT_FOUND && last.is_some() {
            eprintln!("herald tail: the stream lapsed; opening a new one (events in between are not shown)");
            last = None;
            continue;
        }
        if !status.is_success() {
            let body: Value = res.json().await.unwrap_or(Value::Null);
            bail!("{status}: {}", body["detail"].as_str().unwrap_or(""));
        }
        backoff = Duration::from_millis(500);
        let mut parser = SseParser::default();
        while let Ok(Some(chunk)) = res.chunk().await {
            for event in parser.push(&chunk) {
                if let Some(id) = event.id.clone() {
                    last = Some(id);
                }
                if event.event == "open" {
                    if !opened {
                        eprintln!("herald tail: following the stream (events from now on)");
                        opened = true;
                    }
                    continue;
                }
                print_event(&event, args.json)?;
                shown += 1;
                if args.max.is_some_and(|max| shown >= max) {
                    return Ok(());
                }
            }
        }
    }
}

fn print_event(event: &SseEvent, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", event.data);
        return Ok(());
    }
    let payload: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
    let data = &payload["data"];
    let what = ["message_id", "to", "status", "address", "from"]
        .iter()
        .filter_map(|k| data[*k].as_str().map(|v| format!("{k}={v}")))
        .collect::<Vec<_>>()
        .join(" ");
    println!(
        "{}  {:<24} {what}",
        payload["timestamp"].as_str().unwrap_or("-"),
        event.event
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_at_blank_lines_across_chunks() {
        let mut p = SseParser::default();
        assert!(p
            .push(b"event: open\nid: s1\nretry: 500\ndata: {}\n")
            .is_empty());
        let open = p.push(b"\n: keep-alive\n\nevent: message.sent\nid: s1.d1\nda");
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].event, "open");
        let sent = p.push(b"ta: {\"a\":1}\r\ndata: x\n\n");
        assert_eq!(
            sent,
            vec![SseEvent {
                event: "message.sent".into(),
                id: Some("s1.d1".into()),
                data: "{\"a\":1}\nx".into(),
            }]
        );
    }
}
