//! Sends per minute, for the console's throughput chart. Counted by the `stats` function from
//! the messages stream as the channel counts are: per batch, one ADD per tenant and hour on
//! the item `sent#<tenant>#<YYYYMMDDHH>`, whose attributes are `<lane>@<minute>` (at most 300,
//! a few hundred bytes). The items expire by TTL after `SENT_MINUTES_KEPT_HOURS`.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Duration, DurationRound, Timelike, Utc};

use super::batch::Read;
use super::counters::{StreamEvent, StreamRecord};
use super::item::s;
use super::DynamoStore;
use crate::domain::{Priority, TenantId};
use crate::ports::{SentMinute, StoreError, SENT_MINUTES_KEPT_HOURS};

fn hour_pk(tenant: &str, hour: DateTime<Utc>) -> String {
    format!("sent#{tenant}#{}", hour.format("%Y%m%d%H"))
}

fn text<'a>(image: Option<&'a HashMap<String, serde_json::Value>>, key: &str) -> Option<&'a str> {
    image?.get(key)?.get("S")?.as_str()
}

/// A record that moved a message into `sent`: its tenant, lane and when.
fn send_of(record: &StreamRecord) -> Option<(&str, Priority, DateTime<Utc>)> {
    let new = record.dynamodb.new_image.as_ref();
    if text(new, "status")? != "sent"
        || text(record.dynamodb.old_image.as_ref(), "status") == Some("sent")
    {
        return None;
    }
    let at: i64 = new?.get("updated_at")?.get("N")?.as_str()?.parse().ok()?;
    Some((
        text(new, "tenant")?,
        Priority::parse(text(new, "priority")?)?,
        DateTime::from_timestamp_millis(at)?,
    ))
}

/// A batch's sends: (tenant, hour) -> `<lane>@<minute>` -> count.
pub fn sends_of(event: &StreamEvent) -> HashMap<(String, DateTime<Utc>), BTreeMap<String, i64>> {
    let mut sends: HashMap<(String, DateTime<Utc>), BTreeMap<String, i64>> = HashMap::new();
    for (tenant, lane, at) in event.records.iter().filter_map(send_of) {
        let Ok(hour) = at.duration_trunc(Duration::hours(1)) else {
            continue;
        };
        *sends
            .entry((tenant.to_owned(), hour))
            .or_default()
            .entry(format!("{}@{:02}", lane.as_str(), at.minute()))
            .or_default() += 1;
    }
    sends
}

impl DynamoStore {
    /// Counts a batch's sends: one ADD per tenant and hour.
    pub async fn count_sends(&self, event: &StreamEvent) -> Result<(), StoreError> {
        let table = self.tenants_table()?;
        for ((tenant, hour), minutes) in sends_of(event) {
            let expires = hour + Duration::hours(SENT_MINUTES_KEPT_HOURS + 1);
            self.add_to_counts(table, hour_pk(&tenant, hour), minutes, Some(expires))
                .await?;
        }
        Ok(())
    }

    /// One read of every hour item from `since` (at most 49, one BatchGetItem).
    pub(super) async fn read_sent_minutes(
        &self,
        tenant: &TenantId,
        since: DateTime<Utc>,
    ) -> Result<Vec<SentMinute>, StoreError> {
        let table = self.tenants_table()?;
        let now = Utc::now();
        let since = since.max(now - Duration::hours(SENT_MINUTES_KEPT_HOURS));
        let Ok(mut hour) = since.duration_trunc(Duration::hours(1)) else {
            return Ok(Vec::new());
        };
        let mut keys = Vec::new();
        while hour <= now {
            keys.push(HashMap::from([(
                "pk".to_owned(),
                s(hour_pk(tenant.as_str(), hour)),
            )]));
            hour += Duration::hours(1);
        }
        let items = self.batch_get(table, keys, None, Read::Eventual).await?;
        let mut found: Vec<SentMinute> = items
            .iter()
            .flat_map(minutes_of)
            .filter(|m| m.minute + Duration::minutes(1) > since)
            .collect();
        found.sort_by_key(|m| (m.minute, m.lane));
        Ok(found)
    }
}

/// The minutes an hour item holds.
fn minutes_of(item: &HashMap<String, AttributeValue>) -> Vec<SentMinute> {
    let hour = item
        .get("pk")
        .and_then(|pk| pk.as_s().ok())
        .and_then(|pk| pk.rsplit('#').next())
        .and_then(|h| {
            chrono::NaiveDateTime::parse_from_str(&format!("{h}0000"), "%Y%m%d%H%M%S").ok()
        })
        .map(|h| h.and_utc());
    let Some(hour) = hour else {
        return Vec::new();
    };
    item.iter()
        .filter_map(|(name, value)| {
            let (lane, minute) = name.split_once('@')?;
            let sent: u64 = value.as_n().ok()?.parse().ok()?;
            Some(SentMinute {
                minute: hour + Duration::minutes(minute.parse().ok()?),
                lane: Priority::parse(lane)?,
                sent,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn image(status: &str, at_ms: i64) -> serde_json::Value {
        serde_json::json!({ "tenant": { "S": "acme" }, "priority": { "S": "P3" },
                            "status": { "S": status }, "updated_at": { "N": at_ms.to_string() } })
    }

    #[test]
    fn moves_into_sent_are_counted_by_hour_and_minute() {
        // 2026-12-04 14:07:30 and 14:08:10 UTC.
        let (a, b) = (1_796_393_250_000_i64, 1_796_393_290_000_i64);
        let event: StreamEvent = serde_json::from_value(serde_json::json!({ "Records": [
            { "eventName": "MODIFY", "dynamodb": { "OldImage": image("sending", a),
                                                   "NewImage": image("sent", a) } },
            { "eventName": "MODIFY", "dynamodb": { "OldImage": image("sending", a),
                                                   "NewImage": image("sent", a) } },
            { "eventName": "MODIFY", "dynamodb": { "OldImage": image("sending", b),
                                                   "NewImage": image("sent", b) } },
            { "eventName": "MODIFY", "dynamodb": { "OldImage": image("sent", b),
                                                   "NewImage": image("delivered", b) } },
            { "eventName": "MODIFY", "dynamodb": { "OldImage": image("sent", b),
                                                   "NewImage": image("sent", b) } }
        ] }))
        .unwrap();
        let sends = sends_of(&event);
        assert_eq!(sends.len(), 1, "one tenant, one hour: {sends:?}");
        let ((tenant, hour), minutes) = sends.into_iter().next().unwrap();
        assert_eq!(tenant, "acme");
        assert_eq!(hour_pk(&tenant, hour), "sent#acme#2026120414");
        let minutes: Vec<(&str, i64)> = minutes.iter().map(|(m, c)| (m.as_str(), *c)).collect();
        assert_eq!(minutes, [("P3@07", 2), ("P3@08", 1)]);
    }
}
