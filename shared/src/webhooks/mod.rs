//! Provider webhooks: delivery reports and inbound messages, accepted only when genuine. Each
//! request is read up to 64 KB and its signature checked before any of it is trusted; failed
//! checks are rate-limited per client address; then its events go to the same processor as
//! every other provider event.
//! Served by `herald serve` beside the API and by the `webhooks` Lambda function.

mod config;
mod email;
mod forward;
mod guard;
mod postal;
pub mod signature;
mod sns;
mod telegram;
mod twilio;
mod whatsapp;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use tracing::{info, warn};

pub use config::{InboundMailbox, InboundNumber, WebhooksConfig};
pub use sns::{HttpsFetch, ReqwestFetch};

use crate::api::problem::{catch_panics, Problem};
use crate::engine::tracker::Notified;
use crate::engine::Herald;
use crate::gateway;
use crate::ports::{ProviderEvent, StoreError};
use guard::LogLine;

/// Largest webhook body accepted.
pub const MAX_WEBHOOK_BYTES: usize = 64 * 1024;

/// Everything the webhook handlers share.
pub struct Webhooks {
    pub herald: Arc<Herald>,
    pub config: WebhooksConfig,
    /// Failed verifications per client address.
    failures: guard::Failures,
    log_limit: guard::LogLimit,
    sns: sns::SnsVerifier,
    /// Postal's key, parsed once.
    postal_key: Option<rsa::RsaPublicKey>,
    /// Each Postal instance's key, by gateway name.
    postal_instance_keys: BTreeMap<String, rsa::RsaPublicKey>,
}

impl Webhooks {
    pub fn new(herald: Arc<Herald>, config: WebhooksConfig) -> Result<Webhooks, String> {
        Webhooks::with_fetch(herald, config, Arc::new(ReqwestFetch::new()?))
    }

    /// With `fetch` for SNS's certificates and subscription confirmations.
    pub fn with_fetch(
        herald: Arc<Herald>,
        config: WebhooksConfig,
        fetch: Arc<dyn HttpsFetch>,
    ) -> Result<Webhooks, String> {
        config.validate()?;
        let postal_key = config
            .postal
            .as_ref()
            .map(|p| signature::rsa_public_key(&p.public_key))
            .transpose()
            .map_err(|e| format!("webhooks.postal.public_key: {e}"))?;
        let postal_instance_keys = config
            .postal_instances
            .iter()
            .map(|(name, p)| {
                signature::rsa_public_key(&p.public_key)
                    .map(|key| (name.clone(), key))
                    .map_err(|e| format!("webhooks.postal_instances.{name}.public_key: {e}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Webhooks {
            herald,
            postal_key,
            postal_instance_keys,
            failures: guard::Failures::new(config.rate_per_second),
            log_limit: guard::LogLimit::default(),
            sns: sns::SnsVerifier::new(fetch),
            config,
        })
    }
}

/// The webhook routes.
pub fn router(webhooks: Arc<Webhooks>) -> Router {
    let routes = Router::new()
        .route("/webhooks/ses", post(sns::handle))
        .route(gateway::twilio::STATUS_PATH, post(twilio::status))
        .route(gateway::twilio::INBOUND_PATH, post(twilio::inbound))
        .route("/webhooks/postal", post(postal::handle))
        .route("/webhooks/postal/{instance}", post(postal::handle_instance))
        .route(email::POSTAL_INBOUND_PATH, post(email::postal_inbound))
        .route(
            "/webhooks/whatsapp",
            post(whatsapp::handle).get(whatsapp::verify),
        )
        .route("/webhooks/telegram", post(telegram::handle))
        .with_state(webhooks.clone());
    guarded(routes, webhooks)
}

/// Every webhook route sits behind these: accepted webhooks forwarded to development
/// forwards, failed verifications counted per client, and a panic answered with a 500
/// problem, as in the API.
fn guarded(routes: Router, webhooks: Arc<Webhooks>) -> Router {
    routes
        .layer(middleware::from_fn_with_state(
            webhooks.clone(),
            forward::forward_verified,
        ))
        .layer(middleware::from_fn_with_state(webhooks, count_failures))
        .layer(catch_panics())
}

/// Why a webhook request is refused.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("{0} webhooks are not configured")]
    NotConfigured(&'static str),
    #[error("bad signature: {0}")]
    BadSignature(String),
    #[error("body over {0} bytes")]
    TooLarge(usize),
    #[error("malformed: {0}")]
    Malformed(String),
    #[error("too many requests")]
    RateLimited(Duration),
    #[error("{0}")]
    Store(#[from] StoreError),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let detail = self.to_string();
        match self {
            Refusal::NotConfigured(_) => {
                Problem::new(StatusCode::NOT_FOUND, "not-configured", detail).into_response()
            }
            Refusal::BadSignature(_) => {
                Problem::new(StatusCode::UNAUTHORIZED, "bad-signature", "bad signature")
                    .into_response()
            }
            Refusal::TooLarge(_) => {
                Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "too-large", detail).into_response()
            }
            Refusal::Malformed(_) => {
                Problem::new(StatusCode::BAD_REQUEST, "malformed", detail).into_response()
            }
            Refusal::RateLimited(wait) => {
                let mut r = Problem::new(StatusCode::TOO_MANY_REQUESTS, "rate-limited", detail)
                    .into_response();
                let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
                if let Ok(v) = secs.to_string().parse() {
                    r.headers_mut().insert(header::RETRY_AFTER, v);
                }
                r
            }
            Refusal::Store(e) => {
                let busy = matches!(e, StoreError::Busy(_));
                let mut r = Problem::from(e).into_response();
                if busy {
                    r.extensions_mut().insert(Busy);
                }
                r.headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
                r
            }
        }
    }
}

/// A request's parts once its body is read (up to the limit).
struct Admitted {
    headers: HeaderMap,
    uri: axum::http::Uri,
    body: Bytes,
    /// Its client has used up its failed verifications: nothing costly on its word alone.
    suspect: bool,
}

/// The largest body a webhook route reads: raw email is larger than any event, and SES's
/// received mail comes through SNS as up to 150 KB of base64 in a JSON envelope.
fn body_limit(path: &str) -> usize {
    match path {
        email::POSTAL_INBOUND_PATH => email::MAX_EMAIL_BYTES,
        "/webhooks/ses" => email::MAX_SNS_BYTES,
        _ => MAX_WEBHOOK_BYTES,
    }
}

/// Reads the body up to its route's limit. Nothing is spent here: only a failed verification
/// costs its client (see [`count_failures`]).
async fn admit(request: Request) -> Result<Admitted, Refusal> {
    let suspect = request.extensions().get::<Suspect>().is_some();
    let limit = body_limit(request.uri().path());
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| Refusal::TooLarge(limit))?;
    Ok(Admitted {
        headers: parts.headers,
        uri: parts.uri,
        body,
        suspect,
    })
}

/// Marks the answer to a redelivery while its event is being applied (a 503 like an outage,
/// counted apart from one).
#[derive(Debug, Clone, Copy)]
struct Busy;

/// Marks a request whose client has no failed verifications left.
#[derive(Debug, Clone, Copy)]
struct Suspect;

/// Verification comes first, for everyone; a request that fails it (401) spends a token of
/// its client's own bucket, and past that is answered 429. A valid request spends nothing, so
/// no one's forgeries can crowd it out.
async fn count_failures(
    State(webhooks): State<Arc<Webhooks>>,
    mut request: Request,
    next: Next,
) -> Response {
    let client = guard::client_address(&request);
    if webhooks.failures.exhausted(&client, Instant::now()) {
        request.extensions_mut().insert(Suspect);
    }
    let source = webhook_source(request.uri().path());
    let response = next.run(request).await;
    crate::telemetry::webhook_received(&source, verdict(&response));
    if response.status() != StatusCode::UNAUTHORIZED {
        return response;
    }
    match webhooks.failures.spend(&client, Instant::now()) {
        None => response,
        Some(wait) => Refusal::RateLimited(wait).into_response(),
    }
}

/// The source a webhook path names (`/webhooks/twilio/status` -> `twilio`), for metrics.
fn webhook_source(path: &str) -> String {
    let source = path.trim_start_matches('/').split('/').nth(1).unwrap_or("");
    match source.len() <= 32 && source.bytes().all(|b| b.is_ascii_lowercase()) {
        true => source.to_owned(),
        false => "other".to_owned(),
    }
}

/// A webhook's verdict, from the answer it got.
fn verdict(response: &Response) -> &'static str {
    if response.extensions().get::<Busy>().is_some() {
        return "busy";
    }
    match response.status().as_u16() {
        200..=299 => "accepted",
        401 => "bad_signature",
        404 => "not_configured",
        413 => "too_large",
        429 => "rate_limited",
        400..=499 => "malformed",
        _ => "unavailable",
    }
}

/// Logs a refusal with its reason: a bad signature is worth knowing about, never silent, but
/// a flood of them is counted rather than written line by line.
fn refuse(webhooks: &Webhooks, source: &'static str, refusal: Refusal) -> Response {
    let quiet = matches!(refusal, Refusal::NotConfigured(_) | Refusal::TooLarge(_));
    if !quiet {
        match webhooks.log_limit.line(source, Instant::now()) {
            LogLine::Write { held } => {
                if held > 0 {
                    warn!(
                        source,
                        held, "webhook refusals not logged in the last minute"
                    );
                }
                log_refusal(source, &refusal);
            }
            LogLine::Limit => {
                warn!(source, "webhook refusals over the log limit: counted, not logged, for the rest of the minute")
            }
            LogLine::Hold => {}
        }
    }
    refusal.into_response()
}

fn log_refusal(source: &'static str, refusal: &Refusal) {
    match refusal {
        Refusal::BadSignature(reason) => {
            warn!(source, reason = %guard::clip(reason), "webhook signature refused")
        }
        Refusal::Malformed(reason) => {
            warn!(source, reason = %guard::clip(reason), "malformed webhook")
        }
        // Logged as a note where it is answered (`Problem::busy`).
        Refusal::Store(StoreError::Busy(_)) => {}
        Refusal::Store(e) => warn!(source, error = %e, "webhook not applied: store unavailable"),
        other => info!(source, refusal = %other, "webhook refused"),
    }
}

/// The answer to a webhook: 200 once processed, else the refusal (logged).
fn respond(webhooks: &Webhooks, source: &'static str, processed: Result<(), Refusal>) -> Response {
    match processed {
        Ok(()) => ok(),
        Err(refusal) => refuse(webhooks, source, refusal),
    }
}

/// Applies one provider event notification once, by the provider's id for it.
async fn apply(
    webhooks: &Webhooks,
    source: &'static str,
    event_id: &str,
    events: Vec<ProviderEvent>,
) -> Result<(), Refusal> {
    forward::note_events(&events);
    if events.is_empty() {
        return Ok(());
    }
    match webhooks
        .herald
        .apply_notification(source, event_id, events)
        .await?
    {
        Notified::Applied => Ok(()),
        Notified::Repeat => {
            forward::withhold("a repeat of a webhook already handled");
            info!(source, event_id, "repeated webhook event dropped");
            Ok(())
        }
        // Applied once its message is recorded as sent; the provider need not retry.
        Notified::Parked => Ok(()),
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn ok() -> Response {
    StatusCode::OK.into_response()
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::routing::post;
    use axum::Router;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::{guarded, Webhooks, WebhooksConfig};
    use crate::embedded::{Embedded, EmbeddedConfig};
    use crate::ports::StoreError;

    async fn panicking() -> StatusCode {
        panic!("a handler bug")
    }

    #[tokio::test]
    async fn a_panicking_webhook_route_answers_a_500_problem() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = EmbeddedConfig::new(dir.path());
        cfg.run_workers = false;
        let embedded = Embedded::start(cfg).await.unwrap();
        let webhooks =
            Arc::new(Webhooks::new(embedded.herald.clone(), WebhooksConfig::default()).unwrap());
        let boom = Router::new().route("/webhooks/boom", post(panicking));
        let request = Request::post("/webhooks/boom").body(Body::empty()).unwrap();
        let response = guarded(boom, webhooks).oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let content_type = response.headers()["content-type"].clone();
        assert_eq!(content_type, "application/problem+json");
        let problem = problem_of(response).await;
        assert_eq!(problem["type"], "https://herald.dev/problems/internal");
        embedded.shutdown().await;
    }
    async fn problem_of(response: axum::response::Response) -> serde_json::Value {
        let body = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&body).unwrap()
    }

    /// A redelivery while another applies the event is told to come back (503 with a
    /// `Retry-After`), as "busy", not as a store that is down.
    #[tokio::test]
    async fn an_event_being_applied_is_busy_not_unavailable() {
        use axum::response::IntoResponse;
        let busy = StoreError::Busy("sns event n-1 is being applied".into());
        let response = super::Refusal::Store(busy).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()["retry-after"], "5");
        assert_eq!(
            super::verdict(&response),
            "busy",
            "not counted as an outage"
        );
        let problem = problem_of(response).await;
        assert_eq!(problem["type"], "https://herald.dev/problems/busy");

        let down = StoreError::Unavailable("disk I/O error".into());
        let problem = problem_of(super::Refusal::Store(down).into_response()).await;
        assert_eq!(
            problem["type"],
            "https://herald.dev/problems/store-unavailable"
        );
        assert!(!problem.to_string().contains("disk"), "{problem}");
    }
}
