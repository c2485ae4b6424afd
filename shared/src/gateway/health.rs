//! Rolling outcome counters per gateway, and the health state derived from them.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use utoipa::ToSchema;

/// Outcomes kept per gateway for the error rate and latency figures.
const WINDOW: usize = 500;
/// Fewer outcomes than this never make a gateway degraded or down.
const MIN_VOLUME: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Transient,
    Permanent,
    Throttled,
}

#[derive(Default)]
struct Window {
    outcomes: VecDeque<(Outcome, Duration)>,
    totals: [u64; 4],
}

#[derive(Default)]
pub struct GatewayHealth {
    windows: Mutex<HashMap<String, Window>>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HealthSnapshot {
    pub gateway: String,
    /// `healthy`, `degraded` or `down`.
    pub state: &'static str,
    /// Transient errors over the last outcomes (permanent errors are the recipient's fault).
    pub error_rate: f64,
    pub latency_p50_ms: f64,
    pub latency_p95_ms: f64,
    pub success: u64,
    pub transient_errors: u64,
    pub permanent_errors: u64,
    pub throttled: u64,
}

impl GatewayHealth {
    pub fn record(&self, gateway: &str, outcome: Outcome, latency: Duration) {
        let mut windows = self.windows.lock();
        let w = windows.entry(gateway.to_owned()).or_default();
        w.totals[outcome as usize] += 1;
        w.outcomes.push_back((outcome, latency));
        if w.outcomes.len() > WINDOW {
            w.outcomes.pop_front();
        }
    }

    /// On the routing path of every send: only the error rate, no latency percentiles.
    pub fn is_down(&self, gateway: &str) -> bool {
        let windows = self.windows.lock();
        windows.get(gateway).is_some_and(|w| state_of(w) == "down")
    }

    pub fn snapshot(&self, gateway: &str) -> HealthSnapshot {
        let windows = self.windows.lock();
        let empty = Window::default();
        let w = windows.get(gateway).unwrap_or(&empty);
        let (error_rate, state) = (error_rate(w), state_of(w));
        let mut lat: Vec<f64> = w
            .outcomes
            .iter()
            .map(|(_, d)| d.as_secs_f64() * 1000.0)
            .collect();
        lat.sort_by(f64::total_cmp);
        let pct = |p: f64| {
            if lat.is_empty() {
                0.0
            } else {
                lat[((lat.len() - 1) as f64 * p).round() as usize]
            }
        };
        HealthSnapshot {
            gateway: gateway.to_owned(),
            state,
            error_rate,
            latency_p50_ms: pct(0.50),
            latency_p95_ms: pct(0.95),
            success: w.totals[0],
            transient_errors: w.totals[1],
            permanent_errors: w.totals[2],
            throttled: w.totals[3],
        }
    }
}

fn error_rate(w: &Window) -> f64 {
    let n = w.outcomes.len();
    let errors = w
        .outcomes
        .iter()
        .filter(|(o, _)| *o == Outcome::Transient)
        .count();
    if n == 0 {
        0.0
    } else {
        errors as f64 / n as f64
    }
}

fn state_of(w: &Window) -> &'static str {
    match (w.outcomes.len() >= MIN_VOLUME, error_rate(w)) {
        (true, r) if r >= 0.5 => "down",
        (true, r) if r >= 0.1 => "degraded",
        _ => "healthy",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_follow_the_error_rate_once_there_is_volume() {
        let h = GatewayHealth::default();
        for _ in 0..10 {
            h.record("g", Outcome::Transient, Duration::from_millis(1));
        }
        assert_eq!(h.snapshot("g").state, "healthy", "below minimum volume");
        for _ in 0..10 {
            h.record("g", Outcome::Transient, Duration::from_millis(1));
        }
        assert_eq!(h.snapshot("g").state, "down");
        for _ in 0..80 {
            h.record("g", Outcome::Success, Duration::from_millis(3));
        }
        assert_eq!(h.snapshot("g").state, "degraded");
        assert_eq!(h.snapshot("g").transient_errors, 20);
    }
}
