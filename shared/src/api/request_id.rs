//! Every request's id: the caller's `X-Request-Id` when it is a sane token, else a new UUIDv7.
//! The response carries it back, the request's tracing span carries it, and it becomes the
//! correlation id of the messages the request creates unless the caller sent an
//! `X-Correlation-Id`, so one grep of the logs finds a message's life from its request on.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::{info_span, Instrument};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");

/// The request's id, in the request's extensions for handlers (the audit log records it).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// A caller's id, if it is 1-128 visible ASCII characters (it goes into logs and headers).
pub fn usable_id(value: &HeaderValue) -> Option<&str> {
    value.to_str().ok().filter(|v| {
        !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| (0x21..=0x7e).contains(&b))
    })
}

/// The middleware: names the request, runs it inside its span, answers with the id.
pub async fn assign(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(usable_id)
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    // Built from a usable id or a UUID, so the conversion cannot fail.
    let value = HeaderValue::from_str(&id).ok();
    if let Some(v) = &value {
        let has_correlation = req
            .headers()
            .get(&CORRELATION_ID)
            .and_then(usable_id)
            .is_some();
        if !has_correlation {
            req.headers_mut().insert(CORRELATION_ID, v.clone());
        }
    }
    let span = info_span!("request", request_id = %id, method = %req.method());
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut res = next.run(req).instrument(span).await;
    if let Some(v) = value {
        res.headers_mut().insert(REQUEST_ID, v);
    }
    res
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use axum::body::Body;
    use axum::http::HeaderMap;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    use super::*;

    /// Answers with the correlation id the handler saw.
    async fn echo_correlation(headers: HeaderMap) -> String {
        crate::api::extract::correlation_id(&headers)
    }

    async fn call(headers: &[(&str, &str)]) -> (Option<String>, String) {
        let app = Router::new()
            .route("/", get(echo_correlation))
            .layer(axum::middleware::from_fn(assign));
        let mut req = Request::builder().uri("/");
        for (h, v) in headers {
            req = req.header(*h, *v);
        }
        let res = app.oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        let id = res
            .headers()
            .get(&REQUEST_ID)
            .map(|v| v.to_str().unwrap().to_owned());
        let body = axum::body::to_bytes(res.into_body(), 1024).await.unwrap();
        (id, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn a_callers_id_is_answered_and_becomes_the_correlation_id() {
        let (id, correlation) = call(&[("x-request-id", "req-42")]).await;
        assert_eq!(id.as_deref(), Some("req-42"));
        assert_eq!(correlation, "req-42");
    }

    #[tokio::test]
    async fn an_explicit_correlation_id_wins() {
        let (id, correlation) =
            call(&[("x-request-id", "req-42"), ("x-correlation-id", "order-7")]).await;
        assert_eq!(id.as_deref(), Some("req-42"));
        assert_eq!(correlation, "order-7");
    }

    #[tokio::test]
    async fn a_missing_or_unusable_id_is_replaced_by_a_new_one() {
        let long = "x".repeat(129);
        for given in [None, Some("has space"), Some(long.as_str())] {
            let headers: Vec<(&str, &str)> =
                given.map(|g| ("x-request-id", g)).into_iter().collect();
            let (id, correlation) = call(&headers).await;
            let id = id.expect("every response has an id");
            assert!(uuid::Uuid::parse_str(&id).is_ok(), "{given:?} -> {id}");
            assert_eq!(correlation, id);
        }
    }
}
