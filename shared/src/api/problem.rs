//! RFC 9457 problem details: every error the API returns, with a stable `type`.

use std::collections::BTreeMap;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::response::{Response as ApiResponse, ResponseBuilder};
use utoipa::openapi::{ObjectBuilder, Ref, RefOr, Type};
use utoipa::{IntoResponses, ToSchema};

use crate::domain::FieldError;

pub const PROBLEM_BASE: &str = "https://herald.dev/problems/";
/// The media type of every error response.
pub const PROBLEM_JSON: &str = "application/problem+json";

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
    /// The offending values, for a problem with fields.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(required = false)]
    pub errors: Vec<FieldProblem>,
    /// Template variables the data lacks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(required = false)]
    pub missing: Vec<String>,
    /// The limit a request ran into (`fuel`, `time`, `output_bytes`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    /// The id of what is in the way of a conflicting request (an assignment).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conflicting: Option<String>,
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
            limit: None,
            conflicting: None,
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

    /// An export larger than this deployment answers at once (Lambda's response cap).
    pub fn export_too_large(cap: usize, narrow: &str) -> Problem {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "export-too-large",
            format!(
                "the export is over {} MB, more than this deployment answers at once: {narrow}",
                cap / (1024 * 1024)
            ),
        )
    }

    pub fn unauthorized(detail: &str) -> Problem {
        Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    /// Another worker is doing this very thing: not a failure, so logged as a note.
    pub fn busy(what: impl std::fmt::Display) -> Problem {
        tracing::info!(%what, "busy; the caller retries");
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "another request is applying this; retry later",
        )
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
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        res
    }
}

impl From<crate::ports::StoreError> for Problem {
    fn from(e: crate::ports::StoreError) -> Problem {
        match e {
            crate::ports::StoreError::Busy(what) => Problem::busy(what),
            e => Problem::unavailable(e),
        }
    }
}

/// One documented problem response.
fn problem_response(description: &str) -> ApiResponse {
    ResponseBuilder::new()
        .description(description)
        .content(
            PROBLEM_JSON,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build()
}

fn responses(list: Vec<(&str, ApiResponse)>) -> BTreeMap<String, RefOr<ApiResponse>> {
    list.into_iter()
        .map(|(status, r)| (status.to_owned(), RefOr::T(r)))
        .collect()
}

/// The problems of every route behind an API key: no valid key (401), or the store behind the
/// key look-up unavailable (503).
pub struct AuthErrors;

impl IntoResponses for AuthErrors {
    fn responses() -> BTreeMap<String, RefOr<ApiResponse>> {
        let mut unauthorized = problem_response("no valid API key");
        unauthorized.headers.insert(
            header::WWW_AUTHENTICATE.as_str().to_owned(),
            HeaderBuilder::new()
                .schema(ObjectBuilder::new().schema_type(Type::String))
                .description(Some("Bearer"))
                .build(),
        );
        responses(vec![
            ("401", unauthorized),
            (
                "403",
                problem_response("the key lacks the scope the route needs (send, read, admin)"),
            ),
            (
                "503",
                problem_response("the store is unavailable; retry later"),
            ),
        ])
    }
}

/// The problems of a JSON request body.
pub struct JsonBodyErrors;

impl IntoResponses for JsonBodyErrors {
    fn responses() -> BTreeMap<String, RefOr<ApiResponse>> {
        responses(vec![
            (
                "400",
                problem_response("malformed JSON, an unknown field, or a malformed header"),
            ),
            (
                "413",
                problem_response("the body is over the route's limit"),
            ),
            (
                "415",
                problem_response("the body is not sent as application/json"),
            ),
            (
                "422",
                problem_response("well-formed JSON with a wrong value; `errors` points at it"),
            ),
        ])
    }
}

/// The problems of a list's query (see `paging`).
pub struct QueryErrors;

impl IntoResponses for QueryErrors {
    fn responses() -> BTreeMap<String, RefOr<ApiResponse>> {
        responses(vec![
            (
                "400",
                problem_response("a query parameter the route does not take, or one given twice"),
            ),
            (
                "422",
                problem_response("a query parameter's value is wrong; `errors` points at it"),
            ),
        ])
    }
}

/// No such resource (or one of another tenant).
pub struct NotFound;

impl IntoResponses for NotFound {
    fn responses() -> BTreeMap<String, RefOr<ApiResponse>> {
        responses(vec![("404", problem_response("no such resource"))])
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
