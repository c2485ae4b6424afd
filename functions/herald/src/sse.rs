//! Following a server-sent event stream of a running server (`herald tail`, `herald dev
//! forward`). A connection ends when the server's stream window closes (or the network drops
//! it); the follower reconnects with the last event's id, so nothing the server kept is missed
//! or shown twice.

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::bail;
use serde_json::Value;

use crate::cli::Remote;

/// What one server-sent event carried.
#[derive(Debug, Default, PartialEq)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
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

/// Reads a stream's events, reconnecting as needed.
pub struct Follower {
    client: reqwest::Client,
    url: String,
    api_key: String,
    query: Vec<(&'static str, String)>,
    /// Who follows, for messages on stderr (`herald tail`).
    name: &'static str,
    last: Option<String>,
    backoff: Duration,
    opened: bool,
    connection: Option<(reqwest::Response, SseParser)>,
    ready: VecDeque<SseEvent>,
}

impl Follower {
    pub fn new(
        remote: &Remote,
        path: &str,
        query: Vec<(&'static str, String)>,
        name: &'static str,
    ) -> anyhow::Result<Follower> {
        // No total timeout: a stream stays open; keep-alives arrive every 15 s.
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .build()?;
        Ok(Follower {
            client,
            url: format!("{}{path}", remote.url),
            api_key: remote.api_key.clone(),
            query,
            name,
            last: None,
            backoff: Duration::from_millis(500),
            opened: false,
            connection: None,
            ready: VecDeque::new(),
        })
    }

    /// The next event (never the `open` one).
    pub async fn next(&mut self) -> anyhow::Result<SseEvent> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Ok(event);
            }
            let Some((res, parser)) = &mut self.connection else {
                self.connect().await?;
                continue;
            };
            let Ok(Some(chunk)) = res.chunk().await else {
                self.connection = None;
                continue;
            };
            for event in parser.push(&chunk) {
                if let Some(id) = event.id.clone() {
                    self.last = Some(id);
                }
                if event.event != "open" {
                    self.ready.push_back(event);
                } else if !self.opened {
                    eprintln!("{}: following the stream (events from now on)", self.name);
                    self.opened = true;
                }
            }
        }
    }

    async fn connect(&mut self) -> anyhow::Result<()> {
        let mut req = self
            .client
            .get(&self.url)
            .bearer_auth(&self.api_key)
            .query(&self.query);
        if let Some(id) = &self.last {
            req = req.header("last-event-id", id);
        }
        let res = match req.send().await {
            Ok(res) => res,
            Err(e) => {
                eprintln!("{}: {e}; reconnecting in {:?}", self.name, self.backoff);
                tokio::time::sleep(self.backoff).await;
                self.backoff = (self.backoff * 2).min(Duration::from_secs(30));
                return Ok(());
            }
        };
        let status = res.status();
        if status == reqwest::StatusCode::NOT_FOUND && self.last.is_some() {
            eprintln!(
                "{}: the stream lapsed; opening a new one (events in between are not shown)",
                self.name
            );
            self.last = None;
            return Ok(());
        }
        if !status.is_success() {
            let body: Value = res.json().await.unwrap_or(Value::Null);
            bail!("{status}: {}", body["detail"].as_str().unwrap_or(""));
        }
        self.backoff = Duration::from_millis(500);
        self.connection = Some((res, SseParser::default()));
        Ok(())
    }
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
