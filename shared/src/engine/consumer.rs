//! The lane consumer outside the embedded worker loop (the Lambda `dispatch` function): a batch
//! of receipts at a time, tokens taken before anything is claimed. A receipt without a token is
//! re-timed to its turn, with no write to the message: throttling costs one re-time request per
//! ten receipts, not a claim, a give-back and two timeline events each.

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use futures::future::join_all;
use tracing::{info, warn};

use super::dispatch::{early, ReceiptFate};
use super::Herald;
use crate::domain::limits::BucketSpec;
use crate::ports::{Delivery, Grant, Redelivery};

/// Receipts that take from the same buckets, and the gateway whose tokens they are.
struct PaceGroup {
    gateway: String,
    buckets: Vec<BucketSpec>,
    members: Vec<usize>,
}

/// What pacing decided for one receipt.
enum Paced {
    /// Tokens taken for this gateway (None: the entry says nothing, pace after the claim).
    Go(Option<String>),
    RetryIn(Duration),
}

impl Herald {
    /// Handles one batch of one lane's receipts; one fate per receipt, in order.
    pub async fn process_batch(&self, deliveries: &[Delivery]) -> Vec<ReceiptFate> {
        let paced = self.pace_batch(deliveries).await;
        let mut retries = Vec::new();
        let mut fates = vec![ReceiptFate::Keep; deliveries.len()];
        let mut goes = Vec::new();
        for (i, (d, p)) in deliveries.iter().zip(paced).enumerate() {
            match p {
                Paced::Go(gateway) => goes.push((i, d, gateway)),
                Paced::RetryIn(delay) => retries.push((i, (d.clone(), delay))),
            }
        }
        if !retries.is_empty() {
            // Counted here, not on the messages: a throttle leaves no trace on an item.
            info!(
                re_timed = retries.len(),
                batch = deliveries.len(),
                "receipts re-timed to their turns"
            );
        }
        let (at, retries): (Vec<usize>, Vec<(Delivery, Duration)>) = retries.into_iter().unzip();
        let sends = goes.into_iter().map(|(i, d, gateway)| async move {
            (i, self.process_paced(d, gateway.as_deref()).await)
        });
        // The re-times need not wait for the gateways' answers.
        let (sent, retimed) = tokio::join!(join_all(sends), self.queue.retry_many(&retries));
        for (i, fate) in sent {
            fates[i] = fate;
        }
        for (i, result) in at.into_iter().zip(retimed) {
            fates[i] = match result {
                Ok(Redelivery::SameReceipt) => ReceiptFate::Keep,
                Ok(Redelivery::Requeued) => ReceiptFate::Ack,
                Err(e) => {
                    warn!(error = %e, "could not re-time a throttled receipt; it returns after the visibility timeout");
                    ReceiptFate::Keep
                }
            };
        }
        fates
    }

    /// Early receipts go back until due; the rest take their buckets' tokens, a group at a time.
    async fn pace_batch(&self, deliveries: &[Delivery]) -> Vec<Paced> {
        let now = Utc::now();
        let mut paced: Vec<Paced> = Vec::with_capacity(deliveries.len());
        let mut groups: HashMap<(String, crate::domain::Priority), PaceGroup> = HashMap::new();
        let statuses = self.gateway_statuses().await;
        let limits = &self.config.rate_limits;
        for (i, d) in deliveries.iter().enumerate() {
            if let Some(super::dispatch::Disposition::RetryIn(delay)) = early(d, now) {
                paced.push(Paced::RetryIn(delay));
                continue;
            }
            paced.push(Paced::Go(None));
            let Some(pace) = &d.pace else { continue };
            let Some(gateway) = self.gateways.likely_gateway(pace.channel, &statuses) else {
                continue;
            };
            let Ok(tenant) = crate::domain::TenantId::parse(&d.tenant) else {
                continue;
            };
            let buckets = limits.buckets_of(gateway, &tenant, pace);
            let key: Vec<&str> = buckets.iter().map(|b| b.key.as_str()).collect();
            groups
                .entry((key.join("|"), d.lane))
                .or_insert_with(|| PaceGroup {
                    gateway: gateway.to_owned(),
                    buckets,
                    members: Vec::new(),
                })
                .members
                .push(i);
        }
        for ((_, lane), mut group) in groups {
            // Receipts back from their turn go first: new arrivals wait behind them.
            group
                .members
                .sort_by_key(|i| std::cmp::Reverse(deliveries[*i].receive_count));
            let grants = match self
                .limiter
                .acquire_many(&group.buckets, lane, limits.bulk_share, group.members.len())
                .await
            {
                Ok(grants) => grants,
                Err(e) => {
                    warn!(error = %e, "rate limiter unavailable; deferring the batch");
                    vec![Grant::Wait(Duration::from_secs(1)); group.members.len()]
                }
            };
            for (i, grant) in group.members.into_iter().zip(grants) {
                paced[i] = match grant {
                    Grant::Go => Paced::Go(Some(group.gateway.clone())),
                    Grant::Wait(delay) => Paced::RetryIn(delay),
                };
            }
        }
        paced
    }
}
