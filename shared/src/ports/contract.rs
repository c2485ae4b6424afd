//! Port contract tests: written against the traits only, so every backend runs the same
//! functions (SQLite in `shared`'s unit tests, DynamoDB and SQS against moto in `tests/`).
// Test code: a panic is how a contract test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use chrono::Utc;
use serde_json::json;

use crate::domain::suppression::{Reason, Scope, Suppression};
use crate::domain::{
    Channel, Content, Message, MessageId, MessageStatus, NewMessage, Priority, Template,
    TemplateName, TenantId,
};
use crate::ports::{
    AcceptBatch, AcceptOutcome, AttemptChange, ClaimOutcome, EventLog, IdempotencyRecord,
    InboundStore, LaneQueue, MessageStore, SuppressionFilter, SuppressionStore, TemplateStore,
    TenantStore, Transition, TransitionOutcome,
};

pub fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).unwrap()
}

pub fn message(t: &TenantId, lane: Priority) -> NewMessage {
    NewMessage {
        id: MessageId::new(),
        tenant: t.clone(),
        channel: Channel::Email,
        priority: lane,
        to: "ann@example.com".into(),
        from: None,
        content: Content {
            subject: Some("s".into()),
            body: Some("b".into()),
            html: None,
        },
        template: None,
        sms: None,
        message_type: None,
        source_type: None,
        source_id: None,
        metadata: None,
        send_at: None,
        bulk_id: None,
        external_id: None,
        correlation_id: "c".into(),
        status: MessageStatus::Queued,
        note: None,
        locale: None,
        created_at: Utc::now(),
    }
}

/// Claims `id`, which must be claimable.
pub async fn claim_now<S: MessageStore + ?Sized>(
    store: &S,
    id: MessageId,
    lane: Priority,
) -> Box<Message> {
    match store.claim(id, lane, Utc::now(), LEASE).await.unwrap() {
        ClaimOutcome::Claimed(m) => m,
        other => panic!("not claimed: {other:?}"),
    }
}

pub async fn accept<S: MessageStore + ?Sized>(store: &S, m: NewMessage) -> MessageId {
    let id = m.id;
    let out = store
        .accept(AcceptBatch {
            messages: vec![m],
            idempotency: None,
        })
        .await
        .unwrap();
    assert_eq!(out, AcceptOutcome::Accepted);
    id
}

pub const LEASE: Duration = Duration::from_secs(30);

/// The `sent` of claimed message `m`, handed to `gateway` under `provider_id`.
pub fn sent_under(m: &Message, gateway: &str, provider_id: &str) -> Transition {
    let mut sent = Transition::new(m.id, MessageStatus::Sent, Utc::now());
    sent.attempt = Some(m.attempts);
    sent.gateway = Some(gateway.into());
    sent.provider_message_id = Some(provider_id.into());
    sent
}

pub async fn claim_is_exclusive_until_the_lease_runs_out<S: MessageStore>(store: &S) {
    let t = tenant("acme");
    let id = accept(store, message(&t, Priority::P1)).await;
    let now = Utc::now();
    let (a, b) = tokio::join!(
        store.claim(id, Priority::P1, now, LEASE),
        store.claim(id, Priority::P1, now, LEASE)
    );
    let claimed = [&a, &b]
        .iter()
        .filter(|r| matches!(r, Ok(ClaimOutcome::Claimed(_))))
        .count();
    assert_eq!(
        claimed, 1,
        "exactly one of two concurrent claims wins: {a:?} {b:?}"
    );
    match store.claim(id, Priority::P1, now, LEASE).await.unwrap() {
        ClaimOutcome::NotClaimable {
            current: MessageStatus::Sending,
            lease_until: Some(_),
            ..
        } => {}
        other => panic!("a live claim blocks others, got {other:?}"),
    }
    // After the lease (a crashed worker), the message can be claimed again, as attempt 2.
    let later = now + chrono::Duration::from_std(LEASE).unwrap() + chrono::Duration::seconds(1);
    match store.claim(id, Priority::P1, later, LEASE).await.unwrap() {
        ClaimOutcome::Claimed(m) => assert_eq!(m.attempts, 2),
        other => panic!("expired lease is claimable, got {other:?}"),
    }
}

pub async fn provider_ids_find_their_message<S: MessageStore>(store: &S) {
    let t = tenant("acme");
    let id = accept(store, message(&t, Priority::P2)).await;
    let m = claim_now(store, id, Priority::P2).await;
    let sent = sent_under(&m, "ses", "0100-abc");
    assert_eq!(
        store.transition(vec![sent]).await.unwrap(),
        [TransitionOutcome::Applied]
    );
    let found = store
        .find_by_provider_ids(vec![
            ("ses".into(), "0100-abc".into()),
            ("postal".into(), "0100-abc".into()),
            ("ses".into(), "0100-other".into()),
        ])
        .await
        .unwrap();
    assert_eq!(
        found,
        [Some(id), None, None],
        "gateway and id must both match"
    );
    // A callback's transition keeps the route it was sent on.
    let delivered = Transition::new(id, MessageStatus::Delivered, Utc::now());
    store.transition(vec![delivered]).await.unwrap();
    let (m, _) = store.get(&t, id).await.unwrap().unwrap();
    assert_eq!(
        (
            m.status,
            m.gateway.as_deref(),
            m.provider_message_id.as_deref()
        ),
        (MessageStatus::Delivered, Some("ses"), Some("0100-abc"))
    );
}

pub async fn outcomes_need_the_current_attempt<S: MessageStore>(store: &S) {
    let t = tenant("acme");
    let id = accept(store, message(&t, Priority::P4)).await;
    let m = claim_now(store, id, Priority::P4).await;
    let mut stale = Transition::new(id, MessageStatus::Sent, Utc::now());
    stale.attempt = Some(m.attempts + 1);
    assert_eq!(
        store.transition(vec![stale]).await.unwrap(),
        [TransitionOutcome::Conflict {
            current: MessageStatus::Sending
        }]
    );
    let mut throttled = Transition::new(id, MessageStatus::Deferred, Utc::now());
    throttled.attempt = Some(m.attempts);
    throttled.attempts = AttemptChange::GiveBack;
    assert_eq!(
        store.transition(vec![throttled]).await.unwrap(),
        [TransitionOutcome::Applied]
    );
    let (m, events) = store.get(&t, id).await.unwrap().unwrap();
    assert_eq!(
        (m.status, m.attempts),
        (MessageStatus::Deferred, 0),
        "a throttle hands the attempt back"
    );
    let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
    let tried = [
        MessageStatus::Queued,
        MessageStatus::Sending,
        MessageStatus::Deferred,
    ];
    assert_eq!(kinds, tried);

    // A hold (a throttle before the send) leaves no trace on the timeline, however many.
    for _ in 0..3 {
        let m = claim_now(store, id, Priority::P4).await;
        let mut held = Transition::new(id, MessageStatus::Deferred, Utc::now());
        held.attempt = Some(m.attempts);
        held.attempts = AttemptChange::GiveBack;
        held.hold = true;
        assert_eq!(
            store.transition(vec![held]).await.unwrap(),
            [TransitionOutcome::Applied]
        );
    }
    let (m, events) = store.get(&t, id).await.unwrap().unwrap();
    assert_eq!((m.status, m.attempts), (MessageStatus::Deferred, 0));
    let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, tried, "holds leave the timeline as it was");
}

pub async fn cancel_and_claim_race_has_one_winner<S: MessageStore>(store: &S) {
    let t = tenant("acme");
    for _ in 0..20 {
        let id = accept(store, message(&t, Priority::P0)).await;
        let mut cancel = Transition::new(id, MessageStatus::Cancelled, Utc::now());
        cancel.tenant = Some(t.clone());
        let (c, k) = tokio::join!(
            store.transition(vec![cancel]),
            store.claim(id, Priority::P0, Utc::now(), LEASE)
        );
        let cancelled = c.unwrap() == [TransitionOutcome::Applied];
        let claimed = matches!(k.unwrap(), ClaimOutcome::Claimed(_));
        assert!(
            cancelled ^ claimed,
            "exactly one wins (cancelled {cancelled}, claimed {claimed})"
        );
    }
}

/// A batch claim is a compare-and-set per message: a cancelled one and a held one are refused,
/// the others are claimed; outcomes recorded together apply in order, each checked on its own.
pub async fn batches_claim_and_settle_message_by_message<S: MessageStore>(store: &S) {
    let t = tenant("acme");
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(accept(store, message(&t, Priority::P3)).await);
    }
    let missing = MessageId::new();
    let mut cancel = Transition::new(ids[1], MessageStatus::Cancelled, Utc::now());
    cancel.tenant = Some(t.clone());
    store.transition(vec![cancel]).await.unwrap();
    store
        .claim(ids[2], Priority::P3, Utc::now(), LEASE)
        .await
        .unwrap();
    let mut asked = ids.clone();
    asked.push(missing);
    let outcomes = store
        .claim_many(asked, Priority::P3, Utc::now(), LEASE)
        .await
        .unwrap();
    let shape: Vec<&str> = outcomes
        .iter()
        .map(|o| match o {
            ClaimOutcome::Claimed(_) => "claimed",
            ClaimOutcome::NotClaimable {
                lease_until: Some(_),
                ..
            } => "held",
            ClaimOutcome::NotClaimable { .. } => "final",
            ClaimOutcome::NotFound => "missing",
        })
        .collect();
    assert_eq!(
        shape,
        ["claimed", "final", "held", "claimed", "claimed", "missing"]
    );
    let attempt = |i: usize| match &outcomes[i] {
        ClaimOutcome::Claimed(m) => m.attempts,
        other => panic!("not claimed: {other:?}"),
    };
    let sent = |i: usize, provider: &str| {
        let mut s = Transition::new(ids[i], MessageStatus::Sent, Utc::now());
        s.attempt = Some(attempt(i));
        s.gateway = Some("sandbox".into());
        s.provider_message_id = Some(provider.into());
        s
    };
    let mut stale = sent(4, "p-stale");
    stale.attempt = Some(attempt(4) + 1);
    let batch = vec![
        sent(0, "p-0"),
        Transition::new(ids[0], MessageStatus::Delivered, Utc::now()),
        sent(3, "p-3"),
        stale,
        Transition::new(missing, MessageStatus::Delivered, Utc::now()),
    ];
    assert_eq!(
        store.transition(batch).await.unwrap(),
        [
            TransitionOutcome::Applied,
            TransitionOutcome::Applied,
            TransitionOutcome::Applied,
            TransitionOutcome::Conflict {
                current: MessageStatus::Sending
            },
            TransitionOutcome::NotFound,
        ]
    );
    let (m0, events) = store.get(&t, ids[0]).await.unwrap().unwrap();
    assert_eq!(m0.status, MessageStatus::Delivered);
    assert_eq!(m0.provider_message_id.as_deref(), Some("p-0"));
    let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            MessageStatus::Queued,
            MessageStatus::Sending,
            MessageStatus::Sent,
            MessageStatus::Delivered
        ]
    );
    let found = store
        .find_by_provider_ids(vec![("sandbox".into(), "p-3".into())])
        .await
        .unwrap();
    assert_eq!(found, [Some(ids[3])]);

    // A hold in a batch takes back its claim's event; the others keep theirs.
    let mut held = Transition::new(ids[4], MessageStatus::Deferred, Utc::now());
    held.attempt = Some(attempt(4));
    held.attempts = AttemptChange::GiveBack;
    held.hold = true;
    let delivered = Transition::new(ids[3], MessageStatus::Delivered, Utc::now());
    assert_eq!(
        store.transition(vec![held, delivered]).await.unwrap(),
        [TransitionOutcome::Applied, TransitionOutcome::Applied]
    );
    let (m4, events) = store.get(&t, ids[4]).await.unwrap().unwrap();
    assert_eq!(m4.status, MessageStatus::Deferred);
    let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [MessageStatus::Queued]);
    let (_, events) = store.get(&t, ids[3]).await.unwrap().unwrap();
    assert_eq!(events.len(), 4, "queued, sending, sent, delivered");
}

pub async fn tenants_are_isolated<S: MessageStore>(store: &S) {
    let (a, b) = (tenant("acme"), tenant("globex"));
    let id = accept(store, message(&a, Priority::P2)).await;
    assert!(store.get(&b, id).await.unwrap().is_none());
    let mut cancel = Transition::new(id, MessageStatus::Cancelled, Utc::now());
    cancel.tenant = Some(b);
    assert_eq!(
        store.transition(vec![cancel]).await.unwrap(),
        [TransitionOutcome::NotFound]
    );
    assert_eq!(
        store.get(&a, id).await.unwrap().unwrap().0.status,
        MessageStatus::Queued
    );
}

pub async fn idempotency_keys_commit_with_their_messages<S: MessageStore>(store: &S) {
    let t = tenant("acme");
    let record = IdempotencyRecord {
        tenant: t.clone(),
        key: "k1".into(),
        request_hash: "h".into(),
        response_status: 202,
        response_body: "{}".into(),
    };
    let first = message(&t, Priority::P4);
    let first_id = first.id;
    let out = store
        .accept(AcceptBatch {
            messages: vec![first],
            idempotency: Some(record.clone()),
        })
        .await
        .unwrap();
    assert_eq!(out, AcceptOutcome::Accepted);
    let second = message(&t, Priority::P4);
    let second_id = second.id;
    let out = store
        .accept(AcceptBatch {
            messages: vec![second],
            idempotency: Some(record.clone()),
        })
        .await
        .unwrap();
    assert_eq!(out, AcceptOutcome::KeyExists(record));
    assert!(store.get(&t, first_id).await.unwrap().is_some());
    assert!(
        store.get(&t, second_id).await.unwrap().is_none(),
        "a replay writes nothing"
    );
}

/// `store` puts what it accepts on `q`'s lanes (one backend, or DynamoDB with SQS).
pub async fn received_messages_come_back_after_the_visibility_timeout<
    S: MessageStore,
    Q: LaneQueue,
>(
    store: &S,
    q: &Q,
) {
    let t = tenant("acme");
    let id = accept(store, message(&t, Priority::P3)).await;
    // SQS counts visibility in whole seconds; two, so the receives below fit in it on a slow
    // emulator.
    let first = q
        .receive(Priority::P3, 10, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(first.iter().map(|d| d.message_id).collect::<Vec<_>>(), [id]);
    assert_eq!(first[0].receive_count, 1);
    assert!(
        q.receive(Priority::P3, 10, Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty(),
        "hidden while in flight"
    );
    assert!(
        q.receive(Priority::P0, 10, Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty(),
        "lanes are separate"
    );
    tokio::time::sleep(Duration::from_millis(2_300)).await;
    let again = q
        .receive(Priority::P3, 10, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].receive_count, 2);
    q.ack(Priority::P3, vec![again[0].receipt.clone()])
        .await
        .unwrap();
    let stats = q.stats(Utc::now(), None).await.unwrap();
    let p3 = stats.iter().find(|s| s.lane == Priority::P3).unwrap();
    assert_eq!(p3.depth + p3.in_flight, 0, "{p3:?}");
}

/// For a backend that purges by itself; DynamoDB leaves it to TTL (`expires_at`, tested apart).
pub async fn retention_deletes_only_final_messages<S: MessageStore>(store: &S) {
    let t = tenant("acme");
    let done = accept(store, message(&t, Priority::P4)).await;
    let waiting = accept(store, message(&t, Priority::P4)).await;
    let mut cancel = Transition::new(done, MessageStatus::Cancelled, Utc::now());
    cancel.detail = json!({ "by": "test" });
    store.transition(vec![cancel]).await.unwrap();
    let future = Utc::now() + chrono::Duration::seconds(5);
    let deleted = store.purge(future, future).await.unwrap();
    assert_eq!(deleted, 1);
    assert!(store.get(&t, done).await.unwrap().is_none());
    assert!(
        store.get(&t, waiting).await.unwrap().is_some(),
        "queued messages are never purged"
    );
}

pub async fn templates_round_trip<S: TemplateStore>(store: &S) {
    let (a, b) = (tenant("acme"), tenant("globex"));
    let name = TemplateName::parse("welcome").unwrap();
    let t = Template {
        name: name.clone(),
        subject: Some("Hi {{ name }}".into()),
        text: Some("Hello".into()),
        html: None,
        updated_at: Utc::now(),
        locales: Default::default(),
    };
    assert!(store.put(&a, t.clone()).await.unwrap(), "new");
    assert!(!store.put(&a, t.clone()).await.unwrap(), "replaced");
    let got = store.get(&a, &name).await.unwrap().unwrap();
    assert_eq!(
        (got.subject, got.text, got.html),
        (t.subject.clone(), t.text.clone(), None)
    );
    assert!(store.get(&b, &name).await.unwrap().is_none(), "per tenant");
    template_locales_round_trip(store, &t).await;
    assert!(!store.delete(&b, &name).await.unwrap());
    assert!(store.delete(&a, &name).await.unwrap());
    assert!(store.get(&a, &name).await.unwrap().is_none());
    // Deleting the template took its variants: a new one of the same name has none.
    store.put(&a, t.clone()).await.unwrap();
    assert!(store
        .get(&a, &name)
        .await
        .unwrap()
        .unwrap()
        .locales
        .is_empty());
}

/// Locale variants: kept beside their template (another template whose name it prefixes is
/// not read with it), replaced whole, kept when the default parts are put again, per tenant.
async fn template_locales_round_trip<S: TemplateStore>(store: &S, t: &Template) {
    use crate::domain::locale::Locale;
    use crate::domain::template::TemplateParts;
    use crate::ports::LocalePut;
    let (a, b) = (tenant("acme"), tenant("globex"));
    let es = Locale::parse("es").unwrap();
    let parts = |text: &str| TemplateParts {
        subject: Some(format!("{text}!")),
        text: Some(text.into()),
        html: None,
    };
    let put = |tenant, locale, p| async move {
        store.put_locale(tenant, &t.name, locale, &p).await.unwrap()
    };
    assert_eq!(put(&a, &es, parts("Hola")).await, LocalePut::Created);
    assert_eq!(put(&a, &es, parts("Buenas")).await, LocalePut::Replaced);
    let fr = Locale::parse("fr-CA").unwrap();
    assert_eq!(put(&a, &fr, parts("Bonjour")).await, LocalePut::Created);
    assert_eq!(
        put(&b, &es, parts("Hola")).await,
        LocalePut::NoTemplate,
        "not globex's"
    );
    let missing = TemplateName::parse("nope").unwrap();
    let none = store
        .put_locale(&a, &missing, &es, &parts("x"))
        .await
        .unwrap();
    assert_eq!(none, LocalePut::NoTemplate);
    // `welcome-2` sorts beside `welcome#...`: it is a template of its own.
    let sibling = Template {
        name: TemplateName::parse("welcome-2").unwrap(),
        ..t.clone()
    };
    store.put(&a, sibling.clone()).await.unwrap();
    store.put(&a, t.clone()).await.unwrap();
    let got = store.get(&a, &t.name).await.unwrap().unwrap();
    assert_eq!(got.locales.len(), 2, "{got:?}");
    assert_eq!(got.locales[&es], parts("Buenas"));
    assert_eq!(got.text, t.text);
    assert!(store
        .get(&a, &sibling.name)
        .await
        .unwrap()
        .unwrap()
        .locales
        .is_empty());
    assert!(store.delete_locale(&a, &t.name, &fr).await.unwrap());
    assert!(!store.delete_locale(&a, &t.name, &fr).await.unwrap());
    assert!(!store.delete_locale(&b, &t.name, &es).await.unwrap());
    let got = store.get(&a, &t.name).await.unwrap().unwrap();
    assert_eq!(got.locales.keys().collect::<Vec<_>>(), [&es]);
    store.delete(&a, &sibling.name).await.unwrap();
}

pub async fn keys_are_found_by_prefix_and_revoked<S: TenantStore>(store: &S) {
    let t = tenant("acme");
    assert!(store.ensure_tenant(&t).await.unwrap(), "new tenant");
    assert!(!store.ensure_tenant(&t).await.unwrap(), "existing tenant");
    let all = crate::domain::KeyScopes::ALL;
    store.add_key(&t, "abcd1234", "hash-1", all).await.unwrap();
    let key = store.find_key("abcd1234").await.unwrap().unwrap();
    assert_eq!(
        (key.tenant, key.key_hash.as_str(), key.revoked, key.scopes),
        (t.clone(), "hash-1", false, all)
    );
    let read = crate::domain::KeyScopes::parse("read").unwrap();
    store.add_key(&t, "efgh5678", "hash-2", read).await.unwrap();
    let key = store.find_key("efgh5678").await.unwrap().unwrap();
    assert_eq!(key.scopes, read, "scopes are stored as given");
    assert!(store.find_key("zzzz9999").await.unwrap().is_none());
    assert!(store.revoke_key("abcd1234").await.unwrap());
    assert!(store.find_key("abcd1234").await.unwrap().unwrap().revoked);
    assert!(!store.revoke_key("zzzz9999").await.unwrap());
}

pub async fn sender_identities_are_per_tenant<S: TenantStore>(store: &S) {
    use crate::domain::SenderIdentity;
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let domain = SenderIdentity::parse("acme.com").unwrap();
    let phone = SenderIdentity::parse("+15551234567").unwrap();
    assert!(store.sender_identities(&acme).await.unwrap().is_empty());
    assert!(
        store.add_sender_identity(&acme, &phone).await.unwrap(),
        "new"
    );
    assert!(
        store.add_sender_identity(&acme, &domain).await.unwrap(),
        "new"
    );
    assert!(
        !store.add_sender_identity(&acme, &domain).await.unwrap(),
        "again"
    );
    assert_eq!(
        store.sender_identities(&acme).await.unwrap(),
        vec![phone.clone(), domain.clone()],
        "sorted by their text"
    );
    assert!(
        store.sender_identities(&globex).await.unwrap().is_empty(),
        "isolated"
    );
    assert!(!store
        .remove_sender_identity(&globex, &domain)
        .await
        .unwrap());
    assert!(store.remove_sender_identity(&acme, &domain).await.unwrap());
    assert!(!store.remove_sender_identity(&acme, &domain).await.unwrap());
    assert_eq!(store.sender_identities(&acme).await.unwrap(), vec![phone]);
}

/// A permanent failure is listed as a dead letter (newest first) and a redrive puts it back
/// on its lane with its attempts reset.
pub async fn dead_letters_are_listed_and_redriven<S: MessageStore, Q: LaneQueue>(store: &S, q: &Q) {
    let t = tenant("deadletters");
    let mut failed = Vec::new();
    for _ in 0..3 {
        let id = accept(store, message(&t, Priority::P1)).await;
        let m = claim_now(store, id, Priority::P1).await;
        let mut fail = Transition::new(id, MessageStatus::Failed, Utc::now());
        fail.attempt = Some(m.attempts);
        fail.last_error = Some("21211: invalid number".into());
        assert_eq!(
            store.transition(vec![fail]).await.unwrap(),
            [TransitionOutcome::Applied]
        );
        failed.push(id);
    }
    // Drain the lane of the accept entries; only the redrive's must come back.
    let received = q
        .receive(Priority::P1, 10, Duration::from_secs(30))
        .await
        .unwrap();
    q.ack(
        Priority::P1,
        received.into_iter().map(|d| d.receipt).collect(),
    )
    .await
    .unwrap();

    let listed = store.list_failed(&t, None, 10).await.unwrap();
    let mut newest_first = failed.clone();
    newest_first.reverse();
    assert_eq!(
        listed.iter().map(|m| m.id).collect::<Vec<_>>(),
        newest_first
    );
    assert_eq!(
        listed[0].last_error.as_deref(),
        Some("21211: invalid number")
    );
    let page = store
        .list_failed(&t, Some(newest_first[0]), 10)
        .await
        .unwrap();
    assert_eq!(page.len(), 2, "paged by id");
    assert!(store
        .list_failed(&tenant("other"), None, 10)
        .await
        .unwrap()
        .is_empty());

    let redriven = store
        .redrive(&t, Some(vec![failed[0]]), Utc::now())
        .await
        .unwrap();
    assert_eq!(redriven, [failed[0]]);
    let (m, events) = store.get(&t, failed[0]).await.unwrap().unwrap();
    assert_eq!((m.status, m.attempts), (MessageStatus::Queued, 0));
    assert_eq!(
        events.last().map(|e| e.kind),
        Some(MessageStatus::Queued.into())
    );
    assert_eq!(store.list_failed(&t, None, 10).await.unwrap().len(), 2);
    let back = q
        .receive(Priority::P1, 10, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        back.iter().map(|d| d.message_id).collect::<Vec<_>>(),
        [failed[0]]
    );
    let all = store.redrive(&t, None, Utc::now()).await.unwrap();
    assert_eq!(all.len(), 2, "no ids: every dead letter of the tenant");
}

/// A message sent, failed, redriven, sent again, delivered and opened keeps both sends in its
/// timeline, in order, each with its own detail (SQLite keeps the last `sent` and the
/// `delivered` on the row).
pub async fn a_timeline_keeps_every_send<S: MessageStore>(store: &S) {
    let t = tenant("resent");
    let id = accept(store, message(&t, Priority::P2)).await;
    for (provider_id, then) in [
        ("first", MessageStatus::Failed),
        ("second", MessageStatus::Delivered),
    ] {
        let m = claim_now(store, id, Priority::P2).await;
        let mut sent = Transition::new(id, MessageStatus::Sent, Utc::now());
        sent.attempt = Some(m.attempts);
        sent.gateway = Some("sandbox-email".into());
        sent.provider_message_id = Some(provider_id.into());
        sent.detail = json!({ "provider_message_id": provider_id });
        let mut after = Transition::new(id, then, Utc::now());
        after.detail = json!({ "after": provider_id });
        let opened = Transition::new(id, MessageStatus::Opened, Utc::now());
        let steps = match then {
            MessageStatus::Delivered => vec![sent, after, opened],
            _ => vec![sent, after],
        };
        for step in steps {
            assert_eq!(
                store.transition(vec![step]).await.unwrap(),
                [TransitionOutcome::Applied]
            );
        }
        if provider_id == "first" {
            assert_eq!(
                store.redrive(&t, Some(vec![id]), Utc::now()).await.unwrap(),
                [id]
            );
        }
    }
    let (m, events) = store.get(&t, id).await.unwrap().unwrap();
    assert_eq!(m.provider_message_id.as_deref(), Some("second"));
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "queued",
            "sending",
            "sent",
            "failed",
            "queued",
            "sending",
            "sent",
            "delivered",
            "opened"
        ]
    );
    assert_eq!(events[7].detail["after"], "second");
    let sends: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e.kind == MessageStatus::Sent)
        .map(|e| &e.detail["provider_message_id"])
        .collect();
    assert_eq!(sends, [&json!("first"), &json!("second")]);
}

/// `settle` lets the counts catch up where they follow the store asynchronously (DynamoDB's
/// stream).
pub async fn channel_counts_follow_the_state<S, F>(store: &S, settle: impl Fn() -> F)
where
    S: MessageStore,
    F: std::future::Future<Output = ()>,
{
    let t = tenant("counts");
    let sent = accept(store, message(&t, Priority::P4)).await;
    accept(store, message(&t, Priority::P4)).await;
    let m = claim_now(store, sent, Priority::P4).await;
    let mut t_sent = Transition::new(sent, MessageStatus::Sent, Utc::now());
    t_sent.attempt = Some(m.attempts);
    t_sent.gateway = Some("ses".into());
    t_sent.provider_message_id = Some("p-1".into());
    store.transition(vec![t_sent]).await.unwrap();
    settle().await;
    let mut counts: Vec<(Channel, Option<String>, MessageStatus, u64)> = store
        .channel_counts(&t)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.channel, c.gateway, c.status, c.count))
        .collect();
    counts.sort_by_key(|c| c.2.as_str());
    assert_eq!(
        counts,
        [
            (Channel::Email, None, MessageStatus::Queued, 1),
            (Channel::Email, Some("ses".into()), MessageStatus::Sent, 1),
        ]
    );
    // The send is counted in its minute, on its lane, for this tenant alone.
    let since = Utc::now() - chrono::Duration::hours(1);
    let sent = store.sent_per_minute(&t, since).await.unwrap();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!((sent[0].lane, sent[0].sent), (Priority::P4, 1));
    assert!(Utc::now() - sent[0].minute < chrono::Duration::minutes(2));
    assert_eq!(sent[0].minute.timestamp() % 60, 0, "a minute's start");
    let other = store
        .sent_per_minute(&tenant("counts-other"), since)
        .await
        .unwrap();
    assert!(other.is_empty(), "{other:?}");
}

fn entry(scope: Scope, channel: Channel, address: &str, reason: Reason) -> Suppression {
    Suppression {
        scope,
        channel,
        address: address.to_owned(),
        reason,
        source: Some("test".into()),
        created_at: Utc::now(),
        expires_at: None,
    }
}

/// Tenant and global entries, batched checks, expiry, paging and filters.
pub async fn suppressions_are_scoped_batched_and_expire<S: SuppressionStore>(store: &S) {
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let now = Utc::now();
    let mut expired = entry(
        Scope::Tenant(acme.clone()),
        Channel::Email,
        "old@example.com",
        Reason::Manual,
    );
    expired.expires_at = Some(now - chrono::Duration::seconds(1));
    let added = store
        .put_suppressions(vec![
            entry(
                Scope::Tenant(acme.clone()),
                Channel::Email,
                "ann@example.com",
                Reason::Complaint,
            ),
            entry(
                Scope::Global,
                Channel::Email,
                "gone@example.com",
                Reason::HardBounce,
            ),
            entry(
                Scope::Tenant(acme.clone()),
                Channel::Sms,
                "+15005550006",
                Reason::SmsOptOut,
            ),
            expired,
        ])
        .await
        .unwrap();
    assert_eq!(added, 4);
    let again = store
        .put_suppressions(vec![entry(
            Scope::Tenant(acme.clone()),
            Channel::Email,
            "ann@example.com",
            Reason::Unsubscribe,
        )])
        .await
        .unwrap();
    assert_eq!(again, 0, "a replacement is not new");

    let asked: Vec<String> = [
        "ann@example.com",
        "gone@example.com",
        "old@example.com",
        "bob@example.com",
    ]
    .map(str::to_owned)
    .to_vec();
    let found = store
        .suppressed(&acme, Channel::Email, &asked, now)
        .await
        .unwrap();
    let mut hits: Vec<&str> = found.keys().map(String::as_str).collect();
    hits.sort();
    assert_eq!(
        hits,
        ["ann@example.com", "gone@example.com"],
        "expired and absent entries do not stop sends"
    );
    assert_eq!(found["ann@example.com"].reason, Reason::Unsubscribe);
    let other = store
        .suppressed(&globex, Channel::Email, &asked, now)
        .await
        .unwrap();
    assert_eq!(
        other.keys().collect::<Vec<_>>(),
        ["gone@example.com"],
        "another tenant sees only global entries"
    );
    let sms = store
        .suppressed(&acme, Channel::Sms, &["+15005550006".to_owned()], now)
        .await
        .unwrap();
    assert_eq!(sms.len(), 1, "per channel");
    // A large batch in one call.
    let many: Vec<String> = (0..250)
        .map(|i| format!("r{i}@example.com"))
        .chain(["ann@example.com".to_owned()])
        .collect();
    assert_eq!(
        store
            .suppressed(&acme, Channel::Email, &many, now)
            .await
            .unwrap()
            .len(),
        1
    );

    let acme_scope = Scope::Tenant(acme.clone());
    let page = store
        .list_suppressions(&acme_scope, &SuppressionFilter::default(), None, 2)
        .await
        .unwrap();
    let listed: Vec<(Channel, &str)> = page
        .iter()
        .map(|s| (s.channel, s.address.as_str()))
        .collect();
    assert_eq!(
        listed,
        [
            (Channel::Email, "ann@example.com"),
            (Channel::Email, "old@example.com")
        ]
    );
    let rest = store
        .list_suppressions(
            &acme_scope,
            &SuppressionFilter::default(),
            Some((Channel::Email, "old@example.com".into())),
            10,
        )
        .await
        .unwrap();
    assert_eq!(
        rest.iter().map(|s| s.address.as_str()).collect::<Vec<_>>(),
        ["+15005550006"]
    );
    let only_sms = SuppressionFilter {
        channel: Some(Channel::Sms),
        reason: None,
    };
    assert_eq!(
        store
            .list_suppressions(&acme_scope, &only_sms, None, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    let only_unsub = SuppressionFilter {
        channel: None,
        reason: Some(Reason::Unsubscribe),
    };
    assert_eq!(
        store
            .list_suppressions(&acme_scope, &only_unsub, None, 10)
            .await
            .unwrap()
            .len(),
        1
    );

    let got = store
        .get_suppression(&Scope::Global, Channel::Email, "gone@example.com")
        .await
        .unwrap();
    assert_eq!(got.map(|g| g.reason), Some(Reason::HardBounce));
    assert!(store
        .delete_suppression(&acme_scope, Channel::Email, "ann@example.com")
        .await
        .unwrap());
    assert!(!store
        .delete_suppression(&acme_scope, Channel::Email, "ann@example.com")
        .await
        .unwrap());
    assert!(!store
        .suppressed(&acme, Channel::Email, &asked, now)
        .await
        .unwrap()
        .contains_key("ann@example.com"));

    // A conditional lift: only for its reason, and only of an entry made no later than then.
    let opt_out = Suppression {
        scope: acme_scope.clone(),
        channel: Channel::Sms,
        address: "+15551230000".into(),
        reason: Reason::SmsOptOut,
        source: None,
        created_at: now,
        expires_at: None,
    };
    store.put_suppressions(vec![opt_out.clone()]).await.unwrap();
    let lift = |reason, made_by| {
        store.lift_suppression(&acme_scope, Channel::Sms, "+15551230000", reason, made_by)
    };
    let earlier = now - chrono::Duration::milliseconds(1);
    assert!(
        !lift(Reason::SmsOptOut, earlier).await.unwrap(),
        "made after the lift"
    );
    assert!(
        !lift(Reason::Complaint, now).await.unwrap(),
        "for another reason"
    );
    let kept = store.get_suppression(&acme_scope, Channel::Sms, "+15551230000");
    assert!(kept.await.unwrap().is_some());
    assert!(lift(Reason::SmsOptOut, now).await.unwrap());
    let gone = store.get_suppression(&acme_scope, Channel::Sms, "+15551230000");
    assert!(gone.await.unwrap().is_none());
    let number = ["+15551230000".to_owned()];
    let found = store.suppressed(&acme, Channel::Sms, &number, now);
    assert!(found.await.unwrap().is_empty(), "its look-up is gone too");
}

/// One address on three lists (two tenants' and the global one): a tenant's own entry comes
/// first, and each delete takes only its own entry.
pub async fn one_address_on_three_lists_is_deleted_list_by_list<S: SuppressionStore>(store: &S) {
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let acme_scope = Scope::Tenant(acme.clone());
    let now = Utc::now();
    let both = "both@example.com";
    store
        .put_suppressions(vec![
            entry(acme_scope.clone(), Channel::Email, both, Reason::Complaint),
            entry(
                Scope::Tenant(globex.clone()),
                Channel::Email,
                both,
                Reason::Unsubscribe,
            ),
            entry(Scope::Global, Channel::Email, both, Reason::HardBounce),
        ])
        .await
        .unwrap();
    let asked = [both.to_owned()];
    let reason_for = |tenant: TenantId| {
        let asked = asked.clone();
        async move {
            let found = store
                .suppressed(&tenant, Channel::Email, &asked, now)
                .await
                .unwrap();
            found.get(both).map(|s| (s.reason, s.scope.clone()))
        }
    };
    assert_eq!(
        reason_for(acme.clone()).await,
        Some((Reason::Complaint, acme_scope.clone()))
    );
    assert!(store
        .delete_suppression(&acme_scope, Channel::Email, both)
        .await
        .unwrap());
    assert_eq!(
        reason_for(acme.clone()).await,
        Some((Reason::HardBounce, Scope::Global)),
        "the global entry still stops it"
    );
    assert!(store
        .delete_suppression(&Scope::Global, Channel::Email, both)
        .await
        .unwrap());
    assert_eq!(reason_for(acme.clone()).await, None);
    assert_eq!(
        reason_for(globex.clone()).await,
        Some((Reason::Unsubscribe, Scope::Tenant(globex.clone()))),
        "another tenant's entry for the same address stays"
    );

    // The same entry twice in one import (a list with a repeated line) is one new entry.
    let twice = entry(
        acme_scope.clone(),
        Channel::Email,
        "twice@example.com",
        Reason::Manual,
    );
    let added = store
        .put_suppressions(vec![twice.clone(), twice])
        .await
        .unwrap();
    assert_eq!(added, 1);
}

pub async fn soft_bounces_are_counted_in_their_window<S: SuppressionStore>(store: &S) {
    let t = tenant("acme");
    let window = Duration::from_secs(30 * 24 * 3600);
    let now = Utc::now();
    let old = now - chrono::Duration::days(40);
    assert_eq!(
        store
            .soft_bounce(&t, Channel::Email, "full@example.com", old, window)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .soft_bounce(&t, Channel::Email, "full@example.com", now, window)
            .await
            .unwrap(),
        1,
        "the old strike is out of the window"
    );
    assert_eq!(
        store
            .soft_bounce(&t, Channel::Email, "full@example.com", now, window)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .soft_bounce(&t, Channel::Email, "other@example.com", now, window)
            .await
            .unwrap(),
        1
    );
}

pub async fn provider_events_are_seen_once<S: EventLog>(log: &S) {
    let keep = Duration::from_secs(3600);
    assert!(log.first_seen("sns", "m-1", keep).await.unwrap());
    assert!(
        !log.first_seen("sns", "m-1", keep).await.unwrap(),
        "a repeat"
    );
    assert!(
        log.first_seen("twilio", "m-1", keep).await.unwrap(),
        "per source"
    );
    assert!(log.first_seen("sns", "m-2", Duration::ZERO).await.unwrap());
    // DynamoDB keeps whole seconds.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(
        log.first_seen("sns", "m-2", keep).await.unwrap(),
        "one that ran out is new again"
    );
}

/// A claim on an event holds until it is marked applied (then a repeat) or released; a
/// claim whose holder died runs out with its lease, and the holder's token then undoes
/// nothing of the claim that took the event over.
pub async fn provider_event_claims_run_out_unless_applied<S: EventLog>(log: &S) {
    use crate::ports::EventClaim;
    let (lease, keep) = (Duration::from_secs(60), Duration::from_secs(3600));
    let claim =
        |id: &'static str, lease| async move { log.claim_event("sns", id, lease).await.unwrap() };
    let token = |c: EventClaim| match c {
        EventClaim::First(token) => token,
        other => panic!("expected a first claim, got {other:?}"),
    };
    let first = token(claim("c-1", lease).await);
    assert_eq!(
        claim("c-1", lease).await,
        EventClaim::Applying,
        "held by the first"
    );
    log.event_applied("sns", "c-1", first, keep).await.unwrap();
    assert_eq!(
        claim("c-1", lease).await,
        EventClaim::Applied,
        "a repeat once applied"
    );

    let failed = token(claim("c-2", lease).await);
    log.release_event("sns", "c-2", failed).await.unwrap();
    token(claim("c-2", lease).await);

    // A holder that died: its lease (none here) runs out. DynamoDB keeps whole seconds.
    let died = token(claim("c-3", Duration::ZERO).await);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let took_over = token(claim("c-3", lease).await);
    log.release_event("sns", "c-3", died).await.unwrap();
    log.event_applied("sns", "c-3", died, keep).await.unwrap();
    assert_eq!(
        claim("c-3", lease).await,
        EventClaim::Applying,
        "the late holder's token undid nothing"
    );
    log.event_applied("sns", "c-3", took_over, keep)
        .await
        .unwrap();
    assert_eq!(claim("c-3", lease).await, EventClaim::Applied);

    // The one that took over failed and released it: the late holder did apply it, and marks it.
    let died = token(claim("c-4", Duration::ZERO).await);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let failed = token(claim("c-4", lease).await);
    log.release_event("sns", "c-4", failed).await.unwrap();
    log.event_applied("sns", "c-4", died, keep).await.unwrap();
    assert_eq!(
        claim("c-4", lease).await,
        EventClaim::Applied,
        "marked though released"
    );
}

/// A claim given up as parked (its events parked, not all tried) is answered `Parked` to the
/// next claim, held by it like any claim, and again after a holder that died, until a holder
/// marks the event applied; a late token changes nothing, and the word runs out with `keep`.
pub async fn parked_event_claims_wait_to_be_released<S: EventLog>(log: &S) {
    use crate::ports::EventClaim;
    let (lease, keep) = (Duration::from_secs(60), Duration::from_secs(3600));
    let claim =
        |id: &'static str, lease| async move { log.claim_event("sns", id, lease).await.unwrap() };
    let parked = |c: EventClaim| match c {
        EventClaim::Parked(token) => token,
        other => panic!("expected a claim on parked events, got {other:?}"),
    };
    let first = match claim("p-1", lease).await {
        EventClaim::First(token) => token,
        other => panic!("expected a first claim, got {other:?}"),
    };
    log.event_parked("sns", "p-1", first, keep).await.unwrap();
    let second = parked(claim("p-1", lease).await);
    assert_eq!(claim("p-1", lease).await, EventClaim::Applying);
    // Its release failed too: given up as parked again.
    log.event_parked("sns", "p-1", second, keep).await.unwrap();
    // A holder that died (DynamoDB keeps whole seconds): the next claim still releases.
    let died = parked(claim("p-1", Duration::ZERO).await);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let third = parked(claim("p-1", lease).await);
    log.event_parked("sns", "p-1", died, keep).await.unwrap();
    log.event_applied("sns", "p-1", died, keep).await.unwrap();
    assert_eq!(
        claim("p-1", lease).await,
        EventClaim::Applying,
        "the late holder's token undid nothing"
    );
    log.event_applied("sns", "p-1", third, keep).await.unwrap();
    assert_eq!(claim("p-1", lease).await, EventClaim::Applied);

    // Parked events are kept for `keep`: past it, the event is new again.
    let first = match claim("p-2", lease).await {
        EventClaim::First(token) => token,
        other => panic!("expected a first claim, got {other:?}"),
    };
    log.event_parked("sns", "p-2", first, Duration::ZERO)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(matches!(claim("p-2", lease).await, EventClaim::First(_)));
    // Other ids are untouched.
    assert!(matches!(claim("p-3", lease).await, EventClaim::First(_)));
}

/// Events parked for a provider message come back in order, and only for that message; they
/// stay until forgotten, and forgetting what was read leaves what was parked since.
pub async fn provider_events_park_until_forgotten<S: EventLog>(log: &S) {
    let event = |id: &str, kind: crate::ports::ProviderEventKind| crate::ports::ProviderEvent {
        gateway: "twilio".into(),
        provider_message_id: id.into(),
        message_id: Some(MessageId::new()),
        kind,
        at: chrono::DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap(),
        detail: json!({ "status": "delivered", "error_code": 30003 }),
    };
    use crate::ports::ProviderEventKind::{Bounced, Clicked, Complained, Delivered, Opened};
    let keep = Duration::from_secs(3600);
    let nothing = log.parked("twilio", "SM-p1", None).await.unwrap();
    assert!(nothing.events.is_empty() && nothing.mark.is_none());
    let first = vec![
        event("SM-p1", Delivered),
        event("SM-p2", Bounced { permanent: true }),
    ];
    log.park(&first, keep).await.unwrap();
    log.park(&[event("SM-p1", Opened)], keep).await.unwrap();
    let read = log.parked("twilio", "SM-p1", None).await.unwrap();
    assert_eq!(read.events.len(), 2, "{read:?}");
    assert_eq!(read.events[0], first[0], "as parked, oldest first");
    assert_eq!(read.events[1].kind, Opened);
    let again = log.parked("twilio", "SM-p1", None).await.unwrap();
    assert_eq!(again.events, read.events, "a read leaves them parked");

    // Parked after the read: kept when what was read is forgotten.
    let later = event("SM-p1", Clicked);
    log.park(std::slice::from_ref(&later), keep).await.unwrap();
    let mark = read.mark.clone().unwrap();
    log.forget_parked("twilio", "SM-p1", mark.clone())
        .await
        .unwrap();
    let left = log.parked("twilio", "SM-p1", None).await.unwrap();
    assert_eq!(left.events, vec![later], "only what was read is forgotten");
    log.forget_parked("twilio", "SM-p1", mark).await.unwrap();
    assert_eq!(
        log.parked("twilio", "SM-p1", None)
            .await
            .unwrap()
            .events
            .len(),
        1,
        "forgetting twice forgets nothing more"
    );
    log.forget_parked("twilio", "SM-p1", left.mark.unwrap())
        .await
        .unwrap();
    assert!(log
        .parked("twilio", "SM-p1", None)
        .await
        .unwrap()
        .events
        .is_empty());

    // Forgotten, then parked anew: an old mark forgets nothing of the new.
    let stale = log.parked("twilio", "SM-p2", None).await.unwrap();
    assert_eq!(stale.events, vec![first[1].clone()]);
    let stale = stale.mark.unwrap();
    log.forget_parked("twilio", "SM-p2", stale.clone())
        .await
        .unwrap();
    // The same event again (a provider's retry): still not the events the mark read.
    let anew = first[1].clone();
    log.park(std::slice::from_ref(&anew), keep).await.unwrap();
    log.forget_parked("twilio", "SM-p2", stale).await.unwrap();
    assert_eq!(
        log.parked("twilio", "SM-p2", None).await.unwrap().events,
        vec![anew]
    );
    assert!(
        log.parked("postal", "SM-p2", None)
            .await
            .unwrap()
            .events
            .is_empty(),
        "per gateway"
    );

    // Two reads, each followed by a park; forgetting both in order, or one again, never
    // forgets what was parked after the later read.
    let (e1, e2, e3, e4) = (
        event("SM-p4", Delivered),
        event("SM-p4", Opened),
        event("SM-p4", Clicked),
        event("SM-p4", Complained),
    );
    let mark_now = || async {
        log.parked("twilio", "SM-p4", None)
            .await
            .unwrap()
            .mark
            .unwrap()
    };
    log.park(std::slice::from_ref(&e1), keep).await.unwrap();
    let r1 = mark_now().await;
    log.park(std::slice::from_ref(&e2), keep).await.unwrap();
    let r2 = mark_now().await;
    log.park(std::slice::from_ref(&e3), keep).await.unwrap();
    log.forget_parked("twilio", "SM-p4", r1.clone())
        .await
        .unwrap();
    log.forget_parked("twilio", "SM-p4", r2).await.unwrap();
    log.park(std::slice::from_ref(&e4), keep).await.unwrap();
    log.forget_parked("twilio", "SM-p4", r1).await.unwrap();
    let left = log.parked("twilio", "SM-p4", None).await.unwrap().events;
    assert!(!left.contains(&e1), "read and forgotten: {left:?}");
    assert!(
        left.ends_with(&[e3, e4]),
        "parked after the reads, kept: {left:?}"
    );

    log.park(&[event("SM-p3", Delivered)], Duration::ZERO)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let expired = log.parked("twilio", "SM-p3", None).await.unwrap();
    assert!(expired.events.is_empty(), "expired");
    log.forget_parked("twilio", "SM-p3", expired.mark.unwrap())
        .await
        .unwrap();
    assert!(
        log.parked("twilio", "SM-p3", None)
            .await
            .unwrap()
            .mark
            .is_none(),
        "expired, forgotten"
    );
}

pub fn inbound(t: &TenantId, provider_id: &str, body: &str) -> crate::domain::InboundMessage {
    let arrival = crate::domain::inbound::Arrival {
        tenant: t.clone(),
        channel: Channel::Sms,
        gateway: "twilio".into(),
        provider_message_id: provider_id.into(),
        from: "+15005550006".into(),
        to: "+15557654321".into(),
    };
    let mut m = crate::domain::InboundMessage::arrived(arrival, body.into());
    m.media_urls = vec!["https://api.twilio.com/media/ME1".into()];
    m.keyword = crate::domain::Keyword::of(body);
    // Stores keep milliseconds.
    m.received_at = chrono::DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap();
    m
}

pub async fn inbound_messages_are_stored_once_and_paged_newest_first<S: InboundStore>(store: &S) {
    let (acme, other) = (tenant("acme"), tenant("other"));
    let first = inbound(&acme, "SM-1", "STOP");
    assert!(store
        .record_inbound(&first, &Default::default())
        .await
        .unwrap());
    let retry = crate::domain::InboundMessage {
        id: MessageId::new(),
        received_at: first.received_at + chrono::Duration::minutes(5),
        ..first.clone()
    };
    assert!(
        !store
            .record_inbound(&retry, &Default::default())
            .await
            .unwrap(),
        "the provider's retry of the same message"
    );
    let first_stored = store.first_received_at(&first.gateway, "SM-1").await;
    assert_eq!(
        first_stored.unwrap(),
        Some(first.received_at),
        "not the retry's time"
    );
    let never = store.first_received_at(&first.gateway, "SM-none").await;
    assert_eq!(never.unwrap(), None);
    let mut ids = vec![first.id];
    for n in 2..=5 {
        let m = inbound(&acme, &format!("SM-{n}"), "hello");
        assert!(store.record_inbound(&m, &Default::default()).await.unwrap());
        ids.push(m.id);
    }
    store
        .record_inbound(&inbound(&other, "SM-9", "hi"), &Default::default())
        .await
        .unwrap();
    ids.reverse();
    let page = store.list_inbound(&acme, None, 3).await.unwrap();
    assert_eq!(page.iter().map(|m| m.id).collect::<Vec<_>>(), ids[..3]);
    let rest = store
        .list_inbound(&acme, Some(page[2].id), 3)
        .await
        .unwrap();
    assert_eq!(rest.iter().map(|m| m.id).collect::<Vec<_>>(), ids[3..]);
    let stored = rest.last().unwrap();
    assert!(
        stored.thread.is_some(),
        "an SMS sender's message joins a thread"
    );
    let expected = crate::domain::InboundMessage {
        thread: stored.thread,
        ..first.clone()
    };
    assert_eq!(stored, &expected, "every field round-trips");
    assert_eq!(stored.keyword, Some(crate::domain::Keyword::Stop));
}

/// A `sent` never says "nothing parked" for a message whose provider events were parked
/// while it was being handed over: the dispatcher would leave them parked. Returns what a
/// `sent` without parked events said (DynamoDB saves the look-up with it).
pub async fn a_sent_never_hides_parked_events<S: MessageStore + EventLog>(
    store: &S,
) -> TransitionOutcome {
    let t = tenant("acme");
    let sent = |id: MessageId, attempt: u32| {
        let mut s = Transition::new(id, MessageStatus::Sent, Utc::now());
        s.attempt = Some(attempt);
        s.gateway = Some("ses".into());
        s.provider_message_id = Some(format!("ses-{id}"));
        // SES's callbacks carry Herald's id.
        s.index_provider_id = false;
        s
    };
    let claimed = |id: MessageId| async move { claim_now(store, id, Priority::P1).await.attempts };
    let early = accept(store, message(&t, Priority::P1)).await;
    let attempt = claimed(early).await;
    let delivered = crate::ports::ProviderEvent {
        gateway: "ses".into(),
        provider_message_id: format!("ses-{early}"),
        message_id: Some(early),
        kind: crate::ports::ProviderEventKind::Delivered,
        at: Utc::now(),
        detail: json!({}),
    };
    store
        .park(&[delivered], Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(
        store.transition(vec![sent(early, attempt)]).await.unwrap(),
        [TransitionOutcome::Applied],
        "the parked event must be looked for"
    );
    assert_eq!(
        store
            .parked("ses", &format!("ses-{early}"), None)
            .await
            .unwrap()
            .events
            .len(),
        1
    );

    let plain = accept(store, message(&t, Priority::P1)).await;
    let attempt = claimed(plain).await;
    let mut outcome = store.transition(vec![sent(plain, attempt)]).await.unwrap();
    let outcome = outcome.pop().unwrap();
    assert!(
        matches!(
            outcome,
            TransitionOutcome::Applied | TransitionOutcome::AppliedNothingParked
        ),
        "{outcome:?}"
    );
    outcome
}

/// A `sent` recorded under a provider id and told to `parked` (its release): an event parked
/// after it, which does not name its message, learns the message from `park` (DynamoDB's
/// provider-id index may not show it yet), also once earlier events were forgotten; one
/// parked before it comes back to that release, with the message named.
pub async fn a_parker_learns_of_a_recorded_sent<S: MessageStore + EventLog>(store: &S) {
    use Priority::P2;
    let t = tenant("acme");
    let keep = Duration::from_secs(3600);
    let event = |provider_id: &str| crate::ports::ProviderEvent {
        gateway: "postal".into(),
        provider_message_id: provider_id.into(),
        message_id: None,
        kind: crate::ports::ProviderEventKind::Delivered,
        at: Utc::now(),
        detail: json!({}),
    };
    let key = |provider_id: &str| ("postal".to_owned(), provider_id.to_owned());
    let claimed = || async { claim_now(store, accept(store, message(&t, P2)).await, P2).await };
    let record_sent = |m: Box<Message>, provider_id: &'static str| async move {
        let sent = sent_under(&m, "postal", provider_id);
        store.transition(vec![sent]).await.unwrap();
        m
    };
    let first = record_sent(claimed().await, "pm-after").await;
    let released = store
        .parked("postal", "pm-after", Some(first.id))
        .await
        .unwrap();
    assert!(
        released.events.is_empty() && released.mark.is_none(),
        "{released:?}"
    );
    let sent = store.park(&[event("pm-after")], keep).await.unwrap();
    assert_eq!(sent.get(&key("pm-after")), Some(&first.id), "{sent:?}");
    let read = store.parked("postal", "pm-after", None).await.unwrap();
    assert_eq!((read.events.len(), read.sent), (1, Some(first.id)));
    store
        .forget_parked("postal", "pm-after", read.mark.unwrap())
        .await
        .unwrap();
    let read = store.parked("postal", "pm-after", None).await.unwrap();
    assert!(read.events.is_empty() && read.mark.is_none(), "{read:?}");
    let again = store.park(&[event("pm-after")], keep).await.unwrap();
    assert_eq!(
        again.get(&key("pm-after")),
        Some(&first.id),
        "known after a forget"
    );

    let second = claimed().await;
    let none = store
        .park(&[event("pm-before"), event("pm-none")], keep)
        .await
        .unwrap();
    assert!(none.is_empty(), "nothing sent yet: {none:?}");
    let second = record_sent(second, "pm-before").await;
    let released = store
        .parked("postal", "pm-before", Some(second.id))
        .await
        .unwrap();
    assert_eq!((released.events.len(), released.sent), (1, Some(second.id)));
    assert!(released.mark.is_some());
    let other = store.parked("postal", "pm-none", None).await.unwrap();
    assert_eq!(
        (other.events.len(), other.sent),
        (1, None),
        "another provider id's"
    );
}

/// Accepts a message for `t` shaped by `f`.
async fn accept_shaped<S: MessageStore>(
    store: &S,
    t: &TenantId,
    f: impl FnOnce(&mut NewMessage),
) -> MessageId {
    let mut m = message(t, Priority::P3);
    f(&mut m);
    accept(store, m).await
}

/// Every page of a search from `cursor` on, following `resume_below` to the end.
async fn walk<S: MessageStore>(
    store: &S,
    t: &TenantId,
    filter: &crate::ports::MessageFilter,
    limit: usize,
    mut cursor: Option<MessageId>,
) -> Vec<MessageId> {
    let mut found = Vec::new();
    for _ in 0..1_000 {
        let page = store.search(t, filter, cursor, limit).await.unwrap();
        assert!(page.items.len() <= limit);
        found.extend(page.items.iter().map(|m| m.id));
        match page.resume_below {
            Some(next) => cursor = Some(next),
            None => return found,
        }
    }
    panic!("search never ended");
}

pub async fn search_filters_pages_and_isolates<S: MessageStore>(store: &S) {
    use crate::ports::MessageFilter;
    let (t, other) = (tenant("searcher"), tenant("stranger"));
    let mut all = Vec::new();
    for i in 0..12 {
        all.push(
            accept_shaped(store, &t, |m| {
                m.to = format!("user{}@example.com", i % 3);
                m.priority = if i % 4 == 0 {
                    Priority::P1
                } else {
                    Priority::P3
                };
                m.external_id = (i == 5).then(|| "order-5".into());
                m.source_type = Some(if i % 2 == 0 { "invoice" } else { "signup" }.into());
                m.source_id = Some(format!("src-{}", i / 6));
                m.bulk_id = (i >= 8).then(|| "bulk_search".into());
            })
            .await,
        );
    }
    let sms = accept_shaped(store, &t, |m| {
        m.channel = Channel::Sms;
        m.to = "+15550100123".into();
    })
    .await;
    all.push(sms);
    // The stranger's messages look the same and are never found.
    for _ in 0..3 {
        accept_shaped(store, &other, |m| {
            m.to = "user0@example.com".into();
            m.external_id = Some("order-5".into());
        })
        .await;
    }
    let newest_first: Vec<MessageId> = all.iter().rev().copied().collect();
    let everything = MessageFilter::default();
    assert_eq!(walk(store, &t, &everything, 100, None).await, newest_first);
    assert_eq!(
        walk(store, &t, &everything, 4, None).await,
        newest_first,
        "pages of 4 neither skip nor repeat"
    );
    let cases: Vec<(MessageFilter, usize)> = vec![
        (
            MessageFilter {
                to: Some("user1@example.com".into()),
                ..Default::default()
            },
            4,
        ),
        (
            MessageFilter {
                external_id: Some("order-5".into()),
                ..Default::default()
            },
            1,
        ),
        (
            MessageFilter {
                source_type: Some("invoice".into()),
                ..Default::default()
            },
            6,
        ),
        (
            MessageFilter {
                source_id: Some("src-1".into()),
                ..Default::default()
            },
            6,
        ),
        (
            MessageFilter {
                bulk_id: Some("bulk_search".into()),
                ..Default::default()
            },
            4,
        ),
        (
            MessageFilter {
                channel: Some(Channel::Sms),
                ..Default::default()
            },
            1,
        ),
        (
            MessageFilter {
                priority: Some(Priority::P1),
                ..Default::default()
            },
            3,
        ),
        (
            MessageFilter {
                status: Some(MessageStatus::Queued),
                ..Default::default()
            },
            13,
        ),
        (
            MessageFilter {
                status: Some(MessageStatus::Failed),
                ..Default::default()
            },
            0,
        ),
        (
            MessageFilter {
                to: Some("user0@example.com".into()),
                priority: Some(Priority::P1),
                ..Default::default()
            },
            1,
        ),
    ];
    for (filter, expected) in cases {
        let found = walk(store, &t, &filter, 2, None).await;
        assert_eq!(found.len(), expected, "{filter:?}");
        let page = store.search(&t, &filter, None, 100).await.unwrap();
        assert!(page
            .items
            .iter()
            .all(|m| filter.matches(m) && m.tenant == t));
        assert!(
            found.windows(2).all(|w| w[0] > w[1]),
            "newest first: {filter:?}"
        );
    }
    // A time range is an id range.
    let first = store.get(&t, all[0]).await.unwrap().unwrap().0;
    let last = store.get(&t, sms).await.unwrap().unwrap().0;
    let none_after = MessageFilter {
        created_after: Some(last.created_at + chrono::Duration::seconds(1)),
        ..Default::default()
    };
    assert!(walk(store, &t, &none_after, 10, None).await.is_empty());
    let before_first = MessageFilter {
        created_before: Some(first.created_at - chrono::Duration::seconds(1)),
        ..Default::default()
    };
    assert!(walk(store, &t, &before_first, 10, None).await.is_empty());
    let around = MessageFilter {
        created_after: Some(first.created_at - chrono::Duration::seconds(1)),
        created_before: Some(last.created_at + chrono::Duration::seconds(1)),
        ..Default::default()
    };
    assert_eq!(walk(store, &t, &around, 5, None).await, newest_first);
    let backwards = MessageFilter {
        created_after: around.created_before,
        created_before: around.created_after,
        ..Default::default()
    };
    assert!(walk(store, &t, &backwards, 5, None).await.is_empty());
    // New messages do not disturb a walk already under way: they are newer than its cursor.
    let page = store.search(&t, &everything, None, 5).await.unwrap();
    accept_shaped(store, &t, |_| {}).await;
    let rest = walk(
        store,
        &t,
        &everything,
        5,
        Some(page.resume_below.expect("a next page")),
    )
    .await;
    let walked: Vec<MessageId> = page.items.iter().map(|m| m.id).chain(rest).collect();
    assert_eq!(walked, newest_first);
    assert!(walk(store, &tenant("nobody"), &everything, 10, None)
        .await
        .is_empty());
}

/// A P3 email bulk job of `recipients` inline-content recipients, ready to accept or store.
pub fn bulk_job(t: &TenantId, bulk_id: &str, recipients: usize) -> crate::domain::BulkJob {
    use crate::domain::{BulkJob, BulkJobRecipient, ContentSource, Envelope};
    BulkJob {
        bulk_id: bulk_id.to_owned(),
        tenant: t.clone(),
        envelope: Envelope {
            channel: Channel::Email,
            priority: Priority::P3,
            from: None,
            content: ContentSource::Inline(Content {
                subject: Some("s".into()),
                body: Some("b".into()),
                html: None,
            }),
            data: json!({}),
            message_type: None,
            source_type: None,
            source_id: None,
            metadata: None,
            send_at: None,
            correlation_id: "c".into(),
            locale: None,
        },
        template: None,
        recipients: (0..recipients)
            .map(|i| BulkJobRecipient {
                id: MessageId::new(),
                to: format!("r{i}@example.com"),
                data: None,
                external_id: None,
                suppressed: None,
                deferred: None,
            })
            .collect(),
        created_at: Utc::now(),
    }
}

pub async fn bulk_progress_counts_a_tenants_own_job<S: MessageStore>(store: &S) {
    let t = tenant("bulker");
    let bulk_id = format!("bulk_{}", uuid::Uuid::now_v7().simple());
    let job = bulk_job(&t, &bulk_id, 30);
    assert_eq!(
        store.accept_bulk(job, None).await.unwrap(),
        AcceptOutcome::Accepted
    );
    let progress = store.bulk_progress(&t, &bulk_id).await.unwrap().unwrap();
    let written: u64 = progress.by_status.values().sum();
    assert_eq!(written + progress.pending, 30, "{progress:?}");
    assert!(progress
        .by_status
        .keys()
        .all(|s| *s == MessageStatus::Queued));
    assert_eq!(
        store
            .bulk_progress(&tenant("stranger"), &bulk_id)
            .await
            .unwrap(),
        None,
        "another tenant's bulk send is not found"
    );
    assert_eq!(store.bulk_owner(&bulk_id).await.unwrap(), Some(t.clone()));
    let unknown = format!("bulk_{}", uuid::Uuid::now_v7().simple());
    assert_eq!(store.bulk_progress(&t, &unknown).await.unwrap(), None);
    assert_eq!(store.bulk_owner(&unknown).await.unwrap(), None);

    // Listed for its tenant, newest first, as accepted; not for another tenant.
    let later = format!("bulk_{}", uuid::Uuid::now_v7().simple());
    let mut second = bulk_job(&t, &later, 3);
    second.created_at += chrono::Duration::milliseconds(5);
    store.accept_bulk(second, None).await.unwrap();
    let since = Utc::now() - chrono::Duration::hours(1);
    let listed = store.recent_bulk_sends(&t, since, 10).await.unwrap();
    let ids: Vec<(&str, u64)> = listed
        .iter()
        .map(|b| (b.bulk_id.as_str(), b.recipients))
        .collect();
    assert_eq!(ids, [(later.as_str(), 3), (bulk_id.as_str(), 30)]);
    assert_eq!(
        (listed[1].channel, listed[1].priority),
        (Channel::Email, Priority::P3)
    );
    assert_eq!(
        store.recent_bulk_sends(&t, since, 1).await.unwrap().len(),
        1
    );
    let future = Utc::now() + chrono::Duration::hours(1);
    assert!(store
        .recent_bulk_sends(&t, future, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .recent_bulk_sends(&tenant("stranger"), since, 10)
        .await
        .unwrap()
        .is_empty());
}

/// Appends, newest-first pages, every filter, scope isolation, and no overwrite of an id.
pub async fn audit_log_appends_filters_and_isolates<S: crate::ports::AuditLog>(store: &S) {
    use crate::domain::audit::{Actor, AuditAction, AuditEntry};
    use crate::domain::suppression::Scope;
    use crate::ports::AuditFilter;
    let mine = Scope::Tenant(tenant(&format!("aud{}", uuid::Uuid::now_v7().simple())));
    let theirs = Scope::Tenant(tenant(&format!("oth{}", uuid::Uuid::now_v7().simple())));
    let mut written = Vec::new();
    for i in 0..9 {
        let (actor, action) = match i % 3 {
            0 => (Actor::Key("abcd1234".into()), AuditAction::TemplatePut),
            1 => (Actor::Cli("ops".into()), AuditAction::KeyCreated),
            _ => (Actor::System, AuditAction::SuppressionAdded),
        };
        let e = AuditEntry::now(mine.clone(), actor, action)
            .target(format!("t{i}"))
            .detail(json!({ "n": i }));
        let e = AuditEntry {
            client: Some("127.0.0.1".into()),
            request_id: Some(format!("req-{i}")),
            ..e
        };
        store.append(&e).await.unwrap();
        written.push(e);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let other = AuditEntry::now(theirs.clone(), Actor::System, AuditAction::TemplatePut);
    store.append(&other).await.unwrap();
    assert!(store.append(&other).await.is_err(), "an id is written once");

    let all = |filter: AuditFilter, limit: usize| {
        let scope = mine.clone();
        async move {
            let (mut found, mut cursor) = (Vec::new(), None);
            for _ in 0..100 {
                let page = store
                    .audit_page(&scope, &filter, cursor, limit)
                    .await
                    .unwrap();
                assert!(page.items.len() <= limit);
                found.extend(page.items);
                match page.resume_below {
                    Some(next) => cursor = Some(next),
                    None => return found,
                }
            }
            panic!("audit pages never ended");
        }
    };
    let newest_first: Vec<_> = written.iter().rev().cloned().collect();
    assert_eq!(all(AuditFilter::default(), 100).await, newest_first);
    assert_eq!(all(AuditFilter::default(), 4).await, newest_first);
    let by_action = all(
        AuditFilter {
            action: Some(AuditAction::KeyCreated),
            ..AuditFilter::default()
        },
        2,
    )
    .await;
    assert_eq!(by_action.len(), 3);
    assert!(by_action
        .iter()
        .all(|e| e.actor == Actor::Cli("ops".into())));
    let by_actor = AuditFilter {
        actor: Some(Actor::System),
        target: Some("t5".into()),
        ..AuditFilter::default()
    };
    assert_eq!(all(by_actor, 10).await, vec![written[5].clone()]);
    let window = AuditFilter {
        after: Some(written[2].at),
        before: Some(written[6].at),
        ..AuditFilter::default()
    };
    let in_window: Vec<_> = all(window, 10).await.iter().map(|e| e.id).collect();
    assert!(in_window.contains(&written[3].id) && in_window.contains(&written[5].id));
    assert!(!in_window.contains(&written[7].id) && !in_window.contains(&written[1].id));
    let backwards = AuditFilter {
        after: Some(written[6].at),
        before: Some(written[2].at),
        ..AuditFilter::default()
    };
    assert!(
        all(backwards, 10).await.is_empty(),
        "an empty range is empty"
    );
    let theirs_seen = store
        .audit_page(&theirs, &AuditFilter::default(), None, 10)
        .await
        .unwrap();
    assert_eq!(theirs_seen.items, vec![other], "each scope sees its own");
}

/// Contacts: an identity is one contact's per tenant; lists page oldest first and leave out
/// merged contacts; a merge moves the identities and points the merged one at its keeper;
/// nothing crosses tenants.
pub async fn contacts_own_their_identities<S: super::ContactStore>(store: &S) {
    use crate::domain::{Contact, ContactError, ContactFields, Identity};
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let phone = Identity::parse("phone", "+14155550100").unwrap();
    let email = Identity::parse("email", "Ann@Example.com").unwrap();
    let fields = ContactFields {
        name: Some("Ann".into()),
        ..Default::default()
    };
    let ann = Contact::new(acme.clone(), fields, vec![phone.clone(), email.clone()]);
    store.create_contact(&ann).await.unwrap();
    let got = store.contact(&acme, ann.id).await.unwrap().unwrap();
    assert_eq!(got.identities, ann.identities);
    assert_eq!(got.fields.name.as_deref(), Some("Ann"));
    assert!(
        store.contact(&globex, ann.id).await.unwrap().is_none(),
        "isolated"
    );

    // The same email in another case is the same identity: taken.
    let same = Identity::parse("email", "ann@example.com").unwrap();
    let bo = Contact::new(acme.clone(), ContactFields::default(), vec![same.clone()]);
    match store.create_contact(&bo).await {
        Err(ContactError::Taken { owner, .. }) => assert_eq!(owner, ann.id),
        other => panic!("taken expected: {other:?}"),
    }
    assert!(
        store.contact(&acme, bo.id).await.unwrap().is_none(),
        "all or nothing"
    );
    // Another tenant may know the same person.
    let theirs = Contact::new(globex.clone(), ContactFields::default(), vec![same.clone()]);
    store.create_contact(&theirs).await.unwrap();
    let owner = store.contact_by_identity(&acme, &same).await.unwrap();
    assert_eq!(owner, Some(ann.id));

    let bo = Contact::new(acme.clone(), ContactFields::default(), vec![]);
    store.create_contact(&bo).await.unwrap();
    let wa = Identity::parse("whatsapp", "+14155550100").unwrap();
    let bo_now = store.add_identity(&acme, bo.id, &wa).await.unwrap();
    assert_eq!(bo_now.identities, vec![wa.clone()]);
    assert!(matches!(
        store.add_identity(&acme, bo.id, &phone).await,
        Err(ContactError::Taken { .. })
    ));
    let page = store.contacts(&acme, None, 1).await.unwrap();
    assert_eq!(page.iter().map(|c| c.id).collect::<Vec<_>>(), vec![ann.id]);
    let rest = store.contacts(&acme, Some(ann.id), 10).await.unwrap();
    assert_eq!(rest.iter().map(|c| c.id).collect::<Vec<_>>(), vec![bo.id]);

    let renamed = ContactFields {
        external_id: Some("crm-7".into()),
        ..Default::default()
    };
    let updated = store.update_contact(&acme, bo.id, &renamed).await.unwrap();
    assert_eq!(updated.fields.external_id.as_deref(), Some("crm-7"));

    let kept = store.merge_contacts(&acme, bo.id, ann.id).await.unwrap();
    assert_eq!(kept.identities, vec![phone, email, wa.clone()]);
    let gone = store.contact(&acme, bo.id).await.unwrap().unwrap();
    assert_eq!(gone.merged_into, Some(ann.id));
    assert!(gone.identities.is_empty());
    assert_eq!(
        store.contact_by_identity(&acme, &wa).await.unwrap(),
        Some(ann.id)
    );
    let listed = store.contacts(&acme, None, 10).await.unwrap();
    assert_eq!(
        listed.iter().map(|c| c.id).collect::<Vec<_>>(),
        vec![ann.id],
        "merged left out"
    );
    assert!(matches!(
        store.merge_contacts(&acme, bo.id, ann.id).await,
        Err(ContactError::CannotMerge)
    ));
    assert!(matches!(
        store.update_contact(&acme, bo.id, &renamed).await,
        Err(ContactError::Merged(id)) if id == ann.id
    ));
    assert!(matches!(
        store.merge_contacts(&globex, bo.id, ann.id).await,
        Err(ContactError::NotFound)
    ));
}

/// Threads: an inbound message from a known identity joins its contact's thread (a sender
/// nobody knows gets a contact and a thread) once, however often it is delivered; the same
/// number on WhatsApp joins the SMS contact's thread; replies join once; the platform's
/// changes and the unread count stick; lists filter and page by latest activity; a merge moves
/// the merged contact's thread; nothing crosses tenants.
pub async fn threads_follow_their_contacts<S>(store: &S)
where
    S: super::ContactStore + super::InboundStore + super::ThreadStore,
{
    use crate::domain::thread::{Direction, ThreadEntry, ThreadFilter, ThreadPatch, ThreadStatus};
    use crate::domain::{Contact, ContactFields, Identity};
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let ann = Contact::new(
        acme.clone(),
        ContactFields::default(),
        vec![Identity::parse("phone", "+15005550006").unwrap()],
    );
    store.create_contact(&ann).await.unwrap();
    let first = inbound(&acme, "SM-t1", "Is the flat still free?");
    assert!(store
        .record_inbound(&first, &Default::default())
        .await
        .unwrap());
    assert!(
        !store
            .record_inbound(&first, &Default::default())
            .await
            .unwrap(),
        "a retry"
    );
    let mut whatsapp = inbound(&acme, "wamid-t2", "Sent you photos");
    whatsapp.channel = Channel::Whatsapp;
    whatsapp.gateway = "whatsapp".into();
    assert!(store
        .record_inbound(&whatsapp, &Default::default())
        .await
        .unwrap());
    let all = store
        .threads(&acme, &ThreadFilter::default(), None, 10)
        .await
        .unwrap()
        .items;
    assert_eq!(all.len(), 1, "{all:#?}");
    let thread = all[0].clone();
    assert_eq!((thread.contact, thread.unread), (ann.id, 2));
    let reply = thread.reply.clone().unwrap();
    assert_eq!(
        (reply.channel, reply.to.as_str()),
        (Channel::Whatsapp, "+15005550006")
    );

    let out = ThreadEntry::new(
        MessageId::new(),
        Direction::Outbound,
        Channel::Email,
        ("desk@acme.test".into(), "ann@example.com".into()),
        "Yes it is",
        Utc::now(),
    );
    for _ in 0..2 {
        let t = store.record_outbound(&acme, thread.id, &out).await.unwrap();
        assert!(t.unwrap().last_outbound_at.is_some());
    }
    let timeline = store
        .thread_entries(&acme, thread.id, None, 10)
        .await
        .unwrap();
    let order: Vec<_> = timeline.iter().map(|e| (e.message, e.direction)).collect();
    assert_eq!(
        order,
        vec![
            (first.id, Direction::Inbound),
            (whatsapp.id, Direction::Inbound),
            (out.message, Direction::Outbound)
        ]
    );
    let page = store
        .thread_entries(&acme, thread.id, Some(whatsapp.id), 10)
        .await
        .unwrap();
    assert_eq!(page.len(), 1);

    let patch = ThreadPatch {
        status: Some(ThreadStatus::Snoozed),
        assignee: Some(Some("agent-7".into())),
        label: Some(Some("lead".into())),
        next_followup_at: Some(Some(Utc::now())),
        set_by: "ai-worker".into(),
        ..Default::default()
    };
    let t = store
        .update_thread(&acme, thread.id, &patch)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t.insights.set_by.as_deref(), Some("ai-worker"));
    let t = store.mark_read(&acme, thread.id).await.unwrap().unwrap();
    assert_eq!(
        (t.unread, t.status, t.assignee.as_deref()),
        (0, ThreadStatus::Snoozed, Some("agent-7"))
    );
    let lead = ThreadFilter {
        label: Some("lead".into()),
        ..Default::default()
    };
    assert_eq!(
        store
            .threads(&acme, &lead, None, 10)
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    let unread = ThreadFilter {
        unread: Some(true),
        ..Default::default()
    };
    assert!(store
        .threads(&acme, &unread, None, 10)
        .await
        .unwrap()
        .items
        .is_empty());
    // A new message opens a snoozed thread again.
    assert!(store
        .record_inbound(&inbound(&acme, "SM-t3", "Hello?"), &Default::default())
        .await
        .unwrap());
    let t = store.thread(&acme, thread.id).await.unwrap().unwrap();
    assert_eq!((t.status, t.unread), (ThreadStatus::Open, 1));

    // A stranger gets a contact and a thread; the newest activity lists first, then pages.
    let mut stranger = inbound(&acme, "SM-t4", "Hi, who is this?");
    stranger.from = "+14155550123".into();
    stranger.received_at += chrono::Duration::seconds(5);
    assert!(store
        .record_inbound(&stranger, &Default::default())
        .await
        .unwrap());
    let first_page = store
        .threads(&acme, &ThreadFilter::default(), None, 1)
        .await
        .unwrap()
        .items;
    let newest = first_page[0].clone();
    assert_ne!(newest.id, thread.id);
    let stranger_contact = newest.contact;
    let cursor = crate::domain::thread::ThreadCursor::of(&newest);
    let rest = store
        .threads(&acme, &ThreadFilter::default(), Some(cursor), 10)
        .await
        .unwrap()
        .items;
    assert_eq!(
        rest.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![thread.id]
    );

    // Merging the stranger into Ann moves the stranger's thread to her.
    store
        .merge_contacts(&acme, stranger_contact, ann.id)
        .await
        .unwrap();
    let moved = store.thread(&acme, newest.id).await.unwrap().unwrap();
    assert_eq!(moved.contact, ann.id);
    // Ann's own thread stays her current one: the stranger's number now writes into it.
    let mut again = inbound(&acme, "SM-t5", "it's me again");
    again.from = "+14155550123".into();
    assert!(store
        .record_inbound(&again, &Default::default())
        .await
        .unwrap());
    let entries = store
        .thread_entries(&acme, thread.id, None, 20)
        .await
        .unwrap();
    assert!(
        entries.iter().any(|e| e.message == again.id),
        "{entries:#?}"
    );
    // A provider's late message (older than the thread's activity) does not move it back.
    let before = store.thread(&acme, thread.id).await.unwrap().unwrap();
    let mut late = inbound(&acme, "SM-t6", "sent an hour ago");
    late.received_at = before.last_activity_at - chrono::Duration::hours(1);
    assert!(store
        .record_inbound(&late, &Default::default())
        .await
        .unwrap());
    let after = store.thread(&acme, thread.id).await.unwrap().unwrap();
    assert_eq!(after.last_activity_at, before.last_activity_at);
    assert_eq!(after.unread, before.unread + 1);

    // Another tenant sees nothing and changes nothing.
    assert!(store.thread(&globex, thread.id).await.unwrap().is_none());
    assert!(store.mark_read(&globex, thread.id).await.unwrap().is_none());
    assert!(store
        .update_thread(&globex, thread.id, &patch)
        .await
        .unwrap()
        .is_none());
    assert!(store
        .record_outbound(&globex, thread.id, &out)
        .await
        .unwrap()
        .is_none());
    assert!(store
        .thread_entries(&globex, thread.id, None, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .threads(&globex, &ThreadFilter::default(), None, 10)
        .await
        .unwrap()
        .items
        .is_empty());
}

/// Follow-ups: a thread whose follow-up time passed is due until it is announced, and is
/// announced once; a new time makes it pending again, and clearing it ends that.
pub async fn followups_are_announced_once<S>(store: &S)
where
    S: super::InboundStore + super::ThreadStore,
{
    use crate::domain::thread::{ThreadFilter, ThreadPatch};
    let acme = tenant("acme");
    let mut m = inbound(&acme, "SM-f1", "call me back tomorrow");
    m.from = "+14155550177".into();
    assert!(store.record_inbound(&m, &Default::default()).await.unwrap());
    let thread = store
        .threads(&acme, &ThreadFilter::default(), None, 10)
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|t| t.reply.as_ref().is_some_and(|r| r.to == m.from))
        .unwrap();
    let now = chrono::DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap();
    let due_of = |t: &crate::domain::thread::Thread| t.insights.next_followup_at;
    let set = |at: Option<chrono::DateTime<Utc>>| ThreadPatch {
        next_followup_at: Some(at),
        set_by: "rule:callback".into(),
        ..Default::default()
    };
    let ours = |due: Vec<crate::domain::thread::Thread>| {
        due.into_iter()
            .filter(|t| t.id == thread.id)
            .collect::<Vec<_>>()
    };
    assert!(ours(store.followups_due(now, 100).await.unwrap()).is_empty());
    let at = now - chrono::Duration::seconds(1);
    let t = store
        .update_thread(&acme, thread.id, &set(Some(at)))
        .await
        .unwrap()
        .unwrap();
    assert!(t.followup_pending);
    let due = ours(store.followups_due(now, 100).await.unwrap());
    assert_eq!(due.iter().map(due_of).collect::<Vec<_>>(), vec![Some(at)]);
    assert!(store.fire_followup(&due[0]).await.unwrap());
    assert!(
        !store.fire_followup(&due[0]).await.unwrap(),
        "announced once"
    );
    assert!(ours(store.followups_due(now, 100).await.unwrap()).is_empty());

    let later = now + chrono::Duration::minutes(10);
    store
        .update_thread(&acme, thread.id, &set(Some(later)))
        .await
        .unwrap();
    assert!(
        ours(store.followups_due(now, 100).await.unwrap()).is_empty(),
        "not yet"
    );
    let at_later = ours(store.followups_due(later, 100).await.unwrap());
    assert_eq!(at_later.len(), 1, "due at its new time");
    // A time changed after it was read is not announced for the old time.
    store
        .update_thread(&acme, thread.id, &set(None))
        .await
        .unwrap();
    assert!(!store.fire_followup(&at_later[0]).await.unwrap());
    assert!(ours(store.followups_due(later, 100).await.unwrap()).is_empty());
}

/// The inbound pipeline's claim is a compare-and-set with a lease: one worker at a time, a
/// dead worker's message taken again when its lease ends, a finished one never again.
pub async fn inbound_messages_are_claimed_once<S: InboundStore>(store: &S) {
    use crate::domain::inbound::{InboundClaim, InboundOutcome, InboundState};
    use crate::domain::rules::Decision;
    let acme = tenant("acme");
    let lease = Duration::from_secs(30);
    // A moment after every message of this test is stored (they are due when stored).
    let now = Utc::now() + chrono::Duration::seconds(5);
    let later = |s: i64| now + chrono::Duration::seconds(s);
    let mut m = inbound(&acme, "SM-claim-1", "hello");
    m.received_at = now;
    assert!(store.record_inbound(&m, &Default::default()).await.unwrap());
    let pending = |at| async move { store.pending_inbound(at, 100).await.unwrap() };
    assert!(pending(now).await.contains(&(acme.clone(), m.id)));
    let claimed = match store.claim_inbound(&acme, m.id, lease, now).await.unwrap() {
        InboundClaim::Claimed(c) => c,
        other => panic!("not claimed: {other:?}"),
    };
    assert_eq!(claimed.progress.state, InboundState::Processing);
    let first_claim = chrono::DateTime::from_timestamp_millis(now.timestamp_millis());
    assert_eq!(claimed.progress.first_claimed_at, first_claim);
    assert_eq!(
        (claimed.progress.attempts, claimed.body.as_str()),
        (1, "hello")
    );
    assert_eq!(
        store.claim_inbound(&acme, m.id, lease, now).await.unwrap(),
        InboundClaim::Held
    );
    assert!(!pending(now).await.contains(&(acme.clone(), m.id)));
    // The worker died: its lease ends and the message is pending again.
    assert!(pending(later(31)).await.contains(&(acme.clone(), m.id)));
    let again = store
        .claim_inbound(&acme, m.id, lease, later(31))
        .await
        .unwrap();
    assert!(
        matches!(&again, InboundClaim::Claimed(c) if c.progress.attempts == 2),
        "{again:?}"
    );
    let decision = Decision::planned(None);
    let done = InboundOutcome::Processed(decision.clone());
    store
        .finish_inbound(&acme, m.id, 2, &done, later(32))
        .await
        .unwrap();
    let stored = store.inbound_message(&acme, m.id).await.unwrap().unwrap();
    assert_eq!(stored.progress.state, InboundState::Processed);
    assert_eq!(stored.progress.decision, Some(decision));
    assert!(stored.progress.processed_at.is_some());
    assert_eq!(
        stored.progress.first_claimed_at, first_claim,
        "kept from the first claim"
    );
    assert_eq!(
        store
            .claim_inbound(&acme, m.id, lease, later(100))
            .await
            .unwrap(),
        InboundClaim::Done
    );
    assert!(!pending(later(100)).await.contains(&(acme.clone(), m.id)));
    let failed = InboundOutcome::Failed("late".into());
    store
        .finish_inbound(&acme, m.id, 2, &failed, later(101))
        .await
        .unwrap();
    let kept = store.inbound_message(&acme, m.id).await.unwrap().unwrap();
    assert_eq!(
        kept.progress.state,
        InboundState::Processed,
        "a finished message keeps its end"
    );
    // Another tenant cannot read or claim it.
    let other = tenant("other");
    assert!(store.inbound_message(&other, m.id).await.unwrap().is_none());
    assert_eq!(
        store
            .claim_inbound(&other, m.id, lease, later(200))
            .await
            .unwrap(),
        InboundClaim::Missing
    );

    // A try that failed for now waits until its retry time, with its error.
    let mut r = inbound(&acme, "SM-claim-2", "again");
    r.received_at = now;
    assert!(store.record_inbound(&r, &Default::default()).await.unwrap());
    assert!(matches!(
        store.claim_inbound(&acme, r.id, lease, now).await.unwrap(),
        InboundClaim::Claimed(_)
    ));
    store
        .retry_inbound(&acme, r.id, 1, "store down", later(10))
        .await
        .unwrap();
    let waiting = store.inbound_message(&acme, r.id).await.unwrap().unwrap();
    assert_eq!(waiting.progress.state, InboundState::Received);
    assert_eq!(waiting.progress.error.as_deref(), Some("store down"));
    assert!(!pending(now).await.contains(&(acme.clone(), r.id)));
    assert!(pending(later(11)).await.contains(&(acme.clone(), r.id)));
    assert_eq!(
        store.claim_inbound(&acme, r.id, lease, now).await.unwrap(),
        InboundClaim::Held,
        "not before its retry time"
    );
    assert!(matches!(
        store
            .claim_inbound(&acme, r.id, lease, later(11))
            .await
            .unwrap(),
        InboundClaim::Claimed(_)
    ));
    store
        .finish_inbound(&acme, r.id, 1, &failed, later(12))
        .await
        .unwrap();
    let still = store.inbound_message(&acme, r.id).await.unwrap().unwrap();
    assert_eq!(
        still.progress.state,
        InboundState::Processing,
        "the first claim's late outcome leaves the second claim's try alone"
    );
    store
        .finish_inbound(&acme, r.id, 2, &failed, later(12))
        .await
        .unwrap();
    let gave_up = store.inbound_message(&acme, r.id).await.unwrap().unwrap();
    assert_eq!(gave_up.progress.state, InboundState::Failed);
    assert_eq!(gave_up.progress.error.as_deref(), Some("late"));

    // Workers racing for one message: exactly one wins.
    let mut raced = inbound(&acme, "SM-claim-3", "race");
    raced.received_at = now;
    assert!(store
        .record_inbound(&raced, &Default::default())
        .await
        .unwrap());
    let claims =
        futures::future::join_all((0..8).map(|_| store.claim_inbound(&acme, raced.id, lease, now)))
            .await;
    let won = claims
        .iter()
        .filter(|c| matches!(c, Ok(InboundClaim::Claimed(_))))
        .count();
    assert_eq!(won, 1, "{claims:?}");
}

/// Rules are a tenant's own, replaced whole.
pub async fn inbound_rules_are_kept_per_tenant<S: super::RuleStore>(store: &S) {
    use crate::domain::rules::RuleSet;
    let (acme, other) = (tenant("acme"), tenant("other"));
    assert!(store.inbound_rules(&acme).await.unwrap().rules.is_empty());
    let rules: RuleSet = serde_json::from_value(json!({"rules": [
        {"name": "urgent", "when": {"pattern": "(?i)urgent", "channels": ["sms"]},
         "actions": [{"type": "label", "label": "urgent"}, {"type": "webhook"}]}
    ]}))
    .unwrap();
    store.put_inbound_rules(&acme, &rules).await.unwrap();
    let stored = store.inbound_rules(&acme).await.unwrap();
    assert_eq!(
        serde_json::to_value(&stored).unwrap(),
        serde_json::to_value(&rules).unwrap()
    );
    assert!(store.inbound_rules(&other).await.unwrap().rules.is_empty());
    store
        .put_inbound_rules(&acme, &RuleSet::default())
        .await
        .unwrap();
    assert!(store.inbound_rules(&acme).await.unwrap().rules.is_empty());
}

/// A reputation save is a compare-and-set on the revision it read: of two processes that read
/// the same state, the second to save writes nothing and is told so.
pub async fn reputation_saves_name_the_revision_they_read<S: super::RuleStore>(store: &S) {
    use crate::domain::deliverability::reputation::Pause;
    let t = tenant("reputation-cas");
    let first = store.reputation(&t).await.unwrap();
    assert_eq!(first.revision, 0);
    let mut paused = first.clone();
    paused.paused = Some(Pause {
        gateway: "sandbox-email".into(),
        bounce_rate: 0.2,
        complaint_rate: 0.0,
        sends: 100,
        at: Utc::now(),
        resumes_at: None,
    });
    assert!(store.put_reputation(&t, &paused).await.unwrap());
    let mut late = first.clone();
    late.settings.min_sends += 1;
    assert!(
        !store.put_reputation(&t, &late).await.unwrap(),
        "a save from the revision before is refused"
    );
    let stored = store.reputation(&t).await.unwrap();
    assert_eq!(stored.revision, 1);
    assert_eq!(
        stored.paused, paused.paused,
        "the refused save wrote nothing"
    );
    assert_eq!(stored.settings, first.settings);
    let mut resumed = stored.clone();
    resumed.paused = None;
    assert!(store.put_reputation(&t, &resumed).await.unwrap());
    assert_eq!(store.reputation(&t).await.unwrap().revision, 2);
    assert_eq!(
        store.reputation(&tenant("other")).await.unwrap().revision,
        0
    );
}

/// The auto-reply guard: once per thread per window, and the message that holds the slot
/// finds it again; a takeover is kept until the thread is closed.
pub async fn auto_replies_are_claimed_once_per_window<S>(store: &S)
where
    S: super::InboundStore + super::ThreadStore,
{
    use crate::domain::thread::{ThreadId, ThreadPatch, ThreadStatus};
    let acme = tenant("acme");
    let m = inbound(&acme, "SM-guard-1", "hi");
    assert!(store.record_inbound(&m, &Default::default()).await.unwrap());
    let thread = store
        .inbound_message(&acme, m.id)
        .await
        .unwrap()
        .unwrap()
        .thread
        .unwrap();
    let (first, second) = (m.id, MessageId::new());
    let hour = Duration::from_secs(3600);
    let now = Utc::now();
    let at = |min: i64| now + chrono::Duration::minutes(min);
    let claim = |by, t| store.claim_auto_reply(&acme, thread, by, t, hour);
    assert!(claim(first, at(0)).await.unwrap());
    assert!(
        claim(first, at(1)).await.unwrap(),
        "its own slot, found again"
    );
    assert!(!claim(second, at(10)).await.unwrap(), "within the hour");
    assert!(claim(second, at(61)).await.unwrap());
    assert!(!claim(first, at(62)).await.unwrap(), "the slot moved on");
    assert!(!store
        .claim_auto_reply(&tenant("other"), thread, second, at(200), hour)
        .await
        .unwrap());
    assert!(!store
        .claim_auto_reply(&acme, ThreadId::new(), second, at(200), hour)
        .await
        .unwrap());
    let took = store
        .update_thread(
            &acme,
            thread,
            &ThreadPatch {
                human_takeover: Some(true),
                set_by: "test".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert!(took.human_takeover);
    assert!(
        store
            .thread(&acme, thread)
            .await
            .unwrap()
            .unwrap()
            .human_takeover
    );
    let closed = store
        .update_thread(
            &acme,
            thread,
            &ThreadPatch {
                status: Some(ThreadStatus::Closed),
                set_by: "test".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert!(!closed.human_takeover, "closing ends a takeover");
    let read = store.thread(&acme, thread).await.unwrap().unwrap();
    assert!(!read.human_takeover);
    assert_eq!(read.last_auto_reply.map(|(_, by)| by), Some(second));
}

/// An email reply joins the thread that has the message it answers, only a thread of its own
/// tenant; a thread it names that the tenant lacks threads it by its sender instead.
pub async fn email_replies_join_the_thread_they_name<S>(store: &S)
where
    S: super::InboundStore + super::ThreadStore,
{
    use crate::domain::thread::{Direction, ThreadEntry};
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let text = inbound(&acme, "SM-mail-1", "Can I book Tuesday?");
    assert!(store
        .record_inbound(&text, &Default::default())
        .await
        .unwrap());
    let thread = store
        .inbound_message(&acme, text.id)
        .await
        .unwrap()
        .unwrap()
        .thread
        .unwrap();
    let sent = MessageId::new();
    let entry = ThreadEntry::new(
        sent,
        Direction::Outbound,
        Channel::Email,
        ("desk@acme.example".into(), "ann@example.com".into()),
        "Tuesday is free.",
        Utc::now(),
    );
    store.record_outbound(&acme, thread, &entry).await.unwrap();
    assert_eq!(
        store.thread_of_message(&acme, sent).await.unwrap(),
        Some(thread)
    );
    assert_eq!(store.thread_of_message(&globex, sent).await.unwrap(), None);
    assert_eq!(
        store
            .thread_of_message(&acme, MessageId::new())
            .await
            .unwrap(),
        None
    );
    let email = |t: &TenantId, id: &str| {
        let mut m = inbound(t, id, "Great, see you then");
        m.channel = Channel::Email;
        m.gateway = "postal".into();
        m.from = "ann.work@example.com".into();
        m.to = "desk@acme.example".into();
        m.thread = Some(thread);
        m
    };
    let reply = email(&acme, "postal-1");
    assert!(store
        .record_inbound(&reply, &Default::default())
        .await
        .unwrap());
    let stored = store
        .inbound_message(&acme, reply.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.thread,
        Some(thread),
        "joined by the message it names"
    );
    let t = store.thread(&acme, thread).await.unwrap().unwrap();
    assert_eq!(t.unread, 2);
    let forged = email(&globex, "postal-2");
    assert!(store
        .record_inbound(&forged, &Default::default())
        .await
        .unwrap());
    let stored = store
        .inbound_message(&globex, forged.id)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(stored.thread, Some(thread), "another tenant's thread");
    assert!(stored.thread.is_some(), "threaded by its sender");
    assert_eq!(
        store.thread(&acme, thread).await.unwrap().unwrap().unread,
        2
    );
}

/// Warm-up counts: a day's cap holds exactly (per group), outcomes add up beside the sends,
/// days and gateways are apart, and the state is replaced only from the day it was read on.
pub async fn warmup_counts_and_state<S: super::WarmupStore>(store: &S) {
    use crate::domain::deliverability::warmup::{DayTally, WarmupState};
    let gateway = format!("pool-{}", MessageId::new().as_uuid().simple());
    let day = chrono::NaiveDate::from_ymd_opt(2026, 12, 3).unwrap();
    let next = day.succ_opt().unwrap();
    let mut taken = 0;
    for _ in 0..5 {
        taken += usize::from(store.take(&gateway, day, "gmail", 3).await.unwrap());
    }
    assert_eq!(taken, 3, "the cap holds");
    // A send that did not go gives its count back: the cap counts sends.
    store.untake(&gateway, day, "gmail").await.unwrap();
    assert!(store.take(&gateway, day, "gmail", 3).await.unwrap());
    assert!(!store.take(&gateway, day, "gmail", 3).await.unwrap());
    store.untake(&gateway, day, "never-taken").await.unwrap();
    assert!(
        store.take(&gateway, day, "yahoo", 3).await.unwrap(),
        "groups apart"
    );
    assert!(!store.take(&gateway, day, "other", 0).await.unwrap());
    assert!(
        store.take(&gateway, next, "gmail", 3).await.unwrap(),
        "a new day"
    );
    store.note(&gateway, day, 2, 1).await.unwrap();
    store.note(&gateway, day, 1, 0).await.unwrap();
    let tally = store.day(&gateway, day).await.unwrap();
    assert_eq!(
        tally,
        DayTally {
            sends: 4,
            bounces: 3,
            complaints: 1
        }
    );
    assert_eq!(
        store.day("another", day).await.unwrap(),
        DayTally::default()
    );

    assert_eq!(store.state(&gateway).await.unwrap(), None);
    let first = WarmupState {
        day: 1,
        judged_on: day,
        held: None,
    };
    assert!(store.put_state(&gateway, &first, None).await.unwrap());
    assert!(
        !store.put_state(&gateway, &first, None).await.unwrap(),
        "already there"
    );
    let held = WarmupState {
        day: 1,
        judged_on: next,
        held: Some("bounces".into()),
    };
    assert!(
        !store.put_state(&gateway, &held, Some(next)).await.unwrap(),
        "read on another day"
    );
    assert!(store.put_state(&gateway, &held, Some(day)).await.unwrap());
    assert_eq!(store.state(&gateway).await.unwrap(), Some(held));
}

/// A session is found by its id's hash until it expires or is closed, and by nothing else.
pub async fn console_sessions_expire_and_close(store: &dyn crate::ports::SessionStore) {
    use crate::ports::ConsoleSession;
    let now = Utc::now();
    let session = ConsoleSession {
        tenant: tenant("acme"),
        key_prefix: "abcd1234".into(),
        expires_at: now + chrono::Duration::hours(8),
    };
    store.open_session("hash-a", &session).await.unwrap();
    let found = store.find_session("hash-a", now).await.unwrap().unwrap();
    assert_eq!(found.tenant, session.tenant);
    assert_eq!(found.key_prefix, "abcd1234");
    assert_eq!(
        found.expires_at.timestamp_millis(),
        session.expires_at.timestamp_millis()
    );
    assert!(store.find_session("hash-b", now).await.unwrap().is_none());
    let later = now + chrono::Duration::hours(8);
    assert!(
        store.find_session("hash-a", later).await.unwrap().is_none(),
        "expired at its time"
    );
    store.close_session("hash-a").await.unwrap();
    assert!(store.find_session("hash-a", now).await.unwrap().is_none());
    store.close_session("hash-a").await.unwrap();
}

/// A tenant's templates list by name, without their variants, paged, and only the tenant's.
pub async fn templates_list_by_name<S: TemplateStore>(store: &S) {
    use crate::domain::locale::Locale;
    use crate::domain::template::TemplateParts;
    let (t, other) = (tenant("lister"), tenant("other-lister"));
    let parts = |subject: &str| TemplateParts {
        subject: Some(subject.into()),
        text: Some("hi {{ name }}".into()),
        html: None,
    };
    for name in ["welcome", "alert", "welcome-2", "b.receipt"] {
        let template =
            Template::with_parts(TemplateName::parse(name).unwrap(), parts(name), Utc::now());
        store.put(&t, template).await.unwrap();
    }
    let foreign = Template::with_parts(TemplateName::parse("zzz").unwrap(), parts("x"), Utc::now());
    store.put(&other, foreign).await.unwrap();
    let welcome = TemplateName::parse("welcome").unwrap();
    let fr = Locale::parse("fr").unwrap();
    store
        .put_locale(&t, &welcome, &fr, &parts("bienvenue"))
        .await
        .unwrap();

    let names = |list: &[Template]| {
        list.iter()
            .map(|t| t.name.as_str().to_owned())
            .collect::<Vec<_>>()
    };
    let all = store.list_templates(&t, None, 100).await.unwrap();
    assert_eq!(names(&all), ["alert", "b.receipt", "welcome", "welcome-2"]);
    assert_eq!(all[2].subject.as_deref(), Some("welcome"));
    let first = store.list_templates(&t, None, 2).await.unwrap();
    assert_eq!(names(&first), ["alert", "b.receipt"]);
    let rest = store
        .list_templates(&t, Some(&first[1].name), 2)
        .await
        .unwrap();
    assert_eq!(names(&rest), ["welcome", "welcome-2"]);
    let last = store
        .list_templates(&t, Some(&rest[1].name), 2)
        .await
        .unwrap();
    assert!(last.is_empty());
}
