//! One delivery: claim (the hand-off point) -> gateway -> record the outcome. The embedded lane
//! workers run these steps a batch at a time (`drain`).

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::Rng;
use serde_json::json;
use tracing::{debug, info_span, warn, Instrument};

use super::suppress::suppression_note;
use super::Herald;
use crate::domain::{Message, MessageStatus};
use crate::gateway::Outcome;
use crate::ports::{
    AttemptChange, ClaimOutcome, Delivery, GatewayError, Grant, MessageRef, OutboundMessage,
    Redelivery, Transition, TransitionOutcome,
};

/// What to do with a queue receipt after handling it.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Disposition {
    /// Handled for good: remove it from the lane.
    Done,
    /// Make it visible again after this long (back-off, throttle, live claim elsewhere).
    RetryIn(Duration),
}

/// The detail of a message held because the suppression list could not be read.
pub(super) fn suppressions_unreadable() -> serde_json::Value {
    json!({ "reason": "suppression list unavailable" })
}

/// A delivery that arrived before its time (SQS delays at most 15 minutes) goes back until then.
pub(super) fn early(d: &Delivery, now: DateTime<Utc>) -> Option<Disposition> {
    let due = d.not_before.filter(|due| *due > now)?;
    Some(Disposition::RetryIn(until(due, now)))
}

/// The claimed message, or what to do with the receipt when the claim did not take.
pub(super) fn claimed_or(
    outcome: ClaimOutcome,
    d: &Delivery,
    now: DateTime<Utc>,
) -> Result<Box<Message>, Disposition> {
    match outcome {
        ClaimOutcome::Claimed(m) => Ok(m),
        // Another worker holds a live claim; look again when it runs out.
        ClaimOutcome::NotClaimable {
            lease_until: Some(t),
            ..
        } => Err(Disposition::RetryIn(until(t, now))),
        ClaimOutcome::NotClaimable { current, .. } => {
            debug!(id = %d.message_id, %current, "not claimable; dropping the receipt");
            Err(Disposition::Done)
        }
        ClaimOutcome::NotFound => Err(Disposition::Done),
    }
}

/// Where provider events were parked for a message that is past its hand-off (DynamoDB
/// flags it): the dispatch that recorded its `sent` may have stopped before it applied them.
fn parked_under(outcome: &ClaimOutcome) -> Option<(String, String)> {
    match outcome {
        ClaimOutcome::NotClaimable {
            current,
            lease_until: None,
            parked_under,
        } if !current.is_pending() && *current != MessageStatus::Sending => parked_under.clone(),
        _ => None,
    }
}

fn until(t: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (t - now).to_std().unwrap_or_default()
}

/// Whether a queue receipt is finished with (delete it) or must come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptFate {
    Ack,
    Keep,
}

impl Herald {
    /// Handles one delivery from start to end, for a consumer outside the embedded worker loop
    /// (the Lambda lane consumer): claim, hand-off, record. `Keep` leaves the receipt to come
    /// back (re-timed, or after its visibility timeout if even that failed).
    pub async fn process_delivery(&self, d: &Delivery) -> ReceiptFate {
        self.process_paced(d, None).await
    }

    /// As [`Herald::process_delivery`], with this gateway's tokens already taken.
    pub(super) async fn process_paced(&self, d: &Delivery, paced: Option<&str>) -> ReceiptFate {
        let (disposition, outcome) = self.dispatch(d, paced).await;
        if let Some(t) = outcome {
            if !self.record(t).await {
                // The claim's lease runs out and a redelivery hands it over again: at least once.
                return ReceiptFate::Keep;
            }
        }
        self.settle_receipt(d, disposition).await
    }

    pub(super) async fn settle_receipt(
        &self,
        d: &Delivery,
        disposition: Disposition,
    ) -> ReceiptFate {
        match disposition {
            Disposition::Done => ReceiptFate::Ack,
            Disposition::RetryIn(delay) => match self.queue.retry_after(d, delay).await {
                Ok(Redelivery::SameReceipt) => ReceiptFate::Keep,
                Ok(Redelivery::Requeued) => ReceiptFate::Ack,
                Err(e) => {
                    warn!(id = %d.message_id, error = %e, "could not re-time a receipt; it returns after the visibility timeout");
                    ReceiptFate::Keep
                }
            },
        }
    }

    /// Claims this delivery's message and hands it off. Returns what to do with the receipt and,
    /// for a final outcome, the transition to record.
    async fn dispatch(
        &self,
        d: &Delivery,
        paced: Option<&str>,
    ) -> (Disposition, Option<Transition>) {
        let now = Utc::now();
        if let Some(early) = early(d, now) {
            return (early, None);
        }
        let lease = self.config.visibility_timeout;
        let claim = match d.job_part {
            Some(part) => self
                .store
                .claim_from_job(d.message_id, part, d.lane, now, lease),
            None => self.store.claim(d.message_id, d.lane, now, lease),
        };
        let claimed = match claim.await {
            Ok(outcome) => {
                let parked = parked_under(&outcome);
                match claimed_or(outcome, d, now) {
                    Ok(m) => m,
                    Err(disposition) => {
                        return (self.after_refused_claim(d, parked, disposition).await, None)
                    }
                }
            }
            Err(e) => {
                warn!(id = %d.message_id, error = %e, "claim failed");
                return (Disposition::RetryIn(Duration::from_secs(1)), None);
            }
        };
        let span = info_span!("dispatch", id = %claimed.id, correlation_id = %claimed.correlation_id, attempt = claimed.attempts);
        if let Some(stop) = self.stopped_by_suppression(&claimed).await {
            return stop;
        }
        self.hand_off(*claimed, paced).instrument(span).await
    }

    /// Takes the gateway's and the recipient domain's tokens; without them the message is
    /// deferred, its attempt given back, until the buckets refill (no busy loop: the queue
    /// brings it back then).
    async fn pace(&self, m: &Message, gateway: &str) -> Option<(Disposition, Option<Transition>)> {
        let limits = &self.config.rate_limits;
        let buckets = limits.buckets_for(gateway, &m.tenant, m.channel, &m.to);
        let wait = match self
            .limiter
            .acquire(&buckets, m.priority, limits.bulk_share)
            .await
        {
            Ok(Grant::Go) => return None,
            Ok(Grant::Wait(wait)) => wait,
            Err(e) => {
                warn!(id = %m.id, error = %e, "rate limiter unavailable; deferring");
                Duration::from_secs(1)
            }
        };
        crate::telemetry::throttled(gateway);
        let keys: Vec<&str> = buckets.iter().map(|b| b.key.as_str()).collect();
        let t = self.give_back(
            m,
            json!({ "reason": "throttled", "buckets": keys, "gateway": gateway,
                                          "retry_in_ms": wait.as_millis() as u64 }),
        );
        self.record(t).await;
        Some((Disposition::RetryIn(wait), None))
    }

    /// An entry added after accept stops the hand-off. When the list cannot be read, the message
    /// waits rather than risk a send to an address that asked for none.
    async fn stopped_by_suppression(
        &self,
        m: &Message,
    ) -> Option<(Disposition, Option<Transition>)> {
        match self
            .suppressed_for(
                &m.tenant,
                m.channel,
                &[m.to.as_str()],
                m.options.topic.as_ref(),
            )
            .await
        {
            Ok(found) => {
                let entry = found.into_values().next()?;
                let mut t = self.outcome(m, MessageStatus::Suppressed);
                t.detail = suppression_note(&entry);
                Some((Disposition::Done, Some(t)))
            }
            Err(e) => {
                warn!(id = %m.id, error = %e, "suppression list unreadable; holding the message");
                self.record(self.give_back(m, suppressions_unreadable()))
                    .await;
                Some((Disposition::RetryIn(Duration::from_secs(1)), None))
            }
        }
    }

    /// Calls the gateway. Retries are recorded at once (the receipt is re-timed right after);
    /// final outcomes are returned to be settled with the worker's next claim. `paced` names
    /// the gateway whose tokens were taken before the claim.
    pub(super) async fn hand_off(
        &self,
        m: Message,
        paced: Option<&str>,
    ) -> (Disposition, Option<Transition>) {
        if self.held_by_reputation(&m).await {
            self.record(self.give_back(&m, json!({ "reason": "reputation_paused" })))
                .await;
            return (Disposition::RetryIn(self.config.pause_recheck), None);
        }
        let statuses = self.gateway_statuses().await;
        let (chosen, slot) = match self.warm_route(&m, &statuses).await {
            WarmRoute::Go(route, slot) => (route, slot),
            WarmRoute::NoGateway => {
                let mut t = self.outcome(&m, MessageStatus::Failed);
                t.last_error = Some(format!("no gateway is configured for {}", m.channel));
                return (Disposition::Done, Some(t));
            }
            WarmRoute::AllCapped(skipped) => {
                let wait = until_tomorrow();
                let detail = json!({ "reason": "warmup_caps", "gateways": skipped,
                                     "retry_in_ms": wait.as_millis() as u64 });
                self.record(self.give_back(&m, detail)).await;
                return (Disposition::RetryIn(wait), None);
            }
        };
        let gateway = chosen.gateway.clone();
        let reason = chosen.reason.clone();
        if paced != Some(gateway.name()) {
            if let Some(wait) = self.pace(&m, gateway.name()).await {
                self.warmup_give_back(gateway.name(), slot).await;
                return wait;
            }
        }
        let options = &m.options;
        let outbound = OutboundMessage {
            id: m.id,
            tenant: m.tenant.to_string(),
            channel: m.channel,
            priority: m.priority,
            to: m.to.clone(),
            from: m.from.clone(),
            content: m.content.clone(),
            attempt: m.attempts,
            correlation_id: m.correlation_id.clone(),
            unsubscribe_url: options.unsubscribe_url.clone().map(String::from),
            one_click_url: self.one_click_url(&m),
            media_urls: options
                .media_urls
                .iter()
                .cloned()
                .map(String::from)
                .collect(),
            whatsapp_template: options
                .whatsapp_template
                .as_ref()
                .and_then(|t| serde_json::to_value(t).ok()),
        };
        let started = Instant::now();
        // Through the route: its failures come back without the gateways' credentials.
        let result =
            match tokio::time::timeout(self.config.send_timeout, chosen.send(&outbound)).await {
                Ok(r) => r,
                Err(_) => Err(GatewayError::Transient(format!(
                    "no answer within {:?}",
                    self.config.send_timeout
                ))),
            };
        let latency = started.elapsed();
        let name = gateway.name().to_owned();
        let route = json!({ "gateway": name, "route_reason": reason, "attempt": m.attempts });
        if result.is_err() {
            self.warmup_give_back(gateway.name(), slot).await;
        }
        match result {
            Ok(receipt) => {
                self.observe(&chosen, Outcome::Success, latency).await;
                let first_due = (m.attempts == 1).then(|| super::drain::due_at(&m));
                crate::telemetry::handed_off(m.priority, first_due);
                let mut t = self.outcome(&m, MessageStatus::Sent);
                t.gateway = Some(name);
                t.provider_message_id = Some(receipt.provider_message_id.clone());
                t.index_provider_id = !gateway.callbacks_name_the_message();
                t.detail = with(
                    route,
                    "provider_message_id",
                    json!(receipt.provider_message_id),
                );
                t.detail["latency_ms"] = json!(latency.as_millis() as u64);
                (Disposition::Done, Some(t))
            }
            Err(GatewayError::Throttled { retry_after }) => {
                self.observe(&chosen, Outcome::Throttled, latency).await;
                let delay = retry_after.unwrap_or(Duration::from_secs(1));
                if let Some(after) = retry_after {
                    // The provider said how long: every send through it waits that long.
                    let until = Utc::now() + chrono::Duration::from_std(after).unwrap_or_default();
                    if let Err(e) = self.limiter.pause(&format!("gateway:{name}"), until).await {
                        warn!(error = %e, "gateway pause not recorded");
                    }
                }
                let mut t = self.outcome(&m, MessageStatus::Deferred);
                t.attempts = AttemptChange::GiveBack;
                t.detail = with(route, "reason", json!("throttled"));
                t.detail["retry_in_ms"] = json!(delay.as_millis() as u64);
                self.record(t).await;
                (Disposition::RetryIn(delay), None)
            }
            Err(GatewayError::Transient(error)) => {
                self.observe(&chosen, Outcome::Transient, latency).await;
                if m.attempts >= self.config.max_attempts {
                    let mut t = self.outcome(&m, MessageStatus::Failed);
                    t.last_error = Some(error.clone());
                    t.detail = with(
                        route,
                        "error",
                        json!(format!("attempts exhausted: {error}")),
                    );
                    return (Disposition::Done, Some(t));
                }
                let delay = self.backoff(m.attempts);
                let mut t = self.outcome(&m, MessageStatus::Deferred);
                t.last_error = Some(error.clone());
                t.detail = with(route, "error", json!(error));
                t.detail["retry_in_ms"] = json!(delay.as_millis() as u64);
                self.record(t).await;
                (Disposition::RetryIn(delay), None)
            }
            Err(GatewayError::Permanent { code, message }) => {
                self.observe(&chosen, Outcome::Permanent, latency).await;
                if let Some(reason) = gateway.suppression_for(&code) {
                    let target = MessageRef {
                        tenant: m.tenant.clone(),
                        channel: m.channel,
                        to: m.to.clone(),
                    };
                    self.add_suppression(&target, reason, format!("{name}:{code}"), Utc::now())
                        .await;
                }
                let mut t = self.outcome(&m, MessageStatus::Failed);
                t.last_error = Some(format!("{code}: {message}"));
                t.detail = with(route, "error", json!({ "code": code, "message": message }));
                (Disposition::Done, Some(t))
            }
        }
    }

    /// The route a send takes, past gateways whose warm-up cap for today is used up.
    async fn warm_route(
        &self,
        m: &Message,
        statuses: &std::collections::HashMap<String, crate::domain::health::GatewayStatus>,
    ) -> WarmRoute {
        let mut skipped: Vec<String> = Vec::new();
        loop {
            let Some(mut route) = self.gateways.route_without(m.channel, statuses, &skipped) else {
                return match skipped.is_empty() {
                    true => WarmRoute::NoGateway,
                    false => WarmRoute::AllCapped(skipped),
                };
            };
            let name = route.gateway.name().to_owned();
            if let Some(slot) = self.warmup_admits(&name, m).await {
                if !skipped.is_empty() {
                    route.reason =
                        format!("warm-up overflow: {} at today's cap", skipped.join(", "));
                }
                return WarmRoute::Go(route, slot);
            }
            skipped.push(name);
        }
    }

    /// A transition that only the holder of this attempt may make.
    pub(super) fn outcome(&self, m: &Message, to: MessageStatus) -> Transition {
        let mut t = Transition::new(m.id, to, Utc::now());
        t.attempt = Some(m.attempts);
        t
    }

    /// Back to `deferred` with the attempt given back: the message was held, not tried.
    pub(super) fn give_back(&self, m: &Message, detail: serde_json::Value) -> Transition {
        let mut t = self.outcome(m, MessageStatus::Deferred);
        t.attempts = AttemptChange::GiveBack;
        t.detail = detail;
        t.hold = true;
        t
    }

    /// A refused claim's receipt: applies first what is still parked for its message, if
    /// anything is (the receipt comes back later when that fails).
    async fn after_refused_claim(
        &self,
        d: &Delivery,
        parked: Option<(String, String)>,
        disposition: Disposition,
    ) -> Disposition {
        let Some((gateway, provider_id)) = parked else {
            return disposition;
        };
        match self
            .release_parked(&gateway, &provider_id, Some(d.message_id))
            .await
        {
            true => disposition,
            false => Disposition::RetryIn(self.backoff(d.receive_count)),
        }
    }

    /// Records an outcome; false when the store could not be reached, or a `sent`'s parked
    /// provider events could not be applied (the receipt's redelivery applies them).
    async fn record(&self, t: Transition) -> bool {
        let (id, to) = (t.id, t.to);
        let sent = (to == MessageStatus::Sent).then(|| t.clone());
        let batch = vec![t];
        match self.store.transition(batch.clone()).await {
            Ok(results) => {
                self.announce(&batch, &results).await;
                if let Some(TransitionOutcome::Conflict { current }) = results.first() {
                    warn!(%id, %to, %current, "outcome not recorded: the message moved on");
                }
                match &sent {
                    Some(t) => self.after_recorded(t, results.first()).await,
                    None => true,
                }
            }
            // The claim's lease runs out and the message is handed off again: at least once.
            Err(e) => {
                warn!(%id, %to, error = %e, "outcome not recorded");
                false
            }
        }
    }

    /// Exponential back-off with full jitter.
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .config
            .backoff_base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let cap = exp.min(self.config.backoff_max);
        let millis = cap.as_millis().max(1) as u64;
        Duration::from_millis(rand::thread_rng().gen_range(0..=millis))
    }
}

/// Where a send goes once warm-up caps are counted.
enum WarmRoute {
    /// The route, and the warm-up count taken for it (given back if the send does not go).
    Go(crate::gateway::Route, Option<super::warmup::WarmupSlot>),
    NoGateway,
    /// Every gateway of the channel is at today's warm-up cap: these.
    AllCapped(Vec<String>),
}

/// Until the next UTC midnight, when the caps start again.
fn until_tomorrow() -> Duration {
    let now = Utc::now();
    let midnight = (now.date_naive() + chrono::Duration::days(1))
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc());
    midnight.map_or(Duration::from_secs(3600), |t| {
        until(t, now) + Duration::from_secs(1)
    })
}

fn with(mut v: serde_json::Value, key: &str, value: serde_json::Value) -> serde_json::Value {
    v[key] = value;
    v
}
