//! Provider webhooks: delivery reports and inbound messages, accepted only when genuine. Each
//! request is rate-limited per source, read up to 64 KB, and its signature checked before any
//! of it is trusted; then its events go to the same processor as every other provider event.
//! Served by `herald serve` beside the API and by the `webhooks` Lambda function.

mod config;
mod postal;
pub mod signature;
mod sns;
mod telegram;
mod twilio;
mod whatsapp;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use chrono::Utc;
use tracing::{info, warn};

pub use config::{InboundNumber, WebhooksConfig};
pub use sns::{HttpsFetch, ReqwestFetch};

use crate::api::problem::Problem;
use crate::domain::limits::{BucketSpec, Rate};
use crate::domain::Priority;
use crate::engine::tracker::Notified;
use crate::engine::Herald;
use crate::gateway;
use crate::limiter::TokenBuckets;
use crate::ports::{Grant, ProviderEvent, StoreError};

/// Largest webhook body accepted.
pub const MAX_WEBHOOK_BYTES: usize = 64 * 1024;

/// Everything the webhook handlers share.
pub struct Webhooks {
    pub herald: Arc<Herald>,
    pub config: WebhooksConfig,
    limiter: TokenBuckets,
    sns: sns::SnsVerifier,
    /// Postal's key, parsed once.
    postal_key: Option<rsa::RsaPublicKey>,
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
        Ok(Webhooks {
            herald,
            config,
            postal_key,
            limiter: TokenBuckets::new(),
            sns: sns::SnsVerifier::new(fetch),
        })
    }
}

/// The webhook routes.
pub fn router(webhooks: Arc<Webhooks>) -> Router {
    Router::new()
        .route("/webhooks/ses", post(sns::handle))
        .route(gateway::twilio::STATUS_PATH, post(twilio::status))
        .route(gateway::twilio::INBOUND_PATH, post(twilio::inbound))
        .route("/webhooks/postal", post(postal::handle))
        .route(
            "/webhooks/whatsapp",
            post(whatsapp::handle).get(whatsapp::verify),
        )
        .route("/webhooks/telegram", post(telegram::handle))
        .with_state(webhooks)
}

/// Why a webhook request is refused.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("{0} webhooks are not configured")]
    NotConfigured(&'static str),
    #[error("bad signature: {0}")]
    BadSignature(String),
    #[error("body over {MAX_WEBHOOK_BYTES} bytes")]
    TooLarge,
    #[error("malformed: {0}")]
    Malformed(String),
    #[error("too many requests")]
    RateLimited(Duration),
    #[error("store unavailable: {0}")]
    Store(#[from] StoreError),
    /// The event's message is not recorded as sent yet: the provider should try again.
    #[error("not ready for this event yet")]
    NotYet,
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
            Refusal::TooLarge => {
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
            Refusal::Store(_) | Refusal::NotYet => {
                let mut r = Problem::unavailable(detail).into_response();
                r.headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
                r
            }
        }
    }
}

/// Takes a token of `source`'s pace, then reads the body up to the limit.
async fn admit(
    webhooks: &Webhooks,
    source: &'static str,
    request: Request,
) -> Result<(HeaderMap, axum::http::Uri, Bytes), Refusal> {
    let rate = Rate {
        per_second: webhooks.config.rate_per_second,
        burst: Some(webhooks.config.rate_per_second * 2.0),
    };
    let spec = [BucketSpec {
        key: format!("webhook:{source}"),
        rate,
    }];
    if let Grant::Wait(wait) = webhooks
        .limiter
        .acquire_at(&spec, Priority::P0, 1.0, Utc::now())
    {
        warn!(source, "webhook rate limit hit");
        return Err(Refusal::RateLimited(wait));
    }
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_WEBHOOK_BYTES)
        .await
        .map_err(|_| Refusal::TooLarge)?;
    Ok((parts.headers, parts.uri, bytes))
}

/// Logs a refusal with its reason: a bad signature is worth knowing about, never silent.
fn refuse(source: &'static str, refusal: Refusal) -> Response {
    match &refusal {
        Refusal::BadSignature(reason) => warn!(source, %reason, "webhook signature refused"),
        Refusal::Malformed(reason) => warn!(source, %reason, "malformed webhook"),
        Refusal::Store(e) => warn!(source, error = %e, "webhook not applied: store unavailable"),
        other => info!(source, refusal = %other, "webhook refused"),
    }
    refusal.into_response()
}

/// The answer to a webhook: 200 once processed, else the refusal (logged).
fn respond(source: &'static str, processed: Result<(), Refusal>) -> Response {
    match processed {
        Ok(()) => ok(),
        Err(refusal) => refuse(source, refusal),
    }
}

/// Applies one provider event notification once, by the provider's id for it.
async fn apply(
    webhooks: &Webhooks,
    source: &'static str,
    event_id: &str,
    events: Vec<ProviderEvent>,
) -> Result<(), Refusal> {
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
            info!(source, event_id, "repeated webhook event dropped");
            Ok(())
        }
        Notified::Unknown => {
            info!(
                source,
                event_id, "webhook event for no known message; ignored"
            );
            Ok(())
        }
        Notified::Retry => Err(Refusal::NotYet),
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn ok() -> Response {
    StatusCode::OK.into_response()
}
