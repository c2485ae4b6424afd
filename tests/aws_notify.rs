//! Webhooks out on AWS (moto): endpoints through the API over DynamoDB, events queued on the
//! ordered (FIFO) notify queue by the API and the dispatcher, and the `notify` function's
//! handler played over both notify queues: it delivers in order (verified by the Python
//! `standardwebhooks` package), retries on the retry queue by hiding the entry, and a delivery
//! out of retries ends in the DLQ.

use std::time::Duration;

use herald_tests::aws::{ses_fixture, ses_notification, AwsApi};
use herald_tests::receiver::Receiver;
use reqwest::Method;
use serde_json::{json, Value};
use shared::aws::lambda::{self, ColdStart};
use shared::aws::settings::WEBHOOKS;
use shared::aws::{notify_function, AwsSettings};
use shared::domain::notify::RetrySchedule;
use shared::domain::Priority;
use shared::engine::notify::deliver::Notifier;
use shared::engine::notify::DevAllowList;
use shared::webhooks::signature::twilio_signature;
use tower::ServiceExt;

async fn api() -> AwsApi {
    AwsApi::start_tuned(|c| {
        c.notify.policy.allow_loopback = true;
        c.notify.retries = RetrySchedule(vec![Duration::from_secs(1); 2]);
        c.notify.timeout = Duration::from_secs(2);
        c.notify.subscriptions_refresh = Duration::ZERO;
        c.notify.dev_allow = DevAllowList::parse(&["127.0.0.1"]).expect("allow-list");
    })
    .await
}

/// The retry queue: where a delivery whose try failed waits.
fn retry_url(api: &AwsApi) -> String {
    api.stack
        .settings
        .queues
        .notify
        .clone()
        .expect("notify queue")
}

/// The ordered (FIFO) queue: events and first tries.
fn ordered_url(api: &AwsApi) -> String {
    api.stack
        .settings
        .queues
        .notify_ordered
        .clone()
        .expect("ordered notify queue")
}

/// Plays the notify queue into the function's handler until `done`, or fails after 30 s.
async fn play_until(api: &AwsApi, notifier: &Notifier, what: &str, done: impl Fn() -> bool) {
    for _ in 0..150 {
        if done() {
            return;
        }
        if !play_once(api, notifier).await {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    panic!("the notify queue never got to {what}");
}

/// Plays one poll of each notify queue into the function's handler; whether it found any.
async fn play_once(api: &AwsApi, notifier: &Notifier) -> bool {
    let mut found = false;
    for url in [ordered_url(api), retry_url(api)] {
        found |= api
            .stack
            .poll_once(&url, 10, |event| async {
                notify_function::notify(&api.herald, &api.cold.backend.lanes, notifier, event, None)
                    .await
            })
            .await
            .is_some();
    }
    found
}

/// Plays the notify queue until three polls in a row find nothing.
async fn play_out(api: &AwsApi, notifier: &Notifier) {
    let mut empty = 0;
    while empty < 3 {
        empty = if play_once(api, notifier).await {
            0
        } else {
            empty + 1
        };
    }
}

async fn endpoint(api: &AwsApi, url: &str, types: &[&str]) -> Value {
    let (status, body) = api
        .call(
            Method::POST,
            "/v1/webhook-endpoints",
            Some(json!({ "url": url, "event_types": types })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body
}

/// An endpoint's delivery log (first page).
async fn deliveries(api: &AwsApi, ep: &Value) -> Value {
    let ep_id = ep["id"].as_str().expect("id");
    let path = format!("/v1/webhook-endpoints/{ep_id}/deliveries");
    let (status, page) = api.call(Method::GET, &path, None).await;
    assert_eq!(status, 200, "{page}");
    page
}

/// A receiver answering as `plan` says, registered for `types` and trusting its secret.
async fn trusted_endpoint(api: &AwsApi, plan: &str, types: &[&str]) -> (Receiver, Value) {
    let rx = Receiver::start(plan);
    let ep = endpoint(api, &rx.url, types).await;
    rx.trust(&[ep["secret"].as_str().expect("secret")]);
    (rx, ep)
}

#[tokio::test]
async fn the_notify_function_delivers_signed_events_and_retries() {
    let api = api().await;
    let notifier = Notifier::new(&api.herald.config.notify);
    let (rx, ep) = trusted_endpoint(&api, "500", &["message.queued", "message.sent"]).await;
    let id = api
        .send(
            json!({"channel": "email", "priority": "P1", "to": "ann@example.com",
                     "subject": "Hi", "body": "x", "external_id": "ext-9"}),
        )
        .await;
    api.drain(Priority::P1).await;
    let of = |t: &str| {
        rx.requests()
            .into_iter()
            .filter(|r| r["body"]["type"] == t && r["body"]["data"]["message_id"] == id.as_str())
            .collect::<Vec<_>>()
    };
    play_until(&api, &notifier, "queued and sent answered 200", || {
        ["message.queued", "message.sent"]
            .iter()
            .all(|t| of(t).iter().any(|r| r["answered"] == 200))
    })
    .await;
    for t in ["message.queued", "message.sent"] {
        for r in of(t) {
            assert_eq!(r["verified_by"], json!([0]), "{r}");
            assert_eq!(r["body"]["data"]["external_id"], "ext-9");
        }
    }
    // The first try got the 500: it was retried with the same webhook-id.
    let tries: Vec<Value> = rx.requests();
    assert_eq!(tries[0]["answered"], 500);
    let retried = tries[1..]
        .iter()
        .any(|r| r["webhook_id"] == tries[0]["webhook_id"] && r["answered"] == 200);
    assert!(retried, "{tries:#?}");

    let page = deliveries(&api, &ep).await;
    let items = page["items"].as_array().expect("items");
    assert_eq!(items.len(), 2, "{page}");
    assert!(items.iter().all(|d| d["state"] == "succeeded"), "{page}");
}

/// An endpoint hears its events in the order they were made, and a try that fails holds up
/// none behind it: it waits on the retry queue while the rest go on.
#[tokio::test]
async fn an_endpoint_hears_its_events_in_order_and_a_failed_try_holds_up_none() {
    let api = api().await;
    let notifier = Notifier::new(&api.herald.config.notify);
    let (rx, _) = trusted_endpoint(&api, "500", &["message.queued"]).await;
    let mut sent = Vec::new();
    for i in 0..25 {
        let to = format!("reader{i}@example.com");
        let body =
            json!({"channel": "email", "priority": "P1", "to": to, "subject": "Hi", "body": "x"});
        sent.push(api.send(body).await);
    }
    let answered = |code: u16| -> Vec<String> {
        rx.requests()
            .into_iter()
            .filter(|r| r["answered"] == code)
            .map(|r| {
                r["body"]["data"]["message_id"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned()
            })
            .collect()
    };
    play_until(&api, &notifier, "every event answered 200", || {
        answered(200).len() >= sent.len()
    })
    .await;
    // The first try of the first event got the 500; the 200s for the rest came in order,
    // whenever its retry came in between.
    assert_eq!(answered(500), [sent[0].clone()]);
    let rest: Vec<String> = answered(200)
        .into_iter()
        .filter(|id| *id != sent[0])
        .collect();
    assert_eq!(rest, sent[1..], "in the order the messages were accepted");
    assert_eq!(
        answered(200).len(),
        sent.len(),
        "each event answered 200 once"
    );
    assert!(rx.requests().iter().all(|r| r["verified_by"] == json!([0])));
}

/// An event handled twice (its entry came back after a crash) is stored and sent once: the
/// fan-out makes the same delivery ids, and what the first one stored stays.
#[tokio::test]
async fn an_event_fanned_out_twice_is_delivered_once() {
    let api = api().await;
    let notifier = Notifier::new(&api.herald.config.notify);
    let (rx, ep) = trusted_endpoint(&api, "", &["message.queued"]).await;
    api.send(json!({"channel": "email", "priority": "P1", "to": "twice@example.com", "subject": "Hi", "body": "x"}))
        .await;
    let lanes = &api.cold.backend.lanes;
    let polled = api
        .stack
        .poll_once(&ordered_url(&api), 10, |event| async {
            let first = notify_function::notify(&api.herald, lanes, &notifier, event.clone(), None);
            assert!(first.await.batch_item_failures.is_empty());
            notify_function::notify(&api.herald, lanes, &notifier, event, None).await
        })
        .await;
    assert!(polled.is_some(), "the event was on the ordered queue");
    play_out(&api, &notifier).await;
    assert_eq!(rx.requests().len(), 1, "{:#?}", rx.requests());
    let page = deliveries(&api, &ep).await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1), "{page}");
    assert_eq!(page["items"][0]["state"], "succeeded", "{page}");
}

/// A dead endpoint costs two tries a batch: after two failures in a row, the rest of its
/// batch moves to the retry queue untried, and nothing is lost.
#[tokio::test]
async fn a_dead_endpoint_costs_two_tries_a_batch_and_loses_nothing() {
    let api = api().await;
    let notifier = Notifier::new(&api.herald.config.notify);
    let down = Receiver::start(&["500"; 20].join(","));
    endpoint(&api, &down.url, &["message.queued"]).await;
    for i in 0..10 {
        let to = format!("gone{i}@example.com");
        api.send(
            json!({"channel": "email", "priority": "P1", "to": to, "subject": "Hi", "body": "x"}),
        )
        .await;
    }
    let ordered = ordered_url(&api);
    let mut batches = 0;
    while let Some((event, _)) = api
        .stack
        .poll_once(&ordered, 10, |event| async {
            notify_function::notify(&api.herald, &api.cold.backend.lanes, &notifier, event, None)
                .await
        })
        .await
    {
        batches += event
            .records
            .iter()
            .filter(|r| r.body.as_deref().unwrap_or("").contains("\"delivery\""))
            .count()
            .min(1);
    }
    let tries = down.requests().len();
    println!("a dead endpoint: {tries} tries for 10 deliveries in {batches} batches");
    assert!(
        batches >= 1,
        "the deliveries came through the ordered queue"
    );
    assert!(
        tries <= 2 * batches && tries < 10,
        "{tries} tries in {batches} batches"
    );
    assert_eq!(
        api.stack.queue_count(&retry_url(&api)).await,
        10,
        "every delivery waits on the retry queue"
    );
}

#[tokio::test]
async fn a_delivery_out_of_retries_ends_in_the_dlq() {
    let api = api().await;
    let notifier = Notifier::new(&api.herald.config.notify);
    let down = Receiver::start("500,500,500,500,500,500,500,500,500,500");
    let ep = endpoint(&api, &down.url, &["message.queued"]).await;
    // Few receives, so the DLQ is reached soon after the schedule's last try.
    api.stack.allow_receives(&retry_url(&api), 4).await;
    api.send(
        json!({"channel": "email", "priority": "P1", "to": "bo@example.com",
                    "subject": "Hi", "body": "x"}),
    )
    .await;
    let dlq = api.stack.notify_dlq.clone();
    let in_dlq = || async { api.stack.queue_count(&dlq).await };
    for _ in 0..60 {
        if in_dlq().await > 0 {
            break;
        }
        if !play_once(&api, &notifier).await {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    assert_eq!(in_dlq().await, 1, "the delivery is in the DLQ");
    assert_eq!(
        down.requests().len(),
        3,
        "three tries: the first and two retries"
    );
    let page = deliveries(&api, &ep).await;
    assert_eq!(page["items"][0]["state"], "failed", "{page}");
    assert_eq!(
        page["items"][0]["attempts"].as_array().map(Vec::len),
        Some(3)
    );
}

fn sample(name: &str) -> aws_lambda_events::event::sqs::SqsEvent {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../events/notify")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("sample event");
    serde_json::from_str(&text).expect("an SQS event")
}

#[tokio::test]
async fn sample_events_are_handled_and_poison_is_left_for_the_dlq() {
    let api = api().await;
    let notifier = Notifier::new(&api.herald.config.notify);
    let lanes = &api.cold.backend.lanes;
    // An event whose message is not stored (nor any endpoint): nothing to deliver, done.
    let done =
        notify_function::notify(&api.herald, lanes, &notifier, sample("event.json"), None).await;
    assert!(
        done.batch_item_failures.is_empty(),
        "{:?}",
        done.batch_item_failures
    );
    // A delivery that is not stored (deleted with its endpoint): done.
    let gone =
        notify_function::notify(&api.herald, lanes, &notifier, sample("delivery.json"), None).await;
    assert!(gone.batch_item_failures.is_empty());
    let poison =
        notify_function::notify(&api.herald, lanes, &notifier, sample("poison.json"), None).await;
    let failed: Vec<_> = poison
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    // An unreadable entry comes back alone, for the DLQ: the event behind it in its group is
    // handled (it could never be handled in order behind it anyway).
    assert_eq!(failed, ["7d2a9e3c-af5b-4a4c-9d8e-3f4a5b6c7d8e"]);
}

/// One connection to the event stream, read whole (as API Gateway sends it): its events as
/// (event, id, data).
async fn stream_once(api: &AwsApi, last: Option<&str>) -> Vec<(String, String, Value)> {
    let mut req = api
        .client
        .get(format!("{}/v1/events/stream", api.url))
        .query(&[("types", "message.queued,message.sent")])
        .bearer_auth(&api.key);
    if let Some(id) = last {
        req = req.header("last-event-id", id);
    }
    let res = req.send().await.expect("stream request");
    assert_eq!(res.status(), 200);
    let text = res.text().await.expect("the window closes");
    text.split("\n\n")
        .filter_map(|block| {
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                    .map(str::to_owned)
            };
            let data = serde_json::from_str(&field("data")?).expect("JSON data");
            Some((field("event")?, field("id")?, data))
        })
        .collect()
}

#[tokio::test]
async fn an_event_stream_reads_what_the_notify_function_kept_and_nothing_is_pushed() {
    let api = AwsApi::start_tuned(|c| {
        c.notify.subscriptions_refresh = Duration::ZERO;
        c.notify.streams.window = Duration::from_secs(2);
    })
    .await;
    let notifier = Notifier::new(&api.herald.config.notify);
    let opened = stream_once(&api, None).await;
    assert_eq!(opened[0].0, "open", "{opened:?}");
    let mut cursor = opened[0].1.clone();

    let id = api
        .send(json!({"channel": "email", "priority": "P1", "to": "sue@example.com", "subject": "Hi", "body": "x"}))
        .await;
    api.drain(Priority::P1).await;
    while play_once(&api, &notifier).await {}
    for url in [ordered_url(&api), retry_url(&api)] {
        assert_eq!(
            api.stack.queue_count(&url).await,
            0,
            "a stream's events are kept, not queued for delivery"
        );
    }

    let mut seen = Vec::new();
    for _ in 0..5 {
        for (event, event_id, data) in stream_once(&api, Some(&cursor)).await {
            if event != "open" {
                assert_eq!(data["data"]["message_id"], id.as_str());
                seen.push(event);
            }
            cursor = event_id;
        }
        if seen.len() >= 2 {
            break;
        }
    }
    assert_eq!(seen, ["message.queued", "message.sent"]);
    // Resumed past them: nothing again.
    let again = stream_once(&api, Some(&cursor)).await;
    assert!(again.iter().all(|(e, ..)| e == "open"), "{again:?}");
}

#[tokio::test]
async fn a_bulk_sends_recipients_are_announced_on_aws_too() {
    let api = api().await;
    let notifier = Notifier::new(&api.herald.config.notify);
    let (rx, _) = trusted_endpoint(&api, "", &["message.queued"]).await;
    let recipients = json!([{"to": "b0@example.com"}, {"to": "b1@example.com"}]);
    let (status, bulk) = api
        .call(
            Method::POST,
            "/v1/messages/bulk",
            Some(
                json!({"channel": "email", "priority": "P3", "subject": "News", "body": "x",
                        "recipients": recipients}),
            ),
        )
        .await;
    assert_eq!(status, 202, "{bulk}");
    let bulk_id = bulk["bulk_id"].as_str().expect("bulk id").to_owned();
    let of_bulk = || {
        rx.requests()
            .into_iter()
            .filter(|r| r["body"]["data"]["bulk_id"] == bulk_id.as_str() && r["answered"] == 200)
            .collect::<Vec<_>>()
    };
    play_until(&api, &notifier, "both recipients announced", || {
        of_bulk().len() >= 2
    })
    .await;
    let mut to: Vec<String> = of_bulk()
        .iter()
        .map(|r| {
            assert_eq!(r["body"]["type"], "message.queued");
            assert_eq!(r["verified_by"], json!([0]), "{r}");
            r["body"]["data"]["to"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    to.sort();
    assert_eq!(to, ["b0@example.com", "b1@example.com"]);
}

/// The `webhooks` function's Router, verifying Twilio with a known token, acme owning a number.
fn webhooks_function(api: &AwsApi) -> axum::Router {
    let config = json!({
        "public_base_url": "https://herald.example.com",
        "twilio": { "auth_token": "twilio-auth-token" },
        "numbers": [{ "number": "+15557654321", "tenant": "acme" }]
    })
    .to_string();
    let read = AwsSettings::from_vars(|name| (name == WEBHOOKS).then(|| config.clone()))
        .expect("HERALD_WEBHOOKS");
    let settings = AwsSettings {
        webhooks: read.webhooks,
        ..api.stack.settings.clone()
    };
    let cold = ColdStart::with(&api.stack.sdk, settings).expect("cold start");
    lambda::webhooks_router(cold).expect("webhooks router")
}

/// A receiver registered as a dev forward of `source`'s webhooks, trusting its secret.
async fn dev_forward(api: &AwsApi, source: &str) -> Receiver {
    let rx = Receiver::start("");
    let (status, fwd) = api
        .call(
            Method::POST,
            "/v1/dev-forwards",
            Some(json!({ "url": rx.url, "sources": [source] })),
        )
        .await;
    assert_eq!(status, 201, "{fwd}");
    rx.trust(&[fwd["secret"].as_str().expect("secret")]);
    rx
}

#[tokio::test]
async fn a_provider_webhook_is_forwarded_by_the_notify_function_to_its_tenants_dev_forward() {
    let api = api().await;
    let notifier = Notifier::new(&api.herald.config.notify);
    let rx = dev_forward(&api, "twilio").await;
    let params: Vec<(String, String)> = [
        ("MessageSid", "SMfwd1"),
        ("From", "+15550001234"),
        ("To", "+15557654321"),
        ("Body", "hello from a phone"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let path = "/webhooks/twilio/inbound";
    let signature = twilio_signature(
        "twilio-auth-token",
        &format!("https://herald.example.com{path}"),
        &params,
    );
    let body = serde_urlencoded::to_string(&params).expect("form");
    let request = axum::http::Request::post(path)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", &signature)
        .body(axum::body::Body::from(body.clone()))
        .expect("request");
    let response = webhooks_function(&api)
        .oneshot(request)
        .await
        .expect("answer");
    assert_eq!(response.status(), 200);
    play_until(&api, &notifier, "the forwarded webhook", || {
        rx.requests().iter().any(|r| r["raw"] == body.as_str())
    })
    .await;
    let got = rx.requests();
    let hook = got
        .iter()
        .find(|r| r["raw"] == body.as_str())
        .expect("forwarded");
    assert_eq!(hook["verified_by"], json!([0]), "{hook}");
    assert_eq!(hook["headers"]["x-twilio-signature"], signature.as_str());
    assert_eq!(hook["headers"]["herald-forwarded-source"], "twilio");
}

/// On AWS, SES events reach the `suppression` function through SNS and SQS, not
/// `/webhooks/ses`: an applied one goes to the dev forward of the tenant whose message it is,
/// as SNS would have POSTed it; a repeat, and another tenant's, go nowhere.
#[tokio::test]
async fn an_ses_event_through_the_suppression_function_is_forwarded_to_its_tenant() {
    let api = api().await;
    let notifier = Notifier::new(&api.herald.config.notify);
    let rx = dev_forward(&api, "ses").await;
    let id = api
        .send(
            json!({ "channel": "email", "priority": "P1", "to": "reader@example.com",
                      "subject": "Hello", "body": "A short note" }),
        )
        .await;
    assert!(api.drain(Priority::P1).await.is_empty());
    let ses_id = api.view(&id).await["provider_message_id"]
        .as_str()
        .expect("SES id")
        .to_owned();

    // A delivery report, which is applied without a marker, delivered twice by SQS.
    let event = ses_notification(ses_fixture("delivery"), &id, &ses_id);
    let body = event.records[0].body.clone().expect("SNS envelope");
    let sns: Value = serde_json::from_str(&body).expect("envelope");
    for _ in 0..2 {
        let response = lambda::suppression(&api.herald, event.clone()).await;
        assert!(response.batch_item_failures.is_empty());
    }
    assert_eq!(api.view(&id).await["status"], "delivered");
    // Another tenant's message: the same forward must not hear of it.
    let globex = api.key_of("globex").await;
    let (status, theirs) = api
        .call_as(
            &globex,
            Method::POST,
            "/v1/messages",
            Some(json!({ "channel": "email",
            "priority": "P1", "to": "someone@example.com", "subject": "Hi", "body": "Theirs" })),
        )
        .await;
    assert_eq!(status, 202, "{theirs}");
    let theirs = theirs["id"].as_str().expect("id").to_owned();
    assert!(api.drain(Priority::P1).await.is_empty());
    let (_, view) = api
        .call_as(
            &globex,
            Method::GET,
            &format!("/v1/messages/{theirs}"),
            None,
        )
        .await;
    let their_ses_id = view["provider_message_id"].as_str().expect("SES id");
    let foreign = ses_notification(ses_fixture("bounce-permanent"), &theirs, their_ses_id);
    let foreign_body = foreign.records[0].body.clone().expect("SNS envelope");
    let response = lambda::suppression(&api.herald, foreign).await;
    assert!(response.batch_item_failures.is_empty());

    play_until(&api, &notifier, "the forwarded SES event", || {
        rx.requests().iter().any(|r| r["raw"] == body.as_str())
    })
    .await;
    play_out(&api, &notifier).await;
    let got = rx.requests();
    let forwarded: Vec<_> = got.iter().filter(|r| r["raw"] == body.as_str()).collect();
    assert_eq!(
        forwarded.len(),
        1,
        "a repeat is not forwarded again: {got:#?}"
    );
    let hook = forwarded[0];
    assert_eq!(hook["verified_by"], json!([0]), "{hook}");
    assert_eq!(
        hook["headers"]["herald-forwarded-path"], "/webhooks/ses",
        "{hook}"
    );
    assert_eq!(hook["headers"]["herald-forwarded-source"], "ses");
    assert_eq!(hook["headers"]["x-amz-sns-message-type"], "Notification");
    assert_eq!(hook["headers"]["x-amz-sns-message-id"], sns["MessageId"]);
    assert_eq!(hook["headers"]["x-amz-sns-topic-arn"], sns["TopicArn"]);
    assert!(
        !got.iter().any(|r| r["raw"] == foreign_body.as_str()),
        "another tenant's SES event reached this forward: {got:#?}"
    );
}
