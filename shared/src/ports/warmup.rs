//! Warm-up counters and state per gateway: each day's sends (capped atomically, per recipient
//! provider group when the schedule splits by provider), bounces and complaints, and where the
//! schedule stands. Durable on both backends, so a restart neither resets a day's count nor
//! loses a held schedule.

use async_trait::async_trait;
use chrono::NaiveDate;

use super::StoreError;
use crate::domain::deliverability::warmup::{DayTally, WarmupState};

#[async_trait]
pub trait WarmupStore: Send + Sync + 'static {
    /// Counts one send through `gateway` on `day` for `group`, unless `cap` were counted
    /// already: whether it was counted (the send may go).
    async fn take(
        &self,
        gateway: &str,
        day: NaiveDate,
        group: &str,
        cap: u64,
    ) -> Result<bool, StoreError>;
    /// Gives back a send counted by `take` that did not go (throttled, failed, held).
    async fn untake(&self, gateway: &str, day: NaiveDate, group: &str) -> Result<(), StoreError>;
    /// Adds a day's bounces and complaints through `gateway`.
    async fn note(
        &self,
        gateway: &str,
        day: NaiveDate,
        bounces: u64,
        complaints: u64,
    ) -> Result<(), StoreError>;
    /// A day's sends (every group), bounces and complaints through `gateway`.
    async fn day(&self, gateway: &str, day: NaiveDate) -> Result<DayTally, StoreError>;
    /// Where the gateway's schedule stands; None before its first judgement.
    async fn state(&self, gateway: &str) -> Result<Option<WarmupState>, StoreError>;
    /// Replaces the state if it was last judged on `was` (None: there was none): whether it
    /// did. Two processes judging the same day: one wins, the other reads its result.
    async fn put_state(
        &self,
        gateway: &str,
        state: &WarmupState,
        was: Option<NaiveDate>,
    ) -> Result<bool, StoreError>;
}
