//! Warm-up counters and state on DynamoDB, in the rate limits table beside the limiter's
//! buckets: an item per gateway, day and provider group (`warmup#<gateway>#<day>#<group>`),
//! counted by a conditional `ADD` (`sends < :cap`), so the cap holds across every dispatcher;
//! bounces and complaints under the group `*`; the state in `warmup-state#<gateway>`, replaced
//! on the day it was judged. Day items expire after 40 days.

use async_trait::async_trait;
use std::collections::HashMap;

use chrono::NaiveDate;

use super::batch::Read;
use super::item::{n, opt_n, opt_s, s};
use super::{condition_failed, unavailable, DynamoStore};
use crate::domain::deliverability::warmup::{DayTally, WarmupState, ALL_GROUPS, PROVIDER_GROUPS};
use crate::ports::{StoreError, WarmupStore};

const OUTCOMES: &str = "*";
const KEEP_DAYS: i64 = 40;

fn day_pk(gateway: &str, day: NaiveDate, group: &str) -> String {
    format!("warmup#{gateway}#{}#{group}", day.format("%Y-%m-%d"))
}

fn state_pk(gateway: &str) -> String {
    format!("warmup-state#{gateway}")
}

fn expires(day: NaiveDate) -> i64 {
    day.and_hms_opt(0, 0, 0)
        .map_or(0, |t| t.and_utc().timestamp() + KEEP_DAYS * 86_400)
}

#[async_trait]
impl WarmupStore for DynamoStore {
    async fn take(
        &self,
        gateway: &str,
        day: NaiveDate,
        group: &str,
        cap: u64,
    ) -> Result<bool, StoreError> {
        if cap == 0 {
            return Ok(false);
        }
        let result = self
            .client
            .update_item()
            .table_name(self.rate_limits_table()?)
            .key("pk", s(day_pk(gateway, day, group)))
            .update_expression("ADD sends :one SET expires_at = :exp")
            .condition_expression("attribute_not_exists(sends) OR sends < :cap")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":cap", n(cap))
            .expression_attribute_values(":exp", n(expires(day)))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if condition_failed(&e) => Ok(false),
            Err(e) => Err(unavailable("UpdateItem", e)),
        }
    }

    async fn untake(&self, gateway: &str, day: NaiveDate, group: &str) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(self.rate_limits_table()?)
            .key("pk", s(day_pk(gateway, day, group)))
            .update_expression("ADD sends :minus")
            .condition_expression("sends > :zero")
            .expression_attribute_values(":minus", n(-1))
            .expression_attribute_values(":zero", n(0))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if condition_failed(&e) => Ok(()),
            Err(e) => Err(unavailable("UpdateItem", e)),
        }
    }

    async fn note(
        &self,
        gateway: &str,
        day: NaiveDate,
        bounces: u64,
        complaints: u64,
    ) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(self.rate_limits_table()?)
            .key("pk", s(day_pk(gateway, day, OUTCOMES)))
            .update_expression("ADD bounces :b, complaints :c SET expires_at = :exp")
            .expression_attribute_values(":b", n(bounces))
            .expression_attribute_values(":c", n(complaints))
            .expression_attribute_values(":exp", n(expires(day)))
            .send()
            .await
            .map_err(|e| unavailable("UpdateItem", e))?;
        Ok(())
    }

    /// One `BatchGetItem` of the day's items: every group a schedule may use, and the outcomes.
    async fn day(&self, gateway: &str, day: NaiveDate) -> Result<DayTally, StoreError> {
        let table = self.rate_limits_table()?;
        let groups = PROVIDER_GROUPS.iter().chain([&ALL_GROUPS, &OUTCOMES]);
        let keys = groups
            .map(|g| HashMap::from([("pk".to_owned(), s(day_pk(gateway, day, g)))]))
            .collect();
        let items = self.batch_get(table, keys, None, Read::Strong).await?;
        let mut tally = DayTally::default();
        for item in items {
            tally.sends += opt_n::<u64>(&item, "sends")?.unwrap_or(0);
            tally.bounces += opt_n::<u64>(&item, "bounces")?.unwrap_or(0);
            tally.complaints += opt_n::<u64>(&item, "complaints")?.unwrap_or(0);
        }
        Ok(tally)
    }

    async fn state(&self, gateway: &str) -> Result<Option<WarmupState>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(self.rate_limits_table()?)
            .key("pk", s(state_pk(gateway)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("GetItem", e))?;
        let Some(raw) = out.item.as_ref().and_then(|i| opt_s(i, "state")) else {
            return Ok(None);
        };
        serde_json::from_str(raw)
            .map(Some)
            .map_err(|e| StoreError::Corrupt(format!("warm-up state: {e}")))
    }

    async fn put_state(
        &self,
        gateway: &str,
        state: &WarmupState,
        was: Option<NaiveDate>,
    ) -> Result<bool, StoreError> {
        let raw = serde_json::to_string(state).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let put = self
            .client
            .put_item()
            .table_name(self.rate_limits_table()?)
            .item("pk", s(state_pk(gateway)))
            .item("state", s(raw))
            .item("judged_on", s(state.judged_on.to_string()));
        let put = match was {
            None => put.condition_expression("attribute_not_exists(pk)"),
            Some(day) => put
                .condition_expression("judged_on = :was")
                .expression_attribute_values(":was", s(day.to_string())),
        };
        match put.send().await {
            Ok(_) => Ok(true),
            Err(e) if condition_failed(&e) => Ok(false),
            Err(e) => Err(unavailable("PutItem", e)),
        }
    }
}
