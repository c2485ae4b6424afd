//! What a message costs on AWS, counted request by request on moto: every SDK client Herald
//! builds carries the meter's interceptor (tests/support/meter), and the scenarios below run
//! the real handlers. Each prints a table (docs/cost.md turns them into dollars) and holds the
//! budget: if a change adds a request, the test fails and names it.

use std::time::{Duration, Instant};

use futures::StreamExt;
use herald_tests::aws::{endpoint, ses_fixture, ses_notification, AwsApi};
use herald_tests::meter::peek;
use herald_tests::meter::units::item_size;
use herald_tests::meter::{Line, Meter, Tally, Usage};
use serde_json::{json, Value};
use shared::aws::lambda;
use shared::domain::limits::Rate;
use shared::domain::Priority;

const BULK_RECIPIENTS: usize = 10_000;

/// Requests our code makes, and those made on our behalf that we cause (SNS delivering the SES
/// events we subscribe to); not the pollers of Lambda's event-source mappings.
fn ours(line: &Line) -> bool {
    line.0 != "lambda-esm"
}

/// Reads and writes an instance makes on a clock, whatever its traffic: the gateway statuses
/// (read at most every 0.5 s), a rate bucket's pause (every 1 s), the gateway outcomes
/// (written at most every 30 s unless something failed), and the webhook subscriptions (read
/// again every 2 s). Per message they vanish at volume; docs/cost.md prices them per busy
/// instance-second (the subscriptions under "Webhooks out").
fn on_a_clock(line: &Line) -> bool {
    let (_, service, op, table) = line;
    service == "dynamodb"
        && matches!(
            (op.as_str(), table.as_str()),
            ("GetItem", "health")
                | ("GetItem", "rate-limits")
                | ("UpdateItem", "health")
                | ("Scan", "webhook-endpoints")
        )
}

/// What one message costs: ours, without the clocked requests, and without the `stats`
/// function, which writes once per batch of up to 1,000 changes of any messages (a lone
/// message's batch is not what a message costs; the bulk scenario shows its share).
fn per_message(line: &Line) -> bool {
    ours(line) && !on_a_clock(line) && line.0 != "stats"
}

/// The lines a budget covers, for the failure message.
fn explain(usage: &Usage, per: f64, counted: &dyn Fn(&Line) -> bool) -> String {
    usage
        .0
        .iter()
        .filter(|(l, _)| counted(l))
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

/// DynamoDB units and SQS requests per message.
#[derive(Debug)]
struct Budget {
    wru: f64,
    rru: f64,
    sqs: f64,
}

/// Asserts the budget the code holds now and prints the target beside the figures
/// (docs/cost.md says what is left to reach a target not met yet).
fn hold(usage: &Usage, per: f64, counted: &dyn Fn(&Line) -> bool, budget: Budget, target: Budget) {
    let dynamo = usage.total(|l| counted(l) && l.1 == "dynamodb");
    let sqs = usage.total(|l| counted(l) && l.1 == "sqs");
    let (wru, rru, sqs) = (dynamo.wru / per, dynamo.rru / per, sqs.requests / per);
    println!(
        "per message: {wru:.3} WRU, {rru:.3} RRU, {sqs:.3} SQS requests; held to {budget:?}; \
         target {target:?}: {}",
        if wru <= target.wru && rru <= target.rru && sqs <= target.sqs {
            "met"
        } else {
            "not met"
        }
    );
    let table = explain(usage, per, counted);
    assert!(
        wru <= budget.wru,
        "{wru:.3} WRU > {} budget:\n{table}",
        budget.wru
    );
    assert!(
        rru <= budget.rru,
        "{rru:.3} RRU > {} budget:\n{table}",
        budget.rru
    );
    assert!(
        sqs <= budget.sqs,
        "{sqs:.3} SQS requests > {} budget:\n{table}",
        budget.sqs
    );
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
    one_email(api, meter, to, "123456", 4).await
}

/// As [`one_send`], with this body; the stream carries `changes` (the item's four states, and
/// a content item kept apart).
async fn one_email(api: &AwsApi, meter: &Meter, to: &str, body: &str, changes: usize) -> Usage {
    let started = Instant::now();
    let id = api
        .send(json!({ "channel": "email", "priority": "P1", "to": to,
                      "subject": "Your code", "body": body }))
        .await;
    let accepted = started.elapsed();
    let started = Instant::now();
    assert!(api.drain(Priority::P1).await.is_empty());
    let dispatched = started.elapsed();
    let mut usage = meter.take();
    let view = api.view(&id).await;
    assert_eq!(view["status"], "sent", "{view:#}");
    let ses_id = view["provider_message_id"].as_str().unwrap().to_owned();
    meter.take();

    ses_event_delivered(meter);
    let event = ses_notification(ses_fixture("delivery"), &id, &ses_id);
    let started = Instant::now();
    let response = lambda::suppression(&api.herald, event).await;
    let noted = started.elapsed();
    assert!(response.batch_item_failures.is_empty());
    // On moto, with the meter's own look after each write: an upper bound for Lambda's
    // billed duration (docs/cost.md).
    println!(
        "durations on moto: api request {:.1} ms, dispatch (two polls, one invocation) {:.1} ms, \
         suppression invocation {:.1} ms",
        accepted.as_secs_f64() * 1e3,
        dispatched.as_secs_f64() * 1e3,
        noted.as_secs_f64() * 1e3
    );
    usage.merge(meter.take());
    assert_eq!(api.view(&id).await["status"], "delivered");
    meter.take();
    assert_eq!(api.count_changes().await, changes, "the stream's changes");
    usage.merge(meter.take());
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
    cold.print(
        "single send after a cold start, accept -> sent -> delivered",
        1.0,
    );
    let warm = one_send(&api, &meter, "success@simulator.amazonses.com").await;
    warm.print("single send, warm, accept -> sent -> delivered", 1.0);
    hold(
        &warm,
        1.0,
        &per_message,
        // Held to what it costs now: one more request fails the test and names itself. One
        // of the 5 WRU is the message's entry in the search index (`by_tenant`); 0.5 RRU is
        // the look for a contact with the recipient's address (a send joins its thread), and
        // 0.5 each the suppression checks at accept and at dispatch (one look-up item).
        Budget {
            wru: 5.0,
            rru: 2.0,
            sqs: 2.0,
        },
        Budget {
            wru: 5.0,
            rru: 4.0,
            sqs: 3.0,
        },
    );
}

/// A 20 KB email: its content is written once, apart from the status item, so each status
/// change costs what a small message's does (inline, each would cost 20 write units).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_email_is_written_once_and_stays_in_budget() {
    let meter = Meter::new(&endpoint());
    let api = AwsApi::start_metered(&meter).await;
    one_send(&api, &meter, "warm-up@example.com").await;
    meter.take();
    let body = "All the news that fits. ".repeat(20 * 1024 / 24);
    let usage = one_email(&api, &meter, "success@simulator.amazonses.com", &body, 5).await;
    usage.print("a 20 KB email, accept -> sent -> delivered", 1.0);
    let sent = api.sent().await;
    let last = sent.last().expect("sent").to_string();
    assert!(last.contains(&body[..2000]), "SES got the whole body");
    hold(
        &usage,
        1.0,
        &per_message,
        // The content once (21 WRU to write it, 3 RRU to read it eventually consistent at the
        // claim), and otherwise what a small message costs (its search index entry included).
        Budget {
            wru: 26.0,
            rru: 5.0,
            sqs: 2.0,
        },
        // The single send's target with the content written and read once.
        Budget {
            wru: 26.0,
            rru: 7.0,
            sqs: 3.0,
        },
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_job_of_ten_thousand_stays_in_budget_per_recipient() {
    let meter = Meter::new(&endpoint());
    let api = AwsApi::start_metered(&meter).await;
    api.put_news_template().await;
    // Each step of the fan-out below receives the bulk entry again: more receives than the
    // template's maxReceiveCount, which a single Lambda invocation never needs.
    api.stack.allow_receives(api.stack.bulk_url(), 1000).await;
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
    fan_out_in_steps(&api).await;
    let took = started.elapsed();
    let changes = api.count_changes().await;
    assert!(changes >= 2 * BULK_RECIPIENTS, "{changes} changes counted");
    let usage = meter.take();
    let sent = api.sent().await.len();
    assert_eq!(sent, BULK_RECIPIENTS, "every recipient sent once");

    let per = BULK_RECIPIENTS as f64;
    usage.print("bulk job, accept -> fan-out -> sent", per);
    println!("bulk on moto: {BULK_RECIPIENTS} recipients end to end in {took:.1?}");
    hold(
        &usage,
        per,
        &|l: &Line| ours(l) && !on_a_clock(l),
        // Held to what it costs now, with room only for the steps' timing (the job's head is
        // read once per step): two writes per message, the claim that creates it `sending` and
        // its `sent` (a queued message is read from its job until then), and the stored job,
        // deflated (0.01; a bulk message has no search index entry: search finds it through
        // its job); the suppression checks at accept and dispatch (0.5 each: one look-up item
        // per address) and the job's reads (0.03: the dispatchers read its header and parts);
        // a tenth of a SendMessageBatch. The reads have 0.03 of room: a slow run read the job
        // and the contacts a little more often (1.06 where 1.05 was usual); one read more per
        // message is still 0.5.
        Budget {
            wru: 2.04,
            rru: 1.09,
            sqs: 0.12,
        },
        Budget {
            wru: 3.0,
            rru: 2.0,
            sqs: 0.2,
        },
    );

    // A search by recipient reads the job's stored parts (a few units for all 10,000
    // recipients), then the one message found; reading the job's messages instead costs 0.5
    // RRU each, 500 a page.
    meter.take();
    let path = "/v1/messages?to=reader4242%40example.com";
    let (status, page) = api.call(reqwest::Method::GET, path, None).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1), "{page}");
    let search = meter.take();
    search.print("search by recipient, one page", 1.0);
    let rru = search.total(|l| l.1 == "dynamodb").rru;
    println!("search by recipient through a {BULK_RECIPIENTS}-recipient job: {rru:.1} RRU");
    assert!(
        rru <= 40.0,
        "{rru:.1} RRU for one page of search by recipient"
    );
}

/// Fans the job out a step at a time (the `enqueue` handler with a short deadline, as a
/// function near its timeout would), draining the P3 lane after each step: moto's SQS walks every
/// waiting entry on each request, so a 10,000-entry lane would take it hours. Lambda runs the
/// whole fan-out in one invocation; each extra step here costs a GetItem, a
/// ChangeMessageVisibility and a receive, under 0.01 requests per recipient.
async fn fan_out_in_steps(api: &AwsApi) {
    let (stack, backend) = (&api.stack, &api.cold.backend);

    let mut empty_polls = 0;
    loop {
        let step = Duration::from_millis(500);
        let polled = stack
            .poll_once(stack.bulk_url(), 1, |event| async move {
                lambda::enqueue(backend, event, Some(Instant::now() + step)).await
            })
            .await;
        let failures = api.drain(Priority::P3).await;
        assert!(failures.is_empty(), "dispatch failures: {failures:?}");
        match polled {
            Some((_, done)) if done.batch_item_failures.is_empty() => return,
            Some(_) => empty_polls = 0,
            None => {
                empty_polls += 1;
                assert!(empty_polls < 50, "the paused bulk entry never came back");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

const THROTTLED: usize = 1_000;

/// A backlog against a bucket far slower than the lane: 1,000 messages at 10/s. Tokens are
/// taken before anything is claimed, so a message without one is re-timed to its turn with no
/// write to it: no claim, no give-back, nothing on its timeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_backlog_stays_in_budget() {
    let meter = Meter::new(&endpoint());
    let api = AwsApi::start_metered_with(&meter, |settings| {
        let limits = &mut settings.rate_limits;
        limits.gateways.insert("ses".into(), Rate::per_second(10.0));
        limits.bulk_share = 1.0;
    })
    .await;
    let ids: Vec<String> = futures::stream::iter(0..THROTTLED)
        .map(|i| {
            let api = &api;
            async move {
                api.send(json!({ "channel": "email", "priority": "P2",
                                 "to": format!("reader{i}@example.com"),
                                 "subject": "Hello", "body": "A short note" }))
                    .await
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    meter.take();

    let started = Instant::now();
    let receives = drain_throttled(&api).await;
    let took = started.elapsed();
    let usage = meter.take();
    let per = THROTTLED as f64;
    usage.print(
        "throttled backlog: 1,000 messages at 10/s, dispatch only",
        per,
    );
    assert_eq!(api.sent().await.len(), THROTTLED, "every message sent once");
    // The bucket held: 10 a second, the first slice's tokens aside.
    assert!(
        took >= Duration::from_secs((THROTTLED / 10 - 2) as u64),
        "{THROTTLED} sent in {took:.1?} at 10/s"
    );

    // Extra SQS requests: beyond one receive and one delete per full batch of ten, which an
    // unthrottled drain needs (the re-times, the receives and deletes of returning receipts).
    let ours = usage.total(|l| l.0 == "herald" && l.1 == "sqs").requests;
    let deletes = usage
        .total(|l| l.0 == "lambda-esm" && l.2 == "DeleteMessageBatch")
        .requests;
    let full_batches = THROTTLED.div_ceil(10) as f64;
    let extra = (ours + receives as f64 + deletes - 2.0 * full_batches) / per;
    let largest = largest_item(&api, &ids);
    println!(
        "throttled on moto: {THROTTLED} sent in {took:.1?}; {receives} receives with messages, \
         {deletes} deletes, {ours} SQS requests of ours; {extra:.3} extra SQS requests a \
         message (target < 0.5); largest item {largest} bytes (target <= 4096)"
    );
    assert!(
        ours > 0.0,
        "no receipt was re-timed: the lane never outran the bucket, so nothing was tested"
    );
    assert!(extra < 0.5, "{extra:.3} extra SQS requests a message");
    assert!(largest <= 4096, "an item of {largest} bytes");
}

/// Plays the lane's event-source mapping with four pollers (Lambda scales its pollers with a
/// backlog, so the lane is offered far more than the bucket's pace) until the lane is empty;
/// how many receives brought messages (a poller's empty receives are its fixed cost, not a
/// message's).
async fn drain_throttled(api: &AwsApi) -> usize {
    let receives = std::sync::atomic::AtomicUsize::new(0);
    let deadline = Instant::now() + Duration::from_secs(600);
    let poller = || async {
        let stack = &api.stack;
        let url = stack.lane_url(Priority::P2);
        loop {
            let herald = api.herald.clone();
            let polled = stack
                .poll_once(url, 10, |event| async move {
                    lambda::dispatch(&herald, event).await
                })
                .await;
            if polled.is_some() {
                receives.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                continue;
            }
            if stack.queue_count(url).await == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the throttled lane never drained"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    futures::future::join_all((0..4).map(|_| poller())).await;
    receives.into_inner()
}

/// The largest of these messages' items, in bytes as DynamoDB counts them.
fn largest_item(api: &AwsApi, ids: &[String]) -> usize {
    let table = api
        .stack
        .settings
        .tables
        .messages
        .clone()
        .unwrap_or_default();
    ids.iter()
        .map(|id| {
            let item = peek::get_item(&endpoint(), &table, &json!({ "id": { "S": id } }))
                .expect("the message's item");
            item_size(&item)
        })
        .max()
        .unwrap_or(0)
}
