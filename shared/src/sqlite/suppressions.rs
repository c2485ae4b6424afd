//! The suppression list and the log of processed provider events on SQLite. Checks run against
//! an in-memory set of entry hashes first: one process owns the file, so the set stays exact,
//! and a send whose address has no entry costs no query (most sends). A hit is confirmed, with
//! its expiry, from the table.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parking_lot::RwLock;
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{from_ms, ms, SqliteBackend};
use crate::domain::suppression::{Reason, Scope, Suppression};
use crate::domain::{Channel, MessageId, TenantId};
use crate::ports::{
    ClaimToken, EventClaim, EventLog, ParkedEvents, ParkedMark, ProviderEvent, SentUnder,
    StoreError, SuppressionFilter, SuppressionStore,
};

/// Hashes of every stored entry's (scope, channel, address).
#[derive(Default)]
pub(crate) struct SuppressionIndex(RwLock<HashSet<u64>>);

fn entry_hash(scope: &str, channel: Channel, address: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (scope, channel.as_str(), address).hash(&mut h);
    h.finish()
}

impl SuppressionIndex {
    pub(crate) fn load(conn: &Connection) -> rusqlite::Result<SuppressionIndex> {
        let mut set = HashSet::new();
        let mut stmt = conn.prepare("SELECT scope, channel, address FROM suppressions")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        for row in rows {
            let (scope, channel, address) = row?;
            if let Some(channel) = Channel::parse(&channel) {
                set.insert(entry_hash(&scope, channel, &address));
            }
        }
        Ok(SuppressionIndex(RwLock::new(set)))
    }

    fn may_contain(&self, scope: &str, channel: Channel, address: &str) -> bool {
        self.0.read().contains(&entry_hash(scope, channel, address))
    }
}

const COLUMNS: &str = "scope, channel, address, reason, source, created_at, expires_at";

fn from_row(r: &Row<'_>) -> rusqlite::Result<Suppression> {
    let bad = |col: usize, what: &str| {
        rusqlite::Error::FromSqlConversionFailure(
            col,
            rusqlite::types::Type::Text,
            what.to_owned().into(),
        )
    };
    let scope: String = r.get(0)?;
    let channel: String = r.get(1)?;
    let reason: String = r.get(3)?;
    Ok(Suppression {
        scope: Scope::from_key(&scope).ok_or_else(|| bad(0, "bad scope"))?,
        channel: Channel::parse(&channel).ok_or_else(|| bad(1, "bad channel"))?,
        address: r.get(2)?,
        reason: Reason::parse(&reason).ok_or_else(|| bad(3, "bad reason"))?,
        source: r.get(4)?,
        created_at: from_ms(r.get(5)?),
        expires_at: r.get::<_, Option<i64>>(6)?.map(from_ms),
    })
}

fn select_one(
    conn: &Connection,
    scope: &str,
    channel: Channel,
    address: &str,
) -> rusqlite::Result<Option<Suppression>> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM suppressions WHERE scope = ?1 AND channel = ?2 AND address = ?3"
    ))?
    .query_row(params![scope, channel.as_str(), address], from_row)
    .optional()
}

/// Entries a suppression check reads on the caller's thread (a single send's few); a bulk
/// send's thousands go to the blocking pool.
const FEW_TO_LOOK_UP: usize = 16;

impl SqliteBackend {
    /// Deletes an entry; with `only_if`, only one for that reason made no later than then.
    async fn delete_entry(
        &self,
        scope: &Scope,
        channel: Channel,
        address: &str,
        only_if: Option<(Reason, DateTime<Utc>)>,
    ) -> Result<bool, StoreError> {
        let (key, address) = (scope.key().to_owned(), address.to_owned());
        let hash = entry_hash(&key, channel, &address);
        let (reason, made_by) = only_if.map_or((None, None), |(r, at)| (Some(r), Some(ms(at))));
        let deleted = self
            .writer
            .run(1, move |conn| {
                Ok(conn
                    .prepare_cached(
                        "DELETE FROM suppressions WHERE scope = ?1 AND channel = ?2 AND address = ?3 \
                         AND (?4 IS NULL OR reason = ?4) AND (?5 IS NULL OR created_at <= ?5)",
                    )?
                    .execute(params![
                        key,
                        channel.as_str(),
                        address,
                        reason.map(Reason::as_str),
                        made_by
                    ])?
                    == 1)
            })
            .await?;
        if deleted {
            self.suppression_index.0.write().remove(&hash);
        }
        Ok(deleted)
    }
}

#[async_trait]
impl SuppressionStore for SqliteBackend {
    async fn suppressed(
        &self,
        tenant: &TenantId,
        channel: Channel,
        addresses: &[String],
        now: DateTime<Utc>,
    ) -> Result<HashMap<String, Suppression>, StoreError> {
        let scopes = [tenant.as_str().to_owned(), Scope::Global.key().to_owned()];
        let hits: Vec<(String, String)> = addresses
            .iter()
            .flat_map(|a| scopes.iter().map(move |s| (s.clone(), a.clone())))
            .filter(|(s, a)| self.suppression_index.may_contain(s, channel, a))
            .collect();
        if hits.is_empty() {
            return Ok(HashMap::new());
        }
        let few = hits.len() <= FEW_TO_LOOK_UP;
        let read = move |conn: &Connection| {
            let mut found = HashMap::new();
            for (scope, address) in &hits {
                if let Some(s) = select_one(conn, scope, channel, address)? {
                    if s.is_active(now) {
                        found.entry(address.clone()).or_insert(s);
                    }
                }
            }
            Ok(found)
        };
        if few {
            self.readers.lookup(read).await
        } else {
            self.readers.run(read).await
        }
    }

    async fn put_suppressions(&self, entries: Vec<Suppression>) -> Result<usize, StoreError> {
        let hashes: Vec<u64> = entries
            .iter()
            .map(|e| entry_hash(e.scope.key(), e.channel, &e.address))
            .collect();
        let added = self
            .writer
            .run(1, move |conn| {
                let mut added = 0;
                for e in &entries {
                    let existed = select_one(conn, e.scope.key(), e.channel, &e.address)?.is_some();
                    conn.prepare_cached(&format!(
                        "INSERT OR REPLACE INTO suppressions ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
                    ))?
                    .execute(params![
                        e.scope.key(),
                        e.channel.as_str(),
                        e.address,
                        e.reason.as_str(),
                        e.source,
                        ms(e.created_at),
                        e.expires_at.map(ms),
                    ])?;
                    added += usize::from(!existed);
                }
                Ok(added)
            })
            .await?;
        self.suppression_index.0.write().extend(hashes);
        Ok(added)
    }

    async fn get_suppression(
        &self,
        scope: &Scope,
        channel: Channel,
        address: &str,
    ) -> Result<Option<Suppression>, StoreError> {
        let (scope, address) = (scope.key().to_owned(), address.to_owned());
        self.readers
            .run(move |conn| select_one(conn, &scope, channel, &address))
            .await
    }

    async fn delete_suppression(
        &self,
        scope: &Scope,
        channel: Channel,
        address: &str,
    ) -> Result<bool, StoreError> {
        self.delete_entry(scope, channel, address, None).await
    }

    async fn lift_suppression(
        &self,
        scope: &Scope,
        channel: Channel,
        address: &str,
        reason: Reason,
        made_by: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.delete_entry(scope, channel, address, Some((reason, made_by)))
            .await
    }

    async fn list_suppressions(
        &self,
        scope: &Scope,
        filter: &SuppressionFilter,
        after: Option<(Channel, String)>,
        limit: usize,
    ) -> Result<Vec<Suppression>, StoreError> {
        let scope = scope.key().to_owned();
        let channel = filter.channel.map(|c| c.as_str());
        let reason = filter.reason.map(|r| r.as_str());
        let (after_channel, after_address) = match after {
            Some((c, a)) => (Some(c.as_str()), Some(a)),
            None => (None, None),
        };
        self.readers
            .run(move |conn| {
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM suppressions WHERE scope = ?1 \
                     AND (?2 IS NULL OR channel = ?2) AND (?3 IS NULL OR reason = ?3) \
                     AND (?4 IS NULL OR (channel, address) > (?4, ?5)) \
                     ORDER BY channel, address LIMIT ?6"
                ))?;
                let rows = stmt.query_map(
                    params![
                        scope,
                        channel,
                        reason,
                        after_channel,
                        after_address,
                        limit as i64
                    ],
                    from_row,
                )?;
                rows.collect()
            })
            .await
    }

    async fn soft_bounce(
        &self,
        tenant: &TenantId,
        channel: Channel,
        address: &str,
        at: DateTime<Utc>,
        window: Duration,
    ) -> Result<u32, StoreError> {
        let (tenant, address) = (tenant.as_str().to_owned(), address.to_owned());
        let since = ms(at) - window.as_millis() as i64;
        self.writer
            .run(1, move |conn| {
                conn.prepare_cached(
                    "INSERT INTO soft_bounces (tenant, channel, address, at) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![tenant, channel.as_str(), address, ms(at)])?;
                conn.prepare_cached(
                    "SELECT COUNT(*) FROM soft_bounces WHERE tenant = ?1 AND channel = ?2 \
                     AND address = ?3 AND at >= ?4",
                )?
                .query_row(params![tenant, channel.as_str(), address, since], |r| r.get(0))
            })
            .await
    }
}

#[async_trait]
impl EventLog for SqliteBackend {
    async fn first_seen(&self, source: &str, id: &str, keep: Duration) -> Result<bool, StoreError> {
        let (source, id) = (source.to_owned(), id.to_owned());
        let now = ms(Utc::now());
        let expires = now + keep.as_millis() as i64;
        self.writer
            .run(1, move |conn| {
                // An expired record counts as never seen.
                let inserted = conn
                    .prepare_cached(
                        "INSERT INTO seen_events (source, id, expires_at) VALUES (?1, ?2, ?3) \
                         ON CONFLICT (source, id) DO UPDATE \
                         SET expires_at = excluded.expires_at, applying = 0, parked_until = NULL \
                         WHERE seen_events.expires_at < ?4",
                    )?
                    .execute(params![source, id, expires, now])?;
                Ok(inserted == 1)
            })
            .await
    }

    async fn claim_event(
        &self,
        source: &str,
        id: &str,
        lease: Duration,
    ) -> Result<EventClaim, StoreError> {
        let (source, id) = (source.to_owned(), id.to_owned());
        let now = ms(Utc::now());
        let expires = now + lease.as_millis() as i64;
        let token = ClaimToken::new();
        self.writer
            .run(1, move |conn| {
                // A claim or mark that ran out counts as never made; parked events wait for
                // the next claim, which keeps the word (until it runs out).
                let claimed: Option<i64> = conn
                    .prepare_cached(
                        "INSERT INTO seen_events (source, id, expires_at, applying) \
                         VALUES (?1, ?2, ?3, ?5) \
                         ON CONFLICT (source, id) DO UPDATE \
                         SET expires_at = excluded.expires_at, applying = excluded.applying \
                         WHERE seen_events.expires_at < ?4 \
                            OR (seen_events.parked_until > ?4 AND seen_events.applying = 0) \
                         RETURNING coalesce(parked_until, 0)",
                    )?
                    .query_row(params![source, id, expires, now, token.0], |r| r.get(0))
                    .optional()?;
                match claimed {
                    Some(parked_until) if parked_until > now => {
                        return Ok(EventClaim::Parked(token))
                    }
                    Some(_) => return Ok(EventClaim::First(token)),
                    None => {}
                }
                let applying: bool = conn
                    .prepare_cached(
                        "SELECT applying FROM seen_events WHERE source = ?1 AND id = ?2",
                    )?
                    .query_row(params![source, id], |r| r.get(0))?;
                Ok(match applying {
                    true => EventClaim::Applying,
                    false => EventClaim::Applied,
                })
            })
            .await
    }

    async fn event_applied(
        &self,
        source: &str,
        id: &str,
        token: ClaimToken,
        keep: Duration,
    ) -> Result<(), StoreError> {
        self.end_claim(source, id, token, keep, false).await
    }

    async fn event_parked(
        &self,
        source: &str,
        id: &str,
        token: ClaimToken,
        keep: Duration,
    ) -> Result<(), StoreError> {
        self.end_claim(source, id, token, keep, true).await
    }

    async fn release_event(
        &self,
        source: &str,
        id: &str,
        token: ClaimToken,
    ) -> Result<(), StoreError> {
        let (source, id) = (source.to_owned(), id.to_owned());
        self.writer
            .run(1, move |conn| {
                conn.prepare_cached(
                    "DELETE FROM seen_events WHERE source = ?1 AND id = ?2 AND applying = ?3",
                )?
                .execute(params![source, id, token.0])?;
                Ok(())
            })
            .await
    }

    async fn park(
        &self,
        events: &[ProviderEvent],
        keep: Duration,
    ) -> Result<SentUnder, StoreError> {
        self.park_events(events, keep).await
    }

    async fn parked(
        &self,
        gateway: &str,
        provider_message_id: &str,
        _sent: Option<MessageId>,
    ) -> Result<ParkedEvents, StoreError> {
        self.parked_events(gateway, provider_message_id).await
    }

    async fn forget_parked(
        &self,
        gateway: &str,
        provider_message_id: &str,
        mark: ParkedMark,
    ) -> Result<(), StoreError> {
        self.forget_parked_events(gateway, provider_message_id, mark)
            .await
    }
}

impl SqliteBackend {
    /// Ends `token`'s claim on an event with a mark kept for `keep`: applied, or (`parked`)
    /// its events parked and not all tried, for the next claim to release.
    async fn end_claim(
        &self,
        source: &str,
        id: &str,
        token: ClaimToken,
        keep: Duration,
        parked: bool,
    ) -> Result<(), StoreError> {
        let (source, id) = (source.to_owned(), id.to_owned());
        let expires = ms(Utc::now()) + keep.as_millis() as i64;
        let parked_until = parked.then_some(expires);
        self.writer
            .run(1, move |conn| {
                // A row gone (purged once its lease ran out, or released by a holder that took
                // over and failed) is this holder's to mark: it did apply (or park) the event.
                conn.prepare_cached(
                    "INSERT INTO seen_events (source, id, expires_at, applying, parked_until) \
                     VALUES (?1, ?2, ?3, 0, ?5) \
                     ON CONFLICT (source, id) DO UPDATE \
                     SET expires_at = excluded.expires_at, applying = 0, \
                         parked_until = excluded.parked_until \
                     WHERE seen_events.applying = ?4",
                )?
                .execute(params![source, id, expires, token.0, parked_until])?;
                Ok(())
            })
            .await
    }
}

#[cfg(test)]
impl SqliteBackend {
    /// Moves every remembered event id's expiry `by` earlier, as if that much time had passed.
    pub(crate) async fn age_seen_events(&self, by: Duration) -> Result<(), StoreError> {
        let by = by.as_millis() as i64;
        self.writer
            .run(1, move |conn| {
                conn.execute("UPDATE seen_events SET expires_at = expires_at - ?1", [by])?;
                Ok(())
            })
            .await
    }
}
