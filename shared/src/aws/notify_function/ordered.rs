//! The ordered queue (FIFO): a batch's events are fanned out together and their deliveries
//! queued in the batch's order; each endpoint's deliveries are tried one after another, and a
//! try that fails moves its delivery to the retry queue.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use super::{deliver, fan_out, Batch, Entry, Next};
use crate::aws::sqs::NotifyMessage;

/// Handles the ordered queue's entries; returns those that come back.
pub(super) async fn handle(batch: &Batch<'_>, entries: Vec<Entry<'_>>) -> Vec<String> {
    let held = held_back(&entries);
    let mut kept: Vec<String> = held.iter().map(|&i| entries[i].id.clone()).collect();
    let live = || {
        entries
            .iter()
            .enumerate()
            .filter(|(i, _)| !held.contains(i))
            .map(|(_, e)| e)
    };

    let events: Vec<&Entry> = live()
        .filter(|e| matches!(e.message, Some(NotifyMessage::Event { .. })))
        .collect();
    let notices: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.message {
            Some(NotifyMessage::Event { notice }) => Some(notice),
            _ => None,
        })
        .collect();
    if let Err(e) = fan_out(batch, &notices).await {
        tracing::warn!(error = %e, events = events.len(), "events not fanned out; they come back");
        kept.extend(events.iter().map(|e| e.id.clone()));
    }

    let mut endpoints: Vec<Vec<&Entry>> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for e in live().filter(|e| matches!(e.message, Some(NotifyMessage::Delivery { .. }))) {
        let at = *index.entry(e.group.unwrap_or_default()).or_insert_with(|| {
            endpoints.push(Vec::new());
            endpoints.len() - 1
        });
        endpoints[at].push(e);
    }
    // At most ten groups (a batch's size): all at once, in a plain loop (see handle_retries).
    let mut runs = Vec::with_capacity(endpoints.len());
    for group in endpoints {
        runs.push(deliver_in_order(batch, group));
    }
    kept.extend(futures::future::join_all(runs).await.into_iter().flatten());
    kept
}

/// An unreadable entry holds its group: it and every later entry of its group come back.
fn held_back(entries: &[Entry]) -> BTreeSet<usize> {
    let mut stopped: HashSet<&str> = HashSet::new();
    let mut held = BTreeSet::new();
    for (i, e) in entries.iter().enumerate() {
        let group = e.group.unwrap_or_default();
        if e.message.is_none() || stopped.contains(group) {
            stopped.insert(group);
            held.insert(i);
        }
    }
    held
}

/// Tries that fail in a row before the rest of an endpoint's batch goes untried.
const FAILURES_IN_A_ROW: usize = 2;

/// One endpoint's deliveries, one after another. A try that fails moves to the retry queue and
/// the next is tried; after [`FAILURES_IN_A_ROW`], the rest go to the retry queue untried, so a
/// dead endpoint costs two timeouts a batch, not ten. Stops at the first it could not settle
/// (the store or SQS unreachable) or that could outlast the invocation: that one and the rest
/// come back, still in order.
async fn deliver_in_order(batch: &Batch<'_>, group: Vec<&Entry<'_>>) -> Vec<String> {
    let (mut failed, mut wait) = (0, Duration::ZERO);
    for (i, entry) in group.iter().enumerate() {
        let Some(message @ NotifyMessage::Delivery { id, tenant, .. }) = &entry.message else {
            continue;
        };
        let next = if failed >= FAILURES_IN_A_ROW {
            Ok(Next::Later(wait))
        } else if batch.out_of_time() {
            return rest(&group[i..]);
        } else {
            deliver(batch, (*id, tenant)).await
        };
        let retry_after = match next {
            Ok(Next::Done) => Ok(None),
            Ok(Next::Later(after)) => Ok(Some(after)),
            Ok(Next::GiveUp) => Ok(Some(Duration::ZERO)),
            Err(e) => Err(e),
        };
        let settled = match retry_after {
            Ok(None) => {
                failed = 0;
                Ok(())
            }
            Ok(Some(after)) => {
                (failed, wait) = (failed + 1, after);
                batch.lanes.retry_notify(message, after).await
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
