//! Quiet hours: the window of the recipient's local day in which a send may be handed over. A
//! send outside it is deferred to the window's next opening, spread over a few minutes so a
//! night's backlog does not leave at 08:00:00 sharp.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveTime, TimeZone as _, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::zones::zones_of;
use crate::domain::rules::{within_hours, ClockTime, Day, TimeZone};
use crate::domain::{Channel, FieldError, Priority};

/// The most a deferred send is spread after the window opens.
pub const MAX_SPREAD_MINUTES: u32 = 240;
const DEFAULT_SPREAD_MINUTES: u32 = 30;
/// How far ahead a window's next opening is looked for.
const LOOK_AHEAD_DAYS: i64 = 8;

/// Local hours `[start, end)` on some days of the week; past midnight when end < start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendWindow {
    /// `HH:MM`, the recipient's local time.
    #[schema(value_type = String, example = "08:00")]
    pub start: ClockTime,
    #[schema(value_type = String, example = "21:00")]
    pub end: ClockTime,
    /// `mon` to `sun`; every day when empty.
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub days: Vec<Day>,
}

impl SendWindow {
    /// 08:00-21:00 every day: US TCPA practice for texts.
    pub fn daytime() -> SendWindow {
        SendWindow {
            start: ClockTime(NaiveTime::from_hms_opt(8, 0, 0).unwrap_or_default()),
            end: ClockTime(NaiveTime::from_hms_opt(21, 0, 0).unwrap_or_default()),
            days: Vec::new(),
        }
    }

    /// Whether `at` is inside the window in `zone` (on a listed day, by the day it opened).
    pub fn open_at(&self, zone: Tz, at: DateTime<Utc>) -> bool {
        within_hours(at.with_timezone(&zone), self.start, self.end, &self.days)
    }

    /// The first instant at or after `now` inside the window in every one of `zones`.
    pub fn next_open(&self, zones: &[Tz], now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let everywhere = |t: DateTime<Utc>| zones.iter().all(|z| self.open_at(*z, t));
        if everywhere(now) {
            return Some(now);
        }
        // The answer is an opening in one of the zones: try them in time order.
        let mut openings: Vec<DateTime<Utc>> = zones
            .iter()
            .flat_map(|z| self.openings(*z, now))
            .filter(|t| *t > now)
            .collect();
        openings.sort();
        openings.into_iter().find(|t| everywhere(*t))
    }

    fn openings(&self, zone: Tz, now: DateTime<Utc>) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        let today = now.with_timezone(&zone).date_naive();
        (0..=LOOK_AHEAD_DAYS).filter_map(move |d| {
            let local = (today + Duration::days(d)).and_time(self.start.0);
            // A start inside a DST gap opens at the first valid instant after it.
            zone.from_local_datetime(&local)
                .earliest()
                .or_else(|| {
                    zone.from_local_datetime(&(local + Duration::hours(1)))
                        .earliest()
                })
                .map(|t| t.with_timezone(&Utc))
        })
    }

    fn check(&self, at: &str) -> Result<(), FieldError> {
        if self.start.0 == self.end.0 {
            return Err(FieldError::new(
                at,
                "invalid",
                "a window's start and end must differ",
            ));
        }
        Ok(())
    }
}

/// A tenant's quiet hours. Channels and message types not listed take the defaults: SMS and
/// WhatsApp 08:00-21:00 every day, no window for the other channels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuietHours {
    /// A channel's window, or `null` for none.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub channels: BTreeMap<Channel, Option<SendWindow>>,
    /// A `message_type`'s window on every channel, or `null` for none; over the channel's.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub message_types: BTreeMap<String, Option<SendWindow>>,
    /// Whether P1 sends go at once like P0 (which always does).
    #[serde(default)]
    pub p1_bypass: bool,
    /// Deferred sends leave over this many minutes after the window opens (0-240).
    #[serde(default = "default_spread")]
    #[schema(maximum = 240)]
    pub spread_minutes: u32,
    /// The zone of a recipient Herald cannot place (no `recipient_timezone`, and an address
    /// whose zone is unknown); without it such sends are not held.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub fallback_timezone: Option<TimeZone>,
}

fn default_spread() -> u32 {
    DEFAULT_SPREAD_MINUTES
}

impl Default for QuietHours {
    fn default() -> Self {
        QuietHours {
            channels: BTreeMap::new(),
            message_types: BTreeMap::new(),
            p1_bypass: false,
            spread_minutes: DEFAULT_SPREAD_MINUTES,
            fallback_timezone: None,
        }
    }
}

/// What a send is, as quiet hours see it.
#[derive(Debug, Clone, Copy)]
pub struct SendFacts<'a> {
    pub channel: Channel,
    pub priority: Priority,
    pub message_type: Option<&'a str>,
    pub to: &'a str,
    pub recipient_timezone: Option<Tz>,
    /// Spreads deferred sends: the same seed, the same place in the spread.
    pub seed: u128,
}

/// A send held back: until when, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Deferral {
    pub not_before: DateTime<Utc>,
    pub window: SendWindow,
    /// The zones the window was applied in.
    pub zones: Vec<String>,
    /// `recipient_timezone`, `area_code`, `country` or `fallback`.
    pub basis: &'static str,
}

impl Deferral {
    /// The detail of the message's `deferred` event.
    pub fn detail(&self) -> serde_json::Value {
        serde_json::json!({
            "reason": "quiet_hours",
            "not_before": self.not_before,
            "window": self.window,
            "zones": self.zones,
            "zone_basis": self.basis,
        })
    }
}

impl QuietHours {
    pub fn check(&self) -> Result<(), FieldError> {
        if self.spread_minutes > MAX_SPREAD_MINUTES {
            return Err(FieldError::new(
                "/spread_minutes",
                "invalid",
                format!("spread_minutes must be 0-{MAX_SPREAD_MINUTES}"),
            ));
        }
        for (channel, w) in &self.channels {
            if let Some(w) = w {
                w.check(&format!("/channels/{channel}"))?;
            }
        }
        for (kind, w) in &self.message_types {
            crate::domain::rules::text(&format!("/message_types/{kind}"), kind)?;
            if let Some(w) = w {
                w.check(&format!("/message_types/{kind}"))?;
            }
        }
        Ok(())
    }

    /// The window a send is held to, if any.
    pub fn window_for(&self, channel: Channel, message_type: Option<&str>) -> Option<SendWindow> {
        if let Some(w) = message_type.and_then(|t| self.message_types.get(t)) {
            return w.clone();
        }
        match self.channels.get(&channel) {
            Some(w) => w.clone(),
            None => matches!(channel, Channel::Sms | Channel::Whatsapp).then(SendWindow::daytime),
        }
    }

    /// The window a send on this lane, channel and type is held to: none for P0, for P1 when
    /// the tenant lets it through, and where no window is set.
    pub fn held_to(
        &self,
        channel: Channel,
        priority: Priority,
        message_type: Option<&str>,
    ) -> Option<SendWindow> {
        let bypass = match priority {
            Priority::P0 => true,
            Priority::P1 => self.p1_bypass,
            _ => false,
        };
        if bypass {
            return None;
        }
        self.window_for(channel, message_type)
    }

    /// Whether a send on this lane, channel and type is held to a window at all.
    pub fn applies(
        &self,
        channel: Channel,
        priority: Priority,
        message_type: Option<&str>,
    ) -> bool {
        self.held_to(channel, priority, message_type).is_some()
    }

    /// When a send outside its window may go; None when it may go now.
    pub fn defer(&self, send: SendFacts<'_>, now: DateTime<Utc>) -> Option<Deferral> {
        let window = self.held_to(send.channel, send.priority, send.message_type)?;
        let (zones, basis) = self.zones(send)?;
        let opens = window
            .next_open(&zones, now)
            // No instant is inside the window everywhere: the first zone's window decides.
            .or_else(|| window.next_open(&zones[..1], now))?;
        if opens <= now {
            return None;
        }
        let not_before = opens + self.spread(&window, &zones, opens, send.seed);
        Some(Deferral {
            not_before,
            zones: zones.iter().map(|z| z.name().to_owned()).collect(),
            window,
            basis,
        })
    }

    fn zones(&self, send: SendFacts<'_>) -> Option<(Vec<Tz>, &'static str)> {
        if let Some(tz) = send.recipient_timezone {
            return Some((vec![tz], "recipient_timezone"));
        }
        let placed = match send.channel {
            Channel::Sms | Channel::Whatsapp => zones_of(send.to),
            _ => None,
        };
        match placed {
            Some((zones, basis)) if !zones.is_empty() => Some((zones, basis.as_str())),
            _ => self
                .fallback_timezone
                .as_ref()
                .map(|tz| (vec![tz.0], "fallback")),
        }
    }

    /// A point in the first minutes of the window, by the seed, that stays inside the window.
    fn spread(
        &self,
        window: &SendWindow,
        zones: &[Tz],
        opens: DateTime<Utc>,
        seed: u128,
    ) -> Duration {
        let mut spread = i64::from(self.spread_minutes) * 60;
        while spread > 0
            && !zones
                .iter()
                .all(|z| window.open_at(*z, opens + Duration::seconds(spread)))
        {
            spread /= 2;
        }
        if spread == 0 {
            return Duration::zero();
        }
        Duration::seconds((seed % spread as u128) as i64)
    }
}

#[cfg(test)]
#[path = "quiet_hours_tests.rs"]
mod tests;
