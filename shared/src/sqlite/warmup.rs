//! Warm-up counters and state on SQLite: a row per gateway, day and provider group, counted
//! with one conditional upsert per send on the writer, so the cap holds exactly.

use async_trait::async_trait;
use chrono::NaiveDate;
use rusqlite::{params, OptionalExtension};

use super::SqliteBackend;
use crate::domain::deliverability::warmup::{DayTally, WarmupState};
use crate::ports::{StoreError, WarmupStore};

pub(super) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS warmup_days (
    gateway TEXT NOT NULL,
    day TEXT NOT NULL,
    grp TEXT NOT NULL,
    sends INTEGER NOT NULL DEFAULT 0,
    bounces INTEGER NOT NULL DEFAULT 0,
    complaints INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (gateway, day, grp)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS warmup_state (
    gateway TEXT PRIMARY KEY,
    state TEXT NOT NULL
) WITHOUT ROWID;";

/// Bounces and complaints are kept beside the groups' sends, under a group of their own.
const OUTCOMES: &str = "*";

fn day_key(day: NaiveDate) -> String {
    day.format("%Y-%m-%d").to_string()
}

#[async_trait]
impl WarmupStore for SqliteBackend {
    async fn take(
        &self,
        gateway: &str,
        day: NaiveDate,
        group: &str,
        cap: u64,
    ) -> Result<bool, StoreError> {
        if cap == 0 {
            return Ok(false);
        }
        let args = (gateway.to_owned(), day_key(day), group.to_owned());
        let cap = i64::try_from(cap).unwrap_or(i64::MAX);
        self.writer
            .run(1, move |conn| {
                let changed = conn
                    .prepare_cached(
                        "INSERT INTO warmup_days (gateway, day, grp, sends) VALUES (?1, ?2, ?3, 1) \
                         ON CONFLICT (gateway, day, grp) DO UPDATE SET sends = sends + 1 \
                         WHERE sends < ?4",
                    )?
                    .execute(params![args.0, args.1, args.2, cap])?;
                Ok(changed == 1)
            })
            .await
    }

    async fn untake(&self, gateway: &str, day: NaiveDate, group: &str) -> Result<(), StoreError> {
        let args = (gateway.to_owned(), day_key(day), group.to_owned());
        self.writer
            .run(1, move |conn| {
                conn.prepare_cached(
                    "UPDATE warmup_days SET sends = sends - 1 \
                     WHERE gateway = ?1 AND day = ?2 AND grp = ?3 AND sends > 0",
                )?
                .execute(params![args.0, args.1, args.2])?;
                Ok(())
            })
            .await
    }

    async fn note(
        &self,
        gateway: &str,
        day: NaiveDate,
        bounces: u64,
        complaints: u64,
    ) -> Result<(), StoreError> {
        let (gateway, day) = (gateway.to_owned(), day_key(day));
        let (b, c) = (bounces as i64, complaints as i64);
        self.writer
            .run(1, move |conn| {
                conn.prepare_cached(
                    "INSERT INTO warmup_days (gateway, day, grp, bounces, complaints) \
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (gateway, day, grp) DO UPDATE \
                     SET bounces = bounces + ?4, complaints = complaints + ?5",
                )?
                .execute(params![gateway, day, OUTCOMES, b, c])?;
                Ok(())
            })
            .await
    }

    async fn day(&self, gateway: &str, day: NaiveDate) -> Result<DayTally, StoreError> {
        let (gateway, day) = (gateway.to_owned(), day_key(day));
        self.readers
            .run(move |conn| {
                conn.prepare_cached(
                    "SELECT COALESCE(SUM(sends), 0), COALESCE(SUM(bounces), 0), \
                     COALESCE(SUM(complaints), 0) FROM warmup_days WHERE gateway = ?1 AND day = ?2",
                )?
                .query_row(params![gateway, day], |r| {
                    Ok(DayTally {
                        sends: r.get::<_, i64>(0)? as u64,
                        bounces: r.get::<_, i64>(1)? as u64,
                        complaints: r.get::<_, i64>(2)? as u64,
                    })
                })
            })
            .await
    }

    async fn state(&self, gateway: &str) -> Result<Option<WarmupState>, StoreError> {
        let gateway = gateway.to_owned();
        let raw: Option<String> = self
            .readers
            .run(move |conn| {
                conn.prepare_cached("SELECT state FROM warmup_state WHERE gateway = ?1")?
                    .query_row([gateway], |r| r.get(0))
                    .optional()
            })
            .await?;
        raw.map(|r| {
            serde_json::from_str(&r).map_err(|e| StoreError::Corrupt(format!("warm-up state: {e}")))
        })
        .transpose()
    }

    async fn put_state(
        &self,
        gateway: &str,
        state: &WarmupState,
        was: Option<NaiveDate>,
    ) -> Result<bool, StoreError> {
        let raw = serde_json::to_string(state).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let gateway = gateway.to_owned();
        self.writer
            .run(1, move |conn| {
                let current: Option<String> = conn
                    .prepare_cached("SELECT state FROM warmup_state WHERE gateway = ?1")?
                    .query_row([&gateway], |r| r.get(0))
                    .optional()?;
                let judged_on = current
                    .and_then(|c| serde_json::from_str::<WarmupState>(&c).ok())
                    .map(|s| s.judged_on);
                if judged_on != was {
                    return Ok(false);
                }
                conn.prepare_cached(
                    "INSERT INTO warmup_state (gateway, state) VALUES (?1, ?2) \
                     ON CONFLICT (gateway) DO UPDATE SET state = excluded.state",
                )?
                .execute(params![gateway, raw])?;
                Ok(true)
            })
            .await
    }
}
