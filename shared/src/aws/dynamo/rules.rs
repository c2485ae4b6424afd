//! A tenant's inbound rules on DynamoDB: one item in the tenant's partition of the contacts
//! table (`sk` `rules#inbound`, outside every range the contacts and threads read), the rule
//! set as JSON in `rules`. The inbound pipeline reads it beside the threads it changes.

use async_trait::async_trait;

use super::item::{ms, n, opt_s, s};
use super::{unavailable, DynamoStore};
use crate::domain::rules::RuleSet;
use crate::domain::TenantId;
use crate::ports::{RuleStore, StoreError};

const RULES_KEY: &str = "rules#inbound";

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
        self.client
            .put_item()
            .table_name(self.contacts_table()?)
            .item("tenant", s(tenant.as_str()))
            .item("sk", s(RULES_KEY))
            .item("rules", s(raw))
            .item("updated_at", n(ms(chrono::Utc::now())))
            .send()
            .await
            .map_err(|e| unavailable("PutItem", e))?;
        Ok(())
    }
}
