//! Deliverability: `GET|PUT /v1/quiet-hours`; `GET /v1/reputation`, `PUT
//! /v1/reputation/settings`, `POST /v1/reputation/resume`; and the one-click unsubscribe
//! links Herald hosts, `GET|POST /u/{token}`, which take no key (the token is the credential).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{rejection::PathRejection, Path, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::extract::{Caller, JsonBody};
use super::problem::{AuthErrors, JsonBodyErrors, Problem};
use crate::domain::audit::AuditAction;
use crate::domain::deliverability::quiet_hours::QuietHours;
use crate::domain::deliverability::reputation::{Pause, ReputationSettings};
use crate::domain::deliverability::unsubscribe::MAX_TOKEN_CHARS;
use crate::engine::reputation::ReputationReport;
use crate::engine::Herald;
use crate::markup::escape;

/// The tenant's quiet hours (the defaults when it set none).
#[utoipa::path(get, operation_id = "get_quiet_hours", path = "/v1/quiet-hours", tag = "deliverability",
    responses((status = 200, body = QuietHours), AuthErrors), security(("api_key" = [])))]
pub async fn get_quiet_hours(
    State(herald): State<Arc<Herald>>,
    caller: Caller,
) -> Result<Json<QuietHours>, Problem> {
    Ok(Json(herald.rules.quiet_hours(&caller.tenant).await?))
}

/// Replaces the tenant's quiet hours; sends accepted from now on follow them.
#[utoipa::path(put, operation_id = "put_quiet_hours", path = "/v1/quiet-hours", tag = "deliverability",
    request_body = QuietHours,
    responses((status = 200, body = QuietHours), AuthErrors, JsonBodyErrors), security(("api_key" = [])))]
pub async fn put_quiet_hours(
    State(herald): State<Arc<Herald>>,
    caller: Caller,
    body: JsonBody<QuietHours>,
) -> Result<Json<QuietHours>, Problem> {
    let q = body.value;
    q.check().map_err(Problem::invalid)?;
    herald.set_quiet_hours(&caller.tenant, q.clone()).await?;
    let detail = serde_json::to_value(&q).unwrap_or_default();
    herald
        .record_audit(caller.entry(AuditAction::QuietHoursPut).detail(detail))
        .await;
    Ok(Json(q))
}

/// The tenant's bounce and complaint rates per gateway over the window, judged now, and the
/// pause of its bulk lanes if there is one.
#[utoipa::path(get, operation_id = "get_reputation", path = "/v1/reputation", tag = "deliverability",
    responses((status = 200, body = ReputationReport), AuthErrors), security(("api_key" = [])))]
pub async fn get_reputation(
    State(herald): State<Arc<Herald>>,
    caller: Caller,
) -> Result<Json<ReputationReport>, Problem> {
    Ok(Json(herald.reputation_report(&caller.tenant).await?))
}

/// Replaces the thresholds, the window and the cool-down.
#[utoipa::path(put, operation_id = "put_reputation_settings", path = "/v1/reputation/settings", tag = "deliverability",
    request_body = ReputationSettings,
    responses((status = 200, body = ReputationSettings), AuthErrors, JsonBodyErrors), security(("api_key" = [])))]
pub async fn put_reputation_settings(
    State(herald): State<Arc<Herald>>,
    caller: Caller,
    body: JsonBody<ReputationSettings>,
) -> Result<Json<ReputationSettings>, Problem> {
    let settings = body.value;
    settings.check().map_err(Problem::invalid)?;
    herald
        .set_reputation_settings(&caller.tenant, settings.clone())
        .await?;
    let detail = serde_json::to_value(&settings).unwrap_or_default();
    herald
        .record_audit(
            caller
                .entry(AuditAction::ReputationSettingsPut)
                .detail(detail),
        )
        .await;
    Ok(Json(settings))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Resumed {
    /// The pause that was lifted; null when the lanes were not paused.
    pub lifted: Option<Pause>,
}

/// Lifts the pause of the tenant's bulk lanes; its window starts again from now.
#[utoipa::path(post, operation_id = "resume_reputation", path = "/v1/reputation/resume", tag = "deliverability",
    responses((status = 200, body = Resumed), AuthErrors), security(("api_key" = [])))]
pub async fn resume(
    State(herald): State<Arc<Herald>>,
    caller: Caller,
) -> Result<Json<Resumed>, Problem> {
    let entry = caller.entry(AuditAction::ReputationResumed);
    let lifted = herald.resume_reputation(&caller.tenant, entry).await?;
    Ok(Json(Resumed { lifted }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GatewayList {
    pub items: Vec<crate::engine::health::GatewayView>,
}

/// The gateways, their health and their warm-up schedules (day, today's cap and use, held or
/// advancing). Gateways serve every tenant: this is the platform's view.
#[utoipa::path(get, operation_id = "list_gateways", path = "/v1/gateways", tag = "deliverability",
    responses((status = 200, body = GatewayList), AuthErrors), security(("api_key" = [])))]
pub async fn list_gateways(
    State(herald): State<Arc<Herald>>,
    _caller: Caller,
) -> Result<Json<GatewayList>, Problem> {
    let items = herald.gateway_views().await?;
    Ok(Json(GatewayList { items }))
}

/// A link that is not Herald's (forged, edited, or signed by a retired key).
fn unknown_link() -> Response {
    let page = page("This unsubscribe link is not valid.", None);
    (StatusCode::NOT_FOUND, page).into_response()
}

fn token_of(path: Result<Path<String>, PathRejection>) -> Option<String> {
    let Path(token) = path.ok()?;
    (token.len() <= MAX_TOKEN_CHARS).then_some(token)
}

/// The confirmation page: a GET never unsubscribes (mail scanners follow links), it shows a
/// button that POSTs back.
#[utoipa::path(get, operation_id = "unsubscribe_page", path = "/u/{token}", tag = "deliverability",
    params(("token" = String, Path)),
    responses((status = 200, description = "A page with a button that unsubscribes", content_type = "text/html"),
              (status = 404, description = "Not one of Herald's links")))]
pub async fn unsubscribe_page(
    State(herald): State<Arc<Herald>>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let Some(u) = token_of(path).and_then(|t| herald.read_unsubscribe(&t)) else {
        return unknown_link();
    };
    let what = match &u.topic {
        Some(topic) => format!(
            "Stop receiving “{}” messages at {}?",
            escape(topic.as_str()),
            escape(&u.address)
        ),
        None => format!("Stop receiving these messages at {}?", escape(&u.address)),
    };
    let form = "<form method=\"post\"><input type=\"hidden\" name=\"List-Unsubscribe\" \
                value=\"One-Click\"><button type=\"submit\">Unsubscribe</button></form>";
    page(&what, Some(form)).into_response()
}

/// The one-click POST (RFC 8058): suppresses the address for the tenant (and topic). No key,
/// no redirect; a repeat is harmless.
#[utoipa::path(post, operation_id = "unsubscribe", path = "/u/{token}", tag = "deliverability",
    params(("token" = String, Path)),
    responses((status = 200, description = "Unsubscribed", content_type = "text/html"),
              (status = 404, description = "Not one of Herald's links")))]
pub async fn unsubscribe(
    State(herald): State<Arc<Herald>>,
    path: Result<Path<String>, PathRejection>,
    _body: Bytes,
) -> Result<Response, Problem> {
    let Some(token) = token_of(path) else {
        return Ok(unknown_link());
    };
    match herald.unsubscribe(&token).await? {
        None => Ok(unknown_link()),
        Some(u) => {
            let what = match &u.topic {
                Some(t) => format!(
                    "{} will get no more “{}” messages.",
                    escape(&u.address),
                    escape(t.as_str())
                ),
                None => format!("{} will get no more of these messages.", escape(&u.address)),
            };
            Ok(page(&what, None).into_response())
        }
    }
}

/// A small page with no script and a policy that allows none.
fn page(message: &str, form: Option<&str>) -> impl IntoResponse {
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>Unsubscribe</title></head>\
         <body style=\"font-family:sans-serif;max-width:32rem;margin:3rem auto\"><p>{message}</p>{}</body></html>",
        form.unwrap_or("")
    );
    (
        [
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
            ),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Html(body),
    )
}
