//! The lane queues, as columns of the message rows (`visible_at`, `receive_count`,
//! `in_flight`) and the partial index `messages_due`: a queued message is due at `visible_at`;
//! a received one is hidden until the visibility timeout and comes back unless acknowledged.
//! A receipt is `rowid:receive_count`, so an old receipt never settles a newer receive (or a
//! redriven message's fresh place on its lane).

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::types::{ToSql, Type};
use rusqlite::{params, Connection, Row};

use super::blocks::BlockSql;
use super::pool::{OUTCOMES_RANK, URGENT_RANKS};
use super::rows::{
    claim_set, claimable, message_columns, message_from_row, parse_status, status_now,
    MESSAGE_COLUMN_COUNT,
};
use super::sets::{apply_transitions, Prepared};
use super::{from_ms, ms, next_event_seq, SqliteBackend};
use crate::domain::{Message, MessageId, Priority, TenantId};
use crate::ports::{
    ClaimOutcome, Delivery, LaneQueue, LaneStats, Redelivery, StoreError, Transition,
    TransitionOutcome,
};

/// The due entries of lane ?2 at time ?3, oldest first, at most ?4; a literal, so the
/// statements that use it are built at compile time.
macro_rules! due {
    () => {
        "SELECT rowid FROM messages WHERE priority = ?2 AND visible_at <= ?3 \
         ORDER BY visible_at LIMIT ?4"
    };
}

fn receipt(rowid: i64, receive_count: u32) -> String {
    format!("{rowid}:{receive_count}")
}

fn parse_receipt(receipt: &str) -> Option<(i64, u32)> {
    let (rowid, count) = receipt.split_once(':')?;
    Some((rowid.parse().ok()?, count.parse().ok()?))
}

/// The receipts Herald issued; anything else settles nothing.
fn parse_receipts(receipts: &[String]) -> Vec<(i64, u32)> {
    receipts.iter().filter_map(|r| parse_receipt(r)).collect()
}

fn delivery(
    lane: Priority,
    rowid: i64,
    message_id: MessageId,
    tenant: String,
    count: u32,
) -> Delivery {
    Delivery {
        receipt: receipt(rowid, count),
        message_id,
        tenant,
        lane,
        receive_count: count,
        // An entry is received only once due: `visible_at` holds the schedule.
        not_before: None,
        // Embedded pacing is in process, after the claim.
        pace: None,
        job_part: None,
    }
}

/// One look at a lane: up to `max` entries due at `now` (ms), hidden until `hidden_until`,
/// and, when claimed, leased until `lease_until`.
#[derive(Clone, Copy)]
struct Look {
    lane: Priority,
    max: usize,
    now: i64,
    hidden_until: i64,
    lease_until: i64,
}

impl Look {
    fn new(lane: Priority, max: usize, visibility: Duration, lease: Duration) -> Look {
        let now = ms(Utc::now());
        Look {
            lane,
            max,
            now,
            hidden_until: now + visibility.as_millis() as i64,
            lease_until: now + lease.as_millis() as i64,
        }
    }
}

/// A received entry, with its message's state (for the claim that may follow).
struct Entry {
    rowid: i64,
    delivery: Delivery,
    status: String,
    lease_until: Option<i64>,
}

/// Hides up to `max` due entries of `lane` until `hidden_until`: one statement for the batch.
fn receive_in(conn: &Connection, look: Look) -> rusqlite::Result<Vec<Entry>> {
    let Look { lane, now, .. } = look;
    let mut stmt = conn.prepare_cached(concat!(
        "UPDATE messages SET visible_at = ?1, receive_count = receive_count + 1, in_flight = 1 \
         WHERE rowid IN (",
        due!(),
        ") RETURNING rowid, id, tenant, receive_count, ",
        status_now!(),
        ", lease_until"
    ))?;
    let params = params![look.hidden_until, lane.index() as i64, now, look.max as i64];
    let mut due: Vec<Entry> = stmt
        .query_map(params, |r| {
            let rowid = r.get(0)?;
            let id: String = r.get(1)?;
            let id = MessageId::parse(&id).ok_or_else(|| {
                rusqlite::Error::FromSqlConversionFailure(1, Type::Text, "bad id".into())
            })?;
            Ok(Entry {
                rowid,
                delivery: delivery(lane, rowid, id, r.get(2)?, r.get(3)?),
                status: r.get(4)?,
                lease_until: r.get(5)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    // RETURNING has no order; rowids follow accept order.
    due.sort_unstable_by_key(|e| e.rowid);
    Ok(due)
}

/// Receives and claims in one statement: each due entry whose message can be claimed is
/// hidden and becomes `sending` with one more attempt in a single row write.
fn claim_due(conn: &Connection, look: Look) -> rusqlite::Result<Vec<(i64, Delivery, Message)>> {
    let lane = look.lane;
    let mut stmt = conn.prepare_cached(concat!(
        "UPDATE messages SET visible_at = ?1, receive_count = receive_count + 1, in_flight = 1, ",
        claim_set!("?5", "?3", "?6"),
        " WHERE rowid IN (",
        due!(),
        ") AND ",
        claimable!("?3"),
        " RETURNING ",
        message_columns!(),
        ", rowid, receive_count"
    ))?;
    let params = params![
        look.hidden_until,
        lane.index() as i64,
        look.now,
        look.max as i64,
        look.lease_until,
        next_event_seq()
    ];
    let rows = stmt.query_map(params, |r: &Row<'_>| {
        let m = message_from_row(r)?;
        let (rowid, count): (i64, u32) = (
            r.get(MESSAGE_COLUMN_COUNT)?,
            r.get(MESSAGE_COLUMN_COUNT + 1)?,
        );
        let d = delivery(lane, rowid, m.id, m.tenant.as_str().to_owned(), count);
        Ok((rowid, d, m))
    })?;
    rows.collect()
}

#[async_trait]
impl LaneQueue for SqliteBackend {
    async fn receive(
        &self,
        lane: Priority,
        max: usize,
        visibility: Duration,
    ) -> Result<Vec<Delivery>, StoreError> {
        let look = Look::new(lane, max, visibility, visibility);
        self.writer
            .run_rows(lane.rank(), max, move |conn| {
                let due = receive_in(conn, look)?;
                Ok(due.into_iter().map(|e| e.delivery).collect())
            })
            .await
    }

    async fn receive_claimed(
        &self,
        lane: Priority,
        max: usize,
        visibility: Duration,
        lease: Duration,
    ) -> Result<Option<Vec<(Delivery, ClaimOutcome)>>, StoreError> {
        let look = Look::new(lane, max, visibility, lease);
        self.writer
            .run_rows(lane.rank(), max, move |conn| {
                receive_and_claim(conn, look).map(Some)
            })
            .await
    }

    async fn receive_claimed_with_next(
        &self,
        lane: Priority,
        max: usize,
        lease: Duration,
        give_up: futures::future::BoxFuture<'_, ()>,
    ) -> Result<Vec<(Delivery, ClaimOutcome)>, StoreError> {
        if lane.rank() >= URGENT_RANKS {
            give_up.await;
            return Ok(Vec::new());
        }
        // The look is taken when the job runs, so it sees the write it runs after.
        let (parked, claims) = self.writer.park_rows(lane.rank(), max, move |conn| {
            receive_and_claim(conn, Look::new(lane, max, lease, lease))
        })?;
        tokio::pin!(claims);
        tokio::select! {
            biased;
            claims = &mut claims => {
                parked.ran();
                claims
            }
            () = give_up => {
                if parked.unpark() {
                    return Ok(Vec::new());
                }
                claims.await
            }
        }
    }

    async fn record_and_ack(
        &self,
        lane: Priority,
        outcomes: &[Transition],
        receipts: &[String],
    ) -> Result<Option<Vec<TransitionOutcome>>, StoreError> {
        let batch: Vec<Prepared> = outcomes.iter().cloned().map(Prepared::from).collect();
        let receipts = parse_receipts(receipts);
        let rows = batch.len() + receipts.len();
        // A priority lane's outcomes go at its rank: its worker records them while it claims
        // its next batch, and the two share a commit only in the same group (`pool.rs`).
        let rank = lane.rank().min(OUTCOMES_RANK);
        self.writer
            .run_rows(rank, rows, move |conn| {
                let results = apply_transitions(conn, &batch)?;
                ack_in(conn, &receipts)?;
                Ok(Some(results))
            })
            .await
    }

    async fn ack(&self, lane: Priority, receipts: Vec<String>) -> Result<(), StoreError> {
        let receipts = parse_receipts(&receipts);
        if receipts.is_empty() {
            return Ok(());
        }
        self.writer
            .run_rows(lane.rank(), receipts.len(), move |conn| {
                ack_in(conn, &receipts)
            })
            .await
    }

    async fn retry_after(
        &self,
        delivery: &Delivery,
        delay: Duration,
    ) -> Result<Redelivery, StoreError> {
        let lane = delivery.lane;
        let Some((rowid, count)) = parse_receipt(&delivery.receipt) else {
            return Ok(Redelivery::SameReceipt);
        };
        let due = ms(Utc::now()) + delay.as_millis() as i64;
        self.writer
            .run(lane.rank(), move |conn| {
                conn.prepare_cached(
                    "UPDATE messages SET visible_at = ?1, in_flight = 0 \
                     WHERE rowid = ?2 AND receive_count = ?3 AND visible_at IS NOT NULL",
                )?
                .execute(params![due, rowid, count])?;
                Ok(Redelivery::SameReceipt)
            })
            .await
    }

    fn stats_per_tenant(&self) -> bool {
        true
    }

    async fn stats(
        &self,
        now: DateTime<Utc>,
        tenant: Option<&TenantId>,
    ) -> Result<Vec<LaneStats>, StoreError> {
        let now_ms = ms(now);
        let tenant = tenant.map(|t| t.as_str().to_owned());
        self.readers
            .run(move |conn| lane_stats(conn, now_ms, tenant.as_deref()))
            .await
    }
}

/// Takes received entries off their lane. A final outcome already took its message off; this
/// settles the rest (receipts whose claim did not take) and writes nothing for the others.
fn ack_in(conn: &Connection, receipts: &[(i64, u32)]) -> rusqlite::Result<()> {
    static ACK: BlockSql = BlockSql::new(
        "UPDATE messages SET visible_at = NULL, in_flight = 0 FROM (VALUES ",
        2,
        ") AS r WHERE messages.rowid = r.column1 AND messages.receive_count = r.column2 \
         AND messages.visible_at IS NOT NULL",
    );
    if receipts.is_empty() {
        return Ok(());
    }
    let values: Vec<&dyn ToSql> = receipts
        .iter()
        .flat_map(|(rowid, count)| -> [&dyn ToSql; 2] { [rowid, count] })
        .collect();
    ACK.execute(conn, &values)
}

/// The claims of one batch: the claimable due entries in one statement, then the rest of the
/// batch hidden with the reason their claim did not take.
fn receive_and_claim(
    conn: &Connection,
    look: Look,
) -> rusqlite::Result<Vec<(Delivery, ClaimOutcome)>> {
    let claimed = claim_due(conn, look)?;
    let mut out: Vec<(i64, Delivery, ClaimOutcome)> = claimed
        .into_iter()
        .map(|(rowid, d, m)| (rowid, d, ClaimOutcome::Claimed(Box::new(m))))
        .collect();
    // The claimed entries are hidden now, so the first due entries left are the batch's others.
    if out.len() < look.max {
        let rest = Look {
            max: look.max - out.len(),
            ..look
        };
        for e in receive_in(conn, rest)? {
            let refused = ClaimOutcome::NotClaimable {
                current: parse_status(0, &e.status)?,
                lease_until: e.lease_until.filter(|l| *l > look.now).map(from_ms),
                parked_under: None,
            };
            out.push((e.rowid, e.delivery, refused));
        }
    }
    out.sort_unstable_by_key(|(rowid, _, _)| *rowid);
    Ok(out.into_iter().map(|(_, d, o)| (d, o)).collect())
}

/// Per lane: due, in flight, scheduled later, and how long the oldest due entry has waited.
/// Read from the partial index alone (it holds the lane, time, flag and tenant).
fn lane_stats(
    conn: &Connection,
    now_ms: i64,
    tenant: Option<&str>,
) -> rusqlite::Result<Vec<LaneStats>> {
    let mut stats: Vec<LaneStats> = Priority::ALL
        .iter()
        .map(|&lane| LaneStats {
            lane,
            depth: 0,
            in_flight: 0,
            oldest_age_seconds: Some(0.0),
            delayed: 0,
        })
        .collect();
    // Per lane, ranges of the index: the due entries are counted by a range scan with no
    // expression per row (a 1M backlog counts in about 70 ms; one aggregate over every entry
    // with a SUM per state took 200-330 ms), and what waits later is a short range.
    let mut due = conn.prepare_cached(
        "SELECT COUNT(*), MIN(visible_at) FROM messages INDEXED BY messages_due \
         WHERE priority = ?1 AND visible_at IS NOT NULL AND visible_at <= ?2 \
         AND (?3 IS NULL OR tenant = ?3)",
    )?;
    let mut later = conn.prepare_cached(
        "SELECT COALESCE(SUM(in_flight = 1), 0), COALESCE(SUM(in_flight = 0), 0) \
         FROM messages INDEXED BY messages_due \
         WHERE priority = ?1 AND visible_at > ?2 AND (?3 IS NULL OR tenant = ?3)",
    )?;
    for s in &mut stats {
        let lane = s.lane as i64;
        let (count, oldest): (i64, Option<i64>) = due
            .query_row(params![lane, now_ms, tenant], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        let (in_flight, delayed): (i64, i64) = later
            .query_row(params![lane, now_ms, tenant], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        s.depth = (count + delayed) as u64;
        s.in_flight = in_flight as u64;
        s.delayed = delayed as u64;
        s.oldest_age_seconds = Some(oldest.map_or(0.0, |o| (now_ms - o).max(0) as f64 / 1000.0));
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::MessageStatus;
    use crate::ports::contract::{accept, claim_now, message, tenant};
    use crate::ports::{MessageStore, Transition};

    /// Receive and claim are one unit of work: each receipt comes with its claim, a message
    /// held by a live claim with the refusal, a cancelled message is off its lane at once, and
    /// what was received is hidden from the next look.
    #[tokio::test]
    async fn receipts_come_with_their_claims() {
        let dir = tempfile::tempdir().unwrap();
        let b = SqliteBackend::open(&dir.path().join("t.db")).unwrap();
        let t = tenant("acme");
        let mut ids = Vec::new();
        for _ in 0..4 {
            ids.push(accept(&b, message(&t, Priority::P3)).await);
        }
        let mut cancel = Transition::new(ids[3], MessageStatus::Cancelled, Utc::now());
        cancel.tenant = Some(t.clone());
        b.transition(vec![cancel]).await.unwrap();
        let held = claim_now(&b, ids[1], Priority::P3).await;

        let lease = Duration::from_secs(30);
        let claims = b
            .receive_claimed(Priority::P3, 10, lease, lease)
            .await
            .unwrap()
            .expect("the embedded queue claims on receive");
        let got: Vec<MessageId> = claims.iter().map(|(d, _)| d.message_id).collect();
        assert_eq!(
            got,
            ids[..3],
            "oldest first, one receipt each, the cancelled one gone"
        );
        for (i, (d, outcome)) in claims.iter().enumerate() {
            assert_eq!(d.receive_count, 1);
            match (i, outcome) {
                (
                    1,
                    ClaimOutcome::NotClaimable {
                        current,
                        lease_until,
                        ..
                    },
                ) => {
                    assert_eq!(*current, MessageStatus::Sending);
                    assert!(
                        lease_until.is_some(),
                        "comes back when {} runs out",
                        held.id
                    );
                }
                (_, ClaimOutcome::Claimed(m)) if i != 1 => {
                    assert_eq!((m.status, m.attempts), (MessageStatus::Sending, 1));
                    let (stored, events) = b.get(&t, m.id).await.unwrap().unwrap();
                    assert_eq!(stored.status, MessageStatus::Sending);
                    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
                    assert_eq!(kinds, ["queued", "sending"]);
                }
                other => panic!("unexpected claim for receipt {i}: {other:?}"),
            }
        }
        let again = b
            .receive_claimed(Priority::P3, 10, lease, lease)
            .await
            .unwrap()
            .unwrap();
        assert!(again.is_empty(), "received receipts are hidden");
    }

    /// A claim lives on its row until the next claim moves it into `events`: every attempt
    /// keeps its `sending` event, in order, with its number.
    #[tokio::test]
    async fn every_attempt_keeps_its_sending_event() {
        let dir = tempfile::tempdir().unwrap();
        let b = SqliteBackend::open(&dir.path().join("t.db")).unwrap();
        let t = tenant("acme");
        let id = accept(&b, message(&t, Priority::P3)).await;
        for attempt in 1..=3 {
            // Each lease has run out by the next claim, as after a crash mid-hand-off.
            let lease = Duration::from_millis(1);
            match b.claim(id, Priority::P3, Utc::now(), lease).await.unwrap() {
                ClaimOutcome::Claimed(m) => assert_eq!(m.attempts, attempt),
                other => panic!("attempt {attempt} not claimed: {other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut sent = Transition::new(id, MessageStatus::Sent, Utc::now());
        sent.tenant = Some(t.clone());
        b.transition(vec![sent]).await.unwrap();
        let (_, events) = b.get(&t, id).await.unwrap().unwrap();
        let timeline: Vec<(&str, Option<i64>)> = events
            .iter()
            .map(|e| (e.kind.as_str(), e.detail["attempt"].as_i64()))
            .collect();
        assert_eq!(
            timeline,
            [
                ("queued", None),
                ("sending", Some(1)),
                ("sending", Some(2)),
                ("sending", Some(3)),
                ("sent", None)
            ]
        );
    }

    /// Outcomes and acks in one unit of work: the batch's receipts leave their lane with its
    /// outcomes (a receipt whose claim did not take included), and when the outcomes cannot be
    /// recorded, no receipt goes either.
    #[tokio::test]
    async fn outcomes_and_receipts_settle_together() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let b = SqliteBackend::open(&path).unwrap();
        let t = tenant("acme");
        let ids = [
            accept(&b, message(&t, Priority::P3)).await,
            accept(&b, message(&t, Priority::P3)).await,
            accept(&b, message(&t, Priority::P3)).await,
        ];
        // Held by a live claim: received, but its claim does not take.
        claim_now(&b, ids[1], Priority::P3).await;
        let lease = Duration::from_secs(30);
        let claims = b
            .receive_claimed(Priority::P3, 10, lease, lease)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(claims.len(), 3);
        let receipt = |i: usize| claims[i].0.receipt.clone();
        let sent = |i: usize| Transition::new(ids[i], MessageStatus::Sent, Utc::now());
        let p3 = |b: &SqliteBackend| {
            let b = b.clone();
            async move { b.stats(Utc::now(), None).await.unwrap()[Priority::P3.index()].clone() }
        };
        let results = b
            .record_and_ack(Priority::P3, &[sent(0)], &[receipt(0), receipt(1)])
            .await
            .unwrap()
            .expect("the embedded queue records and acks together");
        assert_eq!(results, [TransitionOutcome::Applied]);
        let lane = p3(&b).await;
        assert_eq!(
            (lane.depth, lane.in_flight),
            (0, 1),
            "only the third is left: {lane:?}"
        );

        // The outcome cannot be written: the job fails whole, and the receipt stays in flight.
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch(
                "CREATE TRIGGER refuse_sent BEFORE UPDATE OF status ON messages \
                 WHEN NEW.status = 'sent' BEGIN SELECT RAISE(ABORT, 'refused'); END;",
            )
            .unwrap();
        let refused = b
            .record_and_ack(Priority::P3, &[sent(2)], &[receipt(2)])
            .await;
        assert!(refused.is_err(), "{refused:?}");
        assert_eq!(
            p3(&b).await.in_flight,
            1,
            "the receipt went without its outcome"
        );
        let (m, _) = b.get(&t, ids[2]).await.unwrap().unwrap();
        assert_eq!(m.status, MessageStatus::Sending);
    }

    /// An idle priority worker's look runs with its lane's next accept, in the same commit, and
    /// claims what it accepted; a look given up first claims nothing; a bulk lane's only waits.
    #[tokio::test]
    async fn an_idle_look_claims_the_next_accept_in_its_commit() {
        let dir = tempfile::tempdir().unwrap();
        let b = SqliteBackend::open(&dir.path().join("t.db")).unwrap();
        let t = tenant("acme");
        let lease = Duration::from_secs(30);
        let never =
            || -> futures::future::BoxFuture<'static, ()> { Box::pin(futures::future::pending()) };
        let gave_up = b.receive_claimed_with_next(Priority::P0, 4, lease, Box::pin(async {}));
        assert!(gave_up.await.unwrap().is_empty());

        let mut look = b.receive_claimed_with_next(Priority::P0, 4, lease, never());
        assert!(futures::poll!(&mut look).is_pending(), "parked");
        let id = accept(&b, message(&t, Priority::P0)).await;
        let claims = look.await.unwrap();
        assert_eq!(claims.len(), 1);
        assert_eq!(claims[0].0.message_id, id);
        assert!(
            matches!(&claims[0].1, ClaimOutcome::Claimed(m) if m.status == MessageStatus::Sending),
            "claimed in the accept's commit"
        );

        let bulk = accept(&b, message(&t, Priority::P3)).await;
        let waited = b.receive_claimed_with_next(Priority::P3, 4, lease, Box::pin(async {}));
        assert!(waited.await.unwrap().is_empty());
        let due = b.receive(Priority::P3, 4, lease).await.unwrap();
        assert_eq!(due.iter().map(|d| d.message_id).collect::<Vec<_>>(), [bulk]);
    }

    /// A receipt settles only the receive it came from: after the entry came back and was
    /// received again, the first receipt's ack leaves the second in flight.
    #[tokio::test]
    async fn an_old_receipt_never_settles_a_newer_receive() {
        let dir = tempfile::tempdir().unwrap();
        let b = SqliteBackend::open(&dir.path().join("t.db")).unwrap();
        let t = tenant("acme");
        accept(&b, message(&t, Priority::P3)).await;
        let first = b
            .receive(Priority::P3, 1, Duration::from_millis(1))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let second = b
            .receive(Priority::P3, 1, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(second[0].receive_count, 2);
        let in_flight = |stats: Vec<LaneStats>| stats[Priority::P3.index()].in_flight;
        b.ack(Priority::P3, vec![first[0].receipt.clone()])
            .await
            .unwrap();
        assert_eq!(in_flight(b.stats(Utc::now(), None).await.unwrap()), 1);
        b.ack(Priority::P3, vec![second[0].receipt.clone()])
            .await
            .unwrap();
        assert_eq!(in_flight(b.stats(Utc::now(), None).await.unwrap()), 0);
    }
}
