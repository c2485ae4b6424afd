//! Port contract tests of the tenants' thread policies: which thread a message in or out
//! joins, on every backend (see [`super::contract`]).
// Test code: a panic is how a contract test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::{Duration, Utc};

use super::contract::{inbound, tenant};
use super::{ContactStore, InboundStore, RuleStore, ThreadStore};
use crate::domain::thread::{ThreadFilter, ThreadId};
use crate::domain::thread_policy::{ThreadPolicy, ThreadScope};
use crate::domain::{Channel, Contact, ContactFields, Identity, InboundMessage, TenantId};

fn per_channel() -> ThreadPolicy {
    ThreadPolicy {
        per: ThreadScope::Channel,
        ..ThreadPolicy::default()
    }
}

fn whatsapp(t: &TenantId, provider_id: &str, body: &str) -> InboundMessage {
    let mut m = inbound(t, provider_id, body);
    m.channel = Channel::Whatsapp;
    m.gateway = "whatsapp".into();
    m
}

async fn threads_of<S: ThreadStore>(store: &S, t: &TenantId) -> Vec<ThreadId> {
    let scan = store.threads(t, &ThreadFilter::default(), None, 50).await;
    scan.unwrap().items.into_iter().map(|t| t.id).collect()
}

/// The policy is the tenant's: another tenant keeps the default.
pub async fn thread_policies_are_kept_per_tenant<S: RuleStore>(store: &S) {
    let (acme, other) = (tenant("acme"), tenant("other"));
    assert_eq!(
        store.thread_policy(&acme).await.unwrap(),
        ThreadPolicy::default()
    );
    let policy = ThreadPolicy {
        per: ThreadScope::Channel,
        new_after_silent_days: Some(14),
        join_sends: false,
    };
    store.put_thread_policy(&acme, &policy).await.unwrap();
    assert_eq!(store.thread_policy(&acme).await.unwrap(), policy);
    assert_eq!(
        store.thread_policy(&other).await.unwrap(),
        ThreadPolicy::default()
    );
    // Rules and policy are kept apart.
    assert!(store.inbound_rules(&acme).await.unwrap().rules.is_empty());
}

/// Per channel: a contact's SMS and WhatsApp messages go to two threads, each channel's next
/// message to its own; a send joins the thread of its channel.
pub async fn a_thread_per_channel_splits_a_contacts_messages<S>(store: &S)
where
    S: InboundStore + ThreadStore,
{
    let acme = tenant("acme");
    let policy = per_channel();
    let sms = inbound(&acme, "SM-c1", "Hello by text");
    let wa = whatsapp(&acme, "wamid-c2", "Hello on WhatsApp");
    assert!(store.record_inbound(&sms, &policy).await.unwrap());
    assert!(store.record_inbound(&wa, &policy).await.unwrap());
    let again = inbound(&acme, "SM-c3", "Texting again");
    assert!(store.record_inbound(&again, &policy).await.unwrap());
    let threads = threads_of(store, &acme).await;
    assert_eq!(threads.len(), 2, "one thread per channel: {threads:?}");
    let thread_of = |m: &InboundMessage| store.inbound_message(&acme, m.id);
    let sms_thread = thread_of(&sms).await.unwrap().unwrap().thread.unwrap();
    let wa_thread = thread_of(&wa).await.unwrap().unwrap().thread.unwrap();
    assert_ne!(sms_thread, wa_thread);
    assert_eq!(
        thread_of(&again).await.unwrap().unwrap().thread,
        Some(sms_thread)
    );
    let a = store.thread(&acme, sms_thread).await.unwrap().unwrap();
    let b = store.thread(&acme, wa_thread).await.unwrap().unwrap();
    assert_eq!(a.contact, b.contact, "one contact, two threads");
    assert_eq!((a.unread, b.unread), (2, 1));

    let phone = Identity::parse("phone", "+15005550006").unwrap();
    let send = |channel| store.thread_for_send(&acme, &phone, channel, &policy, Utc::now());
    assert_eq!(send(Channel::Whatsapp).await.unwrap(), Some(wa_thread));
    assert_eq!(send(Channel::Sms).await.unwrap(), Some(sms_thread));
    // With the default policy the contact's threads are not per channel: a new thread across
    // channels opens beside them.
    let across = store
        .thread_for_send(
            &acme,
            &phone,
            Channel::Sms,
            &ThreadPolicy::default(),
            Utc::now(),
        )
        .await
        .unwrap()
        .unwrap();
    assert!(across != sms_thread && across != wa_thread);
}

/// After the policy's days of silence a message opens a new thread, which later messages
/// join; the old thread keeps its history.
pub async fn a_silent_thread_gives_way_to_a_new_one<S>(store: &S)
where
    S: InboundStore + ThreadStore,
{
    let acme = tenant("acme");
    let policy = ThreadPolicy {
        new_after_silent_days: Some(7),
        ..ThreadPolicy::default()
    };
    let mut old = inbound(&acme, "SM-s1", "Last month's question");
    old.received_at -= Duration::days(30);
    assert!(store.record_inbound(&old, &policy).await.unwrap());
    let new = inbound(&acme, "SM-s2", "A new question");
    assert!(store.record_inbound(&new, &policy).await.unwrap());
    let next = inbound(&acme, "SM-s3", "And a detail");
    assert!(store.record_inbound(&next, &policy).await.unwrap());
    let thread_of = |m: &InboundMessage| store.inbound_message(&acme, m.id);
    let first = thread_of(&old).await.unwrap().unwrap().thread.unwrap();
    let second = thread_of(&new).await.unwrap().unwrap().thread.unwrap();
    assert_ne!(first, second, "the silent thread gave way");
    assert_eq!(
        thread_of(&next).await.unwrap().unwrap().thread,
        Some(second)
    );
    let history = store.thread_entries(&acme, first, None, 10).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(threads_of(store, &acme).await.len(), 2);
    // Without the policy's limit the newest thread is simply kept.
    let later = inbound(&acme, "SM-s4", "Still there?");
    assert!(store
        .record_inbound(&later, &ThreadPolicy::default())
        .await
        .unwrap());
    assert_eq!(
        thread_of(&later).await.unwrap().unwrap().thread,
        Some(second)
    );
}

/// A send to an address a contact has joins the contact's thread, opening one if it has
/// none; a send to an unknown address joins nothing, another tenant's contact included.
/// A merge brings the merged contact's threads along, per slot.
pub async fn sends_join_their_contacts_thread<S>(store: &S)
where
    S: ContactStore + InboundStore + ThreadStore,
{
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let email = Identity::parse("email", "ann@example.com").unwrap();
    let ann = Contact::new(acme.clone(), ContactFields::default(), vec![email.clone()]);
    store.create_contact(&ann).await.unwrap();
    let policy = &per_channel();
    let send = |t: TenantId, id: Identity, channel| async move {
        store
            .thread_for_send(&t, &id, channel, policy, Utc::now())
            .await
            .unwrap()
    };
    let opened = send(acme.clone(), email.clone(), Channel::Email)
        .await
        .unwrap();
    assert_eq!(
        send(acme.clone(), email.clone(), Channel::Email).await,
        Some(opened),
        "the second send joins the thread the first opened"
    );
    let thread = store.thread(&acme, opened).await.unwrap().unwrap();
    assert_eq!(thread.contact, ann.id);
    let stranger = Identity::parse("email", "bob@example.com").unwrap();
    assert_eq!(send(acme.clone(), stranger, Channel::Email).await, None);
    assert_eq!(
        send(globex.clone(), email.clone(), Channel::Email).await,
        None
    );
    assert!(threads_of(store, &globex).await.is_empty());

    // Ann also texts from a number that became a contact of its own; merged into Ann, its
    // SMS thread is Ann's SMS thread, and her email thread stays hers.
    let text = inbound(&acme, "SM-j1", "It's Ann, by text");
    assert!(store.record_inbound(&text, policy).await.unwrap());
    let sms_thread = store
        .inbound_message(&acme, text.id)
        .await
        .unwrap()
        .unwrap()
        .thread
        .unwrap();
    let phone = Identity::parse("phone", "+15005550006").unwrap();
    let texter = store
        .thread(&acme, sms_thread)
        .await
        .unwrap()
        .unwrap()
        .contact;
    store.merge_contacts(&acme, texter, ann.id).await.unwrap();
    assert_eq!(
        send(acme.clone(), phone, Channel::Sms).await,
        Some(sms_thread)
    );
    assert_eq!(
        send(acme.clone(), email, Channel::Email).await,
        Some(opened)
    );
    let moved = store.thread(&acme, sms_thread).await.unwrap().unwrap();
    assert_eq!(moved.contact, ann.id);
}
