//! The list of a tenant's bulk sends, in the bulk table beside the jobs: under the partition
//! `sends#<tenant>`, one item per job sorted by when it was accepted, written in the accept's
//! transaction and expired by TTL after [`LISTED_DAYS`]. A job's progress is read from its
//! messages, not kept here.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};

use super::item::{get_n, get_s, n, s, Item};
use super::{epoch_seconds, unavailable, DynamoStore};
use crate::domain::{Channel, Priority, TenantId};
use crate::ports::{BulkSummary, StoreError};

/// How long a bulk send stays listed.
const LISTED_DAYS: i64 = 30;

fn partition(tenant: &TenantId) -> String {
    format!("sends#{}", tenant.as_str())
}

/// The sort key: the accept time in microseconds-ish (milliseconds, then three digits from the
/// id so two jobs of the same millisecond keep both).
fn sort_key(summary: &BulkSummary) -> i64 {
    let tie = summary
        .bulk_id
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
        % 1000;
    summary.created_at.timestamp_millis() * 1000 + i64::from(tie)
}

pub(super) fn listing_key(
    tenant: &TenantId,
    summary: &BulkSummary,
) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("bulk_id".to_owned(), s(partition(tenant))),
        ("part".to_owned(), n(sort_key(summary))),
    ])
}

pub(super) fn listing_item(tenant: &TenantId, summary: &BulkSummary) -> Item {
    let mut item = listing_key(tenant, summary);
    item.insert("job".into(), s(&summary.bulk_id));
    item.insert("channel".into(), s(summary.channel.as_str()));
    item.insert("priority".into(), s(summary.priority.as_str()));
    item.insert("recipients".into(), n(summary.recipients));
    let expires = summary.created_at + chrono::Duration::days(LISTED_DAYS);
    item.insert("expires_at".into(), n(epoch_seconds(expires)));
    item
}

fn summary_of(item: &Item) -> Option<BulkSummary> {
    let part: i64 = get_n(item, "part").ok()?;
    Some(BulkSummary {
        bulk_id: get_s(item, "job").ok()?.to_owned(),
        created_at: DateTime::from_timestamp_millis(part / 1000)?,
        channel: Channel::parse(get_s(item, "channel").ok()?)?,
        priority: Priority::parse(get_s(item, "priority").ok()?)?,
        recipients: get_n(item, "recipients").ok()?,
    })
}

impl DynamoStore {
    pub(super) async fn read_bulk_sends(
        &self,
        tenant: &TenantId,
        since: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<BulkSummary>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(self.bulk_table()?)
            .key_condition_expression("bulk_id = :p AND part >= :since")
            .expression_attribute_values(":p", s(partition(tenant)))
            .expression_attribute_values(":since", n(since.timestamp_millis() * 1000))
            .scan_index_forward(false)
            .limit(limit.clamp(1, 1000) as i32)
            .send()
            .await
            .map_err(|e| unavailable("Query", e))?;
        Ok(out.items().iter().filter_map(summary_of).collect())
    }
}
