//! The embedded backend: every port on one SQLite file in WAL mode.

mod audit;
mod blocks;
mod bulk;
mod bulk_sends;
mod contacts;
mod inbound;
mod inserts;
mod media;
mod messages;
mod migrate;
mod notify;
mod parked;
mod pool;
mod queue;
mod relay;
mod rows;
mod search;
mod sessions;
mod sets;
mod suppressions;
mod tenants;
mod threads;
mod throughput;
mod warmup;

pub use media::FileMediaStore;

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::ports::StoreError;
use pool::{open_connection, start_checkpointer, to_store_error, Readers, Writer};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS tenants (
    name TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS api_keys (
    prefix TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    key_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER,
    scopes TEXT NOT NULL DEFAULT 'send,read,admin'
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS templates (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    subject TEXT,
    text TEXT,
    html TEXT,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS template_locales (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    locale TEXT NOT NULL,
    subject TEXT,
    text TEXT,
    html TEXT,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, name, locale)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (
    id TEXT NOT NULL UNIQUE,
    tenant TEXT NOT NULL,
    channel TEXT NOT NULL,
    priority INTEGER NOT NULL,
    status TEXT NOT NULL,
    recipient TEXT NOT NULL,
    sender TEXT,
    subject TEXT,
    body TEXT,
    html TEXT,
    template TEXT,
    sms TEXT,
    message_type TEXT,
    source_type TEXT,
    source_id TEXT,
    metadata TEXT,
    send_at INTEGER,
    bulk_id TEXT,
    external_id TEXT,
    correlation_id TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_until INTEGER,
    gateway TEXT,
    provider_message_id TEXT,
    last_error TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    -- The lane queue is these columns and the index `messages_due` (see `migrate.rs`): a
    -- queued message is due at `visible_at` (NULL when it is not on a lane); a received one is
    -- hidden until then and comes back unless acknowledged.
    visible_at INTEGER,
    receive_count INTEGER NOT NULL DEFAULT 0,
    in_flight INTEGER NOT NULL DEFAULT 0,
    -- The last claim (event sequence, time, attempt): its `sending` event is read from here
    -- until the next claim moves it into `events` (see `migrate.rs`).
    claim_seq INTEGER,
    claimed_at INTEGER,
    claim_attempt INTEGER,
    -- The accept's event (kind and detail; its time is `created_at`), first in the timeline:
    -- on the row, not an `events` row, so an accept writes one row and its index entries.
    -- NULL on a row from before `migrate.rs` version 10, whose first event is in `events`.
    accept_kind TEXT,
    accept_detail TEXT,
    -- The last `sent` event a dispatch recorded (sequence, time, detail): on the row, not an
    -- `events` row, so a drained message writes its row twice and nothing else. A later one
    -- moves it into `events` (see `migrate.rs` version 11).
    sent_seq INTEGER,
    sent_at INTEGER,
    sent_detail TEXT,
    -- A provider callback's `delivered` event, likewise (`migrate.rs` version 12).
    delivered_seq INTEGER,
    delivered_at INTEGER,
    delivered_detail TEXT
);
-- Provider callbacks find their message by the provider's id.
CREATE INDEX IF NOT EXISTS messages_by_provider_id
    ON messages (gateway, provider_message_id) WHERE provider_message_id IS NOT NULL;
-- The dead-letter list; partial, so other status changes do not pay for it.
CREATE INDEX IF NOT EXISTS messages_failed ON messages (tenant, id) WHERE status = 'failed';
-- A provider callback's `delivered` for a row left `sent` (`sets.rs`): appended here, near
-- the right edge of a narrow table (ids grow with time), rather than rewriting the wide row.
-- `rows.rs`'s `status_now!` reads such a row as `delivered`; its timeline reads the event.
CREATE TABLE IF NOT EXISTS delivered_marks (
    message_id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    at INTEGER NOT NULL,
    detail TEXT
) WITHOUT ROWID;
-- Append-only timeline; seq grows monotonically, so it orders a message's events.
CREATE TABLE IF NOT EXISTS events (
    message_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    at INTEGER NOT NULL,
    detail TEXT,
    PRIMARY KEY (message_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS idempotency_keys (
    tenant TEXT NOT NULL,
    key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    response_status INTEGER NOT NULL,
    response_body TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, key)
) WITHOUT ROWID;
-- The suppression list; scope is a tenant or '*' (global).
CREATE TABLE IF NOT EXISTS suppressions (
    scope TEXT NOT NULL,
    channel TEXT NOT NULL,
    address TEXT NOT NULL,
    reason TEXT NOT NULL,
    source TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    PRIMARY KEY (scope, channel, address)
) WITHOUT ROWID;
-- Soft bounces per address, counted over a window to suppress repeat offenders.
CREATE TABLE IF NOT EXISTS soft_bounces (
    tenant TEXT NOT NULL,
    channel TEXT NOT NULL,
    address TEXT NOT NULL,
    at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS soft_bounces_by_address ON soft_bounces (tenant, channel, address, at);
-- Rate-limit bucket states, saved every second so a restart keeps the pace.
CREATE TABLE IF NOT EXISTS rate_buckets (
    key TEXT PRIMARY KEY,
    tokens REAL NOT NULL,
    updated_at INTEGER NOT NULL,
    paused_until INTEGER
) WITHOUT ROWID;
-- Provider events already applied (by the provider's event id), so a repeat is dropped;
-- `applying` holds a claim's token while its effect is applied, 0 once it is;
-- `parked_until`: a try parked some of its events and failed, so the next claim releases them.
CREATE TABLE IF NOT EXISTS seen_events (
    source TEXT NOT NULL,
    id TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    applying INTEGER NOT NULL DEFAULT 0,
    parked_until INTEGER,
    PRIMARY KEY (source, id)
) WITHOUT ROWID;
-- Provider events that came before their message's `sent`: applied when it is recorded.
CREATE TABLE IF NOT EXISTS parked_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    gateway TEXT NOT NULL,
    provider_message_id TEXT NOT NULL,
    event TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS parked_events_by_provider
    ON parked_events (gateway, provider_message_id);
-- Messages received from recipients; a provider's retry hits the unique key.
CREATE TABLE IF NOT EXISTS inbound (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    channel TEXT NOT NULL,
    gateway TEXT NOT NULL,
    provider_message_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    recipient TEXT NOT NULL,
    body TEXT NOT NULL,
    media_urls TEXT NOT NULL,
    keyword TEXT,
    received_at INTEGER NOT NULL,
    -- The thread it joined, and the inbound pipeline's progress (see inbound.rs).
    thread_id TEXT,
    state TEXT NOT NULL DEFAULT 'received',
    due_at INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    decision TEXT,
    last_error TEXT,
    processed_at INTEGER,
    first_claimed_at INTEGER,
    -- An email's subject, headers, whole text and attachments, as JSON.
    email TEXT,
    -- Its files as Herald stored them, as JSON.
    media TEXT,
    UNIQUE (gateway, provider_message_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS inbound_by_tenant ON inbound (tenant, id);
-- The identities each tenant may send as (`from`).
CREATE TABLE IF NOT EXISTS sender_identities (
    tenant TEXT NOT NULL,
    identity TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, identity)
) WITHOUT ROWID;
-- A tenant's contacts (see contacts.rs): fields and identities as JSON; `merged` once merged
-- into another.
CREATE TABLE IF NOT EXISTS contacts (
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    merged INTEGER NOT NULL DEFAULT 0,
    contact TEXT NOT NULL,
    PRIMARY KEY (tenant, id)
) WITHOUT ROWID;
-- Whose each identity is (`kind:value`): one contact per identity per tenant.
CREATE TABLE IF NOT EXISTS contact_identities (
    tenant TEXT NOT NULL,
    identity TEXT NOT NULL,
    contact_id TEXT NOT NULL,
    PRIMARY KEY (tenant, identity)
) WITHOUT ROWID;
-- The audit log (see audit.rs): appended, never updated; retention deletes old rows.
CREATE TABLE IF NOT EXISTS audit_log (
    id TEXT PRIMARY KEY,
    scope TEXT NOT NULL,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    detail TEXT,
    client TEXT,
    request_id TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS audit_by_scope ON audit_log (scope, id);
CREATE TRIGGER IF NOT EXISTS audit_log_is_append_only BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"#;

/// The embedded backend: implements [`crate::ports::MessageStore`], [`crate::ports::LaneQueue`],
/// [`crate::ports::TemplateStore`] and [`crate::ports::TenantStore`].
#[derive(Clone)]
pub struct SqliteBackend {
    writer: Writer,
    readers: Arc<Readers>,
    suppression_index: Arc<suppressions::SuppressionIndex>,
    parked_index: Arc<parked::ParkedIndex>,
}

impl SqliteBackend {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<SqliteBackend, StoreError> {
        SqliteBackend::open_folding(path, true)
    }

    /// Opened with a writer that leaves delivered marks unfolded, for tests that read them.
    #[cfg(test)]
    pub(crate) fn open_unfolded(path: &Path) -> Result<SqliteBackend, StoreError> {
        SqliteBackend::open_folding(path, false)
    }

    fn open_folding(path: &Path, fold: bool) -> Result<SqliteBackend, StoreError> {
        let conn = open_connection(path).map_err(to_store_error)?;
        conn.execute_batch(SCHEMA).map_err(to_store_error)?;
        conn.execute_batch(notify::SCHEMA).map_err(to_store_error)?;
        conn.execute_batch(threads::SCHEMA)
            .map_err(to_store_error)?;
        conn.execute_batch(inbound::SETTINGS_SCHEMA)
            .map_err(to_store_error)?;
        conn.execute_batch(relay::SCHEMA).map_err(to_store_error)?;
        conn.execute_batch(warmup::SCHEMA).map_err(to_store_error)?;
        conn.execute_batch(bulk::SCHEMA).map_err(to_store_error)?;
        conn.execute_batch(bulk_sends::SCHEMA)
            .map_err(to_store_error)?;
        conn.execute_batch(throughput::SCHEMA)
            .map_err(to_store_error)?;
        conn.execute_batch(sessions::SCHEMA)
            .map_err(to_store_error)?;
        migrate::migrate(&conn).map_err(to_store_error)?;
        let suppression_index =
            Arc::new(suppressions::SuppressionIndex::load(&conn).map_err(to_store_error)?);
        let parked_index = Arc::new(parked::ParkedIndex::load(&conn).map_err(to_store_error)?);
        let idle: Option<pool::IdleWork> = fold.then_some(sets::fold_delivered_marks);
        let writer = Writer::start(conn, idle)?;
        start_checkpointer(path, writer.clone())?;
        let readers = Arc::new(Readers::open(path, 4)?);
        Ok(SqliteBackend {
            writer,
            readers,
            suppression_index,
            parked_index,
        })
    }

    /// Start-up recovery for the single embedded process: whatever the previous process had
    /// received or claimed is released at once (no worker of it survives), instead of waiting
    /// for visibility timeouts. Returns (queue rows released, claims released).
    pub async fn release_in_flight(&self, now: DateTime<Utc>) -> Result<(u64, u64), StoreError> {
        let now = now.timestamp_millis();
        self.writer
            .run(0, move |conn| {
                let rows = conn.execute(
                    "UPDATE messages SET visible_at = ?1, in_flight = 0 \
                     WHERE visible_at IS NOT NULL AND in_flight = 1",
                    [now],
                )?;
                let claims = conn.execute(
                    "UPDATE messages SET lease_until = 0 WHERE status = 'sending' AND lease_until > ?1",
                    [now],
                )?;
                Ok((rows as u64, claims as u64))
            })
            .await
    }

    pub async fn load_buckets(&self) -> Result<Vec<crate::limiter::BucketState>, StoreError> {
        self.readers
            .run(|conn| {
                let mut stmt =
                    conn.prepare("SELECT key, tokens, updated_at, paused_until FROM rate_buckets")?;
                let rows = stmt.query_map([], |r| {
                    Ok(crate::limiter::BucketState {
                        key: r.get(0)?,
                        tokens: r.get(1)?,
                        updated_at: from_ms(r.get(2)?),
                        paused_until: r.get::<_, Option<i64>>(3)?.map(from_ms),
                    })
                })?;
                rows.collect()
            })
            .await
    }

    pub async fn save_buckets(
        &self,
        states: Vec<crate::limiter::BucketState>,
    ) -> Result<(), StoreError> {
        if states.is_empty() {
            return Ok(());
        }
        self.writer
            .run(4, move |conn| {
                let mut stmt = conn.prepare_cached(
                    "INSERT OR REPLACE INTO rate_buckets (key, tokens, updated_at, paused_until) \
                     VALUES (?1, ?2, ?3, ?4)",
                )?;
                for b in &states {
                    stmt.execute(rusqlite::params![
                        b.key,
                        b.tokens,
                        ms(b.updated_at),
                        b.paused_until.map(ms)
                    ])?;
                }
                Ok(())
            })
            .await
    }

    /// Stops the writer after the jobs already submitted.
    pub fn close(&self) {
        self.writer.close();
    }

    /// Stops the writer and waits until the jobs already submitted are committed; false if
    /// that took longer than `within`.
    pub async fn close_and_wait(&self, within: std::time::Duration) -> bool {
        self.writer.close_and_wait(within).await
    }
}

pub(crate) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn from_ms(v: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(v).unwrap_or_default()
}

static EVENT_SEQ: AtomicI64 = AtomicI64::new(0);

/// Strictly increasing event sequence: the wall clock in microseconds, bumped on collision.
pub(crate) fn next_event_seq() -> i64 {
    let now = Utc::now().timestamp_micros();
    let mut cur = EVENT_SEQ.load(Ordering::Relaxed);
    loop {
        let next = now.max(cur + 1);
        match EVENT_SEQ.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => cur = seen,
        }
    }
}

#[cfg(test)]
pub(crate) mod contract_tests;
