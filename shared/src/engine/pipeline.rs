//! The inbound pipeline: every stored inbound message goes `received -> processing ->
//! processed` (or `failed`), claimed with a lease so that one worker processes it at a time
//! and a dead worker's message is taken again. Processing announces `inbound.received`, runs
//! the tenant's rules ([`crate::domain::rules`]) and records the decision on the message.
//! Every action is safe to run twice (patches set values; the auto-reply holds its thread's
//! slot by message id and is sent with an idempotency key made from it; the events have ids
//! made from it), so a message processed again after a crash has its effects once.
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

use super::inbound_events::received_notice;
use super::media::Downloads;
use super::Herald;
use crate::domain::inbound::{InboundClaim, InboundOutcome};
use crate::domain::rules::{Decision, DecisionOutcome};
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
        let lease = self.config.inbound_lease;
        let m = match self
            .inbound
            .claim_inbound(tenant, id, lease, Utc::now())
            .await?
        {
            InboundClaim::Claimed(m) => *m,
            InboundClaim::Held => return Ok(InboundRun::Held),
            InboundClaim::Done => return Ok(InboundRun::Done),
            InboundClaim::Missing => return Ok(InboundRun::Missing),
        };
        let attempt = m.progress.attempts;
        let decided = match self.announce_received(&m, attempt >= MAX_ATTEMPTS).await {
            Err(e) => Err(e),
            // Claimed more often than it may be tried: each try before died with its worker
            // (a crash, a timeout) and this one would too.
            Ok(()) if attempt > MAX_ATTEMPTS => Err(format!(
                "gave up after {MAX_ATTEMPTS} tries that did not finish"
            )),
            Ok(()) => self.media_then_decide(&m, attempt >= MAX_ATTEMPTS).await,
        };
        let run = self.settle(&m, decided).await?;
        let label = match run {
            InboundRun::Processed => "processed",
            InboundRun::Failed => "failed",
            _ => "retry",
        };
        metrics::counter!("herald_inbound_processed_total", "result" => label).increment(1);
        Ok(run)
    }

    /// Announces `inbound.received`: from the pipeline, not when the message was stored, so a
    /// crash between the two cannot lose the event; in the outbox before the try counts as
    /// done. An outbox that fails fails the try, except the last: the message's rules, relay
    /// and replies matter more than its event, which is then counted as dropped.
    async fn announce_received(&self, m: &InboundMessage, last_try: bool) -> Result<(), String> {
        let Err(e) = self.notify_durably(vec![received_notice(m)]).await else {
            return Ok(());
        };
        if !last_try {
            return Err(failure(&e));
        }
        metrics::counter!("herald_webhook_events_dropped_total").increment(1);
        tracing::error!(tenant = %m.tenant, inbound = %m.id, error = %e, "inbound.received not announced on the last try; processing goes on without it");
        Ok(())
    }

    /// Downloads the message's media, then runs the rules. A download that failed for now
    /// fails the try (so it is tried again), unless this is the last try.
    async fn media_then_decide(
        &self,
        m: &InboundMessage,
        last_try: bool,
    ) -> Result<Decision, String> {
        match self.download_media(m, last_try).await {
            Err(e) => Err(failure(&e)),
            Ok(Downloads::Retry) => Err("media_download_failed".into()),
            Ok(Downloads::Settled) => self.route_then_decide(m).await.map_err(|e| failure(&e)),
        }
    }

    /// A text to a relay number is routed first: sent on, it is done; left for the front
    /// desk, the rules run on it as on any message, and the routing is kept beside them.
    async fn route_then_decide(&self, m: &InboundMessage) -> Result<Decision, StoreError> {
        let routed = self.relay_inbound(m).await?;
        match routed {
            Some(d) if d.outcome != DecisionOutcome::NoRule => Ok(d),
            Some(front_desk) => {
                let mut decision = self.decide(m).await?;
                decision.relay = front_desk.relay;
                Ok(decision)
            }
            None => self.decide(m).await,
        }
    }

    /// Records a try's end: processed, failed after its last try, or due again after a wait.
    async fn settle(
        &self,
        m: &InboundMessage,
        decided: Result<Decision, String>,
    ) -> Result<InboundRun, StoreError> {
        let (tenant, id, attempt) = (&m.tenant, m.id, m.progress.attempts);
        let (outcome, run) = match decided {
            Ok(decision) => (InboundOutcome::Processed(decision), InboundRun::Processed),
            Err(error) if attempt >= MAX_ATTEMPTS => {
                tracing::error!(%tenant, inbound = %id, %error, "inbound message failed");
                (InboundOutcome::Failed(error), InboundRun::Failed)
            }
            Err(error) => {
                tracing::warn!(%tenant, inbound = %id, %error, "inbound processing failed; trying again");
                let wait = chrono::Duration::seconds(2_i64.pow(attempt.min(10)));
                self.inbound
                    .retry_inbound(tenant, id, attempt, &error, Utc::now() + wait)
                    .await?;
                return Ok(InboundRun::Retry);
            }
        };
        self.inbound
            .finish_inbound(tenant, id, attempt, &outcome, Utc::now())
            .await?;
        Ok(run)
    }

    /// Processes every message waiting by now, a few at a time, each in a task of its own (a
    /// panic fails its message's try, not the worker); returns how many it processed.
    pub async fn process_pending(self: &Arc<Self>) -> Result<usize, StoreError> {
        let pending = self.inbound.pending_inbound(Utc::now(), BATCH).await?;
        let runs = futures::stream::iter(pending)
            .map(|(tenant, id)| {
                let herald = self.clone();
                tokio::spawn(async move {
                    let run = herald.process_inbound(&tenant, id).await;
                    if let Err(e) = &run {
                        tracing::warn!(%tenant, inbound = %id, error = %e, "inbound message not processed; it stays pending");
                    }
                    run
                })
            })
            .buffer_unordered(CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        let done = |r: &Result<Result<InboundRun, StoreError>, _>| {
            matches!(
                r,
                Ok(Ok(InboundRun::Processed
                    | InboundRun::Failed
                    | InboundRun::Retry))
            )
        };
        Ok(runs.iter().filter(|r| done(r)).count())
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

/// What a failed try records on the message, which its tenant reads: the kind of failure,
/// never the backend's own words (they name tables and accounts; the log has them).
fn failure(e: &StoreError) -> String {
    tracing::warn!(error = %e, "an inbound try failed");
    match e {
        StoreError::Unavailable(_) | StoreError::ShutDown => "store_unavailable".into(),
        StoreError::Corrupt(_) => "stored_data_corrupt".into(),
        StoreError::Busy(_) => "busy".into(),
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
        // Busy while whole batches get processed; messages it could not take (held, or
        // failing to claim) wait for the next wake-up or poll.
        let busy = match herald.process_pending().await {
            Ok(processed) => processed == BATCH,
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
