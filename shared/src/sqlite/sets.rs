//! Set-based statements for the hot path: a batch of claims, outcomes or events costs one
//! statement per kind, not one per message. The rows travel as one JSON array bound to a
//! fixed statement (`json_each`), so the statement cache holds one plan whatever the batch size.

use std::collections::{HashMap, HashSet};

use rusqlite::{Connection, OptionalExtension};
use serde_json::{json, Value};

use super::next_event_seq;
use super::rows::{message_columns, message_from_row, parse_status};
use crate::domain::{EventKind, MessageId, MessageStatus};
use crate::ports::{AttemptChange, ClaimOutcome, Transition, TransitionOutcome};

/// One event row to append: message id, kind, time (ms), detail text.
pub(crate) struct NewEvent<'a> {
    pub id: &'a str,
    pub kind: EventKind,
    pub at_ms: i64,
    pub detail: Option<&'a str>,
}

/// Event rows as JSON arrays `[message id, seq, kind, at, detail]`.
const INSERT_EVENT_ROWS_SQL: &str = "INSERT INTO events (message_id, seq, kind, at, detail) \
     SELECT value->>0, value->>1, value->>2, value->>3, value->>4 FROM json_each(?1)";

/// Appends a batch of events with one multi-row insert.
pub(crate) fn insert_events(conn: &Connection, events: &[NewEvent<'_>]) -> rusqlite::Result<()> {
    match events {
        [] => Ok(()),
        [e] => super::rows::insert_event(conn, e.id, e.kind, e.at_ms, e.detail),
        _ => {
            let rows: Vec<Value> = events
                .iter()
                .map(|e| json!([e.id, next_event_seq(), e.kind.as_str(), e.at_ms, e.detail]))
                .collect();
            conn.prepare_cached(INSERT_EVENT_ROWS_SQL)?
                .execute([Value::Array(rows).to_string()])?;
            Ok(())
        }
    }
}

/// `queued`/`deferred`, or `sending` whose lease ran out, becomes `sending` with one more
/// attempt, for every id at once: one compare-and-set UPDATE (a cancel that committed first
/// wins, row by row), one insert for the `sending` events. One outcome per id, in order.
pub(crate) fn claim_many(
    conn: &Connection,
    ids: &[MessageId],
    now_ms: i64,
    lease_until: i64,
) -> rusqlite::Result<Vec<ClaimOutcome>> {
    let texts: Vec<String> = ids.iter().map(MessageId::to_string).collect();
    let mut claimed: HashMap<MessageId, crate::domain::Message> = conn
        .prepare_cached(concat!(
            "UPDATE messages SET status = 'sending', attempts = attempts + 1, lease_until = ?1, \
             updated_at = ?2 WHERE id IN (SELECT value FROM json_each(?3)) \
             AND (status = 'queued' OR status = 'deferred' \
               OR (status = 'sending' AND COALESCE(lease_until, 0) <= ?2)) RETURNING ",
            message_columns!()
        ))?
        .query_map(
            rusqlite::params![lease_until, now_ms, json!(texts).to_string()],
            message_from_row,
        )?
        .map(|m| m.map(|m| (m.id, m)))
        .collect::<rusqlite::Result<_>>()?;
    let details: Vec<(String, &str)> = texts
        .iter()
        .zip(ids)
        .filter_map(|(text, id)| {
            claimed
                .get(id)
                .map(|m| (format!(r#"{{"attempt":{}}}"#, m.attempts), text.as_str()))
        })
        .collect();
    let events: Vec<NewEvent<'_>> = details
        .iter()
        .map(|(detail, id)| NewEvent {
            id,
            kind: MessageStatus::Sending.into(),
            at_ms: now_ms,
            detail: Some(detail),
        })
        .collect();
    insert_events(conn, &events)?;
    ids.iter()
        .zip(&texts)
        .map(|(id, text)| match claimed.remove(id) {
            Some(m) => Ok(ClaimOutcome::Claimed(Box::new(m))),
            None => not_claimable(conn, text, now_ms),
        })
        .collect()
}

/// Why a claim did not take: the message's state now, or that it is gone.
pub(crate) fn not_claimable(
    conn: &Connection,
    id: &str,
    now_ms: i64,
) -> rusqlite::Result<ClaimOutcome> {
    let current: Option<(String, Option<i64>)> = conn
        .prepare_cached("SELECT status, lease_until FROM messages WHERE id = ?1")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(match current {
        Some((status, lease)) => ClaimOutcome::NotClaimable {
            current: parse_status(0, &status)?,
            lease_until: lease.filter(|l| *l > now_ms).map(super::from_ms),
        },
        None => ClaimOutcome::NotFound,
    })
}

/// Two forms, as for one transition: SQLite rewrites an index entry whenever an UPDATE names
/// one of its columns, so outcomes without a provider id leave the route columns out.
const TRANSITIONS_SQL: &str =
    "UPDATE messages SET status = j.value->>1, updated_at = j.value->>2, \
     lease_until = NULL, \
     attempts = CASE j.value->>8 WHEN 1 THEN MAX(attempts - 1, 0) WHEN 2 THEN 0 ELSE attempts END, \
     gateway = COALESCE(j.value->>3, gateway), \
     provider_message_id = COALESCE(j.value->>4, provider_message_id), \
     last_error = COALESCE(j.value->>5, last_error) \
     FROM json_each(?1) AS j \
     WHERE messages.id = j.value->>0 AND instr(j.value->>9, ',' || status || ',') > 0 \
     AND (j.value->>6 IS NULL OR tenant = j.value->>6) \
     AND (j.value->>7 IS NULL OR attempts = j.value->>7) RETURNING messages.id";
const TRANSITIONS_KEEP_ROUTE_SQL: &str = "UPDATE messages SET status = j.value->>1, \
     updated_at = j.value->>2, lease_until = NULL, \
     attempts = CASE j.value->>8 WHEN 1 THEN MAX(attempts - 1, 0) WHEN 2 THEN 0 ELSE attempts END, \
     last_error = COALESCE(j.value->>5, last_error) \
     FROM json_each(?1) AS j \
     WHERE messages.id = j.value->>0 AND instr(j.value->>9, ',' || status || ',') > 0 \
     AND (j.value->>6 IS NULL OR tenant = j.value->>6) \
     AND (j.value->>7 IS NULL OR attempts = j.value->>7) RETURNING messages.id";

/// A transition with its statement row and most of its event row rendered off the writer
/// thread: the writer only joins texts (and numbers the event, so events keep the order in
/// which they are written).
pub(crate) struct Prepared {
    pub t: Transition,
    pub id: String,
    pub detail: Option<String>,
    row: String,
    /// The event row after its id and seq: `,"kind",at,detail]`.
    event_tail: String,
}

impl From<Transition> for Prepared {
    fn from(t: Transition) -> Prepared {
        let id = t.id.to_string();
        let detail = super::rows::detail_text(&t.detail);
        let attempts = match t.attempts {
            AttemptChange::Keep => 0,
            AttemptChange::GiveBack => 1,
            AttemptChange::Reset => 2,
        };
        let at_ms = super::ms(t.at);
        let row = json!([
            id,
            t.to.as_str(),
            at_ms,
            t.gateway,
            t.provider_message_id,
            t.last_error,
            t.tenant.as_ref().map(|x| x.as_str()),
            t.attempt,
            attempts,
            super::messages::sources(t.to),
        ])
        .to_string();
        let kind: EventKind = t.to.into();
        let event_tail = json!([kind.as_str(), at_ms, detail.as_deref()]).to_string();
        let event_tail = format!(",{}", &event_tail[1..]);
        Prepared {
            id,
            detail,
            row,
            event_tail,
            t,
        }
    }
}

impl Prepared {
    fn keeps_route(&self) -> bool {
        self.t.gateway.is_none() && self.t.provider_message_id.is_none()
    }
}

/// `[a,b,...]` from rows that are JSON texts already.
fn json_array<'a>(rows: impl Iterator<Item = &'a str>) -> String {
    let mut out = String::from("[");
    for (i, row) in rows.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(row);
    }
    out.push(']');
    out
}

/// Applies transitions in order: each run of distinct ids is one UPDATE per form and one event
/// insert (an id that comes again starts the next run, so its outcomes apply in order).
pub(crate) fn apply_transitions(
    conn: &Connection,
    batch: &[Prepared],
) -> rusqlite::Result<Vec<TransitionOutcome>> {
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut start = 0;
    while start < batch.len() {
        let mut seen = HashSet::new();
        let end = batch[start..]
            .iter()
            .position(|p| !seen.insert(p.id.as_str()))
            .map_or(batch.len(), |n| start + n);
        outcomes.extend(apply_distinct(conn, &batch[start..end])?);
        start = end;
    }
    Ok(outcomes)
}

fn apply_distinct(conn: &Connection, run: &[Prepared]) -> rusqlite::Result<Vec<TransitionOutcome>> {
    if let [one] = run {
        // One row: the plain statement costs less than unpacking JSON.
        return super::messages::apply_transition(conn, one).map(|o| vec![o]);
    }
    let mut applied: HashSet<String> = HashSet::with_capacity(run.len());
    for (sql, keeps_route) in [(TRANSITIONS_KEEP_ROUTE_SQL, true), (TRANSITIONS_SQL, false)] {
        let mut rows = run
            .iter()
            .filter(|p| p.keeps_route() == keeps_route)
            .peekable();
        if rows.peek().is_none() {
            continue;
        }
        let rows = json_array(rows.map(|p| p.row.as_str()));
        let mut stmt = conn.prepare_cached(sql)?;
        for id in stmt.query_map([rows], |r| r.get::<_, String>(0))? {
            applied.insert(id?);
        }
    }
    let held: Vec<&str> = run
        .iter()
        .filter(|p| p.t.hold && applied.contains(&p.id))
        .map(|p| p.id.as_str())
        .collect();
    take_back_claims(conn, &held)?;
    let mut events = run
        .iter()
        .filter(|p| !p.t.hold && applied.contains(&p.id))
        .peekable();
    if events.peek().is_some() {
        let rows: Vec<String> = events
            .map(|p| format!("[\"{}\",{}{}", p.id, next_event_seq(), p.event_tail))
            .collect();
        conn.prepare_cached(INSERT_EVENT_ROWS_SQL)?
            .execute([json_array(rows.iter().map(String::as_str))])?;
    }
    run.iter()
        .map(|p| match applied.contains(&p.id) {
            true => Ok(TransitionOutcome::Applied),
            false => refused(conn, p),
        })
        .collect()
}

/// Held messages go back without a trace: each one's last event, its claim's `sending`, is
/// deleted (one statement for the batch).
pub(crate) fn take_back_claims(conn: &Connection, ids: &[&str]) -> rusqlite::Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    conn.prepare_cached(
        "DELETE FROM events WHERE kind = 'sending' AND (message_id, seq) IN \
         (SELECT message_id, MAX(seq) FROM events \
          WHERE message_id IN (SELECT value FROM json_each(?1)) GROUP BY message_id)",
    )?
    .execute([json!(ids).to_string()])?;
    Ok(())
}

/// Why a transition did not apply: the message moved on, or it is not the caller's.
fn refused(conn: &Connection, p: &Prepared) -> rusqlite::Result<TransitionOutcome> {
    let current: Option<(String, String)> = conn
        .prepare_cached("SELECT status, tenant FROM messages WHERE id = ?1")?
        .query_row([&p.id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(match current {
        Some((status, tenant)) if p.t.tenant.as_ref().is_none_or(|x| x.as_str() == tenant) => {
            TransitionOutcome::Conflict {
                current: parse_status(0, &status)?,
            }
        }
        _ => TransitionOutcome::NotFound,
    })
}
