//! What a message costs on AWS, counted request by request on moto: every SDK client Herald
//! builds carries the meter's interceptor (tests/support/meter), and the scenarios below run
//! the real handlers. Each prints a table (docs/cost.md turns them into dollars) and holds the
//! budget: if a change adds a request, the test fails and names it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use herald_tests::aws::{endpoint, ses_fixture, ses_notification, AwsApi};
use herald_tests::meter::{Line, Meter, Tally, Usage};
use serde_json::{json, Value};
use shared::aws::lambda;
use shared::domain::Priority;

const BULK_RECIPIENTS: usize = 10_000;

/// Requests our code makes, and those made on our behalf that we cause (SNS delivering the SES
/// events we subscribe to); not the pollers of Lambda's event-source mappings.
fn ours(line: &Line) -> bool {
    line.0 != "lambda-esm"
}

fn of(service: &'static str) -> impl Fn(&Line) -> bool {
    move |line: &Line| ours(line) && line.1 == service
}

/// The lines over a budget, for the failure message.
fn explain(usage: &Usage, per: f64) -> String {
    usage
        .0
        .iter()
        .filter(|(l, _)| ours(l))
        .map(|((_, service, op, target), t)| {
            format!(
                "{service} {op} {target}: {:.3} requests, {:.3} WRU, {:.3} RRU",
                t.requests / per,
                t.wru / per,
                t.rru / per
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

struct Budget {
    wru: f64,
    rru: f64,
    sqs: f64,
}

fn hold(usage: &Usage, per: f64, budget: Budget) {
    let dynamo = usage.total(of("dynamodb"));
    let sqs = usage.total(of("sqs"));
    let (wru, rru, sqs) = (dynamo.wru / per, dynamo.rru / per, sqs.requests / per);
    let table = explain(usage, per);
    assert!(wru <= budget.wru, "{wru:.3} WRU > {} budget:\n{table}", budget.wru);
    assert!(rru <= budget.rru, "{rru:.3} RRU > {} budget:\n{table}", budget.rru);
    assert!(sqs <= budget.sqs, "{sqs:.3} SQS requests > {} budget:\n{table}", budget.sqs);
}

/// SNS delivers each SES event we subscribe to into the events queue: one SQS request each,
/// and Lambda's poller receives and deletes it.
fn ses_event_delivered(meter: &Meter) {
    let line = |actor: &str, op: &str| -> Line {
        (actor.into(), "sqs".into(), op.into(), "ses-events".into())
    };
    let one = Tally {
        requests: 1.0,
        ..Tally::default()
    };
    meter.add(line("sns", "SendMessage"), one.clone());
    meter.add(line("lambda-esm", "ReceiveMessage"), one.clone());
    meter.add(line("lambda-esm", "DeleteMessageBatch"), one);
}

/// One email from accept to `delivered` (an SES delivery event through the `suppression`
/// function): what it asked of AWS, the test's own looks left out.
async fn one_send(api: &AwsApi, meter: &Meter, to: &str) -> Usage {
    let id = api
        .send(json!({ "channel": "email", "priority": "P1", "to": to,
                      "subject": "Your code", "body": "123456" }))
        .await;
    assert!(api.drain(Priority::P1).await.is_empty());
    let mut usage = meter.take();
    let view = api.view(&id).await;
    assert_eq!(view["status"], "sent", "{view:#}");
    let ses_id = view["provider_message_id"].as_str().unwrap().to_owned();
    meter.take();

    ses_event_delivered(meter);
    let event = ses_notification(ses_fixture("delivery"), &id, &ses_id);
    let response = lambda::suppression(&api.herald, event).await;
    assert!(response.batch_item_failures.is_empty());
    usage.merge(meter.take());
    assert_eq!(api.view(&id).await["status"], "delivered");
    meter.take();
    usage
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_send_from_accept_to_delivered_stays_in_budget() {
    let meter = Meter::new(&endpoint());
    let api = AwsApi::start_metered(&meter).await;
    meter.take(); // the stack's set-up

    // The first message meets empty caches (API key, gateway health, pauses): a cold start's
    // price. The budget holds for the next one, as every message after a cold start costs.
    let cold = one_send(&api, &meter, "first@example.com").await;
    cold.print("single send after a cold start, accept -> sent -> delivered", 1.0);
    let warm = one_send(&api, &meter, "success@simulator.amazonses.com").await;
    warm.print("single send, warm, accept -> sent -> delivered", 1.0);
    hold(
        &warm,
        1.0,
        Budget {
            wru: 5.0,
            rru: 4.0,
            sqs: 3.0,
        },
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_job_of_ten_thousand_stays_in_budget_per_recipient() {
    let meter = Meter::new(&endpoint());
    let api = AwsApi::start_metered(&meter).await;
    let (put, _) = api
        .call(
            reqwest::Method::PUT,
            "/v1/templates/news",
            Some(json!({ "subject": "News for {{ name }}", "text": "Hello {{ name }}" })),
        )
        .await;
    assert!(put.is_success());
    meter.take();

    let recipients: Vec<Value> = (0..BULK_RECIPIENTS)
        .map(|i| json!({ "to": format!("reader{i}@example.com"), "data": { "name": format!("Reader {i}") } }))
        .collect();
    let body = json!({ "channel": "email", "priority": "P3", "template": "news", "recipients": recipients });
    let (status, reply) = api
        .call(reqwest::Method::POST, "/v1/messages/bulk", Some(body))
        .await;
    assert_eq!(status, 202, "{reply}");

    let started = Instant::now();
    fan_out_while_draining(&api).await;
    let took = started.elapsed();
    let usage = meter.take();
    let sent = api.sent().await.len();
    assert_eq!(sent, BULK_RECIPIENTS, "every recipient sent once");

    let per = BULK_RECIPIENTS as f64;
    usage.print("bulk job, accept -> fan-out -> sent", per);
    println!("bulk on moto: {BULK_RECIPIENTS} recipients end to end in {took:.1?}");
    hold(
        &usage,
        per,
        Budget {
            wru: 3.0,
            rru: 2.0,
            sqs: 0.2,
        },
    );
}

/// Runs the `enqueue` function and the P3 lane's `dispatch` function side by side, as Lambda
/// would, so the lane stays short (moto's SQS slows down with every entry waiting).
async fn fan_out_while_draining(api: &AwsApi) {
    let stack = &api.stack;
    let backend = &api.cold.backend;
    let fanned_out = AtomicBool::new(false);
    let fan_out = async {
        let deadline = Some(Instant::now() + Duration::from_secs(600));
        let (_, response) = stack
            .poll_once(stack.bulk_url(), 1, |event| async move {
                lambda::enqueue(backend, event, deadline).await
            })
            .await
            .expect("the bulk entry");
        assert!(response.batch_item_failures.is_empty());
        fanned_out.store(true, Ordering::SeqCst);
    };
    let drain = async {
        while !fanned_out.load(Ordering::SeqCst) {
            let failures = api.drain(Priority::P3).await;
            assert!(failures.is_empty(), "dispatch failures: {failures:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::join!(fan_out, drain);
    assert!(api.drain(Priority::P3).await.is_empty());
}
