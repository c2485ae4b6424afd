//! The port contract suite on the AWS backend: DynamoDB and SQS, on moto.

use herald_tests::aws::Stack;
use shared::aws::AwsBackend;
use shared::ports::contract::*;

async fn backend() -> (Stack, AwsBackend) {
    let stack = Stack::create().await;
    let backend = AwsBackend::new(&stack.sdk, &stack.settings);
    (stack, backend)
}

#[tokio::test]
async fn dynamo_claim_is_exclusive_until_the_lease_runs_out() {
    let (_s, b) = backend().await;
    claim_is_exclusive_until_the_lease_runs_out(b.store.as_ref()).await;
}

#[tokio::test]
async fn dynamo_provider_ids_find_their_message() {
    let (_s, b) = backend().await;
    provider_ids_find_their_message(b.store.as_ref()).await;
}

#[tokio::test]
async fn dynamo_outcomes_need_the_current_attempt() {
    let (_s, b) = backend().await;
    outcomes_need_the_current_attempt(b.store.as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamo_batches_claim_and_settle_message_by_message() {
    let (_s, b) = backend().await;
    batches_claim_and_settle_message_by_message(b.store.as_ref()).await;
}

#[tokio::test]
async fn dynamo_cancel_and_claim_race_has_one_winner() {
    let (_s, b) = backend().await;
    cancel_and_claim_race_has_one_winner(b.store.as_ref()).await;
}

#[tokio::test]
async fn dynamo_tenants_are_isolated() {
    let (_s, b) = backend().await;
    tenants_are_isolated(b.store.as_ref()).await;
}

#[tokio::test]
async fn dynamo_idempotency_keys_commit_with_their_messages() {
    let (_s, b) = backend().await;
    idempotency_keys_commit_with_their_messages(b.store.as_ref()).await;
}

#[tokio::test]
async fn sqs_received_messages_come_back_after_the_visibility_timeout() {
    let (_s, b) = backend().await;
    received_messages_come_back_after_the_visibility_timeout(b.store.as_ref(), b.lanes.as_ref())
        .await;
}

#[tokio::test]
async fn dynamo_warmup_counts_and_state() {
    let (_s, b) = backend().await;
    shared::ports::contract::warmup_counts_and_state(b.store.as_ref()).await;
}

#[tokio::test]
async fn dynamo_templates_round_trip() {
    let (_s, b) = backend().await;
    templates_round_trip(b.store.as_ref()).await;
}

#[tokio::test]
async fn dynamo_keys_are_found_by_prefix_and_revoked() {
    let (_s, b) = backend().await;
    keys_are_found_by_prefix_and_revoked(b.store.as_ref()).await;
}

#[tokio::test]
async fn dynamo_sender_identities_are_per_tenant() {
    let (_s, b) = backend().await;
    sender_identities_are_per_tenant(b.store.as_ref()).await;
}

#[tokio::test]
async fn dynamo_dead_letters_are_listed_and_redriven() {
    let (_s, b) = backend().await;
    dead_letters_are_listed_and_redriven(b.store.as_ref(), b.lanes.as_ref()).await;
}

#[tokio::test]
async fn dynamo_a_timeline_keeps_every_send() {
    let (_s, b) = backend().await;
    a_timeline_keeps_every_send(b.store.as_ref()).await;
}

#[tokio::test]
async fn dynamo_channel_counts_follow_the_state() {
    let (s, b) = backend().await;
    // The counts follow the messages table's stream, through the `stats` function.
    channel_counts_follow_the_state(b.store.as_ref(), || async {
        s.messages_stream.play(&b).await;
    })
    .await;
}

#[tokio::test]
async fn dynamo_suppressions_are_scoped_batched_and_expire() {
    let (_s, b) = backend().await;
    suppressions_are_scoped_batched_and_expire(b.store.as_ref()).await;
}

#[tokio::test]
async fn dynamo_one_address_on_three_lists_is_deleted_list_by_list() {
    let (_s, b) = backend().await;
    one_address_on_three_lists_is_deleted_list_by_list(b.store.as_ref()).await;
}

#[tokio::test]
async fn dynamo_soft_bounces_are_counted_in_their_window() {
    let (_s, b) = backend().await;
    soft_bounces_are_counted_in_their_window(b.store.as_ref()).await;
}

#[tokio::test]
async fn dynamo_provider_events_are_seen_once() {
    let (_s, b) = backend().await;
    provider_events_are_seen_once(b.store.as_ref()).await;
}

#[tokio::test]
async fn dynamo_provider_event_claims_run_out_unless_applied() {
    let (_s, b) = backend().await;
    provider_event_claims_run_out_unless_applied(b.store.as_ref()).await;
}

#[tokio::test]
async fn dynamo_parked_event_claims_wait_to_be_released() {
    let (_s, b) = backend().await;
    parked_event_claims_wait_to_be_released(b.store.as_ref()).await;
}

/// `expires_at` is the table's TTL: a claim on parked events whose holder dies must leave the
/// item to live as long as the events it says are parked, not only as long as its lease.
#[tokio::test]
async fn dynamo_a_dead_claim_on_parked_events_keeps_its_item_alive() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use shared::ports::{EventClaim, EventLog};
    use std::time::Duration;
    let (stack, b) = backend().await;
    let log = b.store.as_ref();
    let keep = Duration::from_secs(3600);
    let EventClaim::First(first) = log.claim_event("sns", "ttl-1", keep).await.unwrap() else {
        panic!("not a first claim");
    };
    log.event_parked("sns", "ttl-1", first, keep).await.unwrap();
    let died = log
        .claim_event("sns", "ttl-1", Duration::ZERO)
        .await
        .unwrap();
    assert!(matches!(died, EventClaim::Parked(_)), "{died:?}");
    let item = aws_sdk_dynamodb::Client::new(&stack.sdk)
        .get_item()
        .table_name(stack.settings.tables.idempotency.clone().unwrap())
        .key("pk", AttributeValue::S("event#sns#ttl-1".into()))
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    let expires: i64 = match &item["expires_at"] {
        AttributeValue::N(n) => n.parse().unwrap(),
        other => panic!("expires_at: {other:?}"),
    };
    let in_an_hour = chrono::Utc::now().timestamp() + 3500;
    assert!(expires > in_an_hour, "TTL shortened to the lease: {item:?}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let next = log.claim_event("sns", "ttl-1", keep).await.unwrap();
    assert!(matches!(next, EventClaim::Parked(_)), "{next:?}");
}

#[tokio::test]
async fn dynamo_a_sent_never_hides_parked_events() {
    let (_s, b) = backend().await;
    // Only a message with parked events costs the dispatcher a look-up.
    assert_eq!(
        a_sent_never_hides_parked_events(b.store.as_ref()).await,
        shared::ports::TransitionOutcome::AppliedNothingParked
    );
}

#[tokio::test]
async fn dynamo_a_parker_learns_of_a_recorded_sent() {
    let (_s, b) = backend().await;
    a_parker_learns_of_a_recorded_sent(b.store.as_ref()).await;
}

#[tokio::test]
async fn dynamo_provider_events_park_until_forgotten() {
    let (_s, b) = backend().await;
    provider_events_park_until_forgotten(b.store.as_ref()).await;
}

#[tokio::test]
async fn dynamo_inbound_messages_are_stored_once_and_paged_newest_first() {
    let (_s, b) = backend().await;
    inbound_messages_are_stored_once_and_paged_newest_first(b.store.as_ref()).await;
}

#[tokio::test]
async fn dynamo_search_filters_pages_and_isolates() {
    let (_s, b) = backend().await;
    search_filters_pages_and_isolates(b.store.as_ref()).await;
}

#[tokio::test]
async fn dynamo_audit_log_appends_filters_and_isolates() {
    let (_s, b) = backend().await;
    audit_log_appends_filters_and_isolates(b.store.as_ref()).await;
}

#[tokio::test]
async fn dynamo_bulk_progress_counts_a_tenants_own_job() {
    let (_s, b) = backend().await;
    bulk_progress_counts_a_tenants_own_job(b.store.as_ref()).await;
}

#[tokio::test]
async fn dynamo_threads_follow_their_contacts() {
    let (_s, b) = backend().await;
    threads_follow_their_contacts(b.store.as_ref()).await;
}

#[tokio::test]
async fn dynamo_followups_are_announced_once() {
    let (_s, b) = backend().await;
    followups_are_announced_once(b.store.as_ref()).await;
}

#[tokio::test]
async fn dynamo_inbound_messages_are_claimed_once() {
    let (_s, b) = backend().await;
    inbound_messages_are_claimed_once(b.store.as_ref()).await;
}

#[tokio::test]
async fn dynamo_inbound_rules_are_kept_per_tenant() {
    let (_s, b) = backend().await;
    inbound_rules_are_kept_per_tenant(b.store.as_ref()).await;
}

#[tokio::test]
async fn dynamo_reputation_saves_name_the_revision_they_read() {
    let (_s, b) = backend().await;
    reputation_saves_name_the_revision_they_read(b.store.as_ref()).await;
}

#[tokio::test]
async fn dynamo_email_replies_join_the_thread_they_name() {
    let (_s, b) = backend().await;
    email_replies_join_the_thread_they_name(b.store.as_ref()).await;
}

#[tokio::test]
async fn dynamo_auto_replies_are_claimed_once_per_window() {
    let (_s, b) = backend().await;
    auto_replies_are_claimed_once_per_window(b.store.as_ref()).await;
}

#[tokio::test]
async fn dynamo_contacts_own_their_identities() {
    let (_s, b) = backend().await;
    contacts_own_their_identities(b.store.as_ref()).await;
}

/// The contacts API over DynamoDB: made, refused when an identity is taken, found by it, and
/// not found by another tenant.
#[tokio::test]
async fn the_contacts_api_works_over_dynamodb() {
    use reqwest::Method;
    use serde_json::json;
    let api = herald_tests::aws::AwsApi::start().await;
    let phone = json!([{"kind": "phone", "value": "+14155550100"}]);
    let (status, ann) = api
        .call(
            Method::POST,
            "/v1/contacts",
            Some(json!({"name": "Ann", "identities": phone})),
        )
        .await;
    assert_eq!(status, 201, "{ann}");
    let (status, again) = api
        .call(
            Method::POST,
            "/v1/contacts",
            Some(json!({"identities": phone})),
        )
        .await;
    assert_eq!(status, 409, "{again}");
    let (status, found) = api
        .call(
            Method::GET,
            "/v1/contacts?identity=phone:%2B14155550100",
            None,
        )
        .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["items"][0]["id"], ann["id"]);
    let path = format!("/v1/contacts/{}", ann["id"].as_str().unwrap_or_default());
    let other = api.key_of("globex").await;
    let (status, _) = api.call_as(&other, Method::GET, &path, None).await;
    assert_eq!(status, 404);
}

mod thread_policies {
    use super::backend;
    use shared::ports::contract_threads::*;

    #[tokio::test]
    async fn dynamo_thread_policies_are_kept_per_tenant() {
        let (_s, b) = backend().await;
        thread_policies_are_kept_per_tenant(b.store.as_ref()).await;
    }

    #[tokio::test]
    async fn dynamo_a_thread_per_channel_splits_a_contacts_messages() {
        let (_s, b) = backend().await;
        a_thread_per_channel_splits_a_contacts_messages(b.store.as_ref()).await;
    }

    #[tokio::test]
    async fn dynamo_a_silent_thread_gives_way_to_a_new_one() {
        let (_s, b) = backend().await;
        a_silent_thread_gives_way_to_a_new_one(b.store.as_ref()).await;
    }

    #[tokio::test]
    async fn dynamo_sends_join_their_contacts_thread() {
        let (_s, b) = backend().await;
        sends_join_their_contacts_thread(b.store.as_ref()).await;
    }
}

mod relay {
    use super::backend;
    use shared::ports::contract_relay::*;

    #[tokio::test]
    async fn dynamo_numbers_are_one_tenants_and_change_by_version() {
        let (_s, b) = backend().await;
        numbers_are_one_tenants_and_change_by_version(b.store.as_ref()).await;
    }

    #[tokio::test]
    async fn dynamo_assignments_pick_a_free_number() {
        let (_s, b) = backend().await;
        assignments_pick_a_free_number(b.store.as_ref()).await;
    }

    #[tokio::test]
    async fn dynamo_racing_assignments_do_not_share_a_number() {
        let (_s, b) = backend().await;
        racing_assignments_do_not_share_a_number(b.store.as_ref()).await;
    }

    #[tokio::test]
    async fn dynamo_relay_settings_are_kept_per_tenant() {
        let (_s, b) = backend().await;
        relay_settings_are_kept_per_tenant(b.store.as_ref()).await;
    }
}

#[tokio::test]
async fn dynamo_console_sessions_expire_and_close() {
    let (_s, b) = backend().await;
    console_sessions_expire_and_close(b.store.as_ref()).await;
}

#[tokio::test]
async fn dynamo_templates_list_by_name() {
    let (_s, b) = backend().await;
    templates_list_by_name(b.store.as_ref()).await;
}
