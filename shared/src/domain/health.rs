//! Gateway health: outcome counts over a window, the state they mean (healthy, degraded, down),
//! and the circuit breaker that takes a down gateway out of routing and tries it again.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What one hand-off came to, as health counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Transient,
    Permanent,
    Throttled,
}

/// Fewer outcomes than this never make a gateway degraded or down.
pub const MIN_VOLUME: u64 = 20;
/// Upper bounds (ms) of the latency histogram's buckets; the last is open.
pub const LATENCY_BUCKETS_MS: [u64; 12] = [
    5,
    10,
    25,
    50,
    100,
    250,
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    u64::MAX,
];

/// Outcomes of a gateway over a window, with a latency histogram (so counts from many
/// processes add up).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeCounts {
    pub success: u64,
    pub transient: u64,
    pub permanent: u64,
    pub throttled: u64,
    pub latency: [u64; 12],
}

impl OutcomeCounts {
    pub fn add(&mut self, outcome: Outcome, latency: Duration) {
        match outcome {
            Outcome::Success => self.success += 1,
            Outcome::Transient => self.transient += 1,
            Outcome::Permanent => self.permanent += 1,
            Outcome::Throttled => self.throttled += 1,
        }
        let ms = latency.as_millis() as u64;
        let bucket = LATENCY_BUCKETS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(11);
        self.latency[bucket] += 1;
    }

    pub fn merge(&mut self, other: &OutcomeCounts) {
        self.success += other.success;
        self.transient += other.transient;
        self.permanent += other.permanent;
        self.throttled += other.throttled;
        for (a, b) in self.latency.iter_mut().zip(other.latency) {
            *a += b;
        }
    }

    pub fn total(&self) -> u64 {
        self.success + self.transient + self.permanent + self.throttled
    }

    /// Transient errors over all outcomes: a permanent error is the recipient's fault, not
    /// the gateway's.
    pub fn error_rate(&self) -> f64 {
        match self.total() {
            0 => 0.0,
            n => self.transient as f64 / n as f64,
        }
    }

    /// The upper bound of the bucket holding the `p` quantile.
    pub fn latency_ms(&self, p: f64) -> f64 {
        let n: u64 = self.latency.iter().sum();
        if n == 0 {
            return 0.0;
        }
        let rank = ((n as f64) * p).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, count) in self.latency.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return match LATENCY_BUCKETS_MS[i] {
                    u64::MAX => LATENCY_BUCKETS_MS[10] as f64,
                    b => b as f64,
                };
            }
        }
        0.0
    }

    pub fn state(&self) -> HealthState {
        match (self.total() >= MIN_VOLUME, self.error_rate()) {
            (true, r) if r >= 0.5 => HealthState::Down,
            (true, r) if r >= 0.1 => HealthState::Degraded,
            _ => HealthState::Healthy,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    Healthy,
    Degraded,
    Down,
}

/// The circuit breaker: closed routes normally; open takes the gateway out of routing; half
/// open lets probe sends through, and one success closes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum Breaker {
    Closed,
    Open { since: DateTime<Utc> },
    HalfOpen { since: DateTime<Utc> },
}

/// What the provider's own health check said (SES GetAccount: sending enabled, quota left).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProbeReport {
    pub ok: bool,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
    pub at: DateTime<Utc>,
}

/// A gateway's health as the health checker last computed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GatewayStatus {
    pub gateway: String,
    pub state: HealthState,
    pub breaker: Breaker,
    pub error_rate: f64,
    pub latency_p50_ms: f64,
    pub latency_p95_ms: f64,
    #[schema(value_type = Object)]
    pub counts: OutcomeCounts,
    pub probe: Option<ProbeReport>,
    /// Outcomes before this are not counted (the breaker last closed then).
    pub window_start: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

impl GatewayStatus {
    pub fn new(gateway: &str, now: DateTime<Utc>) -> GatewayStatus {
        GatewayStatus {
            gateway: gateway.to_owned(),
            state: HealthState::Healthy,
            breaker: Breaker::Closed,
            error_rate: 0.0,
            latency_p50_ms: 0.0,
            latency_p95_ms: 0.0,
            counts: OutcomeCounts::default(),
            probe: None,
            window_start: None,
            updated_at: now,
        }
    }
}

impl GatewayStatus {
    /// This status with counts read now: state, error rate and latency follow them; the
    /// breaker stays as the checker left it.
    pub fn with_counts(mut self, counts: OutcomeCounts) -> GatewayStatus {
        self.state = counts.state();
        if self.probe.as_ref().is_some_and(|p| !p.ok) {
            self.state = HealthState::Down;
        }
        self.error_rate = counts.error_rate();
        self.latency_p50_ms = counts.latency_ms(0.50);
        self.latency_p95_ms = counts.latency_ms(0.95);
        self.counts = counts;
        self
    }
}

/// The breaker's timing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// An open breaker lets probes through after this long.
    pub cooldown: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            cooldown: Duration::from_secs(30),
        }
    }
}

/// The health checker's step: a gateway's new status from its counts and probe.
pub fn next_status(
    previous: Option<&GatewayStatus>,
    gateway: &str,
    counts: OutcomeCounts,
    probe: Option<ProbeReport>,
    config: &BreakerConfig,
    now: DateTime<Utc>,
) -> GatewayStatus {
    let prev = previous
        .cloned()
        .unwrap_or_else(|| GatewayStatus::new(gateway, now));
    let mut state = counts.state();
    if probe.as_ref().is_some_and(|p| !p.ok) {
        state = HealthState::Down;
    }
    let cooled =
        |since: DateTime<Utc>| (now - since).to_std().unwrap_or_default() >= config.cooldown;
    let breaker = match prev.breaker {
        Breaker::Closed if state == HealthState::Down => Breaker::Open { since: now },
        Breaker::Open { since } if cooled(since) => Breaker::HalfOpen { since: now },
        other => other,
    };
    GatewayStatus {
        gateway: gateway.to_owned(),
        state,
        breaker,
        error_rate: counts.error_rate(),
        latency_p50_ms: counts.latency_ms(0.50),
        latency_p95_ms: counts.latency_ms(0.95),
        counts,
        probe: probe.or(prev.probe),
        window_start: prev.window_start,
        updated_at: now,
    }
}

/// A probe send's outcome moves a half-open breaker at once: a success closes it (and starts
/// a fresh window), a transient failure opens it again.
pub fn after_probe(
    mut status: GatewayStatus,
    outcome: Outcome,
    now: DateTime<Utc>,
) -> Option<GatewayStatus> {
    if !matches!(status.breaker, Breaker::HalfOpen { .. }) {
        return None;
    }
    match outcome {
        Outcome::Success => {
            status.breaker = Breaker::Closed;
            status.state = HealthState::Healthy;
            status.counts = OutcomeCounts::default();
            status.error_rate = 0.0;
            status.window_start = Some(now);
        }
        Outcome::Transient => status.breaker = Breaker::Open { since: now },
        Outcome::Permanent | Outcome::Throttled => return None,
    }
    status.updated_at = now;
    Some(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(success: u64, transient: u64) -> OutcomeCounts {
        let mut c = OutcomeCounts::default();
        for _ in 0..success {
            c.add(Outcome::Success, Duration::from_millis(3));
        }
        for _ in 0..transient {
            c.add(Outcome::Transient, Duration::from_millis(40));
        }
        c
    }

    #[test]
    fn states_need_volume_and_follow_the_error_rate() {
        assert_eq!(
            counts(0, 10).state(),
            HealthState::Healthy,
            "too few to judge"
        );
        assert_eq!(counts(0, 20).state(), HealthState::Down);
        assert_eq!(counts(80, 20).state(), HealthState::Degraded);
        assert_eq!(counts(99, 1).state(), HealthState::Healthy);
        let c = counts(90, 10);
        assert_eq!((c.latency_ms(0.5), c.latency_ms(0.95)), (5.0, 50.0));
    }

    #[test]
    fn the_breaker_opens_cools_down_and_closes_on_a_probe() {
        let cfg = BreakerConfig {
            cooldown: Duration::from_secs(10),
        };
        let t0 = Utc::now();
        let down = next_status(None, "ses", counts(0, 30), None, &cfg, t0);
        assert_eq!(down.breaker, Breaker::Open { since: t0 });
        let still = next_status(
            Some(&down),
            "ses",
            counts(0, 30),
            None,
            &cfg,
            t0 + chrono::Duration::seconds(5),
        );
        assert!(matches!(still.breaker, Breaker::Open { .. }));
        let t1 = t0 + chrono::Duration::seconds(11);
        let half = next_status(Some(&still), "ses", counts(0, 30), None, &cfg, t1);
        assert_eq!(half.breaker, Breaker::HalfOpen { since: t1 });
        let reopened = after_probe(half.clone(), Outcome::Transient, t1).unwrap();
        assert!(matches!(reopened.breaker, Breaker::Open { .. }));
        let closed = after_probe(half, Outcome::Success, t1).unwrap();
        assert_eq!(
            (closed.breaker, closed.window_start),
            (Breaker::Closed, Some(t1))
        );
        assert!(
            after_probe(closed, Outcome::Success, t1).is_none(),
            "only half-open moves"
        );
    }

    #[test]
    fn a_failing_provider_probe_is_down() {
        let probe = ProbeReport {
            ok: false,
            detail: serde_json::json!({ "sending_enabled": false }),
            at: Utc::now(),
        };
        let s = next_status(
            None,
            "ses",
            counts(50, 0),
            Some(probe),
            &BreakerConfig::default(),
            Utc::now(),
        );
        assert_eq!(s.state, HealthState::Down);
        assert!(matches!(s.breaker, Breaker::Open { .. }));
    }
}
