//! Bulk messages created at their claims: the writes (`job_messages.rs` has the why). The claim
//! renders a message from its job's part and creates its item already `sending`, in one
//! conditional put that a cancel (or an earlier claim) beats.
//!
//! A stack allows it once `herald upgrade` has marked it, so that no dispatcher of an older
//! release, which would drop an entry whose message has no item, is still running.

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use serde_json::json;

use super::content::message_items;
use super::item::{event_value, ms, n, s, Item};
use super::{unavailable, DynamoStore};
use crate::domain::{MessageId, MessageStatus, TenantId};
use crate::ports::{ClaimOutcome, StoreError};

/// Marks a message item whose `queued` was counted by its job's fan-out (`counters.rs`).
pub(crate) const QUEUED_IN_JOB: &str = "queued_in_job";
const MARKER_JOB: &str = "marker#claims_create";

fn marker_key() -> Item {
    Item::from([
        ("bulk_id".to_owned(), s(MARKER_JOB)),
        ("part".to_owned(), n(0)),
    ])
}

impl DynamoStore {
    /// Whether this stack's jobs may leave queued messages to their claims (read at accept).
    pub(super) async fn claims_create(&self) -> bool {
        self.claims_marker
            .get(|| async {
                let Ok(table) = self.bulk_table() else {
                    return false;
                };
                let read = self
                    .client
                    .get_item()
                    .table_name(table)
                    .set_key(Some(marker_key()))
                    .send()
                    .await;
                match read {
                    Ok(out) => out.item.is_some(),
                    Err(e) => {
                        tracing::warn!(error = %unavailable("GetItem", e), "claims-create marker unreadable; this job's messages are written at its fan-out");
                        false
                    }
                }
            })
            .await
    }

    /// Marks the stack for [`DynamoStore::claims_create`] (`herald upgrade`, after a deploy).
    pub async fn mark_claims_create(&self) -> Result<(), StoreError> {
        let mut item = marker_key();
        item.insert("marked_at".into(), n(ms(Utc::now())));
        self.client
            .put_item()
            .table_name(self.bulk_table()?)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| unavailable("PutItem", e))?;
        Ok(())
    }

    /// Claims a message its fan-out left unwritten by creating it as `sending`. None when it
    /// exists already (claimed before, cancelled) or its job does not hold it: the caller claims
    /// as usual.
    pub(super) async fn claim_created(
        &self,
        id: MessageId,
        part: usize,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Option<ClaimOutcome>, StoreError> {
        let Some(m) = self.job_message(id, None, Some(part)).await? else {
            return Ok(None);
        };
        let (mut item, content) = message_items(&m, self.retention, false);
        let lease_until = now + chrono::Duration::from_std(lease).unwrap_or_default();
        let claim_event = event_value(MessageStatus::Sending.into(), now, &json!({ "attempt": 1 }));
        if let Some(AttributeValue::L(events)) = item.get_mut("events") {
            events.push(claim_event);
        }
        for (k, v) in [
            ("status", s(MessageStatus::Sending.as_str())),
            ("attempts", n(1)),
            ("lease_until", n(ms(lease_until))),
            ("updated_at", n(ms(now))),
        ] {
            item.insert(k.to_owned(), v);
        }
        if !self.put_job_message(item.clone(), content).await? {
            return Ok(None);
        }
        let mut claimed = super::item::message_from_item(&item)?;
        claimed.content = m.content;
        Ok(Some(ClaimOutcome::Claimed(Box::new(claimed))))
    }

    /// Writes a queued message its fan-out left unwritten, as the fan-out would have, so that a
    /// transition (a cancel) applies to it as usual; false when `tenant` (when given) has no
    /// such message, or the fan-out has not reached it (it is cancelled only once it is
    /// queued, as before).
    pub(super) async fn write_job_message(
        &self,
        id: MessageId,
        tenant: Option<&TenantId>,
    ) -> Result<bool, StoreError> {
        let Some(m) = self.job_message(id, tenant, None).await? else {
            return Ok(false);
        };
        if !self.fanned_out_past(&m).await? {
            return Ok(false);
        }
        let (item, content) = message_items(&m, self.retention, false);
        // Written meanwhile (by its claim) or now: it exists either way.
        self.put_job_message(item, content).await?;
        Ok(true)
    }

    /// Creates a job's message item (its content item first, when apart), marked as counted
    /// queued by its fan-out; false when it exists already.
    async fn put_job_message(
        &self,
        mut item: Item,
        content: Option<Item>,
    ) -> Result<bool, StoreError> {
        self.put_contents(content.into_iter().collect()).await?;
        item.insert(QUEUED_IN_JOB.to_owned(), AttributeValue::Bool(true));
        let created = self
            .client
            .put_item()
            .table_name(self.messages_table()?)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(id)")
            .send()
            .await;
        super::applied(created, "PutItem")
    }
}
