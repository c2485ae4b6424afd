//! A notification whose events were parked and not tried after parking (the store failed
//! twice): its provider's retry releases them rather than applying them afresh, so each is
//! applied once, whichever comes first of the retry and its message's `sent`. The scenarios
//! run on each backend: the SQLite tests below, and `tests/aws_pipeline.rs` on DynamoDB.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use chrono::Utc;

use super::tracker::Notified;
use super::{Herald, Ports};
use crate::domain::{EventKind, Message, Priority, TenantId};
use crate::ports::contract::{accept, claim_now, message, sent_under, tenant};
use crate::ports::faulty::FaultyStore;
use crate::ports::{ProviderEvent, ProviderEventKind, StoreError};

const PROVIDER_ID: &str = "0100-untried";

/// A second engine over the ports of `real`, its message store failing on demand, and a
/// message claimed and not yet recorded as sent.
struct Scenario {
    herald: Herald,
    faults: Arc<FaultyStore>,
    tenant: TenantId,
    claimed: Box<Message>,
    /// The notification's id: each run its own, as the stores outlive a run on DynamoDB.
    notification: String,
}

impl Scenario {
    async fn new(real: &Herald) -> Scenario {
        let faults = Arc::new(FaultyStore::new(real.store.clone()));
        let ports = Ports {
            store: faults.clone(),
            ..real.ports()
        };
        let herald = Herald::new(ports, real.gateways.clone(), real.config.clone());
        let tenant = tenant("acme");
        let id = accept(&*herald.store, message(&tenant, Priority::P2)).await;
        let claimed = claim_now(&*herald.store, id, Priority::P2).await;
        Scenario {
            herald,
            faults,
            tenant,
            claimed,
            notification: format!("n-{id}"),
        }
    }

    /// SES's DeliveryDelay: each one applied adds a note to the timeline.
    async fn notify(&self) -> Result<Notified, StoreError> {
        let delayed = ProviderEvent {
            gateway: "ses".into(),
            provider_message_id: self.provider_id(),
            message_id: None,
            kind: ProviderEventKind::Delayed,
            at: Utc::now(),
            detail: serde_json::json!({ "why": "mailbox full" }),
        };
        let (source, id) = ("sns", &self.notification);
        self.herald
            .apply_notification(source, id, vec![delayed])
            .await
    }

    fn provider_id(&self) -> String {
        format!("{PROVIDER_ID}-{}", self.claimed.id)
    }

    /// The first delivery: the look-up finds no `sent`, so the event parks; the try after
    /// parking fails, and so does the release tried in its place.
    async fn notify_and_fail_after_parking(&self) {
        self.faults.fail_after(1, 2);
        assert!(
            self.notify().await.is_err(),
            "the provider is asked to retry"
        );
        assert_eq!(self.faults.failures_left(), 0, "both failures were met");
        let provider_id = self.provider_id();
        let parked = self.herald.events.parked("ses", &provider_id, None);
        assert!(parked.await.unwrap().mark.is_some(), "the event is parked");
    }

    /// The dispatch records the `sent` and releases what is parked for it.
    async fn record_sent(&self) {
        let sent = sent_under(&self.claimed, "ses", &self.provider_id());
        let outcomes = self.herald.store.transition(vec![sent.clone()]).await;
        let outcomes = outcomes.unwrap();
        assert!(self.herald.after_recorded(&sent, outcomes.first()).await);
    }

    async fn delay_notes(&self) -> usize {
        let got = self.herald.store.get(&self.tenant, self.claimed.id).await;
        let (_, events) = got.unwrap().unwrap();
        let delays = events
            .iter()
            .filter(|e| e.kind == EventKind::DeliveryDelayed);
        delays.count()
    }
}

/// The `sent`'s release applies the parked event; the provider's retry then applies nothing.
pub async fn a_retry_after_the_sent_released_the_parked_event_applies_nothing_again(real: &Herald) {
    let s = Scenario::new(real).await;
    s.notify_and_fail_after_parking().await;
    s.record_sent().await;
    assert_eq!(s.delay_notes().await, 1, "the sent's release applied it");

    assert_eq!(s.notify().await.unwrap(), Notified::Applied);
    assert_eq!(
        s.delay_notes().await,
        1,
        "the retry did not apply it afresh"
    );
    assert_eq!(
        s.notify().await.unwrap(),
        Notified::Repeat,
        "marked applied"
    );
    // Nothing is left parked for a later release to apply again.
    let provider_id = s.provider_id();
    assert!(s.herald.release_parked("ses", &provider_id, None).await);
    assert_eq!(s.delay_notes().await, 1);
}

/// A retry before the `sent` (one whose release fails too, then one that finds the event still
/// waiting) leaves it parked for the `sent`'s release, which applies it once.
pub async fn a_retry_before_the_sent_leaves_the_parked_event_to_it(real: &Herald) {
    let s = Scenario::new(real).await;
    s.notify_and_fail_after_parking().await;
    s.faults.fail_after(0, 1);
    assert!(s.notify().await.is_err());
    assert_eq!(s.faults.failures_left(), 0);

    assert_eq!(s.notify().await.unwrap(), Notified::Parked, "still waits");
    assert_eq!(s.delay_notes().await, 0);
    s.record_sent().await;
    assert_eq!(s.delay_notes().await, 1, "the sent's release applied it");
    assert_eq!(s.notify().await.unwrap(), Notified::Repeat);
    assert_eq!(s.delay_notes().await, 1);
}

#[cfg(all(test, feature = "sqlite"))]
mod sqlite {
    use crate::embedded::{Embedded, EmbeddedConfig};

    async fn embedded(dir: &std::path::Path) -> Embedded {
        let mut cfg = EmbeddedConfig::new(dir);
        cfg.run_workers = false;
        let embedded = Embedded::start(cfg).await.unwrap();
        // Its release would race the scenario's engine's (each process has one engine,
        // whose releases of a provider message run one at a time).
        embedded.parked_swept().await;
        embedded
    }

    #[tokio::test]
    async fn a_retry_after_the_sent_released_the_parked_event_applies_nothing_again() {
        let dir = tempfile::tempdir().unwrap();
        let embedded = embedded(dir.path()).await;
        super::a_retry_after_the_sent_released_the_parked_event_applies_nothing_again(
            &embedded.herald,
        )
        .await;
        embedded.shutdown().await;
    }

    #[tokio::test]
    async fn a_retry_before_the_sent_leaves_the_parked_event_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let embedded = embedded(dir.path()).await;
        super::a_retry_before_the_sent_leaves_the_parked_event_to_it(&embedded.herald).await;
        embedded.shutdown().await;
    }
}
