//! New messages: one at a time for a single send, and many per statement for bulk chunks
//! (one statement per 64 messages). A row carries its place on the lane and its accept event
//! (`accept_kind`, `accept_detail`), so an accept writes no `events` row.

use std::sync::OnceLock;

use rusqlite::types::Value as Sql;
use rusqlite::{params_from_iter, Connection};

use super::ms;
use super::rows::detail_text;
use crate::domain::{EventKind, NewMessage};

/// Messages per multi-row INSERT: 64 rows of 25 parameters is far under SQLite's limit, and one
/// fixed size keeps one cached plan per statement.
const ROWS_PER_INSERT: usize = 64;

const MESSAGE_INSERT: &str = "INSERT INTO messages (id, tenant, channel, priority, status, \
     recipient, sender, subject, body, html, template, sms, message_type, source_type, source_id, \
     metadata, send_at, bulk_id, external_id, correlation_id, created_at, updated_at, visible_at, \
     accept_kind, accept_detail) VALUES ";
/// One row's placeholders.
const MESSAGE_ROW: &str = "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)";

pub(super) fn insert_message(conn: &Connection, m: &NewMessage) -> rusqlite::Result<()> {
    conn.prepare_cached(&format!("{MESSAGE_INSERT}{MESSAGE_ROW}"))?
        .execute(params_from_iter(message_values(m)))?;
    Ok(())
}

/// Inserts a chunk of new messages: full blocks of 64 as multi-row statements, the rest one by one.
pub(super) fn insert_messages(conn: &Connection, chunk: &[NewMessage]) -> rusqlite::Result<()> {
    let mut blocks = chunk.chunks_exact(ROWS_PER_INSERT);
    for block in &mut blocks {
        insert_block(conn, block)?;
    }
    for m in blocks.remainder() {
        insert_message(conn, m)?;
    }
    Ok(())
}

fn insert_block(conn: &Connection, block: &[NewMessage]) -> rusqlite::Result<()> {
    static SQL: OnceLock<String> = OnceLock::new();
    let sql = SQL.get_or_init(|| {
        let rows = vec![MESSAGE_ROW; ROWS_PER_INSERT].join(",");
        format!("{MESSAGE_INSERT}{rows}")
    });
    conn.prepare_cached(sql)?
        .execute(params_from_iter(block.iter().flat_map(message_values)))?;
    Ok(())
}

/// When a queued message becomes due on its lane: its `send_at`, never before it was created.
/// None for a message settled at accept (suppressed), which never goes on a lane.
fn due_ms(m: &NewMessage) -> Option<i64> {
    let now = ms(m.created_at);
    m.status
        .is_pending()
        .then(|| m.send_at.map(ms).unwrap_or(now).max(now))
}

/// The 25 values of a `messages` row, in `MESSAGE_INSERT`'s order.
fn message_values(m: &NewMessage) -> [Sql; 25] {
    let text = |s: Option<&str>| s.map_or(Sql::Null, |s| Sql::Text(s.to_owned()));
    let now = ms(m.created_at);
    let accept_kind: EventKind = m.status.into();
    [
        Sql::Text(m.id.to_string()),
        Sql::Text(m.tenant.as_str().to_owned()),
        Sql::Text(m.channel.as_str().to_owned()),
        Sql::Integer(m.priority.index() as i64),
        Sql::Text(m.status.as_str().to_owned()),
        Sql::Text(m.to.clone()),
        text(m.from.as_deref()),
        text(m.content.subject.as_deref()),
        text(m.content.body.as_deref()),
        text(m.content.html.as_deref()),
        text(m.template.as_deref()),
        m.sms
            .map_or(Sql::Null, |s| Sql::Text(serde_json::json!(s).to_string())),
        text(m.message_type.as_deref()),
        text(m.source_type.as_deref()),
        text(m.source_id.as_deref()),
        m.metadata
            .as_ref()
            .map_or(Sql::Null, |v| Sql::Text(v.to_string())),
        m.send_at.map_or(Sql::Null, |t| Sql::Integer(ms(t))),
        text(m.bulk_id.as_deref()),
        text(m.external_id.as_deref()),
        Sql::Text(m.correlation_id.clone()),
        Sql::Integer(now),
        Sql::Integer(now),
        due_ms(m).map_or(Sql::Null, Sql::Integer),
        Sql::Text(accept_kind.as_str().to_owned()),
        detail_text(&m.first_event_detail()).map_or(Sql::Null, Sql::Text),
    ]
}
