//! The inbound pipeline of `herald serve` as a real process: texts arrive through signed
//! Twilio webhooks, the process is killed with SIGKILL while they are being stored and
//! processed, Twilio sends again what it got no answer to, and after the restart every message
//! is stored once, processed once, and answered by exactly one auto-reply.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_tests::conversation::{post_sms, ACME_NUMBER, PUBLIC, TWILIO_TOKEN};
use herald_tests::herald_binary;
use herald_tests::process::{create_key, Api, Serve};
use serde_json::{json, Value};

/// Texts, each from a sender of its own (so each thread gets one auto-reply).
const TEXTS: usize = 400;
/// Texts posted at once.
const CONCURRENCY: usize = 8;

fn sender(i: usize) -> String {
    format!("+1555{:07}", 1_000_000 + i)
}

fn config(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("herald.toml");
    let text = format!(
        "[webhooks]\npublic_base_url = \"{PUBLIC}\"\ntwilio = {{ auth_token = \"{TWILIO_TOKEN}\" }}\n\n\
         [[webhooks.numbers]]\nnumber = \"{ACME_NUMBER}\"\ntenant = \"acme\"\n"
    );
    std::fs::write(&path, text).expect("write herald.toml");
    path
}

async fn put(api: &Api, path: &str, body: Value) {
    let res = api
        .client
        .put(format!("{}{path}", api.url))
        .bearer_auth(&api.key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "PUT {path}: {}", res.status());
}

/// Posts texts `from..TEXTS` until done or the server goes away; returns how many got a 200.
async fn post_texts(url: String, answered: Arc<AtomicUsize>) {
    let client = reqwest::Client::new();
    let hooks = url.clone();
    futures::future::join_all((0..CONCURRENCY).map(|worker| {
        let (client, hooks, answered) = (client.clone(), hooks.clone(), answered.clone());
        async move {
            for i in (worker..TEXTS).step_by(CONCURRENCY) {
                let sid = format!("SM-crash-{i}");
                match post_sms(&client, &hooks, &sid, &sender(i), "hello, is it free?").await {
                    Ok(status) if status.is_success() => {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => return,
                }
            }
        }
    }))
    .await;
}

/// Every inbound message the tenant has, newest first.
async fn all_inbound(api: &Api) -> Vec<Value> {
    let mut items = Vec::new();
    let mut after = String::new();
    loop {
        let page = api.get(&format!("/v1/inbound?limit=1000{after}")).await;
        items.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["next_after"].as_str() {
            Some(next) => after = format!("&after={next}"),
            None => return items,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_texts_arrive_then_each_is_processed_and_answered_once() {
    let bin = herald_binary();
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let config = config(dir.path());
    let args = ["--config", config.to_str().unwrap()];
    let key = create_key(&bin, &data, "acme");
    let first = Serve::start(&bin, &data, dir.path().join("first.stderr"), &args).await;
    let api = Api {
        client: reqwest::Client::new(),
        url: first.url.clone(),
        key,
    };
    put(
        &api,
        "/v1/templates/hours",
        json!({ "text": "Yes, it is. Ask me anything." }),
    )
    .await;
    let rules = json!({ "rules": [{ "name": "welcome", "when": { "keywords": ["hello"] },
        "actions": [{ "type": "label", "label": "lead" },
                    { "type": "auto_reply", "template": "hours" }] }] });
    put(&api, "/v1/inbound-rules", rules).await;

    // Kill once a good part has been answered, while the rest are still arriving.
    let answered = Arc::new(AtomicUsize::new(0));
    let posting = tokio::spawn(post_texts(api.url.clone(), answered.clone()));
    let started = Instant::now();
    while answered.load(Ordering::Relaxed) < TEXTS / 3 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "texts too slow"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    first.kill9().await;
    let _ = posting.await;
    let at_kill = answered.load(Ordering::Relaxed);
    assert!(at_kill < TEXTS, "every text was answered before the kill");

    // Twilio sends again every text it got no answer to: here, all of them.
    let second = Serve::start(&bin, &data, dir.path().join("second.stderr"), &args).await;
    let api = Api {
        url: second.url.clone(),
        ..api
    };
    let again = Arc::new(AtomicUsize::new(0));
    post_texts(api.url.clone(), again.clone()).await;
    assert_eq!(
        again.load(Ordering::Relaxed),
        TEXTS,
        "the restarted server answers all"
    );

    // A message claimed at the kill waits out its lease (30 s), then is processed.
    let deadline = Instant::now() + Duration::from_secs(120);
    let inbound = loop {
        let inbound = all_inbound(&api).await;
        let done = inbound.iter().filter(|m| m["state"] == "processed").count();
        if done == TEXTS || Instant::now() > deadline {
            break inbound;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(inbound.len(), TEXTS, "each text stored once");
    let mut replies = BTreeSet::new();
    for m in &inbound {
        assert_eq!(m["state"], "processed", "{m}");
        let action = &m["decision"]["actions"][1];
        assert_eq!(action["result"], "applied", "{m}");
        replies.insert(action["message_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(replies.len(), TEXTS, "one auto-reply per text");
    let sent = api
        .get("/v1/messages?source_type=inbound_rule&limit=500")
        .await;
    let sent: BTreeSet<String> = sent["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(sent, replies, "no auto-reply sent twice, none lost");
    let retried = inbound
        .iter()
        .filter(|m| m["attempts"].as_u64() > Some(1))
        .count();
    eprintln!(
        "{at_kill} of {TEXTS} texts answered before the kill; {retried} processed again after it"
    );
    second.terminate(Duration::from_secs(10)).await;
}
