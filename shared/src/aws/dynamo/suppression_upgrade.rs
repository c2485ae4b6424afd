//! `herald upgrade` on a stack: gives every suppression entry stored before look-ups existed
//! its look-up (`suppression_lookup.rs`), then writes the marker that lets the check read
//! look-ups alone.

use aws_sdk_dynamodb::types::{ConditionCheck, TransactWriteItem};
use futures::{StreamExt, TryStreamExt};
use tracing::warn;

use super::item::{s, Item};
use super::suppression_lookup::{complete_marker, set_in_lookup, LOOKUP};
use super::suppressions::{entry_fields, entry_key, from_item, key};
use super::{build_error, unavailable, DynamoStore};
use crate::domain::suppression::Suppression;
use crate::ports::StoreError;

const CONCURRENCY: usize = 8;

/// What an upgrade of the suppression list did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SuppressionUpgrade {
    /// Entries whose look-up it wrote.
    pub indexed: usize,
    /// Entries changed or deleted while it ran: their own writes set their look-ups.
    pub changed_meanwhile: usize,
    /// Items it could not read as entries (logged, and left as they are).
    pub unreadable: usize,
    /// Whether it marked the list, so that the check reads look-ups alone: not while an item
    /// it could not read is there (the check that reads entries too refuses such an item, and
    /// holds its sends; the look-ups alone would pass it by).
    pub marked: bool,
}

impl DynamoStore {
    /// Writes the look-up of every entry on the list, then the marker; safe to run again. Run
    /// it once a deploy has replaced every function of the older release and their last
    /// invocations have ended (the longest timeout is 5 minutes): those write entries without
    /// look-ups.
    pub async fn index_suppressions_by_address(&self) -> Result<SuppressionUpgrade, StoreError> {
        let table = self.suppressions_table()?;
        let (mut start, mut done) = (None, SuppressionUpgrade::default());
        loop {
            let out = self
                .client
                .scan()
                .table_name(table)
                .filter_expression(
                    "NOT begins_with(#scope, :lookup) AND NOT begins_with(#scope, :soft)",
                )
                .expression_attribute_names("#scope", "scope")
                .expression_attribute_values(":lookup", s(LOOKUP))
                .expression_attribute_values(":soft", s("soft#"))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| unavailable("Scan", e))?;
            let entries = readable_entries(out.items(), &mut done);
            let indexed: Vec<bool> =
                futures::stream::iter(entries.iter().map(|e| self.index_entry(table, e)))
                    .buffer_unordered(CONCURRENCY)
                    .try_collect()
                    .await?;
            for applied in indexed {
                match applied {
                    true => done.indexed += 1,
                    false => done.changed_meanwhile += 1,
                }
            }
            start = out.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        if done.unreadable == 0 {
            self.client
                .put_item()
                .table_name(table)
                .set_item(Some(complete_marker()))
                .send()
                .await
                .map_err(|e| unavailable("PutItem", e))?;
            done.marked = true;
        }
        Ok(done)
    }

    /// Writes one entry's look-up if the entry is still as read.
    async fn index_entry(&self, table: &str, e: &Suppression) -> Result<bool, StoreError> {
        let fields = entry_fields(e);
        let mut check = ConditionCheck::builder()
            .table_name(table)
            .set_key(Some(key(e.scope.key(), entry_key(e.channel, &e.address))))
            .condition_expression("created_at = :created_at AND reason = :reason");
        for name in ["created_at", "reason"] {
            if let Some(v) = fields.get(name) {
                check = check.expression_attribute_values(format!(":{name}"), v.clone());
            }
        }
        let items = vec![
            TransactWriteItem::builder()
                .condition_check(check.build().map_err(build_error)?)
                .build(),
            TransactWriteItem::builder()
                .update(set_in_lookup(table, e)?)
                .build(),
        ];
        self.transact_retrying(items, Some(0)).await
    }
}

/// The entries among a scan's items; an item that is no entry is logged and counted.
fn readable_entries(items: &[Item], done: &mut SuppressionUpgrade) -> Vec<Suppression> {
    let mut entries = Vec::new();
    for item in items {
        match from_item(item) {
            Ok(e) => entries.push(e),
            Err(error) => {
                warn!(%error, "a suppression item that is no entry; left as it is");
                done.unreadable += 1;
            }
        }
    }
    entries
}
