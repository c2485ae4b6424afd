//! The HTTP API (v1). [`router`] is the one Router, served by `axum::serve` locally and by
//! `lambda_http::run` on AWS.

// Handlers return `Result<_, Problem>`: the problem is the response body itself, built once per
// failed request, so boxing it would buy nothing.
#![allow(clippy::result_large_err)]

pub mod dto;
pub mod extract;
pub mod inbound;
pub mod messages;
pub mod ops;
pub mod problem;
pub mod suppressions;
pub mod templates;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::engine::Herald;
use problem::Problem;

/// Largest single-message request (content, data and metadata included).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// Largest bulk request: 10,000 recipients with their data.
pub const MAX_BULK_BYTES: usize = 32 * 1024 * 1024;

#[derive(OpenApi)]
#[openapi(
    info(title = "Herald", description = "One messaging layer: email, SMS and push, in priority lanes."),
    paths(
        messages::send, messages::send_bulk, messages::get, messages::cancel,
        templates::put, templates::get, templates::delete,
        ops::queue_stats, ops::channel_stats, ops::dead_letters, ops::redrive, ops::healthz, ops::readyz,
        suppressions::put, suppressions::get, suppressions::delete, suppressions::list,
        suppressions::import, suppressions::export, inbound::list,
    ),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

async fn openapi_json() -> impl IntoResponse {
    Json(ApiDoc::openapi())
}

async fn not_found() -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "not-found", "no such route")
}

async fn method_not_allowed() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "this route does not take that method",
    )
}

/// The whole API on one Router.
pub fn router(herald: Arc<Herald>) -> Router {
    Router::new()
        .route("/v1/messages", post(messages::send))
        .route(
            "/v1/messages/bulk",
            post(messages::send_bulk).layer(DefaultBodyLimit::max(MAX_BULK_BYTES)),
        )
        .route(
            "/v1/messages/{id}",
            get(messages::get).delete(messages::cancel),
        )
        .route(
            "/v1/templates/{name}",
            put(templates::put)
                .get(templates::get)
                .delete(templates::delete),
        )
        .route("/v1/suppressions", get(suppressions::list))
        .route(
            "/v1/suppressions/import",
            post(suppressions::import).layer(DefaultBodyLimit::max(suppressions::MAX_IMPORT_BYTES)),
        )
        .route("/v1/suppressions/export", get(suppressions::export))
        .route(
            "/v1/suppressions/{channel}/{address}",
            put(suppressions::put)
                .get(suppressions::get)
                .delete(suppressions::delete),
        )
        .route("/v1/inbound", get(inbound::list))
        .route("/v1/stats/queue", get(ops::queue_stats))
        .route("/v1/stats/channels", get(ops::channel_stats))
        .route("/v1/dead-letters", get(ops::dead_letters))
        .route("/v1/dead-letters/redrive", post(ops::redrive))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/openapi.json", get(openapi_json))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_MESSAGE_BYTES))
        .layer(problem::catch_panics())
        .with_state(herald)
}
