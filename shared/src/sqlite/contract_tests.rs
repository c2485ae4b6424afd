//! Port contract tests, run here on the SQLite backend. They are written against the traits
//! only, so every other backend must pass the same functions.

use std::time::Duration;

use chrono::Utc;
use serde_json::json;

use crate::domain::{Channel, Content, MessageId, MessageStatus, NewMessage, Priority, TenantId};
use crate::ports::{
    AcceptBatch, AcceptOutcome, AttemptChange, ClaimOutcome, IdempotencyRecord, LaneQueue,
    MessageStore, Transition, TransitionOutcome,
};
use crate::sqlite::SqliteBackend;

pub(crate) fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).unwrap()
}

pub(crate) fn message(t: &TenantId, lane: Priority) -> NewMessage {
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
        created_at: Utc::now(),
    }
}

async fn accept<S: MessageStore>(store: &S, m: NewMessage) -> MessageId {
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

fn backend() -> (tempfile::TempDir, SqliteBackend) {
    let dir = tempfile::tempdir().unwrap();
    let b = SqliteBackend::open(&dir.path().join("t.db")).unwrap();
    (dir, b)
}

const LEASE: Duration = Duration::from_secs(30);

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
    let ClaimOutcome::Claimed(m) = store
        .claim(id, Priority::P2, Utc::now(), LEASE)
        .await
        .unwrap()
    else {
        panic!("claim")
    };
    let mut sent = Transition::new(id, MessageStatus::Sent, Utc::now());
    sent.attempt = Some(m.attempts);
    sent.gateway = Some("ses".into());
    sent.provider_message_id = Some("0100-abc".into());
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
    let ClaimOutcome::Claimed(m) = store
        .claim(id, Priority::P4, Utc::now(), LEASE)
        .await
        .unwrap()
    else {
        panic!("claim")
    };
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
    assert_eq!(
        kinds,
        [
            MessageStatus::Queued,
            MessageStatus::Sending,
            MessageStatus::Deferred
        ]
    );
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

pub async fn received_messages_come_back_after_the_visibility_timeout<
    Q: LaneQueue + MessageStore,
>(
    q: &Q,
) {
    let t = tenant("acme");
    let id = accept(q, message(&t, Priority::P3)).await;
    let first = q
        .receive(Priority::P3, 10, Duration::from_millis(300))
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
    tokio::time::sleep(Duration::from_millis(350)).await;
    let again = q
        .receive(Priority::P3, 10, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].receive_count, 2);
    q.ack(Priority::P3, vec![again[0].receipt.clone()])
        .await
        .unwrap();
    let stats = q.stats(Utc::now()).await.unwrap();
    assert_eq!(
        stats[Priority::P3.index()].depth + stats[Priority::P3.index()].in_flight,
        0
    );
}

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

#[tokio::test]
async fn sqlite_claim_is_exclusive_until_the_lease_runs_out() {
    let (_d, b) = backend();
    claim_is_exclusive_until_the_lease_runs_out(&b).await;
}

#[tokio::test]
async fn sqlite_outcomes_need_the_current_attempt() {
    let (_d, b) = backend();
    outcomes_need_the_current_attempt(&b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_cancel_and_claim_race_has_one_winner() {
    let (_d, b) = backend();
    cancel_and_claim_race_has_one_winner(&b).await;
}

#[tokio::test]
async fn sqlite_tenants_are_isolated() {
    let (_d, b) = backend();
    tenants_are_isolated(&b).await;
}

#[tokio::test]
async fn sqlite_idempotency_keys_commit_with_their_messages() {
    let (_d, b) = backend();
    idempotency_keys_commit_with_their_messages(&b).await;
}

#[tokio::test]
async fn sqlite_received_messages_come_back_after_the_visibility_timeout() {
    let (_d, b) = backend();
    received_messages_come_back_after_the_visibility_timeout(&b).await;
}

#[tokio::test]
async fn sqlite_retention_deletes_only_final_messages() {
    let (_d, b) = backend();
    retention_deletes_only_final_messages(&b).await;
}

#[tokio::test]
async fn sqlite_provider_ids_find_their_message() {
    let (_d, b) = backend();
    provider_ids_find_their_message(&b).await;
}
