//! Tokens for a consumer's batch before it claims anything: one conditional ADD per bucket
//! (two at a slice's edge) takes what the slice has left. The receipts that found none get
//! turns in the bucket's waiting line, `line#<bucket>#<bulk|priority>`, an item holding when
//! the line ends (ms): one ADD moves the end by the batch's share of the pace, so every
//! refused receipt comes back once, when its slice has a token for it, instead of retrying
//! every second.

use std::time::Duration;

use aws_sdk_dynamodb::types::{ReturnValue, ReturnValuesOnConditionCheckFailure};
use chrono::{DateTime, Utc};

use super::item::{get_n, ms, n, opt_n, s};
use super::limits::{slice_limit, SLICE_MS};
use super::{condition_failed, unavailable, DynamoStore};
use crate::domain::limits::BucketSpec;
use crate::domain::Priority;
use crate::ports::{Grant, StoreError};

/// How long a line's item outlives its end.
const LINE_TTL_SECS: i64 = 3600;

impl DynamoStore {
    /// The batch's grants: as many `Go` as every bucket's slice had tokens for, then a turn in
    /// the line of the bucket that ran short for each of the rest.
    pub(super) async fn take_for_batch(
        &self,
        table: &str,
        buckets: &[BucketSpec],
        lane: Priority,
        bulk_share: f64,
        want: usize,
        now: DateTime<Utc>,
    ) -> Result<Vec<Grant>, StoreError> {
        let now_ms = ms(now);
        let slice = now_ms.div_euclid(SLICE_MS);
        let slice_end = (slice + 1) * SLICE_MS;
        let mut granted = want as i64;
        let mut taken = Vec::new();
        let mut short: Option<(&BucketSpec, i64)> = None;
        for b in buckets.iter().filter(|b| !b.rate.is_unlimited()) {
            if granted == 0 {
                break;
            }
            let limit = slice_limit(b, lane, bulk_share);
            let pk = format!("slice#{}#{slice}", b.key);
            let got = self
                .take_up_to(table, &pk, limit, granted, slice_end)
                .await?;
            if got < granted {
                short = Some((b, limit));
            }
            granted = granted.min(got);
            taken.push((pk, got));
        }
        let surplus: Vec<(String, i64)> = taken
            .into_iter()
            .map(|(pk, got)| (pk, got - granted))
            .collect();
        self.give_back(table, &surplus).await;
        let mut grants = vec![Grant::Go; granted as usize];
        if let Some((b, per_slice)) = short {
            let class = if lane.is_bulk() { "bulk" } else { "priority" };
            let line = format!("line#{}#{class}", b.key);
            let refused = want - granted as usize;
            let waits = self
                .turns(table, &line, per_slice, refused, slice_end, now_ms)
                .await?;
            grants.extend(waits.into_iter().map(Grant::Wait));
        }
        Ok(grants)
    }

    /// Takes up to `want` of this slice's `limit` tokens; how many it got.
    pub(super) async fn take_up_to(
        &self,
        table: &str,
        pk: &str,
        limit: i64,
        want: i64,
        slice_end: i64,
    ) -> Result<i64, StoreError> {
        let mut want = want.min(limit);
        // The second try asks for exactly what the first said was left.
        for _ in 0..2 {
            if want <= 0 {
                return Ok(0);
            }
            let result = self
                .client
                .update_item()
                .table_name(table)
                .key("pk", s(pk))
                .update_expression("ADD #n :want SET expires_at = :exp")
                .condition_expression("attribute_not_exists(#n) OR #n <= :room")
                .expression_attribute_names("#n", "n")
                .expression_attribute_values(":want", n(want))
                .expression_attribute_values(":room", n(limit - want))
                .expression_attribute_values(":exp", n(slice_end / 1000 + LINE_TTL_SECS))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .send()
                .await;
            match result {
                Ok(_) => return Ok(want),
                Err(e) if condition_failed(&e) => {
                    use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
                    let used = match e.into_service_error() {
                        UpdateItemError::ConditionalCheckFailedException(c) => match c.item {
                            Some(item) => opt_n::<i64>(&item, "n")?.unwrap_or(0),
                            None => 0,
                        },
                        _ => limit,
                    };
                    want = limit - used;
                }
                Err(e) => return Err(unavailable("UpdateItem", e)),
            }
        }
        Ok(0)
    }

    /// `count` turns at `per_slice` a slice in a line, none before `from_ms`; as waits from
    /// `now_ms`.
    async fn turns(
        &self,
        table: &str,
        line: &str,
        per_slice: i64,
        count: usize,
        from_ms: i64,
        now_ms: i64,
    ) -> Result<Vec<Duration>, StoreError> {
        let step = SLICE_MS as f64 / per_slice.max(1) as f64;
        let span = (step * count as f64).ceil() as i64;
        let expires = from_ms / 1000 + span / 1000 + LINE_TTL_SECS;
        // A running line (it ends past `from_ms`) grows by `span`; an idle or new one starts at
        // `from_ms`. A race with another instance starting it costs a try; three settle it.
        let join = ("ADD #at :at SET expires_at = :exp", "#at >= :from", span);
        let start = (
            "SET #at = :at, expires_at = :exp",
            "attribute_not_exists(#at) OR #at < :from",
            from_ms + span,
        );
        for _ in 0..3 {
            for (update, condition, value) in [join, start] {
                let ended = self
                    .update_line(table, line, (update, condition), [value, from_ms, expires])
                    .await?;
                if let Some(end) = ended {
                    return Ok(spread(end - span, step, count, now_ms));
                }
            }
        }
        Err(StoreError::Unavailable(format!(
            "rate line {line} is contended"
        )))
    }

    /// One conditional update of a line, given `:at` (what to add, or the new end), `:from` and
    /// `:exp`; where the line now ends, or None when the condition refused it.
    async fn update_line(
        &self,
        table: &str,
        line: &str,
        (update, condition): (&str, &str),
        [at, from_ms, expires]: [i64; 3],
    ) -> Result<Option<i64>, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(table)
            .key("pk", s(line))
            .update_expression(update)
            .condition_expression(condition)
            .expression_attribute_names("#at", "at")
            .expression_attribute_values(":at", n(at))
            .expression_attribute_values(":from", n(from_ms))
            .expression_attribute_values(":exp", n(expires))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await;
        match result {
            Ok(out) => Ok(Some(get_n(&out.attributes.unwrap_or_default(), "at")?)),
            Err(e) if condition_failed(&e) => Ok(None),
            Err(e) => Err(unavailable("UpdateItem", e)),
        }
    }
}

/// Turns `step` ms apart from `start_ms`, as waits from `now_ms`.
fn spread(start_ms: i64, step: f64, count: usize, now_ms: i64) -> Vec<Duration> {
    (0..count)
        .map(|i| {
            let turn = start_ms + (step * i as f64) as i64;
            Duration::from_millis((turn - now_ms).max(0) as u64)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_keep_the_pace() {
        let waits = spread(10_000, 125.0, 9, 9_400);
        assert_eq!(waits[0], Duration::from_millis(600));
        assert_eq!(waits[8], Duration::from_millis(1_600));
        // Eight a slice: the ninth falls in the next one.
        let in_first = waits.iter().filter(|w| w.as_millis() < 1_600).count();
        assert_eq!(in_first, 8);
    }
}
