//! The tenants' thread policies, read through a short cache: every inbound message and every
//! send to a known contact needs its tenant's, and policies change rarely. A change made here
//! applies at once in this process, and within [`POLICY_TTL`] in the others (the other Lambda
//! functions, on AWS).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::Herald;
use crate::domain::thread::{sender_identity, ThreadId};
use crate::domain::thread_policy::ThreadPolicy;
use crate::domain::{Channel, TenantId};
use crate::ports::StoreError;

/// How long a policy read is used before it is read again.
pub const POLICY_TTL: Duration = Duration::from_secs(30);
/// The most tenants' policies kept; past it the cache starts again (a bound, not an LRU).
const MAX_CACHED: usize = 10_000;

#[derive(Default)]
pub(crate) struct PolicyCache(parking_lot::Mutex<HashMap<TenantId, (Instant, ThreadPolicy)>>);

impl PolicyCache {
    fn get(&self, tenant: &TenantId) -> Option<ThreadPolicy> {
        let cache = self.0.lock();
        let (read_at, policy) = cache.get(tenant)?;
        (read_at.elapsed() < POLICY_TTL).then(|| policy.clone())
    }

    fn put(&self, tenant: &TenantId, policy: ThreadPolicy) {
        let mut cache = self.0.lock();
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(tenant.clone(), (Instant::now(), policy));
    }
}

impl Herald {
    /// How the tenant's messages are threaded.
    pub async fn thread_policy(&self, tenant: &TenantId) -> Result<ThreadPolicy, StoreError> {
        if let Some(p) = self.thread_policies.get(tenant) {
            return Ok(p);
        }
        let policy = self.rules.thread_policy(tenant).await?;
        self.thread_policies.put(tenant, policy.clone());
        Ok(policy)
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
