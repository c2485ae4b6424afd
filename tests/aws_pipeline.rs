//! The AWS pipeline on moto: the API (the same Router, over DynamoDB and SQS) -> the lane queue
//! -> the `dispatch` handler (fed by a player of the SQS event-source mapping) -> SES v2.

use std::time::Duration;

use herald_tests::aws::{endpoint, ses_sent, AwsApi as Api, Stack, UNSUBSCRIBE_BASE};
use herald_tests::meter::peek;
use reqwest::StatusCode;
use serde_json::{json, Value};
use shared::aws::lambda;
use shared::domain::{EventKind, MessageId, MessageStatus, Priority};
use shared::ports::{Delivery, LaneQueue, LaneRef, Redelivery, TransitionOutcome};

fn events_of(view: &Value) -> Vec<&str> {
    view["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_goes_from_the_api_through_its_lane_to_ses_once() {
    let api = Api::start().await;
    let id = api
        .send(json!({ "channel": "email", "priority": "P0", "to": "ann@example.com",
                      "subject": "Storm warning", "body": "Stay inside.", "html": "<p>Stay inside.</p>" }))
        .await;
    let queued = api.view(&id).await;
    assert_eq!(queued["status"], "queued");

    assert!(api.drain(Priority::P0).await.is_empty(), "nothing to retry");
    let view = api.view(&id).await;
    assert_eq!(view["status"], "sent", "{view:#}");
    assert_eq!(events_of(&view), ["queued", "sending", "sent"]);
    assert_eq!(view["gateway"], "ses");
    let sent = api.sent().await;
    assert_eq!(sent.len(), 1, "{sent:#?}");
    assert_eq!(sent[0]["subject"], "Storm warning");
    assert_eq!(
        sent[0]["destinations"]["ToAddresses"],
        json!(["ann@example.com"])
    );
    assert_eq!(
        view["provider_message_id"], sent[0]["id"],
        "SES's id is recorded"
    );

    // The same SQS message delivered again (standard queues may): the claim refuses it.
    let refs = LaneRef {
        id: MessageId::parse(&id).unwrap(),
        tenant: "acme".into(),
        lane: Priority::P0,
        attempt: 0,
        not_before: None,
        correlation_id: None,
        pace: None,
        job_part: None,
    };
    api.cold.backend.lanes.publish(vec![refs]).await.unwrap();
    assert!(api.drain(Priority::P0).await.is_empty());
    assert_eq!(api.sent().await.len(), 1, "a redelivery never sends twice");
    assert_eq!(events_of(&api.view(&id).await).len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_wins_before_dispatch_and_is_refused_after() {
    let api = Api::start().await;
    let early = api
        .send(
            json!({ "channel": "email", "priority": "P4", "to": "bob@example.com",
                      "subject": "Receipt", "body": "Thanks" }),
        )
        .await;
    let (status, reply) = api
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/messages/{early}"),
            None,
        )
        .await;
    assert_eq!(
        (status, reply["status"].as_str()),
        (StatusCode::OK, Some("cancelled"))
    );
    assert!(
        api.drain(Priority::P4).await.is_empty(),
        "a cancelled message's entry is finished"
    );
    assert!(api.sent().await.is_empty(), "nothing reached SES");
    let (status, log) = api
        .call(
            reqwest::Method::GET,
            "/v1/audit?action=message.cancelled",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{log}");
    assert_eq!(log["items"][0]["target"], early.as_str(), "{log:#}");
    assert!(log["items"][0]["actor"]
        .as_str()
        .unwrap()
        .starts_with("key:"));

    let late = api
        .send(
            json!({ "channel": "email", "priority": "P4", "to": "bob@example.com",
                      "subject": "Receipt", "body": "Thanks" }),
        )
        .await;
    api.drain(Priority::P4).await;
    let (status, _) = api
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/messages/{late}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_email_carries_heralds_one_click_link_in_the_raw_message_and_a_post_unsubscribes() {
    let api = Api::start().await;
    api.send(
        json!({ "channel": "email", "priority": "P2", "to": "cy@example.com",
                     "subject": "Weekly news", "body": "News", "html": "<p>News</p>",
                     "metadata": { "unsubscribe_url": "https://example.com/u/cy" } }),
    )
    .await;
    api.drain(Priority::P2).await;
    let sent = ses_sent().await;
    let raw = sent
        .iter()
        .filter_map(|m| m["raw_data"].as_str())
        .find(|r| r.contains(api.stack.sender.as_str()) && r.contains("Weekly news"))
        .unwrap_or_else(|| panic!("no raw message from our sender in {sent:#?}"));
    // Herald's link first, then the tenant's own; one-click for both (RFC 8058).
    let header = raw
        .lines()
        .find_map(|l| l.strip_prefix("List-Unsubscribe: "))
        .unwrap_or_else(|| panic!("no List-Unsubscribe in {raw}"));
    let herald_link = header
        .strip_prefix('<')
        .and_then(|h| h.split_once('>'))
        .map(|(url, _)| url.to_owned())
        .unwrap();
    assert!(
        herald_link.starts_with(&format!("{UNSUBSCRIBE_BASE}/u/")),
        "{header}"
    );
    assert!(header.ends_with(", <https://example.com/u/cy>"), "{header}");
    assert!(
        raw.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"),
        "{raw}"
    );
    assert!(raw.contains("multipart/alternative"), "{raw}");

    // The api function serves the link without a key: a GET only shows, a POST unsubscribes.
    let path = herald_link.trim_start_matches(UNSUBSCRIBE_BASE);
    let url = format!("{}{path}", api.url);
    let page = api.client.get(&url).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let (_, listed) = api
        .call(reqwest::Method::GET, "/v1/suppressions", None)
        .await;
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(0),
        "{listed}"
    );
    let forged = api
        .client
        .post(url.replace("/u/", "/u/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::NOT_FOUND);
    let done = api
        .client
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), StatusCode::OK);
    let next = api
        .send(
            json!({ "channel": "email", "priority": "P2", "to": "Cy@Example.com",
                      "subject": "Weekly news", "body": "News" }),
        )
        .await;
    assert_eq!(api.view(&next).await["status"], "suppressed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_at_night_waits_on_its_lane_until_the_window_opens() {
    let api = Api::start().await;
    // A zone where it is 02:00-02:59 now: the default 08:00-21:00 window opens in 5-6 hours.
    let (zone, _) = herald_tests::a_zone_at_night();
    let (status, reply) = api
        .call(
            reqwest::Method::POST,
            "/v1/messages",
            Some(
                json!({ "channel": "sms", "priority": "P3", "to": "+15005550006",
                         "body": "Sale", "metadata": { "recipient_timezone": zone } }),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{reply}");
    assert_eq!(reply["status"], "deferred", "{reply}");
    let id = reply["id"].as_str().unwrap();
    // On its lane with SQS's longest delay, and not handed over when the consumer runs.
    assert_eq!(
        api.stack
            .queue_count(api.stack.lane_url(Priority::P3))
            .await,
        1
    );
    api.drain(Priority::P3).await;
    let view = api.view(id).await;
    assert_eq!(view["status"], "deferred", "{view}");
    assert_eq!(view["events"][0]["detail"]["reason"], "quiet_hours");
    assert_eq!(view["attempts"], 0, "{view}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ses_refusals_are_permanent_failures_in_the_dead_letter_list() {
    let api = Api::start().await;
    // A sender whose domain is not a verified SES identity: SES answers MessageRejected. It is
    // one of the tenant's sender identities, so Herald itself lets it through.
    let (status, _) = api
        .call(
            reqwest::Method::PUT,
            "/v1/sender-identities/unverified.example.org",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = api
        .send(
            json!({ "channel": "email", "priority": "P1", "to": "dee@example.com",
                      "from": "someone@unverified.example.org", "subject": "Hi", "body": "Hi" }),
        )
        .await;
    assert!(api.drain(Priority::P1).await.is_empty());
    let view = api.view(&id).await;
    assert_eq!(view["status"], "failed", "{view:#}");
    assert!(
        view["last_error"]
            .as_str()
            .unwrap()
            .starts_with("MessageRejected"),
        "{view:#}"
    );
    let (status, page) = api
        .call(reqwest::Method::GET, "/v1/dead-letters", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["items"][0]["id"], id.as_str(), "{page:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_entries_and_early_scheduled_sends_are_kept_on_the_queue() {
    let api = Api::start().await;
    let later = chrono::Utc::now() + chrono::Duration::hours(2);
    let scheduled = api
        .send(
            json!({ "channel": "email", "priority": "P3", "to": "eve@example.com",
                      "subject": "Later", "body": "Later", "send_at": later.to_rfc3339() }),
        )
        .await;
    // SQS delays it at most 15 minutes; make it visible now, as it would be by then.
    let lanes = &api.cold.backend.lanes;
    let early = lanes
        .receive(Priority::P3, 10, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(early.len(), 0, "held back by SQS's delay");
    api.stack
        .sqs
        .send_message()
        .queue_url(api.stack.lane_url(Priority::P3))
        .message_body(
            json!({ "id": scheduled, "tenant": "acme", "lane": "P3", "attempt": 0,
                    "not_before": later.to_rfc3339() })
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    api.stack
        .sqs
        .send_message()
        .queue_url(api.stack.lane_url(Priority::P3))
        .message_body("this is not a lane entry")
        .send()
        .await
        .unwrap();
    let herald = api.herald.clone();
    let (event, response) = api
        .stack
        .poll_once(api.stack.lane_url(Priority::P3), 10, |event| async move {
            lambda::dispatch(&herald, event).await
        })
        .await
        .unwrap();
    assert_eq!(event.records.len(), 2);
    assert_eq!(
        response.batch_item_failures.len(),
        2,
        "both stay: {response:?}"
    );
    assert_eq!(
        api.view(&scheduled).await["status"],
        "queued",
        "not sent before its time"
    );
    assert!(api.sent().await.is_empty());
}

#[tokio::test]
async fn a_retry_near_the_dlq_threshold_is_queued_afresh() {
    let stack = Stack::create().await;
    let backend = shared::aws::AwsBackend::new(&stack.sdk, &stack.settings);
    let id = MessageId::new();
    let delivery = |receive_count| p2_delivery(id, receive_count);
    // maxReceiveCount is 5: the 5th receive may still come back, the next would be dead-lettered.
    let fresh = backend
        .lanes
        .retry_after(&delivery(4), Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(fresh, Redelivery::Requeued);
    assert_eq!(stack.queue_count(stack.lane_url(Priority::P2)).await, 1);
    assert_eq!(
        stack.queue_count(&stack.dlqs[Priority::P2.index()]).await,
        0
    );
}

/// A receipt of acme's message `id` on the P2 lane, as a test hands it to a consumer.
fn p2_delivery(id: MessageId, receive_count: u32) -> Delivery {
    Delivery {
        receipt: "unused".into(),
        message_id: id,
        tenant: "acme".into(),
        lane: Priority::P2,
        receive_count,
        not_before: None,
        pace: None,
        job_part: None,
    }
}

/// Runs `herald <args> --aws-stack <the harness's stack>`, as an operator would on a deployed
/// stack.
fn herald_on_stack_output(stack: &Stack, args: &[&str]) -> std::process::Output {
    // The harness names its tables `<prefix>-<table>`, as a stack does.
    let stack_name = stack
        .settings
        .tables
        .tenants
        .as_deref()
        .unwrap()
        .trim_end_matches("-tenants");
    std::process::Command::new(herald_tests::herald_binary())
        .args(args)
        .args(["--aws-stack", stack_name, "--aws-region", "us-east-1"])
        .env("AWS_ENDPOINT_URL", endpoint())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("HERALD_LOG", "warn")
        .output()
        .unwrap()
}

/// As [`herald_on_stack_output`], for a command that must succeed; returns its stdout.
fn herald_on_stack(stack: &Stack, args: &[&str]) -> String {
    let out = herald_on_stack_output(stack, args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn herald_keys_create_writes_a_working_key_into_a_stacks_tables() {
    let api = Api::start().await;
    let keys = |args: &[&str]| herald_on_stack(&api.stack, &[&["keys"], args].concat());
    let stats_with = |key: String| {
        let request = api
            .client
            .get(format!("{}/v1/stats/queue", api.url))
            .bearer_auth(key);
        async move { request.send().await.unwrap().status() }
    };
    let key = keys(&["create", "--tenant", "globex"])
        .lines()
        .last()
        .unwrap()
        .to_owned();
    assert!(key.starts_with("hk_"), "{key}");
    assert_eq!(
        stats_with(key.clone()).await,
        StatusCode::OK,
        "the new key opens the API"
    );
    let prefix = key.split('_').nth(1).unwrap().to_owned();
    keys(&["revoke", &prefix]);
    assert_eq!(stats_with(key).await, StatusCode::UNAUTHORIZED);

    // The CLI's changes and the refused key are in the tenant's audit log on DynamoDB.
    use herald_tests::shared::domain::audit::AuditAction;
    use herald_tests::shared::domain::{suppression::Scope, TenantId};
    use herald_tests::shared::ports::{AuditFilter, AuditLog};
    let scope = Scope::Tenant(TenantId::parse("globex").unwrap());
    let log = api
        .cold
        .backend
        .store
        .audit_page(&scope, &AuditFilter::default(), None, 10)
        .await
        .unwrap()
        .items;
    let actions: Vec<AuditAction> = log.iter().map(|e| e.action).collect();
    assert_eq!(
        actions,
        [
            AuditAction::AccessDenied,
            AuditAction::KeyRevoked,
            AuditAction::KeyCreated
        ],
        "{log:#?}"
    );
    assert_eq!(log[0].detail["reason"], "revoked key");
}

/// However often a message is noted, retried or opened, its item stays small: past 64 events
/// a write counts its event (`events_dropped`) instead of storing it, and still applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_timeline_counts_further_events_instead_of_storing_them() {
    const MAX_EVENTS: usize = 64;
    let api = Api::start().await;
    let id = api
        .send(
            json!({ "channel": "email", "priority": "P1", "to": "ann@example.com",
                      "subject": "Hello", "body": "A short note" }),
        )
        .await;
    let message = MessageId::parse(&id).unwrap();
    let store = &api.herald.store;
    for i in 1..MAX_EVENTS {
        let noted = store
            .annotate(
                message,
                EventKind::DeliveryDelayed,
                chrono::Utc::now(),
                json!({ "note": i }),
                &[MessageStatus::Queued],
            )
            .await
            .unwrap();
        assert_eq!(noted, TransitionOutcome::Applied);
    }
    // The claim and the outcome still apply; their events are counted.
    assert!(api.drain(Priority::P1).await.is_empty());
    let view = api.view(&id).await;
    assert_eq!(view["status"], "sent", "{view:#}");
    assert_eq!(view["events"].as_array().unwrap().len(), MAX_EVENTS);
    let late = store
        .annotate(
            message,
            EventKind::Status(MessageStatus::Delivered),
            chrono::Utc::now(),
            Value::Null,
            &[MessageStatus::Sent],
        )
        .await
        .unwrap();
    assert_eq!(late, TransitionOutcome::Applied);
    let table = api.stack.settings.tables.messages.clone().unwrap();
    let item = peek::get_item(&endpoint(), &table, &json!({ "id": { "S": id } })).unwrap();
    assert_eq!(
        item["events_dropped"],
        json!({ "N": "3" }),
        "sending, sent, delivered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ses_instance_sends_through_its_own_set_and_its_events_count_for_it() {
    use herald_tests::aws::{ses_fixture, ses_notification, through_instance};
    let meter = herald_tests::meter::Meter::new(&endpoint());
    let api = Api::start_metered_with(&meter, |s| {
        let set = s.ses.as_ref().and_then(|ses| ses.configuration_set.clone());
        s.gateways = serde_json::from_value(json!({
            "order": { "email": ["ses-dedicated", "ses"] },
            "instances": { "ses-dedicated": { "kind": "ses", "configuration_set": set,
                                              "from": s.ses.as_ref().and_then(|ses| ses.default_from.clone()) } }
        }))
        .unwrap();
    })
    .await;
    let id = api
        .send(
            json!({ "channel": "email", "priority": "P1", "to": "ann@example.com",
                      "subject": "Hi", "body": "Hello" }),
        )
        .await;
    assert!(api.drain(Priority::P1).await.is_empty());
    let view = api.view(&id).await;
    assert_eq!(
        (view["status"].as_str(), view["gateway"].as_str()),
        (Some("sent"), Some("ses-dedicated")),
        "{view:#}"
    );
    assert_eq!(api.sent().await.len(), 1);
    let ses_id = view["provider_message_id"].as_str().unwrap().to_owned();
    let delivered = through_instance(ses_fixture("delivery"), "ses-dedicated");
    let response =
        lambda::suppression(&api.herald, ses_notification(delivered, &id, &ses_id)).await;
    assert!(response.batch_item_failures.is_empty());
    let view = api.view(&id).await;
    assert_eq!(view["status"], "delivered", "{view:#}");
    let last = view["events"].as_array().unwrap().last().cloned().unwrap();
    assert_eq!(last["detail"]["gateway"], "ses-dedicated", "{last:#}");
}

/// The console on the `api` function's own Router, over DynamoDB and SQS: its session lives in
/// DynamoDB, the overview counts whole queues and charts the send the `stats` function
/// counted, the message page shows the timeline, an admin adds a suppression the API then
/// sees, another tenant's message is a 404 page, and sign-out ends the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_runs_on_the_api_function_over_dynamodb_and_sqs() {
    use herald_tests::console::signed_in_at;
    let api = Api::start().await;
    let mut browser = signed_in_at(&api.url, &api.key).await;
    let id = api
        .send(
            json!({ "channel": "email", "priority": "P2", "to": "console@example.com",
                      "subject": "Seen in the console", "body": "b" }),
        )
        .await;
    assert!(api.drain(Priority::P2).await.is_empty());
    api.stack.messages_stream.play(&api.stats).await;

    let live = browser.get("/console/overview/live").await;
    assert_eq!(live.status, StatusCode::OK, "{}", live.html);
    assert!(
        live.html.contains("Whole queues") && live.html.contains("1 sent in the last hour"),
        "{}",
        live.html
    );
    let page = browser.get(&format!("/console/messages/{id}")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    for text in ["Seen in the console", "queued", "sending", "sent", "ses"] {
        assert!(page.html.contains(text), "the message page lacks {text}");
    }

    let csrf = browser.get("/console/suppressions").await.csrf();
    let add = [
        ("csrf", csrf.as_str()),
        ("channel", "email"),
        ("address", "gone@example.com"),
        ("reason", "unsubscribe"),
    ];
    let added = browser.post("/console/suppressions/add", &add).await;
    assert_eq!(added.status, StatusCode::SEE_OTHER, "{}", added.html);
    let (status, entry) = api
        .call(
            reqwest::Method::GET,
            "/v1/suppressions/email/gone@example.com",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{entry}");
    assert_eq!(entry["source"], "console");

    let other = api.key_of("globex").await;
    let mut theirs = signed_in_at(&api.url, &other).await;
    let hidden = theirs.get(&format!("/console/messages/{id}")).await;
    assert_eq!(hidden.status, StatusCode::NOT_FOUND);

    let csrf = browser.get("/console").await.csrf();
    let kept = browser.cookies.clone();
    let out = browser.post("/console/sign-out", &[("csrf", &csrf)]).await;
    assert_eq!(out.location(), "/console/sign-in");
    browser.cookies = kept;
    let after = browser.get("/console").await;
    assert_eq!(
        after.location(),
        "/console/sign-in",
        "the stored session is gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn herald_upgrade_gives_a_stacks_older_suppressions_their_look_ups() {
    use aws_sdk_dynamodb::types::AttributeValue::{N, S};
    use shared::domain::suppression::Scope;
    use shared::domain::{Channel, TenantId};
    use shared::ports::SuppressionStore;

    let stack = Stack::create().await;
    let table = stack.settings.tables.suppressions.clone().unwrap();
    // A stack of the release before look-ups: no marker, list items alone, a soft-bounce
    // strike, and an item no release could read as an entry.
    let delete = |scope: &str, entry: &str| {
        let request = stack
            .dynamo
            .delete_item()
            .table_name(&table)
            .key("scope", S(scope.into()))
            .key("entry", S(entry.into()));
        async move { request.send().await.unwrap() }
    };
    delete("addr#", "complete").await;
    let now = chrono::Utc::now();
    let older = [
        ("acme", "email#old@example.com", "complaint"),
        ("*", "email#gone@example.com", "hard_bounce"),
        ("soft#acme", "email#soft@example.com#1#0", "-"),
        ("acme", "email#odd@example.com", "no-such-reason"),
    ];
    for (scope, entry, reason) in older {
        stack
            .dynamo
            .put_item()
            .table_name(&table)
            .item("scope", S(scope.into()))
            .item("entry", S(entry.into()))
            .item("reason", S(reason.into()))
            .item("created_at", N(now.timestamp_millis().to_string()))
            .item("at", N(now.timestamp_millis().to_string()))
            .send()
            .await
            .unwrap();
    }
    let acme = TenantId::parse("acme").unwrap();
    let asked = ["old@example.com", "gone@example.com", "soft@example.com"].map(String::from);
    // A new instance's view (each caches whether the list is marked).
    let stopped = || async {
        let store = shared::aws::AwsBackend::new(&stack.sdk, &stack.settings).store;
        let found = store
            .suppressed(&acme, Channel::Email, &asked, now)
            .await
            .unwrap();
        let mut hits: Vec<String> = found.into_keys().collect();
        hits.sort();
        hits
    };
    let look_up = |address: &str| {
        let request = stack
            .dynamo
            .get_item()
            .table_name(&table)
            .key("scope", S(format!("addr#email#{address}")))
            .key("entry", S("*".into()))
            .consistent_read(true);
        async move { request.send().await.unwrap().item }
    };
    assert_eq!(
        stopped().await,
        ["gone@example.com", "old@example.com"],
        "before the upgrade, the check reads the entries themselves"
    );
    assert!(look_up("old@example.com").await.is_none());

    // The item no release can read keeps the list unmarked, and says so.
    let out = herald_on_stack_output(&stack, &["upgrade"]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains("suppression look-ups written: 2;"),
        "{stdout}"
    );
    assert!(stdout.contains("no entry (see the log): 1"), "{stdout}");
    assert!(stderr.contains("not marked as upgraded"), "{stderr}");
    assert!(look_up("old@example.com").await.is_some());
    assert!(look_up("gone@example.com").await.is_some());
    assert!(
        look_up("soft@example.com").await.is_none(),
        "a strike is no entry"
    );
    assert_eq!(stopped().await, ["gone@example.com", "old@example.com"]);
    delete("acme", "email#odd@example.com").await;
    let again = herald_on_stack(&stack, &["upgrade"]);
    assert!(
        again.contains("written: 2;"),
        "a second run is harmless: {again}"
    );

    // Marked: the check reads the look-ups alone, so a list item without one stops nothing
    // (what an older release's write would leave, hence the upgrade after the deploy).
    stack
        .dynamo
        .put_item()
        .table_name(&table)
        .item("scope", S("acme".into()))
        .item("entry", S("email#soft@example.com".into()))
        .item("reason", S("complaint".into()))
        .item("created_at", N(now.timestamp_millis().to_string()))
        .send()
        .await
        .unwrap();
    assert_eq!(stopped().await, ["gone@example.com", "old@example.com"]);

    // An upgraded entry deletes with its look-up.
    let store = shared::aws::AwsBackend::new(&stack.sdk, &stack.settings).store;
    let scope = Scope::Tenant(acme.clone());
    assert!(store
        .delete_suppression(&scope, Channel::Email, "old@example.com")
        .await
        .unwrap());
    assert_eq!(stopped().await, ["gone@example.com"]);
}

/// A dispatch that recorded `sent` and stopped before it applied the provider events parked
/// for its message: the receipt comes back, and its redelivery applies them, whether the
/// events named the message (SES) or only the provider's id (Twilio: indexed by it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_receipt_applies_the_events_a_stopped_dispatch_left_parked() {
    let api = Api::start().await;
    // A duplicate first receipt (SQS delivers at least once) as well as a redelivery.
    for (names_its_message, receive_count) in [(true, 2), (false, 1)] {
        // Apart: the first's bounce suppresses its address.
        let to = format!("ann-{names_its_message}@example.com");
        let id = api
            .send(json!({ "channel": "email", "priority": "P2", "to": to,
                          "subject": "Hi", "body": "Hello" }))
            .await;
        let id = MessageId::parse(&id).unwrap();
        let provider_id = format!("parked-{names_its_message}");
        sent_with_a_bounce_left_parked(&api, id, &provider_id, names_its_message).await;
        assert_eq!(api.view(&id.to_string()).await["status"], "sent");

        api.herald
            .process_delivery(&p2_delivery(id, receive_count))
            .await;
        let view = api.view(&id.to_string()).await;
        assert_eq!(view["status"], "bounced", "{view}");
        let left = api
            .herald
            .events
            .parked("ses", &provider_id, None)
            .await
            .unwrap();
        assert!(left.mark.is_none(), "applied, then forgotten: {left:?}");
    }
}

/// Events that do not name their message (Postal's) and come while DynamoDB's provider-id
/// index has not caught up with the `sent`: simulated by a `sent` that never enters the index.
/// The `sent`'s release left word of its message on the parked item, so the webhook that parks
/// its event learns the message and applies it, and with it one a stopped webhook left parked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_parked_while_the_provider_id_index_lags_are_applied() {
    use shared::ports::{ProviderEvent, ProviderEventKind};
    let api = Api::start().await;
    let herald = &api.herald;
    let id = api
        .send(
            json!({ "channel": "email", "priority": "P2", "to": "lag@example.com",
                      "subject": "Hi", "body": "Hello" }),
        )
        .await;
    let id = MessageId::parse(&id).unwrap();
    let claimed = claim_p2(&api, id).await;
    record_sent(&api, &claimed, ("postal", "pm-lag"), false).await;
    // The dispatcher's release after that `sent`: nothing parked yet.
    assert!(herald.release_parked("postal", "pm-lag", Some(id)).await);
    let event = |kind| ProviderEvent {
        gateway: "postal".into(),
        provider_message_id: "pm-lag".into(),
        message_id: None,
        kind,
        at: chrono::Utc::now(),
        detail: json!({}),
    };
    // Parked by a webhook that stopped before it tried again.
    let opened = event(ProviderEventKind::Opened);
    herald
        .events
        .park(&[opened], Duration::from_secs(600))
        .await
        .unwrap();
    let delivered = vec![event(ProviderEventKind::Delivered)];
    herald
        .apply_notification("postal", "lag-1", delivered)
        .await
        .unwrap();
    let view = api.view(&id.to_string()).await;
    assert_eq!(view["status"], "opened", "{view}");
    let left = herald
        .events
        .parked("postal", "pm-lag", None)
        .await
        .unwrap();
    assert!(left.events.is_empty() && left.mark.is_none(), "{left:?}");
}

/// Claims `id`, parks a bounce for it under `provider_id` (naming the message, as SES's do,
/// or not, as Twilio's), and records its `sent` as a dispatch that then stopped would have:
/// without releasing what was parked.
async fn sent_with_a_bounce_left_parked(
    api: &Api,
    id: MessageId,
    provider_id: &str,
    names_its_message: bool,
) {
    use shared::ports::{ProviderEvent, ProviderEventKind};
    let (herald, now, lease) = (&api.herald, chrono::Utc::now(), Duration::from_secs(30));
    let claimed = claim_p2(api, id).await;
    let bounced = ProviderEvent {
        gateway: "ses".into(),
        provider_message_id: provider_id.into(),
        message_id: names_its_message.then_some(id),
        kind: ProviderEventKind::Bounced { permanent: true },
        at: now,
        detail: json!({ "bounceType": "Permanent" }),
    };
    herald.events.park(&[bounced], lease).await.unwrap();
    // Events that do not name their message find it by its provider id.
    record_sent(api, &claimed, ("ses", provider_id), !names_its_message).await;
}

/// Claims a P2 message, as a dispatcher does.
async fn claim_p2(api: &Api, id: MessageId) -> Box<shared::domain::Message> {
    let lease = Duration::from_secs(30);
    let claim = api
        .herald
        .store
        .claim(id, Priority::P2, chrono::Utc::now(), lease);
    match claim.await.unwrap() {
        shared::ports::ClaimOutcome::Claimed(claimed) => claimed,
        other => panic!("not claimed: {other:?}"),
    }
}

/// Records a claimed message's `sent` under `(gateway, provider id)`, straight in the store
/// (nothing parked is released), indexed by that provider id or not.
async fn record_sent(
    api: &Api,
    claimed: &shared::domain::Message,
    (gateway, provider_id): (&str, &str),
    index_provider_id: bool,
) {
    let mut sent = shared::ports::contract::sent_under(claimed, gateway, provider_id);
    sent.index_provider_id = index_provider_id;
    api.herald.store.transition(vec![sent]).await.unwrap();
}

/// A notification whose events parked and were not tried after parking (the store failed
/// twice): its retry releases them and applies nothing afresh (`shared::engine::untried_parks`).
#[tokio::test]
async fn a_retry_of_untried_parked_events_after_their_sent_applies_nothing_again() {
    let api = Api::start().await;
    use shared::engine::untried_parks as scenario;
    scenario::a_retry_after_the_sent_released_the_parked_event_applies_nothing_again(&api.herald)
        .await;
}

#[tokio::test]
async fn a_retry_of_untried_parked_events_before_their_sent_leaves_them_to_it() {
    let api = Api::start().await;
    use shared::engine::untried_parks as scenario;
    scenario::a_retry_before_the_sent_leaves_the_parked_event_to_it(&api.herald).await;
}
