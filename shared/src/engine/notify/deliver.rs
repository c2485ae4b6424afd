//! Delivering one event to one endpoint: the body fixed at fan-out, signed per the Standard
//! Webhooks specification with every secret now signing, POSTed through the address guard,
//! and the attempt recorded with the endpoint's failure streak (410 or too long a streak turns
//! it off). The embedded runner and the `notify` function both deliver through [`Notifier`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::Rng;

use super::{guard, Snapshot};
use crate::domain::audit::{Actor, AuditAction, AuditEntry};
use crate::domain::notify::{
    message_data, EndpointId, EventType, ForwardedWebhook, MessageFields, Notice, Payload, Purpose,
    Subject, WebhookEndpoint,
};
use crate::domain::suppression::Scope;
use crate::engine::Herald;
use crate::ports::{Attempt, DeliveryState, WebhookDelivery, WebhookStore};

/// How much of an endpoint's answer is read, and how much of it is kept in the log.
const BODY_CAP: usize = 4096;
const EXCERPT: usize = 256;

/// Since when each endpoint has failed every delivery (`None`: its last one succeeded). The
/// notifier's own record, so a streak is not restarted by a snapshot read before it was saved.
#[derive(Default)]
struct Streaks(parking_lot::Mutex<HashMap<EndpointId, Option<DateTime<Utc>>>>);

/// Delivers events: one per process (embedded) or cold start (the `notify` function).
pub struct Notifier {
    client: reqwest::Client,
    /// For development forwards: may also reach the operator's allow-list.
    forward_client: reqwest::Client,
    streaks: Streaks,
}

/// What an attempt left the delivery as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub state: DeliveryState,
    /// When to try again, if pending.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// False when this attempt turned the endpoint off.
    pub endpoint_on: bool,
}

impl Notifier {
    pub fn new(config: &super::NotifyConfig) -> Notifier {
        Notifier {
            client: guard::client(
                guard::GuardedResolver {
                    policy: config.policy,
                    allow: guard::DevAllowList::default(),
                },
                config.timeout,
            ),
            forward_client: guard::client(
                guard::GuardedResolver {
                    policy: config.policy,
                    allow: config.dev_allow.clone(),
                },
                config.timeout,
            ),
            streaks: Streaks::default(),
        }
    }

    /// One delivery per endpoint that wants the event, each with the body it will always
    /// have; none when the event's message is gone.
    pub async fn deliveries_for(
        &self,
        herald: &Herald,
        snapshot: &Snapshot,
        notice: &Notice,
    ) -> Vec<WebhookDelivery> {
        let Some((tenant, data)) = payload_data(herald, notice).await else {
            return Vec::new();
        };
        let payload = Payload {
            event_type: notice.event_type,
            timestamp: notice.at,
            data,
        };
        let body = serde_json::to_string(&payload).unwrap_or_default();
        snapshot
            .endpoints
            .iter()
            .filter(|ep| {
                ep.wants(notice.event_type) && tenant.as_ref().is_none_or(|t| *t == ep.tenant)
            })
            .map(|ep| WebhookDelivery::first_try(notice.id, ep, notice.event_type, body.clone()))
            .collect()
    }

    /// One attempt, recorded, with the endpoint's failure streak.
    pub async fn deliver(
        &self,
        herald: &Herald,
        store: &dyn WebhookStore,
        ep: &WebhookEndpoint,
        d: &WebhookDelivery,
    ) -> Delivered {
        let cfg = &herald.config.notify;
        let started = Instant::now();
        let at = Utc::now();
        let answer = match ep.purpose {
            Purpose::Events => attempt(&self.client, cfg, ep, d).await,
            Purpose::DevForward => attempt(&self.forward_client, cfg, ep, d).await,
        };
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
        metrics::histogram!("herald_webhook_delivery_seconds")
            .record(started.elapsed().as_secs_f64());
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
        let endpoint_on = note_health(herald, store, ep, ok, gone, &self.streaks).await;
        Delivered {
            state,
            next_attempt_at: next,
            endpoint_on,
        }
    }
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
    let message = herald.store.get(&tenant, id).await.ok().flatten();
    let fields = message.as_ref().map(|(m, _)| MessageFields::of(m));
    let data = message_data(id, status, detail.clone(), fields);
    Some((Some(tenant), data))
}

/// What one attempt came to.
struct Answer {
    status: Option<u16>,
    excerpt: String,
}

fn refused(why: String) -> Answer {
    Answer {
        status: None,
        excerpt: why,
    }
}

/// What goes out: the event's payload, or for a development forward the provider's webhook
/// with its original body and headers. Either is signed as sent.
fn outgoing(ep: &WebhookEndpoint, d: &WebhookDelivery) -> Result<(Vec<u8>, HeaderList), String> {
    if ep.purpose == Purpose::Events {
        let headers = vec![("content-type".to_owned(), "application/json".to_owned())];
        return Ok((d.payload.clone().into_bytes(), headers));
    }
    let payload: Payload = serde_json::from_str(&d.payload).map_err(|_| "damaged payload")?;
    let hook: ForwardedWebhook =
        serde_json::from_value(payload.data).map_err(|_| "damaged provider webhook")?;
    let body = hook.body().ok_or("damaged provider webhook body")?;
    Ok((body, hook.outgoing_headers()))
}

type HeaderList = Vec<(String, String)>;

/// POSTs the delivery, signed with every secret now signing.
async fn attempt(
    client: &reqwest::Client,
    cfg: &super::NotifyConfig,
    ep: &WebhookEndpoint,
    d: &WebhookDelivery,
) -> Answer {
    let Some(url) = ep.url() else {
        return refused("an event stream reads its events; none are pushed".into());
    };
    let checked = match ep.purpose {
        Purpose::Events => guard::check_url(url, cfg.policy),
        Purpose::DevForward => guard::check_forward_url(url, cfg.policy, &cfg.dev_allow),
    };
    if let Err(why) = checked {
        return refused(format!("refused: {why}"));
    }
    let (body, headers) = match outgoing(ep, d) {
        Ok(out) => out,
        Err(why) => return refused(why),
    };
    let now = Utc::now();
    let id = d.event_id.to_string();
    let signatures: Vec<String> = ep
        .signing_secrets(now)
        .filter_map(|s| standardwebhooks::Webhook::new(s.expose()).ok())
        .filter_map(|w| w.sign(&id, now.timestamp(), &body).ok())
        .collect();
    let mut request = client.post(url.url().clone());
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let request = request
        .header(standardwebhooks::HEADER_WEBHOOK_ID, &id)
        .header(standardwebhooks::HEADER_WEBHOOK_TIMESTAMP, now.timestamp())
        .header(
            standardwebhooks::HEADER_WEBHOOK_SIGNATURE,
            signatures.join(" "),
        )
        .body(body);
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
    // First, so nothing sent from the moment it is disabled is fanned out to it.
    herald.refresh_subscriptions(Duration::ZERO).await;
    let data = serde_json::json!({
        "endpoint_id": ep.id,
        "url": ep.url().map(|u| u.as_str()),
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
}
