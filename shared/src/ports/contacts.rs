//! A tenant's contacts and the index of their identities.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::domain::{Contact, ContactError, ContactFields, ContactId, Identity, TenantId};

#[async_trait]
pub trait ContactStore: Send + Sync + 'static {
    /// Stores a new contact with its identities, all or nothing: refused (`Taken`) when one of
    /// them is another contact's.
    async fn create_contact(&self, contact: &Contact) -> Result<(), ContactError>;
    /// A contact, merged ones too (with `merged_into` set).
    async fn contact(
        &self,
        tenant: &TenantId,
        id: ContactId,
    ) -> Result<Option<Contact>, StoreError>;
    /// A tenant's contacts that were not merged away, oldest first, after `after`.
    async fn contacts(
        &self,
        tenant: &TenantId,
        after: Option<ContactId>,
        limit: usize,
    ) -> Result<Vec<Contact>, StoreError>;
    /// Whose the identity is.
    async fn contact_by_identity(
        &self,
        tenant: &TenantId,
        identity: &Identity,
    ) -> Result<Option<ContactId>, StoreError>;
    /// Replaces what the platform sets on a contact that was not merged away.
    async fn update_contact(
        &self,
        tenant: &TenantId,
        id: ContactId,
        fields: &ContactFields,
    ) -> Result<Contact, ContactError>;
    /// Gives a contact one more identity (nothing changes if it has it already).
    async fn add_identity(
        &self,
        tenant: &TenantId,
        id: ContactId,
        identity: &Identity,
    ) -> Result<Contact, ContactError>;
    /// Moves `from`'s identities to `into` and marks `from` merged into it, in one unit.
    async fn merge_contacts(
        &self,
        tenant: &TenantId,
        from: ContactId,
        into: ContactId,
    ) -> Result<Contact, ContactError>;
}

/// A contact as both backends store it: its fields and identities as JSON beside its id and
/// tenant.
#[derive(Serialize, Deserialize)]
pub struct ContactRecord {
    fields: ContactFields,
    /// (kind, value), in the order they were added.
    identities: Vec<(String, String)>,
    merged_into: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl ContactRecord {
    pub fn to_json(c: &Contact) -> String {
        let record = ContactRecord {
            fields: c.fields.clone(),
            identities: c
                .identities
                .iter()
                .map(|i| (i.kind().to_owned(), i.value().to_owned()))
                .collect(),
            merged_into: c.merged_into.map(|m| m.to_string()),
            created_at: c.created_at.timestamp_millis(),
            updated_at: c.updated_at.timestamp_millis(),
        };
        serde_json::to_string(&record).unwrap_or_default()
    }

    /// The contact stored as `json` under `id` and `tenant`.
    pub fn read(tenant: &TenantId, id: ContactId, json: &str) -> Result<Contact, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("contact {id}: {what}"));
        let r: ContactRecord = serde_json::from_str(json).map_err(|_| corrupt("record"))?;
        let at = |ms| chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
        let identities = r
            .identities
            .iter()
            .map(|(kind, value)| Identity::stored(kind, value).ok_or_else(|| corrupt("identity")))
            .collect::<Result<_, _>>()?;
        let merged_into = match r.merged_into {
            Some(m) => Some(ContactId::parse(&m).ok_or_else(|| corrupt("merged_into"))?),
            None => None,
        };
        Ok(Contact {
            id,
            tenant: tenant.clone(),
            fields: r.fields,
            identities,
            merged_into,
            created_at: at(r.created_at),
            updated_at: at(r.updated_at),
        })
    }
}

/// What a merge leaves: `into` with `from`'s identities after its own, and `from` emptied and
/// pointing at it. Refused when either is merged already, they are one, or there would be too
/// many identities.
pub fn merged(mut from: Contact, mut into: Contact) -> Result<(Contact, Contact), ContactError> {
    if from.id == into.id || from.merged_into.is_some() || into.merged_into.is_some() {
        return Err(ContactError::CannotMerge);
    }
    let moved = std::mem::take(&mut from.identities);
    for identity in moved {
        if !into.identities.iter().any(|i| i.key() == identity.key()) {
            into.identities.push(identity);
        }
    }
    if into.identities.len() > crate::domain::contact::MAX_IDENTITIES {
        return Err(ContactError::TooManyIdentities);
    }
    let now = chrono::Utc::now();
    from.merged_into = Some(into.id);
    (from.updated_at, into.updated_at) = (now, now);
    Ok((from, into))
}

/// A contact that can change: one merged away is refused with where it went.
pub fn live(c: Contact) -> Result<Contact, ContactError> {
    match c.merged_into {
        Some(into) => Err(ContactError::Merged(into)),
        None => Ok(c),
    }
}
