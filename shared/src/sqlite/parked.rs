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

use super::{ms, SqliteBackend};
use crate::ports::{ProviderEvent, StoreError};

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
    pub(super) async fn park_events(
        &self,
        events: &[ProviderEvent],
        keep: Duration,
    ) -> Result<(), StoreError> {
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
                for (gateway, id, json) in &rows {
                    insert.execute(params![gateway, id, json, expires])?;
                    // On the writer thread, in order with every take.
                    index.0.write().insert(key_hash(gateway, id));
                }
                Ok(())
            })
            .await
    }

    pub(super) async fn take_parked_events(
        &self,
        gateway: &str,
        provider_message_id: &str,
    ) -> Result<Vec<ProviderEvent>, StoreError> {
        let hash = key_hash(gateway, provider_message_id);
        if !self.parked_index.0.read().contains(&hash) {
            return Ok(Vec::new());
        }
        let (gateway, id) = (gateway.to_owned(), provider_message_id.to_owned());
        let now = ms(Utc::now());
        let index = self.parked_index.clone();
        let taken = self
            .writer
            .run(1, move |conn| {
                let rows = take_rows(conn, &gateway, &id, now)?;
                index.0.write().remove(&hash);
                Ok(rows)
            })
            .await;
        let rows = match taken {
            Ok(rows) => rows,
            Err(e) => {
                // Not taken after all: the rows are still there.
                self.parked_index.0.write().insert(hash);
                return Err(e);
            }
        };
        rows.iter()
            .map(|json| serde_json::from_str(json).map_err(corrupt))
            .collect()
    }
}

/// Deletes a provider message's parked rows; returns the unexpired ones' events, oldest first.
fn take_rows(
    conn: &Connection,
    gateway: &str,
    id: &str,
    now: i64,
) -> Result<Vec<String>, rusqlite::Error> {
    let mut rows: Vec<(i64, String, i64)> = conn
        .prepare_cached(
            "DELETE FROM parked_events WHERE gateway = ?1 AND provider_message_id = ?2 \
             RETURNING seq, event, expires_at",
        )?
        .query_map(params![gateway, id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<Result<_, _>>()?;
    rows.sort_by_key(|(seq, _, _)| *seq);
    Ok(rows
        .into_iter()
        .filter(|(_, _, expires)| *expires >= now)
        .map(|(_, event, _)| event)
        .collect())
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
    let mut left = conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM parked_events WHERE gateway = ?1 AND provider_message_id = ?2)",
    )?;
    for (gateway, id) in &gone {
        if !left.query_row(params![gateway, id], |r| r.get::<_, bool>(0))? {
            index.0.write().remove(&key_hash(gateway, id));
        }
    }
    Ok(gone.len())
}
