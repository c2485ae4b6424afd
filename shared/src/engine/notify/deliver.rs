//! The notifier: writes queued events to the outbox, fans each out to the endpoints that want
//! it (one delivery per endpoint, its body fixed then), and delivers what is due, oldest first
//! per endpoint, retrying on the schedule until success, 410 Gone, or the schedule's end.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use rand::Rng;
use tokio::sync::{watch, Notify};

use super::{guard, Snapshot, REFRESH};
use crate::domain::audit::{Actor, AuditAction, AuditEntry};
use crate::domain::notify::{EndpointId, EventType, Notice, Payload, Subject, WebhookEndpoint};
use crate::domain::suppression::Scope;
use crate::engine::Herald;
use crate::ports::{Attempt, DeliveryState, Queued, WebhookDelivery, WebhookStore};

/// Outbox events fanned out per round, and due deliveries taken per round.
const ROUND: usize = 256;
/// Endpoints delivered to at once.
const PARALLEL_ENDPOINTS: usize = 16;
/// How much of an endpoint's answer is read, and how much of it is kept in the log.
const BODY_CAP: usize = 4096;
const EXCERPT: usize = 256;

/// Runs until `shutdown`: the outbox writer and the delivery loop.
pub async fn run(herald: Arc<Herald>, mut shutdown: watch::Receiver<bool>) {
    let Some(store) = herald.webhooks.clone() else {
        return;
    };
    let wake = Arc::new(Notify::new());
    if let Some(rx) = herald.outbox.rx.lock().take() {
        herald.outbox.running.store(true, Ordering::Release);
        tokio::spawn(write_outbox(store.clone(), rx, wake.clone()));
    }
    let client = guard::client(herald.config.notify.policy, herald.config.notify.timeout);
    let streaks = Streaks::default();
    loop {
        let busy = round(&herald, store.as_ref(), &client, &streaks).await;
        if *shutdown.borrow() {
            return;
        }
        if !busy {
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(herald.config.notify.poll) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Writes what the engine queued to the outbox, many events per write.
async fn write_outbox(
    store: Arc<dyn WebhookStore>,
    mut rx: tokio::sync::mpsc::Receiver<Vec<Notice>>,
    wake: Arc<Notify>,
) {
    while let Some(mut batch) = rx.recv().await {
        while batch.len() < ROUND {
            match rx.try_recv() {
                Ok(more) => batch.extend(more),
                Err(_) => break,
            }
        }
        let mut tries = 0;
        while let Err(e) = store.publish(batch.clone()).await {
            tries += 1;
            if tries == 5 {
                metrics::counter!("herald_webhook_events_dropped_total")
                    .increment(batch.len() as u64);
                tracing::error!(error = %e, events = batch.len(), "events not written to the outbox");
                break;
            }
            tokio::time::sleep(Duration::from_millis(200 * tries)).await;
        }
        wake.notify_one();
    }
}

/// Since when each endpoint has failed every delivery (`None`: its last one succeeded). The
/// notifier's own record, so a streak is not restarted by a snapshot read before it was saved.
#[derive(Default)]
struct Streaks(parking_lot::Mutex<std::collections::HashMap<EndpointId, Option<DateTime<Utc>>>>);

/// One round: fan out, then deliver what is due. True when there may be more to do now.
async fn round(
    herald: &Herald,
    store: &dyn WebhookStore,
    client: &reqwest::Client,
    streaks: &Streaks,
) -> bool {
    let Some(snapshot) = herald.refresh_subscriptions(REFRESH).await else {
        return false;
    };
    let fanned = match store.outbox(ROUND).await {
        Ok(queued) if !queued.is_empty() => fan_out(herald, store, &snapshot, queued).await,
        Ok(_) => 0,
        Err(e) => {
            tracing::warn!(error = %e, "outbox not read");
            0
        }
    };
    let due = match store.due_deliveries(Utc::now(), ROUND).await {
        Ok(due) => due,
        Err(e) => {
            tracing::warn!(error = %e, "due deliveries not read");
            Vec::new()
        }
    };
    let delivered = due.len();
    deliver_all(herald, store, client, &snapshot, due, streaks).await;
    fanned == ROUND || delivered == ROUND
}

async fn fan_out(
    herald: &Herald,
    store: &dyn WebhookStore,
    snapshot: &Snapshot,
    queued: Vec<Queued>,
) -> usize {
    let count = queued.len();
    let mut done = Vec::with_capacity(count);
    let mut deliveries = Vec::new();
    for q in queued {
        done.push(q.seq);
        let Some((tenant, data)) = payload_data(herald, &q.notice).await else {
            continue;
        };
        let payload = Payload {
            event_type: q.notice.event_type,
            timestamp: q.notice.at,
            data,
        };
        let body = serde_json::to_string(&payload).unwrap_or_default();
        for ep in snapshot.endpoints.iter().filter(|ep| {
            ep.wants(q.notice.event_type) && tenant.as_ref().is_none_or(|t| *t == ep.tenant)
        }) {
            deliveries.push(WebhookDelivery::new(
                q.notice.id,
                ep,
                q.notice.event_type,
                body.clone(),
            ));
        }
    }
    if let Err(e) = store.fan_out(done, deliveries).await {
        tracing::warn!(error = %e, "events not fanned out; tried again next round");
        return 0;
    }
    count
}

/// The payload's `data`, and whose event it is (`None`: every tenant's).
async fn payload_data(
    herald: &Herald,
    n: &Notice,
) -> Option<(Option<crate::domain::TenantId>, serde_json::Value)> {
    let (id, status, detail) = match &n.subject {
        Subject::Data { data } => return Some((n.tenant.clone(), data.clone())),
        Subject::Message { id, status, detail } => (*id, *status, detail),
    };
    let tenant = match &n.tenant {
        Some(t) => t.clone(),
        None => herald.store.owner_of(id).await.ok()??,
    };
    let mut data = serde_json::json!({
        "message_id": id,
        "status": status,
        "detail": detail,
    });
    if let Ok(Some((m, _))) = herald.store.get(&tenant, id).await {
        let fields = serde_json::json!({
            "channel": m.channel,
            "to": m.to,
            "source_type": m.source_type,
            "source_id": m.source_id,
            "external_id": m.external_id,
            "metadata": m.metadata,
            "bulk_id": m.bulk_id,
            "correlation_id": m.correlation_id,
        });
        if let (Some(d), serde_json::Value::Object(f)) = (data.as_object_mut(), fields) {
            d.extend(f);
        }
    }
    Some((Some(tenant), data))
}

/// Delivers due deliveries: endpoints side by side, each endpoint's in order.
async fn deliver_all(
    herald: &Herald,
    store: &dyn WebhookStore,
    client: &reqwest::Client,
    snapshot: &Snapshot,
    due: Vec<WebhookDelivery>,
    streaks: &Streaks,
) {
    let mut by_endpoint: BTreeMap<_, Vec<WebhookDelivery>> = BTreeMap::new();
    for d in due {
        by_endpoint.entry(d.endpoint).or_default().push(d);
    }
    futures::stream::iter(by_endpoint.into_values())
        .for_each_concurrent(PARALLEL_ENDPOINTS, |group| async move {
            let Some(ep) = group
                .first()
                .and_then(|d| snapshot.endpoints.iter().find(|e| e.id == d.endpoint))
            else {
                return;
            };
            for d in group {
                if !deliver_one(herald, store, client, ep, &d, streaks).await {
                    return;
                }
            }
        })
        .await;
}

/// What one attempt came to.
struct Answer {
    status: Option<u16>,
    excerpt: String,
}

/// One attempt, recorded. False when the endpoint was turned off by it.
async fn deliver_one(
    herald: &Herald,
    store: &dyn WebhookStore,
    client: &reqwest::Client,
    ep: &WebhookEndpoint,
    d: &WebhookDelivery,
    streaks: &Streaks,
) -> bool {
    let cfg = &herald.config.notify;
    let started = Instant::now();
    let at = Utc::now();
    let answer = attempt(client, cfg.policy, ep, d).await;
    let latency_ms = started.elapsed().as_millis() as u64;
    let n = d.attempts.len() as u32 + 1;
    let ok = answer.status.is_some_and(|s| (200..300).contains(&s));
    let gone = answer.status == Some(410);
    let retry_in = (!ok && !gone)
        .then(|| {
            cfg.retries
                .after(n, rand::thread_rng().gen_range(-0.1..=0.1))
        })
        .flatten();
    let (state, next) = match retry_in {
        _ if ok => (DeliveryState::Succeeded, None),
        Some(wait) => (
            DeliveryState::Pending,
            Some(at + chrono::Duration::from_std(wait).unwrap_or_default()),
        ),
        None => (DeliveryState::Failed, None),
    };
    let result = if ok {
        "success"
    } else if answer.status.is_some() {
        "rejected"
    } else {
        "no_answer"
    };
    metrics::counter!("herald_webhook_deliveries_total", "result" => result).increment(1);
    metrics::histogram!("herald_webhook_delivery_seconds").record(started.elapsed().as_secs_f64());
    let record = Attempt {
        attempt: n,
        at,
        status_code: answer.status,
        latency_ms,
        excerpt: answer.excerpt,
    };
    if let Err(e) = store.record_attempt(d.id, record, state, next).await {
        tracing::warn!(error = %e, delivery = %d.id, "attempt not recorded; it is made again");
    }
    note_health(herald, store, ep, ok, gone, streaks).await
}

/// POSTs the delivery, signed with every secret now signing.
async fn attempt(
    client: &reqwest::Client,
    policy: guard::AddressPolicy,
    ep: &WebhookEndpoint,
    d: &WebhookDelivery,
) -> Answer {
    let refused = |why: String| Answer {
        status: None,
        excerpt: why,
    };
    if let Err(why) = guard::check_url(&ep.url, policy) {
        return refused(format!("refused: {why}"));
    }
    let now = Utc::now();
    let id = d.event_id.to_string();
    let signatures: Vec<String> = ep
        .signing_secrets(now)
        .filter_map(|s| standardwebhooks::Webhook::new(s.expose()).ok())
        .filter_map(|w| w.sign(&id, now.timestamp(), d.payload.as_bytes()).ok())
        .collect();
    let request = client
        .post(ep.url.url().clone())
        .header("content-type", "application/json")
        .header(standardwebhooks::HEADER_WEBHOOK_ID, &id)
        .header(standardwebhooks::HEADER_WEBHOOK_TIMESTAMP, now.timestamp())
        .header(
            standardwebhooks::HEADER_WEBHOOK_SIGNATURE,
            signatures.join(" "),
        )
        .body(d.payload.clone());
    match request.send().await {
        Ok(mut response) => {
            let status = response.status().as_u16();
            let mut body = Vec::new();
            while body.len() < BODY_CAP {
                match response.chunk().await {
                    Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                    _ => break,
                }
            }
            Answer {
                status: Some(status),
                excerpt: excerpt(&body),
            }
        }
        Err(e) => refused(crate::gateway::http::describe(e)),
    }
}

/// The start of an answer, as text without control characters.
fn excerpt(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(BODY_CAP)])
        .chars()
        .filter(|c| !c.is_control() || *c == ' ')
        .take(EXCERPT)
        .collect()
}

/// Keeps the endpoint's failure streak; turns it off on 410 or after failing too long.
/// False when it was turned off.
async fn note_health(
    herald: &Herald,
    store: &dyn WebhookStore,
    ep: &WebhookEndpoint,
    ok: bool,
    gone: bool,
    streaks: &Streaks,
) -> bool {
    let now = Utc::now();
    let before = *streaks.0.lock().entry(ep.id).or_insert(ep.failing_since);
    let since = (!ok).then(|| before.unwrap_or(now));
    let too_long = since.is_some_and(|s| {
        (now - s).to_std().unwrap_or_default() >= herald.config.notify.disable_after
    });
    let disable = if gone {
        Some("the endpoint answered 410 Gone".to_owned())
    } else if too_long {
        Some(format!(
            "every delivery failed since {}",
            since.unwrap_or(now).to_rfc3339()
        ))
    } else {
        None
    };
    if since == before && disable.is_none() {
        return true;
    }
    streaks.0.lock().insert(ep.id, since);
    if let Err(e) = store
        .note_endpoint_health(&ep.tenant, ep.id, since, disable.clone())
        .await
    {
        tracing::warn!(error = %e, endpoint = %ep.id, "endpoint health not recorded");
    }
    let Some(reason) = disable else { return true };
    streaks.0.lock().remove(&ep.id);
    announce_disabled(herald, ep, &reason).await;
    false
}

async fn announce_disabled(herald: &Herald, ep: &WebhookEndpoint, reason: &str) {
    tracing::warn!(endpoint = %ep.id, tenant = %ep.tenant, reason, "webhook endpoint disabled");
    let data = serde_json::json!({
        "endpoint_id": ep.id,
        "url": ep.url.as_str(),
        "reason": reason,
    });
    let entry = AuditEntry::now(
        Scope::Tenant(ep.tenant.clone()),
        Actor::System,
        AuditAction::WebhookEndpointDisabled,
    )
    .target(ep.id.to_string())
    .detail(data.clone());
    herald.record_audit(entry).await;
    herald
        .notify(vec![Notice::new(
            Some(ep.tenant.clone()),
            EventType::WebhookEndpointDisabled,
            Subject::Data { data },
        )])
        .await;
    herald.refresh_subscriptions(Duration::ZERO).await;
}
