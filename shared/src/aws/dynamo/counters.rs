//! Per-tenant message counts by channel, gateway and status, for `GET /v1/stats/channels`.
//! DynamoDB cannot count, so each state change moves a count on a counter item. The moves are
//! summed in memory and written with one atomic ADD per tenant when the work ends: after each
//! API request, and once per invocation of a queue consumer (so a batch of ten messages costs
//! one write, not forty). The counters are spread over shards, because one item takes about
//! 1,000 writes a second. The ADD follows the state changes but is not part of them, so a crash
//! in between can leave counts off: these are statistics, and the messages stay the truth.

use std::collections::{BTreeMap, HashMap};

use rand::Rng;

use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};

use super::item::{opt_s, s, Item};
use super::{unavailable, DynamoStore};
use crate::domain::{Channel, MessageStatus, NewMessage, TenantId};
use crate::ports::{ChannelCount, StoreError, Transition};

const SHARDS: u64 = 8;

/// Count moves made and not written yet: tenant -> bucket -> change.
pub(crate) type PendingCounts = parking_lot::Mutex<HashMap<String, BTreeMap<String, i64>>>;
const NO_GATEWAY: &str = "none";

/// One count leaving a bucket and entering another.
pub(super) struct Move {
    tenant: String,
    from: Option<String>,
    to: Option<String>,
    /// How many messages move (more than one for a bulk part).
    n: i64,
}

fn bucket(channel: &str, gateway: Option<&str>, status: &str) -> String {
    format!("{channel}|{}|{status}", gateway.unwrap_or(NO_GATEWAY))
}

impl Move {
    pub(super) fn accepted(m: &NewMessage) -> Move {
        Move {
            tenant: m.tenant.as_str().to_owned(),
            from: None,
            to: Some(bucket(m.channel.as_str(), None, m.status.as_str())),
            n: 1,
        }
    }

    /// From the item as it was before the claim.
    pub(super) fn of_claim(seen: &Item) -> Move {
        let channel = opt_s(seen, "channel").unwrap_or_default();
        let gateway = opt_s(seen, "gateway");
        Move {
            tenant: opt_s(seen, "tenant").unwrap_or_default().to_owned(),
            from: opt_s(seen, "status").map(|st| bucket(channel, gateway, st)),
            to: Some(bucket(channel, gateway, MessageStatus::Sending.as_str())),
            n: 1,
        }
    }

    /// From the item as it was before the transition.
    pub(super) fn of_transition(old: &Item, t: &Transition) -> Move {
        let channel = opt_s(old, "channel").unwrap_or_default();
        let gateway = opt_s(old, "gateway");
        Move {
            tenant: opt_s(old, "tenant").unwrap_or_default().to_owned(),
            from: opt_s(old, "status").map(|st| bucket(channel, gateway, st)),
            to: Some(bucket(
                channel,
                t.gateway.as_deref().or(gateway),
                t.to.as_str(),
            )),
            n: 1,
        }
    }
}

fn counter_pk(tenant: &str, shard: u64) -> String {
    format!("counts#{tenant}#{shard}")
}

impl DynamoStore {
    /// Notes a move; [`DynamoStore::flush_counts`] writes it.
    pub(super) fn count(&self, mv: Move) {
        if mv.from == mv.to || mv.tenant.is_empty() {
            return;
        }
        let mut pending = self.pending_counts.lock();
        let buckets = pending.entry(mv.tenant).or_default();
        if let Some(from) = mv.from {
            *buckets.entry(from).or_default() -= mv.n;
        }
        if let Some(to) = mv.to {
            *buckets.entry(to).or_default() += mv.n;
        }
    }

    /// Writes the moves noted so far, one ADD per tenant on a shard picked at random; a failure
    /// is logged, never the caller's failure.
    pub async fn flush_counts(&self) {
        let pending: Vec<_> = self.pending_counts.lock().drain().collect();
        let Ok(table) = self.tenants_table() else {
            return;
        };
        for (tenant, buckets) in pending {
            let changed: Vec<(String, i64)> = buckets.into_iter().filter(|(_, n)| *n != 0).collect();
            if changed.is_empty() {
                continue;
            }
            let mut adds = Vec::with_capacity(changed.len());
            let mut names = HashMap::new();
            let mut values = HashMap::new();
            for (i, (bucket, n)) in changed.into_iter().enumerate() {
                adds.push(format!("#b{i} :n{i}"));
                names.insert(format!("#b{i}"), bucket);
                values.insert(format!(":n{i}"), AttributeValue::N(n.to_string()));
            }
            let shard = rand::thread_rng().gen_range(0..SHARDS);
            let result = self
                .client
                .update_item()
                .table_name(table)
                .key("pk", s(counter_pk(&tenant, shard)))
                .update_expression(format!("ADD {}", adds.join(", ")))
                .set_expression_attribute_names(Some(names))
                .set_expression_attribute_values(Some(values))
                .send()
                .await;
            if let Err(e) = result {
                tracing::warn!(error = %unavailable("UpdateItem", e), %tenant, "channel counts not updated");
            }
        }
    }

    /// Adds `n` new messages in `status` at once (one part of a bulk fan-out).
    pub(super) fn count_accepted(
        &self,
        tenant: &TenantId,
        channel: Channel,
        status: MessageStatus,
        n: usize,
    ) {
        if n == 0 {
            return;
        }
        self.count(Move {
            tenant: tenant.as_str().to_owned(),
            from: None,
            to: Some(bucket(channel.as_str(), None, status.as_str())),
            n: n as i64,
        });
    }

    pub(super) async fn read_counts(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<ChannelCount>, StoreError> {
        // This instance's own moves first, so it reads what it did.
        self.flush_counts().await;
        let table = self.tenants_table()?;
        let keys = (0..SHARDS)
            .map(|shard| HashMap::from([("pk".to_owned(), s(counter_pk(tenant.as_str(), shard)))]))
            .collect();
        let request = KeysAndAttributes::builder()
            .set_keys(Some(keys))
            .consistent_read(true)
            .build()
            .map_err(super::build_error)?;
        let out = self
            .client
            .batch_get_item()
            .request_items(table, request)
            .send()
            .await
            .map_err(|e| unavailable("BatchGetItem", e))?;
        let mut totals: BTreeMap<String, i64> = BTreeMap::new();
        for item in out
            .responses()
            .and_then(|r| r.get(table))
            .into_iter()
            .flatten()
        {
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
