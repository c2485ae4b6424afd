//! The list of a tenant's bulk sends: one row per job, written with the job at accept and
//! purged with the messages. A job's progress is read from its messages, not kept here.

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection};

use super::{from_ms, ms, SqliteBackend};
use crate::domain::{Channel, Priority, TenantId};
use crate::ports::{BulkSummary, StoreError};

pub(super) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS bulk_sends (
    tenant TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    bulk_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    priority INTEGER NOT NULL,
    recipients INTEGER NOT NULL,
    PRIMARY KEY (tenant, created_at, bulk_id)
) WITHOUT ROWID;";

/// Lists an accepted job (in the accept's transaction).
pub(super) fn list_bulk_send(
    conn: &Connection,
    tenant: &TenantId,
    job: &BulkSummary,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO bulk_sends \
         (tenant, created_at, bulk_id, channel, priority, recipients) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        tenant.as_str(),
        ms(job.created_at),
        job.bulk_id,
        job.channel.as_str(),
        job.priority.index() as i64,
        job.recipients as i64,
    ])?;
    Ok(())
}

pub(super) fn purge_bulk_sends(conn: &Connection, cutoff_ms: i64) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM bulk_sends WHERE created_at < ?1", [cutoff_ms])?;
    Ok(())
}

impl SqliteBackend {
    pub(super) async fn read_bulk_sends(
        &self,
        tenant: &TenantId,
        since: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<BulkSummary>, StoreError> {
        let (tenant, since) = (tenant.as_str().to_owned(), ms(since));
        self.readers
            .run(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT bulk_id, created_at, channel, priority, recipients FROM bulk_sends \
                     WHERE tenant = ?1 AND created_at >= ?2 ORDER BY created_at DESC LIMIT ?3",
                )?;
                let rows = stmt.query_map(params![tenant, since, limit as i64], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, i64>(4)?,
                    ))
                })?;
                let mut found = Vec::new();
                for row in rows {
                    let (bulk_id, at, channel, lane, recipients) = row?;
                    let (Some(channel), Some(priority)) = (
                        Channel::parse(&channel),
                        Priority::from_index(lane as usize),
                    ) else {
                        continue;
                    };
                    found.push(BulkSummary {
                        bulk_id,
                        created_at: from_ms(at),
                        channel,
                        priority,
                        recipients: recipients.max(0) as u64,
                    });
                }
                Ok(found)
            })
            .await
    }
}
