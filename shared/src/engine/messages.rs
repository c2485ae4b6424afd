//! Reading and cancelling a tenant's messages, and the dead-letter list.

use chrono::Utc;
use serde_json::json;

use super::Herald;
use crate::domain::{DeliveryEvent, Message, MessageId, MessageStatus, TenantId};
use crate::ports::{BulkSummary, StoreError, Transition, TransitionOutcome, RECENT_BULK_SENDS};

#[derive(Debug)]
pub enum CancelOutcome {
    Cancelled,
    /// It already reached a gateway (or ended otherwise): too late.
    TooLate(MessageStatus),
    NotFound,
}

/// How far back the list of a tenant's bulk sends reaches.
pub const BULK_LIST_DAYS: i64 = 30;

impl Herald {
    /// The tenant's bulk sends of the last [`BULK_LIST_DAYS`], newest first, at most
    /// [`RECENT_BULK_SENDS`]; the API's list and the console's.
    pub async fn recent_bulk_sends(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<BulkSummary>, StoreError> {
        let since = Utc::now() - chrono::Duration::days(BULK_LIST_DAYS);
        self.store
            .recent_bulk_sends(tenant, since, RECENT_BULK_SENDS)
            .await
    }

    pub async fn message(
        &self,
        tenant: &TenantId,
        id: MessageId,
    ) -> Result<Option<(Message, Vec<DeliveryEvent>)>, StoreError> {
        self.store.get(tenant, id).await
    }

    /// Cancel is a compare-and-set from `queued`/`deferred`; the claim at hand-off is the other
    /// side of the same race, so exactly one of them wins.
    pub async fn cancel(
        &self,
        tenant: &TenantId,
        id: MessageId,
    ) -> Result<CancelOutcome, StoreError> {
        let mut t = Transition::new(id, MessageStatus::Cancelled, Utc::now());
        t.tenant = Some(tenant.clone());
        t.detail = json!({ "by": "api" });
        let batch = vec![t];
        let outcomes = self.store.transition(batch.clone()).await?;
        self.announce(&batch, &outcomes).await;
        Ok(match outcomes.into_iter().next() {
            Some(TransitionOutcome::Applied | TransitionOutcome::AppliedNothingParked) => {
                CancelOutcome::Cancelled
            }
            Some(TransitionOutcome::Conflict {
                current: MessageStatus::Cancelled,
            }) => CancelOutcome::Cancelled,
            Some(TransitionOutcome::Conflict { current }) => CancelOutcome::TooLate(current),
            Some(TransitionOutcome::NotFound) | None => CancelOutcome::NotFound,
        })
    }

    pub async fn dead_letters(
        &self,
        tenant: &TenantId,
        before: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        self.store.list_failed(tenant, before, limit).await
    }

    pub async fn redrive(
        &self,
        tenant: &TenantId,
        ids: Option<Vec<MessageId>>,
    ) -> Result<Vec<MessageId>, StoreError> {
        let redriven = self.store.redrive(tenant, ids, Utc::now()).await?;
        if !redriven.is_empty() {
            for lane in crate::domain::Priority::ALL {
                self.wake(lane, true);
            }
        }
        Ok(redriven)
    }
}
