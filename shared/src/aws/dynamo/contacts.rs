//! Contacts on DynamoDB, one partition per tenant in the contacts table (PK `tenant`, SK `sk`):
//! - `c#<id>`: a contact (its record as JSON in `contact`, `updated_at` for optimistic writes);
//! - `m#<id>`: a contact merged into another, moved out of the `c#` range that lists read;
//! - `i#<kind:value>`: whose an identity is (`contact_id`); its conditional put is what makes
//!   an identity one contact's.
//!
//! Every change is one transaction, conditioned on the contact being as it was read.

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{Delete, Put, TransactWriteItem};

use super::item::{get_s, n, s, Item};
use super::{build_error, unavailable, DynamoStore};
use crate::domain::{Contact, ContactError, ContactFields, ContactId, Identity, TenantId};
use crate::ports::{live, merged, ContactRecord, ContactStore, StoreError};

type TxError = aws_sdk_dynamodb::error::SdkError<TransactWriteItemsError>;

fn contact_key(id: ContactId) -> String {
    format!("c#{id}")
}

fn merged_key(id: ContactId) -> String {
    format!("m#{id}")
}

pub(super) fn identity_key(identity: &Identity) -> String {
    format!("i#{}", identity.key())
}

impl DynamoStore {
    pub(super) fn contacts_table(&self) -> Result<&str, StoreError> {
        super::required(&self.tables.contacts, crate::aws::settings::CONTACTS_TABLE)
    }

    /// The contacts table's item at `sk` in the tenant's partition (a consistent read).
    pub(super) async fn get_contact_item(
        &self,
        tenant: &TenantId,
        sk: String,
    ) -> Result<Option<Item>, StoreError> {
        self.get_contact_item_read(tenant, sk, true).await
    }

    pub(super) async fn get_contact_item_read(
        &self,
        tenant: &TenantId,
        sk: String,
        consistent: bool,
    ) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(self.contacts_table()?)
            .key("tenant", s(tenant.as_str()))
            .key("sk", s(sk))
            .consistent_read(consistent)
            .send()
            .await
            .map_err(|e| unavailable("GetItem", e))?;
        Ok(out.item)
    }

    fn read_item(tenant: &TenantId, id: ContactId, item: &Item) -> Result<Contact, StoreError> {
        ContactRecord::read(tenant, id, get_s(item, "contact")?)
    }

    /// A put of the contact's item at `sk`: new (`was` none) or as it was read (`was`: its
    /// `updated_at` then).
    fn contact_put(
        &self,
        c: &Contact,
        sk: String,
        was: Option<&Contact>,
    ) -> Result<Put, StoreError> {
        let put = Put::builder()
            .table_name(self.contacts_table()?)
            .item("tenant", s(c.tenant.as_str()))
            .item("sk", s(sk))
            .item("contact", s(ContactRecord::to_json(c)))
            .item("updated_at", n(c.updated_at.timestamp_millis()));
        let put = match was {
            None => put.condition_expression("attribute_not_exists(sk)"),
            Some(old) => put
                .condition_expression("updated_at = :was")
                .expression_attribute_values(":was", n(old.updated_at.timestamp_millis())),
        };
        put.build().map_err(build_error)
    }

    /// A put that gives `identity` to `owner`: only if it is no one's, or `from`'s (a merge).
    fn identity_put(
        &self,
        c: &Contact,
        identity: &Identity,
        from: Option<ContactId>,
    ) -> Result<Put, StoreError> {
        let put = Put::builder()
            .table_name(self.contacts_table()?)
            .item("tenant", s(c.tenant.as_str()))
            .item("sk", s(identity_key(identity)))
            .item("contact_id", s(c.id.to_string()));
        let put = match from {
            None => put
                .condition_expression("attribute_not_exists(sk) OR contact_id = :me")
                .expression_attribute_values(":me", s(c.id.to_string())),
            Some(from) => put
                .condition_expression(
                    "attribute_not_exists(sk) OR contact_id = :from OR contact_id = :me",
                )
                .expression_attribute_values(":from", s(from.to_string()))
                .expression_attribute_values(":me", s(c.id.to_string())),
        };
        put.build().map_err(build_error)
    }

    async fn write(&self, items: Vec<TransactWriteItem>) -> Result<(), TxError> {
        self.client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
            .map(|_| ())
    }

    /// Why a transaction over `identities` was refused: the first one another contact has, or
    /// (none taken) the contact changed meanwhile.
    async fn refusal(&self, c: &Contact, identities: &[Identity], e: TxError) -> ContactError {
        if !super::cancelled_by_condition(&e, Some(0)) && !identities.is_empty() {
            for identity in identities {
                let Ok(owner) = self.contact_by_identity(&c.tenant, identity).await else {
                    continue;
                };
                if let Some(owner) = owner.filter(|o| *o != c.id) {
                    return ContactError::Taken {
                        identity: identity.to_string(),
                        owner,
                    };
                }
            }
        }
        match super::cancelled_by_condition(&e, Some(0)) {
            true => {
                StoreError::Unavailable(format!("contact {} changed meanwhile; try again", c.id))
                    .into()
            }
            false => unavailable("TransactWriteItems", e).into(),
        }
    }

    /// The writes that store a new contact and make its identities its own.
    pub(super) fn new_contact_items(
        &self,
        c: &Contact,
    ) -> Result<Vec<TransactWriteItem>, StoreError> {
        let mut items = vec![TransactWriteItem::builder()
            .put(self.contact_put(c, contact_key(c.id), None)?)
            .build()];
        for identity in &c.identities {
            let put = self.identity_put(c, identity, None)?;
            items.push(TransactWriteItem::builder().put(put).build());
        }
        Ok(items)
    }

    /// A contact to change: a live one, or why not.
    async fn changeable(&self, tenant: &TenantId, id: ContactId) -> Result<Contact, ContactError> {
        match self.contact(tenant, id).await? {
            Some(c) => live(c),
            None => Err(ContactError::NotFound),
        }
    }
}

#[async_trait]
impl ContactStore for DynamoStore {
    async fn create_contact(&self, c: &Contact) -> Result<(), ContactError> {
        match self.write(self.new_contact_items(c)?).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.refusal(c, &c.identities, e).await),
        }
    }

    async fn contact(
        &self,
        tenant: &TenantId,
        id: ContactId,
    ) -> Result<Option<Contact>, StoreError> {
        for sk in [contact_key(id), merged_key(id)] {
            if let Some(item) = self.get_contact_item(tenant, sk).await? {
                return Self::read_item(tenant, id, &item).map(Some);
            }
        }
        Ok(None)
    }

    async fn contacts(
        &self,
        tenant: &TenantId,
        after: Option<ContactId>,
        limit: usize,
    ) -> Result<Vec<Contact>, StoreError> {
        // `c#` ids sort by time; `c$` sorts after every one of them.
        let from = after.map_or_else(|| "c#".to_owned(), |a| format!("{}~", contact_key(a)));
        let query = self
            .client
            .query()
            .table_name(self.contacts_table()?)
            .key_condition_expression("tenant = :t AND sk BETWEEN :from AND :to")
            .expression_attribute_values(":t", s(tenant.as_str()))
            .expression_attribute_values(":from", s(from))
            .expression_attribute_values(":to", s("c$"));
        super::query_up_to(query, limit, |item| {
            let sk = get_s(item, "sk")?;
            let id = sk
                .strip_prefix("c#")
                .and_then(ContactId::parse)
                .ok_or_else(|| StoreError::Corrupt(format!("contact key {sk}")))?;
            Self::read_item(tenant, id, item)
        })
        .await
    }

    async fn contact_by_identity(
        &self,
        tenant: &TenantId,
        identity: &Identity,
    ) -> Result<Option<ContactId>, StoreError> {
        let item = self
            .get_contact_item(tenant, identity_key(identity))
            .await?;
        Ok(item.and_then(|i| get_s(&i, "contact_id").ok().and_then(ContactId::parse)))
    }

    async fn update_contact(
        &self,
        tenant: &TenantId,
        id: ContactId,
        fields: &ContactFields,
    ) -> Result<Contact, ContactError> {
        let was = self.changeable(tenant, id).await?;
        let mut c = was.clone();
        c.fields = fields.clone();
        c.updated_at = chrono::Utc::now().max(was.updated_at + chrono::Duration::milliseconds(1));
        let put = self.contact_put(&c, contact_key(id), Some(&was))?;
        match self
            .write(vec![TransactWriteItem::builder().put(put).build()])
            .await
        {
            Ok(()) => Ok(c),
            Err(e) => Err(self.refusal(&c, &[], e).await),
        }
    }

    async fn add_identity(
        &self,
        tenant: &TenantId,
        id: ContactId,
        identity: &Identity,
    ) -> Result<Contact, ContactError> {
        let was = self.changeable(tenant, id).await?;
        if was.identities.iter().any(|i| i.key() == identity.key()) {
            return Ok(was);
        }
        if was.identities.len() >= crate::domain::contact::MAX_IDENTITIES {
            return Err(ContactError::TooManyIdentities);
        }
        let mut c = was.clone();
        c.identities.push(identity.clone());
        c.updated_at = chrono::Utc::now().max(was.updated_at + chrono::Duration::milliseconds(1));
        let items = vec![
            TransactWriteItem::builder()
                .put(self.contact_put(&c, contact_key(id), Some(&was))?)
                .build(),
            TransactWriteItem::builder()
                .put(self.identity_put(&c, identity, None)?)
                .build(),
        ];
        match self.write(items).await {
            Ok(()) => Ok(c),
            Err(e) => Err(self.refusal(&c, std::slice::from_ref(identity), e).await),
        }
    }

    async fn merge_contacts(
        &self,
        tenant: &TenantId,
        from: ContactId,
        into: ContactId,
    ) -> Result<Contact, ContactError> {
        let (source, target) = match (
            self.contact(tenant, from).await?,
            self.contact(tenant, into).await?,
        ) {
            (Some(s), Some(t)) => (s, t),
            _ => return Err(ContactError::NotFound),
        };
        let moved = source.identities.clone();
        let (gone, kept) = merged(source.clone(), target.clone())?;
        let table = self.contacts_table()?;
        let delete = Delete::builder()
            .table_name(table)
            .key("tenant", s(tenant.as_str()))
            .key("sk", s(contact_key(from)))
            .condition_expression("updated_at = :was")
            .expression_attribute_values(":was", n(source.updated_at.timestamp_millis()))
            .build()
            .map_err(build_error)?;
        let mut items = vec![
            TransactWriteItem::builder()
                .put(self.contact_put(&kept, contact_key(into), Some(&target))?)
                .build(),
            TransactWriteItem::builder().delete(delete).build(),
            TransactWriteItem::builder()
                .put(self.contact_put(&gone, merged_key(from), None)?)
                .build(),
        ];
        for identity in &moved {
            let put = self.identity_put(&kept, identity, Some(from))?;
            items.push(TransactWriteItem::builder().put(put).build());
        }
        items.extend(self.thread_moves(tenant, from, into).await?);
        match self.write(items).await {
            Ok(()) => Ok(kept),
            Err(e) => Err(self.refusal(&kept, &moved, e).await),
        }
    }
}
