//! RFC 9457 problem details: every error the API returns, with a stable `type`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::ToSchema;

use crate::domain::FieldError;

pub const PROBLEM_BASE: &str = "https://herald.dev/problems/";

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FieldProblem {
    /// JSON pointer (RFC 6901) of the offending value in the request body.
    pub pointer: String,
    pub code: String,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldProblem>,
    /// Template variables the data lacks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
}

impl Problem {
    pub fn new(status: StatusCode, slug: &str, detail: impl Into<String>) -> Problem {
        Problem {
            kind: format!("{PROBLEM_BASE}{slug}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
            missing: Vec::new(),
        }
    }

    pub fn field(status: StatusCode, slug: &str, e: FieldError) -> Problem {
        let mut p = Problem::new(status, slug, e.detail.clone());
        p.errors.push(FieldProblem {
            pointer: e.pointer,
            code: e.code.to_owned(),
            detail: e.detail,
        });
        p
    }

    pub fn invalid(e: FieldError) -> Problem {
        Problem::field(StatusCode::UNPROCESSABLE_ENTITY, "validation", e)
    }

    pub fn not_found(what: &str) -> Problem {
        Problem::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("{what} not found"),
        )
    }

    pub fn unauthorized(detail: &str) -> Problem {
        Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    pub fn unavailable(e: impl std::fmt::Display) -> Problem {
        tracing::error!(error = %e, "store unavailable");
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store-unavailable",
            "the message store is unavailable; retry later",
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut res = (status, body).into_response();
        let headers = res.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        res
    }
}

impl From<crate::ports::StoreError> for Problem {
    fn from(e: crate::ports::StoreError) -> Problem {
        Problem::unavailable(e)
    }
}

/// What a panicking handler answers with.
pub type PanicHandler = fn(Box<dyn std::any::Any + Send + 'static>) -> Response;

/// Turns a panic in any handler below it into a 500 problem: the API and the webhooks both sit
/// under it, so no input ends in a dropped connection.
pub fn catch_panics() -> CatchPanicLayer<PanicHandler> {
    CatchPanicLayer::custom(panic_to_problem as PanicHandler)
}

fn panic_to_problem(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    // The payload may hold request data: it is not logged.
    tracing::error!("handler panicked");
    Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error",
    )
    .into_response()
}
