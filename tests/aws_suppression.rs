//! The `suppression` function on moto: the SES notifications in `events/suppression/`, pointed
//! at messages this test sent through SES, become the right events and suppressions, once each,
//! even when delivered twice.

use aws_lambda_events::event::sqs::SqsEvent;
use herald_tests::aws::{ses_fixture, ses_notification, AwsApi};
use serde_json::{json, Value};
use shared::aws::lambda;
use shared::domain::Priority;

fn events_of(view: &Value) -> Vec<String> {
    view["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ses_notifications_drive_events_and_suppressions_once() {
    let api = AwsApi::start().await;
    // (fixture, recipient, status after it, timeline's last entry)
    let cases = [
        (
            "delivery",
            "success@simulator.amazonses.com",
            "delivered",
            "delivered",
        ),
        (
            "bounce-permanent",
            "bounce@simulator.amazonses.com",
            "bounced",
            "bounced",
        ),
        ("bounce-transient", "full@example.com", "bounced", "bounced"),
        (
            "complaint",
            "complaint@simulator.amazonses.com",
            "complained",
            "complained",
        ),
        ("open", "reader@example.com", "opened", "opened"),
        ("click", "clicker@example.com", "clicked", "clicked"),
        (
            "delivery-delay",
            "slow@example.com",
            "sent",
            "delivery_delayed",
        ),
        ("reject", "ann@example.com", "failed", "failed"),
        ("rendering-failure", "cy@example.com", "failed", "failed"),
        ("send", "dee@example.com", "sent", "sent"),
    ];
    let mut sent = Vec::new();
    for (_, to, _, _) in &cases {
        sent.push(
            api.send(json!({ "channel": "email", "priority": "P1", "to": to, "subject": "Hi", "body": "Hello" }))
                .await,
        );
    }
    assert!(api.drain(Priority::P1).await.is_empty());
    for ((name, to, status, last), id) in cases.iter().zip(&sent) {
        let view = api.view(id).await;
        assert_eq!(view["status"], "sent", "{view:#}");
        let ses_id = view["provider_message_id"].as_str().unwrap();
        let event = ses_notification(ses_fixture(name), id, ses_id);
        let response = lambda::suppression(&api.herald, event).await;
        assert!(
            response.batch_item_failures.is_empty(),
            "{name}: {response:?}"
        );
        let view = api.view(id).await;
        assert_eq!(view["status"], *status, "{name} on {to}: {view:#}");
        assert_eq!(
            events_of(&view).last().map(String::as_str),
            Some(*last),
            "{name}"
        );
    }

    let entry = |path: String| {
        let api = &api;
        async move {
            api.call(
                reqwest::Method::GET,
                &format!("/v1/suppressions/email/{path}"),
                None,
            )
            .await
        }
    };
    let (_, hard) = entry("bounce@simulator.amazonses.com".into()).await;
    assert_eq!(
        (hard["reason"].as_str(), hard["scope"].as_str()),
        (Some("hard_bounce"), Some("global")),
        "{hard}"
    );
    let (_, complaint) = entry("complaint@simulator.amazonses.com".into()).await;
    assert_eq!(complaint["reason"], "complaint");
    let (soft, _) = entry("full@example.com".into()).await;
    assert_eq!(soft.as_u16(), 404, "one soft bounce is not a strike-out");

    // Delivered twice (both SQS records carry the same SNS message): applied once.
    let twice = api
        .send(json!({ "channel": "email", "priority": "P1", "to": "twice@example.com", "subject": "Hi", "body": "Hello" }))
        .await;
    api.drain(Priority::P1).await;
    let view = api.view(&twice).await;
    let ses_id = view["provider_message_id"].as_str().unwrap().to_owned();
    let duplicate = ses_notification(ses_fixture("duplicate"), &twice, &ses_id);
    let response = lambda::suppression(&api.herald, duplicate.clone()).await;
    assert!(response.batch_item_failures.is_empty());
    let again = lambda::suppression(&api.herald, duplicate).await;
    assert!(again.batch_item_failures.is_empty());
    let view = api.view(&twice).await;
    assert_eq!(
        events_of(&view),
        ["queued", "sending", "sent", "delivered"],
        "{view:#}"
    );

    // Not an SNS notification: kept for the DLQ.
    let poison: SqsEvent = serde_json::from_value(ses_fixture("not-sns")).unwrap();
    assert_eq!(
        lambda::suppression(&api.herald, poison)
            .await
            .batch_item_failures
            .len(),
        1
    );
}
