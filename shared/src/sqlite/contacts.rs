//! Contacts on SQLite: a row per contact (its record as JSON) and a row per identity, the
//! primary key of which makes an identity one contact's. Every change is one writer job, so
//! the check that an identity is free and the write that takes it cannot interleave.

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};

use super::SqliteBackend;
use crate::domain::{Contact, ContactError, ContactFields, ContactId, Identity, TenantId};
use crate::ports::{live, merged, ContactRecord, ContactStore, StoreError};

fn read_contact(
    conn: &Connection,
    tenant: &TenantId,
    id: ContactId,
) -> rusqlite::Result<Option<Result<Contact, StoreError>>> {
    let json: Option<String> = conn
        .prepare_cached("SELECT contact FROM contacts WHERE tenant = ?1 AND id = ?2")?
        .query_row(params![tenant.as_str(), id.to_string()], |r| r.get(0))
        .optional()?;
    Ok(json.map(|j| ContactRecord::read(tenant, id, &j)))
}

pub(super) fn owner_of(
    conn: &Connection,
    tenant: &str,
    key: &str,
) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached(
        "SELECT contact_id FROM contact_identities WHERE tenant = ?1 AND identity = ?2",
    )?
    .query_row(params![tenant, key], |r| r.get(0))
    .optional()
}

/// The first of `identities` that a contact other than `me` has.
fn taken(
    conn: &Connection,
    tenant: &str,
    me: ContactId,
    identities: &[Identity],
) -> rusqlite::Result<Option<ContactError>> {
    for identity in identities {
        if let Some(owner) = owner_of(conn, tenant, &identity.key())? {
            if owner != me.to_string() {
                let owner = ContactId::parse(&owner).unwrap_or_default();
                let identity = identity.to_string();
                return Ok(Some(ContactError::Taken { identity, owner }));
            }
        }
    }
    Ok(None)
}

/// Writes a contact's row and its identities' rows (theirs from now on).
pub(super) fn save(conn: &Connection, c: &Contact) -> rusqlite::Result<()> {
    let (tenant, id) = (c.tenant.as_str(), c.id.to_string());
    conn.prepare_cached(
        "INSERT OR REPLACE INTO contacts (tenant, id, merged, contact) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![
        tenant,
        id,
        c.merged_into.is_some(),
        ContactRecord::to_json(c)
    ])?;
    let mut own = conn.prepare_cached(
        "INSERT OR REPLACE INTO contact_identities (tenant, identity, contact_id) VALUES (?1, ?2, ?3)",
    )?;
    for identity in &c.identities {
        own.execute(params![tenant, identity.key(), id])?;
    }
    Ok(())
}

/// Reads a contact inside a writer job: a missing or unreadable one is the error to return.
fn load(
    conn: &Connection,
    tenant: &TenantId,
    id: ContactId,
) -> rusqlite::Result<Result<Contact, ContactError>> {
    Ok(match read_contact(conn, tenant, id)? {
        Some(Ok(c)) => Ok(c),
        Some(Err(e)) => Err(e.into()),
        None => Err(ContactError::NotFound),
    })
}

#[async_trait]
impl ContactStore for SqliteBackend {
    async fn create_contact(&self, contact: &Contact) -> Result<(), ContactError> {
        let c = contact.clone();
        self.writer
            .run(1, move |conn| {
                if let Some(refused) = taken(conn, c.tenant.as_str(), c.id, &c.identities)? {
                    return Ok(Err(refused));
                }
                save(conn, &c)?;
                Ok(Ok(()))
            })
            .await?
    }

    async fn contact(
        &self,
        tenant: &TenantId,
        id: ContactId,
    ) -> Result<Option<Contact>, StoreError> {
        let tenant = tenant.clone();
        self.readers
            .run(move |conn| read_contact(conn, &tenant, id))
            .await?
            .transpose()
    }

    async fn contacts(
        &self,
        tenant: &TenantId,
        after: Option<ContactId>,
        limit: usize,
    ) -> Result<Vec<Contact>, StoreError> {
        let key = tenant.as_str().to_owned();
        let after = after.map(|a| a.to_string()).unwrap_or_default();
        let rows: Vec<(String, String)> = self
            .readers
            .run(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT id, contact FROM contacts WHERE tenant = ?1 AND merged = 0 AND id > ?2 \
                     ORDER BY id LIMIT ?3",
                )?;
                let rows = stmt.query_map(params![key, after, limit as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
                rows.collect()
            })
            .await?;
        rows.iter()
            .map(|(id, json)| {
                let id = ContactId::parse(id)
                    .ok_or_else(|| StoreError::Corrupt(format!("contact id {id}")))?;
                ContactRecord::read(tenant, id, json)
            })
            .collect()
    }

    async fn contact_by_identity(
        &self,
        tenant: &TenantId,
        identity: &Identity,
    ) -> Result<Option<ContactId>, StoreError> {
        let (tenant, key) = (tenant.as_str().to_owned(), identity.key());
        let owner = self
            .readers
            .run(move |conn| owner_of(conn, &tenant, &key))
            .await?;
        Ok(owner.and_then(|o| ContactId::parse(&o)))
    }

    async fn update_contact(
        &self,
        tenant: &TenantId,
        id: ContactId,
        fields: &ContactFields,
    ) -> Result<Contact, ContactError> {
        let (tenant, fields) = (tenant.clone(), fields.clone());
        self.writer
            .run(1, move |conn| {
                let mut c = match load(conn, &tenant, id)?.and_then(live) {
                    Ok(c) => c,
                    Err(e) => return Ok(Err(e)),
                };
                c.fields = fields.clone();
                c.updated_at = chrono::Utc::now();
                save(conn, &c)?;
                Ok(Ok(c))
            })
            .await?
    }

    async fn add_identity(
        &self,
        tenant: &TenantId,
        id: ContactId,
        identity: &Identity,
    ) -> Result<Contact, ContactError> {
        let (tenant, identity) = (tenant.clone(), identity.clone());
        self.writer
            .run(1, move |conn| {
                let mut c = match load(conn, &tenant, id)?.and_then(live) {
                    Ok(c) => c,
                    Err(e) => return Ok(Err(e)),
                };
                if let Some(refused) =
                    taken(conn, tenant.as_str(), id, std::slice::from_ref(&identity))?
                {
                    return Ok(Err(refused));
                }
                if c.identities.iter().any(|i| i.key() == identity.key()) {
                    return Ok(Ok(c));
                }
                if c.identities.len() >= crate::domain::contact::MAX_IDENTITIES {
                    return Ok(Err(ContactError::TooManyIdentities));
                }
                c.identities.push(identity.clone());
                c.updated_at = chrono::Utc::now();
                save(conn, &c)?;
                Ok(Ok(c))
            })
            .await?
    }

    async fn merge_contacts(
        &self,
        tenant: &TenantId,
        from: ContactId,
        into: ContactId,
    ) -> Result<Contact, ContactError> {
        let tenant = tenant.clone();
        self.writer
            .run(2, move |conn| {
                let (source, target) =
                    match (load(conn, &tenant, from)?, load(conn, &tenant, into)?) {
                        (Ok(s), Ok(t)) => (s, t),
                        (Err(e), _) | (_, Err(e)) => return Ok(Err(e)),
                    };
                let (source, target) = match merged(source, target) {
                    Ok(both) => both,
                    Err(e) => return Ok(Err(e)),
                };
                save(conn, &source)?;
                save(conn, &target)?;
                super::threads::move_threads(conn, tenant.as_str(), from, into)?;
                Ok(Ok(target))
            })
            .await?
    }
}
