//! Message search and bulk progress on SQLite. A search walks one index newest first (the
//! most selective one its filters allow, see `SEARCH_INDEXES`), has SQLite check every
//! filter on each row it reaches, and stops at a full page or after
//! [`SEARCH_SCAN_BUDGET`] rows, so a page costs milliseconds in a tenant of any size.

use rusqlite::types::Value as Sql;
use rusqlite::{params_from_iter, Connection, OptionalExtension};

use super::rows::{message_from_row, status_now, MESSAGE_COLUMNS};
use crate::domain::{Message, MessageId, MessageStatus, TenantId};
use crate::ports::{BulkProgress, MessageFilter, SearchPage, SEARCH_SCAN_BUDGET};

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

/// The filters as SQL equalities, for the rows the index walk reaches (those the index
/// already holds are true there, and cheap to test again).
fn equalities(f: &MessageFilter) -> Vec<(&'static str, Sql)> {
    let text = |v: &Option<String>| v.clone().map(Sql::Text);
    [
        (
            status_now!(),
            f.status.map(|s| Sql::Text(s.as_str().into())),
        ),
        ("channel", f.channel.map(|c| Sql::Text(c.as_str().into()))),
        (
            "priority",
            f.priority.map(|p| Sql::Integer(p.index() as i64)),
        ),
        ("recipient", text(&f.to)),
        ("source_type", text(&f.source_type)),
        ("source_id", text(&f.source_id)),
        ("external_id", text(&f.external_id)),
        ("bulk_id", text(&f.bulk_id)),
    ]
    .into_iter()
    .filter_map(|(column, value)| Some((column, value?)))
    .collect()
}

/// The walk's statement: newest first along `plan`'s index, each row's `rowid`, `id`, and
/// whether it passes every filter. Unfiltered, it reads the index alone.
fn walk_statement(
    tenant: &str,
    f: &MessageFilter,
    cursor: Option<MessageId>,
) -> (String, Vec<Sql>) {
    let mut args: Vec<Sql> = Vec::new();
    let mut bind = |value: Sql| {
        args.push(value);
        format!("?{}", args.len())
    };
    let (index, seek) = plan(tenant, f);
    let mut conditions: Vec<String> = seek
        .into_iter()
        .map(|(column, value)| match column {
            FAILED => FAILED.to_owned(),
            _ => format!("{column} = {}", bind(Sql::Text(value))),
        })
        .collect();
    if let Some(low) = f.lowest_id() {
        conditions.push(format!("id >= {}", bind(Sql::Text(low.to_string()))));
    }
    if let Some(high) = f.below_id(cursor) {
        conditions.push(format!("id < {}", bind(Sql::Text(high.to_string()))));
    }
    let checks: Vec<String> = equalities(f)
        .into_iter()
        .map(|(column, value)| format!("{column} = {}", bind(value)))
        .collect();
    // A NULL column makes its equality NULL, not false.
    let passes = match checks.is_empty() {
        true => "1".to_owned(),
        false => format!("IFNULL({}, 0)", checks.join(" AND ")),
    };
    let sql = format!(
        "SELECT rowid, id, ({passes}) FROM messages INDEXED BY {index} WHERE {} \
         ORDER BY id DESC",
        conditions.join(" AND ")
    );
    (sql, args)
}

pub(super) fn search_in(
    conn: &Connection,
    tenant: &str,
    f: &MessageFilter,
    cursor: Option<MessageId>,
    limit: usize,
) -> rusqlite::Result<SearchPage> {
    let (sql, args) = walk_statement(tenant, f, cursor);
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(params_from_iter(args))?;
    let (mut hits, mut scanned, mut last, mut ended) = (Vec::new(), 0, None, false);
    while hits.len() < limit && scanned < SEARCH_SCAN_BUDGET {
        let Some(row) = rows.next()? else {
            ended = true;
            break;
        };
        scanned += 1;
        if row.get::<_, bool>(2)? {
            hits.push(row.get::<_, i64>(0)?);
        }
        last = Some(row.get::<_, String>(1)?);
    }
    Ok(SearchPage {
        items: load(conn, &hits)?,
        resume_below: last
            .filter(|_| !ended)
            .as_deref()
            .and_then(MessageId::parse),
    })
}

/// The messages at `rowids`, in that order.
fn load(conn: &Connection, rowids: &[i64]) -> rusqlite::Result<Vec<Message>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE rowid = ?1"
    ))?;
    rowids
        .iter()
        .map(|rowid| stmt.query_row([rowid], message_from_row))
        .collect()
}

/// The tenant of a bulk send's messages, or of its job while none is written yet.
pub(super) fn bulk_owner_in(
    conn: &Connection,
    bulk_id: &str,
) -> rusqlite::Result<Option<TenantId>> {
    let owner: Option<String> = conn
        .prepare_cached(
            "SELECT tenant FROM messages INDEXED BY messages_by_bulk WHERE bulk_id = ?1 \
             UNION ALL SELECT tenant FROM bulk_job_progress WHERE bulk_id = ?1 LIMIT 1",
        )?
        .query_row([bulk_id], |r| r.get(0))
        .optional()?;
    Ok(owner.and_then(|t| TenantId::parse(&t).ok()))
}

pub(super) fn bulk_progress_in(
    conn: &Connection,
    tenant: &str,
    bulk_id: &str,
) -> rusqlite::Result<Option<BulkProgress>> {
    let mut progress = BulkProgress::default();
    let mut stmt = conn.prepare_cached(concat!(
        "SELECT ",
        status_now!(),
        " AS status_now, count(*) FROM messages INDEXED BY messages_by_bulk \
         WHERE bulk_id = ?1 AND tenant = ?2 GROUP BY status_now",
    ))?;
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
            "SELECT total - next_index FROM bulk_job_progress WHERE bulk_id = ?1 AND tenant = ?2",
        )?
        .query_row([bulk_id, tenant], |r| r.get(0))
        .optional()?;
    progress.pending = job.unwrap_or(0).max(0) as u64;
    let found = job.is_some() || !progress.by_status.is_empty();
    Ok(found.then_some(progress))
}
