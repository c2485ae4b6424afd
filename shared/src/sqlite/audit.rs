//! The audit log on SQLite: one row per entry, keyed by its UUIDv7 id, read through
//! `audit_by_scope (scope, id)`. A trigger refuses every UPDATE, so not even a bug in Herald
//! can rewrite an entry; retention deletes rows past [`RETENTION_DAYS`].

use async_trait::async_trait;
use rusqlite::{params, Connection, Row};

use super::{from_ms, ms, SqliteBackend};
use crate::domain::audit::{Actor, AuditAction, AuditEntry, AuditId, RETENTION_DAYS};
use crate::domain::suppression::Scope;
use crate::ports::{
    AuditFilter, AuditLog, AuditPage, AuditPageFill, StoreError, SEARCH_SCAN_BUDGET,
};

const COLUMNS: &str = "id, scope, at, actor, action, target, detail, client, request_id";

fn from_row(r: &Row<'_>) -> rusqlite::Result<AuditEntry> {
    let bad = |col: usize, what: &str| {
        rusqlite::Error::FromSqlConversionFailure(
            col,
            rusqlite::types::Type::Text,
            format!("audit entry: bad {what}").into(),
        )
    };
    let text = |col: usize| r.get::<_, String>(col);
    let detail: Option<String> = r.get(6)?;
    Ok(AuditEntry {
        id: AuditId::parse(&text(0)?).ok_or_else(|| bad(0, "id"))?,
        scope: Scope::from_key(&text(1)?).ok_or_else(|| bad(1, "scope"))?,
        at: from_ms(r.get(2)?),
        actor: Actor::parse(&text(3)?).ok_or_else(|| bad(3, "actor"))?,
        action: AuditAction::parse(&text(4)?).ok_or_else(|| bad(4, "action"))?,
        target: r.get(5)?,
        detail: match detail {
            Some(d) => serde_json::from_str(&d).map_err(|_| bad(6, "detail"))?,
            None => serde_json::Value::Null,
        },
        client: r.get(7)?,
        request_id: r.get(8)?,
    })
}

/// Up to the scan budget of `scope`'s rows in the id range, newest first, filtered here: the
/// page is short when the budget runs out first, and says where to go on.
fn page_in(
    conn: &Connection,
    scope: &str,
    filter: &AuditFilter,
    cursor: Option<AuditId>,
    limit: usize,
) -> rusqlite::Result<AuditPage> {
    let low = filter.lowest_id().map(|id| id.to_string());
    let below = filter.below_id(cursor).map(|id| id.to_string());
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM audit_log WHERE scope = ?1 \
         AND (?2 IS NULL OR id >= ?2) AND (?3 IS NULL OR id < ?3) ORDER BY id DESC LIMIT ?4"
    ))?;
    let mut rows = stmt.query(params![scope, low, below, SEARCH_SCAN_BUDGET as i64])?;
    let mut fill = AuditPageFill::new(filter, limit);
    while let Some(row) = rows.next()? {
        if fill.take(from_row(row)?) {
            break;
        }
    }
    Ok(fill.finish())
}

/// Deletes entries past retention (ids are UUIDv7: older ids are below the cutoff's).
pub(super) fn purge_audit(conn: &Connection) -> rusqlite::Result<usize> {
    let cutoff = chrono::Utc::now() - chrono::Duration::days(RETENTION_DAYS);
    let floor = crate::ports::first_id_at(cutoff).to_string();
    conn.execute("DELETE FROM audit_log WHERE id < ?1", [floor])
}

#[async_trait]
impl AuditLog for SqliteBackend {
    async fn append(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let e = entry.clone();
        self.writer
            // Behind the priority lanes: no message waits for an audit entry.
            .run(super::pool::OUTCOMES_RANK, move |conn| {
                conn.prepare_cached(&format!(
                    "INSERT INTO audit_log ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
                ))?
                .execute(params![
                    e.id.to_string(),
                    e.scope.key(),
                    ms(e.at),
                    e.actor.label(),
                    e.action.as_str(),
                    e.target,
                    (!e.detail.is_null()).then(|| e.detail.to_string()),
                    e.client,
                    e.request_id,
                ])?;
                Ok(())
            })
            .await
    }

    async fn audit_page(
        &self,
        scope: &Scope,
        filter: &AuditFilter,
        cursor: Option<AuditId>,
        limit: usize,
    ) -> Result<AuditPage, StoreError> {
        let (scope, filter) = (scope.key().to_owned(), filter.clone());
        self.readers
            .run(move |conn| page_in(conn, &scope, &filter, cursor, limit))
            .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[tokio::test]
    async fn sqlite_audit_contract() {
        let dir = tempfile::tempdir().unwrap();
        let b = SqliteBackend::open(&dir.path().join("h.db")).unwrap();
        crate::ports::contract::audit_log_appends_filters_and_isolates(&b).await;
    }

    #[tokio::test]
    async fn sqlite_refuses_to_update_an_audit_entry() {
        let dir = tempfile::tempdir().unwrap();
        let b = SqliteBackend::open(&dir.path().join("h.db")).unwrap();
        let e = AuditEntry::now(Scope::Global, Actor::System, AuditAction::KeyCreated);
        b.append(&e).await.unwrap();
        let changed = b
            .writer
            .run(1, |conn| {
                conn.execute("UPDATE audit_log SET actor = 'anonymous'", [])?;
                Ok(())
            })
            .await;
        assert!(
            format!("{changed:?}").contains("append-only"),
            "{changed:?}"
        );
        assert!(b.append(&e).await.is_err(), "an id is never stored twice");
    }
}
