//! Port contract tests of the relay's numbers and assignments, on every backend (see
//! [`super::contract`]).
// Test code: a panic is how a contract test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::{Duration, Utc};

use super::contract::tenant;
use super::{AssignmentDraft, NumberWriteError, RelayStore};
use crate::domain::relay::assignment::{Party, PickError};
use crate::domain::relay::number::{Capabilities, NumberRole, NumberState, TenantNumber};
use crate::domain::{PhoneNumber, TenantId};

fn phone(n: &str) -> PhoneNumber {
    PhoneNumber::parse(n).unwrap()
}

pub fn number(t: &TenantId, n: &str, role: NumberRole) -> TenantNumber {
    TenantNumber {
        number: phone(n),
        tenant: t.clone(),
        role,
        provider: "sandbox".into(),
        capabilities: Capabilities {
            sms: true,
            mms: false,
            whatsapp: false,
        },
        state: NumberState::Active,
        worker: None,
        reason: None,
        // Stores keep milliseconds.
        created_at: chrono::DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap(),
        version: 1,
    }
}

pub fn draft(t: &TenantId, client: &str, worker: &str, days: i64) -> AssignmentDraft {
    let party = |n: &str| Party {
        number: phone(n),
        name: Some(format!("party {n}")),
        contact: None,
    };
    let now = chrono::DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap();
    AssignmentDraft {
        tenant: t.clone(),
        client: party(client),
        worker: party(worker),
        starts_at: now,
        ends_at: now + Duration::days(days),
        grace: Duration::hours(2),
        replaces: None,
        prefer: None,
    }
}

const P1: &str = "+15559000001";
const P2: &str = "+15559000002";
const DESK: &str = "+15559000000";
const ANN: &str = "+15550000001";
const BOB: &str = "+15550000002";
const CAT: &str = "+15550000003";

/// A number is one tenant's: another cannot add it or read it; changes are compare-and-set.
pub async fn numbers_are_one_tenants_and_change_by_version<S: RelayStore>(store: &S) {
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    for n in [P2, DESK, P1] {
        let role = if n == DESK {
            NumberRole::FrontDesk
        } else {
            NumberRole::Pool
        };
        store.add_number(&number(&acme, n, role)).await.unwrap();
    }
    let taken = store
        .add_number(&number(&globex, P1, NumberRole::Pool))
        .await;
    assert!(matches!(taken, Err(NumberWriteError::Exists(n)) if n == P1));
    assert!(store.number(&globex, &phone(P1)).await.unwrap().is_none());
    let owner = store.number_owner(&phone(P1)).await.unwrap().unwrap();
    assert_eq!(
        owner,
        number(&acme, P1, NumberRole::Pool).with_created(owner.created_at)
    );
    let page = store.numbers(&acme, None, 2).await.unwrap();
    let listed: Vec<String> = page.iter().map(|n| n.number.to_string()).collect();
    assert_eq!(listed, [DESK, P1]);
    let rest = store.numbers(&acme, Some(&phone(P1)), 2).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert!(store.numbers(&globex, None, 10).await.unwrap().is_empty());

    let mut changed = owner.clone();
    changed.state = NumberState::Quarantined {
        until: owner.created_at + Duration::days(90),
    };
    changed.reason = Some("retired".into());
    changed.version += 1;
    store.update_number(&changed).await.unwrap();
    let stale = store.update_number(&changed).await;
    assert!(matches!(stale, Err(NumberWriteError::Changed)), "{stale:?}");
    assert_eq!(
        store.number(&acme, &phone(P1)).await.unwrap(),
        Some(changed)
    );
}

/// The number is picked where both parties are free, the pair's number preferred; the
/// conflicts name the assignment in the way; ends and reads are the tenant's own.
pub async fn assignments_pick_a_free_number<S: RelayStore>(store: &S) {
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    for n in [P1, P2] {
        store
            .add_number(&number(&acme, n, NumberRole::Pool))
            .await
            .unwrap();
    }
    let ann_bob = store
        .create_assignment(draft(&acme, ANN, BOB, 3))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ann_bob.number, phone(P1));
    let ann_cat = store
        .create_assignment(draft(&acme, ANN, CAT, 1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ann_cat.number, phone(P2), "Ann has Bob on P1");
    let again = store
        .create_assignment(draft(&acme, ANN, BOB, 1))
        .await
        .unwrap();
    assert_eq!(again, Err(PickError::Duplicate(ann_bob.id)));
    let full = store
        .create_assignment(draft(&acme, CAT, BOB, 1))
        .await
        .unwrap();
    assert!(matches!(full, Err(PickError::Conflict(_))), "{full:?}");
    assert_eq!(
        store
            .create_assignment(draft(&globex, ANN, BOB, 1))
            .await
            .unwrap(),
        Err(PickError::NoPoolNumber)
    );

    let of_ann = store
        .assignments_of(&acme, &phone(ANN), Utc::now())
        .await
        .unwrap();
    assert_eq!(of_ann.len(), 2);
    let on_p1 = store
        .assignments_of(&acme, &phone(P1), Utc::now())
        .await
        .unwrap();
    assert_eq!(on_p1.iter().map(|a| a.id).collect::<Vec<_>>(), [ann_bob.id]);
    assert!(
        !store.is_participant(&acme, &phone(P1)).await.unwrap(),
        "a pool number"
    );
    assert!(store.is_participant(&acme, &phone(BOB)).await.unwrap());
    assert!(!store.is_participant(&globex, &phone(BOB)).await.unwrap());
    assert_eq!(
        store.assignment(&acme, ann_bob.id).await.unwrap(),
        Some(ann_bob.clone())
    );
    assert_eq!(store.assignment(&globex, ann_bob.id).await.unwrap(), None);
    let listed = store.assignments(&acme, None, 10).await.unwrap();
    assert_eq!(
        listed.iter().map(|a| a.id).collect::<Vec<_>>(),
        [ann_cat.id, ann_bob.id]
    );

    // Ended (and its grace over), Ann and Bob are free; their next assignment takes P1 again
    // though P1 and P2 are both free.
    let ended_at = ann_bob.starts_at - Duration::hours(3);
    let ended = store
        .end_assignment(&acme, ann_bob.id, ended_at, false)
        .await
        .unwrap()
        .unwrap();
    assert!(ended.end() < Utc::now());
    assert_eq!(
        store
            .end_assignment(&globex, ann_bob.id, ended_at, true)
            .await
            .unwrap(),
        None
    );
    store
        .end_assignment(&acme, ann_cat.id, ended_at, true)
        .await
        .unwrap();
    let mut later = draft(&acme, ANN, BOB, 1);
    later.starts_at += Duration::days(1);
    later.ends_at += Duration::days(1);
    assert_eq!(
        store
            .create_assignment(later)
            .await
            .unwrap()
            .unwrap()
            .number,
        phone(P1)
    );
}

/// Two creations for one client racing for the last free number: one gets it.
pub async fn racing_assignments_do_not_share_a_number<S: RelayStore>(store: &S) {
    let acme = tenant("acme");
    store
        .add_number(&number(&acme, P1, NumberRole::Pool))
        .await
        .unwrap();
    let (a, b) = tokio::join!(
        store.create_assignment(draft(&acme, ANN, BOB, 1)),
        store.create_assignment(draft(&acme, ANN, CAT, 1)),
    );
    let won = [a.unwrap(), b.unwrap()]
        .into_iter()
        .filter(Result::is_ok)
        .count();
    assert_eq!(won, 1, "exactly one takes P1");
}

impl TenantNumber {
    fn with_created(mut self, at: chrono::DateTime<Utc>) -> TenantNumber {
        self.created_at = at;
        self
    }
}

/// Relay settings are the tenant's; another tenant keeps the defaults.
pub async fn relay_settings_are_kept_per_tenant<S: super::RuleStore>(store: &S) {
    use crate::domain::relay::settings::RelaySettings;
    use crate::domain::relay::sharing::{SharingAction, SharingPolicy};
    let (acme, other) = (tenant("acme"), tenant("other"));
    assert_eq!(
        store.relay_settings(&acme).await.unwrap(),
        RelaySettings::default()
    );
    let settings = RelaySettings {
        cool_down_days: 30,
        sharing: SharingPolicy {
            client: SharingAction::Flag,
            worker: SharingAction::Block,
        },
        ..RelaySettings::default()
    };
    store.put_relay_settings(&acme, &settings).await.unwrap();
    assert_eq!(store.relay_settings(&acme).await.unwrap(), settings);
    assert_eq!(
        store.relay_settings(&other).await.unwrap(),
        RelaySettings::default()
    );
    assert_eq!(
        store.thread_policy(&acme).await.unwrap(),
        Default::default(),
        "kept apart from the thread policy"
    );
}
