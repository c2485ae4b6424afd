//! Gateway health on DynamoDB (`health` table, PK `pk`): per gateway per minute, outcome
//! counters (`counts#<gateway>#<minute>`, ADDed by a dispatcher at the end of an invocation
//! that saw a failure, or after 30 s of successes; TTL an hour); and one `statuses` item whose map holds each gateway's status
//! as the health checker last wrote it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};

use super::batch::Read;
use super::item::{n, opt_n, s, Item};
use super::{epoch_seconds, unavailable, DynamoStore};
use crate::domain::health::{GatewayStatus, Outcome, OutcomeCounts};
use crate::ports::{HealthStore, StoreError};

const STATUSES: &str = "statuses";
const FIELDS: [&str; 4] = ["success", "transient", "permanent", "throttled"];

/// Successes alone are written at most this often: they cannot change a gateway's state, and a
/// write per invocation would cost a write unit per P0 message. An instance that ends before
/// its next write loses its last successes, which leans the window towards failures, never
/// away from them.
const QUIET_FLUSH_EVERY: Duration = Duration::from_secs(30);

/// Outcomes recorded by this instance and not written yet, and when they were last written.
pub(crate) struct PendingOutcomes {
    counts: parking_lot::Mutex<HashMap<String, OutcomeCounts>>,
    flushed_at: parking_lot::Mutex<Instant>,
}

impl Default for PendingOutcomes {
    fn default() -> PendingOutcomes {
        PendingOutcomes {
            counts: Default::default(),
            flushed_at: parking_lot::Mutex::new(Instant::now()),
        }
    }
}

impl PendingOutcomes {
    /// What to write now: everything once a failure is among it or the quiet period is over.
    fn due(&self) -> Vec<(String, OutcomeCounts)> {
        let mut counts = self.counts.lock();
        let failing = counts
            .values()
            .any(|c| c.transient + c.permanent + c.throttled > 0);
        let mut flushed_at = self.flushed_at.lock();
        if counts.is_empty() || (!failing && flushed_at.elapsed() < QUIET_FLUSH_EVERY) {
            return Vec::new();
        }
        *flushed_at = Instant::now();
        counts.drain().collect()
    }
}

fn minute_of(t: DateTime<Utc>) -> i64 {
    t.timestamp().div_euclid(60)
}

fn counts_key(gateway: &str, minute: i64) -> String {
    format!("counts#{gateway}#{minute}")
}

fn counts_of(item: &Item) -> Result<OutcomeCounts, StoreError> {
    let get = |k: &str| -> Result<u64, StoreError> { Ok(opt_n::<u64>(item, k)?.unwrap_or(0)) };
    let mut c = OutcomeCounts {
        success: get("success")?,
        transient: get("transient")?,
        permanent: get("permanent")?,
        throttled: get("throttled")?,
        latency: [0; 12],
    };
    for (i, slot) in c.latency.iter_mut().enumerate() {
        *slot = get(&format!("l{i}"))?;
    }
    Ok(c)
}

#[async_trait]
impl HealthStore for DynamoStore {
    fn record(&self, gateway: &str, outcome: Outcome, latency: Duration) {
        self.pending_outcomes
            .counts
            .lock()
            .entry(gateway.to_owned())
            .or_default()
            .add(outcome, latency);
    }

    async fn flush(&self) -> Result<(), StoreError> {
        let pending = self.pending_outcomes.due();
        if pending.is_empty() {
            return Ok(());
        }
        let table = self.health_table()?;
        let minute = minute_of(Utc::now());
        for (gateway, c) in pending {
            let mut values: HashMap<String, AttributeValue> = HashMap::new();
            let mut adds = Vec::new();
            for (field, v) in FIELDS
                .iter()
                .zip([c.success, c.transient, c.permanent, c.throttled])
            {
                if v > 0 {
                    adds.push(format!("{field} :{field}"));
                    values.insert(format!(":{field}"), n(v));
                }
            }
            for (i, v) in c.latency.iter().enumerate().filter(|(_, v)| **v > 0) {
                adds.push(format!("l{i} :l{i}"));
                values.insert(format!(":l{i}"), n(*v));
            }
            values.insert(":exp".into(), n(epoch_seconds(Utc::now()) + 3600));
            self.client
                .update_item()
                .table_name(table)
                .key("pk", s(counts_key(&gateway, minute)))
                .update_expression(format!("ADD {} SET expires_at = :exp", adds.join(", ")))
                .set_expression_attribute_values(Some(values))
                .send()
                .await
                .map_err(|e| unavailable("UpdateItem", e))?;
        }
        Ok(())
    }

    async fn window(
        &self,
        gateway: &str,
        since: DateTime<Utc>,
    ) -> Result<OutcomeCounts, StoreError> {
        let table = self.health_table()?;
        let (first, last) = (minute_of(since), minute_of(Utc::now()));
        let keys: Vec<Item> = (first..=last)
            .rev()
            .take(60)
            .map(|m| HashMap::from([("pk".to_owned(), s(counts_key(gateway, m)))]))
            .collect();
        let mut total = OutcomeCounts::default();
        for item in self.batch_get(table, keys, None, Read::Eventual).await? {
            total.merge(&counts_of(&item)?);
        }
        Ok(total)
    }

    async fn put_status(&self, status: &GatewayStatus) -> Result<(), StoreError> {
        let json = serde_json::to_string(status)
            .map_err(|e| StoreError::Corrupt(format!("gateway status: {e}")))?;
        // One item, one map entry per gateway: writers of different gateways never collide.
        self.client
            .update_item()
            .table_name(self.health_table()?)
            .key("pk", s(STATUSES))
            .update_expression("SET #m = if_not_exists(#m, :empty)")
            .expression_attribute_names("#m", "gateways")
            .expression_attribute_values(":empty", AttributeValue::M(HashMap::new()))
            .send()
            .await
            .map_err(|e| unavailable("UpdateItem", e))?;
        self.client
            .update_item()
            .table_name(self.health_table()?)
            .key("pk", s(STATUSES))
            .update_expression("SET #m.#g = :status")
            .expression_attribute_names("#m", "gateways")
            .expression_attribute_names("#g", &status.gateway)
            .expression_attribute_values(":status", s(json))
            .send()
            .await
            .map_err(|e| unavailable("UpdateItem", e))?;
        Ok(())
    }

    async fn statuses(&self) -> Result<Vec<GatewayStatus>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(self.health_table()?)
            .key("pk", s(STATUSES))
            .send()
            .await
            .map_err(|e| unavailable("GetItem", e))?;
        let Some(AttributeValue::M(map)) = out.item.and_then(|mut i| i.remove("gateways")) else {
            return Ok(Vec::new());
        };
        map.values()
            .filter_map(|v| v.as_s().ok())
            .map(|json| {
                serde_json::from_str(json)
                    .map_err(|e| StoreError::Corrupt(format!("gateway status: {e}")))
            })
            .collect()
    }
}
