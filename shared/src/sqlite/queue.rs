use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::types::{ToSql, Type};
use rusqlite::{params, Connection};

use super::blocks::BlockSql;
use super::sets::claim_many;
use super::{ms, SqliteBackend};
use crate::domain::{MessageId, Priority, TenantId};
use crate::ports::{ClaimOutcome, Delivery, LaneQueue, LaneStats, Redelivery, StoreError};

/// Hides up to `max` due entries of `lane` until `hidden_until`, oldest first: one statement
/// for the whole batch (RETURNING's buffer is paid once per batch).
fn receive_in(
    conn: &Connection,
    lane: Priority,
    max: usize,
    now: i64,
    hidden_until: i64,
) -> rusqlite::Result<Vec<Delivery>> {
    let mut due: Vec<(i64, String, String, u32)> = conn
        .prepare_cached(
            "UPDATE lane_queue SET visible_at = ?1, receive_count = receive_count + 1, \
             in_flight = 1 WHERE seq IN (SELECT seq FROM lane_queue \
             WHERE lane = ?2 AND visible_at <= ?3 ORDER BY visible_at LIMIT ?4) \
             RETURNING seq, message_id, tenant, receive_count",
        )?
        .query_map(
            params![hidden_until, lane.index() as i64, now, max as i64],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )?
        .collect::<Result<_, _>>()?;
    // RETURNING has no order; seq is the order of arrival.
    due.sort_unstable_by_key(|d| d.0);
    due.into_iter()
        .map(|(seq, id, tenant, count)| {
            let message_id = MessageId::parse(&id).ok_or_else(|| {
                rusqlite::Error::FromSqlConversionFailure(1, Type::Text, "bad id".into())
            })?;
            Ok(Delivery {
                receipt: seq.to_string(),
                message_id,
                tenant,
                lane,
                receive_count: count,
                // A row is received only once due: `visible_at` holds the schedule.
                not_before: None,
                // Embedded pacing is in process, after the batch claim.
                pace: None,
            })
        })
        .collect()
}

#[async_trait]
impl LaneQueue for SqliteBackend {
    async fn receive(
        &self,
        lane: Priority,
        max: usize,
        visibility: Duration,
    ) -> Result<Vec<Delivery>, StoreError> {
        let now = ms(Utc::now());
        let hidden_until = now + visibility.as_millis() as i64;
        self.writer
            .run_rows(lane.rank(), max, move |conn| {
                receive_in(conn, lane, max, now, hidden_until)
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
        let now = ms(Utc::now());
        let (hidden_until, lease_until) = (
            now + visibility.as_millis() as i64,
            now + lease.as_millis() as i64,
        );
        self.writer
            .run_rows(lane.rank(), max, move |conn| {
                let deliveries = receive_in(conn, lane, max, now, hidden_until)?;
                let ids: Vec<MessageId> = deliveries.iter().map(|d| d.message_id).collect();
                let outcomes = claim_many(conn, &ids, now, lease_until)?;
                Ok(Some(deliveries.into_iter().zip(outcomes).collect()))
            })
            .await
    }

    async fn ack(&self, lane: Priority, receipts: Vec<String>) -> Result<(), StoreError> {
        static ACK: BlockSql = BlockSql::new("DELETE FROM lane_queue WHERE seq IN (", 1, ")");
        let seqs: Vec<i64> = receipts.iter().filter_map(|r| r.parse().ok()).collect();
        if seqs.is_empty() {
            return Ok(());
        }
        self.writer
            .run_rows(lane.rank(), seqs.len(), move |conn| {
                let values: Vec<&dyn ToSql> = seqs.iter().map(|s| s as &dyn ToSql).collect();
                ACK.execute(conn, &values)
            })
            .await
    }

    async fn retry_after(
        &self,
        delivery: &Delivery,
        delay: Duration,
    ) -> Result<Redelivery, StoreError> {
        let lane = delivery.lane;
        let Ok(seq) = delivery.receipt.parse::<i64>() else {
            return Ok(Redelivery::SameReceipt);
        };
        let due = ms(Utc::now()) + delay.as_millis() as i64;
        self.writer
            .run(lane.rank(), move |conn| {
                conn.prepare_cached(
                    "UPDATE lane_queue SET visible_at = ?1, in_flight = 0 WHERE seq = ?2",
                )?
                .execute(params![due, seq])?;
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
            .run(move |conn| {
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
                let mut stmt = conn.prepare_cached(
                    "SELECT lane, \
                       SUM(visible_at <= ?1), \
                       SUM(in_flight = 1 AND visible_at > ?1), \
                       SUM(in_flight = 0 AND visible_at > ?1), \
                       MIN(CASE WHEN visible_at <= ?1 THEN enqueued_at END) \
                     FROM lane_queue WHERE ?2 IS NULL OR tenant = ?2 GROUP BY lane",
                )?;
                let rows = stmt.query_map(rusqlite::params![now_ms, tenant], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, Option<i64>>(4)?,
                    ))
                })?;
                for row in rows {
                    let (lane, due, in_flight, delayed, oldest) = row?;
                    if let Some(s) = stats.get_mut(lane as usize) {
                        s.depth = (due + delayed) as u64;
                        s.in_flight = in_flight as u64;
                        s.delayed = delayed as u64;
                        s.oldest_age_seconds = Some(
                            oldest
                                .map(|o| (now_ms - o).max(0) as f64 / 1000.0)
                                .unwrap_or(0.0),
                        );
                    }
                }
                Ok(stats)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::MessageStatus;
    use crate::ports::contract::{accept, message, tenant};
    use crate::ports::{MessageStore, Transition};

    /// Receive and claim are one unit of work: each receipt comes with its claim, a cancelled
    /// message's receipt with the refusal, and what was received is hidden from the next look.
    #[tokio::test]
    async fn receipts_come_with_their_claims() {
        let dir = tempfile::tempdir().unwrap();
        let b = SqliteBackend::open(&dir.path().join("t.db")).unwrap();
        let t = tenant("acme");
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(accept(&b, message(&t, Priority::P3)).await);
        }
        let mut cancel = Transition::new(ids[1], MessageStatus::Cancelled, Utc::now());
        cancel.tenant = Some(t.clone());
        b.transition(vec![cancel]).await.unwrap();

        let lease = Duration::from_secs(30);
        let claims = b
            .receive_claimed(Priority::P3, 10, lease, lease)
            .await
            .unwrap()
            .expect("the embedded queue claims on receive");
        let got: Vec<MessageId> = claims.iter().map(|(d, _)| d.message_id).collect();
        assert_eq!(got, ids, "oldest first, one receipt each");
        for (i, (d, outcome)) in claims.iter().enumerate() {
            assert_eq!(d.receive_count, 1);
            match (i, outcome) {
                (1, ClaimOutcome::NotClaimable { current, .. }) => {
                    assert_eq!(*current, MessageStatus::Cancelled)
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
}
