//! Per-tenant message counts by channel, gateway and status, for `GET /v1/stats/channels`.
//! DynamoDB cannot count, and a counter update beside every state change would cost a write
//! unit each. So the counts follow the messages table's stream instead: the `stats` function
//! receives its changes in batches (reading a stream from Lambda costs nothing), sums the
//! moves and writes one atomic ADD per tenant and batch, on one of a few shards (an item takes
//! about 1,000 writes a second). The counts lag the messages by the batching window, and a
//! batch retried after a failed write can count twice: these are statistics, and the messages
//! stay the truth. A message deleted by TTL keeps its count, as it always has.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use rand::Rng;
use serde::Deserialize;

use super::batch::Read;
use super::item::{n, s};
use super::job_claims::QUEUED_IN_JOB;
use super::{epoch_seconds, unavailable, DynamoStore};
use crate::domain::{Channel, MessageStatus, NewMessage, TenantId};
use crate::ports::{ChannelCount, StoreError};

const SHARDS: u64 = 8;
const NO_GATEWAY: &str = "none";

/// A batch of the messages table's stream, as Lambda delivers it: only what the counts read.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamEvent {
    #[serde(rename = "Records", default)]
    pub records: Vec<StreamRecord>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StreamRecord {
    #[serde(rename = "eventName", default)]
    pub event_name: String,
    pub dynamodb: StreamChange,
}

/// Item images in DynamoDB JSON (`{"status": {"S": "sent"}}`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamChange {
    #[serde(rename = "OldImage", default)]
    pub old_image: Option<HashMap<String, serde_json::Value>>,
    #[serde(rename = "NewImage", default)]
    pub new_image: Option<HashMap<String, serde_json::Value>>,
}

type Image = HashMap<String, serde_json::Value>;

fn text<'a>(image: &'a Image, key: &str) -> Option<&'a str> {
    image.get(key)?.get("S")?.as_str()
}

/// A count's name: channel, gateway and status.
fn bucket(channel: &str, gateway: &str, status: &str) -> String {
    format!("{channel}|{gateway}|{status}")
}

/// The `queued` count of a channel (a queued message has no gateway yet).
fn queued_bucket(channel: &str) -> String {
    bucket(channel, NO_GATEWAY, MessageStatus::Queued.as_str())
}

/// The count an image of a message is in: (tenant, bucket).
fn bucket_of(image: &Image) -> Option<(&str, String)> {
    let tenant = text(image, "tenant")?;
    let channel = text(image, "channel")?;
    let status = text(image, "status")?;
    let gateway = text(image, "gateway").unwrap_or(NO_GATEWAY);
    Some((tenant, bucket(channel, gateway, status)))
}

/// The `queued` count a message's image was in before its item was written.
fn queued_bucket_of(image: &Image) -> Option<(&str, String)> {
    let tenant = text(image, "tenant")?;
    let channel = text(image, "channel")?;
    Some((tenant, queued_bucket(channel)))
}

/// The moves of a batch of changes, summed: tenant -> bucket -> change. Removals (TTL) move
/// nothing.
pub fn moves_of(event: &StreamEvent) -> HashMap<String, BTreeMap<String, i64>> {
    let mut moves: HashMap<String, BTreeMap<String, i64>> = HashMap::new();
    for record in event.records.iter().filter(|r| r.event_name != "REMOVE") {
        let to = record.dynamodb.new_image.as_ref().and_then(bucket_of);
        let from = match &record.dynamodb.old_image {
            Some(old) => bucket_of(old),
            // Created at its claim: its fan-out counted it queued.
            None => record
                .dynamodb
                .new_image
                .as_ref()
                .filter(|new| new.get(QUEUED_IN_JOB).is_some())
                .and_then(|new| queued_bucket_of(new)),
        };
        if from == to {
            continue;
        }
        for (side, change) in [(from, -1), (to, 1)] {
            if let Some((tenant, bucket)) = side {
                *moves
                    .entry(tenant.to_owned())
                    .or_default()
                    .entry(bucket)
                    .or_default() += change;
            }
        }
    }
    moves
}

fn counter_pk(tenant: &str, shard: u64) -> String {
    format!("counts#{tenant}#{shard}")
}

impl DynamoStore {
    /// Counts a batch of the messages stream: one ADD per tenant, and one per tenant and hour
    /// with sends for the throughput chart.
    pub async fn count_changes(&self, event: &StreamEvent) -> Result<(), StoreError> {
        // Boxed: inlined, the two loops' futures nest deeper than a binary's layout limit.
        Box::pin(self.count_sends(event)).await?;
        let table = self.tenants_table()?;
        for (tenant, buckets) in moves_of(event) {
            let shard = rand::thread_rng().gen_range(0..SHARDS);
            self.add_to_counts(table, counter_pk(&tenant, shard), buckets, None)
                .await?;
        }
        Ok(())
    }

    /// Counts queued the messages a fan-out left for their claims to create: their items are
    /// born `sending` (marked [`QUEUED_IN_JOB`]), which the stream counts as a move from
    /// `queued`. A failure costs the counts, not the messages.
    pub(super) async fn count_queued_in_job(
        &self,
        tenant: &TenantId,
        messages: impl Iterator<Item = &NewMessage>,
    ) {
        let mut buckets = BTreeMap::new();
        for m in messages {
            *buckets
                .entry(queued_bucket(m.channel.as_str()))
                .or_insert(0) += 1;
        }
        let shard = rand::thread_rng().gen_range(0..SHARDS);
        let pk = counter_pk(tenant.as_str(), shard);
        let added = async {
            let table = self.tenants_table()?;
            self.add_to_counts(table, pk, buckets, None).await
        }
        .await;
        if let Err(e) = added {
            tracing::warn!(%tenant, error = %e, "bulk messages left for their claims not counted");
        }
    }

    /// One atomic ADD of each non-zero count to the attribute it names, on the item `pk` of
    /// `table`, setting the item's TTL (`expires_at`) when given; nothing when all are zero.
    pub(super) async fn add_to_counts(
        &self,
        table: &str,
        pk: String,
        counts: BTreeMap<String, i64>,
        expires: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        let changed: Vec<(String, i64)> = counts.into_iter().filter(|(_, n)| *n != 0).collect();
        if changed.is_empty() {
            return Ok(());
        }
        let mut adds = Vec::with_capacity(changed.len());
        let mut names = HashMap::new();
        let mut values = HashMap::new();
        for (i, (name, count)) in changed.into_iter().enumerate() {
            adds.push(format!("#c{i} :c{i}"));
            names.insert(format!("#c{i}"), name);
            values.insert(format!(":c{i}"), AttributeValue::N(count.to_string()));
        }
        let mut update = format!("ADD {}", adds.join(", "));
        if let Some(expires) = expires {
            names.insert("#ttl".to_owned(), "expires_at".to_owned());
            values.insert(":ttl".to_owned(), n(epoch_seconds(expires)));
            update = format!("SET #ttl = :ttl {update}");
        }
        self.client
            .update_item()
            .table_name(table)
            .key("pk", s(pk))
            .update_expression(update)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .send()
            .await
            .map_err(|e| unavailable("UpdateItem", e))?;
        Ok(())
    }

    pub(super) async fn read_counts(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<ChannelCount>, StoreError> {
        let table = self.tenants_table()?;
        let keys = (0..SHARDS)
            .map(|shard| HashMap::from([("pk".to_owned(), s(counter_pk(tenant.as_str(), shard)))]))
            .collect();
        let items = self.batch_get(table, keys, None, Read::Strong).await?;
        let mut totals: BTreeMap<String, i64> = BTreeMap::new();
        for item in &items {
            for (k, v) in item {
                if let (Some(_), AttributeValue::N(count)) = (k.find('|'), v) {
                    *totals.entry(k.clone()).or_default() += count.parse::<i64>().unwrap_or(0);
                }
            }
        }
        Ok(totals
            .into_iter()
            .filter(|(_, count)| *count > 0)
            .filter_map(|(key, count)| {
                let mut parts = key.splitn(3, '|');
                let channel = Channel::parse(parts.next()?)?;
                let gateway = parts.next()?;
                let status = MessageStatus::parse(parts.next()?)?;
                Some(ChannelCount {
                    channel,
                    gateway: (gateway != NO_GATEWAY).then(|| gateway.to_owned()),
                    status,
                    count: count as u64,
                })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn image(status: &str, gateway: Option<&str>) -> serde_json::Value {
        let mut i = serde_json::json!({ "tenant": { "S": "acme" }, "channel": { "S": "email" },
                                        "status": { "S": status } });
        if let Some(g) = gateway {
            i["gateway"] = serde_json::json!({ "S": g });
        }
        i
    }

    fn acme_moves(event: &StreamEvent) -> Vec<(String, i64)> {
        moves_of(event)["acme"]
            .iter()
            .map(|(b, n)| (b.clone(), *n))
            .collect()
    }

    #[test]
    fn a_batch_of_changes_sums_to_moves() {
        let event: StreamEvent = serde_json::from_value(serde_json::json!({ "Records": [
            { "eventName": "INSERT", "dynamodb": { "NewImage": image("queued", None) } },
            { "eventName": "MODIFY", "dynamodb": { "OldImage": image("queued", None),
                                                   "NewImage": image("sending", None) } },
            { "eventName": "MODIFY", "dynamodb": { "OldImage": image("sending", None),
                                                   "NewImage": image("sent", Some("ses")) } },
            { "eventName": "MODIFY", "dynamodb": { "OldImage": image("sent", Some("ses")),
                                                   "NewImage": image("sent", Some("ses")) } },
            { "eventName": "REMOVE", "dynamodb": { "OldImage": image("sent", Some("ses")) } }
        ] }))
        .unwrap();
        let acme = acme_moves(&event);
        assert_eq!(
            acme,
            [
                ("email|none|queued".into(), 0),
                ("email|none|sending".into(), 0),
                ("email|ses|sent".into(), 1)
            ]
        );
    }

    #[test]
    fn a_message_created_at_its_claim_moves_from_the_queued_its_fan_out_counted() {
        let mut claimed = image("sending", None);
        claimed[QUEUED_IN_JOB] = serde_json::json!({ "BOOL": true });
        let mut cancelled_early = image("queued", None);
        cancelled_early[QUEUED_IN_JOB] = serde_json::json!({ "BOOL": true });
        let event: StreamEvent = serde_json::from_value(serde_json::json!({ "Records": [
            { "eventName": "INSERT", "dynamodb": { "NewImage": claimed } },
            { "eventName": "INSERT", "dynamodb": { "NewImage": cancelled_early } }
        ] }))
        .unwrap();
        let acme = acme_moves(&event);
        assert_eq!(
            acme,
            [
                ("email|none|queued".into(), -1),
                ("email|none|sending".into(), 1)
            ]
        );
    }
}
