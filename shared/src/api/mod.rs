//! The HTTP API (v1). [`router`] is the one Router, served by `axum::serve` locally and by
//! `lambda_http::run` on AWS.

// Handlers return `Result<_, Problem>`: the problem is the response body itself, built once per
// failed request, so boxing it would buy nothing.
#![allow(clippy::result_large_err)]

pub mod assignments;
pub mod audit;
pub mod contacts;
pub mod deliverability;
pub mod dto;
pub mod extract;
pub mod forwards;
pub mod inbound;
pub mod messages;
pub mod notify;
pub mod numbers;
pub mod ops;
pub mod paging;
pub mod problem;
pub mod request_id;
pub mod routing;
pub mod rules;
pub mod scopes;
pub mod search;
pub mod senders;
pub mod stream;
pub mod suppressions;
pub mod templates;
pub mod threads;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::engine::Herald;
use problem::Problem;

/// Largest single-message request (content, data and metadata included).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// Largest bulk request: 10,000 recipients with their data.
pub const MAX_BULK_BYTES: usize = 32 * 1024 * 1024;
/// Behind API Gateway, Lambda takes at most 6 MB per invocation, the event around the body
/// (headers, JSON escaping) included: larger bodies get a 413 from Herald below that, not an
/// opaque error from the platform.
pub const MAX_LAMBDA_BODY_BYTES: usize = 5 * 1024 * 1024;

/// The largest bodies the bulk and import routes take, and the largest export they answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    pub bulk: usize,
    pub import: usize,
    /// `None`: exports stream, whatever their size. Lambda buffers a response and carries at
    /// most 6 MB, so there a larger export is a 422 that says how to narrow it, not a 5xx.
    pub export: Option<usize>,
}

/// The route's [`BodyLimits::export`], for the export handlers.
#[derive(Debug, Clone, Copy)]
pub struct ExportLimit(pub Option<usize>);

impl BodyLimits {
    /// `herald serve`: the whole of a large bulk send in one request.
    pub const EMBEDDED: BodyLimits = BodyLimits {
        bulk: MAX_BULK_BYTES,
        import: suppressions::MAX_IMPORT_BYTES,
        export: None,
    };
    /// The `api` function behind API Gateway's HTTP API.
    pub const LAMBDA: BodyLimits = BodyLimits {
        bulk: MAX_LAMBDA_BODY_BYTES,
        import: MAX_LAMBDA_BODY_BYTES,
        export: Some(MAX_LAMBDA_BODY_BYTES),
    };
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Herald", description = "One messaging layer: email, SMS and push, in priority lanes."),
    paths(
        messages::send, messages::send_bulk, messages::get, messages::cancel, search::list, search::bulk, search::bulk_list,
        templates::put, templates::get, templates::delete, templates::put_locale, templates::delete_locale,
        deliverability::get_quiet_hours, deliverability::put_quiet_hours, deliverability::get_reputation,
        deliverability::put_reputation_settings, deliverability::resume, deliverability::list_gateways,
        deliverability::unsubscribe_page, deliverability::unsubscribe,
        ops::queue_stats, ops::channel_stats, ops::dead_letters, ops::redrive, ops::healthz, ops::readyz,
        suppressions::put, suppressions::get, suppressions::delete, suppressions::list,
        suppressions::import, suppressions::export, inbound::list, inbound::get, inbound::media,
        rules::get, rules::put, rules::test, rules::get_thread_policy, rules::put_thread_policy,
        senders::list, senders::put, senders::delete, audit::list, audit::export,
        notify::create, notify::list, notify::get, notify::update, notify::delete,
        notify::rotate_secret, notify::deliveries, notify::delivery, notify::replay, notify::replay_since,
        stream::stream, forwards::create, forwards::list, forwards::get, forwards::update, forwards::delete,
        forwards::deliveries, forwards::stream,
        contacts::create, contacts::list, contacts::get, contacts::update, contacts::add_identity,
        contacts::merge, threads::list, threads::get, threads::update, threads::read,
        threads::reply, numbers::create, numbers::list, numbers::get, numbers::update,
        assignments::create, assignments::list, assignments::get, assignments::end,
        assignments::reassign, routing::simulate, routing::get_settings, routing::put_settings,
        routing::violations,
    ),
    components(schemas(
        Problem,
        problem::FieldProblem,
        dto::BulkRecipientInput,
        paging::Flag,
        numbers::StateFilter
    )),
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
    Json(openapi_document())
}

/// The OpenAPI document as served.
pub fn openapi_document() -> serde_json::Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    camel_case_links(&mut doc);
    doc
}

/// utoipa 5.5 writes a Link's fields in snake_case (`operation_id`); OpenAPI names them in
/// camelCase, and tools ignore a link without `operationId`.
fn camel_case_links(doc: &mut serde_json::Value) {
    let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) else {
        return;
    };
    let links = paths
        .values_mut()
        .filter_map(|item| item.as_object_mut())
        .flat_map(|item| item.values_mut())
        .filter_map(|op| op.get_mut("responses")?.as_object_mut())
        .flat_map(|responses| responses.values_mut())
        .filter_map(|r| r.get_mut("links")?.as_object_mut())
        .flat_map(|links| links.values_mut())
        .filter_map(|link| link.as_object_mut());
    for link in links {
        for (snake, camel) in [
            ("operation_id", "operationId"),
            ("operation_ref", "operationRef"),
            ("request_body", "requestBody"),
        ] {
            if let Some(v) = link.remove(snake) {
                link.insert(camel.to_owned(), v);
            }
        }
    }
}

/// A one-click POST carries `List-Unsubscribe=One-Click` and nothing much else.
const UNSUBSCRIBE_BODY_BYTES: usize = 4096;

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

/// The whole API on one Router, with the embedded server's body limits.
pub fn router(herald: Arc<Herald>) -> Router {
    router_with(herald, BodyLimits::EMBEDDED)
}

/// The whole API on one Router.
pub fn router_with(herald: Arc<Herald>, limits: BodyLimits) -> Router {
    Router::new()
        .route("/v1/messages", post(messages::send).get(search::list))
        .route("/v1/bulk", get(search::bulk_list))
        .route("/v1/bulk/{bulk_id}", get(search::bulk))
        .route(
            "/v1/messages/bulk",
            post(messages::send_bulk).layer(DefaultBodyLimit::max(limits.bulk)),
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
        .route(
            "/v1/templates/{name}/locales/{locale}",
            put(templates::put_locale).delete(templates::delete_locale),
        )
        .route(
            "/v1/quiet-hours",
            get(deliverability::get_quiet_hours).put(deliverability::put_quiet_hours),
        )
        .route("/v1/reputation", get(deliverability::get_reputation))
        .route("/v1/gateways", get(deliverability::list_gateways))
        .route(
            "/v1/reputation/settings",
            put(deliverability::put_reputation_settings),
        )
        .route("/v1/reputation/resume", post(deliverability::resume))
        .route(
            "/u/{token}",
            get(deliverability::unsubscribe_page)
                .post(deliverability::unsubscribe)
                .layer(DefaultBodyLimit::max(UNSUBSCRIBE_BODY_BYTES)),
        )
        .route("/v1/suppressions", get(suppressions::list))
        .route(
            "/v1/suppressions/import",
            post(suppressions::import).layer(DefaultBodyLimit::max(limits.import)),
        )
        .route(
            "/v1/suppressions/export",
            get(suppressions::export).layer(Extension(ExportLimit(limits.export))),
        )
        .route(
            "/v1/suppressions/{channel}/{address}",
            put(suppressions::put)
                .get(suppressions::get)
                .delete(suppressions::delete),
        )
        .route("/v1/inbound", get(inbound::list))
        .route("/v1/inbound/{id}", get(inbound::get))
        .route("/v1/media/{id}", get(inbound::media))
        .route("/v1/inbound-rules", get(rules::get).put(rules::put))
        .route("/v1/inbound-rules/test", post(rules::test))
        .route(
            "/v1/thread-policy",
            get(rules::get_thread_policy).put(rules::put_thread_policy),
        )
        .route("/v1/numbers", post(numbers::create).get(numbers::list))
        .route(
            "/v1/numbers/{number}",
            get(numbers::get).patch(numbers::update),
        )
        .route(
            "/v1/assignments",
            post(assignments::create).get(assignments::list),
        )
        .route("/v1/assignments/{id}", get(assignments::get))
        .route("/v1/assignments/{id}/end", post(assignments::end))
        .route("/v1/assignments/{id}/reassign", post(assignments::reassign))
        .route("/v1/routing/simulate", post(routing::simulate))
        .route(
            "/v1/relay-settings",
            get(routing::get_settings).put(routing::put_settings),
        )
        .route("/v1/policy/violations", get(routing::violations))
        .route("/v1/sender-identities", get(senders::list))
        .route(
            "/v1/sender-identities/{identity}",
            put(senders::put).delete(senders::delete),
        )
        .route("/v1/audit", get(audit::list))
        .route(
            "/v1/audit/export",
            get(audit::export).layer(Extension(ExportLimit(limits.export))),
        )
        .route(
            "/v1/webhook-endpoints",
            post(notify::create).get(notify::list),
        )
        .route(
            "/v1/webhook-endpoints/{id}",
            get(notify::get)
                .patch(notify::update)
                .delete(notify::delete),
        )
        .route(
            "/v1/webhook-endpoints/{id}/rotate-secret",
            post(notify::rotate_secret),
        )
        .route(
            "/v1/webhook-endpoints/{id}/deliveries",
            get(notify::deliveries),
        )
        .route(
            "/v1/webhook-endpoints/{id}/replay",
            post(notify::replay_since),
        )
        .route("/v1/webhook-deliveries/{id}", get(notify::delivery))
        .route("/v1/events/stream", get(stream::stream))
        .route(
            "/v1/dev-forwards",
            post(forwards::create).get(forwards::list),
        )
        .route("/v1/dev-forwards/stream", get(forwards::stream))
        .route(
            "/v1/dev-forwards/{id}",
            get(forwards::get)
                .patch(forwards::update)
                .delete(forwards::delete),
        )
        .route(
            "/v1/dev-forwards/{id}/deliveries",
            get(forwards::deliveries),
        )
        .route("/v1/webhook-deliveries/{id}/replay", post(notify::replay))
        .route("/v1/contacts", post(contacts::create).get(contacts::list))
        .route(
            "/v1/contacts/{id}",
            get(contacts::get).patch(contacts::update),
        )
        .route("/v1/contacts/{id}/identities", post(contacts::add_identity))
        .route("/v1/contacts/{id}/merge", post(contacts::merge))
        .route("/v1/threads", get(threads::list))
        .route("/v1/threads/{id}", get(threads::get).patch(threads::update))
        .route("/v1/threads/{id}/read", post(threads::read))
        .route("/v1/threads/{id}/messages", post(threads::reply))
        .route("/v1/stats/queue", get(ops::queue_stats))
        .route("/v1/stats/channels", get(ops::channel_stats))
        .route("/v1/dead-letters", get(ops::dead_letters))
        .route("/v1/dead-letters/redrive", post(ops::redrive))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/openapi.json", get(openapi_json))
        .route_layer(axum::middleware::from_fn(crate::telemetry::http::record))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_MESSAGE_BYTES))
        .layer(problem::catch_panics())
        // Outermost, so every answer (a 404, a caught panic) carries the request's id.
        .layer(axum::middleware::from_fn(request_id::assign))
        .with_state(herald)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn operations() -> Vec<(String, serde_json::Value)> {
        let doc = openapi_document();
        let mut out = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                out.push((format!("{} {path}", method.to_uppercase()), op.clone()));
            }
        }
        out
    }

    #[test]
    fn api_doc_every_error_is_problem_json() {
        // The unsubscribe links are pages for the people who click them, not API: HTML.
        for (op, spec) in operations()
            .into_iter()
            .filter(|(op, _)| !op.contains(" /u/"))
        {
            for (status, response) in spec["responses"].as_object().unwrap() {
                let media: Vec<&String> = response["content"]
                    .as_object()
                    .map(|c| c.keys().collect())
                    .unwrap_or_default();
                if status.as_str() >= "400" {
                    assert_eq!(media, [problem::PROBLEM_JSON], "{op} {status}");
                }
            }
        }
    }

    #[test]
    fn api_doc_keyed_routes_document_401_and_503() {
        for (op, spec) in operations() {
            if spec.get("security").is_some() {
                for status in ["401", "503"] {
                    assert!(
                        spec["responses"].get(status).is_some(),
                        "{op} lacks {status}"
                    );
                }
            }
        }
    }

    #[test]
    fn api_doc_message_ids_have_the_pattern_the_server_reads() {
        for (op, spec) in operations() {
            for p in spec["parameters"].as_array().into_iter().flatten() {
                if p["name"] == "id" {
                    assert_eq!(p["schema"]["pattern"], paging::MESSAGE_ID_PATTERN, "{op}");
                }
            }
        }
    }

    #[test]
    fn api_doc_links_name_their_target_in_camel_case() {
        let doc = openapi_document();
        let link = &doc["paths"]["/v1/messages"]["post"]["responses"]["202"]["links"]["GetMessage"];
        assert_eq!(link["operationId"], "get_message", "{link}");
        assert!(link.get("operation_id").is_none(), "{link}");
    }

    #[test]
    fn api_doc_lists_page_with_limit_and_after() {
        for (op, spec) in operations() {
            let names: Vec<&str> = spec["parameters"]
                .as_array()
                .map(|ps| ps.iter().filter_map(|p| p["name"].as_str()).collect())
                .unwrap_or_default();
            let lists = [
                "GET /v1/messages",
                "GET /v1/suppressions",
                "GET /v1/inbound",
                "GET /v1/dead-letters",
                "GET /v1/audit",
                "GET /v1/webhook-endpoints/{id}/deliveries",
                "GET /v1/dev-forwards/{id}/deliveries",
                "GET /v1/contacts",
                "GET /v1/threads",
                "GET /v1/numbers",
                "GET /v1/assignments",
                "GET /v1/policy/violations",
                // A thread's timeline pages.
                "GET /v1/threads/{id}",
            ];
            assert_eq!(
                names.contains(&"limit") && names.contains(&"after"),
                lists.contains(&op.as_str()),
                "{op}: {names:?}"
            );
        }
    }
}
