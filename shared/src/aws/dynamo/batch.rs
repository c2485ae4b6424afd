//! DynamoDB's batch calls, with their limits (100 keys to read, 25 items to write) and the
//! retries of what comes back unprocessed under throttling.

use std::time::Duration;

use aws_sdk_dynamodb::types::{KeysAndAttributes, PutRequest, WriteRequest};
use futures::{StreamExt, TryStreamExt};

use super::item::{s, Item};
use super::{build_error, unavailable, DynamoStore};
use crate::ports::StoreError;

const BATCH_WRITE: usize = 25;
pub(super) const BATCH_GET: usize = 100;
/// Concurrent batch calls.
const CONCURRENCY: usize = 8;
pub(super) const TRIES: u32 = 8;

pub(super) fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(25 << attempt.min(6))
}

/// How fresh a batch read must be: a strongly consistent read costs twice an eventual one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Read {
    /// Sees every write acknowledged before it.
    Strong,
    /// May miss writes of the last second or so.
    Eventual,
}

impl DynamoStore {
    /// One BatchGetItem of at most 100 keys, asking again for unprocessed keys.
    pub(super) async fn batch_get(
        &self,
        table: &str,
        keys: Vec<Item>,
        projection: Option<&str>,
        read: Read,
    ) -> Result<Vec<Item>, StoreError> {
        let mut pending = keys;
        let mut found = Vec::new();
        for attempt in 0..TRIES {
            if pending.is_empty() {
                return Ok(found);
            }
            if attempt > 0 {
                tokio::time::sleep(backoff(attempt)).await;
            }
            let request = KeysAndAttributes::builder()
                .set_keys(Some(std::mem::take(&mut pending)))
                .set_projection_expression(projection.map(str::to_owned))
                .consistent_read(read == Read::Strong)
                .build()
                .map_err(build_error)?;
            let out = self
                .client
                .batch_get_item()
                .request_items(table, request)
                .send()
                .await
                .map_err(|e| unavailable("BatchGetItem", e))?;
            if let Some(items) = out.responses().and_then(|r| r.get(table)) {
                found.extend(items.iter().cloned());
            }
            if let Some(left) = out.unprocessed_keys().and_then(|u| u.get(table)) {
                pending = left.keys().to_vec();
            }
        }
        if pending.is_empty() {
            Ok(found)
        } else {
            Err(StoreError::Unavailable(
                "BatchGetItem left keys unprocessed after retries".into(),
            ))
        }
    }

    /// The items of `ids` (keyed by `id`), in any order: see [`DynamoStore::batch_get_keys`].
    pub(super) async fn batch_get_ids(
        &self,
        table: &str,
        ids: &[String],
        projection: Option<&str>,
        read: Read,
    ) -> Result<Vec<Item>, StoreError> {
        let keys = ids
            .iter()
            .map(|id| Item::from([("id".to_owned(), s(id.as_str()))]))
            .collect();
        self.batch_get_keys(table, keys, projection, read).await
    }

    /// The items of any number of distinct `keys`, in any order: BatchGetItem of 100 keys, a
    /// few calls at a time.
    pub(super) async fn batch_get_keys(
        &self,
        table: &str,
        keys: Vec<Item>,
        projection: Option<&str>,
        read: Read,
    ) -> Result<Vec<Item>, StoreError> {
        // Chunks are owned before the stream: a stream over borrowed chunks fails the Send check.
        let chunks: Vec<Vec<Item>> = keys.chunks(BATCH_GET).map(<[Item]>::to_vec).collect();
        let calls = chunks
            .into_iter()
            .map(|keys| self.batch_get(table, keys, projection, read));
        let pages: Vec<Vec<Item>> = futures::stream::iter(calls)
            .buffer_unordered(CONCURRENCY)
            .try_collect()
            .await?;
        Ok(pages.into_iter().flatten().collect())
    }

    /// Puts `items` with [`DynamoStore::batch_write`].
    pub(super) async fn batch_put(&self, table: &str, items: Vec<Item>) -> Result<(), StoreError> {
        let writes = items
            .into_iter()
            .map(|item| {
                PutRequest::builder()
                    .set_item(Some(item))
                    .build()
                    .map(|p| WriteRequest::builder().put_request(p).build())
                    .map_err(build_error)
            })
            .collect::<Result<_, _>>()?;
        self.batch_write(table, writes).await
    }

    /// BatchWriteItem in calls of 25, a few at a time, retrying what comes back unprocessed.
    pub(super) async fn batch_write(
        &self,
        table: &str,
        writes: Vec<WriteRequest>,
    ) -> Result<(), StoreError> {
        let chunks: Vec<Vec<WriteRequest>> = writes
            .chunks(BATCH_WRITE)
            .map(<[WriteRequest]>::to_vec)
            .collect();
        futures::stream::iter(
            chunks
                .into_iter()
                .map(|chunk| self.write_chunk(table, chunk)),
        )
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
        Ok(())
    }

    async fn write_chunk(
        &self,
        table: &str,
        mut pending: Vec<WriteRequest>,
    ) -> Result<(), StoreError> {
        for attempt in 0..TRIES {
            if pending.is_empty() {
                return Ok(());
            }
            if attempt > 0 {
                tokio::time::sleep(backoff(attempt)).await;
            }
            let out = self
                .client
                .batch_write_item()
                .request_items(table, std::mem::take(&mut pending))
                .send()
                .await
                .map_err(|e| unavailable("BatchWriteItem", e))?;
            if let Some(left) = out.unprocessed_items().and_then(|u| u.get(table)) {
                pending = left.clone();
            }
        }
        if pending.is_empty() {
            Ok(())
        } else {
            Err(StoreError::Unavailable(
                "BatchWriteItem left items unprocessed after retries".into(),
            ))
        }
    }
}
