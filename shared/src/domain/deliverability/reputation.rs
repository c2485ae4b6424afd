//! Reputation: a tenant's bounce and complaint rates per gateway over a rolling window, judged
//! against thresholds below the providers' own review levels (SES reviews at 5% bounces and
//! 0.1% complaints). Over the pause thresholds the tenant's bulk lanes (P2, P3) stop until an
//! admin resumes them, or a cool-down the tenant turned on ends.
//!
//! The rates come from the message counts Herald keeps anyway (`/v1/stats/channels`). A store
//! that counts by time gives the window directly (SQLite); one that keeps only running totals
//! (DynamoDB's stream counters) gets hourly snapshots of them in the state, and a window is the
//! difference between now and the snapshot at its start.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::{FieldError, MessageStatus, Priority};

/// Snapshots kept: a week of hours, the longest window allowed.
const MAX_SNAPSHOTS: usize = 24 * 7 + 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ReputationSettings {
    /// The rolling window, in hours (1-168).
    #[schema(minimum = 1, maximum = 168)]
    pub window_hours: u32,
    /// Rates are judged only over at least this many sends in the window.
    #[schema(minimum = 1, maximum = 10_000_000)]
    pub min_sends: u32,
    #[schema(exclusive_minimum = 0.0, maximum = 1.0)]
    pub warn_bounce_rate: f64,
    #[schema(exclusive_minimum = 0.0, maximum = 1.0)]
    pub warn_complaint_rate: f64,
    #[schema(exclusive_minimum = 0.0, maximum = 1.0)]
    pub pause_bounce_rate: f64,
    #[schema(exclusive_minimum = 0.0, maximum = 1.0)]
    pub pause_complaint_rate: f64,
    /// Lift a pause by itself this many hours after it began (1-8760); never when null.
    #[schema(minimum = 1, maximum = 8760)]
    pub auto_resume_after_hours: Option<u32>,
}

impl Default for ReputationSettings {
    fn default() -> Self {
        ReputationSettings {
            window_hours: 24,
            min_sends: 500,
            warn_bounce_rate: 0.03,
            warn_complaint_rate: 0.0005,
            pause_bounce_rate: 0.04,
            pause_complaint_rate: 0.0008,
            auto_resume_after_hours: None,
        }
    }
}

impl ReputationSettings {
    pub fn check(&self) -> Result<(), FieldError> {
        let bad = |at: &str, what: &str| Err(FieldError::new(at, "invalid", what.to_owned()));
        if !(1..=168).contains(&self.window_hours) {
            return bad("/window_hours", "window_hours must be 1-168");
        }
        if !(1..=10_000_000).contains(&self.min_sends) {
            return bad("/min_sends", "min_sends must be 1-10,000,000");
        }
        let rates = [
            ("/warn_bounce_rate", self.warn_bounce_rate),
            ("/warn_complaint_rate", self.warn_complaint_rate),
            ("/pause_bounce_rate", self.pause_bounce_rate),
            ("/pause_complaint_rate", self.pause_complaint_rate),
        ];
        for (at, r) in rates {
            if !(r > 0.0 && r <= 1.0) {
                return bad(at, "a rate is a fraction over 0 and at most 1 (0.04 is 4%)");
            }
        }
        if self.warn_bounce_rate > self.pause_bounce_rate
            || self.warn_complaint_rate > self.pause_complaint_rate
        {
            return bad(
                "/warn_bounce_rate",
                "a warn rate must not be over its pause rate",
            );
        }
        if self
            .auto_resume_after_hours
            .is_some_and(|h| !(1..=8760).contains(&h))
        {
            return bad(
                "/auto_resume_after_hours",
                "auto_resume_after_hours must be 1-8760",
            );
        }
        Ok(())
    }
}

/// Sends, bounces and complaints through one gateway.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Tally {
    pub sends: u64,
    pub bounces: u64,
    pub complaints: u64,
}

impl Tally {
    /// What a count of messages in `status` adds: every message that left counts as a send.
    pub fn add(&mut self, status: MessageStatus, count: u64) {
        use MessageStatus as S;
        if matches!(
            status,
            S::Sent | S::Delivered | S::Opened | S::Clicked | S::Bounced | S::Complained
        ) {
            self.sends += count;
        }
        match status {
            S::Bounced => self.bounces += count,
            S::Complained => self.complaints += count,
            _ => {}
        }
    }

    fn since(self, base: Tally) -> Tally {
        Tally {
            sends: self.sends.saturating_sub(base.sends),
            bounces: self.bounces.saturating_sub(base.bounces),
            complaints: self.complaints.saturating_sub(base.complaints),
        }
    }

    fn rate(part: u64, of: u64) -> f64 {
        if of == 0 {
            0.0
        } else {
            part as f64 / of as f64
        }
    }
}

/// The totals per gateway at one time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub at: DateTime<Utc>,
    pub gateways: BTreeMap<String, Tally>,
}

/// A pause of the tenant's bulk lanes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Pause {
    pub at: DateTime<Utc>,
    pub gateway: String,
    pub bounce_rate: f64,
    pub complaint_rate: f64,
    pub sends: u64,
    /// Lifted by itself then, when the tenant turned the cool-down on.
    pub resumes_at: Option<DateTime<Utc>>,
}

/// A tenant's settings, pause and snapshots, as stored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReputationState {
    pub settings: ReputationSettings,
    pub paused: Option<Pause>,
    /// Counts from before a resume are not held against the tenant again.
    pub resumed_at: Option<DateTime<Utc>>,
    pub snapshots: Vec<Snapshot>,
    /// How many times it was saved: a save names the revision it read (`RuleStore::put_reputation`).
    pub revision: u64,
}

/// One gateway's standing over the window.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Standing {
    pub gateway: String,
    #[serde(flatten)]
    pub window: Tally,
    pub bounce_rate: f64,
    pub complaint_rate: f64,
    /// `ok`, `warn`, `pause`, or `too_few_sends` to judge.
    pub level: &'static str,
}

impl ReputationState {
    /// The state as its next save stores it: one revision on.
    pub fn next_revision(&self) -> ReputationState {
        ReputationState {
            revision: self.revision + 1,
            ..self.clone()
        }
    }

    /// Whether the tenant's sends on `lane` are held now.
    pub fn holds(&self, lane: Priority, now: DateTime<Utc>) -> bool {
        matches!(lane, Priority::P2 | Priority::P3)
            && self
                .paused
                .as_ref()
                .is_some_and(|p| p.resumes_at.is_none_or(|t| t > now))
    }

    /// Where the window starts now: its length ago, or the last resume if that is later.
    pub fn window_start(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let start = now - Duration::hours(i64::from(self.settings.window_hours));
        self.resumed_at.map_or(start, |r| r.max(start))
    }

    /// Each gateway's window, counted directly (by a backend that counts by time), judged.
    pub fn judge_window(&self, window: &BTreeMap<String, Tally>) -> Vec<Standing> {
        window.iter().map(|(g, t)| self.judge(g, *t)).collect()
    }

    /// Each gateway's window from the running totals and the snapshots, judged.
    pub fn standings(&self, totals: &BTreeMap<String, Tally>, now: DateTime<Utc>) -> Vec<Standing> {
        let start = self.window_start(now);
        // The newest snapshot at or before the window's start; with none that old, every
        // count so far (until a day of snapshots exists, the window is the whole history).
        let base = self.snapshots.iter().rev().find(|s| s.at <= start);
        totals
            .iter()
            .map(|(gateway, now_tally)| {
                let before = base
                    .and_then(|b| b.gateways.get(gateway))
                    .copied()
                    .unwrap_or_default();
                self.judge(gateway, now_tally.since(before))
            })
            .collect()
    }

    fn judge(&self, gateway: &str, window: Tally) -> Standing {
        let s = &self.settings;
        let bounce_rate = Tally::rate(window.bounces, window.sends);
        let complaint_rate = Tally::rate(window.complaints, window.sends);
        let level = if window.sends < u64::from(s.min_sends) {
            "too_few_sends"
        } else if bounce_rate >= s.pause_bounce_rate || complaint_rate >= s.pause_complaint_rate {
            "pause"
        } else if bounce_rate >= s.warn_bounce_rate || complaint_rate >= s.warn_complaint_rate {
            "warn"
        } else {
            "ok"
        };
        Standing {
            gateway: gateway.to_owned(),
            window,
            bounce_rate,
            complaint_rate,
            level,
        }
    }

    /// Keeps a snapshot of `totals` when the newest is an hour old (or there is none).
    pub fn remember(&mut self, totals: &BTreeMap<String, Tally>, now: DateTime<Utc>) -> bool {
        if self
            .snapshots
            .last()
            .is_some_and(|s| now - s.at < Duration::hours(1))
        {
            return false;
        }
        self.snapshot(totals, now);
        true
    }

    /// Pauses on the first gateway over its thresholds; true when this made a new pause.
    pub fn pause_if_over(&mut self, standings: &[Standing], now: DateTime<Utc>) -> bool {
        if self.paused.is_some() {
            return false;
        }
        let Some(over) = standings.iter().find(|s| s.level == "pause") else {
            return false;
        };
        let cool_down = self.settings.auto_resume_after_hours;
        self.paused = Some(Pause {
            at: now,
            gateway: over.gateway.clone(),
            bounce_rate: over.bounce_rate,
            complaint_rate: over.complaint_rate,
            sends: over.window.sends,
            resumes_at: cool_down.map(|h| now + Duration::hours(i64::from(h))),
        });
        true
    }

    /// Lifts the pause (by an admin, or a cool-down that ran out); the window starts again
    /// from `totals`, the counts now.
    pub fn resume(
        &mut self,
        totals: &BTreeMap<String, Tally>,
        now: DateTime<Utc>,
    ) -> Option<Pause> {
        let lifted = self.paused.take()?;
        self.resumed_at = Some(now);
        self.snapshot(totals, now);
        Some(lifted)
    }

    /// Keeps `totals` as of `now`, dropping the oldest past a week of hours.
    fn snapshot(&mut self, totals: &BTreeMap<String, Tally>, now: DateTime<Utc>) {
        self.snapshots.push(Snapshot {
            at: now,
            gateways: totals.clone(),
        });
        let excess = self.snapshots.len().saturating_sub(MAX_SNAPSHOTS);
        self.snapshots.drain(..excess);
    }

    /// A pause whose cool-down ran out.
    pub fn cooled_down(&self, now: DateTime<Utc>) -> bool {
        self.paused
            .as_ref()
            .and_then(|p| p.resumes_at)
            .is_some_and(|t| t <= now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(sends: u64, bounces: u64, complaints: u64) -> BTreeMap<String, Tally> {
        BTreeMap::from([(
            "ses".to_owned(),
            Tally {
                sends,
                bounces,
                complaints,
            },
        )])
    }

    #[test]
    fn rates_over_the_thresholds_warn_then_pause_only_the_bulk_lanes() {
        let now = Utc::now();
        let mut state = ReputationState::default();
        assert_eq!(
            state.standings(&totals(499, 100, 0), now)[0].level,
            "too_few_sends"
        );
        assert_eq!(state.standings(&totals(1000, 10, 0), now)[0].level, "ok");
        assert_eq!(state.standings(&totals(1000, 30, 0), now)[0].level, "warn");
        assert_eq!(state.standings(&totals(10_000, 0, 5), now)[0].level, "warn");
        let over = state.standings(&totals(1000, 40, 0), now);
        assert_eq!(over[0].level, "pause");
        assert!(state.pause_if_over(&over, now));
        assert!(!state.pause_if_over(&over, now), "already paused");
        for lane in Priority::ALL {
            let held = matches!(lane, Priority::P2 | Priority::P3);
            assert_eq!(state.holds(lane, now), held, "{lane:?}");
        }
        let lifted = state.resume(&totals(1000, 40, 0), now).unwrap();
        assert_eq!((lifted.gateway.as_str(), lifted.sends), ("ses", 1000));
        assert!(!state.holds(Priority::P3, now));
        // The counts before the resume are not judged again.
        assert_eq!(
            state.standings(&totals(1100, 41, 0), now + Duration::minutes(5))[0].window,
            Tally {
                sends: 100,
                bounces: 1,
                complaints: 0
            }
        );
    }

    #[test]
    fn the_window_is_the_difference_from_the_snapshot_at_its_start() {
        let t0 = Utc::now() - Duration::hours(30);
        let mut state = ReputationState::default();
        assert!(state.remember(&totals(10_000, 900, 0), t0));
        assert!(!state.remember(&totals(10_000, 900, 0), t0 + Duration::minutes(30)));
        assert!(state.remember(&totals(11_000, 900, 0), t0 + Duration::hours(6)));
        // Before a snapshot is a window old, the window is everything so far.
        let early = &state.standings(&totals(11_000, 900, 0), t0 + Duration::hours(7))[0];
        assert_eq!(early.window.sends, 11_000);
        let now = t0 + Duration::hours(30);
        // The window starts 24 h ago: the snapshot at t0+6h is the newest before it.
        let s = &state.standings(&totals(12_000, 920, 0), now)[0];
        assert_eq!(
            s.window,
            Tally {
                sends: 1000,
                bounces: 20,
                complaints: 0
            }
        );
        assert_eq!(s.level, "ok");
    }

    #[test]
    fn a_cool_down_lifts_the_pause_when_the_tenant_turned_it_on() {
        let now = Utc::now();
        let mut state = ReputationState::default();
        state.settings.auto_resume_after_hours = Some(6);
        let over = state.standings(&totals(1000, 0, 1), now);
        assert!(state.pause_if_over(&over, now));
        assert!(state.holds(Priority::P2, now + Duration::hours(5)));
        assert!(!state.holds(Priority::P2, now + Duration::hours(6)));
        assert!(state.cooled_down(now + Duration::hours(6)));
    }

    #[test]
    fn settings_are_checked() {
        let ok = ReputationSettings::default();
        ok.check().unwrap();
        let cases = [
            (
                ReputationSettings {
                    window_hours: 0,
                    ..ok.clone()
                },
                "/window_hours",
            ),
            (
                ReputationSettings {
                    min_sends: 0,
                    ..ok.clone()
                },
                "/min_sends",
            ),
            (
                ReputationSettings {
                    pause_bounce_rate: 4.0,
                    ..ok.clone()
                },
                "/pause_bounce_rate",
            ),
            (
                ReputationSettings {
                    warn_bounce_rate: 0.05,
                    ..ok.clone()
                },
                "/warn_bounce_rate",
            ),
            (
                ReputationSettings {
                    warn_complaint_rate: f64::NAN,
                    ..ok.clone()
                },
                "/warn_complaint_rate",
            ),
        ];
        for (s, at) in cases {
            assert_eq!(s.check().unwrap_err().pointer, at);
        }
    }
}
