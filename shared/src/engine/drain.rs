//! The embedded lane workers, a batch at a time: one unit of work claims the batch, its
//! hand-offs run together, and one unit of work records their outcomes, so the writer pays a few
//! statements per batch instead of several per message. A worker records one batch's outcomes
//! while it receives and claims the next, so both go to the writer together.
//!
//! Crash window: a message handed off but not yet recorded is sent again after a kill -9 (at
//! least once). At most `workers x batch` of a lane are in that window at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio::sync::watch;
use tracing::{info_span, warn, Instrument};

use super::dispatch::{claimed_or, early, suppressions_unreadable, Disposition, ReceiptFate};
use super::suppress::suppression_note;
use super::Herald;
use crate::domain::{Message, MessageStatus, Priority};
use crate::ports::{ClaimOutcome, Delivery, StoreError, Transition, TransitionOutcome};

/// Starts every lane's workers; they stop when `shutdown` turns true.
pub fn spawn_workers(
    herald: Arc<Herald>,
    shutdown: watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut handles = Vec::new();
    for lane in Priority::ALL {
        for worker in 0..herald.config.lane(lane).workers {
            let (h, rx) = (herald.clone(), shutdown.clone());
            handles.push(tokio::spawn(
                async move { lane_worker(h, lane, rx).await }
                    .instrument(info_span!("lane", %lane, worker)),
            ));
        }
    }
    handles
}

async fn lane_worker(herald: Arc<Herald>, lane: Priority, mut shutdown: watch::Receiver<bool>) {
    let cfg = herald.config.lane(lane);
    // The batch handed off whose outcomes are not recorded yet.
    let mut in_hand: Option<Batch> = None;
    while !*shutdown.borrow() {
        // Register for a wake-up before looking, so an accept between the look and the wait is not missed.
        let notified = herald.waker(lane).notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // The last batch's outcomes are recorded while the next batch is received and claimed:
        // the two writer jobs share a group commit, so a batch waits for one commit, not two.
        // Nothing of the next batch is handed off before the last one's outcomes are in.
        let last = in_hand.take();
        let finish = async {
            if let Some(batch) = last {
                herald.finish_batch(lane, batch).await;
            }
        };
        let (received, ()) = tokio::join!(herald.receive_next(lane, cfg.batch), finish);
        let received = match received {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "receive failed; backing off");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let received = match received {
            r if r.is_empty() => herald.when_idle(lane, notified, &mut shutdown).await,
            r => Some(r),
        };
        if let Some(received) = received {
            in_hand = Some(herald.hand_off_batch(lane, received, &shutdown).await);
        }
    }
    if let Some(batch) = in_hand {
        herald.finish_batch(lane, batch).await;
    }
}

/// What a lane worker received: receipts to claim, or receipts claimed in the same unit of
/// work (the embedded store, where the queue and the messages are one database).
enum Received {
    Receipts(Vec<Delivery>),
    Claimed(Vec<(Delivery, ClaimOutcome)>),
}

impl Received {
    fn is_empty(&self) -> bool {
        match self {
            Received::Receipts(d) => d.is_empty(),
            Received::Claimed(c) => c.is_empty(),
        }
    }
}

/// A batch on its way through: what becomes of each receipt, and the outcomes to record.
#[derive(Default)]
struct Batch {
    fates: Vec<(Delivery, Disposition)>,
    outcomes: Vec<Transition>,
}

impl Herald {
    /// What an idle worker waits for: a wake-up, the idle poll or shutdown; on a priority lane
    /// of the embedded queue, also for its claim to run in the next accept's commit
    /// (`LaneQueue::receive_claimed_with_next`), whose claims it returns.
    async fn when_idle(
        &self,
        lane: Priority,
        notified: std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<Received> {
        let idle_poll = self.config.idle_poll;
        let give_up = async move {
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(idle_poll) => {}
                _ = shutdown.changed() => {}
            }
        };
        let lease = self.config.visibility_timeout;
        let batch = self.config.lane(lane).batch;
        let claimed = self
            .queue
            .receive_claimed_with_next(lane, batch, lease, Box::pin(give_up))
            .await;
        match claimed {
            Ok(claims) if claims.is_empty() => None,
            Ok(claims) => Some(Received::Claimed(claims)),
            Err(e) => {
                warn!(error = %e, "receive failed; backing off");
                tokio::time::sleep(Duration::from_secs(1)).await;
                None
            }
        }
    }

    /// The next batch of a lane; a bulk worker steps aside for the priority lanes first.
    async fn receive_next(&self, lane: Priority, max: usize) -> Result<Received, StoreError> {
        if lane.is_bulk() {
            // Step aside before claiming: a priority message accepted meanwhile goes first.
            self.priority_gate.yield_to_priority_lanes().await;
        }
        let visibility = self.config.visibility_timeout;
        let claimed = self
            .queue
            .receive_claimed(lane, max, visibility, visibility)
            .await?;
        match claimed {
            Some(claimed) => Ok(Received::Claimed(claimed)),
            None => self
                .queue
                .receive(lane, max, visibility)
                .await
                .map(Received::Receipts),
        }
    }

    /// Claims a batch and hands it off; its outcomes are for [`Herald::finish_batch`].
    async fn hand_off_batch(
        &self,
        lane: Priority,
        received: Received,
        shutdown: &watch::Receiver<bool>,
    ) -> Batch {
        // A bulk worker stepped aside before it received (`receive_next`); each hand-off steps
        // aside again below.
        let mut batch = Batch::default();
        let claimed = match received {
            Received::Receipts(deliveries) => self.claim_batch(lane, deliveries, &mut batch).await,
            Received::Claimed(claims) => self.take_claims(lane, claims, Utc::now(), &mut batch),
        };
        // Dwell counts first receipts only: a retry's wait is its back-off, not the lane's.
        let first_tries = claimed.iter().filter(|(d, _)| d.receive_count == 1);
        crate::telemetry::claimed(lane, first_tries.map(|(_, m)| due_at(m)), Utc::now());
        let to_send = self.drop_suppressed(claimed, &mut batch).await;
        if *shutdown.borrow() {
            // Stopping: hand back what was claimed and not started.
            for (d, m) in to_send {
                batch
                    .outcomes
                    .push(self.give_back(&m, json!({ "reason": "shutting down" })));
                batch.fates.push((d, Disposition::RetryIn(Duration::ZERO)));
            }
        } else {
            let sends = to_send.into_iter().map(|(d, m)| async move {
                if lane.is_bulk() {
                    // Each bulk hand-off steps aside on its own, so a priority message accepted
                    // while this batch was being claimed waits behind none of it.
                    self.priority_gate.yield_to_priority_lanes().await;
                }
                let span = info_span!("dispatch", id = %m.id, correlation_id = %m.correlation_id, attempt = m.attempts);
                (d, self.hand_off(m, None).instrument(span).await)
            });
            for (d, (disposition, outcome)) in futures::future::join_all(sends).await {
                batch.outcomes.extend(outcome);
                batch.fates.push((d, disposition));
            }
        }
        batch
    }

    /// Records a batch's outcomes and settles its receipts.
    async fn finish_batch(self: &Arc<Self>, lane: Priority, batch: Batch) {
        let finished: Vec<String> = batch
            .fates
            .iter()
            .filter(|(_, disposition)| *disposition == Disposition::Done)
            .map(|(d, _)| d.receipt.clone())
            .collect();
        let recorded = self.record_outcomes(lane, batch.outcomes, &finished).await;
        let mut done = Vec::new();
        for (d, disposition) in batch.fates {
            if disposition == Disposition::Done {
                // Not recorded: the receipt comes back after the visibility timeout, the claim's
                // lease runs out and the message is handed off again (at least once).
                if recorded == Recorded::Only {
                    done.push(d.receipt);
                }
                continue;
            }
            if self.settle_receipt(&d, disposition).await == ReceiptFate::Ack {
                done.push(d.receipt);
            }
        }
        if let Err(e) = self.queue.ack(lane, done).await {
            // Not lost: the receipts come back and their claims fail harmlessly.
            warn!(error = %e, "ack failed");
        }
    }

    /// Claims the due deliveries in one unit of work; the rest get their disposition now.
    async fn claim_batch(
        &self,
        lane: Priority,
        deliveries: Vec<Delivery>,
        batch: &mut Batch,
    ) -> Vec<(Delivery, Message)> {
        let now = Utc::now();
        let mut due = Vec::with_capacity(deliveries.len());
        for d in deliveries {
            match early(&d, now) {
                Some(early) => batch.fates.push((d, early)),
                None => due.push(d),
            }
        }
        if due.is_empty() {
            return Vec::new();
        }
        let ids = due.iter().map(|d| d.message_id).collect();
        let lease = self.config.visibility_timeout;
        let outcomes = match self.store.claim_many(ids, lane, now, lease).await {
            Ok(o) if o.len() == due.len() => o,
            Ok(_) | Err(_) => {
                warn!(%lane, "batch claim failed; the receipts come back");
                let retry = Disposition::RetryIn(Duration::from_secs(1));
                batch
                    .fates
                    .extend(due.into_iter().map(|d| (d, retry.clone())));
                return Vec::new();
            }
        };
        self.take_claims(lane, due.into_iter().zip(outcomes).collect(), now, batch)
    }

    /// The claimed messages of a batch; the receipts of the others get their disposition now.
    fn take_claims(
        &self,
        lane: Priority,
        claims: Vec<(Delivery, ClaimOutcome)>,
        now: DateTime<Utc>,
        batch: &mut Batch,
    ) -> Vec<(Delivery, Message)> {
        let mut claimed = Vec::with_capacity(claims.len());
        for (d, outcome) in claims {
            if !lane.is_bulk() && d.receive_count == 1 {
                self.priority_gate.claimed(lane);
            }
            match claimed_or(outcome, &d, now) {
                Ok(m) => claimed.push((d, *m)),
                Err(disposition) => batch.fates.push((d, disposition)),
            }
        }
        claimed
    }

    /// An entry added after accept stops the hand-off: one look-up per tenant, channel and
    /// topic.
    /// When the list cannot be read, the messages wait rather than risk a send to an address
    /// that asked for none.
    async fn drop_suppressed(
        &self,
        claimed: Vec<(Delivery, Message)>,
        batch: &mut Batch,
    ) -> Vec<(Delivery, Message)> {
        let mut groups: HashMap<_, Vec<(Delivery, Message)>> = HashMap::new();
        for (d, m) in claimed {
            groups
                .entry((m.tenant.clone(), m.channel, m.options.topic.clone()))
                .or_default()
                .push((d, m));
        }
        let mut to_send = Vec::new();
        for ((tenant, channel, topic), members) in groups {
            let to: Vec<&str> = members.iter().map(|(_, m)| m.to.as_str()).collect();
            match self
                .suppressed_for(&tenant, channel, &to, topic.as_ref())
                .await
            {
                Ok(found) => {
                    for (d, m) in members {
                        match found.get(&m.to) {
                            Some(entry) => {
                                let mut t = self.outcome(&m, MessageStatus::Suppressed);
                                t.detail = suppression_note(entry);
                                batch.outcomes.push(t);
                                batch.fates.push((d, Disposition::Done));
                            }
                            None => to_send.push((d, m)),
                        }
                    }
                }
                Err(e) => {
                    warn!(%tenant, error = %e, "suppression list unreadable; holding the messages");
                    for (d, m) in members {
                        batch
                            .outcomes
                            .push(self.give_back(&m, suppressions_unreadable()));
                        batch
                            .fates
                            .push((d, Disposition::RetryIn(Duration::from_secs(1))));
                    }
                }
            }
        }
        to_send
    }

    /// Records a batch's outcomes as one unit of work, with the receipts of its finished
    /// hand-offs where the queue can take both together.
    async fn record_outcomes(
        self: &Arc<Self>,
        lane: Priority,
        outcomes: Vec<Transition>,
        finished: &[String],
    ) -> Recorded {
        if outcomes.is_empty() {
            return Recorded::Only;
        }
        let (results, recorded) = match self.queue.record_and_ack(lane, &outcomes, finished).await {
            Ok(Some(results)) => (results, Recorded::WithReceipts),
            Ok(None) => match self.store.transition(outcomes.clone()).await {
                Ok(results) => (results, Recorded::Only),
                Err(e) => return not_recorded(outcomes.len(), e),
            },
            Err(e) => return not_recorded(outcomes.len(), e),
        };
        for (t, result) in outcomes.iter().zip(&results) {
            if let TransitionOutcome::Conflict { current } = result {
                warn!(id = %t.id, to = %t.to, %current, "outcome not recorded: the message moved on");
            }
            self.after_recorded_or_retry(t, Some(result)).await;
        }
        self.announce(&outcomes, &results).await;
        recorded
    }
}

/// Whether a batch's outcomes were recorded, and whether its finished receipts went with them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recorded {
    /// The finished receipts are still to be acknowledged.
    Only,
    WithReceipts,
    Not,
}

fn not_recorded(count: usize, e: StoreError) -> Recorded {
    warn!(count, error = %e, "outcomes not recorded");
    Recorded::Not
}

/// When a message became due: its schedule, else its accept.
pub(crate) fn due_at(m: &Message) -> DateTime<Utc> {
    m.send_at.map_or(m.created_at, |at| at.max(m.created_at))
}
