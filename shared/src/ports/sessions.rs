//! Console sessions: what a signed-in browser's cookie stands for, kept server-side and found
//! by the hash of the id in the cookie (the store never holds the id itself).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreError;
use crate::domain::TenantId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSession {
    pub tenant: TenantId,
    /// The key that signed in. Its scopes are read afresh on every request, so revoking the
    /// key ends its sessions.
    pub key_prefix: String,
    pub expires_at: DateTime<Utc>,
}

#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    async fn open_session(&self, id_hash: &str, session: &ConsoleSession)
        -> Result<(), StoreError>;
    /// The session, unless it was closed or has expired by `now`.
    async fn find_session(
        &self,
        id_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<ConsoleSession>, StoreError>;
    async fn close_session(&self, id_hash: &str) -> Result<(), StoreError>;
}
