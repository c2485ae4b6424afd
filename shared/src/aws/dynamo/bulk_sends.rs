//! The list of a tenant's bulk sends, in the bulk table beside the jobs: under the partition
//! `sends#<tenant>`, one item per job sorted by when it was accepted, written in the accept's
//! transaction and expired by TTL. A job's progress is read from its messages, not kept here.
//!
//! A job whose message ids derive from its id (`domain::bulk_ids`) is also how search finds its
//! messages, which have no `by_tenant` entry of their own (`bulk_search.rs`): its listing says
//! so (`by_job`), carries the envelope's searchable attributes, and lives as long as the job's
//! messages may.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};

use super::item::{get_n, get_s, n, s, Item};
use super::{epoch_seconds, unavailable, DynamoStore};
use crate::domain::{Channel, Envelope, Priority, TenantId};
use crate::ports::{BulkSummary, StoreError};

/// How long a bulk send stays listed, at least.
const LISTED_DAYS: i64 = 30;
/// How long a job searched by its listing stays listed beyond the retention: a backlog's wait
/// (as a content item's, `content.rs`) and a month for the slowest to reach a final state.
const SEARCHED_BEYOND_RETENTION_DAYS: i64 = 14 + 30;

/// The `bulk` table's partition of a tenant's listings.
pub(super) fn listing_partition(tenant: &TenantId) -> String {
    format!("sends#{}", tenant.as_str())
}

/// The sort key: the accept time in microseconds-ish (milliseconds, then three digits from the
/// id so two jobs of the same millisecond keep both).
fn sort_key(bulk_id: &str, created_at: DateTime<Utc>) -> i64 {
    let tie = bulk_id
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
        % 1000;
    created_at.timestamp_millis() * 1000 + i64::from(tie)
}

pub(super) fn listing_key(
    tenant: &TenantId,
    summary: &BulkSummary,
) -> HashMap<String, AttributeValue> {
    listing_key_of(tenant, &summary.bulk_id, summary.created_at)
}

pub(super) fn listing_key_of(
    tenant: &TenantId,
    bulk_id: &str,
    created_at: DateTime<Utc>,
) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("bulk_id".to_owned(), s(listing_partition(tenant))),
        ("part".to_owned(), n(sort_key(bulk_id, created_at))),
    ])
}

/// The listing of a job; `searched` is its envelope when search finds its messages through it.
pub(super) fn listing_item(
    tenant: &TenantId,
    summary: &BulkSummary,
    searched: Option<(&Envelope, Duration)>,
) -> Item {
    let mut item = listing_key(tenant, summary);
    item.insert("job".into(), s(&summary.bulk_id));
    item.insert("channel".into(), s(summary.channel.as_str()));
    item.insert("priority".into(), s(summary.priority.as_str()));
    item.insert("recipients".into(), n(summary.recipients));
    let mut days = LISTED_DAYS;
    if let Some((envelope, retention)) = searched {
        item.insert(BY_JOB.into(), AttributeValue::Bool(true));
        let source = [
            ("source_type", &envelope.source_type),
            ("source_id", &envelope.source_id),
        ];
        for (name, value) in source {
            if let Some(v) = value {
                item.insert(name.into(), s(v));
            }
        }
        let retention_days = i64::try_from(retention.as_secs() / 86_400).unwrap_or(i64::MAX / 2);
        days = days.max(retention_days + SEARCHED_BEYOND_RETENTION_DAYS);
    }
    let expires = summary.created_at + chrono::Duration::days(days);
    item.insert("expires_at".into(), n(epoch_seconds(expires)));
    item
}

/// Marks the listing of a job search finds its messages through.
pub(super) const BY_JOB: &str = "by_job";
/// Marks the listing of a job whose messages are all written (until then, search reads how far
/// the fan-out got from the job's head).
pub(super) const FANNED_OUT: &str = "fanned_out";

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
            .expression_attribute_values(":p", s(listing_partition(tenant)))
            .expression_attribute_values(":since", n(since.timestamp_millis() * 1000))
            .scan_index_forward(false)
            .limit(limit.clamp(1, 1000) as i32)
            .send()
            .await
            .map_err(|e| unavailable("Query", e))?;
        Ok(out.items().iter().filter_map(summary_of).collect())
    }
}
