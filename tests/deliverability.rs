//! Deliverability on the embedded backend, end to end over HTTP: quiet hours (deferred with
//! the time it will go, handed over when the window opens, P0 at once), the reputation pause
//! of the bulk lanes (driven by the sandbox's bounce address), Herald's one-click unsubscribe
//! links (taken from what the gateway was handed), topic suppressions, and localized templates.

use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use herald_tests::{a_zone_at_night, TestServer};

fn sms(priority: &str, zone: &str) -> Value {
    json!({ "channel": "sms", "priority": priority, "to": "+15005550006", "body": "Sale tonight",
            "metadata": { "recipient_timezone": zone } })
}

#[tokio::test]
async fn a_text_at_night_is_deferred_to_the_morning_and_p0_goes_at_once() {
    let s = TestServer::start().await;
    let (zone, offset) = a_zone_at_night();
    let r = s.post("/v1/messages", &sms("P3", &zone)).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(r.body["status"], "deferred", "{}", r.body);
    let not_before: DateTime<Utc> = r.body["not_before"].as_str().unwrap().parse().unwrap();
    // 08:00-08:30 local: the window's opening, spread by up to half an hour.
    let local = not_before + chrono::Duration::hours(offset);
    assert_eq!(local.hour(), 8, "{not_before} in {zone}");
    assert!(local.minute() < 30);
    let id = r.body["id"].as_str().unwrap().to_owned();
    let view = s.get(&format!("/v1/messages/{id}")).await.body;
    assert_eq!(view["status"], "deferred");
    let first = &view["events"][0];
    assert_eq!(first["type"], "deferred", "{view:#}");
    assert_eq!(first["detail"]["reason"], "quiet_hours");
    assert_eq!(first["detail"]["zones"], json!([zone]));
    assert_eq!(first["detail"]["zone_basis"], "recipient_timezone");
    // Not handed over meanwhile; and it can still be cancelled.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.handoffs_of(&id), 0);
    let cancel = s.delete(&format!("/v1/messages/{id}")).await;
    assert_eq!(cancel.status, StatusCode::OK, "{}", cancel.body);

    // P0 always goes; P1 waits unless the tenant lets it through.
    let urgent = s.send(&sms("P0", &zone)).await;
    s.wait_status(&urgent, "delivered").await;
    let p1 = s.post("/v1/messages", &sms("P1", &zone)).await;
    assert_eq!(p1.body["status"], "deferred");
    let put = s
        .put_as("/v1/quiet-hours", &s.key, &json!({"p1_bypass": true}))
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.body);
    let p1 = s.post("/v1/messages", &sms("P1", &zone)).await;
    assert_eq!(p1.body["status"], "queued", "{}", p1.body);
    assert!(p1.body.get("not_before").is_none());

    // Bulk: each recipient held, counted apart.
    let bulk = json!({ "channel": "sms", "priority": "P3", "body": "Sale",
        "metadata": { "recipient_timezone": zone },
        "recipients": [{"to": "+15005550006"}, {"to": "+15005550010"}] });
    let r = s.post("/v1/messages/bulk", &bulk).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(
        (r.body["queued"].as_u64(), r.body["deferred"].as_u64()),
        (Some(2), Some(2))
    );
}

#[tokio::test]
async fn a_deferred_send_is_handed_over_when_the_window_opens() {
    let s = TestServer::start().await;
    // A window that opens at the next minute, in UTC, with no spread.
    let now = Utc::now();
    if now.second() > 50 {
        tokio::time::sleep(Duration::from_secs(11)).await;
    }
    let opens = Utc::now() + chrono::Duration::minutes(1);
    let window = json!({
        "start": format!("{:02}:{:02}", opens.hour(), opens.minute()),
        "end": format!("{:02}:{:02}", (opens.hour() + 2) % 24, opens.minute()),
    });
    let put = s
        .put_as(
            "/v1/quiet-hours",
            &s.key,
            &json!({"channels": {"sms": window}, "spread_minutes": 0}),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.body);
    let r = s.post("/v1/messages", &sms("P2", "UTC")).await;
    assert_eq!(r.body["status"], "deferred", "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_owned();
    let view = s
        .wait_for(&id, Duration::from_secs(90), |st| st == "delivered")
        .await;
    assert_eq!(view["status"], "delivered", "{view:#}");
    let sent_at: DateTime<Utc> = view["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "sent")
        .and_then(|e| e["at"].as_str())
        .unwrap()
        .parse()
        .unwrap();
    let not_before: DateTime<Utc> = r.body["not_before"].as_str().unwrap().parse().unwrap();
    assert!(sent_at >= not_before, "sent {sent_at} before {not_before}");
}

#[tokio::test]
async fn quiet_hours_settings_are_checked_scoped_and_kept_per_tenant() {
    let s = TestServer::start().await;
    let got = s.get("/v1/quiet-hours").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body["spread_minutes"], 30);
    for (bad, pointer) in [
        (json!({"spread_minutes": 500}), "/spread_minutes"),
        (
            json!({"channels": {"sms": {"start": "08:00", "end": "08:00"}}}),
            "/channels/sms",
        ),
    ] {
        let r = s.put_as("/v1/quiet-hours", &s.key, &bad).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {}",
            r.body
        );
        assert_eq!(r.body["errors"][0]["pointer"], pointer, "{}", r.body);
    }
    for bad in [
        json!({"fallback_timezone": "Mars/Olympus"}),
        json!({"channels": {"sms": {"start": "25:00", "end": "08:00"}}}),
        json!({"channels": {"fax": null}}),
        json!({"unknown": 1}),
    ] {
        let r = s.put_as("/v1/quiet-hours", &s.key, &bad).await;
        assert!(r.status.is_client_error(), "{bad}: {}", r.status);
        assert_eq!(
            r.headers["content-type"], "application/problem+json",
            "{bad}"
        );
    }
    let reader = s.new_key_with("acme", "read").await;
    let r = s
        .put_as("/v1/quiet-hours", &reader, &json!({"p1_bypass": true}))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let put = s
        .put_as("/v1/quiet-hours", &s.key, &json!({"p1_bypass": true}))
        .await;
    assert_eq!(put.status, StatusCode::OK);
    let other = s.new_key("globex").await;
    let theirs = s.get_as("/v1/quiet-hours", &other).await;
    assert_eq!(theirs.body["p1_bypass"], false, "another tenant's settings");
    // A bad recipient_timezone on a send is a 422 naming it.
    let r = s.post("/v1/messages", &sms("P3", "Nowhere/Town")).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        r.body["errors"][0]["pointer"],
        "/metadata/recipient_timezone"
    );
}

#[tokio::test]
async fn bounces_over_the_threshold_pause_the_bulk_lanes_until_resumed() {
    let s = TestServer::start_with(|c| c.engine.pause_recheck = Duration::from_millis(200)).await;
    let settings = json!({"min_sends": 20});
    let r = s.put_as("/v1/reputation/settings", &s.key, &settings).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // 20 sends, 2 to the sandbox's bounce address: 10% bounces, over the 4% pause level.
    let sent = s
        .bulk_email("P3", 20, |i| match i {
            0 | 1 => format!("bounce+{i}@simulator.amazonses.com"),
            _ => format!("success+{i}@simulator.amazonses.com"),
        })
        .await;
    assert_eq!(sent.status, StatusCode::ACCEPTED, "{}", sent.body);
    let mut report = Value::Null;
    for _ in 0..200 {
        report = s.get("/v1/reputation").await.body;
        if !report["paused"].is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(report["paused"]["gateway"], "sandbox", "{report:#}");
    assert!(report["paused"]["bounce_rate"].as_f64().unwrap() >= 0.04);
    assert_eq!(report["gateways"][0]["level"], "pause", "{report:#}");
    let stats = s.get("/v1/stats/channels").await.body;
    assert_eq!(
        stats["reputation_paused"]["gateway"], "sandbox",
        "{stats:#}"
    );
    let audit = s.get("/v1/audit?action=reputation.paused").await.body;
    assert_eq!(
        audit["items"].as_array().map(Vec::len),
        Some(1),
        "{audit:#}"
    );

    // Bulk waits; P0 and P1 keep flowing.
    let held = s
        .send(
            &json!({"channel": "email", "priority": "P2", "to": "ann@example.com",
                      "subject": "News", "body": "News"}),
        )
        .await;
    let urgent = s
        .send(
            &json!({"channel": "email", "priority": "P0", "to": "ann@example.com",
                      "subject": "Alert", "body": "Alert"}),
        )
        .await;
    s.wait_status(&urgent, "delivered").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(s.handoffs_of(&held), 0, "a bulk send went during the pause");
    // A claim may be between `sending` and the hold that puts it back.
    let view = s
        .wait_for(&held, Duration::from_secs(5), |st| st != "sending")
        .await;
    assert!(
        matches!(view["status"].as_str(), Some("queued" | "deferred")),
        "{view:#}"
    );

    let reader = s.new_key_with("acme", "read").await;
    let denied = s
        .request(
            Method::POST,
            "/v1/reputation/resume",
            Some(&reader),
            &[],
            None,
        )
        .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    let resumed = s
        .request(
            Method::POST,
            "/v1/reputation/resume",
            Some(&s.key),
            &[],
            None,
        )
        .await;
    assert_eq!(resumed.status, StatusCode::OK, "{}", resumed.body);
    assert_eq!(resumed.body["lifted"]["gateway"], "sandbox");
    s.wait_status(&held, "delivered").await;
    let after = s.get("/v1/reputation").await.body;
    assert!(after["paused"].is_null(), "{after:#}");
    let stats = s.get("/v1/stats/channels").await.body;
    assert!(stats["reputation_paused"].is_null(), "{stats:#}");
    // Another tenant never saw the pause.
    let other = s.new_key("globex").await;
    let theirs = s.get_as("/v1/reputation", &other).await.body;
    assert!(theirs["paused"].is_null());
}

/// The first URL of the List-Unsubscribe header the sandbox was handed for `id`.
fn one_click_link(s: &TestServer, id: &str) -> String {
    let handoffs = s.embedded.handoffs.lock();
    let header = handoffs
        .iter()
        .find(|h| h.message_id.to_string() == id)
        .and_then(|h| h.list_unsubscribe.clone())
        .unwrap_or_else(|| panic!("no List-Unsubscribe for {id}"));
    let start = header.find('<').unwrap() + 1;
    let end = header.find('>').unwrap();
    header[start..end].to_owned()
}

async fn bulk_to(s: &TestServer, to: &str, topic: Option<&str>) -> String {
    let mut body = json!({ "channel": "email", "priority": "P3", "subject": "News",
                           "body": "News", "recipients": [{"to": to}] });
    if let Some(t) = topic {
        body["metadata"] = json!({ "topic": t });
    }
    let r = s.post("/v1/messages/bulk", &body).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let bulk = r.body["bulk_id"].as_str().unwrap();
    let page = s.get(&format!("/v1/messages?bulk_id={bulk}")).await.body;
    page["items"][0]["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_one_click_link_unsubscribes_on_post_only_and_cannot_be_forged() {
    let s = TestServer::start().await;
    let first = bulk_to(&s, "Cy@Example.com", None).await;
    s.wait_status(&first, "delivered").await;
    let link = one_click_link(&s, &first);
    assert!(link.starts_with(&format!("{}/u/", s.url)), "{link}");
    let path = link.trim_start_matches(&s.url).to_owned();

    // A GET shows a page and changes nothing (mail scanners follow links).
    let page = s.request(Method::GET, &path, None, &[], None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(page.headers["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("default-src 'none'"));
    let listed = s.get("/v1/suppressions").await.body;
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(0),
        "{listed:#}"
    );

    // A forged or edited token is a 404, and no key is needed for the real one.
    let (payload, rest) = path.trim_start_matches("/u/").split_once('.').unwrap();
    let edited = format!("/u/{}A.{rest}", payload);
    for bad in [
        "/u/nothing",
        edited.as_str(),
        &format!("/u/{}", "x".repeat(5000)),
    ] {
        let r = s.request(Method::POST, bad, None, &[], None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{bad}");
    }
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let body = Some(b"List-Unsubscribe=One-Click".to_vec());
    for _ in 0..2 {
        // The second POST (a replay) is harmless.
        let r = s
            .request(Method::POST, &path, None, &form, body.clone())
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let listed = s.get("/v1/suppressions").await.body;
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(1),
        "{listed:#}"
    );
    assert_eq!(listed["items"][0]["reason"], "unsubscribe");
    let added = s.get("/v1/audit?action=suppression.added").await.body;
    assert_eq!(
        added["items"].as_array().map(Vec::len),
        Some(1),
        "one entry, however many POSTs"
    );

    let next = bulk_to(&s, "cy@example.com", None).await;
    s.wait_status(&next, "suppressed").await;
    // Another tenant's sends to the address are not theirs to stop.
    let other = s.new_key("globex").await;
    let r = s
        .post_with(
            "/v1/messages",
            &other,
            &[],
            &json!({"channel": "email", "priority": "P3",
            "to": "cy@example.com", "subject": "Hi", "body": "Hi"}),
        )
        .await;
    assert_eq!(r.body["status"], "queued");
    // A P1 transactional email carries no Herald link.
    let receipt = s
        .send(
            &json!({"channel": "email", "priority": "P1", "to": "dee@example.com",
                      "subject": "Receipt", "body": "Thanks"}),
        )
        .await;
    s.wait_status(&receipt, "delivered").await;
    let handoffs = s.embedded.handoffs.lock();
    let h = handoffs
        .iter()
        .find(|h| h.message_id.to_string() == receipt)
        .unwrap();
    assert!(h.list_unsubscribe.is_none());
}

#[tokio::test]
async fn leaving_a_topic_stops_only_that_topic() {
    let s = TestServer::start().await;
    let news = bulk_to(&s, "dee@example.com", Some("newsletter")).await;
    s.wait_status(&news, "delivered").await;
    let link = one_click_link(&s, &news);
    let page = s
        .request(
            Method::GET,
            link.trim_start_matches(&s.url),
            None,
            &[],
            None,
        )
        .await;
    assert_eq!(page.status, StatusCode::OK);
    let r = s
        .request(
            Method::POST,
            link.trim_start_matches(&s.url),
            None,
            &[],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let again = bulk_to(&s, "dee@example.com", Some("newsletter")).await;
    s.wait_status(&again, "suppressed").await;
    let offers = bulk_to(&s, "dee@example.com", Some("offers")).await;
    s.wait_status(&offers, "delivered").await;
    let plain = bulk_to(&s, "dee@example.com", None).await;
    s.wait_status(&plain, "delivered").await;
    // A single send on the topic is stopped at accept.
    let r = s
        .post(
            "/v1/messages",
            &json!({"channel": "email", "priority": "P1", "to": "dee@example.com",
            "subject": "Issue 2", "body": "News", "metadata": {"topic": "newsletter"}}),
        )
        .await;
    assert_eq!(r.body["status"], "suppressed", "{}", r.body);
}

#[tokio::test]
async fn a_template_speaks_the_locale_asked_for_with_fallbacks() {
    let s = TestServer::start().await;
    let put = |path: String, body: Value| {
        let s = &s;
        async move { s.put_as(&path, &s.key, &body).await }
    };
    let r = put(
        "/v1/templates/welcome".into(),
        json!({"subject": "Welcome {{ name }}", "text": "Hello"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = put(
        "/v1/templates/welcome/locales/es".into(),
        json!({"subject": "Bienvenido {{ name }}", "text": "Hola"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = put(
        "/v1/templates/welcome/locales/es".into(),
        json!({"subject": "Bienvenida {{ name }}", "text": "Hola"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "a replaced variant");
    let r = put(
        "/v1/templates/welcome/locales/fr-CA".into(),
        json!({"subject": "Bienvenue", "text": "Bonjour"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let got = s.get("/v1/templates/welcome").await.body;
    assert_eq!(got["locales"]["es"]["text"], "Hola", "{got:#}");
    // Re-putting the default keeps the variants.
    put(
        "/v1/templates/welcome".into(),
        json!({"subject": "Welcome, {{ name }}", "text": "Hello"}),
    )
    .await;
    assert_eq!(
        s.get("/v1/templates/welcome").await.body["locales"]
            .as_object()
            .map(|m| m.len()),
        Some(2)
    );

    let send = |locale: Option<&str>| {
        let mut body = json!({"channel": "email", "priority": "P1", "to": "ann@example.com",
                              "template": "welcome", "data": {"name": "Ann"}});
        if let Some(l) = locale {
            body["metadata"] = json!({"locale": l});
        }
        body
    };
    for (asked, subject, chosen) in [
        (Some("es-MX"), "Bienvenida Ann", Some("es")),
        (Some("es"), "Bienvenida Ann", Some("es")),
        (Some("de"), "Welcome, Ann", None),
        (None, "Welcome, Ann", None),
    ] {
        let id = s.send(&send(asked)).await;
        let view = s.get(&format!("/v1/messages/{id}")).await.body;
        assert_eq!(view["subject"], subject, "{asked:?}: {view:#}");
        assert_eq!(
            view["events"][0]["detail"]["locale"].as_str(),
            chosen,
            "{asked:?}"
        );
    }
    // A contact's locale is used when the send names none.
    let contact = s
        .post(
            "/v1/contacts",
            &json!({"identities": [{"kind": "email", "value": "bea@example.com"}],
                                       "metadata": {"locale": "fr-CA"}}),
        )
        .await;
    assert_eq!(contact.status, StatusCode::CREATED, "{}", contact.body);
    let mut to_bea = send(None);
    to_bea["to"] = json!("bea@example.com");
    let id = s.send(&to_bea).await;
    let view = s.get(&format!("/v1/messages/{id}")).await.body;
    assert_eq!(view["body"], "Bonjour", "{view:#}");

    // Bad input, another tenant, a missing template, a deleted variant.
    let r = put(
        "/v1/templates/welcome/locales/english".into(),
        json!({"text": "x"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = put(
        "/v1/templates/welcome/locales/de".into(),
        json!({"text": "{{ broken"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = put("/v1/templates/nope/locales/de".into(), json!({"text": "x"})).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let other = s.new_key("globex").await;
    let r = s
        .put_as(
            "/v1/templates/welcome/locales/de",
            &other,
            &json!({"text": "x"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "another tenant's template");
    let r = s.post("/v1/messages", &send(Some("x"))).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.body["errors"][0]["pointer"], "/metadata/locale");
    let r = s.delete("/v1/templates/welcome/locales/es").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = s.delete("/v1/templates/welcome/locales/es").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let id = s.send(&send(Some("es-MX"))).await;
    assert_eq!(
        s.get(&format!("/v1/messages/{id}")).await.body["subject"],
        "Welcome, Ann"
    );
}

/// A second sandbox, `sandbox-b`, after the first in every channel's order.
fn with_backup(c: &mut shared::embedded::EmbeddedConfig) {
    c.backup_sandboxes.push(shared::gateway::SandboxConfig {
        name: "sandbox-b".into(),
        ..c.sandbox.clone()
    });
}

fn schedule(
    start: chrono::NaiveDate,
    caps: &[u64],
) -> shared::domain::deliverability::warmup::WarmupSchedule {
    serde_json::from_value(json!({ "start": start, "target_per_day": 1000, "caps": caps }))
        .expect("a schedule")
}

#[tokio::test]
async fn a_warming_gateway_takes_its_days_cap_and_the_rest_overflows() {
    let today = Utc::now().date_naive();
    let s = TestServer::start_with(|c| {
        with_backup(c);
        c.engine
            .warmups
            .insert("sandbox".into(), schedule(today, &[3, 6]));
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            s.send(
                &json!({"channel": "email", "priority": "P1", "to": format!("u{i}@example.com"),
                           "subject": "Hi", "body": "Hi"}),
            )
            .await,
        );
    }
    let mut through = std::collections::BTreeMap::<String, usize>::new();
    for id in &ids {
        let view = s.wait_status(id, "delivered").await;
        *through
            .entry(view["gateway"].as_str().unwrap().to_owned())
            .or_default() += 1;
        if view["gateway"] == "sandbox-b" {
            assert!(
                view["route_reason"]
                    .as_str()
                    .unwrap()
                    .starts_with("warm-up overflow"),
                "{view:#}"
            );
        }
    }
    assert_eq!(
        through,
        [("sandbox".to_owned(), 3), ("sandbox-b".to_owned(), 2)].into()
    );
    let gateways = s.get("/v1/gateways").await;
    assert_eq!(gateways.status, StatusCode::OK, "{}", gateways.body);
    let sandbox = &gateways.body["items"][0];
    assert_eq!(sandbox["name"], "sandbox", "{:#}", gateways.body);
    let w = &sandbox["warmup"];
    assert_eq!(
        (w["day"].as_u64(), w["cap_today"].as_u64()),
        (Some(1), Some(3)),
        "{w:#}"
    );
    assert_eq!(w["used_today"]["sends"], 3);
    assert_eq!(w["state"], "advancing");
    assert!(gateways.body["items"][1]["warmup"].is_null());
}

#[tokio::test]
async fn yesterdays_bounces_hold_the_schedule_and_a_clean_day_advances_it() {
    use shared::ports::WarmupStore;
    let today = Utc::now().date_naive();
    let yesterday = today.pred_opt().unwrap();
    let started = today - chrono::Duration::days(3);
    let s = TestServer::start_with(|c| {
        with_backup(c);
        c.engine
            .warmups
            .insert("sandbox".into(), schedule(started, &[10, 20, 40]));
        c.engine
            .warmups
            .insert("sandbox-b".into(), schedule(started, &[10, 20, 40]));
    })
    .await;
    // Yesterday: 10 sends through each; 1 bounced through `sandbox` (10%, over 3%).
    let store = &s.embedded.backend;
    for gateway in ["sandbox", "sandbox-b"] {
        for _ in 0..10 {
            assert!(store.take(gateway, yesterday, "all", 10).await.unwrap());
        }
    }
    store.note("sandbox", yesterday, 1, 0).await.unwrap();
    let body = s.get("/v1/gateways").await.body;
    let warmup = |name: &str| {
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == name)
            .map(|g| g["warmup"].clone())
            .unwrap()
    };
    let held = warmup("sandbox");
    assert_eq!(
        (held["state"].as_str(), held["day"].as_u64()),
        (Some("held"), Some(1)),
        "{held:#}"
    );
    assert!(
        held["held_reason"]
            .as_str()
            .unwrap()
            .contains("bounce rate 10.00%"),
        "{held:#}"
    );
    assert_eq!(held["cap_today"], 10);
    let advanced = warmup("sandbox-b");
    assert_eq!(
        (advanced["state"].as_str(), advanced["day"].as_u64()),
        (Some("advancing"), Some(2))
    );
    assert_eq!(advanced["cap_today"], 20);
    // Judged once a day: asking again changes nothing.
    let again = s.get("/v1/gateways").await.body;
    assert_eq!(
        again["items"][0]["warmup"]["day"],
        body["items"][0]["warmup"]["day"]
    );
}
