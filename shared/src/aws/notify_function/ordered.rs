//! The ordered queue (FIFO): a batch's events are fanned out together and their deliveries
//! queued in the batch's order; each endpoint's deliveries are tried one after another, and a
//! try that fails moves its delivery to the retry queue.

use std::collections::HashMap;
use std::time::Duration;

use super::{deliver, fan_out, requeued, Batch, Entry, Next};
use crate::aws::sqs::NotifyMessage;
use crate::domain::notify::Notice;

/// Tries that fail in a row before the rest of an endpoint's batch goes untried.
const FAILURES_IN_A_ROW: usize = 2;

/// Handles the ordered queue's entries; returns those that come back. An unreadable entry
/// comes back alone (for the DLQ): it could never be handled in order, so it holds up nothing.
pub(super) async fn handle(batch: &Batch<'_>, entries: Vec<Entry<'_>>) -> Vec<String> {
    let mut kept: Vec<String> = entries
        .iter()
        .filter(|e| e.message.is_none())
        .map(|e| e.id.clone())
        .collect();

    let (events, notices): (Vec<&str>, Vec<&Notice>) = entries
        .iter()
        .filter_map(|e| match &e.message {
            Some(NotifyMessage::Event { notice }) => Some((e.id.as_str(), notice)),
            _ => None,
        })
        .unzip();
    if !notices.is_empty() {
        let fanned = match batch.out_of_time() {
            true => Err("out of time".to_owned()),
            false => fan_out(batch, &notices).await.map_err(|e| e.to_string()),
        };
        if let Err(why) = fanned {
            tracing::warn!(error = %why, events = events.len(), "events not fanned out; they come back");
            kept.extend(events.iter().map(|id| id.to_string()));
        }
    }

    // Groups run at once, so their order does not matter.
    let mut endpoints: HashMap<&str, Vec<&Entry>> = HashMap::new();
    for e in entries.iter() {
        if let Some(NotifyMessage::Delivery { .. }) = e.message {
            endpoints
                .entry(e.group.unwrap_or_default())
                .or_default()
                .push(e);
        }
    }
    // At most ten groups (a batch's size): all at once, in a plain loop (see handle_retries).
    let mut runs = Vec::with_capacity(endpoints.len());
    for group in endpoints.into_values() {
        runs.push(deliver_in_order(batch, group));
    }
    kept.extend(futures::future::join_all(runs).await.into_iter().flatten());
    kept
}

/// One endpoint's deliveries, one after another. A try that fails moves to the retry queue and
/// the next is tried; after [`FAILURES_IN_A_ROW`], the rest go to the retry queue untried, so a
/// dead endpoint costs two timeouts a batch, not ten. Stops at the first it could not settle
/// (the store or SQS unreachable) or that could outlast the invocation: that one and the rest
/// come back, still in order.
async fn deliver_in_order(batch: &Batch<'_>, group: Vec<&Entry<'_>>) -> Vec<String> {
    let (mut failed, mut wait) = (0, Duration::ZERO);
    for (i, entry) in group.iter().enumerate() {
        let Some(NotifyMessage::Delivery {
            id,
            tenant,
            endpoint,
            ..
        }) = &entry.message
        else {
            continue;
        };
        // (when, the attempts recorded: none when it was not read) for one that moves.
        let next = if failed >= FAILURES_IN_A_ROW {
            Ok(Some((wait, None)))
        } else if batch.out_of_time() {
            return rest(&group[i..]);
        } else {
            deliver(batch, (*id, tenant), None)
                .await
                .map(|next| match next {
                    Next::Done => None,
                    Next::Later { wait, attempts } => Some((wait, Some(attempts))),
                    Next::Retry {
                        wait: after,
                        attempts,
                    } => {
                        (failed, wait) = (failed + 1, after);
                        Some((after, Some(attempts)))
                    }
                    Next::GiveUp => Some((Duration::ZERO, None)),
                })
        };
        let settled = match next {
            Ok(None) => {
                failed = 0;
                Ok(())
            }
            Ok(Some((after, attempts))) => {
                let moved = requeued((*id, tenant, *endpoint), attempts);
                batch.lanes.retry_notify(&moved, after).await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = settled {
            tracing::warn!(sqs_message_id = %entry.id, error = %e, "delivery not settled; it and the rest of its endpoint's come back");
            return rest(&group[i..]);
        }
    }
    Vec::new()
}

fn rest(entries: &[&Entry]) -> Vec<String> {
    entries.iter().map(|e| e.id.clone()).collect()
}
