//! New messages: one at a time for a single send, and many per statement for bulk chunks
//! (two statements per 64 messages: the messages, with their place on the lane, and their
//! first events).

use std::sync::OnceLock;

use rusqlite::types::Value as Sql;
use rusqlite::{params_from_iter, Connection};

use super::ms;
use super::rows::{detail_text, insert_event};
use crate::domain::{EventKind, NewMessage};

/// Messages per multi-row INSERT: 64 rows of 23 parameters is far under SQLite's limit, and one
/// fixed size keeps one cached plan per statement.
const ROWS_PER_INSERT: usize = 64;

const MESSAGE_INSERT: &str = "INSERT INTO messages (id, tenant, channel, priority, status, \
     recipient, sender, subject, body, html, template, sms, message_type, source_type, source_id, \
     metadata, send_at, bulk_id, external_id, correlation_id, created_at, updated_at, visible_at) \
     VALUES ";
/// One row's placeholders.
const MESSAGE_ROW: &str = "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)";
const EVENT_INSERT: &str = "INSERT INTO events (message_id, seq, kind, at, detail) VALUES ";
const EVENT_ROW: &str = "(?,?,?,?,?)";

pub(super) fn insert_message(conn: &Connection, m: &NewMessage) -> rusqlite::Result<()> {
    let id = m.id.to_string();
    conn.prepare_cached(&format!("{MESSAGE_INSERT}{MESSAGE_ROW}"))?
        .execute(params_from_iter(message_values(m, &id)))?;
    let now = ms(m.created_at);
    let detail = detail_text(&m.first_event_detail());
    insert_event(conn, &id, m.status.into(), now, detail.as_deref())
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
    static SQL: OnceLock<[String; 2]> = OnceLock::new();
    let [messages, events] = SQL.get_or_init(|| {
        let rows = |row: &str| vec![row; ROWS_PER_INSERT].join(",");
        [
            format!("{MESSAGE_INSERT}{}", rows(MESSAGE_ROW)),
            format!("{EVENT_INSERT}{}", rows(EVENT_ROW)),
        ]
    });
    let ids: Vec<String> = block.iter().map(|m| m.id.to_string()).collect();
    let values = block
        .iter()
        .zip(&ids)
        .flat_map(|(m, id)| message_values(m, id));
    conn.prepare_cached(messages)?
        .execute(params_from_iter(values))?;
    let events_values = block.iter().zip(&ids).flat_map(|(m, id)| {
        let kind: EventKind = m.status.into();
        [
            Sql::Text(id.clone()),
            Sql::Integer(super::next_event_seq()),
            Sql::Text(kind.as_str().to_owned()),
            Sql::Integer(ms(m.created_at)),
            detail_text(&m.first_event_detail()).map_or(Sql::Null, Sql::Text),
        ]
    });
    conn.prepare_cached(events)?
        .execute(params_from_iter(events_values))?;
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

/// The 23 values of a `messages` row, in `MESSAGE_INSERT`'s order.
fn message_values(m: &NewMessage, id: &str) -> [Sql; 23] {
    let text = |s: Option<&str>| s.map_or(Sql::Null, |s| Sql::Text(s.to_owned()));
    let now = ms(m.created_at);
    [
        Sql::Text(id.to_owned()),
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
    ]
}
