//! Bulk sends on AWS, on moto: the API stores the job and queues one entry; the `enqueue`
//! handler fans the recipients out, pauses at its deadline, resumes on redelivery, and two
//! deliveries of the same job at once still queue each message once. A queued message's item
//! is created by its claim; until then it is read from its job.
//!
//! 1,000 recipients (two parts of 500), not 10,000: moto's SendMessage recounts the whole queue for
//! every message, so a 10,000-entry lane takes it many minutes. Real SQS does not.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use aws_sdk_dynamodb::types::AttributeValue;
use herald_tests::aws::{AwsApi, Stack};
use serde_json::{json, Value};
use shared::aws::dynamo::FanOut;
use shared::aws::lambda;
use shared::domain::{BulkIds, Priority};

/// Accepted recipients; two more are refused at accept.
const RECIPIENTS: usize = 998;

async fn post_bulk(api: &AwsApi, body: &Value) -> (u16, Value) {
    let reply = api
        .client
        .post(format!("{}/v1/messages/bulk", api.url))
        .bearer_auth(&api.key)
        .header("Idempotency-Key", "bulk-1")
        .json(body)
        .send()
        .await
        .unwrap();
    (reply.status().as_u16(), reply.json().await.unwrap())
}

/// The ids a job's first `n` positions give their messages (`domain::bulk_ids`), newest first.
fn job_ids(bulk_id: &str, n: usize) -> Vec<String> {
    let ids = BulkIds::of(bulk_id).expect("a job id from which ids derive");
    let mut all: Vec<String> = (0..n)
        .map(|p| ids.recipient(p).unwrap().to_string())
        .collect();
    all.reverse();
    all
}

/// A stored job's head (part 0), read consistently.
async fn job_head(stack: &Stack, bulk_id: &str) -> HashMap<String, AttributeValue> {
    stack
        .dynamo
        .get_item()
        .table_name(stack.settings.tables.bulk.clone().unwrap())
        .key("bulk_id", AttributeValue::S(bulk_id.into()))
        .key("part", AttributeValue::N("0".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .unwrap()
}

/// How many of a job's positions its fan-out has queued, from its head.
async fn fanned_out(stack: &Stack, bulk_id: &str) -> usize {
    let head = job_head(stack, bulk_id).await;
    let number = |k: &str| {
        head.get(k)
            .map_or(0, |v| v.as_n().unwrap().parse().unwrap())
    };
    match head["status"].as_s().unwrap().as_str() {
        "done" => number("recipients"),
        _ => number("written_to"),
    }
}

/// The ids of the messages stored for a bulk send (a paged scan).
async fn stored_ids(stack: &Stack, bulk_id: &str) -> Vec<String> {
    let table = stack.settings.tables.messages.clone().unwrap();
    let mut ids = Vec::new();
    let mut start = None;
    loop {
        let out = stack
            .dynamo
            .scan()
            .table_name(&table)
            .filter_expression("bulk_id = :b")
            .expression_attribute_values(":b", AttributeValue::S(bulk_id.into()))
            .projection_expression("id")
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .unwrap();
        ids.extend(
            out.items()
                .iter()
                .filter_map(|i| i.get("id").and_then(|v| v.as_s().ok()).cloned()),
        );
        match out.last_evaluated_key {
            Some(k) if !k.is_empty() => start = Some(k),
            _ => return ids,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_bulk_job_fans_out_once_across_pauses_and_duplicate_deliveries() {
    let api = AwsApi::start().await;
    let (stack, backend) = (&api.stack, &api.cold.backend);
    api.put_news_template().await;
    let mut recipients: Vec<_> = (0..RECIPIENTS)
        .map(|i| json!({ "to": format!("reader{i}@example.com"), "data": { "name": format!("Reader {i}") } }))
        .collect();
    recipients.insert(10, json!({ "to": "not-an-address" }));
    recipients.insert(20, json!({ "to": "x@example.com", "data": { "other": 1 } }));
    let bulk = json!({ "channel": "email", "priority": "P2", "template": "news", "recipients": recipients });

    let started = Instant::now();
    let (status, body) = post_bulk(&api, &bulk).await;
    let accept_time = started.elapsed();
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["queued"], RECIPIENTS, "{body}");
    let rejected: Vec<u64> = body["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    assert_eq!(
        rejected,
        [10, 20],
        "bad address and missing variable, by index"
    );
    let bulk_id = body["bulk_id"].as_str().unwrap().to_owned();
    assert_eq!(
        stack.queue_count(stack.bulk_url()).await,
        1,
        "one entry for the whole job"
    );
    assert!(
        stored_ids(stack, &bulk_id).await.is_empty(),
        "messages are written by the fan-out"
    );

    // The first invocation is out of time from the start: it still does one part (every run
    // makes progress), then stops and hands the entry back.
    let (_, paused) = stack
        .poll_once(stack.bulk_url(), 1, |event| async move {
            lambda::enqueue(backend, event, Some(Instant::now())).await
        })
        .await
        .unwrap();
    assert_eq!(
        paused.batch_item_failures.len(),
        1,
        "paused: kept for redelivery"
    );
    let after_pause = fanned_out(stack, &bulk_id).await;
    assert!(
        after_pause > 0 && after_pause < RECIPIENTS,
        "one part, then stopped ({after_pause} queued)"
    );

    // Redelivered twice at once (SQS may): both resume from the recorded progress.
    let fan_started = Instant::now();
    let (a, b) = tokio::join!(
        backend.store.fan_out(&bulk_id, None),
        backend.store.fan_out(&bulk_id, None)
    );
    let fan_time = fan_started.elapsed();
    for run in [a.unwrap(), b.unwrap()] {
        assert!(matches!(run, FanOut::Done { .. }), "{run:?}");
    }
    assert_eq!(fanned_out(stack, &bulk_id).await, RECIPIENTS);
    assert!(
        stored_ids(stack, &bulk_id).await.is_empty(),
        "queued messages are created by their claims"
    );
    let (status, progress) = api
        .call(reqwest::Method::GET, &format!("/v1/bulk/{bulk_id}"), None)
        .await;
    assert_eq!(status, 200, "{progress}");
    assert_eq!(
        (&progress["counts"]["queued"], &progress["pending"]),
        (&json!(RECIPIENTS), &json!(0)),
        "every recipient queued once: {progress}"
    );
    // The entry the pause handed back is visible again; finishing it changes nothing.
    let (_, done) = stack
        .poll_once(stack.bulk_url(), 1, |event| async move {
            lambda::enqueue(backend, event, None).await
        })
        .await
        .unwrap();
    assert!(done.batch_item_failures.is_empty());
    assert!(stored_ids(stack, &bulk_id).await.is_empty());
    assert_eq!(stack.queue_count(stack.bulk_url()).await, 0);
    let lane_entries = stack.queue_count(stack.lane_url(Priority::P2)).await;
    assert!(
        lane_entries >= RECIPIENTS as u64,
        "every message is on its lane ({lane_entries})"
    );
    println!(
        "bulk on moto: accept of {} recipients {:.0} ms; fan-out of the rest {:.1} s \
         ({:.0} recipients/s, two deliveries at once); {lane_entries} lane entries",
        RECIPIENTS + 2,
        accept_time.as_secs_f64() * 1000.0,
        fan_time.as_secs_f64(),
        (RECIPIENTS - after_pause) as f64 / fan_time.as_secs_f64()
    );

    // Lane entries, duplicates included, send each message once.
    let mut dispatched = HashSet::new();
    for _ in 0..4 {
        let herald = api.herald.clone();
        let (event, _) = stack
            .poll_once(stack.lane_url(Priority::P2), 10, |event| async move {
                lambda::dispatch(&herald, event).await
            })
            .await
            .unwrap();
        for r in event.records {
            let entry: Value = serde_json::from_str(r.body.as_deref().unwrap()).unwrap();
            dispatched.insert(entry["id"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(
        api.sent().await.len(),
        dispatched.len(),
        "one send per message"
    );
    for id in &dispatched {
        assert_eq!(api.view(id).await["status"], "sent");
    }
    assert_eq!(
        stored_ids(stack, &bulk_id).await.len(),
        dispatched.len(),
        "each claim created its message"
    );

    // The same Idempotency-Key replays the first answer and stores nothing new.
    let (status, replay) = post_bulk(&api, &bulk).await;
    assert_eq!(status, 202);
    assert_eq!(replay["bulk_id"], bulk_id.as_str());
    assert_eq!(stack.queue_count(stack.bulk_url()).await, 0);
}

/// The ids of every page of `GET /v1/messages?{query}` as `key`, following `next_after`.
async fn search_ids(api: &AwsApi, key: &str, query: &str) -> Vec<String> {
    search_pages(api, key, query).await.0
}

/// The ids of every page, and how many pages it took.
async fn search_pages(api: &AwsApi, key: &str, query: &str) -> (Vec<String>, usize) {
    let (mut ids, mut after) = (Vec::new(), None::<String>);
    for pages in 1..=100 {
        let cursor = after.map(|a| format!("&after={a}")).unwrap_or_default();
        let path = format!("/v1/messages?{query}{cursor}");
        let (status, page) = api.call_as(key, reqwest::Method::GET, &path, None).await;
        assert_eq!(status, 200, "{path}: {page}");
        for m in page["items"].as_array().unwrap() {
            ids.push(m["id"].as_str().unwrap().to_owned());
        }
        match page["next_after"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => return (ids, pages),
        }
    }
    panic!("{query}: the pages never end");
}

/// A bulk message's id derives from its job's, so search finds it through the job's listing
/// and its item has no `by_tenant` entry (a write unit saved per recipient): found newest
/// first among single sends, paged without skips or repeats, filtered, and only by its tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_messages_are_searched_through_their_job() {
    let api = AwsApi::start().await;
    let (stack, backend) = (&api.stack, &api.cold.backend);
    api.put_news_template().await;
    let single = |to: &str| json!({ "channel": "email", "priority": "P1", "to": to, "subject": "Hi", "body": "Hello" });
    let send = |body: Value| async {
        let (status, reply) = api
            .call(reqwest::Method::POST, "/v1/messages", Some(body))
            .await;
        assert_eq!(status, 202, "{reply}");
        reply["id"].as_str().unwrap().to_owned()
    };
    let before = send(single("first@example.com")).await;
    let mut recipients: Vec<_> = (0..24)
        .map(|i| json!({ "to": format!("reader{i}@example.com"), "data": { "name": "R" } }))
        .collect();
    recipients.insert(3, json!({ "to": "not-an-address" }));
    let bulk = json!({ "channel": "email", "priority": "P2", "template": "news",
        "source_type": "newsletter", "recipients": recipients });
    let (status, reply) = api
        .call(reqwest::Method::POST, "/v1/messages/bulk", Some(bulk))
        .await;
    assert_eq!(status, 202, "{reply}");
    let bulk_id = reply["bulk_id"].as_str().unwrap().to_owned();
    let after = send(single("last@example.com")).await;
    // Before the fan-out, the job names no message: no pages of messages not written yet.
    let key = api.key.clone();
    let (unfanned, pages) = search_pages(&api, &key, "limit=2").await;
    assert_eq!(unfanned, [after.clone(), before.clone()]);
    assert_eq!(pages, 2, "one full page, then an empty last one");
    let fanned = backend.store.fan_out(&bulk_id, None).await.unwrap();
    assert!(
        matches!(fanned, FanOut::Done { written: 24, .. }),
        "{fanned:?}"
    );

    // Left for their claims: read from the job.
    assert!(stored_ids(stack, &bulk_id).await.is_empty());
    let bulk_ids = job_ids(&bulk_id, 24);
    let indexed = stack
        .dynamo
        .scan()
        .table_name(stack.settings.tables.messages.clone().unwrap())
        .filter_expression("attribute_exists(search_shard) AND bulk_id = :b")
        .expression_attribute_values(":b", AttributeValue::S(bulk_id.clone()))
        .send()
        .await
        .unwrap();
    assert_eq!(indexed.count(), 0, "no bulk message has an index entry");

    let mut newest_first = vec![after.clone()];
    newest_first.extend(bulk_ids.iter().cloned());
    newest_first.push(before.clone());
    assert_eq!(search_ids(&api, &key, "limit=100").await, newest_first);
    assert_eq!(
        search_ids(&api, &key, "limit=7").await,
        newest_first,
        "pages of 7 neither skip nor repeat"
    );
    let reader5 = search_ids(&api, &key, "to=reader5%40example.com&limit=3").await;
    assert_eq!(reader5.len(), 1, "{reader5:?}");
    let by_job = search_ids(&api, &key, &format!("bulk_id={bulk_id}&limit=10")).await;
    assert_eq!(by_job, bulk_ids);
    let by_source = search_ids(&api, &key, "source_type=newsletter&limit=5").await;
    assert_eq!(by_source, bulk_ids);
    assert!(search_ids(&api, &key, "channel=sms").await.is_empty());
    assert_eq!(search_ids(&api, &key, "priority=P2").await, bulk_ids);
    assert_eq!(
        search_ids(&api, &key, "status=queued&limit=9").await,
        newest_first
    );
    assert!(search_ids(&api, &key, "status=sent").await.is_empty());
    // The job's millisecond alone: its messages, not the sends around it.
    let bulk_view = api.view(&bulk_ids[0]).await;
    let bulk_at = chrono::DateTime::parse_from_rfc3339(bulk_view["created_at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc);
    let millisecond = |at: chrono::DateTime<chrono::Utc>| {
        at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            .replace(':', "%3A")
    };
    let window = format!(
        "created_after={}&created_before={}",
        millisecond(bulk_at),
        millisecond(bulk_at + chrono::Duration::milliseconds(1))
    );
    assert_eq!(search_ids(&api, &key, &window).await, bulk_ids);

    let stranger = api.key_of("globex").await;
    assert!(search_ids(&api, &stranger, "limit=100").await.is_empty());
    let theirs = format!("bulk_id={bulk_id}");
    assert!(search_ids(&api, &stranger, &theirs).await.is_empty());
}

/// While a job fans out, search names only the positions of the parts it finished, read from
/// the head's `written_to`. Parts are cut by size too (here about 20 recipients of 15 KB a
/// part), so counting 500 per finished part would name messages not written yet, and a page's
/// cursor would pass them for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_during_a_fan_out_names_only_written_messages_when_parts_are_cut_by_size() {
    let api = AwsApi::start().await;
    let (stack, backend) = (&api.stack, &api.cold.backend);
    api.put_news_template().await;
    let blob = "x".repeat(15_000);
    let recipients: Vec<Value> = (0..30)
        .map(|i| json!({ "to": format!("big{i}@example.com"), "data": { "name": "R", "blob": blob } }))
        .collect();
    let body = json!({ "channel": "email", "priority": "P3", "template": "news", "recipients": recipients });
    let (status, reply) = post_bulk(&api, &body).await;
    assert_eq!(status, 202, "{reply}");
    let bulk_id = reply["bulk_id"].as_str().unwrap().to_owned();
    let fanned = backend.store.fan_out(&bulk_id, None).await.unwrap();
    let FanOut::Done { written: 30, parts } = fanned else {
        panic!("{fanned:?}");
    };
    assert!(parts > 1, "cut by size: {parts} parts");

    let table = stack.settings.tables.bulk.clone().unwrap();
    let head = job_head(stack, &bulk_id).await;
    assert_eq!(head["written_to"], AttributeValue::N("30".into()));

    // Back to how it stood after its first part: the head's progress and status, and the
    // listing not marked as fanned out.
    let first_part = stored_part_len(stack, &table, &bulk_id, 1).await;
    assert!(first_part < 30, "{first_part}");
    let n = |v: usize| AttributeValue::N(v.to_string());
    let head_set = [("done", n(1)), ("written_to", n(first_part))];
    set_head(stack, &table, &bulk_id, "pending", &head_set).await;
    let listing = stack
        .dynamo
        .scan()
        .table_name(&table)
        .filter_expression("attribute_exists(fanned_out)")
        .send()
        .await
        .unwrap();
    let [listing] = listing.items() else {
        panic!("one listing: {listing:?}");
    };
    stack
        .dynamo
        .update_item()
        .table_name(&table)
        .key("bulk_id", listing["bulk_id"].clone())
        .key("part", listing["part"].clone())
        .update_expression("REMOVE fanned_out")
        .send()
        .await
        .unwrap();

    let key = api.key.clone();
    let views = search_ids(&api, &key, "limit=100").await;
    assert_eq!(views.len(), first_part, "the first part's messages alone");
    let mut lowest = job_ids(&bulk_id, first_part);
    lowest.sort_unstable();
    let mut named = views.clone();
    named.sort_unstable();
    assert_eq!(named, lowest, "the lowest positions");
    // The same bound holds for a search by recipient, which reads the parts.
    let early = search_ids(&api, &key, "to=big0%40example.com").await;
    assert_eq!(early.len(), 1);
    let late = search_ids(&api, &key, "to=big29%40example.com").await;
    assert!(late.is_empty(), "{late:?}");

    // Once the head says the fan-out is done, the last one (in the second part) reads from
    // the job.
    set_head(stack, &table, &bulk_id, "done", &[]).await;
    let last = &job_ids(&bulk_id, 30)[0];
    let view = api.view(last).await;
    assert_eq!(
        (&view["status"], &view["to"]),
        (&json!("queued"), &json!("big29@example.com"))
    );
}

/// Sets a stored job head's `status`, and `more` of its attributes.
async fn set_head(
    stack: &Stack,
    table: &str,
    bulk_id: &str,
    status: &str,
    more: &[(&str, AttributeValue)],
) {
    let mut update = stack
        .dynamo
        .update_item()
        .table_name(table)
        .key("bulk_id", AttributeValue::S(bulk_id.into()))
        .key("part", AttributeValue::N("0".into()))
        .expression_attribute_names("#st", "status")
        .expression_attribute_values(":st", AttributeValue::S(status.into()));
    let mut expression = "SET #st = :st".to_owned();
    for (name, value) in more {
        expression.push_str(&format!(", {name} = :{name}"));
        update = update.expression_attribute_values(format!(":{name}"), value.clone());
    }
    update.update_expression(expression).send().await.unwrap();
}

/// How many recipients a stored part holds.
async fn stored_part_len(stack: &Stack, table: &str, bulk_id: &str, part: usize) -> usize {
    let item = stack
        .dynamo
        .get_item()
        .table_name(table)
        .key("bulk_id", AttributeValue::S(bulk_id.into()))
        .key("part", AttributeValue::N(part.to_string()))
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    let packed = item["recipients"].as_b().unwrap().as_ref().to_vec();
    let json = shared::domain::packed::unpack(&packed, 1 << 20).unwrap();
    serde_json::from_slice::<Vec<Value>>(&json).unwrap().len()
}

/// A queued bulk message has no item until its claim creates it: until then it is viewed,
/// counted and cancelled through its job, only by its tenant; its claim creates it `sending`
/// with the timeline a written message would have; a cancel beats the claim; a redelivered
/// entry sends nothing twice; and the channel counts move it from `queued` as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_message_is_read_from_its_job_until_its_claim_creates_it() {
    use shared::ports::MessageStore;
    let api = AwsApi::start().await;
    let (stack, backend) = (&api.stack, &api.cold.backend);
    api.put_news_template().await;
    let recipients: Vec<Value> = (0..5)
        .map(|i| json!({ "to": format!("claim{i}@example.com"), "data": { "name": format!("R{i}") } }))
        .collect();
    let body = json!({ "channel": "email", "priority": "P2", "template": "news", "recipients": recipients });
    let (status, reply) = post_bulk(&api, &body).await;
    assert_eq!(status, 202, "{reply}");
    let bulk_id = reply["bulk_id"].as_str().unwrap().to_owned();
    let ids = job_ids(&bulk_id, 5);
    let path = |id: &str| format!("/v1/messages/{id}");
    // Before the fan-out reaches it, a message is not there yet (as before).
    let (status, _) = api.call(reqwest::Method::GET, &path(&ids[0]), None).await;
    assert_eq!(status, 404);

    backend.store.fan_out(&bulk_id, None).await.unwrap();
    assert!(stored_ids(stack, &bulk_id).await.is_empty());
    let tenant = shared::domain::TenantId::parse("acme").unwrap();
    let queued_count = || async {
        let counts = backend.store.channel_counts(&tenant).await.unwrap();
        counts
            .iter()
            .filter(|c| c.status == shared::domain::MessageStatus::Queued)
            .map(|c| c.count)
            .sum::<u64>()
    };
    assert_eq!(queued_count().await, 5, "the fan-out counts them queued");
    let view = api.view(&ids[0]).await;
    assert_eq!(view["status"], "queued", "{view}");
    assert_eq!(
        view["subject"], "News for R4",
        "rendered from the job: {view}"
    );
    let kinds = |v: &Value| -> Vec<String> {
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(kinds(&view), ["queued"]);
    let stranger = api.key_of("globex").await;
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let (status, _) = api.call_as(&stranger, method, &path(&ids[0]), None).await;
        assert_eq!(
            status, 404,
            "another tenant's queued bulk message is absent"
        );
    }
    assert!(
        stored_ids(stack, &bulk_id).await.is_empty(),
        "another tenant's cancel writes nothing"
    );
    // A probe's audit names a queued message's owner, and no one for an id past the last.
    let job = BulkIds::of(&bulk_id).unwrap();
    let owner = |p: usize| backend.store.owner_of(job.recipient(p).unwrap());
    assert_eq!(owner(4).await.unwrap(), Some(tenant.clone()));
    assert_eq!(owner(5).await.unwrap(), None, "no sixth recipient");

    // A cancel before the claim writes the message and cancels it.
    let (status, cancelled) = api
        .call(reqwest::Method::DELETE, &path(&ids[1]), None)
        .await;
    assert!(status.is_success(), "{cancelled}");
    assert_eq!(api.view(&ids[1]).await["status"], "cancelled");
    let (_, progress) = api
        .call(reqwest::Method::GET, &format!("/v1/bulk/{bulk_id}"), None)
        .await;
    assert_eq!(progress["counts"]["queued"], 4, "{progress}");
    assert_eq!(progress["counts"]["cancelled"], 1, "{progress}");

    assert!(api.drain(Priority::P2).await.is_empty());
    assert_eq!(
        api.sent().await.len(),
        4,
        "every message but the cancelled one"
    );
    for id in ids.iter().filter(|id| **id != ids[1]) {
        let view = api.view(id).await;
        assert_eq!(view["status"], "sent", "{view}");
        assert_eq!(kinds(&view), ["queued", "sending", "sent"]);
    }
    assert_eq!(stored_ids(stack, &bulk_id).await.len(), 5);

    // The lane entry again (standard queues may redeliver): its claim finds the message.
    let entry = shared::ports::LaneRef {
        id: shared::domain::MessageId::parse(&ids[0]).unwrap(),
        tenant: "acme".into(),
        lane: Priority::P2,
        attempt: 0,
        not_before: None,
        correlation_id: None,
        pace: None,
        job_part: Some(1),
    };
    backend.lanes.publish(vec![entry]).await.unwrap();
    assert!(api.drain(Priority::P2).await.is_empty());
    assert_eq!(api.sent().await.len(), 4, "a redelivery never sends twice");

    api.count_changes().await;
    let counts = backend.store.channel_counts(&tenant).await.unwrap();
    let count = |status: &str| -> u64 {
        counts
            .iter()
            .filter(|c| c.status.as_str() == status)
            .map(|c| c.count)
            .sum()
    };
    assert_eq!(
        (
            count("queued"),
            count("sending"),
            count("sent"),
            count("cancelled")
        ),
        (0, 0, 4, 1),
        "{counts:?}"
    );
}

/// A bulk message whose content is over 1 KB keeps it apart from its status item (as any
/// message does), written by the claim that creates the message: viewed whole before and after
/// its claim, and handed to SES whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_message_with_large_content_is_created_whole_by_its_claim() {
    let api = AwsApi::start().await;
    let (stack, backend) = (&api.stack, &api.cold.backend);
    let text = "All the news that fits. ".repeat(200);
    let body = json!({ "channel": "email", "priority": "P2", "subject": "Long read", "body": text,
        "recipients": [{ "to": "long0@example.com" }, { "to": "long1@example.com" }] });
    let (status, reply) = post_bulk(&api, &body).await;
    assert_eq!(status, 202, "{reply}");
    let bulk_id = reply["bulk_id"].as_str().unwrap().to_owned();
    backend.store.fan_out(&bulk_id, None).await.unwrap();
    let ids = job_ids(&bulk_id, 2);
    assert_eq!(
        api.view(&ids[0]).await["body"],
        text.as_str(),
        "from its job"
    );

    assert!(api.drain(Priority::P2).await.is_empty());
    let sent = api.sent().await;
    assert_eq!(sent.len(), 2, "{sent:#?}");
    for email in &sent {
        // Bulk email goes raw (for its List-Unsubscribe headers), its text part in base64.
        let raw = email["raw_data"].as_str().expect("a raw email");
        let (_, part) = raw.split_once("\r\n\r\n").expect("headers, then the body");
        use base64::Engine;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(part.replace("\r\n", ""))
            .expect("a base64 body");
        assert_eq!(
            String::from_utf8(decoded).unwrap(),
            text,
            "SES got the whole body"
        );
    }
    for id in &ids {
        let view = api.view(id).await;
        assert_eq!(view["status"], "sent", "{view}");
        assert_eq!(view["body"], text.as_str(), "read from its content item");
    }
    let table = stack.settings.tables.messages.clone().unwrap();
    let status_item = stack
        .dynamo
        .get_item()
        .table_name(&table)
        .key("id", AttributeValue::S(ids[0].clone()))
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    assert!(
        !status_item.contains_key("body"),
        "the status item stays small: {:?}",
        status_item.keys()
    );
}
