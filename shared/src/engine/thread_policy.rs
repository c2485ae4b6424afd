//! The tenants' thread policies, read through the settings cache: every inbound message and
//! every send to a known contact needs its tenant's.

use chrono::{DateTime, Utc};

use super::Herald;
use crate::domain::thread::{sender_identity, ThreadId};
use crate::domain::thread_policy::ThreadPolicy;
use crate::domain::{Channel, TenantId};
use crate::ports::StoreError;

impl Herald {
    /// How the tenant's messages are threaded.
    pub async fn thread_policy(&self, tenant: &TenantId) -> Result<ThreadPolicy, StoreError> {
        self.thread_policies
            .read_through(tenant, self.rules.thread_policy(tenant))
            .await
    }

    /// Replaces the tenant's thread policy; messages threaded from now on follow it.
    pub async fn set_thread_policy(
        &self,
        tenant: &TenantId,
        policy: ThreadPolicy,
    ) -> Result<(), StoreError> {
        self.rules.put_thread_policy(tenant, &policy).await?;
        self.thread_policies.put(tenant, policy);
        Ok(())
    }

    /// The thread a message sent to `to` on `channel` joins, when the tenant's policy lets
    /// sends join and a contact of the tenant has that address.
    pub async fn send_thread(
        &self,
        tenant: &TenantId,
        channel: Channel,
        to: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<ThreadId>, StoreError> {
        let Some(identity) = sender_identity(channel, to) else {
            return Ok(None);
        };
        let policy = self.thread_policy(tenant).await?;
        if !policy.join_sends {
            return Ok(None);
        }
        self.threads
            .thread_for_send(tenant, &identity, channel, &policy, now)
            .await
    }
}
