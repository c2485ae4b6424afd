//! The sample events in `events/`, fed to the handlers the Lambda functions run: API Gateway
//! requests through lambda_http's parser into the Router, SQS batches into `dispatch` and
//! `enqueue`. The stack lives on moto.

use std::path::{Path, PathBuf};

use aws_lambda_events::event::sqs::SqsEvent;
use herald_tests::aws::{AwsApi, Stack};
use http_body_util::BodyExt;
use lambda_http::http::HeaderValue;
use serde_json::Value;
use shared::aws::lambda::{self, ColdStart};
use tower::ServiceExt;

fn events_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../events")
}

fn fixture(path: &str) -> String {
    std::fs::read_to_string(events_dir().join(path))
        .unwrap_or_else(|e| panic!("events/{path}: {e}"))
}

/// An API Gateway v2 request from `events/api/`, with the placeholder key replaced.
async fn call_api(router: &axum::Router, name: &str, key: &str) -> (u16, Value) {
    let mut request = lambda_http::request::from_str(&fixture(&format!("api/{name}.json")))
        .unwrap_or_else(|e| panic!("events/api/{name}.json is not an API Gateway request: {e}"));
    if request.headers().contains_key("authorization") {
        request.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {key}")).unwrap(),
        );
    }
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_event_reaches_its_route() {
    let api = AwsApi::start().await;
    let key = api.key.clone();
    let router = shared::api::router(api.herald.clone());
    // In an order that makes each call meaningful: the template before the bulk send.
    let expected: [(&str, u16); 14] = [
        ("healthz", 200),
        ("readyz", 200),
        ("openapi", 200),
        ("put-template", 201),
        ("get-template", 200),
        ("send-message", 202),
        ("send-bulk", 202),
        ("get-message", 404),
        ("cancel-message", 404),
        ("queue-stats", 200),
        ("channel-stats", 200),
        ("dead-letters", 200),
        ("redrive", 200),
        ("delete-template", 204),
    ];
    let covered: Vec<String> = std::fs::read_dir(events_dir().join("api"))
        .unwrap()
        .map(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .trim_end_matches(".json")
                .to_owned()
        })
        .collect();
    for name in &covered {
        assert!(
            expected.iter().any(|(n, _)| n == name),
            "events/api/{name}.json has no expectation here"
        );
    }
    for (name, status) in expected {
        let (got, body) = call_api(&router, name, &key).await;
        assert_eq!(got, status, "events/api/{name}.json: {body:#}");
        if name == "send-bulk" {
            assert_eq!(body["queued"], 2, "{body:#}");
            assert_eq!(
                body["rejected"][0]["index"], 2,
                "the bad address, by index: {body:#}"
            );
        }
    }
    // The placeholder key itself is refused with a problem document.
    let request = lambda_http::request::from_str(&fixture("api/queue-stats.json")).unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
}

/// Lambda takes at most 6 MB per invocation: the `api` function's Router refuses a larger
/// bulk body itself, with a problem document, below that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lambda_router_refuses_bodies_lambda_cannot_carry() {
    let api = AwsApi::start().await;
    let router = shared::api::router_with(api.herald.clone(), shared::api::BodyLimits::LAMBDA);
    let big = format!(
        r#"{{"channel":"email","subject":"s","body":"b","recipients":[{{"to":"a@example.com","data":{{"pad":"{}"}}}}]}}"#,
        "x".repeat(shared::api::MAX_LAMBDA_BODY_BYTES)
    );
    let request = lambda_http::http::Request::builder()
        .method("POST")
        .uri("/v1/messages/bulk")
        .header("authorization", format!("Bearer {}", api.key))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(big))
        .unwrap();
    let response = router.oneshot(request).await.unwrap();
    assert_eq!(response.status().as_u16(), 413);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
}

fn sqs_event(path: &str) -> SqsEvent {
    serde_json::from_str(&fixture(path))
        .unwrap_or_else(|e| panic!("events/{path} is not an SQS event: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_events_drive_dispatch_and_enqueue() {
    let stack = Stack::create().await;
    let cold = ColdStart::with(&stack.sdk, stack.settings.clone()).unwrap();

    // Entries for messages this stack never stored: finished, nothing to retry.
    let batch = lambda::dispatch(&cold.herald, sqs_event("dispatch/batch.json")).await;
    assert!(batch.batch_item_failures.is_empty(), "{batch:?}");

    let poison = sqs_event("dispatch/poison.json");
    let poison_id = poison
        .records
        .iter()
        .find(|r| !r.body.as_deref().unwrap_or_default().contains("\"lane\""))
        .and_then(|r| r.message_id.clone())
        .unwrap();
    let response = lambda::dispatch(&cold.herald, poison).await;
    let failed: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(
        failed,
        [poison_id.as_str()],
        "only the poison record is kept"
    );

    // A scheduled entry delivered early is kept (its receipt cannot be re-timed here, as it
    // came from a file, so it stays for the visibility timeout either way).
    let early = lambda::dispatch(&cold.herald, sqs_event("dispatch/scheduled.json")).await;
    assert_eq!(early.batch_item_failures.len(), 1, "{early:?}");

    // A job that was never committed is dropped; a poison entry is kept for the DLQ.
    let missing = lambda::enqueue(&cold.backend, sqs_event("enqueue/bulk-job.json"), None).await;
    assert!(missing.batch_item_failures.is_empty(), "{missing:?}");
    let bad = lambda::enqueue(&cold.backend, sqs_event("enqueue/poison.json"), None).await;
    assert_eq!(bad.batch_item_failures.len(), 1);
}
