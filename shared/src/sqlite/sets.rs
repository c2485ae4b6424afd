//! Set-based statements for the hot path: a batch of claims, outcomes or events costs one
//! statement per kind and block of rows, not one per message. Rows are bound as plain values
//! (`blocks.rs`), so the statement cache holds a few plans whatever the batch size.

use rustc_hash::{FxHashMap, FxHashSet};

use rusqlite::types::ToSql;
use rusqlite::{Connection, OptionalExtension};

use super::blocks::BlockSql;
use super::next_event_seq;
use super::rows::{
    claim_set, claimable, lane_after, message_columns, message_from_row, parse_status, status_now,
};
use super::throughput::SentTally;
use crate::domain::{EventKind, Message, MessageId, MessageStatus};
use crate::ports::{AttemptChange, ClaimOutcome, Transition, TransitionOutcome};

/// One event row to append: message id, kind, time (ms), detail text.
pub(crate) struct NewEvent<'a> {
    pub id: &'a str,
    pub kind: EventKind,
    pub at_ms: i64,
    pub detail: Option<&'a str>,
}

static INSERT_EVENTS: BlockSql = BlockSql::new(
    "INSERT INTO events (message_id, seq, kind, at, detail) \
     SELECT column1, column2, column3, column4, column5 FROM (VALUES ",
    5,
    ") WHERE column1 IS NOT NULL",
);

/// Appends a batch of events with one multi-row insert per block.
pub(crate) fn insert_events(conn: &Connection, events: &[NewEvent<'_>]) -> rusqlite::Result<()> {
    if let [e] = events {
        return super::rows::insert_event(conn, e.id, e.kind, e.at_ms, e.detail);
    }
    // Numbered here, on the writer, so events keep the order in which they are written.
    let rows: Vec<(i64, &str)> = events
        .iter()
        .map(|e| (next_event_seq(), e.kind.as_str()))
        .collect();
    let values: Vec<&dyn ToSql> = events
        .iter()
        .zip(&rows)
        .flat_map(|(e, (seq, kind))| -> [&dyn ToSql; 5] { [&e.id, seq, kind, &e.at_ms, &e.detail] })
        .collect();
    INSERT_EVENTS.execute(conn, &values)
}

/// `queued`/`deferred`, or `sending` whose lease ran out, becomes `sending` with one more
/// attempt, for every id at once: one compare-and-set UPDATE (a cancel that committed first
/// wins, row by row), which records the claim on the row (its `sending` event). One outcome
/// per id, in order.
pub(crate) fn claim_many(
    conn: &Connection,
    ids: &[MessageId],
    now_ms: i64,
    lease_until: i64,
) -> rusqlite::Result<Vec<ClaimOutcome>> {
    static CLAIM: BlockSql = BlockSql::new(
        concat!(
            "UPDATE messages SET ",
            claim_set!("?", "?", "?"),
            " WHERE ",
            claimable!("?"),
            " AND id IN ("
        ),
        1,
        concat!(") RETURNING ", message_columns!()),
    );
    let texts: Vec<String> = ids.iter().map(MessageId::to_string).collect();
    let mut claimed: FxHashMap<MessageId, Message> =
        FxHashMap::with_capacity_and_hasher(ids.len(), Default::default());
    let values: Vec<&dyn ToSql> = texts.iter().map(|t| t as &dyn ToSql).collect();
    let seq = next_event_seq();
    CLAIM.run_with(
        conn,
        &[&lease_until, &now_ms, &seq, &now_ms, &now_ms],
        &values,
        |stmt, params| {
            for m in stmt.query_map(params, message_from_row)? {
                let m = m?;
                claimed.insert(m.id, m);
            }
            Ok(())
        },
    )?;
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
        .prepare_cached(concat!(
            "SELECT ",
            status_now!(),
            ", lease_until FROM messages WHERE id = ?1"
        ))?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(match current {
        Some((status, lease)) => ClaimOutcome::NotClaimable {
            current: parse_status(0, &status)?,
            lease_until: lease.filter(|l| *l > now_ms).map(super::from_ms),
            parked_under: None,
        },
        None => ClaimOutcome::NotFound,
    })
}

/// The batch form of `messages::TRANSITION_SQL`, over rows `(id, status, at, gateway,
/// provider id, last error, tenant, attempt, attempt change, sources, row event seq, detail)`.
/// Two forms, as for one transition: SQLite rewrites an index entry whenever an UPDATE names
/// one of its columns, so outcomes without a provider id leave the route columns out. A row
/// with a row event seq records its event on the row: a dispatch's `sent` (with a route) in
/// the `sent_*` columns, a callback's `delivered` (without) in the `delivered_*` columns.
macro_rules! transitions_sql {
    ($route:literal) => {
        BlockSql::new(
            concat!(
                "UPDATE messages SET status = j.column2, updated_at = j.column3, \
                 lease_until = NULL, ",
                lane_after!("j.column2"),
                "attempts = CASE j.column9 WHEN 1 THEN MAX(attempts - 1, 0) \
                 WHEN 2 THEN 0 ELSE attempts END, ",
                $route,
                "last_error = COALESCE(j.column6, last_error) FROM (VALUES "
            ),
            12,
            concat!(
                ") AS j WHERE messages.id = j.column1 AND instr(j.column10, ',' || ",
                status_now!(),
                " || ',') > 0 \
                 AND (j.column7 IS NULL OR tenant = j.column7) \
                 AND (j.column8 IS NULL OR attempts = j.column8) \
                 RETURNING messages.id, messages.status = 'sent', messages.tenant, \
                 messages.priority, messages.updated_at"
            ),
        )
    };
}
static TRANSITIONS: BlockSql = transitions_sql!(
    "gateway = COALESCE(j.column4, gateway), \
     provider_message_id = COALESCE(j.column5, provider_message_id), \
     sent_seq = COALESCE(j.column11, sent_seq), \
     sent_at = CASE WHEN j.column11 IS NULL THEN sent_at ELSE j.column3 END, \
     sent_detail = CASE WHEN j.column11 IS NULL THEN sent_detail ELSE j.column12 END, "
);
static TRANSITIONS_KEEP_ROUTE: BlockSql = transitions_sql!(
    "delivered_seq = COALESCE(j.column11, delivered_seq), \
     delivered_at = CASE WHEN j.column11 IS NULL THEN delivered_at ELSE j.column3 END, \
     delivered_detail = CASE WHEN j.column11 IS NULL THEN delivered_detail ELSE j.column12 END, "
);

/// A transition with its values ready to bind, rendered off the writer thread.
pub(crate) struct Prepared {
    pub t: Transition,
    pub id: String,
    pub detail: Option<String>,
    to: &'static str,
    kind: EventKind,
    at_ms: i64,
    tenant: Option<String>,
    attempt_change: i64,
    sources: &'static str,
}

impl From<Transition> for Prepared {
    fn from(t: Transition) -> Prepared {
        Prepared {
            id: t.id.to_string(),
            detail: super::rows::detail_text(&t.detail),
            to: t.to.as_str(),
            kind: t.to.into(),
            at_ms: super::ms(t.at),
            tenant: t.tenant.as_ref().map(|x| x.as_str().to_owned()),
            attempt_change: match t.attempts {
                AttemptChange::Keep => 0,
                AttemptChange::GiveBack => 1,
                AttemptChange::Reset => 2,
            },
            sources: super::messages::sources(t.to),
            t,
        }
    }
}

impl Prepared {
    fn keeps_route(&self) -> bool {
        self.t.gateway.is_none() && self.t.provider_message_id.is_none()
    }

    /// A callback's `delivered` that changes nothing on the row but its status: appended to
    /// `delivered_marks` rather than rewriting the wide row (`mark_delivered`).
    fn marks_delivered(&self) -> bool {
        self.t.to == MessageStatus::Delivered
            && self.keeps_route()
            && self.t.last_error.is_none()
            && self.attempt_change == 0
            && !self.t.hold
    }

    /// Whether its event goes on the row (`sent_*`, `delivered_*`) or in `delivered_marks`
    /// rather than into `events`.
    fn event_on_row(&self) -> bool {
        match self.t.to {
            MessageStatus::Sent => !self.t.hold && !self.keeps_route(),
            MessageStatus::Delivered => self.keeps_route(),
            _ => false,
        }
    }

    /// The statement row, in `transitions_sql!`'s column order.
    fn values<'a>(&'a self, row_seq: &'a Option<i64>) -> [&'a dyn ToSql; 12] {
        [
            &self.id,
            &self.to,
            &self.at_ms,
            &self.t.gateway,
            &self.t.provider_message_id,
            &self.t.last_error,
            &self.tenant,
            &self.t.attempt,
            &self.attempt_change,
            &self.sources,
            row_seq,
            &self.detail,
        ]
    }
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
        // Ids are Herald's own, so a fast hash without flood resistance is safe here.
        let mut seen = FxHashSet::default();
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
    // One row: the plain statement needs no RETURNING, unless the send is to be counted.
    if let [one] = run {
        if one.t.to != MessageStatus::Sent && !one.event_on_row() {
            return super::messages::apply_transition(conn, one).map(|o| vec![o]);
        }
    }
    let mut applied: FxHashSet<String> =
        FxHashSet::with_capacity_and_hasher(run.len(), Default::default());
    let mut sent = SentTally::default();
    // Numbered here, on the writer, so an event on the row orders with the events around it.
    let row_seqs: Vec<Option<i64>> = run
        .iter()
        .map(|p| p.event_on_row().then(next_event_seq))
        .collect();
    mark_delivered(conn, run, &row_seqs, &mut applied)?;
    for (sql, keeps_route) in [(&TRANSITIONS_KEEP_ROUTE, true), (&TRANSITIONS, false)] {
        let values: Vec<&dyn ToSql> = run
            .iter()
            .zip(&row_seqs)
            .filter(|(p, _)| !p.marks_delivered() && p.keeps_route() == keeps_route)
            .flat_map(|(p, seq)| p.values(seq))
            .collect();
        sql.run(conn, &values, |stmt, params| {
            let mut rows = stmt.query(params)?;
            while let Some(row) = rows.next()? {
                applied.insert(row.get(0)?);
                if row.get::<_, bool>(1)? {
                    sent.add(row.get(2)?, row.get(3)?, row.get(4)?);
                }
            }
            Ok(())
        })?;
    }
    sent.write(conn)?;
    let held: Vec<&str> = run
        .iter()
        .filter(|p| p.t.hold && applied.contains(&p.id))
        .map(|p| p.id.as_str())
        .collect();
    take_back_claims(conn, &held)?;
    let events: Vec<NewEvent<'_>> = run
        .iter()
        .filter(|p| !p.t.hold && !p.event_on_row() && applied.contains(&p.id))
        .map(|p| NewEvent {
            id: &p.id,
            kind: p.kind,
            at_ms: p.at_ms,
            detail: p.detail.as_deref(),
        })
        .collect();
    insert_events(conn, &events)?;
    run.iter()
        .map(|p| match applied.contains(&p.id) {
            true => Ok(TransitionOutcome::Applied),
            false => refused(conn, p),
        })
        .collect()
}

/// `delivered` for rows left `sent`, one multi-row insert per block. The insert is the
/// compare-and-set: the row says `sent`, it has no mark yet (the key), and the caller's tenant
/// and attempt match where given. Those inserted join `applied`.
static MARK_DELIVERED: BlockSql = BlockSql::new(
    "INSERT INTO delivered_marks (message_id, seq, at, detail) \
     SELECT messages.id, j.column2, j.column3, j.column4 FROM (VALUES ",
    6,
    ") AS j JOIN messages ON messages.id = j.column1 WHERE messages.status = 'sent' \
     AND (j.column5 IS NULL OR messages.tenant = j.column5) \
     AND (j.column6 IS NULL OR messages.attempts = j.column6) \
     ON CONFLICT DO NOTHING RETURNING message_id",
);

fn mark_delivered(
    conn: &Connection,
    run: &[Prepared],
    row_seqs: &[Option<i64>],
    applied: &mut FxHashSet<String>,
) -> rusqlite::Result<()> {
    let values: Vec<&dyn ToSql> = run
        .iter()
        .zip(row_seqs)
        .filter(|(p, _)| p.marks_delivered())
        .flat_map(|(p, seq)| -> [&dyn ToSql; 6] {
            [&p.id, seq, &p.at_ms, &p.detail, &p.tenant, &p.t.attempt]
        })
        .collect();
    MARK_DELIVERED.run(conn, &values, |stmt, params| {
        let mut rows = stmt.query(params)?;
        while let Some(row) = rows.next()? {
            applied.insert(row.get(0)?);
        }
        Ok(())
    })
}

/// How many marks one idle transaction folds: a job that comes meanwhile waits for it.
const FOLD_CHUNK: i64 = 128;

/// The writer's idle work (`pool.rs`): folds the first `FOLD_CHUNK` delivered marks into their
/// rows, as a `delivered` written on the row would be (a row still `sent` becomes `delivered`;
/// the event goes in the row's `delivered_*` columns either way), so that a quiet server's
/// reads find no mark to merge. Whether marks are left.
pub(crate) fn fold_delivered_marks(conn: &Connection) -> rusqlite::Result<bool> {
    conn.prepare_cached(
        "UPDATE messages SET \
         status = CASE WHEN messages.status = 'sent' THEN 'delivered' ELSE messages.status END, \
         updated_at = CASE WHEN messages.status = 'sent' THEN m.at ELSE messages.updated_at END, \
         delivered_seq = m.seq, delivered_at = m.at, delivered_detail = m.detail \
         FROM (SELECT message_id, seq, at, detail FROM delivered_marks \
               ORDER BY message_id LIMIT ?1) AS m \
         WHERE messages.id = m.message_id",
    )?
    .execute([FOLD_CHUNK])?;
    let folded = conn
        .prepare_cached(
            "DELETE FROM delivered_marks WHERE message_id IN \
             (SELECT message_id FROM delivered_marks ORDER BY message_id LIMIT ?1)",
        )?
        .execute([FOLD_CHUNK])?;
    Ok(folded as i64 == FOLD_CHUNK)
}

/// Held messages go back without a trace: the claim on each row, which is its `sending` event,
/// is forgotten (one statement per block).
pub(crate) fn take_back_claims(conn: &Connection, ids: &[&str]) -> rusqlite::Result<()> {
    static TAKE_BACK: BlockSql = BlockSql::new(
        "UPDATE messages SET claim_seq = NULL, claimed_at = NULL, claim_attempt = NULL \
         WHERE id IN (",
        1,
        ")",
    );
    let values: Vec<&dyn ToSql> = ids.iter().map(|id| id as &dyn ToSql).collect();
    TAKE_BACK.execute(conn, &values)
}

/// Why a transition did not apply: the message moved on, or it is not the caller's.
pub(crate) fn refused(conn: &Connection, p: &Prepared) -> rusqlite::Result<TransitionOutcome> {
    let current: Option<(String, String)> = conn
        .prepare_cached(concat!(
            "SELECT ",
            status_now!(),
            ", tenant FROM messages WHERE id = ?1"
        ))?
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
