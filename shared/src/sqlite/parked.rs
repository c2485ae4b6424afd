//! Provider events parked until their message's `sent` is recorded. Every `sent` asks for its
//! provider id's events, so an in-memory set of parked keys answers first: one process owns the
//! file, so the set never misses a key (it may keep one whose rows expired), and a send with
//! nothing parked (nearly all) costs no query.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use chrono::Utc;
use parking_lot::RwLock;
use rusqlite::{params, Connection};

use super::messages::sent_under;
use super::{ms, SqliteBackend};
use crate::ports::{ParkedEvents, ParkedMark, ProviderEvent, SentUnder, StoreError};

/// Hashes of the (gateway, provider message id) of every parked row.
#[derive(Default)]
pub(crate) struct ParkedIndex(RwLock<HashSet<u64>>);

fn key_hash(gateway: &str, provider_message_id: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (gateway, provider_message_id).hash(&mut h);
    h.finish()
}

impl ParkedIndex {
    pub(crate) fn load(conn: &Connection) -> Result<ParkedIndex, rusqlite::Error> {
        let mut stmt = conn.prepare("SELECT gateway, provider_message_id FROM parked_events")?;
        let hashes = stmt
            .query_map([], |r| {
                Ok(key_hash(&r.get::<_, String>(0)?, &r.get::<_, String>(1)?))
            })?
            .collect::<Result<HashSet<u64>, _>>()?;
        Ok(ParkedIndex(RwLock::new(hashes)))
    }
}

fn corrupt(e: serde_json::Error) -> StoreError {
    StoreError::Corrupt(format!("parked event: {e}"))
}

impl SqliteBackend {
    /// Its answer comes from the messages table, in the same transaction: a `sent` is
    /// recorded there with its provider id, and read back consistently.
    pub(super) async fn park_events(
        &self,
        events: &[ProviderEvent],
        keep: Duration,
    ) -> Result<SentUnder, StoreError> {
        let expires = ms(Utc::now()) + keep.as_millis() as i64;
        let rows = events
            .iter()
            .map(|e| {
                let json = serde_json::to_string(e).map_err(corrupt)?;
                Ok((e.gateway.clone(), e.provider_message_id.clone(), json))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let index = self.parked_index.clone();
        self.writer
            .run(1, move |conn| {
                let mut insert = conn.prepare_cached(
                    "INSERT INTO parked_events (gateway, provider_message_id, event, expires_at) \
                     VALUES (?1, ?2, ?3, ?4)",
                )?;
                let mut sent = SentUnder::new();
                for (gateway, id, json) in &rows {
                    insert.execute(params![gateway, id, json, expires])?;
                    // On the writer thread, in order with every take.
                    index.0.write().insert(key_hash(gateway, id));
                    if let Some(message) = sent_under(conn, gateway, id)? {
                        sent.insert((gateway.clone(), id.clone()), message);
                    }
                }
                Ok(sent)
            })
            .await
    }

    /// Read on the writer's thread, in order with every park, when the set says there are
    /// some. A `sent` needs no word kept: the messages table answers consistently.
    pub(super) async fn parked_events(
        &self,
        gateway: &str,
        provider_message_id: &str,
    ) -> Result<ParkedEvents, StoreError> {
        let hash = key_hash(gateway, provider_message_id);
        if !self.parked_index.0.read().contains(&hash) {
            return Ok(ParkedEvents::default());
        }
        let (gateway, id) = (gateway.to_owned(), provider_message_id.to_owned());
        let now = ms(Utc::now());
        let (rows, last, sent) = self
            .writer
            .run(1, move |conn| {
                let (rows, last) = parked_rows(conn, &gateway, &id, now)?;
                Ok((rows, last, sent_under(conn, &gateway, &id)?))
            })
            .await?;
        let events = rows
            .iter()
            .filter_map(|json| ProviderEvent::from_parked(json))
            .collect();
        Ok(ParkedEvents {
            events,
            mark: last.map(|seq| ParkedMark(seq.to_string())),
            sent,
        })
    }

    /// Deletes the rows up to `mark` (sequence numbers only grow: never one parked since), and
    /// forgets the key once none is left.
    pub(super) async fn forget_parked_events(
        &self,
        gateway: &str,
        provider_message_id: &str,
        mark: ParkedMark,
    ) -> Result<(), StoreError> {
        let upto: i64 = mark.0.parse().map_err(|_| mark.unreadable())?;
        let (gateway, id) = (gateway.to_owned(), provider_message_id.to_owned());
        let (index, hash) = (self.parked_index.clone(), key_hash(&gateway, &id));
        let forgotten = self
            .writer
            .run(1, move |conn| {
                conn.prepare_cached(
                    "DELETE FROM parked_events WHERE gateway = ?1 AND provider_message_id = ?2 \
                     AND seq <= ?3",
                )?
                .execute(params![gateway, id, upto])?;
                if !any_parked(conn, &gateway, &id)? {
                    index.0.write().remove(&hash);
                }
                Ok(())
            })
            .await;
        if forgotten.is_err() {
            // Rolled back: the rows are still there.
            self.parked_index.0.write().insert(hash);
        }
        forgotten
    }

    /// Every provider message with events parked, for the sweep at start-up.
    pub async fn parked_keys(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.readers
            .lookup(|conn| {
                conn.prepare_cached(
                    "SELECT DISTINCT gateway, provider_message_id FROM parked_events",
                )?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect()
            })
            .await
    }
}

/// A provider message's unexpired parked events, oldest first, and the highest sequence
/// number read (expired rows included, so that forgetting removes them too).
fn parked_rows(
    conn: &Connection,
    gateway: &str,
    id: &str,
    now: i64,
) -> Result<(Vec<String>, Option<i64>), rusqlite::Error> {
    let rows: Vec<(i64, String, i64)> = conn
        .prepare_cached(
            "SELECT seq, event, expires_at FROM parked_events \
             WHERE gateway = ?1 AND provider_message_id = ?2 ORDER BY seq",
        )?
        .query_map(params![gateway, id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<Result<_, _>>()?;
    let last = rows.last().map(|(seq, _, _)| *seq);
    let live = rows
        .into_iter()
        .filter(|(_, _, expires)| *expires >= now)
        .map(|(_, event, _)| event)
        .collect();
    Ok((live, last))
}

fn any_parked(conn: &Connection, gateway: &str, id: &str) -> Result<bool, rusqlite::Error> {
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM parked_events WHERE gateway = ?1 AND provider_message_id = ?2)",
    )?
    .query_row(params![gateway, id], |r| r.get(0))
}

/// Deletes parked events past their time (their message was never recorded as sent), and
/// forgets the keys left with none. Runs on the writer thread.
pub(super) fn purge_parked(
    conn: &Connection,
    index: &ParkedIndex,
    now: i64,
) -> Result<usize, rusqlite::Error> {
    let gone: Vec<(String, String)> = conn
        .prepare_cached(
            "DELETE FROM parked_events WHERE expires_at < ?1 \
             RETURNING gateway, provider_message_id",
        )?
        .query_map([now], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (gateway, id) in &gone {
        if !any_parked(conn, gateway, id)? {
            index.0.write().remove(&key_hash(gateway, id));
        }
    }
    Ok(gone.len())
}
