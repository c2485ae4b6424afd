//! Row <-> domain mapping shared by the store implementations.

use rusqlite::types::Type;
use rusqlite::{params, Connection, Row};

use super::{from_ms, next_event_seq};
use crate::domain::{
    sms::SmsInfo, Channel, Content, DeliveryEvent, DeliveryOptions, EventKind, Message, MessageId,
    MessageStatus, Priority, TenantId,
};

/// A message's status as its readers see it. A callback's `delivered` for a row left `sent` is
/// appended to `delivered_marks` (see `sets.rs`) rather than rewriting the wide row, so such a
/// row is `delivered`. Every statement that reads or tests a message's status uses this; the
/// `EXISTS` runs only for rows whose column says `sent`.
macro_rules! status_now {
    () => {
        "(CASE WHEN messages.status = 'sent' AND EXISTS (SELECT 1 FROM delivered_marks \
         WHERE delivered_marks.message_id = messages.id) THEN 'delivered' \
         ELSE messages.status END)"
    };
}
pub(crate) use status_now;

/// A message's last change as its readers see it: a `delivered` mark's time (above).
macro_rules! updated_now {
    () => {
        "(CASE WHEN messages.status = 'sent' THEN IFNULL((SELECT at FROM delivered_marks \
         WHERE delivered_marks.message_id = messages.id), messages.updated_at) \
         ELSE messages.updated_at END)"
    };
}
pub(crate) use updated_now;

/// The columns `message_from_row` reads, as a literal so hot queries can be `concat!`-ed at
/// compile time.
macro_rules! message_columns {
    () => {
        concat!(
            "id, tenant, channel, priority, ",
            $crate::sqlite::rows::status_now!(),
            ", recipient, sender, subject, body, \
             html, template, sms, message_type, source_type, source_id, metadata, send_at, \
             bulk_id, external_id, correlation_id, attempts, gateway, provider_message_id, \
             last_error, created_at, ",
            $crate::sqlite::rows::updated_now!()
        )
    };
}
pub(crate) use message_columns;
pub(crate) const MESSAGE_COLUMNS: &str = message_columns!();
/// How many columns `message_columns!` names: what a statement returns after them starts here.
pub(crate) const MESSAGE_COLUMN_COUNT: usize = count_columns(MESSAGE_COLUMNS);

/// Counts the top-level commas: those inside an expression's parentheses separate arguments.
const fn count_columns(list: &str) -> usize {
    let bytes = list.as_bytes();
    let (mut i, mut columns, mut depth) = (0, 1, 0);
    while i < bytes.len() {
        match bytes[i] {
            b'(' => depth += 1,
            b')' => depth -= 1,
            b',' if depth == 0 => columns += 1,
            _ => {}
        }
        i += 1;
    }
    columns
}

/// The claim's compare-and-set, for every claim statement: `queued`/`deferred`, or `sending`
/// whose lease ran out by the parameter `$now`.
macro_rules! claimable {
    ($now:literal) => {
        concat!(
            "(status = 'queued' OR status = 'deferred' \
             OR (status = 'sending' AND COALESCE(lease_until, 0) <= ",
            $now,
            "))"
        )
    };
}
pub(crate) use claimable;

/// What every claim statement writes: `sending` with one more attempt, leased until `$lease`,
/// and the claim itself on the row in place of a `sending` event row (`$seq` is its event
/// sequence, `$now` its time). The placeholders appear in the order lease, now, seq, now.
macro_rules! claim_set {
    ($lease:literal, $now:literal, $seq:literal) => {
        concat!(
            "status = 'sending', attempts = attempts + 1, lease_until = ",
            $lease,
            ", updated_at = ",
            $now,
            ", claim_seq = ",
            $seq,
            ", claimed_at = ",
            $now,
            ", claim_attempt = attempts + 1"
        )
    };
}
pub(crate) use claim_set;

/// The lane columns of a transition to the status `$to`: a message that leaves
/// `queued`/`deferred` for good (sent, failed, cancelled, ...) leaves its lane in the same
/// write, so its receipt's ack then finds nothing to do.
macro_rules! lane_after {
    ($to:literal) => {
        concat!(
            "visible_at = CASE WHEN ",
            $to,
            " IN ('queued', 'deferred') THEN visible_at END, in_flight = CASE WHEN ",
            $to,
            " IN ('queued', 'deferred') THEN in_flight ELSE 0 END, "
        )
    };
}
pub(crate) use lane_after;

fn bad(col: usize, what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(col, Type::Text, what.to_owned().into())
}

pub(crate) fn parse_status(col: usize, s: &str) -> rusqlite::Result<MessageStatus> {
    MessageStatus::parse(s).ok_or_else(|| bad(col, "unknown message status"))
}

fn parse_json<T: serde::de::DeserializeOwned>(
    col: usize,
    s: Option<String>,
) -> rusqlite::Result<Option<T>> {
    s.map(|s| serde_json::from_str(&s).map_err(|_| bad(col, "bad json")))
        .transpose()
}

pub(crate) fn message_from_row(row: &Row<'_>) -> rusqlite::Result<Message> {
    let id: String = row.get(0)?;
    let channel: String = row.get(2)?;
    let priority: i64 = row.get(3)?;
    let status: String = row.get(4)?;
    let mut m = Message {
        id: MessageId::parse(&id).ok_or_else(|| bad(0, "bad message id"))?,
        tenant: TenantId::parse(&row.get::<_, String>(1)?).map_err(|_| bad(1, "bad tenant"))?,
        channel: Channel::parse(&channel).ok_or_else(|| bad(2, "unknown channel"))?,
        priority: Priority::from_index(priority as usize)
            .ok_or_else(|| bad(3, "unknown priority"))?,
        status: parse_status(4, &status)?,
        to: row.get(5)?,
        from: row.get(6)?,
        content: Content {
            subject: row.get(7)?,
            body: row.get(8)?,
            html: row.get(9)?,
        },
        template: row.get(10)?,
        sms: parse_json::<SmsInfo>(11, row.get(11)?)?,
        message_type: row.get(12)?,
        source_type: row.get(13)?,
        source_id: row.get(14)?,
        metadata: parse_json(15, row.get(15)?)?,
        options: Default::default(),
        send_at: row.get::<_, Option<i64>>(16)?.map(from_ms),
        bulk_id: row.get(17)?,
        external_id: row.get(18)?,
        correlation_id: row.get(19)?,
        attempts: row.get(20)?,
        gateway: row.get(21)?,
        provider_message_id: row.get(22)?,
        last_error: row.get(23)?,
        created_at: from_ms(row.get(24)?),
        updated_at: from_ms(row.get(25)?),
    };
    m.options = DeliveryOptions::from_metadata(m.metadata.as_ref())
        .map_err(|e| bad(15, &format!("delivery options: {}", e.detail)))?;
    Ok(m)
}

/// An event's detail as stored: serialized before the write job, so the writer thread (the
/// bottleneck) does not spend its time in serde.
pub(crate) fn detail_text(detail: &serde_json::Value) -> Option<String> {
    (!detail.is_null()).then(|| detail.to_string())
}

pub(crate) fn insert_event(
    conn: &Connection,
    message_id: &str,
    kind: EventKind,
    at_ms: i64,
    detail: Option<&str>,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO events (message_id, seq, kind, at, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        message_id,
        next_event_seq(),
        kind.as_str(),
        at_ms,
        detail
    ])?;
    Ok(())
}

pub(crate) fn events_of(
    conn: &Connection,
    message_id: &str,
) -> rusqlite::Result<Vec<DeliveryEvent>> {
    // The accept's event (seq 0: always first), the last claim's `sending` event, the last
    // dispatch's `sent` and a callback's `delivered` live on the message row (`inserts.rs`,
    // `claim_set!`, `sets.rs`).
    let mut stmt = conn.prepare_cached(
        "SELECT kind, at, detail FROM ( \
           SELECT seq, kind, at, detail FROM events WHERE message_id = ?1 \
           UNION ALL \
           SELECT 0, accept_kind, created_at, accept_detail \
           FROM messages WHERE id = ?1 AND accept_kind IS NOT NULL \
           UNION ALL \
           SELECT claim_seq, 'sending', claimed_at, json_object('attempt', claim_attempt) \
           FROM messages WHERE id = ?1 AND claim_seq IS NOT NULL \
           UNION ALL \
           SELECT sent_seq, 'sent', sent_at, sent_detail \
           FROM messages WHERE id = ?1 AND sent_seq IS NOT NULL \
           UNION ALL \
           SELECT delivered_seq, 'delivered', delivered_at, delivered_detail \
           FROM messages WHERE id = ?1 AND delivered_seq IS NOT NULL \
           UNION ALL \
           SELECT seq, 'delivered', at, detail FROM delivered_marks WHERE message_id = ?1) \
         ORDER BY seq",
    )?;
    let rows = stmt.query_map([message_id], |row| {
        let kind: String = row.get(0)?;
        Ok(DeliveryEvent {
            kind: EventKind::parse(&kind).ok_or_else(|| bad(0, "unknown event kind"))?,
            at: from_ms(row.get(1)?),
            detail: parse_json(2, row.get(2)?)?.unwrap_or(serde_json::Value::Null),
        })
    })?;
    rows.collect()
}
