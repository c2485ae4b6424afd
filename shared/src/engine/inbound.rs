//! Messages received from recipients: stored once per provider message, and the carrier
//! keywords acted on (STOP opts the number out of the tenant's SMS, START back in, HELP asks
//! for the tenant's help text).

use serde::Deserialize;
use tracing::info;

use super::tracker::EVENT_ID_KEEP;
use super::Herald;
use crate::domain::suppression::{canonical_address, Reason, Scope, Suppression};
use crate::domain::{Channel, InboundMessage, Keyword};
use crate::ports::StoreError;

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

impl Herald {
    /// Stores an inbound message and, the first time only, acts on its keyword. Returns the
    /// reply to send back, if the message is a keyword on an SMS number (a provider's retry gets
    /// the same reply: it only sends the one it receives).
    pub async fn receive(
        &self,
        message: InboundMessage,
        replies: &KeywordReplies,
    ) -> Result<Option<String>, StoreError> {
        let keyword = message.keyword.filter(|_| message.channel == Channel::Sms);
        self.inbound.record_inbound(&message).await?;
        let Some(keyword) = keyword else {
            return Ok(None);
        };
        // The keyword's effect is applied once per provider message, and forgotten again if
        // it fails, so the provider's retry applies it then (a stored message alone is not
        // proof that its STOP took effect).
        let key = format!("{}:{}", message.gateway, message.provider_message_id);
        if self
            .events
            .first_seen("keyword", &key, EVENT_ID_KEEP)
            .await?
        {
            if let Err(e) = self.apply_keyword(&message, keyword).await {
                self.events.forget("keyword", &key).await?;
                return Err(e);
            }
        }
        Ok(Some(replies.for_keyword(keyword).to_owned()))
    }

    async fn apply_keyword(
        &self,
        message: &InboundMessage,
        keyword: Keyword,
    ) -> Result<(), StoreError> {
        let scope = Scope::Tenant(message.tenant.clone());
        let address = canonical_address(Channel::Sms, &message.from);
        let existing = self
            .suppressions
            .get_suppression(&scope, Channel::Sms, &address)
            .await?;
        match keyword {
            // An entry for another reason (a complaint, a manual block) stays as it is, so a
            // later START cannot lift it.
            Keyword::Stop if existing.is_none() => {
                info!(tenant = %message.tenant, "sms opt-out by keyword");
                self.suppressions
                    .put_suppressions(vec![Suppression {
                        scope,
                        channel: Channel::Sms,
                        address,
                        reason: Reason::SmsOptOut,
                        source: Some(format!(
                            "{}:{}",
                            message.gateway, message.provider_message_id
                        )),
                        created_at: message.received_at,
                        expires_at: None,
                    }])
                    .await?;
            }
            // START undoes an opt-out only.
            Keyword::Start if existing.is_some_and(|e| e.reason == Reason::SmsOptOut) => {
                info!(tenant = %message.tenant, "sms opt-in by keyword");
                self.suppressions
                    .delete_suppression(&scope, Channel::Sms, &address)
                    .await?;
            }
            _ => {}
        }
        Ok(())
    }
}
