//! The suppression check's look-up items: one per channel and address (`scope`
//! `addr#<channel>#<address>`, `entry` `*`), holding every scope's entry for that address as a
//! map named `s:<scope>`. The check reads one item per address (half a read unit, eventually
//! consistent) where it read two, the tenant's entry and the global one. The list items stay
//! the record that listing, export and `get` read; every write of an entry writes its look-up
//! in the same transaction, so the two never disagree. Until `herald upgrade` has given the
//! entries of an older stack their look-ups and marked it (`suppression_upgrade.rs`), the
//! check reads the entries themselves too.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, TransactWriteItem, Update};
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};

use super::batch::Read;
use super::item::{get_s, ms, n, s, Item};
use super::suppressions::{entry_fields, entry_key, from_fields, from_item, key, to_item};
use super::{build_error, DynamoStore};
use crate::domain::suppression::{Reason, Scope, Suppression};
use crate::domain::{Channel, TenantId};
use crate::ports::StoreError;

pub(super) const LOOKUP: &str = "addr#";
/// Entries per transaction: two writes each, under the limit of 100.
const ENTRIES_PER_WRITE: usize = 25;
const CONCURRENCY: usize = 8;

pub(super) fn lookup_key(channel: Channel, address: &str) -> Item {
    key(
        &format!("{LOOKUP}{}", entry_key(channel, address)),
        "*".to_owned(),
    )
}

/// The item `herald upgrade` writes once every entry has its look-up (its scope is no
/// address's: the check never asks for it, and the upgrade's scan passes over it).
pub(super) fn complete_marker() -> Item {
    key(LOOKUP, "complete".to_owned())
}

/// The look-up's attribute for a scope's entry (prefixed: a tenant may be named `entry`).
fn scope_attribute(scope: &Scope) -> String {
    format!("s:{}", scope.key())
}

pub(super) fn set_in_lookup(table: &str, e: &Suppression) -> Result<Update, StoreError> {
    Update::builder()
        .table_name(table)
        .set_key(Some(lookup_key(e.channel, &e.address)))
        .update_expression("SET #scope = :entry")
        .expression_attribute_names("#scope", scope_attribute(&e.scope))
        .expression_attribute_values(":entry", AttributeValue::M(entry_fields(e)))
        .build()
        .map_err(build_error)
}

/// The active entry an address's look-up item holds for `tenant`: its own, else the global one.
fn active_entry(
    item: &Item,
    tenant: &TenantId,
    now: DateTime<Utc>,
) -> Result<Option<Suppression>, StoreError> {
    let corrupt = || StoreError::Corrupt("suppression look-up: scope".into());
    let (channel, address) = get_s(item, "scope")?
        .strip_prefix(LOOKUP)
        .and_then(|k| k.split_once('#'))
        .ok_or_else(corrupt)?;
    let channel = Channel::parse(channel).ok_or_else(corrupt)?;
    for scope in [Scope::Tenant(tenant.clone()), Scope::Global] {
        if let Some(AttributeValue::M(fields)) = item.get(&scope_attribute(&scope)) {
            let entry = from_fields(scope, channel, address, fields)?;
            if entry.is_active(now) {
                return Ok(Some(entry));
            }
        }
    }
    Ok(None)
}

/// Keeps one entry per address: the tenant's own over the global one.
fn keep(found: &mut HashMap<String, Suppression>, entry: Suppression) {
    match found.entry(entry.address.clone()) {
        Entry::Vacant(v) => {
            v.insert(entry);
        }
        Entry::Occupied(mut o) => {
            if o.get().scope == Scope::Global && entry.scope != Scope::Global {
                o.insert(entry);
            }
        }
    }
}

/// Groups of entries for one transaction each: no address twice in a group (a transaction may
/// touch an item once), and an entry given twice only as its last.
fn write_groups(entries: Vec<Suppression>) -> Vec<Vec<Suppression>> {
    let mut last: HashMap<(String, Channel, String), Suppression> = HashMap::new();
    let mut order = Vec::new();
    for e in entries {
        let k = (e.scope.key().to_owned(), e.channel, e.address.clone());
        if last.insert(k.clone(), e).is_none() {
            order.push(k);
        }
    }
    let mut groups: Vec<Vec<Suppression>> = Vec::new();
    let mut addresses: HashSet<(Channel, String)> = HashSet::new();
    for e in order.iter().filter_map(|k| last.remove(k)) {
        let address = (e.channel, e.address.clone());
        let full = groups.last().is_none_or(|g| g.len() == ENTRIES_PER_WRITE);
        if full || addresses.contains(&address) {
            groups.push(Vec::new());
            addresses.clear();
        }
        addresses.insert(address);
        if let Some(group) = groups.last_mut() {
            group.push(e);
        }
    }
    groups
}

impl DynamoStore {
    /// The active entries for `addresses` of one tenant and channel, by address.
    pub(super) async fn lookup_suppressions(
        &self,
        table: &str,
        tenant: &TenantId,
        channel: Channel,
        addresses: &[String],
        now: DateTime<Utc>,
    ) -> Result<HashMap<String, Suppression>, StoreError> {
        let older_entries = !self.lookups_complete(table).await;
        // BatchGetItem refuses a key given twice.
        let unique: HashSet<&String> = addresses.iter().collect();
        let keys: Vec<Item> = unique
            .iter()
            .flat_map(|a| {
                let entries = [tenant.as_str(), Scope::Global.key()]
                    .map(|scope| key(scope, entry_key(channel, a)));
                let entries = older_entries.then_some(entries).into_iter().flatten();
                std::iter::once(lookup_key(channel, a)).chain(entries)
            })
            .collect();
        let items = self
            .batch_get_keys(table, keys, None, Read::Eventual)
            .await?;
        let mut found = HashMap::new();
        for item in &items {
            let entry = if get_s(item, "scope")?.starts_with(LOOKUP) {
                active_entry(item, tenant, now)?
            } else {
                Some(from_item(item)?).filter(|e| e.is_active(now))
            };
            if let Some(entry) = entry {
                keep(&mut found, entry);
            }
        }
        Ok(found)
    }

    /// Whether `herald upgrade` marked every entry as having its look-up. Once seen, for good;
    /// absent (or unreadable), looked at again after `MARKER_RECHECK`.
    async fn lookups_complete(&self, table: &str) -> bool {
        self.lookups
            .get(|| async {
                // BatchGetItem, which every function that checks may call (not all may GetItem).
                let read = self
                    .batch_get(table, vec![complete_marker()], None, Read::Eventual)
                    .await;
                match read {
                    Ok(found) => !found.is_empty(),
                    Err(e) => {
                        tracing::warn!(error = %e, "suppression look-up marker unreadable; reading entries too");
                        false
                    }
                }
            })
            .await
    }

    /// Writes entries and their look-ups together.
    pub(super) async fn write_suppressions(
        &self,
        table: &str,
        entries: Vec<Suppression>,
    ) -> Result<(), StoreError> {
        let writes = write_groups(entries).into_iter().map(|group| {
            let items = group
                .iter()
                .map(|e| {
                    let put = Put::builder()
                        .table_name(table)
                        .set_item(Some(to_item(e)))
                        .build()
                        .map_err(build_error)?;
                    Ok([
                        TransactWriteItem::builder().put(put).build(),
                        TransactWriteItem::builder()
                            .update(set_in_lookup(table, e)?)
                            .build(),
                    ])
                })
                .collect::<Result<Vec<_>, StoreError>>();
            async move { self.transact_retrying(items?.concat(), None).await }
        });
        futures::stream::iter(writes)
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<bool>>()
            .await?;
        Ok(())
    }

    /// Deletes an entry and its look-up; false when there was no entry (or, with `only_if`, no
    /// entry for that reason made no later than then).
    pub(super) async fn delete_suppression_entry(
        &self,
        table: &str,
        scope: &Scope,
        channel: Channel,
        address: &str,
        only_if: Option<(Reason, DateTime<Utc>)>,
    ) -> Result<bool, StoreError> {
        let mut delete = Delete::builder()
            .table_name(table)
            .set_key(Some(key(scope.key(), entry_key(channel, address))));
        delete = match only_if {
            None => delete.condition_expression("attribute_exists(entry)"),
            Some((reason, made_by)) => delete
                .condition_expression(
                    "attribute_exists(entry) AND reason = :reason AND created_at <= :made_by",
                )
                .expression_attribute_values(":reason", s(reason.as_str()))
                .expression_attribute_values(":made_by", n(ms(made_by))),
        };
        let delete = delete.build().map_err(build_error)?;
        let remove = Update::builder()
            .table_name(table)
            .set_key(Some(lookup_key(channel, address)))
            .update_expression("REMOVE #scope")
            .expression_attribute_names("#scope", scope_attribute(scope))
            .build()
            .map_err(build_error)?;
        let items = vec![
            TransactWriteItem::builder().delete(delete).build(),
            TransactWriteItem::builder().update(remove).build(),
        ];
        self.transact_retrying(items, Some(0)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::suppression::Reason;

    fn entry(scope: &str, address: &str, reason: Reason) -> Suppression {
        Suppression {
            scope: Scope::from_key(scope).unwrap(),
            channel: Channel::Email,
            address: address.to_owned(),
            reason,
            source: None,
            created_at: Utc::now(),
            expires_at: None,
        }
    }

    #[test]
    fn a_transaction_never_touches_one_address_twice_and_a_repeat_keeps_the_last() {
        let mut entries = vec![
            entry("acme", "a@x.io", Reason::Complaint),
            entry("*", "a@x.io", Reason::HardBounce),
            entry("acme", "b@x.io", Reason::Complaint),
            entry("acme", "a@x.io", Reason::Unsubscribe),
        ];
        entries.extend((0..30).map(|i| entry("acme", &format!("r{i}@x.io"), Reason::Manual)));
        let groups = write_groups(entries);
        for g in &groups {
            let addresses: HashSet<&str> = g.iter().map(|e| e.address.as_str()).collect();
            assert_eq!(
                addresses.len(),
                g.len(),
                "an address twice in one transaction"
            );
            assert!(g.len() <= ENTRIES_PER_WRITE);
        }
        let all: Vec<&Suppression> = groups.iter().flatten().collect();
        assert_eq!(all.len(), 33, "the repeated entry is written once");
        let acme_a = all
            .iter()
            .find(|e| e.address == "a@x.io" && e.scope.key() == "acme")
            .unwrap();
        assert_eq!(acme_a.reason, Reason::Unsubscribe, "the last one given");
    }

    #[test]
    fn the_tenants_own_entry_comes_before_the_global_one_and_expired_ones_stop_nothing() {
        let acme = TenantId::parse("acme").unwrap();
        let now = Utc::now();
        let mut item = lookup_key(Channel::Email, "a@x.io");
        let global = entry("*", "a@x.io", Reason::HardBounce);
        item.insert(
            scope_attribute(&global.scope),
            AttributeValue::M(entry_fields(&global)),
        );
        let mut own = entry("acme", "a@x.io", Reason::Complaint);
        item.insert(
            scope_attribute(&own.scope),
            AttributeValue::M(entry_fields(&own)),
        );
        let found = active_entry(&item, &acme, now).unwrap().unwrap();
        assert_eq!(
            (found.reason, found.address.as_str()),
            (Reason::Complaint, "a@x.io")
        );

        own.expires_at = Some(now - chrono::Duration::minutes(1));
        item.insert(
            scope_attribute(&own.scope),
            AttributeValue::M(entry_fields(&own)),
        );
        let found = active_entry(&item, &acme, now).unwrap().unwrap();
        assert_eq!(found.scope, Scope::Global, "the expired entry gives way");

        let globex = TenantId::parse("globex").unwrap();
        item.remove(&scope_attribute(&global.scope));
        assert!(active_entry(&item, &globex, now).unwrap().is_none());
    }
}
