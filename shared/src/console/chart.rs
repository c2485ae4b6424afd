//! The overview's throughput: the last hour's sends as an SVG bar chart drawn on the server
//! (one bar a minute, scaled to the busiest), and each lane's sends per minute.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, DurationRound, Timelike, Utc};
use serde::Serialize;

use crate::domain::Priority;
use crate::ports::SentMinute;

pub const WIDTH: u32 = 600;
pub const HEIGHT: u32 = 120;
const MINUTES: i64 = 60;
const BAR_PITCH: u32 = WIDTH / MINUTES as u32;

#[derive(Debug, Serialize)]
pub struct Chart {
    pub width: u32,
    pub height: u32,
    pub bars: Vec<Bar>,
    pub total: u64,
    pub peak: u64,
    /// The busiest minute, as `HH:MM` UTC.
    pub peak_at: Option<String>,
    /// Per lane (`P0`...): sends in the last 60 s, estimated from this minute's count and the
    /// share of the last minute's that falls in the window.
    pub per_minute: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Serialize)]
pub struct Bar {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
    pub sent: u64,
    /// The minute's start, RFC 3339 UTC.
    pub minute: String,
}

/// Draws `minutes` (the sends since an hour before `now`).
pub fn throughput(minutes: &[SentMinute], now: DateTime<Utc>) -> Chart {
    let this_minute = now.duration_trunc(Duration::minutes(1)).unwrap_or(now);
    let first = this_minute - Duration::minutes(MINUTES - 1);
    let mut per_bar = [0u64; MINUTES as usize];
    let mut per_lane: BTreeMap<&'static str, (u64, u64)> = Priority::ALL
        .iter()
        .map(|lane| (lane.as_str(), (0, 0)))
        .collect();
    for m in minutes {
        let slot = (m.minute - first).num_minutes();
        if let Some(bar) = usize::try_from(slot).ok().and_then(|i| per_bar.get_mut(i)) {
            *bar += m.sent;
        }
        if let Some((now_count, last_count)) = per_lane.get_mut(m.lane.as_str()) {
            match (this_minute - m.minute).num_minutes() {
                0 => *now_count += m.sent,
                1 => *last_count += m.sent,
                _ => {}
            }
        }
    }
    let past_share = 1.0 - f64::from(now.second()) / 60.0;
    let per_minute = per_lane
        .into_iter()
        .map(|(lane, (now_count, last_count))| {
            let estimate = now_count as f64 + last_count as f64 * past_share;
            (lane, estimate.round() as u64)
        })
        .collect();
    let peak = per_bar.iter().copied().max().unwrap_or(0);
    let peak_at = (peak > 0)
        .then(|| per_bar.iter().position(|n| *n == peak))
        .flatten()
        .map(|i| {
            (first + Duration::minutes(i as i64))
                .format("%H:%M")
                .to_string()
        });
    Chart {
        width: WIDTH,
        height: HEIGHT,
        bars: bars(&per_bar, first, peak),
        total: per_bar.iter().sum(),
        peak,
        peak_at,
        per_minute,
    }
}

fn bars(per_bar: &[u64], first: DateTime<Utc>, peak: u64) -> Vec<Bar> {
    per_bar
        .iter()
        .enumerate()
        .map(|(i, &sent)| {
            // A minute with sends shows at least a pixel; an empty one shows nothing.
            let height = match (sent, peak) {
                (0, _) | (_, 0) => 0,
                _ => ((sent as f64 / peak as f64) * f64::from(HEIGHT)).ceil() as u32,
            };
            Bar {
                x: i as u32 * BAR_PITCH,
                y: HEIGHT - height,
                width: BAR_PITCH - 2,
                height,
                sent,
                minute: (first + Duration::minutes(i as i64)).to_rfc3339(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn sent(minute: &str, lane: Priority, sent: u64) -> SentMinute {
        SentMinute {
            minute: at(minute),
            lane,
            sent,
        }
    }

    #[test]
    fn bars_are_scaled_to_the_busiest_minute_and_lanes_get_a_rate() {
        let now = at("2026-12-04T15:00:15Z");
        let minutes = [
            sent("2026-12-04T13:59:00Z", Priority::P3, 500), // before the hour: off the chart
            sent("2026-12-04T14:30:00Z", Priority::P3, 100),
            sent("2026-12-04T14:59:00Z", Priority::P3, 40),
            sent("2026-12-04T14:59:00Z", Priority::P0, 2),
            sent("2026-12-04T15:00:00Z", Priority::P3, 10),
        ];
        let chart = throughput(&minutes, now);
        assert_eq!(chart.bars.len(), 60);
        assert_eq!((chart.total, chart.peak), (152, 100));
        assert_eq!(chart.peak_at.as_deref(), Some("14:30"));
        let peak = &chart.bars[29];
        assert_eq!((peak.sent, peak.height, peak.y), (100, HEIGHT, 0));
        assert_eq!(chart.bars[58].height, 51, "42% of 120 px, rounded up");
        assert_eq!(
            chart.bars[59].sent, 10,
            "the minute under way is the last bar"
        );
        assert_eq!(chart.bars[0].height, 0);
        // 15 s into the minute: this minute's 10 and three quarters of the last one's 40.
        assert_eq!(chart.per_minute["P3"], 40);
        assert_eq!(chart.per_minute["P0"], 2);
        assert_eq!(chart.per_minute["P4"], 0);
    }

    #[test]
    fn an_idle_hour_draws_no_bars() {
        let chart = throughput(&[], at("2026-12-04T15:00:15Z"));
        assert!(chart.bars.iter().all(|b| b.height == 0));
        assert_eq!((chart.total, chart.peak, chart.peak_at), (0, 0, None));
    }
}
