//! Sends per minute, per tenant and lane, for the console's throughput chart. The writer counts
//! a batch's `sent` outcomes as it applies them (`sets::apply_transitions`, from the statement's
//! RETURNING; a lone `sent` takes the batch statement for it): one upsert per tenant, lane and
//! minute in the batch (usually one), not a row per message. Counting the events instead would
//! read every send of the last hour on each look.

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection};
use rustc_hash::FxHashMap;

use super::{ms, SqliteBackend};
use crate::domain::{Priority, TenantId};
use crate::ports::{SentMinute, StoreError, SENT_MINUTES_KEPT_HOURS};

pub(super) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS sent_minutes (
    tenant TEXT NOT NULL,
    minute INTEGER NOT NULL,
    lane INTEGER NOT NULL,
    sent INTEGER NOT NULL,
    PRIMARY KEY (tenant, minute, lane)
) WITHOUT ROWID;";

const MINUTE_MS: i64 = 60_000;

const ADD: &str = "INSERT INTO sent_minutes (tenant, minute, lane, sent) VALUES (?1, ?2, ?3, ?4) \
                   ON CONFLICT DO UPDATE SET sent = sent + excluded.sent";

/// A batch's sends, summed by (tenant, lane, minute) before they are written.
#[derive(Default)]
pub(crate) struct SentTally(FxHashMap<(String, i64, i64), i64>);

impl SentTally {
    pub fn add(&mut self, tenant: String, lane: i64, at_ms: i64) {
        *self.0.entry((tenant, lane, at_ms / MINUTE_MS)).or_default() += 1;
    }

    pub fn write(self, conn: &Connection) -> rusqlite::Result<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        let mut add = conn.prepare_cached(ADD)?;
        for ((tenant, lane, minute), n) in self.0 {
            add.execute(params![tenant, minute, lane, n])?;
        }
        Ok(())
    }
}

/// Drops the minutes past keeping.
pub(super) fn purge_sent_minutes(conn: &Connection, now_ms: i64) -> rusqlite::Result<()> {
    let floor = (now_ms - SENT_MINUTES_KEPT_HOURS * 3_600_000) / MINUTE_MS;
    conn.execute("DELETE FROM sent_minutes WHERE minute < ?1", [floor])?;
    Ok(())
}

impl SqliteBackend {
    pub(super) async fn read_sent_minutes(
        &self,
        tenant: &TenantId,
        since: DateTime<Utc>,
    ) -> Result<Vec<SentMinute>, StoreError> {
        let tenant = tenant.as_str().to_owned();
        let from = ms(since).div_euclid(MINUTE_MS);
        self.readers
            .run(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT minute, lane, sent FROM sent_minutes \
                     WHERE tenant = ?1 AND minute >= ?2 ORDER BY minute, lane",
                )?;
                let rows = stmt.query_map(params![tenant, from], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })?;
                let mut out = Vec::new();
                for row in rows {
                    let (minute, lane, sent) = row?;
                    let (Some(minute), Some(lane)) = (
                        DateTime::from_timestamp_millis(minute * MINUTE_MS),
                        Priority::from_index(lane as usize),
                    ) else {
                        continue;
                    };
                    out.push(SentMinute {
                        minute,
                        lane,
                        sent: sent.max(0) as u64,
                    });
                }
                Ok(out)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::MessageStatus;
    use crate::ports::contract::{accept, claim_now, message, tenant};
    use crate::ports::{MessageStore, Transition};

    /// A batch of outcomes is counted as one: three sends on P2 in one `transition` call.
    #[tokio::test]
    async fn a_batch_of_sends_is_counted_once_per_minute_and_lane() {
        let dir = tempfile::tempdir().unwrap();
        let b = SqliteBackend::open(&dir.path().join("t.db")).unwrap();
        let t = tenant("acme");
        let mut sends = Vec::new();
        for _ in 0..3 {
            let id = accept(&b, message(&t, Priority::P2)).await;
            let m = claim_now(&b, id, Priority::P2).await;
            let mut sent = Transition::new(id, MessageStatus::Sent, Utc::now());
            sent.attempt = Some(m.attempts);
            sends.push(sent);
        }
        b.transition(sends).await.unwrap();
        let since = Utc::now() - chrono::Duration::minutes(5);
        let counted: u64 = b
            .sent_per_minute(&t, since)
            .await
            .unwrap()
            .iter()
            .inspect(|m| assert_eq!(m.lane, Priority::P2))
            .map(|m| m.sent)
            .sum();
        assert_eq!(counted, 3);
    }
}
