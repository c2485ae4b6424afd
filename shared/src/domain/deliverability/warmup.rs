//! Warm-up schedules: a new IP pool or sending server (a gateway instance) takes a growing daily
//! cap, from 50 a day to its target over 30 days unless configured otherwise. The schedule
//! advances a day only when the previous day's bounce and complaint rates stayed under the warn
//! levels; otherwise it holds, and says why. Sends over the day's cap overflow to the next
//! gateway in the channel's order.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The recipient provider groups a schedule may cap apart.
pub const PROVIDER_GROUPS: [&str; 4] = ["gmail", "microsoft", "yahoo", "other"];
/// The group of every send when a schedule does not split by provider.
pub const ALL_GROUPS: &str = "all";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WarmupSchedule {
    /// The schedule's first day (UTC); before it the gateway takes no sends.
    #[schema(value_type = String, format = Date)]
    pub start: NaiveDate,
    /// The daily volume the schedule grows to.
    pub target_per_day: u64,
    /// Days from the first cap to the target (2-365).
    #[serde(default = "default_days")]
    pub days: u32,
    /// The first day's cap.
    #[serde(default = "default_first_day")]
    pub first_day: u64,
    /// Caps per warm-up day, instead of the curve (the last one holds until the target).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub caps: Vec<u64>,
    /// Caps each recipient provider group (gmail, microsoft, yahoo, other) apart.
    #[serde(default)]
    pub by_provider: bool,
    /// A day over either rate holds the schedule (the reputation warn levels by default).
    #[serde(default = "default_hold_bounce")]
    pub hold_bounce_rate: f64,
    #[serde(default = "default_hold_complaint")]
    pub hold_complaint_rate: f64,
}

fn default_days() -> u32 {
    30
}
fn default_first_day() -> u64 {
    50
}
fn default_hold_bounce() -> f64 {
    0.03
}
fn default_hold_complaint() -> f64 {
    0.0005
}

/// Sends, bounces and complaints through a gateway on one day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DayTally {
    pub sends: u64,
    pub bounces: u64,
    pub complaints: u64,
}

/// Where a gateway is in its schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarmupState {
    /// The warm-up day (0 is the first), advanced at most once a day.
    pub day: u32,
    /// The last day the schedule was judged on.
    pub judged_on: NaiveDate,
    /// Why the last judgement held the schedule, if it did.
    pub held: Option<String>,
}

impl WarmupSchedule {
    pub fn validate(&self) -> Result<(), String> {
        if !(2..=365).contains(&self.days) {
            return Err("days must be 2-365".into());
        }
        if self.first_day == 0 || self.first_day > self.target_per_day {
            return Err("first_day must be at least 1 and at most target_per_day".into());
        }
        let rate_ok = |r: f64| r > 0.0 && r <= 1.0;
        if !rate_ok(self.hold_bounce_rate) || !rate_ok(self.hold_complaint_rate) {
            return Err("hold rates are fractions over 0 and at most 1".into());
        }
        if self.caps.contains(&0) {
            return Err("caps must be at least 1".into());
        }
        Ok(())
    }

    /// The cap on warm-up day `day` (0-based); None once the schedule reached its target.
    pub fn cap(&self, day: u32) -> Option<u64> {
        if !self.caps.is_empty() {
            return self.caps.get(day as usize).copied().or_else(|| {
                let last = self.caps.last().copied().unwrap_or(self.target_per_day);
                (last < self.target_per_day).then_some(last)
            });
        }
        if day + 1 >= self.days {
            return None;
        }
        // Geometric from first_day to the target: each day a constant factor more.
        let growth = (self.target_per_day as f64 / self.first_day as f64)
            .powf(f64::from(day) / f64::from(self.days - 1));
        Some(((self.first_day as f64) * growth).round() as u64)
    }

    /// The cap on `today` at `state`'s warm-up day: none taken before the start, None once
    /// warm.
    pub fn cap_on(&self, state: &WarmupState, today: NaiveDate) -> Option<u64> {
        match today >= self.start {
            true => self.cap(state.day),
            false => Some(0),
        }
    }

    /// The state before the first judgement.
    pub fn first_state(&self) -> WarmupState {
        WarmupState {
            day: 0,
            judged_on: self.start,
            held: None,
        }
    }

    /// Judges the days since the last judgement, on `yesterday`'s tally: the schedule advances
    /// one day when it was clean, and holds (with the reason) when it was not or was empty.
    /// None when there is nothing to judge yet (already judged today, or not started).
    pub fn judge(
        &self,
        state: &WarmupState,
        today: NaiveDate,
        yesterday: DayTally,
    ) -> Option<WarmupState> {
        if today <= state.judged_on || today <= self.start {
            return None;
        }
        let rate = |part: u64| part as f64 / yesterday.sends.max(1) as f64;
        let held = if yesterday.sends == 0 {
            Some("no sends yesterday: a schedule advances on traffic".to_owned())
        } else if rate(yesterday.bounces) >= self.hold_bounce_rate {
            Some(format!(
                "yesterday's bounce rate {:.2}% reached {:.2}%",
                rate(yesterday.bounces) * 100.0,
                self.hold_bounce_rate * 100.0
            ))
        } else if rate(yesterday.complaints) >= self.hold_complaint_rate {
            Some(format!(
                "yesterday's complaint rate {:.3}% reached {:.3}%",
                rate(yesterday.complaints) * 100.0,
                self.hold_complaint_rate * 100.0
            ))
        } else {
            None
        };
        Some(WarmupState {
            day: if held.is_some() {
                state.day
            } else {
                state.day + 1
            },
            judged_on: today,
            held,
        })
    }
}

/// The provider group of an email address, by its domain (other channels: `other`).
pub fn provider_group(address: &str) -> &'static str {
    let domain = address
        .rsplit_once('@')
        .map(|(_, d)| d.to_ascii_lowercase())
        .unwrap_or_default();
    match domain.as_str() {
        "gmail.com" | "googlemail.com" => "gmail",
        "outlook.com" | "hotmail.com" | "live.com" | "msn.com" => "microsoft",
        "yahoo.com" | "ymail.com" | "aol.com" => "yahoo",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule() -> WarmupSchedule {
        serde_json::from_value(serde_json::json!({
            "start": "2026-12-01", "target_per_day": 100000
        }))
        .unwrap()
    }

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 12, d).unwrap()
    }

    #[test]
    fn the_default_curve_grows_from_50_to_the_target_in_30_days() {
        let s = schedule();
        s.validate().unwrap();
        assert_eq!(s.cap(0), Some(50));
        let caps: Vec<u64> = (0..29).map(|d| s.cap(d).unwrap()).collect();
        assert!(caps.windows(2).all(|w| w[0] < w[1]), "{caps:?}");
        assert!(caps[28] <= 100_000 && caps[28] > 70_000, "{}", caps[28]);
        assert_eq!(s.cap(29), None, "warm");
        let explicit = WarmupSchedule {
            caps: vec![10, 20, 40],
            ..schedule()
        };
        assert_eq!((explicit.cap(1), explicit.cap(7)), (Some(20), Some(40)));
    }

    #[test]
    fn a_clean_day_advances_and_a_bad_or_empty_one_holds() {
        let s = schedule();
        let start = s.first_state();
        assert_eq!(
            s.judge(&start, day(1), DayTally::default()),
            None,
            "the first day"
        );
        let clean = DayTally {
            sends: 50,
            bounces: 1,
            complaints: 0,
        };
        let next = s.judge(&start, day(2), clean).unwrap();
        assert_eq!(
            (next.day, next.judged_on, next.held.as_deref()),
            (1, day(2), None)
        );
        assert_eq!(s.judge(&next, day(2), clean), None, "once a day");
        let bounced = DayTally {
            sends: 100,
            bounces: 3,
            complaints: 0,
        };
        let held = s.judge(&next, day(3), bounced).unwrap();
        assert_eq!(held.day, 1);
        assert!(
            held.held.as_deref().unwrap().contains("bounce rate 3.00%"),
            "{held:?}"
        );
        let complained = DayTally {
            sends: 10_000,
            bounces: 0,
            complaints: 5,
        };
        assert!(s
            .judge(&next, day(3), complained)
            .unwrap()
            .held
            .unwrap()
            .contains("complaint"));
        assert!(s
            .judge(&next, day(3), DayTally::default())
            .unwrap()
            .held
            .unwrap()
            .contains("no sends"));
    }

    #[test]
    fn bad_schedules_and_provider_groups() {
        for bad in [
            WarmupSchedule {
                days: 1,
                ..schedule()
            },
            WarmupSchedule {
                first_day: 0,
                ..schedule()
            },
            WarmupSchedule {
                first_day: 200_000,
                ..schedule()
            },
            WarmupSchedule {
                hold_bounce_rate: 2.0,
                ..schedule()
            },
            WarmupSchedule {
                caps: vec![0],
                ..schedule()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        assert_eq!(provider_group("Ann@GMail.com"), "gmail");
        assert_eq!(provider_group("bo@hotmail.com"), "microsoft");
        assert_eq!(provider_group("cy@example.com"), "other");
        assert_eq!(provider_group("+15005550006"), "other");
    }
}
