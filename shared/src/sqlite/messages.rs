use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};

use super::inserts::insert_message;
use super::pool::OUTCOMES_RANK;
use super::rows::{
    claim_set, claimable, detail_text, events_of, insert_event, lane_after, message_columns,
    message_from_row, parse_status, status_now, MESSAGE_COLUMNS,
};
use super::search;
use super::sets::{apply_transitions, claim_many, not_claimable, Prepared};
use super::{ms, next_event_seq, SqliteBackend};
use crate::domain::{
    Channel, DeliveryEvent, EventKind, Message, MessageId, MessageStatus, Priority, TenantId,
};
use crate::ports::{
    first_id_at, AcceptBatch, AcceptOutcome, AttemptChange, BulkProgress, BulkSummary,
    ChannelCount, ClaimOutcome, IdempotencyRecord, MessageFilter, MessageRef, MessageStore,
    SearchPage, SentMinute, StoreError, Transition, TransitionOutcome,
};

/// Rows deleted per retention job, so the writer is never held long.
const PURGE_CHUNK: i64 = 2_000;

pub(super) fn find_key(
    conn: &Connection,
    tenant: &TenantId,
    key: &str,
) -> rusqlite::Result<Option<IdempotencyRecord>> {
    conn.prepare_cached(
        "SELECT request_hash, response_status, response_body FROM idempotency_keys WHERE tenant = ?1 AND key = ?2",
    )?
    .query_row(params![tenant.as_str(), key], |row| {
        Ok(IdempotencyRecord {
            tenant: tenant.clone(),
            key: key.to_owned(),
            request_hash: row.get(0)?,
            response_status: row.get(1)?,
            response_body: row.get(2)?,
        })
    })
    .optional()
}

pub(super) fn insert_key(conn: &Connection, k: &IdempotencyRecord) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO idempotency_keys (tenant, key, request_hash, response_status, response_body, \
         created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        k.tenant.as_str(),
        k.key,
        k.request_hash,
        k.response_status,
        k.response_body,
        Utc::now().timestamp_millis()
    ])?;
    Ok(())
}

/// Two forms: SQLite rewrites an index entry whenever an UPDATE names one of its columns, so
/// transitions that carry no provider id (callbacks, cancels) leave `gateway` and
/// `provider_message_id` out (it still names ?3 and ?4, which are NULL there, so both forms bind
/// the same parameters).
const TRANSITION_SQL: &str = concat!(
    "UPDATE messages SET status = ?1, updated_at = ?2, lease_until = NULL, ",
    lane_after!("?1"),
    "attempts = CASE ?9 WHEN 1 THEN MAX(attempts - 1, 0) WHEN 2 THEN 0 ELSE attempts END, \
     gateway = COALESCE(?3, gateway), provider_message_id = COALESCE(?4, provider_message_id), \
     last_error = COALESCE(?5, last_error) \
     WHERE id = ?6 AND instr(?10, ',' || ",
    status_now!(),
    " || ',') > 0 AND (?7 IS NULL OR tenant = ?7) \
     AND (?8 IS NULL OR attempts = ?8)"
);
const TRANSITION_KEEP_ROUTE_SQL: &str = concat!(
    "UPDATE messages SET status = ?1, updated_at = ?2, lease_until = NULL, ",
    lane_after!("?1"),
    "attempts = CASE ?9 WHEN 1 THEN MAX(attempts - 1, 0) WHEN 2 THEN 0 ELSE attempts END, \
     last_error = COALESCE(?5, last_error) \
     WHERE id = ?6 AND instr(?10, ',' || ",
    status_now!(),
    " || ',') > 0 AND (?7 IS NULL OR tenant = ?7) \
     AND (?8 IS NULL OR attempts = ?8) AND ?3 IS NULL AND ?4 IS NULL"
);

/// The states a transition may leave, from the domain's state machine (never from input), as
/// ",a,b," for one `instr` test: an `IN (...)` list would cost an ephemeral table per statement.
pub(super) fn sources(to: MessageStatus) -> &'static str {
    static LISTS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let lists = LISTS.get_or_init(|| {
        MessageStatus::ALL
            .iter()
            .map(|to| {
                let names: Vec<&str> = MessageStatus::sources_of(*to)
                    .iter()
                    .map(|s| s.as_str())
                    .collect();
                format!(",{},", names.join(","))
            })
            .collect()
    });
    MessageStatus::ALL
        .iter()
        .position(|s| *s == to)
        .map(|i| lists[i].as_str())
        .unwrap_or(",")
}

pub(super) fn apply_transition(
    conn: &Connection,
    p: &Prepared,
) -> rusqlite::Result<TransitionOutcome> {
    let (t, id) = (&p.t, &p.id);
    let attempts = match t.attempts {
        AttemptChange::Keep => 0,
        AttemptChange::GiveBack => 1,
        AttemptChange::Reset => 2,
    };
    let at = ms(t.at);
    let sql = if t.gateway.is_none() && t.provider_message_id.is_none() {
        TRANSITION_KEEP_ROUTE_SQL
    } else {
        TRANSITION_SQL
    };
    let changed = conn.prepare_cached(sql)?.execute(params![
        t.to.as_str(),
        at,
        t.gateway,
        t.provider_message_id,
        t.last_error,
        id,
        t.tenant.as_ref().map(|x| x.as_str()),
        t.attempt,
        attempts,
        sources(t.to),
    ])?;
    if changed == 1 {
        match t.hold {
            true => super::sets::take_back_claims(conn, &[id.as_str()])?,
            false => insert_event(conn, id, t.to.into(), at, p.detail.as_deref())?,
        }
        return Ok(TransitionOutcome::Applied);
    }
    super::sets::refused(conn, p)
}

/// `queued`/`deferred`, or `sending` whose lease ran out, becomes `sending` with one more attempt.
fn claim_in(
    conn: &Connection,
    id: MessageId,
    now_ms: i64,
    lease_until: i64,
) -> rusqlite::Result<ClaimOutcome> {
    let id_s = id.to_string();
    // UPDATE then SELECT: `RETURNING` would cost an ephemeral table on every claim.
    let changed = conn
        .prepare_cached(concat!(
            "UPDATE messages SET ",
            claim_set!("?1", "?2", "?4"),
            " WHERE id = ?3 AND ",
            claimable!("?2")
        ))?
        .execute(params![lease_until, now_ms, id_s, next_event_seq()])?;
    if changed == 1 {
        let m = conn
            .prepare_cached(concat!(
                "SELECT ",
                message_columns!(),
                " FROM messages WHERE id = ?1"
            ))?
            .query_row([&id_s], message_from_row)?;
        return Ok(ClaimOutcome::Claimed(Box::new(m)));
    }
    not_claimable(conn, &id_s, now_ms)
}

#[async_trait]
impl MessageStore for SqliteBackend {
    async fn accept(&self, batch: AcceptBatch) -> Result<AcceptOutcome, StoreError> {
        let rank = batch
            .messages
            .first()
            .map(|m| m.priority.rank())
            .unwrap_or(Priority::P4.rank());
        // An idle worker's parked claim rides with it (`pool.rs`).
        self.writer
            .submit_rows_waking(rank, 1, move |conn| {
                if let Some(key) = &batch.idempotency {
                    if let Some(existing) = find_key(conn, &key.tenant, &key.key)? {
                        return Ok(AcceptOutcome::KeyExists(existing));
                    }
                }
                for m in &batch.messages {
                    insert_message(conn, m)?;
                }
                if let Some(k) = &batch.idempotency {
                    insert_key(conn, k)?;
                }
                Ok(AcceptOutcome::Accepted)
            })?
            .await
    }

    async fn accept_bulk(
        &self,
        job: crate::domain::BulkJob,
        idempotency: Option<IdempotencyRecord>,
    ) -> Result<AcceptOutcome, StoreError> {
        self.accept_bulk_in_chunks(job, idempotency).await
    }

    async fn find_idempotency(
        &self,
        tenant: &TenantId,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let (tenant, key) = (tenant.clone(), key.to_owned());
        self.readers
            .lookup(move |conn| find_key(conn, &tenant, &key))
            .await
    }

    async fn owner_of(&self, id: MessageId) -> Result<Option<TenantId>, StoreError> {
        let owner: Option<String> = self
            .readers
            .lookup(move |conn| {
                conn.prepare_cached("SELECT tenant FROM messages WHERE id = ?1")?
                    .query_row([id.to_string()], |r| r.get(0))
                    .optional()
            })
            .await?;
        Ok(owner.and_then(|t| TenantId::parse(&t).ok()))
    }

    async fn get(
        &self,
        tenant: &TenantId,
        id: MessageId,
    ) -> Result<Option<(Message, Vec<DeliveryEvent>)>, StoreError> {
        let tenant = tenant.as_str().to_owned();
        self.readers
            .run(move |conn| {
                let id = id.to_string();
                let sql =
                    format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?1 AND tenant = ?2");
                let Some(message) = conn
                    .prepare_cached(&sql)?
                    .query_row([&id, &tenant], message_from_row)
                    .optional()?
                else {
                    return Ok(None);
                };
                Ok(Some((message, events_of(conn, &id)?)))
            })
            .await
    }

    async fn claim(
        &self,
        id: MessageId,
        lane: Priority,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<ClaimOutcome, StoreError> {
        let (now_ms, lease_until) = (ms(now), ms(now) + lease.as_millis() as i64);
        self.writer
            .run(lane.rank(), move |conn| {
                claim_in(conn, id, now_ms, lease_until)
            })
            .await
    }

    async fn claim_many(
        &self,
        ids: Vec<MessageId>,
        lane: Priority,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Vec<ClaimOutcome>, StoreError> {
        let (now_ms, lease_until) = (ms(now), ms(now) + lease.as_millis() as i64);
        self.writer
            .run_rows(lane.rank(), ids.len(), move |conn| {
                claim_many(conn, &ids, now_ms, lease_until)
            })
            .await
    }

    async fn transition(
        &self,
        batch: Vec<Transition>,
    ) -> Result<Vec<TransitionOutcome>, StoreError> {
        let batch: Vec<Prepared> = batch.into_iter().map(Prepared::from).collect();
        self.writer
            .run_rows(OUTCOMES_RANK, batch.len(), move |conn| {
                apply_transitions(conn, &batch)
            })
            .await
    }

    async fn locate(&self, id: MessageId) -> Result<Option<MessageRef>, StoreError> {
        self.readers
            .lookup(move |conn| {
                let row: Option<(String, String, String)> = conn
                    .prepare_cached(
                        "SELECT tenant, channel, recipient FROM messages WHERE id = ?1",
                    )?
                    .query_row([id.to_string()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .optional()?;
                Ok(row.and_then(|(tenant, channel, to)| {
                    Some(MessageRef {
                        tenant: TenantId::parse(&tenant).ok()?,
                        channel: Channel::parse(&channel)?,
                        to,
                    })
                }))
            })
            .await
    }

    async fn annotate(
        &self,
        id: MessageId,
        kind: EventKind,
        at: DateTime<Utc>,
        detail: serde_json::Value,
        while_in: &'static [MessageStatus],
    ) -> Result<TransitionOutcome, StoreError> {
        let detail = detail_text(&detail);
        self.writer
            .run(1, move |conn| {
                let id = id.to_string();
                let status: Option<String> = conn
                    .prepare_cached(concat!(
                        "SELECT ",
                        status_now!(),
                        " FROM messages WHERE id = ?1"
                    ))?
                    .query_row([&id], |r| r.get(0))
                    .optional()?;
                let Some(status) = status else {
                    return Ok(TransitionOutcome::NotFound);
                };
                let current = parse_status(0, &status)?;
                if !while_in.contains(&current) {
                    return Ok(TransitionOutcome::Conflict { current });
                }
                insert_event(conn, &id, kind, ms(at), detail.as_deref())?;
                Ok(TransitionOutcome::Applied)
            })
            .await
    }

    async fn find_by_provider_ids(
        &self,
        keys: Vec<(String, String)>,
    ) -> Result<Vec<Option<MessageId>>, StoreError> {
        // On the writer: its page cache is warm, while a reader's is thrown away after every
        // commit, and the transitions that follow the look-up queue there anyway.
        self.writer
            .run(1, move |conn| {
                keys.iter()
                    .map(|(gateway, provider_id)| sent_under(conn, gateway, provider_id))
                    .collect()
            })
            .await
    }

    async fn list_failed(
        &self,
        tenant: &TenantId,
        before: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        let tenant = tenant.as_str().to_owned();
        self.readers
            .run(move |conn| {
                let sql = format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages INDEXED BY messages_failed \
                     WHERE tenant = ?1 AND status = 'failed' \
                     AND (?2 IS NULL OR id < ?2) ORDER BY id DESC LIMIT ?3"
                );
                let mut stmt = conn.prepare_cached(&sql)?;
                let rows = stmt.query_map(
                    params![tenant, before.map(|b| b.to_string()), limit as i64],
                    message_from_row,
                )?;
                rows.collect()
            })
            .await
    }

    async fn search(
        &self,
        tenant: &TenantId,
        filter: &MessageFilter,
        cursor: Option<MessageId>,
        limit: usize,
    ) -> Result<SearchPage, StoreError> {
        let (tenant, filter) = (tenant.as_str().to_owned(), filter.clone());
        self.readers
            .run(move |conn| search::search_in(conn, &tenant, &filter, cursor, limit))
            .await
    }

    async fn bulk_progress(
        &self,
        tenant: &TenantId,
        bulk_id: &str,
    ) -> Result<Option<BulkProgress>, StoreError> {
        let (tenant, bulk_id) = (tenant.as_str().to_owned(), bulk_id.to_owned());
        self.readers
            .run(move |conn| search::bulk_progress_in(conn, &tenant, &bulk_id))
            .await
    }

    async fn recent_bulk_sends(
        &self,
        tenant: &TenantId,
        since: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<BulkSummary>, StoreError> {
        self.read_bulk_sends(tenant, since, limit).await
    }

    async fn bulk_owner(&self, bulk_id: &str) -> Result<Option<TenantId>, StoreError> {
        let bulk_id = bulk_id.to_owned();
        self.readers
            .run(move |conn| search::bulk_owner_in(conn, &bulk_id))
            .await
    }

    async fn redrive(
        &self,
        tenant: &TenantId,
        ids: Option<Vec<MessageId>>,
        now: DateTime<Utc>,
    ) -> Result<Vec<MessageId>, StoreError> {
        let tenant = tenant.as_str().to_owned();
        let now_ms = ms(now);
        self.writer
            .run(1, move |conn| {
                let candidates: Vec<String> = match &ids {
                    Some(ids) => ids.iter().map(|i| i.to_string()).collect(),
                    None => conn
                        .prepare_cached("SELECT id FROM messages WHERE tenant = ?1 AND status = 'failed' LIMIT 10000")?
                        .query_map([&tenant], |r| r.get(0))?
                        .collect::<Result<_, _>>()?,
                };
                let mut redriven = Vec::new();
                for id in candidates {
                    // Back on its lane in the same write: due now, never received.
                    let redrove: Option<i64> = conn
                        .prepare_cached(
                            "UPDATE messages SET status = 'queued', attempts = 0, lease_until = NULL, updated_at = ?1, \
                             visible_at = ?1, receive_count = 0, in_flight = 0 \
                             WHERE id = ?2 AND tenant = ?3 AND status = 'failed' RETURNING rowid",
                        )?
                        .query_row(params![now_ms, id, tenant], |r| r.get(0))
                        .optional()?;
                    if redrove.is_none() {
                        continue;
                    }
                    insert_event(conn, &id, MessageStatus::Queued.into(), now_ms, Some(r#"{"redriven":true}"#))?;
                    if let Some(mid) = MessageId::parse(&id) {
                        redriven.push(mid);
                    }
                }
                Ok(redriven)
            })
            .await
    }

    async fn sent_by_gateway(
        &self,
        gateway: &str,
        after: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        let gateway = gateway.to_owned();
        self.readers
            .run(move |conn| {
                let sql = format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages WHERE {} = 'sent' AND gateway = ?1 \
                     AND (?2 IS NULL OR id > ?2) ORDER BY id LIMIT ?3",
                    status_now!()
                );
                let mut stmt = conn.prepare_cached(&sql)?;
                let rows = stmt.query_map(
                    params![gateway, after.map(|a| a.to_string()), limit as i64],
                    message_from_row,
                )?;
                rows.collect()
            })
            .await
    }

    async fn channel_counts(&self, tenant: &TenantId) -> Result<Vec<ChannelCount>, StoreError> {
        self.count_messages(tenant, String::new()).await
    }

    /// By the `(tenant, id)` index: ids are UUIDv7, so `since` is an id range.
    async fn counts_since(
        &self,
        tenant: &TenantId,
        since: DateTime<Utc>,
    ) -> Result<Option<Vec<ChannelCount>>, StoreError> {
        let floor = first_id_at(since).to_string();
        Ok(Some(self.count_messages(tenant, floor).await?))
    }

    async fn sent_per_minute(
        &self,
        tenant: &TenantId,
        since: DateTime<Utc>,
    ) -> Result<Vec<SentMinute>, StoreError> {
        self.read_sent_minutes(tenant, since).await
    }

    async fn purge(
        &self,
        cutoff: DateTime<Utc>,
        keys_cutoff: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let floor = first_id_at(cutoff).to_string();
        let mut total = 0u64;
        loop {
            let floor = floor.clone();
            let deleted = self
                .writer
                .run(4, move |conn| {
                    let ids: Vec<String> = conn
                        .prepare_cached(
                            "SELECT id FROM messages WHERE id < ?1 \
                             AND status NOT IN ('queued', 'deferred', 'sending') LIMIT ?2",
                        )?
                        .query_map(params![floor, PURGE_CHUNK], |r| r.get(0))?
                        .collect::<Result<_, _>>()?;
                    for id in &ids {
                        conn.prepare_cached("DELETE FROM events WHERE message_id = ?1")?
                            .execute([id])?;
                        conn.prepare_cached("DELETE FROM delivered_marks WHERE message_id = ?1")?
                            .execute([id])?;
                        conn.prepare_cached("DELETE FROM messages WHERE id = ?1")?
                            .execute([id])?;
                    }
                    Ok(ids.len() as u64)
                })
                .await?;
            total += deleted;
            if deleted < PURGE_CHUNK as u64 {
                break;
            }
        }
        let keys_ms = ms(keys_cutoff);
        let cutoff_ms = ms(cutoff);
        let inbound_floor = floor.clone();
        let parked = self.parked_index.clone();
        total += self
            .writer
            .run(4, move |conn| {
                // Inbound messages are kept as long as outbound ones (ids are UUIDv7 too).
                conn.execute("DELETE FROM inbound WHERE id < ?1", [&inbound_floor])?;
                let now = Utc::now().timestamp_millis();
                let soft_window =
                    chrono::Duration::days(crate::domain::suppression::SOFT_BOUNCE_WINDOW_DAYS)
                        .num_milliseconds();
                let keys = conn.execute(
                    "DELETE FROM idempotency_keys WHERE created_at < ?1",
                    [keys_ms],
                )?;
                // Bookkeeping past its use: old strikes, expired event ids and entries.
                conn.execute(
                    "DELETE FROM soft_bounces WHERE at < ?1",
                    [now - soft_window],
                )?;
                // A claim that ran out on parked events still says so to the next one.
                conn.execute(
                    "DELETE FROM seen_events \
                     WHERE expires_at < ?1 AND coalesce(parked_until, 0) < ?1",
                    [now],
                )?;
                super::audit::purge_audit(conn)?;
                super::throughput::purge_sent_minutes(conn, now)?;
                super::bulk_sends::purge_bulk_sends(conn, cutoff_ms)?;
                super::parked::purge_parked(conn, &parked, now)?;
                conn.execute(
                    "DELETE FROM suppressions WHERE expires_at IS NOT NULL AND expires_at < ?1",
                    [now],
                )?;
                Ok(keys as u64)
            })
            .await?;
        Ok(total)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.readers
            .run(|conn| conn.query_row("SELECT 1", [], |_| Ok(())))
            .await
    }
}

impl SqliteBackend {
    /// The tenant's messages with ids from `floor` on (`""`: all of them), counted by channel,
    /// gateway and status.
    async fn count_messages(
        &self,
        tenant: &TenantId,
        floor: String,
    ) -> Result<Vec<ChannelCount>, StoreError> {
        let tenant = tenant.as_str().to_owned();
        self.readers
            .run(move |conn| {
                let mut stmt = conn.prepare_cached(concat!(
                    "SELECT channel, gateway, ",
                    status_now!(),
                    " AS status_now, COUNT(*) FROM messages WHERE tenant = ?1 AND id >= ?2 \
                     GROUP BY channel, gateway, status_now ORDER BY channel, gateway, status_now",
                ))?;
                let rows = stmt.query_map(params![tenant, floor], |r| {
                    let channel: String = r.get(0)?;
                    let status: String = r.get(2)?;
                    Ok(ChannelCount {
                        channel: Channel::parse(&channel).unwrap_or(Channel::Email),
                        gateway: r.get(1)?,
                        status: parse_status(2, &status)?,
                        count: r.get::<_, i64>(3)? as u64,
                    })
                })?;
                rows.collect()
            })
            .await
    }
}

/// The message recorded as sent under a provider id.
pub(super) fn sent_under(
    conn: &Connection,
    gateway: &str,
    provider_message_id: &str,
) -> Result<Option<MessageId>, rusqlite::Error> {
    let id: Option<String> = conn
        .prepare_cached("SELECT id FROM messages WHERE gateway = ?1 AND provider_message_id = ?2")?
        .query_row([gateway, provider_message_id], |r| r.get(0))
        .optional()?;
    Ok(id.as_deref().and_then(MessageId::parse))
}

#[cfg(test)]
mod tests {
    use crate::ports::first_id_at;
    use chrono::{TimeZone, Utc};

    #[test]
    fn first_id_at_sorts_below_ids_minted_later() {
        let t = Utc
            .timestamp_millis_opt(1_700_000_000_000)
            .single()
            .unwrap();
        let later = uuid::Uuid::new_v7(uuid::Timestamp::from_unix(
            uuid::NoContext,
            1_700_000_000,
            1_000_000,
        ));
        let earlier = uuid::Uuid::new_v7(uuid::Timestamp::from_unix(
            uuid::NoContext,
            1_699_999_999,
            0,
        ));
        assert!(first_id_at(t).to_string() < later.to_string());
        assert!(first_id_at(t).to_string() > earlier.to_string());
    }
}
