//! The inbound pipeline: every stored inbound message goes `received -> processing ->
//! processed` (or `failed`), claimed with a lease so that one worker processes it at a time
//! and a dead worker's message is taken again. Processing runs the tenant's rules
//! ([`crate::domain::rules`]) and records the decision on the message. Every action is safe
//! to run twice (patches set values; the auto-reply holds its thread's slot by message id and
//! is sent with an idempotency key made from it; `inbound.matched` has an id made from it),
//! so a message processed again after a crash has its effects once.
//!
//! Embedded, [`run`] is woken by [`LocalFeed`] as soon as a message is stored and also polls;
//! on AWS the `inbound` function takes the queue the feed writes to, and the health checker
//! announces again what waits too long ([`Herald::announce_pending`]).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use futures::StreamExt;
use tokio::sync::{watch, Notify};

use super::Herald;
use crate::domain::inbound::{InboundClaim, InboundOutcome};
use crate::domain::{InboundMessage, MessageId, TenantId};
use crate::ports::{InboundFeed, StoreError};

/// How long a claim holds a message by default: longer than processing takes, short enough
/// that a dead worker's message waits little.
pub const LEASE: Duration = Duration::from_secs(30);
/// Tries before a message is `failed`.
pub const MAX_ATTEMPTS: u32 = 5;
/// Messages processed at once by the embedded worker.
const CONCURRENCY: usize = 4;
/// Messages read per look.
const BATCH: usize = 64;
/// How often the embedded worker looks without being woken.
const POLL: Duration = Duration::from_secs(1);

/// What processing a message came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboundRun {
    Processed,
    /// Its last try failed: recorded as `failed`.
    Failed,
    /// This try failed; it waits for the next.
    Retry,
    /// Another worker holds it, or its retry time has not come.
    Held,
    /// It was finished before.
    Done,
    Missing,
}

impl Herald {
    /// Claims a message and processes it, once.
    pub async fn process_inbound(
        &self,
        tenant: &TenantId,
        id: MessageId,
    ) -> Result<InboundRun, StoreError> {
        let now = Utc::now();
        let lease = self.config.inbound_lease;
        let m = match self.inbound.claim_inbound(tenant, id, lease, now).await? {
            InboundClaim::Claimed(m) => *m,
            InboundClaim::Held => return Ok(InboundRun::Held),
            InboundClaim::Done => return Ok(InboundRun::Done),
            InboundClaim::Missing => return Ok(InboundRun::Missing),
        };
        let run = match self.decide(&m).await {
            Ok(decision) => {
                let outcome = InboundOutcome::Processed(decision);
                self.inbound
                    .finish_inbound(tenant, id, &outcome, Utc::now())
                    .await?;
                InboundRun::Processed
            }
            Err(e) if m.progress.attempts >= MAX_ATTEMPTS => {
                tracing::error!(%tenant, inbound = %id, error = %e, "inbound message failed");
                let outcome = InboundOutcome::Failed(e.to_string());
                self.inbound
                    .finish_inbound(tenant, id, &outcome, Utc::now())
                    .await?;
                InboundRun::Failed
            }
            Err(e) => {
                tracing::warn!(%tenant, inbound = %id, error = %e, "inbound processing failed; trying again");
                let wait = chrono::Duration::seconds(2_i64.pow(m.progress.attempts.min(10)));
                self.inbound
                    .retry_inbound(tenant, id, &e.to_string(), Utc::now() + wait)
                    .await?;
                InboundRun::Retry
            }
        };
        let label = match run {
            InboundRun::Processed => "processed",
            InboundRun::Failed => "failed",
            _ => "retry",
        };
        metrics::counter!("herald_inbound_processed_total", "result" => label).increment(1);
        Ok(run)
    }

    /// Processes every message waiting by now, a few at a time; returns how many it took.
    pub async fn process_pending(&self) -> Result<usize, StoreError> {
        let pending = self.inbound.pending_inbound(Utc::now(), BATCH).await?;
        let taken = pending.len();
        futures::stream::iter(pending)
            .for_each_concurrent(CONCURRENCY, |(tenant, id)| async move {
                if let Err(e) = self.process_inbound(&tenant, id).await {
                    tracing::warn!(%tenant, inbound = %id, error = %e, "inbound message not processed; it stays pending");
                }
            })
            .await;
        Ok(taken)
    }

    /// Announces again the messages that waited longer than `grace` (their announcement was
    /// lost, or their worker died): the AWS sweep. Returns how many.
    pub async fn announce_pending(&self, grace: Duration) -> Result<usize, StoreError> {
        let before = Utc::now() - chrono::Duration::from_std(grace).unwrap_or_default();
        let pending = self.inbound.pending_inbound(before, BATCH * 4).await?;
        for (tenant, id) in &pending {
            self.inbound_feed.announce(tenant, *id).await?;
        }
        if !pending.is_empty() {
            tracing::warn!(count = pending.len(), "inbound messages announced again");
        }
        Ok(pending.len())
    }

    /// Tells the workers about a message just stored. A failure is logged: the sweep finds it.
    pub(crate) async fn announce_inbound(&self, m: &InboundMessage) {
        if let Err(e) = self.inbound_feed.announce(&m.tenant, m.id).await {
            tracing::warn!(tenant = %m.tenant, inbound = %m.id, error = %e, "inbound message not announced; the sweep will find it");
        }
    }
}

/// The embedded feed: wakes [`run`].
pub struct LocalFeed(pub Arc<Notify>);

#[async_trait]
impl InboundFeed for LocalFeed {
    async fn announce(&self, _: &TenantId, _: MessageId) -> Result<(), StoreError> {
        self.0.notify_one();
        Ok(())
    }
}

/// The embedded worker, until shutdown: processes what is pending whenever woken, and every
/// [`POLL`] (retries come due, a lease ends).
pub async fn run(herald: Arc<Herald>, wake: Arc<Notify>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let busy = match herald.process_pending().await {
            Ok(taken) => taken == BATCH,
            Err(e) => {
                tracing::warn!(error = %e, "inbound sweep failed; trying again");
                false
            }
        };
        if busy {
            continue;
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
            _ = shutdown.changed() => return,
        }
    }
}
