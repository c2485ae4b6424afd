//! What keeps forged webhooks from hurting: failed verifications are counted per client address
//! (never a source's shared budget, so forgeries cannot crowd out genuine callbacks), their log
//! lines are limited per source, and attacker-controlled text in a log line is clipped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request};
use parking_lot::Mutex;

/// Clients whose failures are remembered at once; past it, refilled and then stale ones go.
const MAX_CLIENTS: usize = 10_000;
/// Characters of an attacker-controlled value that reach a log line or an answer.
pub(super) const CLIP_CHARS: usize = 64;
/// Refusal log lines per source and minute; the rest are counted and summed up.
const LOG_LINES_PER_MINUTE: u32 = 20;
const LOG_WINDOW: Duration = Duration::from_secs(60);

/// The client a request came from: the peer address when the server records it (`herald
/// serve`, and on Lambda the source IP API Gateway saw), else the last `X-Forwarded-For` hop
/// (the one the nearest proxy added; earlier hops are whatever the client wrote), else
/// `unknown`.
pub(super) fn client_address(request: &Request) -> String {
    if let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>() {
        return peer.ip().to_string();
    }
    request
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .rfind(|hop| !hop.is_empty())
        .map(clip)
        .unwrap_or_else(|| "unknown".to_owned())
}

/// At most [`CLIP_CHARS`] characters of `value`, control characters replaced, so a request
/// cannot fill or forge log lines.
pub(super) fn clip(value: &str) -> String {
    let mut clipped: String = value
        .chars()
        .take(CLIP_CHARS)
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect();
    if value.chars().nth(CLIP_CHARS).is_some() {
        clipped.push('…');
    }
    clipped
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets of failed verifications, one per client address.
pub(super) struct Failures {
    per_second: f64,
    burst: f64,
    clients: Mutex<HashMap<String, Bucket>>,
}

impl Failures {
    pub(super) fn new(per_second: f64) -> Failures {
        Failures {
            per_second,
            burst: per_second * 2.0,
            clients: Mutex::new(HashMap::new()),
        }
    }

    fn refill(&self, bucket: &mut Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
        bucket.at = now;
    }

    /// Spends one of `client`'s tokens for a failed verification; without one, how long until
    /// the next.
    pub(super) fn spend(&self, client: &str, now: Instant) -> Option<Duration> {
        let mut clients = self.clients.lock();
        if !clients.contains_key(client) && clients.len() >= MAX_CLIENTS {
            self.make_room(&mut clients, now);
        }
        let bucket = clients.entry(client.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        self.refill(bucket, now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return None;
        }
        Some(Duration::from_secs_f64(
            (1.0 - bucket.tokens) / self.per_second,
        ))
    }

    /// Whether `client` has no failures left: it is still heard (a valid signature passes),
    /// but nothing costly is done on its word alone.
    pub(super) fn exhausted(&self, client: &str, now: Instant) -> bool {
        let mut clients = self.clients.lock();
        match clients.get_mut(client) {
            Some(bucket) => {
                self.refill(bucket, now);
                bucket.tokens < 1.0
            }
            None => false,
        }
    }

    /// Forgets clients whose buckets are full again; if none is, the stalest one.
    fn make_room(&self, clients: &mut HashMap<String, Bucket>, now: Instant) {
        let full_after = Duration::from_secs_f64(self.burst / self.per_second);
        clients.retain(|_, b| now.saturating_duration_since(b.at) < full_after);
        if clients.len() >= MAX_CLIENTS {
            let stalest = clients
                .iter()
                .min_by_key(|(_, b)| b.at)
                .map(|(k, _)| k.clone());
            if let Some(key) = stalest {
                clients.remove(&key);
            }
        }
    }

    #[cfg(test)]
    fn clients(&self) -> usize {
        self.clients.lock().len()
    }
}

/// Whether to write a refusal's log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LogLine {
    /// Write it; `held` lines of this source were held back in the window before.
    Write { held: u64 },
    /// The first line over the limit in this window: say that the rest are only counted.
    Limit,
    /// Hold it back (counted).
    Hold,
}

struct Window {
    started: Instant,
    written: u32,
    held: u64,
}

/// At most [`LOG_LINES_PER_MINUTE`] refusal lines per source and minute.
#[derive(Default)]
pub(super) struct LogLimit {
    windows: Mutex<HashMap<&'static str, Window>>,
}

impl LogLimit {
    pub(super) fn line(&self, source: &'static str, now: Instant) -> LogLine {
        let mut windows = self.windows.lock();
        let w = windows.entry(source).or_insert(Window {
            started: now,
            written: 0,
            held: 0,
        });
        let mut held_before = 0;
        if now.saturating_duration_since(w.started) >= LOG_WINDOW {
            held_before = w.held;
            *w = Window {
                started: now,
                written: 0,
                held: 0,
            };
        }
        if w.written < LOG_LINES_PER_MINUTE {
            w.written += 1;
            return LogLine::Write { held: held_before };
        }
        w.held += 1;
        if w.held == 1 {
            LogLine::Limit
        } else {
            LogLine::Hold
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipping_keeps_a_short_prefix_on_char_boundaries() {
        assert_eq!(clip("short"), "short");
        let long = "é".repeat(100);
        let clipped = clip(&long);
        assert_eq!(clipped.chars().count(), CLIP_CHARS + 1);
        assert!(clipped.starts_with(&"é".repeat(CLIP_CHARS)));
        assert!(clipped.ends_with('…'));
        assert_eq!(clip(&"a".repeat(CLIP_CHARS)), "a".repeat(CLIP_CHARS));
        assert_eq!(clip("line\nforged: yes"), "line\u{fffd}forged: yes");
    }

    #[test]
    fn the_client_is_the_peer_else_the_nearest_proxys_hop() {
        use axum::body::Body;
        let request = |xff: Option<&str>| {
            let mut r = Request::builder();
            if let Some(v) = xff {
                r = r.header("x-forwarded-for", v);
            }
            r.body(Body::empty()).unwrap()
        };
        let mut with_peer = request(Some("203.0.113.9"));
        let peer: SocketAddr = "192.0.2.1:4242".parse().unwrap();
        with_peer.extensions_mut().insert(ConnectInfo(peer));
        assert_eq!(client_address(&with_peer), "192.0.2.1");
        // The client may write any first hop; the proxy appends the address it saw.
        assert_eq!(
            client_address(&request(Some("198.51.100.77, 203.0.113.9"))),
            "203.0.113.9"
        );
        assert_eq!(client_address(&request(None)), "unknown");
    }

    #[test]
    fn failures_are_limited_per_client() {
        let failures = Failures::new(2.0);
        let t0 = Instant::now();
        for _ in 0..4 {
            assert_eq!(failures.spend("198.51.100.1", t0), None);
        }
        let wait = failures.spend("198.51.100.1", t0).expect("over the burst");
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(500));
        assert!(failures.exhausted("198.51.100.1", t0));
        assert!(!failures.exhausted("198.51.100.2", t0), "another client");
        assert_eq!(failures.spend("198.51.100.2", t0), None);
        let later = t0 + Duration::from_millis(500);
        assert_eq!(failures.spend("198.51.100.1", later), None, "refilled");
    }

    #[test]
    fn failures_remember_a_bounded_number_of_clients() {
        let failures = Failures::new(1.0);
        let t0 = Instant::now();
        for i in 0..MAX_CLIENTS + 50 {
            failures.spend(&format!("client-{i}"), t0);
        }
        assert_eq!(failures.clients(), MAX_CLIENTS);
        // Once their buckets are full again, the old clients make room all at once.
        failures.spend("newcomer", t0 + Duration::from_secs(3));
        assert_eq!(failures.clients(), 1);
    }

    #[test]
    fn log_lines_are_limited_per_source_and_summed_up() {
        let limit = LogLimit::default();
        let t0 = Instant::now();
        for _ in 0..LOG_LINES_PER_MINUTE {
            assert_eq!(limit.line("twilio", t0), LogLine::Write { held: 0 });
        }
        assert_eq!(limit.line("twilio", t0), LogLine::Limit);
        for _ in 0..1000 {
            assert_eq!(limit.line("twilio", t0), LogLine::Hold);
        }
        assert_eq!(
            limit.line("sns", t0),
            LogLine::Write { held: 0 },
            "per source"
        );
        let next = t0 + LOG_WINDOW;
        assert_eq!(limit.line("twilio", next), LogLine::Write { held: 1001 });
        assert_eq!(limit.line("twilio", next), LogLine::Write { held: 0 });
    }
}
