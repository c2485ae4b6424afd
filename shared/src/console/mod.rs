//! The web console at `/console`: server-rendered pages over the engine for operators and
//! tenants, signed in with an API key ([`session`]). Every page works without script; the one
//! small script, served from here like the stylesheet, only refreshes the overview.

// Handlers answer with a page either way; a refusal is the page itself, built once per
// refused request, so boxing it would buy nothing.
#![allow(clippy::result_large_err)]

mod audit;
mod bulk;
mod chart;
mod dead_letters;
mod messages;
mod numbers;
mod overview;
mod pages;
mod session;
mod suppressions;
mod templates;
mod threads;
mod webhooks;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use tower_http::catch_panic::CatchPanicLayer;

use crate::engine::Herald;

/// Forms are a key, a token and a few fields.
const FORM_BYTES: usize = 16 * 1024;

/// No inline script or style, nothing from elsewhere, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The largest export one answer carries: `None` where answers stream (`herald serve`), a
/// cap where they are buffered (Lambda).
#[derive(Debug, Clone, Copy)]
pub struct ExportCap(pub Option<usize>);

/// The console's routes, with their own headers and limits, to merge beside the API's.
pub fn router(herald: Arc<Herald>, export: ExportCap) -> Router {
    Router::new()
        .route("/console", get(overview::page))
        .route("/console/overview/live", get(overview::live))
        .route(
            session::SIGN_IN_PATH,
            get(session::sign_in_page).post(session::sign_in),
        )
        .route("/console/sign-out", post(session::sign_out))
        .route("/console/messages", get(messages::search))
        .route("/console/messages/{id}", get(messages::page))
        .route("/console/messages/{id}/cancel", post(messages::cancel))
        .route("/console/bulk", get(bulk::list))
        .route("/console/bulk/{bulk_id}", get(bulk::page))
        .route("/console/suppressions", get(suppressions::list))
        .route("/console/suppressions/add", post(suppressions::add))
        .route("/console/suppressions/remove", post(suppressions::remove))
        .route(
            "/console/suppressions/import",
            post(suppressions::import)
                .layer(DefaultBodyLimit::max(suppressions::IMPORT_FORM_BYTES)),
        )
        .route("/console/suppressions/export", get(suppressions::export))
        .route("/console/dead-letters", get(dead_letters::list))
        .route("/console/dead-letters/redrive", post(dead_letters::redrive))
        .route("/console/templates", get(templates::list))
        .route(
            "/console/templates/{name}",
            get(templates::edit)
                .post(templates::submit)
                .layer(DefaultBodyLimit::max(templates::FORM_BYTES)),
        )
        .route(
            "/console/templates/{name}/preview",
            post(templates::preview).layer(DefaultBodyLimit::max(templates::FORM_BYTES)),
        )
        .route("/console/threads", get(threads::inbox))
        .route("/console/threads/{id}", get(threads::thread))
        .route("/console/threads/{id}/reply", post(threads::reply))
        .route("/console/numbers", get(numbers::page))
        .route("/console/numbers/simulate", post(numbers::simulate))
        .route("/console/webhooks", get(webhooks::list))
        .route("/console/webhooks/{id}", get(webhooks::endpoint))
        .route(
            "/console/webhooks/deliveries/{id}/replay",
            post(webhooks::replay),
        )
        .route("/console/audit", get(audit::list))
        .route("/console/audit/export", get(audit::export))
        .route("/console/assets/{name}", get(asset))
        .route("/console/{*rest}", get(unknown_page).post(unknown_page))
        .layer(DefaultBodyLimit::max(FORM_BYTES))
        .layer(Extension(export))
        .layer(axum::middleware::map_response(secure_headers))
        .layer(CatchPanicLayer::custom(|_| {
            pages::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong on this page.",
            )
        }))
        .with_state(herald)
}

async fn secure_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

async fn unknown_page() -> Response {
    pages::not_found("page")
}

/// The stylesheet and the script, compiled in.
async fn asset(Path(name): Path<String>) -> Response {
    let (body, kind) = match name.as_str() {
        "console.css" => (
            include_str!("assets/console.css"),
            "text/css; charset=utf-8",
        ),
        "console.js" => (
            include_str!("assets/console.js"),
            "text/javascript; charset=utf-8",
        ),
        _ => return pages::not_found("file"),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// A page's query string. Every field of the console's search forms is optional text, so one
/// that does not parse is read as no filter at all: the page still shows something.
pub struct PageQuery<T>(pub T);

impl<T: serde::de::DeserializeOwned + Default, S: Send + Sync> FromRequestParts<S>
    for PageQuery<T>
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let query = axum::extract::Query::<T>::try_from_uri(&parts.uri);
        Ok(PageQuery(query.map(|q| q.0).unwrap_or_default()))
    }
}

/// What the layout shows of the signed-in key (never the key: its prefix and scopes).
fn who(who: &session::SignedIn) -> minijinja::Value {
    minijinja::context! {
        tenant => who.tenant.as_str(),
        key_prefix => &who.key_prefix,
        scopes => who.scopes.to_string(),
        csrf => &who.csrf,
        may_act => who.may_act(),
    }
}
