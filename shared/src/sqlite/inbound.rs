//! Inbound messages on SQLite.

use async_trait::async_trait;
use rusqlite::{params, Row};

use super::{from_ms, ms, SqliteBackend};
use crate::domain::{Channel, InboundMessage, Keyword, MessageId, TenantId};
use crate::ports::{InboundStore, StoreError};

fn from_row(r: &Row<'_>) -> rusqlite::Result<InboundMessage> {
    let bad = |col: usize, what: String| {
        rusqlite::Error::FromSqlConversionFailure(col, rusqlite::types::Type::Text, what.into())
    };
    let id: String = r.get(0)?;
    let tenant: String = r.get(1)?;
    let channel: String = r.get(2)?;
    let media: String = r.get(8)?;
    let keyword: Option<String> = r.get(9)?;
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
    })
}

#[async_trait]
impl InboundStore for SqliteBackend {
    async fn record_inbound(&self, m: &InboundMessage) -> Result<bool, StoreError> {
        let m = m.clone();
        let media =
            serde_json::to_string(&m.media_urls).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.writer
            .run(1, move |conn| {
                let inserted = conn
                    .prepare_cached(
                        "INSERT INTO inbound (id, tenant, channel, gateway, provider_message_id, \
                         sender, recipient, body, media_urls, keyword, received_at) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
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
                    ])?;
                if inserted == 1 {
                    super::threads::thread_inbound(conn, &m)?;
                }
                Ok(inserted == 1)
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
                let mut stmt = conn.prepare_cached(
                    "SELECT id, tenant, channel, gateway, provider_message_id, sender, recipient, \
                     body, media_urls, keyword, received_at FROM inbound \
                     WHERE tenant = ?1 AND (?2 IS NULL OR id < ?2) ORDER BY id DESC LIMIT ?3",
                )?;
                let rows = stmt.query_map(params![tenant, before, limit as i64], from_row)?;
                rows.collect()
            })
            .await
    }
}
