//! Console sessions on DynamoDB: an item `session#<id hash>` in the tenants table, removed by
//! the table's TTL (`expires_at`, seconds) once it has expired and checked on read before then.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::item::{get_n, get_s, ms, n, s};
use super::{unavailable, DynamoStore};
use crate::domain::TenantId;
use crate::ports::{ConsoleSession, SessionStore, StoreError};

fn session_pk(id_hash: &str) -> String {
    format!("session#{id_hash}")
}

#[async_trait]
impl SessionStore for DynamoStore {
    async fn open_session(
        &self,
        id_hash: &str,
        session: &ConsoleSession,
    ) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(self.tenants_table()?)
            .item("pk", s(session_pk(id_hash)))
            .item("tenant", s(session.tenant.as_str()))
            .item("key_prefix", s(&session.key_prefix))
            .item("expires_ms", n(ms(session.expires_at)))
            .item("expires_at", n(session.expires_at.timestamp()))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await
            .map_err(|e| unavailable("PutItem", e))?;
        Ok(())
    }

    async fn find_session(
        &self,
        id_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<ConsoleSession>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(self.tenants_table()?)
            .key("pk", s(session_pk(id_hash)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("GetItem", e))?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        let expires_at =
            DateTime::from_timestamp_millis(get_n(&item, "expires_ms")?).unwrap_or_default();
        if expires_at <= now {
            return Ok(None);
        }
        Ok(Some(ConsoleSession {
            tenant: TenantId::parse(get_s(&item, "tenant")?).map_err(StoreError::Corrupt)?,
            key_prefix: get_s(&item, "key_prefix")?.to_owned(),
            expires_at,
        }))
    }

    async fn close_session(&self, id_hash: &str) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(self.tenants_table()?)
            .key("pk", s(session_pk(id_hash)))
            .send()
            .await
            .map_err(|e| unavailable("DeleteItem", e))?;
        Ok(())
    }
}
