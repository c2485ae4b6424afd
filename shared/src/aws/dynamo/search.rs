//! Message search and bulk progress on DynamoDB.
//!
//! Search reads the `by_tenant` index: its partition key is `search_shard` (the tenant and one
//! of [`SHARDS`] shards picked by the id, so one busy tenant's index writes spread over
//! partitions), its sort key the id, and it projects only attributes that never change after
//! accept, so a status change never writes it. A page queries every shard newest first in
//! parallel, filters the immutable attributes in the query, merges the shards up to the point
//! every shard has read past, and reads the status of the candidates from the table.

use std::collections::{HashMap, HashSet};

use aws_sdk_dynamodb::types::AttributeValue;
use futures::{StreamExt, TryStreamExt};

use super::batch::{Read, BATCH_GET};
use super::item::{message_from_item, opt_s, s, status_of};
use super::{unavailable, DynamoStore};
use crate::domain::{Message, MessageId, MessageStatus, TenantId};
use crate::ports::{BulkProgress, MessageFilter, SearchPage, StoreError, SEARCH_SCAN_BUDGET};

/// Shards of a tenant's search index: each partition key takes about 1,000 writes a second.
pub(crate) const SHARDS: u8 = 16;

/// A `by_tenant` partition key: the tenant and a shard.
fn shard_key(tenant: &TenantId, shard: u8) -> String {
    format!("{}#{shard:02}", tenant.as_str())
}

/// Candidates the bulk jobs give a page. Unfiltered below the job (no status or recipient
/// filter), each is a match once its message is written: twice the page. Otherwise each costs a
/// read of its item (half a read unit), so a page reads at most this many (a recipient or
/// external-id filter is matched in the job's parts first, so its candidates are matches
/// already, unless the parts are gone).
fn bulk_budget(f: &MessageFilter, limit: usize) -> usize {
    const ITEM_FILTERED: usize = 1_000;
    if f.status.is_some() || f.to.is_some() || f.external_id.is_some() {
        ITEM_FILTERED
    } else {
        limit.saturating_mul(2).max(1)
    }
}

/// The `by_tenant` partition key of a message.
pub(crate) fn search_shard(tenant: &TenantId, id: MessageId) -> String {
    shard_key(tenant, id.as_uuid().as_bytes()[15] % SHARDS)
}

/// What every shard's query of one page shares: the id range as a key condition, the
/// immutable filters as a filter expression (names through placeholders: some are DynamoDB
/// reserved words), and their values; `:shard` is each query's own.
struct ShardQuery {
    key_condition: String,
    filter: Option<String>,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl ShardQuery {
    /// `None` when no id can be in range (a cursor at the lowest id).
    fn new(f: &MessageFilter, cursor: Option<MessageId>) -> Option<ShardQuery> {
        let mut values = HashMap::new();
        let range = id_range(
            f.lowest_id().map(|id| id.as_uuid()),
            f.below_id(cursor).map(|id| id.as_uuid()),
            &mut values,
        )?;
        let wanted = [
            ("channel", f.channel.map(|c| c.as_str().to_owned())),
            ("priority", f.priority.map(|p| p.as_str().to_owned())),
            ("recipient", f.to.clone()),
            ("source_type", f.source_type.clone()),
            ("source_id", f.source_id.clone()),
            ("external_id", f.external_id.clone()),
            ("bulk_id", f.bulk_id.clone()),
        ];
        let (mut terms, mut names) = (Vec::new(), HashMap::new());
        equal_terms(wanted, &mut terms, &mut names, &mut values);
        Some(ShardQuery {
            key_condition: format!("search_shard = :shard{range}"),
            filter: (!terms.is_empty()).then(|| terms.join(" AND ")),
            names,
            values,
        })
    }
}

/// Adds `#name = :name` to `terms` for each attribute given a value (names go through
/// placeholders: some are DynamoDB reserved words).
pub(super) fn equal_terms(
    wanted: impl IntoIterator<Item = (&'static str, Option<String>)>,
    terms: &mut Vec<String>,
    names: &mut HashMap<String, String>,
    values: &mut HashMap<String, AttributeValue>,
) {
    for (name, value) in wanted {
        if let Some(v) = value {
            terms.push(format!("#{name} = :{name}"));
            names.insert(format!("#{name}"), name.to_owned());
            values.insert(format!(":{name}"), s(v));
        }
    }
}

/// The key condition's part on `id` (UUIDv7 ids as hyphenated text, whose order is the ids'
/// order) for ids at or above `low` and below `below`, its values put in `values`; `None` when
/// no id can be in range.
pub(super) fn id_range(
    low: Option<uuid::Uuid>,
    below: Option<uuid::Uuid>,
    values: &mut HashMap<String, AttributeValue>,
) -> Option<&'static str> {
    // `id <= previous(below)` is `id < below`, which a key condition cannot say beside a low.
    let high = match below {
        Some(b) => Some(previous(b)?),
        None => None,
    };
    // DynamoDB refuses a BETWEEN whose bounds are out of order: an empty range reads nothing.
    if let (Some(low), Some(high)) = (low, high) {
        if low > high {
            return None;
        }
    }
    let mut bound = |name: &str, id: Option<uuid::Uuid>| {
        id.map(|id| values.insert(name.to_owned(), s(id.hyphenated().to_string())))
            .is_some()
    };
    Some(match (bound(":low", low), bound(":high", high)) {
        (true, true) => " AND id BETWEEN :low AND :high",
        (true, false) => " AND id >= :low",
        (false, true) => " AND id <= :high",
        (false, false) => "",
    })
}

/// The id just before `id`.
fn previous(id: uuid::Uuid) -> Option<uuid::Uuid> {
    id.as_u128().checked_sub(1).map(uuid::Uuid::from_u128)
}

/// What one shard (or the bulk jobs, `bulk_search.rs`) gave: its matches, and the last id it
/// read when it stopped before the end.
pub(super) struct ShardPage {
    pub(super) ids: Vec<MessageId>,
    pub(super) stopped_at: Option<MessageId>,
}

impl DynamoStore {
    async fn query_shard(
        &self,
        shard: String,
        q: &ShardQuery,
        per_shard: usize,
    ) -> Result<ShardPage, StoreError> {
        let mut values = q.values.clone();
        values.insert(":shard".into(), s(shard));
        let out = self
            .client
            .query()
            .table_name(self.messages_table()?)
            .index_name("by_tenant")
            .key_condition_expression(&q.key_condition)
            .set_filter_expression(q.filter.clone())
            .set_expression_attribute_names((!q.names.is_empty()).then(|| q.names.clone()))
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
        let Some(query) = ShardQuery::new(f, cursor) else {
            return Ok(SearchPage::default());
        };
        // Unfiltered, every entry read is a match: each shard reads twice its share of a page
        // (shards fill unevenly). Filtered, each reads its share of the page's budget.
        let per_shard = match query.filter.is_some() || f.status.is_some() {
            true => SEARCH_SCAN_BUDGET / SHARDS as usize,
            false => (limit / SHARDS as usize + 1) * 2,
        };
        let queries =
            (0..SHARDS).map(|n| self.query_shard(shard_key(tenant, n), &query, per_shard));
        let shards = futures::stream::iter(queries)
            .buffer_unordered(SHARDS as usize)
            .try_collect::<Vec<ShardPage>>();
        let jobs = self.bulk_candidates(tenant, f, f.below_id(cursor), bulk_budget(f, limit));
        let (mut pages, jobs) = futures::try_join!(shards, jobs)?;
        pages.push(jobs);
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

    /// Reads the candidates' items, newest first, a batch at a time, until `limit` pass the
    /// whole filter (the status is only in the table).
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
            let ids: Vec<String> = chunk.iter().map(MessageId::to_string).collect();
            let mut found: Vec<Message> = self
                .batch_get_ids(table, &ids, None, Read::Eventual)
                .await?
                .iter()
                .map(message_from_item)
                .collect::<Result<_, _>>()?;
            self.add_job_messages(tenant, f, chunk, &mut found).await?;
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

    /// Adds the candidates with no item that are `tenant`'s bulk messages left to their
    /// claims: queued, so none when the filter wants another status.
    async fn add_job_messages(
        &self,
        tenant: &TenantId,
        f: &MessageFilter,
        candidates: &[MessageId],
        found: &mut Vec<Message>,
    ) -> Result<(), StoreError> {
        if f.status.is_some_and(|s| s != MessageStatus::Queued) {
            return Ok(());
        }
        let have: HashSet<MessageId> = found.iter().map(|m| m.id).collect();
        let missing = candidates.iter().copied().filter(|id| !have.contains(id));
        found.extend(self.job_messages_searched(tenant, missing).await?);
        Ok(())
    }

    pub(super) async fn bulk_progress_of(
        &self,
        tenant: &TenantId,
        bulk_id: &str,
    ) -> Result<Option<BulkProgress>, StoreError> {
        let Some(ids) = self.job_message_ids(tenant, bulk_id).await? else {
            return Ok(None);
        };
        let keys: Vec<String> = ids.iter().map(MessageId::to_string).collect();
        let items = self
            .batch_get_ids(self.messages_table()?, &keys, None, Read::Eventual)
            .await?;
        // Those without an item that the fan-out queued were left to their claims: queued (an
        // estimate while it runs: positions it wrote but has not recorded count as pending).
        let queued = match self.left_to_claim(bulk_id).await? {
            true => ids.len().min(self.fanned_out_to(bulk_id).await?),
            false => 0,
        };
        let mut progress = BulkProgress::default();
        for item in &items {
            *progress.by_status.entry(status_of(item)?).or_default() += 1;
        }
        let unclaimed = queued.saturating_sub(items.len());
        if unclaimed > 0 {
            *progress.by_status.entry(MessageStatus::Queued).or_default() += unclaimed as u64;
        }
        progress.pending = ids.len().saturating_sub(items.len().max(queued)) as u64;
        Ok(Some(progress))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previous_is_the_id_just_below() {
        let id = MessageId::new().as_uuid();
        let before = previous(id).unwrap_or(id);
        assert!(before < id);
        assert!(before.hyphenated().to_string() < id.hyphenated().to_string());
        assert_eq!(previous(uuid::Uuid::nil()), None);
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
