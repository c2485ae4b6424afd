//! Replies in a thread: where a reply on a channel goes and whom it comes from (for the API's
//! `POST /v1/threads/{id}/messages` and the console's reply box), and the console's short text
//! reply, sent through the normal lanes at P1 and added to the thread's timeline.

use chrono::Utc;

use super::accept::{AcceptError, IdempotencyInput, SendDraft};
use super::Herald;
use crate::domain::compose::ContentSource;
use crate::domain::contact::IdentityKind;
use crate::domain::thread::{Direction, Thread, ThreadEntry};
use crate::domain::{Channel, Content, MessageId};
use crate::ports::StoreError;

/// Why a reply was not sent.
#[derive(Debug, thiserror::Error)]
pub enum ReplyError {
    #[error("the thread's contact has no {} identity", .0.as_str())]
    NoIdentity(Channel),
    #[error(transparent)]
    Accept(#[from] AcceptError),
}

impl From<StoreError> for ReplyError {
    fn from(e: StoreError) -> ReplyError {
        ReplyError::Accept(AcceptError::Store(e))
    }
}

impl Herald {
    /// Where a reply on `channel` goes: the address the contact last wrote from on it, else
    /// the contact's identity of that kind; `None` when it has none.
    pub async fn reply_address(
        &self,
        t: &Thread,
        channel: Channel,
    ) -> Result<Option<String>, StoreError> {
        if let Some(r) = t.reply.as_ref().filter(|r| r.channel == channel) {
            return Ok(Some(r.to.clone()));
        }
        let Some(kind) = IdentityKind::for_channel(channel) else {
            return Ok(None);
        };
        let contact = self.contacts.contact(&t.tenant, t.contact).await?;
        Ok(contact
            .and_then(|c| c.identities.into_iter().find(|i| i.identity_kind() == kind))
            .map(|i| i.value().to_owned()))
    }

    /// The address the contact last wrote to, if the reply goes on that channel and the tenant
    /// may send as it; otherwise `None` (the gateway's sender).
    pub async fn reply_sender(
        &self,
        t: &Thread,
        channel: Channel,
    ) -> Result<Option<String>, StoreError> {
        let Some(r) = t.reply.as_ref().filter(|r| r.channel == channel) else {
            return Ok(None);
        };
        let allowed = self.may_send_as(&t.tenant, channel, &r.from).await?;
        Ok(allowed.then(|| r.from.clone()))
    }

    /// Sends a typed reply (inline text, P1, not held by quiet hours: the contact wrote first)
    /// and adds it to the thread's timeline. `idempotency` makes a form posted twice send once.
    pub async fn reply_with_text(
        &self,
        t: &Thread,
        channel: Channel,
        (subject, body): (Option<String>, String),
        idempotency: IdempotencyInput,
    ) -> Result<MessageId, ReplyError> {
        let to = self
            .reply_address(t, channel)
            .await?
            .ok_or(ReplyError::NoIdentity(channel))?;
        let recipient = channel
            .parse_recipient(&to)
            .map_err(|_| ReplyError::NoIdentity(channel))?;
        let from = self.reply_sender(t, channel).await?;
        let content = ContentSource::Inline(Content {
            subject,
            body: Some(body.clone()),
            html: None,
        });
        let source = ("thread", t.id.to_string());
        let correlation_id = idempotency.key.clone();
        let mut draft =
            SendDraft::conversational((channel, recipient), content, source, correlation_id);
        draft.envelope.from = from.clone();
        let accepted = self.send(&t.tenant, draft, Some(idempotency)).await?;
        let id = accepted
            .message_id()
            .ok_or_else(|| StoreError::Corrupt("an accepted reply has no id".into()))?;
        let from = from.unwrap_or_default();
        let entry = ThreadEntry::new(
            id,
            Direction::Outbound,
            channel,
            (from, to),
            &body,
            Utc::now(),
        );
        if let Err(e) = self.threads.record_outbound(&t.tenant, t.id, &entry).await {
            tracing::error!(error = %e, thread = %t.id, message = %id, "a reply did not join its thread");
        }
        Ok(id)
    }
}
