//! Console sessions on SQLite: one small table, swept of expired rows when a session opens.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};

use super::{from_ms, ms, SqliteBackend};
use crate::domain::TenantId;
use crate::ports::{ConsoleSession, SessionStore, StoreError};

pub(super) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS console_sessions (
    id_hash TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    key_prefix TEXT NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;";

#[async_trait]
impl SessionStore for SqliteBackend {
    async fn open_session(
        &self,
        id_hash: &str,
        session: &ConsoleSession,
    ) -> Result<(), StoreError> {
        let row = (
            id_hash.to_owned(),
            session.tenant.as_str().to_owned(),
            session.key_prefix.clone(),
            ms(session.expires_at),
        );
        let now = ms(Utc::now());
        self.writer
            .run(1, move |conn| {
                conn.execute("DELETE FROM console_sessions WHERE expires_at <= ?1", [now])?;
                conn.execute(
                    "INSERT INTO console_sessions (id_hash, tenant, key_prefix, expires_at) \
                     VALUES (?1, ?2, ?3, ?4)",
                    params![row.0, row.1, row.2, row.3],
                )?;
                Ok(())
            })
            .await
    }

    async fn find_session(
        &self,
        id_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<ConsoleSession>, StoreError> {
        let id_hash = id_hash.to_owned();
        let now = ms(now);
        self.readers
            .lookup(move |conn| {
                let row: Option<(String, String, i64)> = conn
                    .prepare_cached(
                        "SELECT tenant, key_prefix, expires_at FROM console_sessions \
                         WHERE id_hash = ?1 AND expires_at > ?2",
                    )?
                    .query_row(params![id_hash, now], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })
                    .optional()?;
                Ok(row.and_then(|(tenant, key_prefix, expires_at)| {
                    Some(ConsoleSession {
                        tenant: TenantId::parse(&tenant).ok()?,
                        key_prefix,
                        expires_at: from_ms(expires_at),
                    })
                }))
            })
            .await
    }

    async fn close_session(&self, id_hash: &str) -> Result<(), StoreError> {
        let id_hash = id_hash.to_owned();
        self.writer
            .run(1, move |conn| {
                conn.execute(
                    "DELETE FROM console_sessions WHERE id_hash = ?1",
                    [&id_hash],
                )?;
                Ok(())
            })
            .await
    }
}
