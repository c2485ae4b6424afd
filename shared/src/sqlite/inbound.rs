//! Inbound messages on SQLite, and the pipeline's progress on each: `state` with `due_at`
//! (when a `received` message may be taken, or when a `processing` one's lease ends).

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension, Row};

use super::{from_ms, ms, SqliteBackend};
use crate::domain::deliverability::quiet_hours::QuietHours;
use crate::domain::deliverability::reputation::ReputationState;
use crate::domain::inbound::{InboundClaim, InboundOutcome, InboundProgress, InboundState};
use crate::domain::media::MediaItem;
use crate::domain::relay::settings::RelaySettings;
use crate::domain::rules::{Decision, RuleSet};
use crate::domain::thread::ThreadId;
use crate::domain::thread_policy::ThreadPolicy;
use crate::domain::{Channel, InboundMessage, Keyword, MessageId, TenantId};
use crate::ports::{InboundStore, RuleStore, StoreError};

/// Messages waiting for a worker, by when they are due.
pub(super) const PENDING_INDEX: &str = "CREATE INDEX IF NOT EXISTS inbound_pending \
    ON inbound (due_at) WHERE state IN ('received', 'processing');";

pub(super) const SETTINGS_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS inbound_rules (
    tenant TEXT PRIMARY KEY,
    rules TEXT NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS thread_policies (
    tenant TEXT PRIMARY KEY,
    policy TEXT NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS relay_settings (
    tenant TEXT PRIMARY KEY,
    policy TEXT NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS quiet_hours (
    tenant TEXT PRIMARY KEY,
    policy TEXT NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reputation (
    tenant TEXT PRIMARY KEY,
    policy TEXT NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;";

const COLUMNS: &str = "id, tenant, channel, gateway, provider_message_id, sender, recipient, \
    body, media_urls, keyword, received_at, thread_id, state, attempts, decision, last_error, \
    processed_at, first_claimed_at, email, media";

fn bad(col: usize, what: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(col, rusqlite::types::Type::Text, what.into())
}

fn from_row(r: &Row<'_>) -> rusqlite::Result<InboundMessage> {
    let id: String = r.get(0)?;
    let tenant: String = r.get(1)?;
    let channel: String = r.get(2)?;
    let media: String = r.get(8)?;
    let keyword: Option<String> = r.get(9)?;
    let thread: Option<String> = r.get(11)?;
    Ok(InboundMessage {
        id: MessageId::parse(&id).ok_or_else(|| bad(0, format!("id {id}")))?,
        tenant: TenantId::parse(&tenant).map_err(|e| bad(1, e))?,
        channel: Channel::parse(&channel).ok_or_else(|| bad(2, format!("channel {channel}")))?,
        gateway: r.get(3)?,
        provider_message_id: r.get(4)?,
        from: r.get(5)?,
        to: r.get(6)?,
        body: r.get(7)?,
        media_urls: serde_json::from_str(&media).map_err(|e| bad(8, e.to_string()))?,
        keyword: keyword.as_deref().and_then(Keyword::parse),
        received_at: from_ms(r.get(10)?),
        thread: thread
            .map(|t| ThreadId::parse(&t).ok_or_else(|| bad(11, format!("thread {t}"))))
            .transpose()?,
        progress: progress_row(r)?,
        email: r
            .get::<_, Option<String>>(18)?
            .map(|e| serde_json::from_str(&e).map_err(|e| bad(18, e.to_string())))
            .transpose()?,
        media: r
            .get::<_, Option<String>>(19)?
            .map(|e| serde_json::from_str(&e).map_err(|e| bad(19, e.to_string())))
            .transpose()?
            .unwrap_or_default(),
    })
}

/// A message's files as JSON; none when it has none.
fn media_json(media: &[MediaItem]) -> Result<Option<String>, StoreError> {
    if media.is_empty() {
        return Ok(None);
    }
    serde_json::to_string(media)
        .map(Some)
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn progress_row(r: &Row<'_>) -> rusqlite::Result<InboundProgress> {
    let state: String = r.get(12)?;
    let decision: Option<String> = r.get(14)?;
    Ok(InboundProgress {
        state: InboundState::parse(&state).ok_or_else(|| bad(12, format!("state {state}")))?,
        attempts: r.get(13)?,
        decision: decision
            .map(|d| serde_json::from_str::<Decision>(&d).map_err(|e| bad(14, e.to_string())))
            .transpose()?,
        error: r.get(15)?,
        processed_at: r.get::<_, Option<i64>>(16)?.map(from_ms),
        first_claimed_at: r.get::<_, Option<i64>>(17)?.map(from_ms),
    })
}

fn read(
    conn: &rusqlite::Connection,
    tenant: &str,
    id: &str,
) -> rusqlite::Result<Option<InboundMessage>> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM inbound WHERE tenant = ?1 AND id = ?2"
    ))?
    .query_row(params![tenant, id], from_row)
    .optional()
}

#[async_trait]
impl InboundStore for SqliteBackend {
    async fn record_inbound(
        &self,
        m: &InboundMessage,
        policy: &ThreadPolicy,
    ) -> Result<bool, StoreError> {
        let m = m.clone();
        let policy = policy.clone();
        let corrupt = |e: serde_json::Error| StoreError::Corrupt(e.to_string());
        let media = serde_json::to_string(&m.media_urls).map_err(corrupt)?;
        let email = m
            .email
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(corrupt)?;
        let files = media_json(&m.media)?;
        self.writer
            .run(1, move |conn| {
                let inserted = conn
                    .prepare_cached(
                        "INSERT INTO inbound (id, tenant, channel, gateway, provider_message_id, \
                         sender, recipient, body, media_urls, keyword, received_at, state, \
                         due_at, email, media) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'received', ?12, \
                         ?13, ?14) \
                         ON CONFLICT (gateway, provider_message_id) DO NOTHING",
                    )?
                    .execute(params![
                        m.id.to_string(),
                        m.tenant.as_str(),
                        m.channel.as_str(),
                        m.gateway,
                        m.provider_message_id,
                        m.from,
                        m.to,
                        m.body,
                        media,
                        m.keyword.map(Keyword::as_str),
                        ms(m.received_at),
                        // Due when stored, by our clock (a provider's timestamp may be ahead).
                        ms(Utc::now()),
                        email,
                        files,
                    ])?;
                if inserted == 0 {
                    return Ok(false);
                }
                if let Some(thread) = super::threads::thread_inbound(conn, &m, &policy)? {
                    conn.prepare_cached("UPDATE inbound SET thread_id = ?2 WHERE id = ?1")?
                        .execute(params![m.id.to_string(), thread.to_string()])?;
                }
                Ok(true)
            })
            .await
    }

    async fn list_inbound(
        &self,
        tenant: &TenantId,
        before: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<InboundMessage>, StoreError> {
        let tenant = tenant.as_str().to_owned();
        let before = before.map(|id| id.to_string());
        self.readers
            .run(move |conn| {
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM inbound \
                     WHERE tenant = ?1 AND (?2 IS NULL OR id < ?2) ORDER BY id DESC LIMIT ?3"
                ))?;
                let rows = stmt.query_map(params![tenant, before, limit as i64], from_row)?;
                rows.collect()
            })
            .await
    }

    async fn first_received_at(
        &self,
        gateway: &str,
        provider_message_id: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let key = (gateway.to_owned(), provider_message_id.to_owned());
        let at: Option<i64> = self
            .readers
            .lookup(move |conn| {
                conn.prepare_cached(
                    "SELECT received_at FROM inbound WHERE gateway = ?1 AND provider_message_id = ?2",
                )?
                .query_row(params![key.0, key.1], |r| r.get(0))
                .optional()
            })
            .await?;
        Ok(at.and_then(DateTime::from_timestamp_millis))
    }

    async fn inbound_message(
        &self,
        tenant: &TenantId,
        id: MessageId,
    ) -> Result<Option<InboundMessage>, StoreError> {
        let tenant = tenant.as_str().to_owned();
        self.readers
            .run(move |conn| read(conn, &tenant, &id.to_string()))
            .await
    }

    async fn claim_inbound(
        &self,
        tenant: &TenantId,
        id: MessageId,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<InboundClaim, StoreError> {
        let tenant = tenant.as_str().to_owned();
        let until = ms(now) + i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2);
        self.writer
            .run(1, move |conn| {
                let id = id.to_string();
                let claimed = conn
                    .prepare_cached(&format!(
                        "UPDATE inbound SET state = 'processing', due_at = ?3, \
                         attempts = attempts + 1, first_claimed_at = COALESCE(first_claimed_at, ?4) \
                         WHERE tenant = ?1 AND id = ?2 AND state IN ('received', 'processing') \
                         AND due_at <= ?4 RETURNING {COLUMNS}"
                    ))?
                    .query_row(params![tenant, id, until, ms(now)], from_row)
                    .optional()?;
                if let Some(m) = claimed {
                    return Ok(InboundClaim::Claimed(Box::new(m)));
                }
                Ok(match read(conn, &tenant, &id)? {
                    None => InboundClaim::Missing,
                    Some(m) => match m.progress.state {
                        InboundState::Processed | InboundState::Failed => InboundClaim::Done,
                        InboundState::Received | InboundState::Processing => InboundClaim::Held,
                    },
                })
            })
            .await
    }

    async fn finish_inbound(
        &self,
        tenant: &TenantId,
        id: MessageId,
        attempt: u32,
        outcome: &InboundOutcome,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let tenant = tenant.as_str().to_owned();
        let (state, decision, error) = match outcome {
            InboundOutcome::Processed(d) => (
                InboundState::Processed,
                Some(serde_json::to_string(d).map_err(|e| StoreError::Corrupt(e.to_string()))?),
                None,
            ),
            InboundOutcome::Failed(e) => (InboundState::Failed, None, Some(e.clone())),
        };
        self.writer
            .run(1, move |conn| {
                conn.prepare_cached(
                    "UPDATE inbound SET state = ?3, decision = ?4, last_error = ?5, \
                     processed_at = ?6 \
                     WHERE tenant = ?1 AND id = ?2 AND state = 'processing' AND attempts = ?7",
                )?
                .execute(params![
                    tenant,
                    id.to_string(),
                    state.as_str(),
                    decision,
                    error,
                    ms(now),
                    attempt
                ])?;
                Ok(())
            })
            .await
    }

    async fn retry_inbound(
        &self,
        tenant: &TenantId,
        id: MessageId,
        attempt: u32,
        error: &str,
        retry_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let (tenant, error) = (tenant.as_str().to_owned(), error.to_owned());
        self.writer
            .run(1, move |conn| {
                conn.prepare_cached(
                    "UPDATE inbound SET state = 'received', due_at = ?3, last_error = ?4 \
                     WHERE tenant = ?1 AND id = ?2 AND state = 'processing' AND attempts = ?5",
                )?
                .execute(params![
                    tenant,
                    id.to_string(),
                    ms(retry_at),
                    error,
                    attempt
                ])?;
                Ok(())
            })
            .await
    }

    async fn set_inbound_media(
        &self,
        tenant: &TenantId,
        id: MessageId,
        attempt: u32,
        media: &[MediaItem],
    ) -> Result<(), StoreError> {
        let (tenant, files) = (tenant.as_str().to_owned(), media_json(media)?);
        self.writer
            .run(1, move |conn| {
                conn.prepare_cached(
                    "UPDATE inbound SET media = ?3 \
                     WHERE tenant = ?1 AND id = ?2 AND state = 'processing' AND attempts = ?4",
                )?
                .execute(params![tenant, id.to_string(), files, attempt])?;
                Ok(())
            })
            .await
    }

    async fn pending_inbound(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(TenantId, MessageId)>, StoreError> {
        let rows: Vec<(String, String)> = self
            .readers
            .run(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT tenant, id FROM inbound \
                     WHERE state IN ('received', 'processing') AND due_at <= ?1 \
                     ORDER BY due_at LIMIT ?2",
                )?;
                let rows = stmt.query_map(params![ms(now), limit as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
                rows.collect()
            })
            .await?;
        rows.into_iter()
            .map(|(tenant, id)| {
                let corrupt = || StoreError::Corrupt(format!("inbound {tenant}/{id}"));
                Ok((
                    TenantId::parse(&tenant).map_err(|_| corrupt())?,
                    MessageId::parse(&id).ok_or_else(corrupt)?,
                ))
            })
            .collect()
    }
}

/// A settings table: a row per tenant, its JSON document in `column`.
type Setting = (&'static str, &'static str);
const INBOUND_RULES: Setting = ("inbound_rules", "rules");
const THREAD_POLICIES: Setting = ("thread_policies", "policy");
const RELAY_SETTINGS: Setting = ("relay_settings", "policy");
const QUIET_HOURS: Setting = ("quiet_hours", "policy");
const REPUTATION: Setting = ("reputation", "policy");

#[async_trait]
impl RuleStore for SqliteBackend {
    async fn inbound_rules(&self, tenant: &TenantId) -> Result<RuleSet, StoreError> {
        self.setting(tenant, INBOUND_RULES).await
    }

    async fn put_inbound_rules(
        &self,
        tenant: &TenantId,
        rules: &RuleSet,
    ) -> Result<(), StoreError> {
        self.put_setting(tenant, INBOUND_RULES, rules).await
    }

    async fn thread_policy(&self, tenant: &TenantId) -> Result<ThreadPolicy, StoreError> {
        self.setting(tenant, THREAD_POLICIES).await
    }

    async fn put_thread_policy(
        &self,
        tenant: &TenantId,
        policy: &ThreadPolicy,
    ) -> Result<(), StoreError> {
        self.put_setting(tenant, THREAD_POLICIES, policy).await
    }

    async fn relay_settings(&self, tenant: &TenantId) -> Result<RelaySettings, StoreError> {
        self.setting(tenant, RELAY_SETTINGS).await
    }

    async fn put_relay_settings(
        &self,
        tenant: &TenantId,
        settings: &RelaySettings,
    ) -> Result<(), StoreError> {
        self.put_setting(tenant, RELAY_SETTINGS, settings).await
    }

    async fn quiet_hours(&self, tenant: &TenantId) -> Result<QuietHours, StoreError> {
        self.setting(tenant, QUIET_HOURS).await
    }

    async fn put_quiet_hours(&self, tenant: &TenantId, q: &QuietHours) -> Result<(), StoreError> {
        self.put_setting(tenant, QUIET_HOURS, q).await
    }

    async fn reputation(&self, tenant: &TenantId) -> Result<ReputationState, StoreError> {
        self.setting(tenant, REPUTATION).await
    }

    async fn put_reputation(
        &self,
        tenant: &TenantId,
        state: &ReputationState,
    ) -> Result<bool, StoreError> {
        let read = state.revision;
        let raw = serde_json::to_string(&state.next_revision())
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let tenant = tenant.as_str().to_owned();
        self.writer
            .run(1, move |conn| {
                let written = conn
                    .prepare_cached(
                        "INSERT INTO reputation (tenant, policy, updated_at) VALUES (?1, ?2, ?3) \
                         ON CONFLICT (tenant) DO UPDATE SET policy = excluded.policy, \
                         updated_at = excluded.updated_at \
                         WHERE COALESCE(policy ->> '$.revision', 0) = ?4",
                    )?
                    .execute(params![tenant, raw, ms(Utc::now()), read as i64])?;
                Ok(written == 1)
            })
            .await
    }
}

impl SqliteBackend {
    /// A tenant's document in a settings table, or the document's default.
    async fn setting<T>(&self, tenant: &TenantId, (table, column): Setting) -> Result<T, StoreError>
    where
        T: serde::de::DeserializeOwned + Default + Send + 'static,
    {
        let tenant = tenant.as_str().to_owned();
        let raw: Option<String> = self
            .readers
            .run(move |conn| {
                conn.prepare_cached(&format!("SELECT {column} FROM {table} WHERE tenant = ?1"))?
                    .query_row([tenant], |r| r.get(0))
                    .optional()
            })
            .await?;
        raw.map_or(Ok(T::default()), |r| {
            serde_json::from_str(&r).map_err(|e| StoreError::Corrupt(format!("{table}: {e}")))
        })
    }

    /// Replaces a tenant's document in a settings table, and when it changed.
    async fn put_setting<T: serde::Serialize>(
        &self,
        tenant: &TenantId,
        (table, column): Setting,
        document: &T,
    ) -> Result<(), StoreError> {
        let raw =
            serde_json::to_string(document).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let tenant = tenant.as_str().to_owned();
        self.writer
            .run(1, move |conn| {
                conn.prepare_cached(&format!(
                    "INSERT INTO {table} (tenant, {column}, updated_at) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (tenant) DO UPDATE SET {column} = excluded.{column}, \
                     updated_at = excluded.updated_at"
                ))?
                .execute(params![tenant, raw, ms(Utc::now())])?;
                Ok(())
            })
            .await
    }
}
