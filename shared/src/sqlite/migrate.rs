//! Schema changes to a data directory written by an older Herald, in order, each once
//! (`PRAGMA user_version` counts the ones applied). `SCHEMA` creates a new database in its
//! latest form; these bring an old one there, keeping every message and queue entry.

use rusqlite::{Connection, OptionalExtension};

/// The migrations in order; a database at `user_version` n has had the first n.
const MIGRATIONS: [fn(&Connection) -> rusqlite::Result<()>; 14] = [
    queue_into_messages,
    claims_on_the_row,
    search_indexes,
    key_scopes,
    inbound_pipeline,
    inbound_email,
    inbound_media,
    thread_slots,
    bulk_jobs_split,
    accept_event_on_the_row,
    sent_event_on_the_row,
    delivered_event_on_the_row,
    event_claims,
    parked_event_claims,
];

/// Version 14: a provider event's claim can say that a try parked its events and failed
/// (`parked_until`), so that its redelivery releases them; no mark made before says so.
fn parked_event_claims(conn: &Connection) -> rusqlite::Result<()> {
    add_columns(conn, "seen_events", &[("parked_until", "INTEGER")])
}

/// Version 13: a provider event's mark is a claim while its effect is applied (`applying`,
/// the claim's token); every mark made before was made for an event already applied (0).
fn event_claims(conn: &Connection) -> rusqlite::Result<()> {
    add_columns(
        conn,
        "seen_events",
        &[("applying", "INTEGER NOT NULL DEFAULT 0")],
    )
}

/// Version 12: a callback's `delivered` event is on its row too (`delivered_seq`,
/// `delivered_at`, `delivered_detail`), moved into `events` if another replaces it.
fn delivered_event_on_the_row(conn: &Connection) -> rusqlite::Result<()> {
    event_slot(conn, "delivered")
}

/// Version 11: the `sent` event a dispatch records is on its message row (`sent_seq`,
/// `sent_at`, `sent_detail`), not an `events` row. When a later `sent` replaces it, a trigger
/// moves the old one into `events`, so a timeline keeps both, as `claims_on_the_row` does for
/// claims.
fn sent_event_on_the_row(conn: &Connection) -> rusqlite::Result<()> {
    event_slot(conn, "sent")
}

/// The columns of an event of kind `kind` kept on the message row (`<kind>_seq`, `_at`,
/// `_detail`), and the trigger that moves the one a later event of that kind replaces into
/// `events`.
fn event_slot(conn: &Connection, kind: &str) -> rusqlite::Result<()> {
    add_message_columns(
        conn,
        &[
            (&format!("{kind}_seq"), "INTEGER"),
            (&format!("{kind}_at"), "INTEGER"),
            (&format!("{kind}_detail"), "TEXT"),
        ],
    )?;
    conn.execute_batch(&format!(
        "CREATE TRIGGER IF NOT EXISTS messages_{kind}_replaced \
         AFTER UPDATE OF {kind}_seq ON messages \
         WHEN OLD.{kind}_seq IS NOT NULL AND NEW.{kind}_seq IS NOT OLD.{kind}_seq \
         BEGIN \
           INSERT INTO events (message_id, seq, kind, at, detail) \
             VALUES (OLD.id, OLD.{kind}_seq, '{kind}', OLD.{kind}_at, OLD.{kind}_detail); \
         END;"
    ))
}

/// Version 10: a message's accept event is on its row (`accept_kind`, `accept_detail`), not an
/// `events` row. Rows accepted before keep theirs in `events`, and their new columns are NULL.
fn accept_event_on_the_row(conn: &Connection) -> rusqlite::Result<()> {
    add_message_columns(conn, &[("accept_kind", "TEXT"), ("accept_detail", "TEXT")])
}

/// Version 9: a bulk send being written keeps its job and its progress in two tables
/// (`bulk.rs`), so a chunk's progress no longer rewrites the whole job. A send an older
/// Herald accepted and had not finished moves across and is finished at start as before.
fn bulk_jobs_split(conn: &Connection) -> rusqlite::Result<()> {
    if found(
        conn,
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'bulk_jobs'",
    )? {
        conn.execute_batch(
            "INSERT OR IGNORE INTO bulk_job_bodies (bulk_id, job) SELECT bulk_id, job FROM bulk_jobs; \
             INSERT OR IGNORE INTO bulk_job_progress (bulk_id, tenant, total, next_index) \
               SELECT bulk_id, job ->> '$.tenant', json_array_length(job, '$.recipients'), next_index \
               FROM bulk_jobs; \
             DROP TABLE bulk_jobs;",
        )?;
    }
    Ok(())
}

/// Version 8: a contact may have a current thread per channel (the tenant's thread policy);
/// the threads before were each a contact's one thread across channels.
fn thread_slots(conn: &Connection) -> rusqlite::Result<()> {
    add_columns(conn, "threads", &[("slot", "TEXT NOT NULL DEFAULT '*'")])
}

/// Version 7: inbound messages record their stored files.
fn inbound_media(conn: &Connection) -> rusqlite::Result<()> {
    add_columns(conn, "inbound", &[("media", "TEXT")])
}

/// Version 6: inbound email keeps its headers, text and attachments; a reply finds the
/// thread of the message it answers.
fn inbound_email(conn: &Connection) -> rusqlite::Result<()> {
    add_columns(conn, "inbound", &[("email", "TEXT")])?;
    conn.execute_batch(super::threads::ENTRIES_BY_MESSAGE)
}

/// Version 5: inbound messages carry the pipeline's progress (those stored before count as
/// processed: no rules existed for them), and threads the rules' state.
fn inbound_pipeline(conn: &Connection) -> rusqlite::Result<()> {
    add_columns(
        conn,
        "inbound",
        &[
            ("thread_id", "TEXT"),
            ("state", "TEXT NOT NULL DEFAULT 'processed'"),
            ("due_at", "INTEGER NOT NULL DEFAULT 0"),
            ("attempts", "INTEGER NOT NULL DEFAULT 0"),
            ("decision", "TEXT"),
            ("last_error", "TEXT"),
            ("processed_at", "INTEGER"),
            ("first_claimed_at", "INTEGER"),
        ],
    )?;
    add_columns(
        conn,
        "threads",
        &[
            ("human_takeover", "INTEGER NOT NULL DEFAULT 0"),
            ("auto_reply_at", "INTEGER"),
            ("auto_reply_by", "TEXT"),
        ],
    )?;
    conn.execute_batch(super::inbound::PENDING_INDEX)
}

/// Version 4: keys have scopes; every key made before had them all.
fn key_scopes(conn: &Connection) -> rusqlite::Result<()> {
    if !found(
        conn,
        "SELECT 1 FROM pragma_table_info('api_keys') WHERE name = 'scopes'",
    )? {
        conn.execute_batch(
            "ALTER TABLE api_keys ADD COLUMN scopes TEXT NOT NULL DEFAULT 'send,read,admin'",
        )?;
    }
    Ok(())
}

/// Runs the migrations the database has not had, in one transaction.
pub(super) fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let done = usize::try_from(version).unwrap_or(0);
    if done >= MIGRATIONS.len() {
        return Ok(());
    }
    let tx = conn.unchecked_transaction()?;
    for step in &MIGRATIONS[done..] {
        step(&tx)?;
    }
    tx.execute_batch(&format!("PRAGMA user_version = {}", MIGRATIONS.len()))?;
    tx.commit()
}

/// Whether `query` finds a row.
fn found(conn: &Connection, query: &str) -> rusqlite::Result<bool> {
    Ok(conn.query_row(query, [], |_| Ok(())).optional()?.is_some())
}

/// Adds columns (name, type) to `messages` that it lacks.
fn add_message_columns(conn: &Connection, columns: &[(&str, &str)]) -> rusqlite::Result<()> {
    add_columns(conn, "messages", columns)
}

/// Adds columns (name, type) to `table` that it lacks: a database `SCHEMA` created new has
/// them already.
fn add_columns(conn: &Connection, table: &str, columns: &[(&str, &str)]) -> rusqlite::Result<()> {
    for (name, kind) in columns {
        let query = format!("SELECT 1 FROM pragma_table_info('{table}') WHERE name = '{name}'");
        if !found(conn, &query)? {
            conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {name} {kind}"))?;
        }
    }
    Ok(())
}

/// Version 1: the lane queue moves from its own table onto the message rows (`visible_at`,
/// `receive_count`, `in_flight`), so receiving and claiming a message write one row, and a
/// final outcome leaves the lane in the same write.
fn queue_into_messages(conn: &Connection) -> rusqlite::Result<()> {
    add_message_columns(
        conn,
        &[
            ("visible_at", "INTEGER"),
            ("receive_count", "INTEGER NOT NULL DEFAULT 0"),
            ("in_flight", "INTEGER NOT NULL DEFAULT 0"),
        ],
    )?;
    if found(
        conn,
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'lane_queue'",
    )? {
        // A message with two entries keeps the one due first.
        conn.execute_batch(
            "UPDATE messages SET visible_at = q.visible_at, receive_count = q.receive_count, \
               in_flight = q.in_flight \
             FROM (SELECT message_id, MIN(visible_at) AS visible_at, MAX(receive_count) AS receive_count, \
                     MAX(in_flight) AS in_flight FROM lane_queue GROUP BY message_id) AS q \
             WHERE messages.id = q.message_id; \
             DROP TABLE lane_queue;",
        )?;
    }
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS messages_due ON messages (priority, visible_at, in_flight, tenant) \
         WHERE visible_at IS NOT NULL;",
    )
}

/// Version 2: a claim is recorded on its message row (`claim_seq`, `claimed_at`,
/// `claim_attempt`) instead of as a `sending` event row, one row write fewer per attempt. When
/// the next claim replaces it, this trigger moves the old one into `events`, so a timeline keeps
/// every attempt; a claim taken back (a held message) is cleared and leaves no trace.
fn claims_on_the_row(conn: &Connection) -> rusqlite::Result<()> {
    add_message_columns(
        conn,
        &[
            ("claim_seq", "INTEGER"),
            ("claimed_at", "INTEGER"),
            ("claim_attempt", "INTEGER"),
        ],
    )?;
    conn.execute_batch(
        "CREATE TRIGGER IF NOT EXISTS messages_claim_replaced \
         AFTER UPDATE OF claim_seq ON messages \
         WHEN OLD.claim_seq IS NOT NULL AND NEW.claim_seq IS NOT NULL \
         BEGIN \
           INSERT INTO events (message_id, seq, kind, at, detail) VALUES (OLD.id, OLD.claim_seq, \
             'sending', OLD.claimed_at, json_object('attempt', OLD.claim_attempt)); \
         END;",
    )
}

/// Version 3: the indexes of message search (`GET /v1/messages`), see `search.rs`. A large
/// database builds them once, at the first start of this version.
fn search_indexes(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(super::search::SEARCH_INDEXES)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::MIGRATIONS;

    use crate::domain::{MessageId, Priority};
    use crate::ports::{LaneQueue, MessageStore};
    use crate::sqlite::SqliteBackend;

    /// The tables as Herald wrote them before version 1 (the rest of the schema is unchanged).
    const BEFORE_V1: &str = "
        CREATE TABLE messages (id TEXT NOT NULL UNIQUE, tenant TEXT NOT NULL, channel TEXT NOT NULL,
            priority INTEGER NOT NULL, status TEXT NOT NULL, recipient TEXT NOT NULL, sender TEXT,
            subject TEXT, body TEXT, html TEXT, template TEXT, sms TEXT, message_type TEXT,
            source_type TEXT, source_id TEXT, metadata TEXT, send_at INTEGER, bulk_id TEXT,
            external_id TEXT, correlation_id TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
            lease_until INTEGER, gateway TEXT, provider_message_id TEXT, last_error TEXT,
            created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
        CREATE TABLE lane_queue (seq INTEGER PRIMARY KEY, lane INTEGER NOT NULL,
            message_id TEXT NOT NULL, tenant TEXT NOT NULL, visible_at INTEGER NOT NULL,
            enqueued_at INTEGER NOT NULL, receive_count INTEGER NOT NULL DEFAULT 0,
            in_flight INTEGER NOT NULL DEFAULT 0);
        CREATE INDEX lane_queue_due ON lane_queue (lane, visible_at);
        CREATE TABLE events (message_id TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL,
            at INTEGER NOT NULL, detail TEXT, PRIMARY KEY (message_id, seq)) WITHOUT ROWID;";

    fn old_row(conn: &rusqlite::Connection, id: MessageId, status: &str, queued: bool) {
        conn.execute(
            "INSERT INTO messages (id, tenant, channel, priority, status, recipient, body, \
             correlation_id, created_at, updated_at) \
             VALUES (?1, 'acme', 'email', 3, ?2, 'a@example.com', 'hi', 'c', 1, 1)",
            rusqlite::params![id.to_string(), status],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO events (message_id, seq, kind, at, detail) \
             VALUES (?1, 1, 'queued', 1, '{\"lane\":\"P3\"}')",
            [id.to_string()],
        )
        .unwrap();
        if queued {
            conn.execute(
                "INSERT INTO lane_queue (lane, message_id, tenant, visible_at, enqueued_at) \
                 VALUES (3, ?1, 'acme', 1, 1)",
                [id.to_string()],
            )
            .unwrap();
        }
    }

    #[tokio::test]
    async fn a_data_directory_from_before_keeps_its_queue() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let (queued, sent) = (MessageId::new(), MessageId::new());
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.execute_batch(BEFORE_V1).unwrap();
            old_row(&conn, queued, "queued", true);
            old_row(&conn, sent, "sent", false);
        }
        for _ in 0..2 {
            // Twice: a migrated database opens as it is.
            let b = SqliteBackend::open(&path).unwrap();
            b.close_and_wait(Duration::from_secs(5)).await;
        }
        let b = SqliteBackend::open(&path).unwrap();
        let tenant = crate::domain::TenantId::parse("acme").unwrap();
        let (_, timeline) = b.get(&tenant, sent).await.unwrap().unwrap();
        assert_eq!(
            timeline.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
            ["queued"],
            "an old row's accept event stays in events, read once"
        );
        let got = b
            .receive(Priority::P3, 10, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(
            got.iter().map(|d| d.message_id).collect::<Vec<_>>(),
            [queued]
        );
        let conn = rusqlite::Connection::open(&path).unwrap();
        let tables: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'lane_queue'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(tables, 0, "the old queue table is gone");
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        let triggers: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger' \
                 AND name IN ('messages_claim_replaced', 'messages_sent_replaced')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(
            triggers, 2,
            "claims and sends replaced later move into events"
        );
        let search_indexes: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' \
                 AND name LIKE 'messages_by_%' AND name != 'messages_by_provider_id'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(
            search_indexes, 5,
            "an old database gains the search indexes"
        );
    }
}

#[cfg(test)]
mod key_scope_tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn keys_made_before_scopes_keep_every_scope() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE api_keys (prefix TEXT PRIMARY KEY, tenant TEXT NOT NULL, \
             key_hash TEXT NOT NULL, created_at INTEGER NOT NULL, revoked_at INTEGER);
             INSERT INTO api_keys VALUES ('abcd1234', 'acme', 'h', 0, NULL);",
        )
        .unwrap();
        key_scopes(&conn).unwrap();
        key_scopes(&conn).unwrap(); // a second run finds the column and leaves it
        let scopes: String = conn
            .query_row("SELECT scopes FROM api_keys", [], |r| r.get(0))
            .unwrap();
        assert_eq!(scopes, "send,read,admin");
    }
}

#[cfg(test)]
mod bulk_split_tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use crate::domain::TenantId;
    use crate::ports::contract::bulk_job;
    use crate::ports::MessageStore;
    use crate::sqlite::SqliteBackend;

    /// A send an older Herald accepted and wrote up to recipient 256 is finished from there.
    #[tokio::test]
    async fn an_unfinished_bulk_send_from_before_the_split_is_finished_from_its_progress() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        SqliteBackend::open(&path)
            .unwrap()
            .close_and_wait(Duration::from_secs(5))
            .await;
        let tenant = TenantId::parse("acme").unwrap();
        let job = bulk_job(&tenant, "bulk_old", 300);
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE bulk_jobs (bulk_id TEXT PRIMARY KEY, job TEXT NOT NULL, \
                 next_index INTEGER NOT NULL) WITHOUT ROWID; PRAGMA user_version = 8;",
            )
            .unwrap();
            conn.execute(
                "INSERT INTO bulk_jobs VALUES ('bulk_old', ?1, 256)",
                [serde_json::to_string(&job).unwrap()],
            )
            .unwrap();
        }
        let b = SqliteBackend::open(&path).unwrap();
        let pending = b.bulk_progress(&tenant, "bulk_old").await.unwrap().unwrap();
        assert_eq!(pending.pending, 44, "300 recipients, 256 written");
        assert_eq!(b.resume_bulk_jobs().await.unwrap(), 1);
        let (first, last) = (job.recipients[0].id, job.recipients[299].id);
        assert!(
            b.get(&tenant, first).await.unwrap().is_none(),
            "written before"
        );
        assert!(b.get(&tenant, last).await.unwrap().is_some());
        assert_eq!(b.resume_bulk_jobs().await.unwrap(), 0);
        let conn = rusqlite::Connection::open(&path).unwrap();
        let old: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'bulk_jobs'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(old, 0, "the old table is gone");
    }
}
