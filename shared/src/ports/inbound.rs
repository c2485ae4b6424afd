use async_trait::async_trait;

use super::StoreError;
use crate::domain::{InboundMessage, MessageId, TenantId};

/// Messages received from recipients.
#[async_trait]
pub trait InboundStore: Send + Sync + 'static {
    /// Stores a message. False when its `(gateway, provider_message_id)` was stored before: a
    /// provider's retry, nothing to do again.
    async fn record_inbound(&self, message: &InboundMessage) -> Result<bool, StoreError>;
    /// A tenant's messages, newest first, older than `before` when given.
    async fn list_inbound(
        &self,
        tenant: &TenantId,
        before: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<InboundMessage>, StoreError>;
}
