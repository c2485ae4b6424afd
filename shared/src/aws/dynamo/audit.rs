//! The audit log on DynamoDB (`audit`: PK `scope`, SK `id`, TTL `expires_at`): one item per
//! entry, put only if its id is new, so nothing overwrites an entry. The IAM policies give no
//! function UpdateItem or DeleteItem on the table; TTL is its only delete.

use std::collections::HashMap;

use async_trait::async_trait;

use super::item::{get_n, get_s, n, opt_s, s, Item};
use super::search::id_range;
use super::{applied, epoch_seconds, unavailable, DynamoStore};
use crate::domain::audit::{Actor, AuditAction, AuditEntry, AuditId, RETENTION_DAYS};
use crate::domain::suppression::Scope;
use crate::ports::{
    AuditFilter, AuditLog, AuditPage, AuditPageFill, StoreError, SEARCH_SCAN_BUDGET,
};

fn to_item(e: &AuditEntry) -> Item {
    let mut item = Item::from([
        ("scope".to_owned(), s(e.scope.key())),
        ("id".to_owned(), s(e.id.to_string())),
        ("at".to_owned(), n(e.at.timestamp_millis())),
        ("actor".to_owned(), s(e.actor.label())),
        ("action".to_owned(), s(e.action.as_str())),
        (
            "expires_at".to_owned(),
            n(epoch_seconds(e.at + chrono::Duration::days(RETENTION_DAYS))),
        ),
    ]);
    let optional = [
        ("target", e.target.clone()),
        (
            "detail",
            (!e.detail.is_null()).then(|| e.detail.to_string()),
        ),
        ("client", e.client.clone()),
        ("request_id", e.request_id.clone()),
    ];
    for (name, value) in optional {
        if let Some(v) = value {
            item.insert(name.to_owned(), s(v));
        }
    }
    item
}

fn from_item(item: &Item) -> Result<AuditEntry, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("audit item: bad {what}"));
    let owned = |name: &str| opt_s(item, name).map(str::to_owned);
    Ok(AuditEntry {
        id: AuditId::parse(get_s(item, "id")?).ok_or_else(|| corrupt("id"))?,
        scope: Scope::from_key(get_s(item, "scope")?).ok_or_else(|| corrupt("scope"))?,
        at: chrono::DateTime::from_timestamp_millis(get_n(item, "at")?).unwrap_or_default(),
        actor: Actor::parse(get_s(item, "actor")?).ok_or_else(|| corrupt("actor"))?,
        action: AuditAction::parse(get_s(item, "action")?).ok_or_else(|| corrupt("action"))?,
        target: owned("target"),
        detail: match opt_s(item, "detail") {
            Some(d) => serde_json::from_str(d).map_err(|_| corrupt("detail"))?,
            None => serde_json::Value::Null,
        },
        client: owned("client"),
        request_id: owned("request_id"),
    })
}

#[async_trait]
impl AuditLog for DynamoStore {
    async fn append(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let put = self
            .client
            .put_item()
            .table_name(self.audit_table()?)
            .set_item(Some(to_item(entry)))
            .condition_expression("attribute_not_exists(id)")
            .send()
            .await;
        match applied(put, "PutItem")? {
            true => Ok(()),
            false => Err(StoreError::Corrupt(format!(
                "audit entry {} is already stored",
                entry.id
            ))),
        }
    }

    /// Reads up to the scan budget of the scope's partition, newest first, and filters here
    /// (a filter expression would cost the same reads).
    async fn audit_page(
        &self,
        scope: &Scope,
        filter: &AuditFilter,
        cursor: Option<AuditId>,
        limit: usize,
    ) -> Result<AuditPage, StoreError> {
        let mut values = HashMap::from([(":scope".to_owned(), s(scope.key()))]);
        let Some(range) = id_range(
            filter.lowest_id().map(|id| id.as_uuid()),
            filter.below_id(cursor).map(|id| id.as_uuid()),
            &mut values,
        ) else {
            return Ok(AuditPage::default());
        };
        let query = self
            .client
            .query()
            .table_name(self.audit_table()?)
            .key_condition_expression(format!("#scope = :scope{range}"))
            .expression_attribute_names("#scope", "scope")
            .set_expression_attribute_values(Some(values))
            .scan_index_forward(false);
        let (mut fill, mut start) = (AuditPageFill::new(filter, limit), None);
        loop {
            let out = query
                .clone()
                .set_exclusive_start_key(start)
                .limit((SEARCH_SCAN_BUDGET - fill.scanned()).min(1000) as i32)
                .send()
                .await
                .map_err(|e| unavailable("Query", e))?;
            for item in out.items() {
                if fill.take(from_item(item)?) {
                    return Ok(fill.finish());
                }
            }
            start = out.last_evaluated_key().cloned();
            if start.is_none() {
                return Ok(fill.finish());
            }
        }
    }
}
