//! The Lambda functions' handlers. A function's `main` builds its clients once per cold start
//! ([`ColdStart`]) and hands one of these to the runtime; the tests call the same handlers with
//! events from `events/`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};

use super::dynamo::{BulkRef, FanOut, FanOutError, StreamEvent};
use super::{sdk_config, AwsBackend, AwsSettings, SdkClients, SqsLanes};
use crate::domain::notify::{ForwardedWebhook, ProviderSource};
use crate::engine::notify::Concerns;
use crate::engine::tracker::Notified;
use crate::engine::{dispatch::ReceiptFate, EngineConfig, Herald};
use crate::gateway::ses_events;
use crate::ports::StoreError;
use crate::webhooks::Webhooks;

/// A fan-out stops this long before the function's deadline, to record its progress.
const FAN_OUT_MARGIN: Duration = Duration::from_secs(20);

/// JSON logs, as CloudWatch Logs Insights reads them. The level comes from `HERALD_LOG`.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HERALD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_target(false)
        .without_time() // Lambda stamps every line itself
        .init();
}

/// Everything a function builds once per cold start.
pub struct ColdStart {
    pub settings: AwsSettings,
    pub backend: AwsBackend,
    pub herald: Arc<Herald>,
}

/// The engine on Lambda: a claim's lease outlives any hand-off (the gateway call times out
/// first), and the function is long gone before the lane's visibility timeout returns a message.
pub fn lambda_engine_config() -> EngineConfig {
    let mut config = EngineConfig {
        visibility_timeout: Duration::from_secs(60),
        send_timeout: Duration::from_secs(20),
        ..EngineConfig::default()
    };
    // Each warm function scans the endpoints table at most this often.
    config.notify.subscriptions_refresh = Duration::from_secs(30);
    // API Gateway sends an answer whole and within 30 s: a stream's connection is a long
    // poll, and events wait a second for those another Lambda stores a little late.
    config.notify.streams.window = Duration::from_secs(20);
    config.notify.streams.settle = Duration::from_secs(1);
    // Each look is a Query: once a second is live enough for a person watching.
    config.notify.streams.poll = Duration::from_secs(1);
    config
}

impl ColdStart {
    pub async fn from_env() -> Result<ColdStart, super::SettingsError> {
        let settings = AwsSettings::from_env()?;
        let sdk = sdk_config(None, None).await;
        ColdStart::with(&sdk, settings)
    }

    pub fn with(
        sdk: &aws_config::SdkConfig,
        settings: AwsSettings,
    ) -> Result<ColdStart, super::SettingsError> {
        ColdStart::with_clients(SdkClients::new(sdk), settings)
    }

    pub fn with_clients(
        clients: SdkClients,
        settings: AwsSettings,
    ) -> Result<ColdStart, super::SettingsError> {
        let mut config = lambda_engine_config();
        config.notify.dev_allow = settings.dev_forward_allow.clone();
        ColdStart::with_config(clients, settings, config)
    }

    /// As [`ColdStart::with_clients`], with an engine configuration of the caller's (tests).
    pub fn with_config(
        clients: SdkClients,
        settings: AwsSettings,
        mut config: EngineConfig,
    ) -> Result<ColdStart, super::SettingsError> {
        // The links come from the environment unless the caller set its own.
        if config.unsubscribe.keys.is_empty() {
            config.unsubscribe = settings.unsubscribe.clone();
        }
        if config.warmups.is_empty() {
            config.warmups = settings.warmups.clone();
        }
        let backend = AwsBackend::with_clients(clients, &settings);
        let herald = Arc::new(backend.herald(&settings, config)?);
        Ok(ColdStart {
            settings,
            backend,
            herald,
        })
    }
}

/// The SQS receive count Lambda passes along with each record.
fn receive_count(record: &SqsMessage) -> u32 {
    record
        .attributes
        .get("ApproximateReceiveCount")
        .and_then(|c| c.parse().ok())
        .unwrap_or(1)
}

/// The lane consumer (`dispatch`): every record is claimed, handed off and recorded, at once.
/// Records to keep (re-timed retries, unreadable entries, store failures) are reported as
/// batch item failures, so Lambda deletes only the finished ones.
pub async fn dispatch(herald: &Herald, event: SqsEvent) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    let mut ids = Vec::new();
    let mut deliveries = Vec::new();
    for record in event.records {
        let id = record.message_id.clone().unwrap_or_default();
        let count = receive_count(&record);
        let delivery = match (record.receipt_handle, record.body) {
            (Some(receipt), Some(body)) => SqsLanes::delivery_of(receipt, &body, count),
            _ => None,
        };
        match delivery {
            Some(d) => {
                ids.push(id);
                deliveries.push(d);
            }
            None => {
                // Poison: after maxReceiveCount it lands in the DLQ, whose alarm calls a human.
                tracing::error!(sqs_message_id = %id, "unreadable lane entry; left for the DLQ");
                response.add_failure(id);
            }
        }
    }
    let fates = herald.process_batch(&deliveries).await;
    for (id, fate) in ids.into_iter().zip(fates) {
        if fate == ReceiptFate::Keep {
            response.add_failure(id);
        }
    }
    // This invocation's gateway outcomes, for the health checker.
    if let Err(e) = herald.health.flush().await {
        tracing::warn!(error = %e, "gateway outcomes not recorded");
    }
    response
}

/// `health-checker`: on a schedule, every gateway's state and breaker from the outcomes all
/// dispatchers recorded, and its provider's own health check.
pub async fn run_health_checker() -> Result<(), lambda_runtime::Error> {
    init_tracing();
    let cold = ColdStart::from_env().await?;
    let herald = cold.herald.clone();
    crate::telemetry::emf::run_events(
        move |_event: lambda_runtime::LambdaEvent<serde_json::Value>| {
            let herald = herald.clone();
            async move {
                let statuses = herald.check_gateways().await;
                // A failed sweep is logged and retried by the next schedule: it must not
                // hold up the gateways' health.
                let followups = match herald.fire_followups(chrono::Utc::now()).await {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::error!(error = %e, "follow-up sweep failed");
                        0
                    }
                };
                // Inbound messages whose announcement was lost, or whose worker died.
                let grace = herald.config.inbound_lease * 2;
                let inbound = match herald.announce_pending(grace).await {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::error!(error = %e, "inbound sweep failed");
                        0
                    }
                };
                Ok::<_, lambda_runtime::Error>(serde_json::json!({
                    "gateways": statuses,
                    "followups_announced": followups,
                    "inbound_announced_again": inbound,
                }))
            }
        },
    )
    .await
}

/// The bulk consumer (`enqueue`): fans out each stored job until `deadline`. A job that runs
/// out of time is made visible again at once and resumes after its last finished part.
pub async fn enqueue(
    backend: &AwsBackend,
    event: SqsEvent,
    deadline: Option<Instant>,
) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    for record in event.records {
        let id = record.message_id.clone().unwrap_or_default();
        let job: Option<BulkRef> = record
            .body
            .as_deref()
            .and_then(|b| serde_json::from_str(b).ok());
        let Some(job) = job else {
            tracing::error!(sqs_message_id = %id, "unreadable bulk entry; left for the DLQ");
            response.add_failure(id);
            continue;
        };
        let span = tracing::info_span!("fan_out", bulk_id = %job.bulk_id, tenant = %job.tenant);
        let _enter = span.enter();
        match backend.store.fan_out(&job.bulk_id, deadline).await {
            Ok(FanOut::Done { written, parts }) => {
                tracing::info!(written, parts, "bulk job fanned out");
            }
            Ok(FanOut::Missing) => {
                tracing::warn!("bulk job not found (refused at accept, or expired); dropped");
            }
            Ok(FanOut::Paused { parts_done, parts }) => {
                tracing::info!(
                    parts_done,
                    parts,
                    "out of time; resuming in a new invocation"
                );
                if let Some(receipt) = &record.receipt_handle {
                    if let Err(e) = backend.lanes.release_bulk(receipt).await {
                        tracing::warn!(error = %e, "bulk entry comes back after its visibility timeout");
                    }
                }
                response.add_failure(id);
            }
            Err(FanOutError::Store(e)) => {
                tracing::warn!(error = %e, "fan-out interrupted; it resumes on redelivery");
                response.add_failure(id);
            }
            Err(e @ FanOutError::Corrupt(..)) => {
                tracing::error!(error = %e, "bulk job cannot be fanned out; left for the DLQ");
                response.add_failure(id);
            }
        }
    }
    response
}

/// The SES event consumer (`suppression`): SES configuration-set events, through SNS and SQS,
/// become delivery events and suppressions, once per SNS message. An event whose message is
/// not recorded as sent yet is parked, and applied when it is. An applied notification goes on
/// to the development forwards of the tenant whose message it is, as SNS would have POSTed it
/// to `/webhooks/ses`.
pub async fn suppression(herald: &Herald, event: SqsEvent) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    let forwarding = herald.forwards_wanted(ProviderSource::Ses).await;
    for record in event.records {
        let id = record.message_id.clone().unwrap_or_default();
        let body = record.body.unwrap_or_default();
        let parsed = ses_events::sns_notification(&body)
            .and_then(|n| Ok((ses_events::ses_events(&n.message)?, n)));
        let (events, notification) = match parsed {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(sqs_message_id = %id, error = %e, "unreadable SES event; left for the DLQ");
                response.add_failure(id);
                continue;
            }
        };
        // Only while someone forwards SES: what the events concern, for their tenant.
        let concerns = forwarding.then(|| {
            let mut concerns = Concerns::default();
            concerns.note_events(&events);
            concerns
        });
        let sns_id = &notification.message_id;
        match herald.apply_notification("sns", sns_id, events).await {
            Ok(Notified::Applied) => {
                if let Some(concerns) = concerns {
                    let hook = ses_forward(&notification, &body);
                    herald.forward_provider_webhook(hook, concerns).await;
                }
            }
            Ok(Notified::Repeat) => {
                tracing::info!(sns_message_id = %sns_id, "repeated SES event ignored");
            }
            Ok(Notified::Parked) => {
                tracing::info!(sns_message_id = %sns_id, "SES event parked until its message is recorded as sent");
            }
            Err(StoreError::Busy(what)) => {
                tracing::info!(%what, "SES event being applied by another delivery; it comes back");
                response.add_failure(id);
            }
            Err(e) => {
                tracing::warn!(error = %e, "SES event not applied; it comes back");
                response.add_failure(id);
            }
        }
    }
    response
}

/// The inbound consumer (`inbound`): each queue message names a stored inbound message, which
/// is claimed and processed once (see [`crate::engine::pipeline`]). One held by another worker,
/// or waiting for its retry time, comes back after the visibility timeout; one whose try
/// failed comes back the same way, and is `failed` after its last.
pub async fn inbound(herald: &Herald, event: SqsEvent) -> SqsBatchResponse {
    use crate::engine::pipeline::InboundRun;
    let mut response = SqsBatchResponse::default();
    for record in event.records {
        let id = record.message_id.clone().unwrap_or_default();
        let body = record.body.unwrap_or_default();
        let entry: super::sqs::InboundRef = match serde_json::from_str(&body) {
            Ok(entry) => entry,
            Err(e) => {
                tracing::error!(sqs_message_id = %id, error = %e, "unreadable inbound entry; left for the DLQ");
                response.add_failure(id);
                continue;
            }
        };
        match herald.process_inbound(&entry.tenant, entry.id).await {
            Ok(InboundRun::Processed | InboundRun::Failed | InboundRun::Done) => {}
            Ok(InboundRun::Missing) => {
                tracing::warn!(tenant = %entry.tenant, inbound = %entry.id, "inbound entry for no stored message (expired?)");
            }
            Ok(InboundRun::Held | InboundRun::Retry) => response.add_failure(id),
            Err(e) => {
                tracing::warn!(error = %e, inbound = %entry.id, "inbound message not processed; it comes back");
                response.add_failure(id);
            }
        }
    }
    response
}

/// An SNS notification as SNS's HTTP(S) delivery would have POSTed it to `/webhooks/ses`: the
/// same envelope, whose own SNS signature a developer can check, and SNS's headers.
fn ses_forward(notification: &ses_events::SnsNotification, body: &str) -> ForwardedWebhook {
    let headers = [
        ("content-type", "text/plain; charset=UTF-8"),
        ("x-amz-sns-message-type", "Notification"),
        ("x-amz-sns-message-id", notification.message_id.as_str()),
        ("x-amz-sns-topic-arn", notification.topic_arn.as_str()),
    ]
    .map(|(name, value)| (name.to_owned(), value.to_owned()));
    let path = "/webhooks/ses";
    ForwardedWebhook::new(ProviderSource::Ses, "POST", path, headers, body.as_bytes())
}

/// The `stats` function: a batch of the messages table's stream into channel counts. An error
/// makes Lambda retry the batch (bisecting it), then hand it to the on-failure queue.
pub async fn stats(backend: &AwsBackend, event: StreamEvent) -> Result<(), StoreError> {
    backend.store.count_changes(&event).await
}

/// The instant to stop a fan-out, from the invocation's deadline (milliseconds since the epoch).
pub fn fan_out_deadline(deadline_ms: u64) -> Option<Instant> {
    let left = invocation_deadline(deadline_ms).saturating_duration_since(Instant::now());
    Some(Instant::now() + left.saturating_sub(FAN_OUT_MARGIN))
}

/// The invocation's deadline (milliseconds since the epoch) on this process's clock.
pub fn invocation_deadline(deadline_ms: u64) -> Instant {
    let now_ms = chrono::Utc::now().timestamp_millis().max(0) as u64;
    Instant::now() + Duration::from_millis(deadline_ms.saturating_sub(now_ms))
}

/// `api`: the same Router as `herald serve` (the API and the console), behind API Gateway's
/// HTTP API.
pub async fn run_api() -> Result<(), lambda_http::Error> {
    init_tracing();
    let cold = ColdStart::from_env().await?;
    crate::telemetry::emf::run_http(api_app(cold.herald)).await
}

/// The `api` function's Router: the API with Lambda's body limits, and the console.
pub fn api_app(herald: Arc<Herald>) -> axum::Router {
    let limits = crate::api::BodyLimits::LAMBDA;
    crate::api::router_with(herald.clone(), limits).merge(crate::console::router(
        herald,
        crate::console::ExportCap(limits.export),
    ))
}

/// `webhooks`: the providers' callbacks (`/webhooks/*`) behind API Gateway's HTTP API, the
/// same Router `herald serve` merges beside the API.
pub async fn run_webhooks() -> Result<(), lambda_http::Error> {
    init_tracing();
    let cold = ColdStart::from_env().await?;
    crate::telemetry::emf::run_http(webhooks_router(cold)?).await
}

/// The webhook Router over a cold start's engine, accepting what `HERALD_WEBHOOKS` says.
pub fn webhooks_router(cold: ColdStart) -> Result<axum::Router, super::SettingsError> {
    let webhooks = Webhooks::new(cold.herald, cold.settings.webhooks).map_err(|value| {
        super::SettingsError::Invalid {
            name: super::settings::WEBHOOKS,
            what: "webhook settings that can be served",
            value,
        }
    })?;
    let router = crate::webhooks::router(Arc::new(webhooks));
    Ok(router.layer(axum::middleware::map_request(with_source_ip)))
}

/// API Gateway's view of the caller as the request's peer address (a Lambda has no socket to
/// ask): the webhooks count failed verifications per client address.
async fn with_source_ip(mut request: axum::extract::Request) -> axum::extract::Request {
    use lambda_http::request::RequestContext;
    use lambda_http::RequestExt;
    let ip = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(context)) => context.http.source_ip.as_deref(),
        _ => None,
    }
    .and_then(|ip| ip.parse::<std::net::IpAddr>().ok());
    if let Some(ip) = ip {
        let peer = std::net::SocketAddr::new(ip, 0);
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
    }
    request
}

/// Runs an event function for the life of its instance: tracing, the cold start (`ready` may
/// check what the function needs of it), then `handle` for every event.
async fn serve_events<E, R, F, Fut>(
    ready: impl FnOnce(&ColdStart) -> Result<(), super::SettingsError>,
    handle: F,
) -> Result<(), lambda_runtime::Error>
where
    E: serde::de::DeserializeOwned + Send + 'static,
    R: serde::Serialize + Send + 'static,
    F: Fn(Arc<ColdStart>, E, lambda_runtime::Context) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<R, lambda_runtime::Error>> + Send + 'static,
{
    init_tracing();
    let cold = Arc::new(ColdStart::from_env().await?);
    ready(&cold)?;
    crate::telemetry::emf::run_events(move |event: lambda_runtime::LambdaEvent<E>| {
        handle(cold.clone(), event.payload, event.context)
    })
    .await
}

/// `dispatch`: one lane's consumer; the lane comes from `HERALD_LANE`.
pub async fn run_dispatch() -> Result<(), lambda_runtime::Error> {
    let ready = |cold: &ColdStart| {
        let lane = cold
            .settings
            .lane
            .ok_or(super::SettingsError::Missing("HERALD_LANE"))?;
        tracing::info!(%lane, "dispatch function ready");
        Ok(())
    };
    serve_events(ready, |cold, event: SqsEvent, _| async move {
        Ok(dispatch(&cold.herald, event).await)
    })
    .await
}

/// `suppression`: the SES event queue's consumer.
pub async fn run_suppression() -> Result<(), lambda_runtime::Error> {
    serve_events(
        |_| Ok(()),
        |cold, event: SqsEvent, _| async move { Ok(suppression(&cold.herald, event).await) },
    )
    .await
}

/// `inbound`: the inbound queue's consumer.
pub async fn run_inbound() -> Result<(), lambda_runtime::Error> {
    serve_events(
        |_| Ok(()),
        |cold, event: SqsEvent, _| async move { Ok(inbound(&cold.herald, event).await) },
    )
    .await
}

/// `stats`: the messages stream's consumer. A failed batch comes back whole.
pub async fn run_stats() -> Result<(), lambda_runtime::Error> {
    serve_events(
        |_| Ok(()),
        |cold, event: StreamEvent, _| async move {
            let changes = event.records.len();
            stats(&cold.backend, event).await.map_err(|e| {
                tracing::warn!(error = %e, changes, "channel counts not written; batch returns");
                lambda_runtime::Error::from(e)
            })
        },
    )
    .await
}

/// `enqueue`: the bulk queue's consumer.
pub async fn run_enqueue() -> Result<(), lambda_runtime::Error> {
    serve_events(
        |_| Ok(()),
        |cold, event: SqsEvent, context| async move {
            let deadline = fan_out_deadline(context.deadline);
            Ok(enqueue(&cold.backend, event, deadline).await)
        },
    )
    .await
}
