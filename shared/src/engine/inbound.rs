//! Messages received from recipients: stored once per provider message, and the carrier
//! keywords acted on (STOP opts the number out of the tenant's SMS, START back in, HELP asks
//! for the tenant's help text).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use tracing::{info, warn};

use super::tracker::{being_applied, EVENT_LEASE};
use super::Herald;
use crate::domain::audit::AuditAction;
use crate::domain::inbound_email::{herald_message, local_part};
use crate::domain::suppression::{canonical_address, Reason, Scope, Suppression};
use crate::domain::thread::ThreadId;
use crate::domain::{Channel, InboundMessage, Keyword, MessageId};
use crate::gateway::ses_events::SES;
use crate::ports::{EventClaim, StoreError};

/// How long the mark of an applied keyword is kept: as long as the opt-out it concerns, and
/// opt-outs never expire, so for good (a century). A replayed START older than any event-id
/// retention must still not lift a later STOP.
pub(crate) const KEYWORD_MARK_KEEP: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// What a tenant answers to the keywords on its numbers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeywordReplies {
    #[serde(default = "default_stop")]
    pub stop: String,
    #[serde(default = "default_start")]
    pub start: String,
    #[serde(default = "default_help")]
    pub help: String,
}

fn default_stop() -> String {
    "You are unsubscribed and will receive no more messages. Reply START to resubscribe.".into()
}

fn default_start() -> String {
    "You are subscribed again. Reply STOP to unsubscribe.".into()
}

fn default_help() -> String {
    "Reply STOP to unsubscribe, START to resubscribe.".into()
}

impl Default for KeywordReplies {
    fn default() -> Self {
        KeywordReplies {
            stop: default_stop(),
            start: default_start(),
            help: default_help(),
        }
    }
}

impl KeywordReplies {
    pub fn for_keyword(&self, keyword: Keyword) -> &str {
        match keyword {
            Keyword::Stop => &self.stop,
            Keyword::Start => &self.start,
            Keyword::Help => &self.help,
        }
    }
}

/// What receiving an inbound message came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The reply to send back, for a keyword on an SMS number.
    pub reply: Option<String>,
    /// The message was stored before: a provider's retry, or a replayed webhook.
    pub repeat: bool,
}

impl Herald {
    /// Stores an inbound message and, the first time only, acts on its keyword. Returns the
    /// reply to send back, if the message is a keyword on an SMS number (a provider's retry gets
    /// the same reply: it only sends the one it receives).
    pub async fn receive(
        &self,
        message: InboundMessage,
        replies: &KeywordReplies,
    ) -> Result<Received, StoreError> {
        let keyword = carrier_keyword(&message);
        let policy = self.thread_policy(&message.tenant).await?;
        let repeat = !self.inbound.record_inbound(&message, &policy).await?;
        if !repeat {
            // Its workers announce `inbound.received` (stored, it is never lost).
            self.announce_inbound(&message).await;
        }
        let Some(keyword) = keyword else {
            return Ok(Received {
                reply: None,
                repeat,
            });
        };
        // The keyword's effect is applied once per provider message (so a replayed START
        // never lifts a later STOP). Its claim is released again if it fails, and runs out if
        // this process dies first, so the provider's retry applies it then: a stored message
        // alone is not proof that its STOP took effect.
        let key = format!("{}:{}", message.gateway, message.provider_message_id);
        match self
            .events
            .claim_event("keyword", &key, EVENT_LEASE)
            .await?
        {
            // A keyword's claim is never given up as parked: `Parked` is a first claim too.
            EventClaim::First(token) | EventClaim::Parked(token) => {
                let applied = async {
                    let at = self.keyword_time(&message, repeat).await?;
                    self.apply_keyword(&message, keyword, at).await
                };
                if let Err(e) = applied.await {
                    self.events.release_event("keyword", &key, token).await?;
                    return Err(e);
                }
                // Unmarked, a replayed START could lift a later STOP: the provider retries
                // (the same keyword applied again changes nothing) until it is marked.
                let marking = self
                    .events
                    .event_applied("keyword", &key, token, KEYWORD_MARK_KEEP);
                marking.await?;
            }
            EventClaim::Applied => {}
            EventClaim::Applying => return Err(being_applied("keyword", &key)),
        }
        let reply = self.keyword_reply(&message, keyword, replies).await?;
        Ok(Received { reply, repeat })
    }

    /// Only an SMS webhook answers with a message (TwiML); the other channels' keywords take
    /// effect without one. A START that a later STOP overrides gets none: the sender's last
    /// word was STOP, and "subscribed again" would say otherwise.
    async fn keyword_reply(
        &self,
        message: &InboundMessage,
        keyword: Keyword,
        replies: &KeywordReplies,
    ) -> Result<Option<String>, StoreError> {
        if message.channel != Channel::Sms {
            return Ok(None);
        }
        if keyword == Keyword::Start && self.opted_out(message).await?.is_some() {
            return Ok(None);
        }
        Ok(Some(replies.for_keyword(keyword).to_owned()))
    }

    /// The sender's opt-out on the message's channel, if it has one.
    async fn opted_out(&self, message: &InboundMessage) -> Result<Option<Suppression>, StoreError> {
        let Some(opt_out) = opt_out_reason(message.channel) else {
            return Ok(None);
        };
        let address = canonical_address(message.channel, &message.from);
        let entry = self.sender_entry(message, &address).await?;
        Ok(entry.filter(|e| e.reason == opt_out))
    }

    /// The sender's entry on the tenant's list for the message's channel, whatever its reason.
    async fn sender_entry(
        &self,
        message: &InboundMessage,
        address: &str,
    ) -> Result<Option<Suppression>, StoreError> {
        let scope = Scope::Tenant(message.tenant.clone());
        self.suppressions
            .get_suppression(&scope, message.channel, address)
            .await
    }

    /// Stores an inbound email: in the thread of the message it replies to, when that is one
    /// of the tenant's, else by its sender as every inbound message is.
    pub async fn receive_email(&self, mut message: InboundMessage) -> Result<Received, StoreError> {
        message.thread = self.replied_thread(&message).await?;
        self.receive(message, &KeywordReplies::default()).await
    }

    /// The tenant's thread of the first message a reply names that was sent to its sender
    /// (so a forwarded copy or a stranger who saw the id cannot take the thread's reply
    /// route): our own Message-IDs carry the message's id; SES's carry its id for the
    /// message. None for mail that failed DMARC.
    async fn replied_thread(&self, m: &InboundMessage) -> Result<Option<ThreadId>, StoreError> {
        let Some(email) = m
            .email
            .as_ref()
            .filter(|e| !e.verdicts.as_ref().is_some_and(|v| v.forged()))
        else {
            return Ok(None);
        };
        let mut named: Vec<MessageId> = Vec::new();
        let mut by_ses = Vec::new();
        for id in email.replied_ids() {
            match herald_message(id) {
                Some(ours) => named.push(ours),
                None => by_ses.push((SES.to_owned(), local_part(id).to_owned())),
            }
        }
        if !by_ses.is_empty() {
            named.extend(
                self.store
                    .find_by_provider_ids(by_ses)
                    .await?
                    .into_iter()
                    .flatten(),
            );
        }
        for message in named {
            let sent_to_sender = self.store.locate(message).await?.is_some_and(|sent| {
                sent.tenant == m.tenant
                    && sent.channel == Channel::Email
                    && sent.to.trim().eq_ignore_ascii_case(m.from.trim())
            });
            if !sent_to_sender {
                continue;
            }
            if let Some(thread) = self.threads.thread_of_message(&m.tenant, message).await? {
                return Ok(Some(thread));
            }
        }
        Ok(None)
    }

    /// When a keyword was sent, as far as Herald knows: when its message was first stored. A
    /// retry of a keyword whose effect a crash left unmarked (a provider may retry for days)
    /// takes effect as of then, so it cannot undo a later keyword of the same sender.
    async fn keyword_time(
        &self,
        message: &InboundMessage,
        repeat: bool,
    ) -> Result<DateTime<Utc>, StoreError> {
        if !repeat {
            return Ok(message.received_at);
        }
        let first = self
            .inbound
            .first_received_at(&message.gateway, &message.provider_message_id)
            .await?;
        if first.is_none() {
            // Stored as a repeat a moment ago, and gone since (its retention ran out).
            warn!(tenant = %message.tenant, "a retried keyword's first message is gone; it takes effect as of now");
        }
        Ok(first.unwrap_or(message.received_at))
    }

    /// Applies a keyword sent `at`: STOP opts the sender out as of then, and START lifts only
    /// an opt-out made no later than it. An entry for another reason (a complaint, a manual
    /// block) stays as it is, so a START cannot lift it.
    async fn apply_keyword(
        &self,
        message: &InboundMessage,
        keyword: Keyword,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let Some(opt_out) = opt_out_reason(message.channel) else {
            return Ok(());
        };
        let address = canonical_address(message.channel, &message.from);
        let existing = self.sender_entry(message, &address).await?;
        let ours = existing.as_ref().filter(|e| e.reason == opt_out);
        let before = |e: &Suppression| e.created_at.timestamp_millis() <= at.timestamp_millis();
        match keyword {
            // A STOP dates an opt-out made before it again, so that a START sent between the
            // two and retried later cannot lift it.
            Keyword::Stop if existing.is_none() || ours.is_some_and(|e| e.created_at < at) => {
                let entry = Suppression {
                    scope: Scope::Tenant(message.tenant.clone()),
                    channel: message.channel,
                    address,
                    reason: opt_out,
                    source: Some(format!(
                        "{}:{}",
                        message.gateway, message.provider_message_id
                    )),
                    created_at: at,
                    expires_at: None,
                };
                self.opt_out(message, entry, existing.is_none()).await
            }
            Keyword::Start => match ours {
                Some(entry) if before(entry) => self.opt_in(message, entry.clone(), at).await,
                _ => Ok(()),
            },
            _ => Ok(()),
        }
    }

    /// A STOP: stores its opt-out, `new` or dated again.
    async fn opt_out(
        &self,
        message: &InboundMessage,
        entry: Suppression,
        new: bool,
    ) -> Result<(), StoreError> {
        self.suppressions
            .put_suppressions(vec![entry.clone()])
            .await?;
        if new {
            let channel = entry.channel.as_str();
            info!(tenant = %message.tenant, channel, "opt-out by keyword");
            let action = AuditAction::SuppressionAdded;
            self.audit_suppression(&message.tenant, action, &entry)
                .await;
        }
        Ok(())
    }

    /// A START: lifts `entry`, the sender's opt-out, unless a STOP dated it after `at` meanwhile.
    async fn opt_in(
        &self,
        message: &InboundMessage,
        entry: Suppression,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let channel = message.channel;
        let lifted = self
            .suppressions
            .lift_suppression(&entry.scope, channel, &entry.address, entry.reason, at)
            .await?;
        if lifted {
            info!(tenant = %message.tenant, channel = channel.as_str(), "opt-in by keyword");
            let action = AuditAction::SuppressionRemoved;
            self.audit_suppression(&message.tenant, action, &entry)
                .await;
        }
        Ok(())
    }
}

/// The carrier keyword a message is, on a channel where keywords act (and no rule sees it).
pub(crate) fn carrier_keyword(m: &InboundMessage) -> Option<Keyword> {
    m.keyword.filter(|_| opt_out_reason(m.channel).is_some())
}

/// What a STOP records on a channel that has carrier-style keywords: SMS its own opt-out,
/// WhatsApp and Telegram an unsubscribe (nothing else puts one on those channels, so START
/// lifts only what a keyword set). Email and push have none.
fn opt_out_reason(channel: Channel) -> Option<Reason> {
    match channel {
        Channel::Sms => Some(Reason::SmsOptOut),
        Channel::Whatsapp | Channel::Telegram => Some(Reason::Unsubscribe),
        Channel::Email | Channel::Push => None,
    }
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    use super::{KeywordReplies, EVENT_LEASE};
    use crate::domain::suppression::Scope;
    use crate::domain::Channel;
    use crate::embedded::{Embedded, EmbeddedConfig};
    use crate::engine::maintenance::purge_once;
    use crate::ports::contract::{inbound, tenant};
    use crate::ports::{EventClaim, StoreError};

    /// An embedded Herald without lane workers, and its data directory.
    async fn started() -> (tempfile::TempDir, Embedded) {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = EmbeddedConfig::new(dir.path());
        cfg.run_workers = false;
        (dir, Embedded::start(cfg).await.unwrap())
    }

    #[tokio::test]
    async fn a_replayed_start_never_lifts_a_later_stop() {
        let (_dir, embedded) = started().await;
        let herald = embedded.herald.clone();
        let acme = tenant("acme");
        let replies = KeywordReplies::default();
        let start = inbound(&acme, "SM-start", "START");
        for m in [
            inbound(&acme, "SM-stop-1", "STOP"),
            start.clone(),
            inbound(&acme, "SM-stop-2", "STOP"),
        ] {
            herald.receive(m, &replies).await.unwrap();
        }
        let from = start.from.clone();
        let opted_out = || async {
            herald
                .suppressions
                .get_suppression(&Scope::Tenant(acme.clone()), Channel::Sms, &from)
                .await
                .unwrap()
                .is_some()
        };
        assert!(opted_out().await);
        // A year on, past any event-id retention, and after the retention purge ran.
        embedded
            .backend
            .age_seen_events(Duration::from_secs(365 * 24 * 3600))
            .await
            .unwrap();
        purge_once(&herald).await;
        assert!(herald.receive(start, &replies).await.unwrap().repeat);
        assert!(opted_out().await, "the replayed START changed nothing");
        embedded.shutdown().await;
    }

    /// STOP, then a START whose try died (after applying it, or before), then a STOP, then the
    /// provider's retry of the START: it takes effect as of the START's first arrival, before
    /// the second STOP, so that STOP holds (the sender's last word), and the retry gets no
    /// "subscribed again" reply.
    async fn a_start_retried_after_a_later_stop(applied_before_dying: bool) {
        let (_dir, embedded) = started().await;
        let herald = embedded.herald.clone();
        let acme = tenant("acme");
        let replies = KeywordReplies::default();
        let sent = |provider_id: &str, body: &str, seconds_ago: i64| {
            let mut m = inbound(&acme, provider_id, body);
            m.received_at -= chrono::Duration::seconds(seconds_ago);
            m
        };
        herald
            .receive(sent("SM-stop-1", "STOP", 2), &replies)
            .await
            .unwrap();
        let start = sent("SM-start", "START", 1);
        let scope = Scope::Tenant(acme.clone());
        // The try that died: the START stored and claimed, never marked.
        let policy = Default::default();
        assert!(herald
            .inbound
            .record_inbound(&start, &policy)
            .await
            .unwrap());
        let key = format!("{}:{}", start.gateway, start.provider_message_id);
        let claimed = herald.events.claim_event("keyword", &key, EVENT_LEASE);
        assert!(matches!(claimed.await.unwrap(), EventClaim::First(_)));
        if applied_before_dying {
            let lifted = herald
                .suppressions
                .delete_suppression(&scope, Channel::Sms, &start.from);
            assert!(lifted.await.unwrap());
        }
        herald
            .receive(sent("SM-stop-2", "STOP", 0), &replies)
            .await
            .unwrap();
        let lease_over = EVENT_LEASE + Duration::from_secs(1);
        embedded.backend.age_seen_events(lease_over).await.unwrap();

        // The provider's retry, built by the webhook as it arrives: received now.
        let retry = inbound(&acme, "SM-start", "START");
        let received = herald.receive(retry, &replies).await.unwrap();
        assert!(received.repeat);
        assert_eq!(
            received.reply, None,
            "no \"subscribed again\" after the STOP"
        );
        let entry = herald
            .suppressions
            .get_suppression(&scope, Channel::Sms, &start.from)
            .await
            .unwrap();
        assert!(entry.is_some(), "the later STOP still holds");
        embedded.shutdown().await;
    }

    #[tokio::test]
    async fn a_start_applied_then_retried_after_a_later_stop_does_not_lift_it() {
        a_start_retried_after_a_later_stop(true).await;
    }

    #[tokio::test]
    async fn a_start_retried_after_a_later_stop_over_an_older_one_does_not_lift_it() {
        a_start_retried_after_a_later_stop(false).await;
    }

    /// STOP, then START: lifted, and answered.
    #[tokio::test]
    async fn a_start_after_a_stop_lifts_it_and_is_answered() {
        let (_dir, embedded) = started().await;
        let herald = embedded.herald.clone();
        let acme = tenant("acme");
        let replies = KeywordReplies::default();
        let mut stop = inbound(&acme, "SM-stop", "STOP");
        stop.received_at -= chrono::Duration::seconds(1);
        herald.receive(stop.clone(), &replies).await.unwrap();
        let start = herald.receive(inbound(&acme, "SM-start", "START"), &replies);
        assert_eq!(
            start.await.unwrap().reply.as_deref(),
            Some(replies.start.as_str())
        );
        let scope = Scope::Tenant(acme.clone());
        let entry = herald
            .suppressions
            .get_suppression(&scope, Channel::Sms, &stop.from);
        assert!(entry.await.unwrap().is_none());
        embedded.shutdown().await;
    }

    /// A try that died after claiming a STOP (a crash, a timeout) does not make its retries
    /// repeats: one within the claim's lease is asked to come back, one after it applies it.
    #[tokio::test]
    async fn a_stop_whose_first_try_died_is_applied_by_a_retry() {
        let (_dir, embedded) = started().await;
        let herald = embedded.herald.clone();
        let acme = tenant("acme");
        let replies = KeywordReplies::default();
        let stop = inbound(&acme, "SM-stop", "STOP");
        let key = format!("{}:{}", stop.gateway, stop.provider_message_id);
        let claimed = herald.events.claim_event("keyword", &key, EVENT_LEASE);
        let died = claimed.await.unwrap();
        assert!(matches!(died, EventClaim::First(_)), "the try that died");
        let opted_out = || async {
            let scope = Scope::Tenant(acme.clone());
            let found = herald
                .suppressions
                .get_suppression(&scope, Channel::Sms, &stop.from);
            found.await.unwrap().is_some()
        };

        let early = herald.receive(stop.clone(), &replies).await;
        let early = early.unwrap_err();
        assert!(
            matches!(&early, StoreError::Busy(what) if what.contains("being applied")),
            "within the lease: come back later: {early}"
        );
        assert!(!opted_out().await);
        let lease_over = EVENT_LEASE + Duration::from_secs(1);
        embedded.backend.age_seen_events(lease_over).await.unwrap();
        let retried = herald.receive(stop.clone(), &replies).await.unwrap();
        assert!(retried.repeat, "stored by the early retry");
        assert!(opted_out().await, "the retry applied the STOP");
        embedded.shutdown().await;
    }
}
