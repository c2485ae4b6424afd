//! The port contract tests (`crate::ports::contract`) on the SQLite backend.

use super::SqliteBackend;
use crate::domain::MessageId;
use crate::ports::contract::*;
pub(crate) use crate::ports::contract::{message, tenant};

/// A backend whose writer leaves delivered marks unfolded, for tests that read them.
fn unfolded_backend() -> (tempfile::TempDir, SqliteBackend) {
    let dir = tempfile::tempdir().unwrap();
    let b = SqliteBackend::open_unfolded(&dir.path().join("t.db")).unwrap();
    (dir, b)
}

fn backend() -> (tempfile::TempDir, SqliteBackend) {
    let dir = tempfile::tempdir().unwrap();
    let b = SqliteBackend::open(&dir.path().join("t.db")).unwrap();
    (dir, b)
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
async fn sqlite_batches_claim_and_settle_message_by_message() {
    let (_d, b) = backend();
    batches_claim_and_settle_message_by_message(&b).await;
}

#[tokio::test]
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
    received_messages_come_back_after_the_visibility_timeout(&b, &b).await;
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

#[tokio::test]
async fn sqlite_warmup_counts_and_state() {
    let (_d, b) = backend();
    warmup_counts_and_state(&b).await;
}

#[tokio::test]
async fn sqlite_templates_round_trip() {
    let (_d, b) = backend();
    templates_round_trip(&b).await;
}

#[tokio::test]
async fn sqlite_keys_are_found_by_prefix_and_revoked() {
    let (_d, b) = backend();
    keys_are_found_by_prefix_and_revoked(&b).await;
}

#[tokio::test]
async fn sqlite_sender_identities_are_per_tenant() {
    let (_d, b) = backend();
    sender_identities_are_per_tenant(&b).await;
}

#[tokio::test]
async fn sqlite_dead_letters_are_listed_and_redriven() {
    let (_d, b) = backend();
    dead_letters_are_listed_and_redriven(&b, &b).await;
}

#[tokio::test]
async fn sqlite_a_timeline_keeps_every_send() {
    let (_d, b) = backend();
    a_timeline_keeps_every_send(&b).await;
}

#[tokio::test]
async fn sqlite_channel_counts_follow_the_state() {
    let (_d, b) = backend();
    channel_counts_follow_the_state(&b, || async {}).await;
}

#[tokio::test]
async fn sqlite_suppressions_are_scoped_batched_and_expire() {
    let (_d, b) = backend();
    suppressions_are_scoped_batched_and_expire(&b).await;
}

#[tokio::test]
async fn sqlite_one_address_on_three_lists_is_deleted_list_by_list() {
    let (_d, b) = backend();
    one_address_on_three_lists_is_deleted_list_by_list(&b).await;
}

#[tokio::test]
async fn sqlite_soft_bounces_are_counted_in_their_window() {
    let (_d, b) = backend();
    soft_bounces_are_counted_in_their_window(&b).await;
}

#[tokio::test]
async fn sqlite_provider_events_are_seen_once() {
    let (_d, b) = backend();
    provider_events_are_seen_once(&b).await;
}

#[tokio::test]
async fn sqlite_provider_event_claims_run_out_unless_applied() {
    let (_d, b) = backend();
    provider_event_claims_run_out_unless_applied(&b).await;
}

#[tokio::test]
async fn sqlite_parked_event_claims_wait_to_be_released() {
    let (_d, b) = backend();
    parked_event_claims_wait_to_be_released(&b).await;
}

#[tokio::test]
async fn sqlite_a_sent_never_hides_parked_events() {
    let (_d, b) = backend();
    // SQLite looks every time: a look-up costs it nothing worth saving.
    assert_eq!(
        a_sent_never_hides_parked_events(&b).await,
        crate::ports::TransitionOutcome::Applied
    );
}

#[tokio::test]
async fn sqlite_a_parker_learns_of_a_recorded_sent() {
    let (_d, b) = backend();
    a_parker_learns_of_a_recorded_sent(&b).await;
}

#[tokio::test]
async fn sqlite_provider_events_park_until_forgotten() {
    let (_d, b) = backend();
    provider_events_park_until_forgotten(&b).await;
}

#[tokio::test]
async fn sqlite_inbound_messages_are_stored_once_and_paged_newest_first() {
    let (_d, b) = backend();
    inbound_messages_are_stored_once_and_paged_newest_first(&b).await;
}

#[tokio::test]
async fn sqlite_retention_deletes_old_inbound_messages() {
    use crate::ports::{InboundStore, MessageStore};
    let (_d, b) = backend();
    let acme = tenant("acme");
    b.record_inbound(
        &crate::ports::contract::inbound(&acme, "SM-old", "hi"),
        &Default::default(),
    )
    .await
    .unwrap();
    let past = chrono::Utc::now() - chrono::Duration::days(1);
    b.purge(past, past).await.unwrap();
    assert_eq!(
        b.list_inbound(&acme, None, 10).await.unwrap().len(),
        1,
        "recent: kept"
    );
    let future = chrono::Utc::now() + chrono::Duration::seconds(5);
    b.purge(future, future).await.unwrap();
    assert!(
        b.list_inbound(&acme, None, 10).await.unwrap().is_empty(),
        "past retention: gone"
    );
}

#[tokio::test]
async fn sqlite_search_filters_pages_and_isolates() {
    let (_d, b) = backend();
    search_filters_pages_and_isolates(&b).await;
}

#[tokio::test]
async fn sqlite_bulk_progress_counts_a_tenants_own_job() {
    let (_d, b) = backend();
    bulk_progress_counts_a_tenants_own_job(&b).await;
}

#[tokio::test]
async fn sqlite_contacts_own_their_identities() {
    let (_d, b) = backend();
    contacts_own_their_identities(&b).await;
}

#[tokio::test]
async fn sqlite_threads_follow_their_contacts() {
    let (_d, b) = backend();
    threads_follow_their_contacts(&b).await;
}

#[tokio::test]
async fn sqlite_followups_are_announced_once() {
    let (_d, b) = backend();
    followups_are_announced_once(&b).await;
}

#[tokio::test]
async fn sqlite_inbound_messages_are_claimed_once() {
    let (_d, b) = backend();
    inbound_messages_are_claimed_once(&b).await;
}

#[tokio::test]
async fn sqlite_inbound_rules_are_kept_per_tenant() {
    let (_d, b) = backend();
    inbound_rules_are_kept_per_tenant(&b).await;
}

#[tokio::test]
async fn sqlite_reputation_saves_name_the_revision_they_read() {
    let (_d, b) = backend();
    reputation_saves_name_the_revision_they_read(&b).await;
}

#[tokio::test]
async fn sqlite_auto_replies_are_claimed_once_per_window() {
    let (_d, b) = backend();
    auto_replies_are_claimed_once_per_window(&b).await;
}

#[tokio::test]
async fn sqlite_email_replies_join_the_thread_they_name() {
    let (_d, b) = backend();
    email_replies_join_the_thread_they_name(&b).await;
}

mod thread_policies {
    use super::backend;
    use crate::ports::contract_threads::*;

    #[tokio::test]
    async fn sqlite_thread_policies_are_kept_per_tenant() {
        let (_d, b) = backend();
        thread_policies_are_kept_per_tenant(&b).await;
    }

    #[tokio::test]
    async fn sqlite_a_thread_per_channel_splits_a_contacts_messages() {
        let (_d, b) = backend();
        a_thread_per_channel_splits_a_contacts_messages(&b).await;
    }

    #[tokio::test]
    async fn sqlite_a_silent_thread_gives_way_to_a_new_one() {
        let (_d, b) = backend();
        a_silent_thread_gives_way_to_a_new_one(&b).await;
    }

    #[tokio::test]
    async fn sqlite_sends_join_their_contacts_thread() {
        let (_d, b) = backend();
        sends_join_their_contacts_thread(&b).await;
    }
}

mod relay {
    use super::backend;
    use crate::ports::contract_relay::*;

    #[tokio::test]
    async fn sqlite_numbers_are_one_tenants_and_change_by_version() {
        let (_d, b) = backend();
        numbers_are_one_tenants_and_change_by_version(&b).await;
    }

    #[tokio::test]
    async fn sqlite_assignments_pick_a_free_number() {
        let (_d, b) = backend();
        assignments_pick_a_free_number(&b).await;
    }

    #[tokio::test]
    async fn sqlite_racing_assignments_do_not_share_a_number() {
        let (_d, b) = backend();
        racing_assignments_do_not_share_a_number(&b).await;
    }

    #[tokio::test]
    async fn sqlite_relay_settings_are_kept_per_tenant() {
        let (_d, b) = backend();
        relay_settings_are_kept_per_tenant(&b).await;
    }
}

#[tokio::test]
async fn sqlite_console_sessions_expire_and_close() {
    let (_d, b) = backend();
    console_sessions_expire_and_close(&b).await;
}

#[tokio::test]
async fn sqlite_templates_list_by_name() {
    let (_d, b) = backend();
    templates_list_by_name(&b).await;
}

/// A message accepted, claimed and sent on the `sandbox` gateway: its id and tenant.
async fn sent_message(
    b: &SqliteBackend,
    tenant_name: &str,
) -> (crate::domain::TenantId, MessageId) {
    use crate::domain::{MessageStatus, Priority};
    use crate::ports::{MessageStore, Transition, TransitionOutcome};
    let t = tenant(tenant_name);
    let id = accept(b, message(&t, Priority::P3)).await;
    let m = claim_now(b, id, Priority::P3).await;
    let mut sent = Transition::new(id, MessageStatus::Sent, chrono::Utc::now());
    sent.attempt = Some(m.attempts);
    sent.gateway = Some("sandbox".into());
    sent.provider_message_id = Some("p-1".into());
    assert_eq!(
        b.transition(vec![sent]).await.unwrap(),
        [TransitionOutcome::Applied]
    );
    (t, id)
}

/// A provider's `delivered` for `id`, 5 s from now; that time.
async fn deliver(b: &SqliteBackend, id: MessageId) -> chrono::DateTime<chrono::Utc> {
    use crate::domain::MessageStatus;
    use crate::ports::{MessageStore, Transition, TransitionOutcome};
    let at = chrono::Utc::now() + chrono::Duration::seconds(5);
    let delivered = Transition::new(id, MessageStatus::Delivered, at);
    let outcome = b.transition(vec![delivered]).await.unwrap();
    assert_eq!(outcome, [TransitionOutcome::Applied]);
    at
}

/// What the `messages` row's own status column and `delivered_marks` hold for `id`, and how
/// many `events` rows it has.
async fn stored_state(b: &SqliteBackend, id: MessageId) -> (String, i64, i64) {
    let key = id.to_string();
    b.readers
        .run(move |conn| {
            conn.query_row(
                "SELECT status, \
                 (SELECT COUNT(*) FROM delivered_marks WHERE message_id = ?1), \
                 (SELECT COUNT(*) FROM events WHERE message_id = ?1) \
                 FROM messages WHERE id = ?1",
                [key],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
        })
        .await
        .unwrap()
}

/// The life of a drained and delivered message writes no `events` row, and its `delivered`
/// does not rewrite the row: its accept, claim and `sent` are on its row and its `delivered`
/// is a mark (`sets.rs`), which is what the drain pays for. Every read sees `delivered`.
#[tokio::test]
async fn a_delivered_message_keeps_its_row_and_reads_delivered() {
    use crate::domain::MessageStatus;
    use crate::ports::{MessageFilter, MessageStore};
    let (_d, b) = unfolded_backend();
    let (t, id) = sent_message(&b, "row-events").await;
    let at = deliver(&b, id).await;
    assert_eq!(stored_state(&b, id).await, ("sent".to_owned(), 1, 0));
    let (m, events) = b.get(&t, id).await.unwrap().unwrap();
    assert_eq!(m.status, MessageStatus::Delivered);
    assert_eq!(m.updated_at.timestamp_millis(), at.timestamp_millis());
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["queued", "sending", "sent", "delivered"]);
    let by = |status| MessageFilter {
        status: Some(status),
        ..MessageFilter::default()
    };
    let found = b.search(&t, &by(MessageStatus::Delivered), None, 10).await;
    assert_eq!(found.unwrap().items.len(), 1);
    let found = b.search(&t, &by(MessageStatus::Sent), None, 10).await;
    assert!(found.unwrap().items.is_empty());
    let counts = b.channel_counts(&t).await.unwrap();
    assert_eq!(counts.len(), 1);
    assert_eq!(
        (counts[0].status, counts[0].count),
        (MessageStatus::Delivered, 1)
    );
    assert!(b
        .sent_by_gateway("sandbox", None, 10)
        .await
        .unwrap()
        .is_empty());
}

/// Once the writer has been idle for a moment it folds marks into their rows: the row says
/// `delivered` itself, the mark is gone, and every read answers as before.
#[tokio::test]
async fn an_idle_writer_folds_delivered_marks_into_their_rows() {
    use crate::domain::MessageStatus;
    use crate::ports::MessageStore;
    let (_d, b) = backend();
    let (t, id) = sent_message(&b, "row-fold").await;
    deliver(&b, id).await;
    let before = b.get(&t, id).await.unwrap().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while stored_state(&b, id).await != ("delivered".to_owned(), 0, 0) {
        assert!(
            std::time::Instant::now() < deadline,
            "the mark was not folded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let after = b.get(&t, id).await.unwrap().unwrap();
    assert_eq!(after.0.status, MessageStatus::Delivered);
    assert_eq!(after.0.updated_at, before.0.updated_at);
    assert_eq!(after.1, before.1, "the timeline is the same");
}

/// A mark is the message's state for every compare-and-set that follows: a second
/// `delivered` or a `failed` loses to it, a `bounced` applies on top of it and the timeline
/// keeps both; a purge takes the mark with the row.
#[tokio::test]
async fn a_delivered_mark_is_the_state_later_transitions_test() {
    use crate::domain::MessageStatus;
    use crate::ports::{MessageStore, Transition, TransitionOutcome};
    let (_d, b) = unfolded_backend();
    let (t, id) = sent_message(&b, "row-marks").await;
    let now = chrono::Utc::now;
    let step = |to| vec![Transition::new(id, to, now())];
    let conflict = TransitionOutcome::Conflict {
        current: MessageStatus::Delivered,
    };
    let delivered = b.transition(step(MessageStatus::Delivered)).await.unwrap();
    assert_eq!(delivered, [TransitionOutcome::Applied]);
    let again = b.transition(step(MessageStatus::Delivered)).await.unwrap();
    assert_eq!(again, std::slice::from_ref(&conflict));
    assert_eq!(
        b.transition(step(MessageStatus::Failed)).await.unwrap(),
        [conflict]
    );
    let bounced = b.transition(step(MessageStatus::Bounced)).await.unwrap();
    assert_eq!(bounced, [TransitionOutcome::Applied]);
    let (m, events) = b.get(&t, id).await.unwrap().unwrap();
    assert_eq!(m.status, MessageStatus::Bounced);
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["queued", "sending", "sent", "delivered", "bounced"]);
    let later = now() + chrono::Duration::days(1);
    assert_eq!(b.purge(later, later).await.unwrap(), 1);
    assert_eq!(
        b.readers
            .run(
                |conn| conn.query_row("SELECT COUNT(*) FROM delivered_marks", [], |r| r
                    .get::<_, i64>(0))
            )
            .await
            .unwrap(),
        0
    );
}
