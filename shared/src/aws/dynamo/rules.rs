//! A tenant's inbound rules and thread policy on DynamoDB: an item each in the tenant's
//! partition of the contacts table (`sk` `rules#inbound`, `rules#threads` and `rules#relay`, outside every
//! range the contacts and threads read), as JSON in `rules` and `policy`. The inbound pipeline
//! reads them beside the threads it changes.

use async_trait::async_trait;

use super::item::{ms, n, opt_s, s};
use super::{unavailable, DynamoStore};
use crate::domain::relay::settings::RelaySettings;
use crate::domain::rules::RuleSet;
use crate::domain::thread_policy::ThreadPolicy;
use crate::domain::TenantId;
use crate::ports::{RuleStore, StoreError};

const RULES_KEY: &str = "rules#inbound";
/// The tenant's thread policy, as JSON in `policy`.
const POLICY_KEY: &str = "rules#threads";
/// The tenant's relay settings, as JSON in `policy`.
const RELAY_KEY: &str = "rules#relay";

#[async_trait]
impl RuleStore for DynamoStore {
    async fn inbound_rules(&self, tenant: &TenantId) -> Result<RuleSet, StoreError> {
        let item = self.get_contact_item(tenant, RULES_KEY.to_owned()).await?;
        match item.as_ref().and_then(|i| opt_s(i, "rules")) {
            None => Ok(RuleSet::default()),
            Some(raw) => serde_json::from_str(raw)
                .map_err(|e| StoreError::Corrupt(format!("inbound rules: {e}"))),
        }
    }

    /// A whole-item put: rules are replaced, never merged.
    async fn put_inbound_rules(
        &self,
        tenant: &TenantId,
        rules: &RuleSet,
    ) -> Result<(), StoreError> {
        let raw = serde_json::to_string(rules).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.put_setting(tenant, (RULES_KEY, "rules"), raw).await
    }

    async fn thread_policy(&self, tenant: &TenantId) -> Result<ThreadPolicy, StoreError> {
        self.setting(tenant, (POLICY_KEY, "policy")).await
    }

    async fn relay_settings(&self, tenant: &TenantId) -> Result<RelaySettings, StoreError> {
        self.setting(tenant, (RELAY_KEY, "policy")).await
    }

    async fn put_relay_settings(
        &self,
        tenant: &TenantId,
        settings: &RelaySettings,
    ) -> Result<(), StoreError> {
        let raw =
            serde_json::to_string(settings).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.put_setting(tenant, (RELAY_KEY, "policy"), raw).await
    }

    async fn put_thread_policy(
        &self,
        tenant: &TenantId,
        policy: &ThreadPolicy,
    ) -> Result<(), StoreError> {
        let raw = serde_json::to_string(policy).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.put_setting(tenant, (POLICY_KEY, "policy"), raw).await
    }
}

impl DynamoStore {
    /// One of the tenant's settings items, or the document's default.
    async fn setting<T>(&self, tenant: &TenantId, (sk, attr): (&str, &str)) -> Result<T, StoreError>
    where
        T: serde::de::DeserializeOwned + Default,
    {
        let item = self.get_contact_item(tenant, sk.to_owned()).await?;
        match item.as_ref().and_then(|i| opt_s(i, attr)) {
            None => Ok(T::default()),
            Some(raw) => {
                serde_json::from_str(raw).map_err(|e| StoreError::Corrupt(format!("{sk}: {e}")))
            }
        }
    }

    /// Replaces one of the tenant's settings items: its JSON in `attr`.
    async fn put_setting(
        &self,
        tenant: &TenantId,
        (sk, attr): (&str, &str),
        raw: String,
    ) -> Result<(), StoreError> {
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
