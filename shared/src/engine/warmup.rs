//! Warm-up at hand-off: a gateway on a schedule takes at most its day's cap (per recipient
//! provider group when the schedule says so), counted in the store; a send over it goes to the
//! next gateway in the channel's order. The schedule is judged once a day, on the previous
//! day's counts: it advances, or holds with a `warmup.held` event saying why.

use std::collections::HashMap;

use chrono::{NaiveDate, Utc};
use serde::Serialize;
use tracing::{info, warn};
use utoipa::ToSchema;

use super::Herald;
use crate::domain::audit::{Actor, AuditAction, AuditEntry};
use crate::domain::deliverability::warmup::{
    provider_group, DayTally, WarmupSchedule, WarmupState, ALL_GROUPS,
};
use crate::domain::notify::{EventType, Notice, Subject};
use crate::domain::suppression::Scope;
use crate::domain::Message;
use crate::ports::StoreError;

/// A send counted against a warm-up cap.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WarmupSlot {
    day: NaiveDate,
    group: &'static str,
}

/// Each process's view of today's cap per gateway, judged once a day.
#[derive(Default)]
pub(crate) struct TodaysCaps(parking_lot::Mutex<HashMap<String, (NaiveDate, WarmupState)>>);

/// A gateway's warm-up, as `GET /v1/gateways` shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WarmupView {
    /// The warm-up day, 1 for the first.
    pub day: u32,
    /// Today's cap (per provider group when `by_provider`); null once warm.
    pub cap_today: Option<u64>,
    pub by_provider: bool,
    /// Today's counts so far.
    pub used_today: DayTally,
    /// `not_started`, `advancing`, `held` or `warm`.
    pub state: &'static str,
    pub held_reason: Option<String>,
    #[schema(value_type = String, format = Date)]
    pub start: NaiveDate,
    pub target_per_day: u64,
}

impl Herald {
    /// Whether `m` may go through `gateway` today: always without a schedule; with one, when
    /// the day's cap has room, and then the send is counted: `Some(slot)` to give back with
    /// [`Herald::warmup_give_back`] if it does not go after all.
    pub(crate) async fn warmup_admits(
        &self,
        gateway: &str,
        m: &Message,
    ) -> Option<Option<WarmupSlot>> {
        let Some(schedule) = self.config.warmups.get(gateway) else {
            return Some(None);
        };
        let today = Utc::now().date_naive();
        let cap = match self.warmup_state(gateway, schedule, today).await {
            Ok(state) => schedule.cap_on(&state, today),
            Err(e) => {
                // Unreadable: a warming gateway takes nothing rather than too much.
                warn!(gateway, error = %e, "warm-up state unreadable; overflowing");
                Some(0)
            }
        };
        let Some(cap) = cap else {
            return Some(None);
        };
        let group = match schedule.by_provider {
            true => provider_group(&m.to),
            false => ALL_GROUPS,
        };
        match self.warmup.take(gateway, today, group, cap).await {
            Ok(true) => Some(Some(WarmupSlot { day: today, group })),
            Ok(false) => None,
            Err(e) => {
                warn!(gateway, error = %e, "warm-up count failed; overflowing");
                None
            }
        }
    }

    /// Gives back a counted send that did not go, so the cap counts sends, not attempts.
    pub(crate) async fn warmup_give_back(&self, gateway: &str, slot: Option<WarmupSlot>) {
        let Some(slot) = slot else {
            return;
        };
        if let Err(e) = self.warmup.untake(gateway, slot.day, slot.group).await {
            warn!(gateway, error = %e, "warm-up count not given back");
        }
    }

    /// Counts a bounce or a complaint through a warming gateway, on the day it came.
    pub(crate) async fn note_warmup_outcome(&self, gateway: &str, bounced: bool) {
        if !self.config.warmups.contains_key(gateway) {
            return;
        }
        let (b, c) = if bounced { (1, 0) } else { (0, 1) };
        let today = Utc::now().date_naive();
        if let Err(e) = self.warmup.note(gateway, today, b, c).await {
            warn!(gateway, error = %e, "warm-up outcome not counted");
        }
    }

    /// Where `gateway`'s schedule stands today, judging it first when a day began.
    async fn warmup_state(
        &self,
        gateway: &str,
        schedule: &WarmupSchedule,
        today: NaiveDate,
    ) -> Result<WarmupState, StoreError> {
        if let Some((day, state)) = self.warmup_caps.0.lock().get(gateway) {
            if *day == today {
                return Ok(state.clone());
            }
        }
        let state = self.judge_warmup(gateway, schedule, today).await?;
        let mut cache = self.warmup_caps.0.lock();
        cache.insert(gateway.to_owned(), (today, state.clone()));
        Ok(state)
    }

    async fn judge_warmup(
        &self,
        gateway: &str,
        schedule: &WarmupSchedule,
        today: NaiveDate,
    ) -> Result<WarmupState, StoreError> {
        let current = self.warmup.state(gateway).await?;
        let was = current.as_ref().map(|s| s.judged_on);
        let state = current.unwrap_or_else(|| schedule.first_state());
        let Some(yesterday) = today.pred_opt() else {
            return Ok(state);
        };
        let tally = self.warmup.day(gateway, yesterday).await?;
        let Some(next) = schedule.judge(&state, today, tally) else {
            return Ok(state);
        };
        if !self.warmup.put_state(gateway, &next, was).await? {
            // Another process judged today first: its result stands.
            return Ok(self.warmup.state(gateway).await?.unwrap_or(next));
        }
        match &next.held {
            Some(reason) => self.announce_held(gateway, &next, reason, tally).await,
            None => info!(gateway, day = next.day + 1, "warm-up advanced"),
        }
        Ok(next)
    }

    async fn announce_held(
        &self,
        gateway: &str,
        state: &WarmupState,
        reason: &str,
        tally: DayTally,
    ) {
        warn!(gateway, reason, "warm-up held");
        let detail = serde_json::json!({
            "gateway": gateway, "day": state.day + 1, "reason": reason, "yesterday": tally,
        });
        let entry = AuditEntry::now(Scope::Global, Actor::System, AuditAction::WarmupHeld)
            .target(gateway)
            .detail(detail.clone());
        self.record_audit(entry).await;
        // Every tenant may route through the gateway: a platform event.
        let notice = Notice::new(None, EventType::WarmupHeld, Subject::Data { data: detail });
        self.notify(vec![notice]).await;
    }

    /// A gateway's warm-up for `GET /v1/gateways`; None without a schedule.
    pub async fn warmup_view(&self, gateway: &str) -> Result<Option<WarmupView>, StoreError> {
        let Some(schedule) = self.config.warmups.get(gateway) else {
            return Ok(None);
        };
        let today = Utc::now().date_naive();
        let state = self.warmup_state(gateway, schedule, today).await?;
        let used_today = self.warmup.day(gateway, today).await?;
        let cap_today = schedule.cap_on(&state, today);
        let phase = match (today >= schedule.start, cap_today, &state.held) {
            (false, _, _) => "not_started",
            (true, None, _) => "warm",
            (true, Some(_), Some(_)) => "held",
            (true, Some(_), None) => "advancing",
        };
        Ok(Some(WarmupView {
            day: state.day + 1,
            cap_today,
            by_provider: schedule.by_provider,
            used_today,
            state: phase,
            held_reason: state.held.clone(),
            start: schedule.start,
            target_per_day: schedule.target_per_day,
        }))
    }
}
