//! Message search and bulk progress on DynamoDB.
//!
//! Search reads the `by_tenant` index: its partition key is `search_shard` (the tenant and one
//! of [`SHARDS`] shards picked by the id, so one busy tenant's index writes spread over
//! partitions), its sort key the id, and it projects only attributes that never change after
//! accept, so a status change never writes it. A page queries every shard newest first in
//! parallel, filters the immutable attributes in the query, merges the shards up to the point
//! every shard has read past, and reads the status of the candidates from the table.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use futures::{StreamExt, TryStreamExt};

use super::batch::Read;
use super::item::{get_s, message_from_item, opt_s, s, Item};
use super::{unavailable, DynamoStore};
use crate::domain::{BulkJobRecipient, Message, MessageId, TenantId};
use crate::ports::{BulkProgress, MessageFilter, SearchPage, StoreError, SEARCH_SCAN_BUDGET};

/// Shards of a tenant's search index: each partition key takes about 1,000 writes a second.
pub(crate) const SHARDS: u8 = 16;
const BATCH_GET: usize = 100;
const CONCURRENCY: usize = 8;

/// The `by_tenant` partition key of a message.
pub(crate) fn search_shard(tenant: &TenantId, id: MessageId) -> String {
    let shard = id.as_uuid().as_bytes()[15] % SHARDS;
    format!("{}#{shard:02}", tenant.as_str())
}

/// The immutable filters, as a filter expression on the index, with its names (through
/// placeholders: some attribute names are DynamoDB reserved words) and values.
fn index_filter(f: &MessageFilter) -> IndexFilter {
    let wanted = [
        ("channel", f.channel.map(|c| c.as_str().to_owned())),
        ("priority", f.priority.map(|p| p.as_str().to_owned())),
        ("recipient", f.to.clone()),
        ("source_type", f.source_type.clone()),
        ("source_id", f.source_id.clone()),
        ("external_id", f.external_id.clone()),
        ("bulk_id", f.bulk_id.clone()),
    ];
    let mut filter = IndexFilter::default();
    let mut terms = Vec::new();
    for (name, value) in wanted {
        if let Some(v) = value {
            terms.push(format!("#{name} = :{name}"));
            filter.names.insert(format!("#{name}"), name.to_owned());
            filter.values.insert(format!(":{name}"), s(v));
        }
    }
    filter.expression = (!terms.is_empty()).then(|| terms.join(" AND "));
    filter
}

#[derive(Default)]
struct IndexFilter {
    expression: Option<String>,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

/// The id just before `id` (ids are fixed-width hex, so the order of text is the order of
/// numbers): `id <= previous(id)` is `id < id` in a key condition.
fn previous(id: MessageId) -> Option<MessageId> {
    id.as_uuid()
        .as_u128()
        .checked_sub(1)
        .map(|v| MessageId::from_uuid(uuid::Uuid::from_u128(v)))
}

/// What one shard gave: its matches, and the last id it read when it stopped before the end.
struct ShardPage {
    ids: Vec<MessageId>,
    stopped_at: Option<MessageId>,
}

impl DynamoStore {
    async fn query_shard(
        &self,
        shard: String,
        f: &MessageFilter,
        high: Option<MessageId>,
        per_shard: usize,
    ) -> Result<ShardPage, StoreError> {
        let IndexFilter {
            expression,
            names,
            mut values,
        } = index_filter(f);
        values.insert(":shard".into(), s(shard));
        let low = f.lowest_id();
        let range = match (low, high) {
            (Some(l), Some(h)) => {
                values.insert(":low".into(), s(l.to_string()));
                values.insert(":high".into(), s(h.to_string()));
                " AND id BETWEEN :low AND :high"
            }
            (Some(l), None) => {
                values.insert(":low".into(), s(l.to_string()));
                " AND id >= :low"
            }
            (None, Some(h)) => {
                values.insert(":high".into(), s(h.to_string()));
                " AND id <= :high"
            }
            (None, None) => "",
        };
        let out = self
            .client
            .query()
            .table_name(self.messages_table()?)
            .index_name("by_tenant")
            .key_condition_expression(format!("search_shard = :shard{range}"))
            .set_filter_expression(expression)
            .set_expression_attribute_names((!names.is_empty()).then_some(names))
            .set_expression_attribute_values(Some(values))
            .scan_index_forward(false)
            .limit(per_shard as i32)
            .send()
            .await
            .map_err(|e| unavailable("Query", e))?;
        let ids = out
            .items()
            .iter()
            .filter_map(|i| opt_s(i, "id").and_then(MessageId::parse))
            .collect();
        let stopped_at = out
            .last_evaluated_key()
            .and_then(|k| opt_s(k, "id"))
            .and_then(MessageId::parse);
        Ok(ShardPage { ids, stopped_at })
    }

    pub(super) async fn search_messages(
        &self,
        tenant: &TenantId,
        f: &MessageFilter,
        cursor: Option<MessageId>,
        limit: usize,
    ) -> Result<SearchPage, StoreError> {
        let high = match f.below_id(cursor) {
            Some(below) => match previous(below) {
                Some(h) => Some(h),
                None => return Ok(SearchPage::default()),
            },
            None => None,
        };
        // Unfiltered, every entry read is a match: each shard reads twice its share of a page
        // (shards fill unevenly). Filtered, each reads its share of the page's budget.
        let filtered = index_filter(f).expression.is_some() || f.status.is_some();
        let per_shard = match filtered {
            true => SEARCH_SCAN_BUDGET / SHARDS as usize,
            false => (limit / SHARDS as usize + 1) * 2,
        };
        let shards = (0..SHARDS).map(|n| format!("{}#{n:02}", tenant.as_str()));
        let pages: Vec<ShardPage> =
            futures::stream::iter(shards.map(|shard| self.query_shard(shard, f, high, per_shard)))
                .buffer_unordered(SHARDS as usize)
                .try_collect()
                .await?;
        // Below the highest point a shard stopped at, that shard has not been read yet.
        let frontier = pages.iter().filter_map(|p| p.stopped_at).max();
        let mut candidates: Vec<MessageId> = pages
            .into_iter()
            .flat_map(|p| p.ids)
            .filter(|id| frontier.is_none_or(|fr| *id >= fr))
            .collect();
        candidates.sort_unstable_by(|a, b| b.cmp(a));
        self.page_of(tenant, f, candidates, frontier, limit).await
    }

    /// Reads the candidates' items, newest first, until `limit` pass the whole filter (the
    /// status is only in the table).
    async fn page_of(
        &self,
        tenant: &TenantId,
        f: &MessageFilter,
        candidates: Vec<MessageId>,
        frontier: Option<MessageId>,
        limit: usize,
    ) -> Result<SearchPage, StoreError> {
        let table = self.messages_table()?;
        let mut items: Vec<Message> = Vec::new();
        for chunk in candidates.chunks(BATCH_GET) {
            let keys = chunk
                .iter()
                .map(|id| HashMap::from([("id".to_owned(), s(id.to_string()))]))
                .collect();
            let mut found: Vec<Message> = self
                .batch_get(table, keys, None, Read::Eventual)
                .await?
                .iter()
                .map(message_from_item)
                .collect::<Result<_, _>>()?;
            found.retain(|m| &m.tenant == tenant && f.matches(m));
            found.sort_unstable_by_key(|m| std::cmp::Reverse(m.id));
            items.extend(found);
            if items.len() >= limit {
                items.truncate(limit);
                let last = items.last().map(|m| m.id);
                return Ok(SearchPage {
                    items,
                    resume_below: last,
                });
            }
        }
        Ok(SearchPage {
            items,
            resume_below: frontier,
        })
    }

    pub(super) async fn bulk_progress_of(
        &self,
        tenant: &TenantId,
        bulk_id: &str,
    ) -> Result<Option<BulkProgress>, StoreError> {
        let Some(ids) = self.bulk_message_ids(tenant, bulk_id).await? else {
            return Ok(None);
        };
        let table = self.messages_table()?;
        let chunks: Vec<Vec<MessageId>> = ids.chunks(BATCH_GET).map(<[_]>::to_vec).collect();
        let pages: Vec<Vec<Item>> = futures::stream::iter(chunks.into_iter().map(|chunk| {
            let keys = chunk
                .iter()
                .map(|id| HashMap::from([("id".to_owned(), s(id.to_string()))]))
                .collect();
            self.batch_get(table, keys, None, Read::Eventual)
        }))
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
        let mut progress = BulkProgress::default();
        let mut written = 0u64;
        for item in pages.iter().flatten() {
            let status = super::item::status_of(item)?;
            *progress.by_status.entry(status).or_default() += 1;
            written += 1;
        }
        progress.pending = (ids.len() as u64).saturating_sub(written);
        Ok(Some(progress))
    }

    /// The message ids a tenant's stored bulk job gave its recipients at accept.
    async fn bulk_message_ids(
        &self,
        tenant: &TenantId,
        bulk_id: &str,
    ) -> Result<Option<Vec<MessageId>>, StoreError> {
        let mut ids = Vec::new();
        let mut start: Option<Item> = None;
        let mut owned = false;
        loop {
            let out = self
                .client
                .query()
                .table_name(self.bulk_table()?)
                .key_condition_expression("bulk_id = :b")
                .expression_attribute_values(":b", s(bulk_id))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| unavailable("Query", e))?;
            for part in out.items() {
                if let Some(header) = opt_s(part, "header") {
                    owned = serde_json::from_str::<serde_json::Value>(header)
                        .ok()
                        .is_some_and(|h| h["tenant"] == tenant.as_str());
                    continue;
                }
                let recipients: Vec<BulkJobRecipient> =
                    serde_json::from_str(get_s(part, "recipients")?).map_err(|e| {
                        StoreError::Corrupt(format!("bulk job {bulk_id} part: {e}"))
                    })?;
                ids.extend(recipients.into_iter().map(|r| r.id));
            }
            start = out.last_evaluated_key().cloned();
            if start.is_none() {
                break;
            }
        }
        Ok(owned.then_some(ids))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previous_is_the_id_just_below() {
        let id = MessageId::new();
        let before = previous(id).unwrap_or(id);
        assert!(before < id);
        assert!(before.to_string() < id.to_string());
        assert_eq!(previous(MessageId::from_uuid(uuid::Uuid::nil())), None);
    }

    #[test]
    fn shards_spread_a_tenant() {
        let tenant = TenantId::parse("acme").unwrap_or_else(|_| unreachable!());
        let shards: std::collections::HashSet<String> = (0..2_000)
            .map(|_| search_shard(&tenant, MessageId::new()))
            .collect();
        assert_eq!(shards.len(), SHARDS as usize);
        assert!(shards.iter().all(|s| s.starts_with("acme#")));
    }
}
