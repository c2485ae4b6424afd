//! Quiet hours at accept: a send that would reach its recipient outside the tenant's window is
//! stored `deferred` until the window opens, with why and until when in its first event.

use chrono::{DateTime, Utc};

use super::Herald;
use crate::domain::deliverability::quiet_hours::{QuietHours, SendFacts};
use crate::domain::thread::sender_identity;
use crate::domain::{
    BulkJobRecipient, Channel, ContactFields, Envelope, MessageStatus, NewMessage, TenantId,
};
use crate::ports::StoreError;

impl Herald {
    /// The tenant's quiet hours, read through the settings cache.
    pub async fn quiet_hours(&self, tenant: &TenantId) -> Result<QuietHours, StoreError> {
        self.quiet_hours
            .read_through(tenant, self.rules.quiet_hours(tenant))
            .await
    }

    /// Holds a single send outside its window (`deferred` until it opens); when it goes. The
    /// zone is the send's `recipient_timezone`, else its contact's, else its number's.
    pub(super) async fn hold_single(
        &self,
        tenant: &TenantId,
        m: &mut NewMessage,
        mut zone: Option<chrono_tz::Tz>,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        if m.status != MessageStatus::Queued {
            return Ok(None);
        }
        let q = self.quiet_hours(tenant).await?;
        if !q.applies(m.channel, m.priority, m.message_type.as_deref()) {
            return Ok(None);
        }
        if zone.is_none() {
            let contact = self.recipient_contact(tenant, m.channel, &m.to).await?;
            zone = contact.and_then(|f| f.timezone());
        }
        let facts = SendFacts {
            channel: m.channel,
            priority: m.priority,
            message_type: m.message_type.as_deref(),
            to: &m.to,
            recipient_timezone: zone,
            seed: m.id.as_uuid().as_u128(),
        };
        let now = Utc::now();
        let Some(deferral) = q.defer(facts, m.send_at.map_or(now, |at| at.max(now))) else {
            return Ok(None);
        };
        m.status = MessageStatus::Deferred;
        m.send_at = Some(deferral.not_before);
        m.note = Some(deferral.detail());
        Ok(Some(deferral.not_before))
    }

    /// Holds each bulk recipient outside its window; how many were held.
    pub(super) async fn hold_bulk(
        &self,
        tenant: &TenantId,
        env: &Envelope,
        zone: Option<chrono_tz::Tz>,
        recipients: &mut [BulkJobRecipient],
    ) -> Result<usize, StoreError> {
        let q = self.quiet_hours(tenant).await?;
        if !q.applies(env.channel, env.priority, env.message_type.as_deref()) {
            return Ok(0);
        }
        let now = Utc::now();
        let mut held = 0;
        for r in recipients.iter_mut().filter(|r| r.suppressed.is_none()) {
            let facts = SendFacts {
                channel: env.channel,
                priority: env.priority,
                message_type: env.message_type.as_deref(),
                to: &r.to,
                recipient_timezone: zone,
                seed: r.id.as_uuid().as_u128(),
            };
            if let Some(d) = q.defer(facts, env.send_at.map_or(now, |at| at.max(now))) {
                r.deferred = Some((d.not_before, d.detail()));
                held += 1;
            }
        }
        Ok(held)
    }

    /// What the platform set on the contact that has this address, if one does.
    pub(super) async fn recipient_contact(
        &self,
        tenant: &TenantId,
        channel: Channel,
        to: &str,
    ) -> Result<Option<ContactFields>, StoreError> {
        let Some(identity) = sender_identity(channel, to) else {
            return Ok(None);
        };
        let Some(id) = self.contacts.contact_by_identity(tenant, &identity).await? else {
            return Ok(None);
        };
        Ok(self.contacts.contact(tenant, id).await?.map(|c| c.fields))
    }

    /// Replaces the tenant's quiet hours; sends accepted from now on follow them.
    pub async fn set_quiet_hours(
        &self,
        tenant: &TenantId,
        q: QuietHours,
    ) -> Result<(), StoreError> {
        self.rules.put_quiet_hours(tenant, &q).await?;
        self.quiet_hours.put(tenant, q);
        Ok(())
    }
}
