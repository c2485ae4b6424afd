//! The suppression list on DynamoDB (`suppressions`: PK `scope`, SK `entry` =
//! `<channel>#<address>`, TTL `expires_at`), soft-bounce strikes in the same table, and the
//! processed-event log in the idempotency table.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{PutRequest, ReturnValue, WriteRequest};
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};

use super::batch::Read;
use super::item::{get_n, get_s, ms, n, opt_n, opt_s, s, Item};
use super::{applied, build_error, epoch_seconds, query_up_to, unavailable, DynamoStore};
use crate::domain::suppression::{Reason, Scope, Suppression};
use crate::domain::{Channel, TenantId};
use crate::ports::{EventLog, ProviderEvent, StoreError, SuppressionFilter, SuppressionStore};

/// Two keys (the tenant's and the global entry) per address, 100 keys per BatchGetItem.
const ADDRESSES_PER_GET: usize = 50;
const CONCURRENCY: usize = 8;

fn entry_key(channel: Channel, address: &str) -> String {
    format!("{}#{address}", channel.as_str())
}

fn key(scope: &str, entry: String) -> Item {
    HashMap::from([
        ("scope".to_owned(), s(scope)),
        ("entry".to_owned(), s(entry)),
    ])
}

fn to_item(e: &Suppression) -> Item {
    let mut item = key(e.scope.key(), entry_key(e.channel, &e.address));
    item.insert("reason".into(), s(e.reason.as_str()));
    item.insert("created_at".into(), n(ms(e.created_at)));
    if let Some(source) = &e.source {
        item.insert("source".into(), s(source));
    }
    if let Some(at) = e.expires_at {
        // TTL takes epoch seconds; Herald also checks it, since TTL deletes late.
        item.insert("expires_at".into(), n(epoch_seconds(at)));
    }
    item
}

fn from_item(item: &Item) -> Result<Suppression, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("suppression item: {what}"));
    let scope = Scope::from_key(get_s(item, "scope")?).ok_or_else(|| corrupt("scope"))?;
    let (channel, address) = get_s(item, "entry")?
        .split_once('#')
        .ok_or_else(|| corrupt("entry"))?;
    Ok(Suppression {
        scope,
        channel: Channel::parse(channel).ok_or_else(|| corrupt("channel"))?,
        address: address.to_owned(),
        reason: Reason::parse(get_s(item, "reason")?).ok_or_else(|| corrupt("reason"))?,
        source: opt_s(item, "source").map(str::to_owned),
        created_at: DateTime::from_timestamp_millis(get_n(item, "created_at")?).unwrap_or_default(),
        expires_at: opt_n::<i64>(item, "expires_at")?.and_then(|t| DateTime::from_timestamp(t, 0)),
    })
}

#[async_trait]
impl SuppressionStore for DynamoStore {
    async fn suppressed(
        &self,
        tenant: &TenantId,
        channel: Channel,
        addresses: &[String],
        now: DateTime<Utc>,
    ) -> Result<HashMap<String, Suppression>, StoreError> {
        let table = self.suppressions_table()?;
        let chunks: Vec<Vec<Item>> = addresses
            .chunks(ADDRESSES_PER_GET)
            .map(|chunk| {
                chunk
                    .iter()
                    .flat_map(|a| {
                        [tenant.as_str(), Scope::Global.key()]
                            .map(|scope| key(scope, entry_key(channel, a)))
                    })
                    .collect()
            })
            .collect();
        let pages: Vec<Vec<Item>> = futures::stream::iter(
            chunks
                .into_iter()
                .map(|keys| self.batch_get(table, keys, None, Read::Eventual)),
        )
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
        let mut found = HashMap::new();
        for item in pages.iter().flatten() {
            let entry = from_item(item)?;
            if entry.is_active(now) {
                found.entry(entry.address.clone()).or_insert(entry);
            }
        }
        Ok(found)
    }

    async fn put_suppressions(&self, entries: Vec<Suppression>) -> Result<usize, StoreError> {
        let table = self.suppressions_table()?;
        // Who is new: one batch read first, then batch writes (an import is thousands).
        let keys: Vec<Item> = entries
            .iter()
            .map(|e| key(e.scope.key(), entry_key(e.channel, &e.address)))
            .collect();
        let mut existing = 0;
        for chunk in keys.chunks(100) {
            existing += self
                .batch_get(table, chunk.to_vec(), None, Read::Strong)
                .await?
                .len();
        }
        let writes: Vec<WriteRequest> = entries
            .iter()
            .map(|e| {
                PutRequest::builder()
                    .set_item(Some(to_item(e)))
                    .build()
                    .map(|p| WriteRequest::builder().put_request(p).build())
                    .map_err(build_error)
            })
            .collect::<Result<_, _>>()?;
        self.batch_write(table, writes).await?;
        Ok(entries.len().saturating_sub(existing))
    }

    async fn get_suppression(
        &self,
        scope: &Scope,
        channel: Channel,
        address: &str,
    ) -> Result<Option<Suppression>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(self.suppressions_table()?)
            .set_key(Some(key(scope.key(), entry_key(channel, address))))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("GetItem", e))?;
        out.item.as_ref().map(from_item).transpose()
    }

    async fn delete_suppression(
        &self,
        scope: &Scope,
        channel: Channel,
        address: &str,
    ) -> Result<bool, StoreError> {
        let out = self
            .client
            .delete_item()
            .table_name(self.suppressions_table()?)
            .set_key(Some(key(scope.key(), entry_key(channel, address))))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| unavailable("DeleteItem", e))?;
        Ok(out.attributes.is_some_and(|a| !a.is_empty()))
    }

    async fn list_suppressions(
        &self,
        scope: &Scope,
        filter: &SuppressionFilter,
        after: Option<(Channel, String)>,
        limit: usize,
    ) -> Result<Vec<Suppression>, StoreError> {
        let mut query = self
            .client
            .query()
            .table_name(self.suppressions_table()?)
            .expression_attribute_names("#scope", "scope")
            .expression_attribute_values(":scope", s(scope.key()))
            .set_exclusive_start_key(after.map(|(c, a)| key(scope.key(), entry_key(c, &a))));
        query = match filter.channel {
            Some(c) => query
                .key_condition_expression("#scope = :scope AND begins_with(entry, :channel)")
                .expression_attribute_values(":channel", s(format!("{}#", c.as_str()))),
            None => query.key_condition_expression("#scope = :scope"),
        };
        if let Some(r) = filter.reason {
            query = query
                .filter_expression("reason = :reason")
                .expression_attribute_values(":reason", s(r.as_str()));
        }
        query_up_to(query, limit, from_item).await
    }

    async fn soft_bounce(
        &self,
        tenant: &TenantId,
        channel: Channel,
        address: &str,
        at: DateTime<Utc>,
        window: Duration,
    ) -> Result<u32, StoreError> {
        let table = self.suppressions_table()?;
        let scope = format!("soft#{}", tenant.as_str());
        let prefix = format!("{}#", entry_key(channel, address));
        // One item per strike, gone (TTL) when it leaves the window.
        let expires = at + chrono::Duration::from_std(window).unwrap_or_default();
        self.client
            .put_item()
            .table_name(table)
            .item("scope", s(&scope))
            .item(
                "entry",
                s(format!(
                    "{prefix}{}#{}",
                    ms(at),
                    uuid::Uuid::now_v7().simple()
                )),
            )
            .item("at", n(ms(at)))
            .item("expires_at", n(epoch_seconds(expires)))
            .send()
            .await
            .map_err(|e| unavailable("PutItem", e))?;
        let since = ms(at) - window.as_millis() as i64;
        let out = self
            .client
            .query()
            .table_name(table)
            .key_condition_expression("#scope = :scope AND begins_with(entry, :prefix)")
            .filter_expression("#at >= :since")
            .expression_attribute_names("#scope", "scope")
            .expression_attribute_names("#at", "at")
            .expression_attribute_values(":scope", s(scope))
            .expression_attribute_values(":prefix", s(prefix))
            .expression_attribute_values(":since", n(since))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("Query", e))?;
        Ok(out.count.max(0) as u32)
    }
}

#[async_trait]
impl EventLog for DynamoStore {
    async fn first_seen(&self, source: &str, id: &str, keep: Duration) -> Result<bool, StoreError> {
        let now = Utc::now();
        let expires = now + chrono::Duration::from_std(keep).unwrap_or_default();
        let result = self
            .client
            .put_item()
            .table_name(self.idempotency_table()?)
            .item("pk", s(format!("event#{source}#{id}")))
            .item("expires_at", n(epoch_seconds(expires)))
            .condition_expression("attribute_not_exists(pk) OR expires_at < :now")
            .expression_attribute_values(":now", n(epoch_seconds(now)))
            .send()
            .await;
        applied(result, "PutItem")
    }

    async fn forget(&self, source: &str, id: &str) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(self.idempotency_table()?)
            .key("pk", s(format!("event#{source}#{id}")))
            .send()
            .await
            .map_err(|e| unavailable("DeleteItem", e))?;
        Ok(())
    }

    async fn park(&self, events: &[ProviderEvent], keep: Duration) -> Result<(), StoreError> {
        self.park_events(events, keep).await
    }

    async fn take_parked(
        &self,
        gateway: &str,
        provider_message_id: &str,
    ) -> Result<Vec<ProviderEvent>, StoreError> {
        self.take_parked_events(gateway, provider_message_id).await
    }
}
