//! Events out on SQLite: endpoints (one JSON row each), the outbox the engine appends events
//! to, and deliveries with their attempts. The due index covers pending deliveries only, so
//! finished ones cost it nothing.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{from_ms, ms, SqliteBackend};
use crate::domain::notify::{DeliveryId, EndpointId, EventId, EventType, Notice, WebhookEndpoint};
use crate::domain::TenantId;
use crate::ports::{
    Attempt, DeliveryState, EndpointRecord, PolledOutbox, Queued, StoreError, WebhookDelivery,
    WebhookStore,
};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS webhook_endpoints (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    endpoint TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS webhook_endpoints_by_tenant ON webhook_endpoints (tenant, id);
CREATE TABLE IF NOT EXISTS notify_outbox (seq INTEGER PRIMARY KEY, notice TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    endpoint_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    state TEXT NOT NULL,
    next_attempt_at INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (next_attempt_at, id)
    WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS webhook_deliveries_by_endpoint ON webhook_deliveries (endpoint_id, id);
CREATE TABLE IF NOT EXISTS webhook_attempts (
    delivery_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    at INTEGER NOT NULL,
    status_code INTEGER,
    latency_ms INTEGER NOT NULL,
    excerpt TEXT NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
) WITHOUT ROWID;
";

fn corrupt(what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        format!("webhook store: bad {what}").into(),
    )
}

fn to_json(ep: &WebhookEndpoint) -> String {
    EndpointRecord::of(ep).to_json()
}

fn endpoint_row(r: &Row<'_>) -> rusqlite::Result<WebhookEndpoint> {
    let (id, tenant, json): (String, String, String) = (r.get(0)?, r.get(1)?, r.get(2)?);
    EndpointRecord::read(&id, &tenant, &json).map_err(|e| corrupt(&e))
}

const DELIVERY_COLUMNS: &str =
    "id, event_id, tenant, endpoint_id, event_type, payload, created_at, state, next_attempt_at";

fn delivery_row(r: &Row<'_>) -> rusqlite::Result<WebhookDelivery> {
    let text = |i: usize| r.get::<_, String>(i);
    Ok(WebhookDelivery {
        id: DeliveryId::parse(&text(0)?).ok_or_else(|| corrupt("delivery id"))?,
        event_id: EventId::parse(&text(1)?).ok_or_else(|| corrupt("event id"))?,
        tenant: TenantId::parse(&text(2)?).map_err(|_| corrupt("tenant"))?,
        endpoint: EndpointId::parse(&text(3)?).ok_or_else(|| corrupt("endpoint id"))?,
        event_type: EventType::parse(&text(4)?).ok_or_else(|| corrupt("event type"))?,
        payload: text(5)?,
        created_at: from_ms(r.get(6)?),
        state: DeliveryState::parse(&text(7)?).ok_or_else(|| corrupt("state"))?,
        next_attempt_at: r.get::<_, Option<i64>>(8)?.map(from_ms),
        attempts: Vec::new(),
    })
}

/// Reads the deliveries a query selects, each with its attempts.
fn deliveries_with_attempts(
    conn: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
) -> rusqlite::Result<Vec<WebhookDelivery>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut out = stmt
        .query_map(args, delivery_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut attempts = conn.prepare_cached(
        "SELECT attempt, at, status_code, latency_ms, excerpt FROM webhook_attempts \
         WHERE delivery_id = ?1 ORDER BY attempt",
    )?;
    for d in &mut out {
        d.attempts = attempts
            .query_map([d.id.to_string()], |r| {
                Ok(Attempt {
                    attempt: r.get(0)?,
                    at: from_ms(r.get(1)?),
                    status_code: r.get(2)?,
                    latency_ms: r.get::<_, i64>(3)?.max(0) as u64,
                    excerpt: r.get(4)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
    }
    Ok(out)
}

fn insert_delivery(conn: &Connection, d: &WebhookDelivery) -> rusqlite::Result<()> {
    conn.prepare_cached(&format!(
        "INSERT OR IGNORE INTO webhook_deliveries ({DELIVERY_COLUMNS}) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
    ))?
    .execute(params![
        d.id.to_string(),
        d.event_id.to_string(),
        d.tenant.as_str(),
        d.endpoint.to_string(),
        d.event_type.as_str(),
        d.payload,
        ms(d.created_at),
        d.state.as_str(),
        d.next_attempt_at.map(ms),
    ])?;
    Ok(())
}

/// How many due deliveries a round looks at, and takes at most per endpoint.
const DUE_WINDOW: usize = 5000;
const DUE_PER_ENDPOINT: usize = 8;

/// Rank of webhook writes: behind every lane, as the audit log's.
const RANK: usize = super::pool::OUTCOMES_RANK;

#[async_trait]
impl WebhookStore for SqliteBackend {
    async fn put_endpoint(&self, endpoint: &WebhookEndpoint) -> Result<(), StoreError> {
        let (id, tenant, enabled, json) = (
            endpoint.id.to_string(),
            endpoint.tenant.as_str().to_owned(),
            endpoint.enabled,
            to_json(endpoint),
        );
        self.writer
            .run(RANK, move |conn| {
                conn.execute(
                    "INSERT OR REPLACE INTO webhook_endpoints (id, tenant, enabled, endpoint) \
                     VALUES (?1, ?2, ?3, ?4)",
                    params![id, tenant, enabled, json],
                )
                .map(|_| ())
            })
            .await
    }

    async fn endpoint(
        &self,
        tenant: &TenantId,
        id: EndpointId,
    ) -> Result<Option<WebhookEndpoint>, StoreError> {
        let (tenant, id) = (tenant.as_str().to_owned(), id.to_string());
        self.readers
            .run(move |conn| {
                conn.query_row(
                    "SELECT id, tenant, endpoint FROM webhook_endpoints WHERE id = ?1 AND tenant = ?2",
                    [id, tenant],
                    endpoint_row,
                )
                .optional()
            })
            .await
    }

    async fn endpoints(&self, tenant: &TenantId) -> Result<Vec<WebhookEndpoint>, StoreError> {
        let tenant = tenant.as_str().to_owned();
        self.readers
            .run(move |conn| {
                conn.prepare_cached(
                    "SELECT id, tenant, endpoint FROM webhook_endpoints WHERE tenant = ?1 ORDER BY id",
                )?
                .query_map([tenant], endpoint_row)?
                .collect()
            })
            .await
    }

    async fn delete_endpoint(&self, tenant: &TenantId, id: EndpointId) -> Result<bool, StoreError> {
        let (tenant, id) = (tenant.as_str().to_owned(), id.to_string());
        self.writer
            .run(RANK, move |conn| {
                let n = conn.execute(
                    "DELETE FROM webhook_endpoints WHERE id = ?1 AND tenant = ?2",
                    [&id, &tenant],
                )?;
                if n > 0 {
                    conn.execute(
                        "DELETE FROM webhook_deliveries WHERE endpoint_id = ?1 AND state = 'pending'",
                        [&id],
                    )?;
                }
                Ok(n > 0)
            })
            .await
    }

    async fn enabled_endpoints(&self) -> Result<Vec<WebhookEndpoint>, StoreError> {
        self.readers
            .run(|conn| {
                conn.prepare_cached(
                    "SELECT id, tenant, endpoint FROM webhook_endpoints WHERE enabled = 1 ORDER BY id",
                )?
                .query_map([], endpoint_row)?
                .collect()
            })
            .await
    }

    async fn note_endpoint_health(
        &self,
        tenant: &TenantId,
        id: EndpointId,
        failing_since: Option<DateTime<Utc>>,
        disable: Option<String>,
    ) -> Result<(), StoreError> {
        let (tenant, id) = (tenant.as_str().to_owned(), id.to_string());
        self.writer
            .run(RANK, move |conn| {
                // Read and write in one transaction: a person's change in between is kept.
                let found = conn
                    .query_row(
                        "SELECT id, tenant, endpoint FROM webhook_endpoints WHERE id = ?1 AND tenant = ?2",
                        [&id, &tenant],
                        endpoint_row,
                    )
                    .optional()?;
                let Some(mut ep) = found else { return Ok(()) };
                ep.note_health(failing_since, disable.as_deref(), Utc::now());
                conn.execute(
                    "UPDATE webhook_endpoints SET enabled = ?2, endpoint = ?3 WHERE id = ?1",
                    params![id, ep.enabled, to_json(&ep)],
                )
                .map(|_| ())
            })
            .await
    }

    async fn publish(&self, notices: Vec<Notice>) -> Result<(), StoreError> {
        let rows: Vec<String> = notices
            .iter()
            .filter_map(|n| serde_json::to_string(n).ok())
            .collect();
        let count = rows.len();
        self.writer
            .run_rows(RANK, count, move |conn| {
                let mut stmt =
                    conn.prepare_cached("INSERT INTO notify_outbox (notice) VALUES (?1)")?;
                for row in &rows {
                    stmt.execute([row])?;
                }
                Ok(())
            })
            .await
    }

    async fn save_deliveries(&self, deliveries: Vec<WebhookDelivery>) -> Result<(), StoreError> {
        self.fan_out(Vec::new(), deliveries).await
    }

    async fn record_attempt(
        &self,
        id: DeliveryId,
        attempt: Attempt,
        state: DeliveryState,
        next_attempt_at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        let id = id.to_string();
        self.writer
            .run(RANK, move |conn| {
                conn.prepare_cached(
                    "INSERT OR REPLACE INTO webhook_attempts \
                     (delivery_id, attempt, at, status_code, latency_ms, excerpt) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![
                    id,
                    attempt.attempt,
                    ms(attempt.at),
                    attempt.status_code,
                    attempt.latency_ms as i64,
                    attempt.excerpt,
                ])?;
                conn.prepare_cached(
                    "UPDATE webhook_deliveries SET state = ?2, next_attempt_at = ?3 WHERE id = ?1",
                )?
                .execute(params![id, state.as_str(), next_attempt_at.map(ms)])?;
                Ok(())
            })
            .await
    }

    async fn deliveries(
        &self,
        tenant: &TenantId,
        endpoint: EndpointId,
        before: Option<DeliveryId>,
        limit: usize,
    ) -> Result<Vec<WebhookDelivery>, StoreError> {
        let (tenant, endpoint) = (tenant.as_str().to_owned(), endpoint.to_string());
        let before = before.map(|b| b.to_string());
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE endpoint_id = ?1 \
             AND tenant = ?2 AND (?3 IS NULL OR id < ?3) ORDER BY id DESC LIMIT ?4"
        );
        self.readers
            .run(move |conn| {
                deliveries_with_attempts(
                    conn,
                    &sql,
                    params![endpoint, tenant, before, limit as i64],
                )
            })
            .await
    }

    async fn delivery(
        &self,
        tenant: &TenantId,
        id: DeliveryId,
    ) -> Result<Option<WebhookDelivery>, StoreError> {
        let (tenant, id) = (tenant.as_str().to_owned(), id.to_string());
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = ?1 AND tenant = ?2"
        );
        self.readers
            .run(move |conn| Ok(deliveries_with_attempts(conn, &sql, [id, tenant])?.pop()))
            .await
    }

    async fn deliveries_since(
        &self,
        tenant: &TenantId,
        endpoint: EndpointId,
        since: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<WebhookDelivery>, StoreError> {
        let (tenant, endpoint) = (tenant.as_str().to_owned(), endpoint.to_string());
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE endpoint_id = ?1 \
             AND tenant = ?2 AND id >= ?3 ORDER BY id LIMIT ?4"
        );
        let low = crate::ports::first_id_at(since).to_string();
        self.readers
            .run(move |conn| {
                deliveries_with_attempts(conn, &sql, params![endpoint, tenant, low, limit as i64])
            })
            .await
    }

    async fn purge_deliveries(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
        self.writer
            .run(RANK, move |conn| {
                conn.execute(
                    "DELETE FROM webhook_attempts WHERE delivery_id IN (SELECT id FROM \
                     webhook_deliveries WHERE state != 'pending' AND created_at < ?1)",
                    [ms(cutoff)],
                )?;
                let n = conn.execute(
                    "DELETE FROM webhook_deliveries WHERE state != 'pending' AND created_at < ?1",
                    [ms(cutoff)],
                )?;
                Ok(n as u64)
            })
            .await
    }
}

#[async_trait]
impl PolledOutbox for SqliteBackend {
    async fn outbox(&self, limit: usize) -> Result<Vec<Queued>, StoreError> {
        self.readers
            .run(move |conn| {
                conn.prepare_cached("SELECT seq, notice FROM notify_outbox ORDER BY seq LIMIT ?1")?
                    .query_map([limit as i64], |r| {
                        let json: String = r.get(1)?;
                        Ok(Queued {
                            seq: r.get(0)?,
                            notice: serde_json::from_str(&json).map_err(|_| corrupt("notice"))?,
                        })
                    })?
                    .collect()
            })
            .await
    }

    async fn fan_out(
        &self,
        done: Vec<i64>,
        deliveries: Vec<WebhookDelivery>,
    ) -> Result<(), StoreError> {
        let rows = done.len() + deliveries.len();
        self.writer
            .run_rows(RANK, rows, move |conn| {
                for d in &deliveries {
                    insert_delivery(conn, d)?;
                }
                let mut stmt = conn.prepare_cached("DELETE FROM notify_outbox WHERE seq = ?1")?;
                for seq in &done {
                    stmt.execute([seq])?;
                }
                Ok(())
            })
            .await
    }

    async fn due_deliveries(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<WebhookDelivery>, StoreError> {
        // At most a few per endpoint, so one endpoint's backlog cannot fill every round.
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM ( \
               SELECT d.*, ROW_NUMBER() OVER \
                 (PARTITION BY d.endpoint_id ORDER BY d.next_attempt_at, d.id) AS nth \
               FROM (SELECT * FROM webhook_deliveries WHERE state = 'pending' \
                     AND next_attempt_at <= ?1 ORDER BY next_attempt_at, id LIMIT {DUE_WINDOW}) d \
               JOIN webhook_endpoints e ON e.id = d.endpoint_id WHERE e.enabled = 1) \
             WHERE nth <= {DUE_PER_ENDPOINT} ORDER BY next_attempt_at, id LIMIT ?2"
        );
        self.readers
            .run(move |conn| deliveries_with_attempts(conn, &sql, params![ms(now), limit as i64]))
            .await
    }
}
