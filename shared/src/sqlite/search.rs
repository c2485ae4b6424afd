//! Message search and bulk progress on SQLite. A search walks one index newest first (the
//! most selective one its filters allow, see `SEARCH_INDEXES`), checks the filters that index
//! does not hold on each row it reaches, and stops at a full page or after
//! [`SEARCH_SCAN_BUDGET`] rows, so a page costs milliseconds in a tenant of any size.

use rusqlite::types::Value as Sql;
use rusqlite::{params_from_iter, Connection, OptionalExtension, Row};

use super::rows::{message_from_row, MESSAGE_COLUMNS};
use super::SqliteBackend;
use crate::domain::{Message, MessageId, MessageStatus, TenantId};
use crate::ports::{BulkProgress, MessageFilter, SearchPage, StoreError, SEARCH_SCAN_BUDGET};

/// The search indexes (migration 3). Every index ends in `id`, so each walks newest first.
pub(super) const SEARCH_INDEXES: &str = "\
    CREATE INDEX IF NOT EXISTS messages_by_tenant ON messages (tenant, id); \
    CREATE INDEX IF NOT EXISTS messages_by_recipient ON messages (tenant, recipient, id); \
    CREATE INDEX IF NOT EXISTS messages_by_bulk ON messages (bulk_id, id) \
      WHERE bulk_id IS NOT NULL; \
    CREATE INDEX IF NOT EXISTS messages_by_external_id ON messages (tenant, external_id, id) \
      WHERE external_id IS NOT NULL; \
    CREATE INDEX IF NOT EXISTS messages_by_source ON messages (tenant, source_id, id) \
      WHERE source_id IS NOT NULL;";

/// The index a search walks (most selective first) and the equalities it seeks with.
fn plan(tenant: &str, f: &MessageFilter) -> (&'static str, Vec<(&'static str, String)>) {
    let t = ("tenant", tenant.to_owned());
    if let Some(b) = &f.bulk_id {
        return ("messages_by_bulk", vec![("bulk_id", b.clone()), t]);
    }
    if let Some(e) = &f.external_id {
        return (
            "messages_by_external_id",
            vec![t, ("external_id", e.clone())],
        );
    }
    if let Some(s) = &f.source_id {
        return ("messages_by_source", vec![t, ("source_id", s.clone())]);
    }
    if let Some(to) = &f.to {
        return ("messages_by_recipient", vec![t, ("recipient", to.clone())]);
    }
    if f.status == Some(MessageStatus::Failed) {
        // The dead-letter index; its condition must be written out for SQLite to use it.
        return ("messages_failed", vec![t, (FAILED, String::new())]);
    }
    ("messages_by_tenant", vec![t])
}

/// The condition of the partial index `messages_failed`.
const FAILED: &str = "status = 'failed'";

/// The columns the row check reads, after `id`.
const CHECKED: &str = "status, channel, priority, recipient, source_type, source_id, \
                       external_id, bulk_id";

/// Whether a row of `CHECKED` passes the filters (those the index held pass trivially).
fn row_passes(f: &MessageFilter, row: &Row<'_>) -> rusqlite::Result<bool> {
    let text = |i: usize| row.get::<_, Option<String>>(i);
    let same = |want: &Option<String>, i: usize| -> rusqlite::Result<bool> {
        Ok(match want {
            Some(w) => text(i)?.as_deref() == Some(w.as_str()),
            None => true,
        })
    };
    Ok(f.status
        .is_none_or(|s| matches!(text(1), Ok(Some(v)) if v == s.as_str()))
        && f.channel
            .is_none_or(|c| matches!(text(2), Ok(Some(v)) if v == c.as_str()))
        && f.priority
            .is_none_or(|p| matches!(row.get::<_, i64>(3), Ok(v) if v == p.index() as i64))
        && same(&f.to, 4)?
        && same(&f.source_type, 5)?
        && same(&f.source_id, 6)?
        && same(&f.external_id, 7)?
        && same(&f.bulk_id, 8)?)
}

fn search_in(
    conn: &Connection,
    tenant: &str,
    f: &MessageFilter,
    cursor: Option<MessageId>,
    limit: usize,
) -> rusqlite::Result<SearchPage> {
    let (index, seek) = plan(tenant, f);
    let mut sql = format!("SELECT id, {CHECKED} FROM messages INDEXED BY {index} WHERE ");
    let mut args: Vec<Sql> = Vec::new();
    for (column, value) in seek {
        if column == FAILED {
            sql.push_str(FAILED);
            sql.push_str(" AND ");
            continue;
        }
        sql.push_str(&format!("{column} = ?{} AND ", args.len() + 1));
        args.push(Sql::Text(value));
    }
    if let Some(low) = f.lowest_id() {
        sql.push_str(&format!("id >= ?{} AND ", args.len() + 1));
        args.push(Sql::Text(low.to_string()));
    }
    if let Some(high) = f.below_id(cursor) {
        sql.push_str(&format!("id < ?{} AND ", args.len() + 1));
        args.push(Sql::Text(high.to_string()));
    }
    sql.push_str("1 ORDER BY id DESC");
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(params_from_iter(args))?;
    let (mut hits, mut scanned, mut last) = (Vec::new(), 0, None);
    while let Some(row) = rows.next()? {
        let id: String = row.get(0)?;
        scanned += 1;
        if row_passes(f, row)? {
            hits.push(id.clone());
        }
        last = Some(id);
        if hits.len() == limit || scanned == SEARCH_SCAN_BUDGET {
            break;
        }
    }
    let stopped_early = hits.len() == limit || scanned == SEARCH_SCAN_BUDGET;
    let resume_below = last
        .filter(|_| stopped_early)
        .as_deref()
        .and_then(MessageId::parse);
    Ok(SearchPage {
        items: load(conn, &hits)?,
        resume_below,
    })
}

fn load(conn: &Connection, ids: &[String]) -> rusqlite::Result<Vec<Message>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?1"
    ))?;
    ids.iter()
        .filter_map(|id| {
            stmt.query_row([id], message_from_row)
                .optional()
                .transpose()
        })
        .collect()
}

fn bulk_progress_in(
    conn: &Connection,
    tenant: &str,
    bulk_id: &str,
) -> rusqlite::Result<Option<BulkProgress>> {
    let mut progress = BulkProgress::default();
    let mut stmt = conn.prepare_cached(
        "SELECT status, count(*) FROM messages INDEXED BY messages_by_bulk \
         WHERE bulk_id = ?1 AND tenant = ?2 GROUP BY status",
    )?;
    let mut rows = stmt.query([bulk_id, tenant])?;
    while let Some(row) = rows.next()? {
        let status: String = row.get(0)?;
        if let Some(s) = MessageStatus::parse(&status) {
            progress
                .by_status
                .insert(s, row.get::<_, i64>(1)?.max(0) as u64);
        }
    }
    // A job still being written: the recipients after its progress mark.
    let job: Option<i64> = conn
        .prepare_cached(
            "SELECT json_array_length(job, '$.recipients') - next_index FROM bulk_jobs \
             WHERE bulk_id = ?1 AND job ->> '$.tenant' = ?2",
        )?
        .query_row([bulk_id, tenant], |r| r.get(0))
        .optional()?;
    progress.pending = job.unwrap_or(0).max(0) as u64;
    let found = job.is_some() || !progress.by_status.is_empty();
    Ok(found.then_some(progress))
}

impl SqliteBackend {
    pub(super) async fn search_messages(
        &self,
        tenant: &TenantId,
        filter: &MessageFilter,
        cursor: Option<MessageId>,
        limit: usize,
    ) -> Result<SearchPage, StoreError> {
        let (tenant, filter) = (tenant.as_str().to_owned(), filter.clone());
        self.readers
            .run(move |conn| search_in(conn, &tenant, &filter, cursor, limit))
            .await
    }

    pub(super) async fn bulk_progress_of(
        &self,
        tenant: &TenantId,
        bulk_id: &str,
    ) -> Result<Option<BulkProgress>, StoreError> {
        let (tenant, bulk_id) = (tenant.as_str().to_owned(), bulk_id.to_owned());
        self.readers
            .run(move |conn| bulk_progress_in(conn, &tenant, &bulk_id))
            .await
    }
}
