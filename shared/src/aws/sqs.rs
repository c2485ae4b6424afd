//! The lanes on SQS: one standard queue per priority, each with its DLQ, plus the bulk queue.
//! An entry is a small JSON reference ([`LaneRef`]), never the content. Standard queues may
//! deliver an entry twice; the claim (a conditional write) makes the second one harmless.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry,
    MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry,
};
use aws_sdk_sqs::Client;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};

use super::settings::{
    required, Queues, BULK_QUEUE_URL, LANE_QUEUE_URLS, NOTIFY_ORDERED_QUEUE_URL, NOTIFY_QUEUE_URL,
};
use crate::domain::{MessageId, Priority, TenantId};
use crate::ports::{Delivery, InboundFeed, LaneQueue, LaneRef, LaneStats, Redelivery, StoreError};

/// The inbound queue's message: which stored inbound message to process.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InboundRef {
    pub tenant: TenantId,
    pub id: MessageId,
}

/// The bulk queue's message: which job to fan out (the job itself is in DynamoDB).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BulkRef {
    pub bulk_id: String,
    pub tenant: String,
}

/// SQS takes at most 10 entries per batch call.
const BATCH: usize = 10;
/// SQS delays a message at most 15 minutes.
const MAX_DELAY: Duration = Duration::from_secs(900);
/// SQS keeps a message invisible at most 12 hours after its receive.
pub const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 3600 - 60);
const CONCURRENCY: usize = 8;

pub struct SqsLanes {
    client: Client,
    queues: Queues,
    max_receive_count: u32,
}

fn unavailable<E>(op: &str, e: E) -> StoreError
where
    E: std::error::Error + Send + Sync + 'static,
{
    StoreError::Unavailable(format!("sqs {op}: {}", DisplayErrorContext(e)))
}

/// What the notify queues carry: an event to fan out, or one delivery to attempt.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NotifyMessage {
    Event {
        notice: crate::domain::notify::Notice,
    },
    Delivery {
        id: crate::domain::notify::DeliveryId,
        tenant: crate::domain::TenantId,
        /// Its FIFO group. Absent in entries queued before deliveries were ordered.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint: Option<crate::domain::notify::EndpointId>,
        /// On the retry queue, after a try: the attempts recorded when it was queued. A copy
        /// queued twice (a crash between queueing and settling) finds more recorded and is
        /// dropped, so one delivery never has two entries trying it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attempts: Option<usize>,
    },
}

impl NotifyMessage {
    /// The FIFO group: what must stay in order. A delivery's endpoint, so an endpoint hears
    /// its events one at a time in the order they were fanned out; an event's message, so one
    /// message's events are fanned out in order without a busy tenant's events all waiting
    /// in one group (a group takes at most 3,000 entries a second).
    fn group(&self) -> String {
        use crate::domain::notify::Subject;
        match self {
            NotifyMessage::Delivery {
                endpoint: Some(ep), ..
            } => format!("endpoint:{ep}"),
            NotifyMessage::Delivery { id, .. } => format!("delivery:{id}"),
            NotifyMessage::Event { notice } => match (&notice.subject, &notice.tenant) {
                (Subject::Message { id, .. }, _) => format!("message:{id}"),
                // A bulk recipient's `message.queued` carries its payload ready-made.
                (Subject::Data { data }, tenant) => match (data["message_id"].as_str(), tenant) {
                    (Some(id), _) => format!("message:{id}"),
                    (None, Some(tenant)) => format!("tenant:{tenant}"),
                    (None, None) => "platform".to_owned(),
                },
            },
        }
    }

    /// SQS drops an entry sent again with the same id within five minutes (a publish retried
    /// after a lost answer).
    fn dedup_id(&self) -> String {
        match self {
            NotifyMessage::Event { notice } => notice.id.to_string(),
            NotifyMessage::Delivery { id, .. } => id.to_string(),
        }
    }
}

/// One entry for SendMessageBatch: a standard queue's, with its delay in seconds, or a FIFO
/// queue's, with its group and deduplication id (FIFO queues take no delay per entry).
enum Outgoing {
    Standard {
        body: String,
        delay: i32,
    },
    Fifo {
        body: String,
        group: String,
        dedup: String,
    },
}

impl Outgoing {
    fn entry(self, i: usize) -> Result<SendMessageBatchRequestEntry, StoreError> {
        let entry = SendMessageBatchRequestEntry::builder().id(i.to_string());
        let entry = match self {
            Outgoing::Standard { body, delay } => entry.message_body(body).delay_seconds(delay),
            Outgoing::Fifo { body, group, dedup } => entry
                .message_body(body)
                .message_group_id(group)
                .message_deduplication_id(dedup),
        };
        entry
            .build()
            .map_err(|e| StoreError::Unavailable(format!("sqs request: {e}")))
    }

    fn group(&self) -> Option<&str> {
        match self {
            Outgoing::Standard { .. } => None,
            Outgoing::Fifo { group, .. } => Some(group),
        }
    }
}

/// Whether every FIFO group's entries are in one chunk.
fn groups_apart(chunks: &[Vec<Outgoing>]) -> bool {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    chunks.iter().enumerate().all(|(i, chunk)| {
        chunk
            .iter()
            .filter_map(Outgoing::group)
            .all(|group| *seen.entry(group).or_insert(i) == i)
    })
}

fn notify_body(m: &NotifyMessage) -> Result<String, StoreError> {
    serde_json::to_string(m).map_err(|e| StoreError::Corrupt(format!("notify entry: {e}")))
}

/// How long SQS should hold a new entry back so it is not received before `not_before`.
fn delay_until(not_before: Option<DateTime<Utc>>, now: DateTime<Utc>) -> i32 {
    not_before
        .and_then(|at| (at - now).to_std().ok())
        .map(|d| d.min(MAX_DELAY).as_secs() as i32)
        .unwrap_or(0)
}

impl SqsLanes {
    pub fn new(client: Client, queues: Queues, max_receive_count: u32) -> SqsLanes {
        SqsLanes {
            client,
            queues,
            max_receive_count,
        }
    }

    fn lane_url(&self, lane: Priority) -> Result<&str, StoreError> {
        required(
            &self.queues.lanes[lane.index()],
            LANE_QUEUE_URLS[lane.index()],
        )
    }

    /// Puts references on their lanes (SendMessageBatch of 10), retrying entries SQS refused.
    pub async fn publish(&self, refs: Vec<LaneRef>) -> Result<(), StoreError> {
        if refs.is_empty() {
            return Ok(());
        }
        let mut by_lane: HashMap<Priority, Vec<LaneRef>> = HashMap::new();
        for r in refs {
            by_lane.entry(r.lane).or_default().push(r);
        }
        let mut calls = Vec::new();
        for (lane, refs) in &by_lane {
            let url = self.lane_url(*lane)?;
            for chunk in refs.chunks(BATCH) {
                calls.push(self.send_batch(url, chunk));
            }
        }
        futures::stream::iter(calls)
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    async fn send_batch(&self, url: &str, refs: &[LaneRef]) -> Result<(), StoreError> {
        let now = Utc::now();
        let bodies = refs
            .iter()
            .map(|r| {
                let body = serde_json::to_string(r)
                    .map_err(|e| StoreError::Corrupt(format!("lane entry: {e}")))?;
                Ok(Outgoing::Standard {
                    body,
                    delay: delay_until(r.not_before, now),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.send_bodies(url, bodies).await
    }

    /// Sends up to ten entries, retrying those SQS refused.
    async fn send_bodies(&self, url: &str, bodies: Vec<Outgoing>) -> Result<(), StoreError> {
        let mut entries: Vec<SendMessageBatchRequestEntry> = bodies
            .into_iter()
            .enumerate()
            .map(|(i, out)| out.entry(i))
            .collect::<Result<_, _>>()?;
        for attempt in 0..4u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
            }
            let out = self
                .client
                .send_message_batch()
                .queue_url(url)
                .set_entries(Some(entries.clone()))
                .send()
                .await
                .map_err(|e| unavailable("SendMessageBatch", e))?;
            let failed: Vec<&str> = out.failed().iter().map(|f| f.id()).collect();
            if failed.is_empty() {
                return Ok(());
            }
            // On a FIFO queue an entry sent again lands behind those of its group that were
            // taken: SQS refuses entries of a batch only when throttled or failing, and the
            // receivers tolerate it (a delivery's order is best effort; events are fanned out
            // by message).
            entries.retain(|e| failed.contains(&e.id()));
        }
        Err(StoreError::Unavailable(format!(
            "sqs SendMessageBatch: {} entries refused after retries",
            entries.len()
        )))
    }

    /// Puts events and new deliveries on the ordered notify queue for the `notify` function.
    /// Within one call, entries of a group keep their order: a group's entries are sent in
    /// one SendMessageBatch after another, never two at once.
    pub async fn publish_notify(&self, messages: Vec<NotifyMessage>) -> Result<(), StoreError> {
        let url = required(&self.queues.notify_ordered, NOTIFY_ORDERED_QUEUE_URL)?;
        let chunks = messages
            .chunks(BATCH)
            .map(|chunk| {
                chunk
                    .iter()
                    .map(|m| {
                        Ok(Outgoing::Fifo {
                            body: notify_body(m)?,
                            group: m.group(),
                            dedup: m.dedup_id(),
                        })
                    })
                    .collect::<Result<Vec<_>, StoreError>>()
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        // Calls at once only when no group spans two of them; otherwise one after another.
        let at_once = if groups_apart(&chunks) {
            CONCURRENCY
        } else {
            1
        };
        futures::stream::iter(chunks.into_iter().map(|c| self.send_bodies(url, c)))
            .buffered(at_once)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// Puts a delivery whose try failed on the retry queue, hidden for `wait` (at most 15
    /// minutes there; the rest is a hold when it comes back).
    pub async fn retry_notify(
        &self,
        message: &NotifyMessage,
        wait: Duration,
    ) -> Result<(), StoreError> {
        let url = required(&self.queues.notify, NOTIFY_QUEUE_URL)?;
        let entry = Outgoing::Standard {
            body: notify_body(message)?,
            delay: wait.min(MAX_DELAY).as_secs() as i32,
        };
        self.send_bodies(url, vec![entry]).await
    }

    /// Hides a notify entry for `wait` (at most 12 hours, SQS's limit): a delivery's retry.
    pub async fn hold_notify(&self, receipt: &str, wait: Duration) -> Result<(), StoreError> {
        let url = required(&self.queues.notify, NOTIFY_QUEUE_URL)?;
        let secs = wait.as_secs().clamp(0, MAX_VISIBILITY.as_secs()) as i32;
        self.client
            .change_message_visibility()
            .queue_url(url)
            .receipt_handle(receipt)
            .visibility_timeout(secs)
            .send()
            .await
            .map_err(|e| unavailable("ChangeMessageVisibility", e))?;
        Ok(())
    }

    /// Puts one JSON entry on a queue of ours (`what` names it in errors).
    async fn send_entry<T: serde::Serialize>(
        &self,
        url: (&Option<String>, &'static str),
        what: &str,
        entry: &T,
    ) -> Result<(), StoreError> {
        let url = required(url.0, url.1)?;
        let body = serde_json::to_string(entry)
            .map_err(|e| StoreError::Corrupt(format!("{what} entry: {e}")))?;
        self.client
            .send_message()
            .queue_url(url)
            .message_body(body)
            .send()
            .await
            .map_err(|e| unavailable("SendMessage", e))?;
        Ok(())
    }

    /// Puts a stored inbound message on the inbound queue for the `inbound` function.
    async fn publish_inbound(&self, r: &InboundRef) -> Result<(), StoreError> {
        let url = (&self.queues.inbound, super::settings::INBOUND_QUEUE_URL);
        self.send_entry(url, "inbound", r).await
    }

    /// Puts a stored bulk job on the bulk queue for the `enqueue` function.
    pub async fn publish_bulk(&self, job: &BulkRef) -> Result<(), StoreError> {
        self.send_entry((&self.queues.bulk, BULK_QUEUE_URL), "bulk", job)
            .await
    }

    /// Makes a bulk entry visible again at once, so a paused fan-out resumes without waiting
    /// out the bulk queue's long visibility timeout.
    pub async fn release_bulk(&self, receipt: &str) -> Result<(), StoreError> {
        let url = required(&self.queues.bulk, BULK_QUEUE_URL)?;
        self.client
            .change_message_visibility()
            .queue_url(url)
            .receipt_handle(receipt)
            .visibility_timeout(0)
            .send()
            .await
            .map_err(|e| unavailable("ChangeMessageVisibility", e))?;
        Ok(())
    }

    /// One more receive of this entry would send it to the DLQ although nothing is wrong with
    /// it (throttles, back-off, early scheduled sends): it is queued afresh instead.
    fn near_dlq(&self, delivery: &Delivery) -> bool {
        delivery.receive_count + 1 >= self.max_receive_count
    }

    /// One ChangeMessageVisibilityBatch for up to ten of `retries` (all of one lane); the
    /// entries SQS refused, by index.
    async fn change_visibility(
        &self,
        retries: &[(Delivery, Duration)],
        chunk: &[usize],
    ) -> Vec<(usize, StoreError)> {
        let all_failed = |e: StoreError| chunk.iter().map(|i| (*i, e.clone())).collect();
        let Some(first) = chunk.first() else {
            return Vec::new();
        };
        let url = match self.lane_url(retries[*first].0.lane) {
            Ok(url) => url,
            Err(e) => return all_failed(e),
        };
        let entries: Result<Vec<_>, _> = chunk
            .iter()
            .map(|i| {
                let (d, delay) = &retries[*i];
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(&d.receipt)
                    .visibility_timeout(visibility_secs(*delay))
                    .build()
            })
            .collect();
        let entries = match entries {
            Ok(entries) => entries,
            Err(e) => return all_failed(StoreError::Unavailable(format!("sqs request: {e}"))),
        };
        let sent = self
            .client
            .change_message_visibility_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await;
        match sent {
            Ok(out) => out
                .failed()
                .iter()
                .filter_map(|f| {
                    let i = f.id().parse().ok()?;
                    let e = StoreError::Unavailable(format!(
                        "ChangeMessageVisibilityBatch: {} {}",
                        f.code(),
                        f.message().unwrap_or_default()
                    ));
                    Some((i, e))
                })
                .collect(),
            Err(e) => all_failed(unavailable("ChangeMessageVisibilityBatch", e)),
        }
    }

    /// Reads one received SQS message as a delivery; `None` for a body that is not a lane entry.
    pub fn delivery_of(receipt: String, body: &str, receive_count: u32) -> Option<Delivery> {
        let r: LaneRef = serde_json::from_str(body).ok()?;
        Some(Delivery {
            receipt,
            message_id: r.id,
            tenant: r.tenant,
            lane: r.lane,
            receive_count,
            not_before: r.not_before,
            pace: r.pace,
            job_part: r.job_part,
        })
    }
}

#[async_trait]
impl LaneQueue for SqsLanes {
    async fn receive(
        &self,
        lane: Priority,
        max: usize,
        visibility: Duration,
    ) -> Result<Vec<Delivery>, StoreError> {
        let url = self.lane_url(lane)?;
        let mut out = Vec::new();
        while out.len() < max {
            let want = (max - out.len()).min(BATCH) as i32;
            let got = self
                .client
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(want)
                .visibility_timeout(visibility.as_secs().max(1) as i32)
                .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
                .send()
                .await
                .map_err(|e| unavailable("ReceiveMessage", e))?;
            let messages = got.messages.unwrap_or_default();
            if messages.is_empty() {
                break;
            }
            for m in messages {
                let count = m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1);
                let (Some(receipt), Some(body)) = (m.receipt_handle, m.body) else {
                    continue;
                };
                match SqsLanes::delivery_of(receipt.clone(), &body, count) {
                    Some(d) => out.push(d),
                    // Not ours to read: left alone, it reaches the DLQ after maxReceiveCount.
                    None => tracing::warn!(%lane, "unreadable lane entry left for the DLQ"),
                }
            }
        }
        Ok(out)
    }

    async fn ack(&self, lane: Priority, receipts: Vec<String>) -> Result<(), StoreError> {
        let url = self.lane_url(lane)?;
        for chunk in receipts.chunks(BATCH) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(r)
                        .build()
                        .map_err(|e| StoreError::Unavailable(format!("sqs request: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            self.client
                .delete_message_batch()
                .queue_url(url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| unavailable("DeleteMessageBatch", e))?;
        }
        Ok(())
    }

    async fn retry_after(
        &self,
        delivery: &Delivery,
        delay: Duration,
    ) -> Result<Redelivery, StoreError> {
        if self.near_dlq(delivery) {
            self.publish(vec![afresh(delivery, delay)]).await?;
            return Ok(Redelivery::Requeued);
        }
        self.client
            .change_message_visibility()
            .queue_url(self.lane_url(delivery.lane)?)
            .receipt_handle(&delivery.receipt)
            .visibility_timeout(visibility_secs(delay))
            .send()
            .await
            .map_err(|e| unavailable("ChangeMessageVisibility", e))?;
        Ok(Redelivery::SameReceipt)
    }

    /// Re-times up to ten receipts per ChangeMessageVisibilityBatch; those near the DLQ are
    /// queued afresh together.
    async fn retry_many(
        &self,
        retries: &[(Delivery, Duration)],
    ) -> Vec<Result<Redelivery, StoreError>> {
        let (afresh_ones, retimed): (Vec<usize>, Vec<usize>) =
            (0..retries.len()).partition(|i| self.near_dlq(&retries[*i].0));
        let mut out: Vec<Result<Redelivery, StoreError>> = (0..retries.len())
            .map(|_| Ok(Redelivery::SameReceipt))
            .collect();
        let refs = afresh_ones
            .iter()
            .map(|i| afresh(&retries[*i].0, retries[*i].1));
        let published = self.publish(refs.collect()).await;
        for i in afresh_ones {
            out[i] = published.clone().map(|()| Redelivery::Requeued);
        }
        for chunk in retimed.chunks(BATCH) {
            let failed = self.change_visibility(retries, chunk).await;
            for (i, e) in failed {
                out[i] = Err(e);
            }
        }
        out
    }

    fn stats_per_tenant(&self) -> bool {
        false
    }

    async fn stats(
        &self,
        _now: DateTime<Utc>,
        _tenant: Option<&TenantId>,
    ) -> Result<Vec<LaneStats>, StoreError> {
        let mut stats = Vec::new();
        for lane in Priority::ALL {
            let Some(url) = &self.queues.lanes[lane.index()] else {
                continue;
            };
            let out = self
                .client
                .get_queue_attributes()
                .queue_url(url)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
                .send()
                .await
                .map_err(|e| unavailable("GetQueueAttributes", e))?;
            let attr = |name: QueueAttributeName| -> u64 {
                out.attributes()
                    .and_then(|a| a.get(&name))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            };
            let visible = attr(QueueAttributeName::ApproximateNumberOfMessages);
            let delayed = attr(QueueAttributeName::ApproximateNumberOfMessagesDelayed);
            stats.push(LaneStats {
                lane,
                depth: visible + delayed,
                in_flight: attr(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
                oldest_age_seconds: None,
                delayed,
            });
        }
        Ok(stats)
    }
}

/// A fresh lane entry for a receipt that must come back after `delay`.
fn afresh(delivery: &Delivery, delay: Duration) -> LaneRef {
    let not_before = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
    LaneRef {
        id: delivery.message_id,
        tenant: delivery.tenant.clone(),
        lane: delivery.lane,
        attempt: 0,
        not_before: Some(not_before.max(delivery.not_before.unwrap_or(not_before))),
        correlation_id: None,
        pace: delivery.pace.clone(),
        // Until claimed, its message is still only in its job.
        job_part: delivery.job_part,
    }
}

/// SQS takes whole seconds: rounded to the nearest, so receipts spread over a second come back
/// spread around it rather than all late.
fn visibility_secs(delay: Duration) -> i32 {
    (delay.min(MAX_VISIBILITY).as_millis() as i64 + 500).div_euclid(1000) as i32
}

#[async_trait::async_trait]
impl InboundFeed for SqsLanes {
    async fn announce(&self, tenant: &TenantId, id: MessageId) -> Result<(), StoreError> {
        self.publish_inbound(&InboundRef {
            tenant: tenant.clone(),
            id,
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::limits::PaceKey;
    use crate::domain::Channel;

    #[test]
    fn delays_are_capped_at_fifteen_minutes() {
        let now = Utc::now();
        assert_eq!(delay_until(None, now), 0);
        assert_eq!(
            delay_until(Some(now - chrono::Duration::seconds(5)), now),
            0
        );
        assert_eq!(
            delay_until(Some(now + chrono::Duration::seconds(90)), now),
            90
        );
        assert_eq!(
            delay_until(Some(now + chrono::Duration::hours(3)), now),
            900
        );
    }

    #[test]
    fn a_messages_events_share_a_group_and_an_endpoints_deliveries_another() {
        use crate::domain::notify::{DeliveryId, EndpointId, EventType, Notice, Subject};
        let message = crate::domain::MessageId::new();
        let event = |t| NotifyMessage::Event {
            notice: Notice::new(
                Some(TenantId::parse("acme").expect("tenant")),
                t,
                Subject::Message {
                    id: message,
                    status: crate::domain::MessageStatus::Queued,
                    detail: serde_json::Value::Null,
                },
            ),
        };
        let (queued, sent) = (
            event(EventType::MessageQueued),
            event(EventType::MessageSent),
        );
        assert_eq!(queued.group(), format!("message:{message}"));
        assert_eq!(queued.group(), sent.group());
        assert_ne!(queued.dedup_id(), sent.dedup_id());

        let endpoint = EndpointId::new();
        let delivery = |endpoint| NotifyMessage::Delivery {
            id: DeliveryId::new(),
            tenant: TenantId::parse("acme").expect("tenant"),
            endpoint,
            attempts: None,
        };
        let (a, b) = (delivery(Some(endpoint)), delivery(Some(endpoint)));
        assert_eq!(a.group(), format!("endpoint:{endpoint}"));
        assert_eq!(a.group(), b.group());
        // An entry queued before deliveries had groups is its own.
        assert_ne!(delivery(None).group(), delivery(None).group());

        let entry = |m: &NotifyMessage| Outgoing::Fifo {
            body: String::new(),
            group: m.group(),
            dedup: m.dedup_id(),
        };
        assert!(groups_apart(&[
            vec![entry(&a), entry(&b)],
            vec![entry(&queued)]
        ]));
        assert!(!groups_apart(&[vec![entry(&a)], vec![entry(&b)]]));
    }

    #[test]
    fn lane_entries_are_small_references() {
        let r = LaneRef {
            id: crate::domain::MessageId::new(),
            tenant: "acme".into(),
            lane: Priority::P0,
            attempt: 0,
            not_before: None,
            correlation_id: Some("c-1".into()),
            pace: Some(PaceKey::of(Channel::Email, "ann@googlemail.com")),
            job_part: Some(3),
        };
        let body = serde_json::to_string(&r).unwrap();
        assert!(body.len() < 200, "{body}");
        let d = SqsLanes::delivery_of("rh".into(), &body, 2).unwrap();
        assert_eq!(
            (d.message_id, d.lane, d.receive_count, d.job_part),
            (r.id, Priority::P0, 2, Some(3))
        );
        // The recipient's address stays out of the queue; its domain group travels.
        assert!(!body.contains("ann@"), "{body}");
        assert_eq!(d.pace.and_then(|p| p.domain).as_deref(), Some("gmail"));
        assert!(SqsLanes::delivery_of("rh".into(), "{\"poison\":true}", 1).is_none());
    }
}
