//! Templates (per tenant) and tenants with their API keys on DynamoDB.

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use chrono::Utc;

use super::item::{get_s, ms, n, opt_n, opt_s, s};
use super::{applied, condition_failed, unavailable, DynamoStore};
use crate::domain::locale::Locale;
use crate::domain::template::{TemplateParts, MAX_LOCALES};
use crate::domain::{KeyScopes, SenderIdentity, Template, TemplateName, TenantId};
use crate::ports::{LocalePut, StoreError, StoredKey, TemplateStore, TenantStore};

fn tenant_pk(tenant: &TenantId) -> String {
    format!("tenant#{}", tenant.as_str())
}

/// One item per tenant holds its sender identities as a string set.
fn senders_pk(tenant: &TenantId) -> String {
    format!("senders#{}", tenant.as_str())
}

fn key_pk(prefix: &str) -> String {
    format!("key#{prefix}")
}

#[async_trait]
impl TemplateStore for DynamoStore {
    async fn put(&self, tenant: &TenantId, t: Template) -> Result<bool, StoreError> {
        let mut put = self
            .client
            .put_item()
            .table_name(self.templates_table()?)
            .item("tenant", s(tenant.as_str()))
            .item("name", s(t.name.as_str()))
            .item("updated_at", n(ms(t.updated_at)))
            .return_values(ReturnValue::AllOld);
        for (k, v) in [
            ("subject", &t.subject),
            ("text", &t.text),
            ("html", &t.html),
        ] {
            if let Some(v) = v {
                put = put.item(k, s(v));
            }
        }
        let out = put.send().await.map_err(|e| unavailable("PutItem", e))?;
        Ok(out.attributes.is_none_or(|a| a.is_empty()))
    }

    /// Pages through the tenant's items by name, skipping variants (`<name>#<locale>`), until
    /// `limit` templates are found.
    async fn list_templates(
        &self,
        tenant: &TenantId,
        after: Option<&TemplateName>,
        limit: usize,
    ) -> Result<Vec<Template>, StoreError> {
        let mut query = self
            .client
            .query()
            .table_name(self.templates_table()?)
            .key_condition_expression("tenant = :t AND #n > :after")
            .expression_attribute_names("#n", "name")
            .expression_attribute_values(":t", s(tenant.as_str()))
            // Below every name ("" is not a valid key value).
            .expression_attribute_values(":after", s(after.map_or("#", |n| n.as_str())));
        let mut found = Vec::new();
        while found.len() < limit {
            let out = query
                .clone()
                .limit(100)
                .send()
                .await
                .map_err(|e| unavailable("Query", e))?;
            for item in out.items() {
                let Ok(name) = TemplateName::parse(get_s(item, "name")?) else {
                    continue;
                };
                let owned = |k: &str| opt_s(item, k).map(str::to_owned);
                let parts = TemplateParts {
                    subject: owned("subject"),
                    text: owned("text"),
                    html: owned("html"),
                };
                let updated_at = opt_n::<i64>(item, "updated_at")?
                    .and_then(chrono::DateTime::from_timestamp_millis)
                    .unwrap_or_default();
                found.push(Template::with_parts(name, parts, updated_at));
                if found.len() == limit {
                    return Ok(found);
                }
            }
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => query = query.set_exclusive_start_key(Some(k)),
                _ => break,
            }
        }
        Ok(found)
    }

    /// One Query for the template and its variants: a variant is its own item, named
    /// `<name>#<locale>` (`#` is never in a template name, and sorts before every character
    /// that is, so the range holds exactly these).
    async fn get(
        &self,
        tenant: &TenantId,
        name: &TemplateName,
    ) -> Result<Option<Template>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(self.templates_table()?)
            .key_condition_expression("tenant = :t AND #n BETWEEN :from AND :to")
            .expression_attribute_names("#n", "name")
            .expression_attribute_values(":t", s(tenant.as_str()))
            .expression_attribute_values(":from", s(name.as_str()))
            .expression_attribute_values(":to", s(format!("{name}#\u{10FFFF}")))
            .consistent_read(true);
        let items = super::query_up_to(query, 1 + MAX_LOCALES, |item| Ok(item.clone())).await?;
        let mut template = None;
        let mut locales = BTreeMap::new();
        for item in &items {
            let owned = |k: &str| opt_s(item, k).map(str::to_owned);
            let parts = TemplateParts {
                subject: owned("subject"),
                text: owned("text"),
                html: owned("html"),
            };
            match get_s(item, "name")?.split_once('#') {
                None => {
                    let updated_at = opt_n::<i64>(item, "updated_at")?
                        .and_then(chrono::DateTime::from_timestamp_millis)
                        .unwrap_or_default();
                    template = Some(Template::with_parts(name.clone(), parts, updated_at));
                }
                Some((_, locale)) => {
                    let locale = Locale::parse(locale).map_err(StoreError::Corrupt)?;
                    locales.insert(locale, parts);
                }
            }
        }
        Ok(template.map(|t| Template { locales, ..t }))
    }

    async fn delete(&self, tenant: &TenantId, name: &TemplateName) -> Result<bool, StoreError> {
        let existing = self.get(tenant, name).await?;
        for locale in existing.iter().flat_map(|t| t.locales.keys()) {
            self.delete_locale(tenant, name, locale).await?;
        }
        let out = self
            .client
            .delete_item()
            .table_name(self.templates_table()?)
            .key("tenant", s(tenant.as_str()))
            .key("name", s(name.as_str()))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| unavailable("DeleteItem", e))?;
        Ok(out.attributes.is_some_and(|a| !a.is_empty()))
    }

    async fn put_locale(
        &self,
        tenant: &TenantId,
        name: &TemplateName,
        locale: &Locale,
        parts: &TemplateParts,
    ) -> Result<LocalePut, StoreError> {
        let table = self.templates_table()?;
        // The template must exist: a variant of nothing is refused.
        let base = self
            .client
            .get_item()
            .table_name(table)
            .key("tenant", s(tenant.as_str()))
            .key("name", s(name.as_str()))
            .projection_expression("tenant")
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("GetItem", e))?;
        if base.item.is_none() {
            return Ok(LocalePut::NoTemplate);
        }
        let mut put = self
            .client
            .put_item()
            .table_name(table)
            .item("tenant", s(tenant.as_str()))
            .item("name", s(format!("{name}#{locale}")))
            .item("updated_at", n(ms(Utc::now())))
            .return_values(ReturnValue::AllOld);
        for (k, v) in [
            ("subject", &parts.subject),
            ("text", &parts.text),
            ("html", &parts.html),
        ] {
            if let Some(v) = v {
                put = put.item(k, s(v));
            }
        }
        let out = put.send().await.map_err(|e| unavailable("PutItem", e))?;
        Ok(match out.attributes.is_none_or(|a| a.is_empty()) {
            true => LocalePut::Created,
            false => LocalePut::Replaced,
        })
    }

    async fn delete_locale(
        &self,
        tenant: &TenantId,
        name: &TemplateName,
        locale: &Locale,
    ) -> Result<bool, StoreError> {
        let out = self
            .client
            .delete_item()
            .table_name(self.templates_table()?)
            .key("tenant", s(tenant.as_str()))
            .key("name", s(format!("{name}#{locale}")))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| unavailable("DeleteItem", e))?;
        Ok(out.attributes.is_some_and(|a| !a.is_empty()))
    }
}

#[async_trait]
impl TenantStore for DynamoStore {
    async fn ensure_tenant(&self, tenant: &TenantId) -> Result<bool, StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(self.tenants_table()?)
            .item("pk", s(tenant_pk(tenant)))
            .item("created_at", n(ms(Utc::now())))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        applied(result, "PutItem")
    }

    async fn add_key(
        &self,
        tenant: &TenantId,
        prefix: &str,
        key_hash: &str,
        scopes: KeyScopes,
    ) -> Result<(), StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(self.tenants_table()?)
            .item("pk", s(key_pk(prefix)))
            .item("tenant", s(tenant.as_str()))
            .item("key_hash", s(key_hash))
            .item("scopes", s(scopes.to_string()))
            .item("created_at", n(ms(Utc::now())))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if condition_failed(&e) => Err(StoreError::Unavailable(format!(
                "key prefix {prefix} is already taken"
            ))),
            Err(e) => Err(unavailable("PutItem", e)),
        }
    }

    async fn revoke_key(&self, prefix: &str) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(self.tenants_table()?)
            .key("pk", s(key_pk(prefix)))
            .update_expression("SET revoked_at = :now")
            .condition_expression("attribute_exists(pk) AND attribute_not_exists(revoked_at)")
            .expression_attribute_values(":now", n(ms(Utc::now())))
            .send()
            .await;
        applied(result, "UpdateItem")
    }

    async fn find_key(&self, prefix: &str) -> Result<Option<StoredKey>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(self.tenants_table()?)
            .key("pk", s(key_pk(prefix)))
            .send()
            .await
            .map_err(|e| unavailable("GetItem", e))?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        Ok(Some(StoredKey {
            tenant: TenantId::parse(get_s(&item, "tenant")?).map_err(StoreError::Corrupt)?,
            key_hash: get_s(&item, "key_hash")?.to_owned(),
            revoked: item.contains_key("revoked_at"),
            // Keys made before scopes have them all.
            scopes: match item.get("scopes").and_then(|v| v.as_s().ok()) {
                Some(raw) => KeyScopes::parse(raw).map_err(StoreError::Corrupt)?,
                None => KeyScopes::ALL,
            },
        }))
    }

    async fn sender_identities(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<SenderIdentity>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(self.tenants_table()?)
            .key("pk", s(senders_pk(tenant)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("GetItem", e))?;
        let mut identities: Vec<SenderIdentity> =
            match out.item.as_ref().and_then(|i| i.get("identities")) {
                Some(AttributeValue::Ss(set)) => set
                    .iter()
                    .filter_map(|raw| SenderIdentity::parse(raw).ok())
                    .collect(),
                _ => Vec::new(),
            };
        identities.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        Ok(identities)
    }

    async fn add_sender_identity(
        &self,
        tenant: &TenantId,
        identity: &SenderIdentity,
    ) -> Result<bool, StoreError> {
        self.change_identities(tenant, identity, "ADD", "NOT contains(identities, :v)")
            .await
    }

    async fn remove_sender_identity(
        &self,
        tenant: &TenantId,
        identity: &SenderIdentity,
    ) -> Result<bool, StoreError> {
        self.change_identities(tenant, identity, "DELETE", "contains(identities, :v)")
            .await
    }
}

impl DynamoStore {
    /// ADDs to or DELETEs from the tenant's identity set when `condition` holds; returns
    /// whether it changed the set.
    async fn change_identities(
        &self,
        tenant: &TenantId,
        identity: &SenderIdentity,
        verb: &str,
        condition: &str,
    ) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(self.tenants_table()?)
            .key("pk", s(senders_pk(tenant)))
            .update_expression(format!("{verb} identities :one"))
            .condition_expression(condition)
            .expression_attribute_values(":one", AttributeValue::Ss(vec![identity.to_string()]))
            .expression_attribute_values(":v", s(identity.as_str()))
            .send()
            .await;
        applied(result, "UpdateItem")
    }
}
