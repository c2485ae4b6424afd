//! A tenant's settings on DynamoDB (inbound rules, thread policy, relay settings): an item
//! each in the tenant's partition of the contacts table (`sk` `rules#inbound`,
//! `rules#threads`, `rules#relay`, `rules#quiet_hours`, `rules#reputation`, outside every range the contacts and threads read), as
//! JSON. The inbound pipeline reads them beside the threads it changes.

use async_trait::async_trait;

use super::item::{ms, n, opt_s, s};
use super::{unavailable, DynamoStore};
use crate::domain::deliverability::quiet_hours::QuietHours;
use crate::domain::deliverability::reputation::ReputationState;
use crate::domain::relay::settings::RelaySettings;
use crate::domain::rules::RuleSet;
use crate::domain::thread_policy::ThreadPolicy;
use crate::domain::TenantId;
use crate::ports::{RuleStore, StoreError};

/// A settings item: its sort key, and the attribute its JSON is in.
type Setting = (&'static str, &'static str);
const INBOUND_RULES: Setting = ("rules#inbound", "rules");
const THREAD_POLICY: Setting = ("rules#threads", "policy");
const RELAY_SETTINGS: Setting = ("rules#relay", "policy");
const QUIET_HOURS: Setting = ("rules#quiet_hours", "policy");
const REPUTATION: Setting = ("rules#reputation", "policy");

#[async_trait]
impl RuleStore for DynamoStore {
    async fn inbound_rules(&self, tenant: &TenantId) -> Result<RuleSet, StoreError> {
        self.setting(tenant, INBOUND_RULES).await
    }

    /// A whole-item put: rules are replaced, never merged.
    async fn put_inbound_rules(
        &self,
        tenant: &TenantId,
        rules: &RuleSet,
    ) -> Result<(), StoreError> {
        self.put_setting(tenant, INBOUND_RULES, rules).await
    }

    async fn thread_policy(&self, tenant: &TenantId) -> Result<ThreadPolicy, StoreError> {
        self.setting(tenant, THREAD_POLICY).await
    }

    async fn put_thread_policy(
        &self,
        tenant: &TenantId,
        policy: &ThreadPolicy,
    ) -> Result<(), StoreError> {
        self.put_setting(tenant, THREAD_POLICY, policy).await
    }

    async fn relay_settings(&self, tenant: &TenantId) -> Result<RelaySettings, StoreError> {
        self.setting(tenant, RELAY_SETTINGS).await
    }

    async fn put_relay_settings(
        &self,
        tenant: &TenantId,
        settings: &RelaySettings,
    ) -> Result<(), StoreError> {
        self.put_setting(tenant, RELAY_SETTINGS, settings).await
    }

    /// Read on every send (through a 30 s cache): an eventually consistent read, half the
    /// units of a consistent one.
    async fn quiet_hours(&self, tenant: &TenantId) -> Result<QuietHours, StoreError> {
        self.setting_read(tenant, QUIET_HOURS, false).await
    }

    async fn put_quiet_hours(&self, tenant: &TenantId, q: &QuietHours) -> Result<(), StoreError> {
        self.put_setting(tenant, QUIET_HOURS, q).await
    }

    /// Consistent: judgements, resumes and settings read it to write it back (the bulk
    /// hand-offs read it through a 30 s cache).
    async fn reputation(&self, tenant: &TenantId) -> Result<ReputationState, StoreError> {
        self.setting(tenant, REPUTATION).await
    }

    /// The revision is an attribute of its own too, for the put's condition.
    async fn put_reputation(
        &self,
        tenant: &TenantId,
        state: &ReputationState,
    ) -> Result<bool, StoreError> {
        let (read, next) = (state.revision, state.next_revision());
        let raw = serde_json::to_string(&next).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        // An item saved before revisions has none: it is revision 0.
        let condition = match read {
            0 => "attribute_not_exists(revision) OR revision = :read",
            _ => "revision = :read",
        };
        let (sk, attr) = REPUTATION;
        let result = self
            .client
            .put_item()
            .table_name(self.contacts_table()?)
            .item("tenant", s(tenant.as_str()))
            .item("sk", s(sk))
            .item(attr, s(raw))
            .item("revision", n(next.revision))
            .item("updated_at", n(ms(chrono::Utc::now())))
            .condition_expression(condition)
            .expression_attribute_values(":read", n(read))
            .send()
            .await;
        super::applied(result, "PutItem")
    }
}

impl DynamoStore {
    /// One of the tenant's settings items, or the document's default.
    async fn setting<T>(&self, tenant: &TenantId, setting: Setting) -> Result<T, StoreError>
    where
        T: serde::de::DeserializeOwned + Default,
    {
        self.setting_read(tenant, setting, true).await
    }

    async fn setting_read<T>(
        &self,
        tenant: &TenantId,
        (sk, attr): Setting,
        consistent: bool,
    ) -> Result<T, StoreError>
    where
        T: serde::de::DeserializeOwned + Default,
    {
        let item = self
            .get_contact_item_read(tenant, sk.to_owned(), consistent)
            .await?;
        match item.as_ref().and_then(|i| opt_s(i, attr)) {
            None => Ok(T::default()),
            Some(raw) => {
                serde_json::from_str(raw).map_err(|e| StoreError::Corrupt(format!("{sk}: {e}")))
            }
        }
    }

    /// Replaces one of the tenant's settings items: its JSON in `attr`.
    async fn put_setting<T: serde::Serialize + Sync>(
        &self,
        tenant: &TenantId,
        (sk, attr): Setting,
        document: &T,
    ) -> Result<(), StoreError> {
        let raw =
            serde_json::to_string(document).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.client
            .put_item()
            .table_name(self.contacts_table()?)
            .item("tenant", s(tenant.as_str()))
            .item("sk", s(sk))
            .item(attr, s(raw))
            .item("updated_at", n(ms(chrono::Utc::now())))
            .send()
            .await
            .map_err(|e| unavailable("PutItem", e))?;
        Ok(())
    }
}
