//! Which thread a message joins on DynamoDB, by the tenant's thread policy. A contact's
//! pointer item for the policy's slot names its current thread: `o#<contact id>` for the one
//! thread across channels, `o#<contact id>#<channel>` for a channel's. A new thread (the
//! contact had none, or the policy let a silent one go) takes the pointer on the condition
//! that it still is what was read, so of two messages racing to open one, one transaction is
//! cancelled and tried again, and then joins the winner's.

use aws_sdk_dynamodb::types::{Delete, TransactWriteItem};

use super::contacts::identity_key;
use super::item::{opt_s, s, Item};
use super::threads::{
    entry_item, received_changes, thread_item, thread_key, thread_pointer, Changes,
};
use super::{build_error, unavailable, DynamoStore};
use crate::domain::thread::{sender_identity, Thread, ThreadEntry, ThreadId};
use crate::domain::thread_policy::{ThreadPolicy, ThreadSlot};
use crate::domain::{
    Channel, Contact, ContactFields, ContactId, Identity, InboundMessage, TenantId,
};
use crate::ports::{ContactStore, StoreError, ThreadStore};

/// How many times a send tries to open a thread that other messages race to open.
const OPEN_TRIES: usize = 3;

fn pointer_key(contact: ContactId, slot: ThreadSlot) -> String {
    if slot == ThreadSlot::CONTACT {
        format!("o#{contact}")
    } else {
        format!("o#{contact}#{}", slot.as_str())
    }
}

/// The slot a pointer's key names.
fn pointer_slot(contact: ContactId, sk: &str) -> Option<ThreadSlot> {
    let rest = sk.strip_prefix(&format!("o#{contact}"))?;
    match rest.strip_prefix('#') {
        None if rest.is_empty() => Some(ThreadSlot::CONTACT),
        Some(channel) => ThreadSlot::parse(channel),
        None => None,
    }
}

/// The thread a message joins: the contact's current one, or a new one and the write that
/// makes it current.
pub(super) enum Joined {
    Current(Thread),
    New {
        thread: Thread,
        pointer: Box<TransactWriteItem>,
    },
}

impl DynamoStore {
    async fn current_thread(
        &self,
        tenant: &TenantId,
        contact: ContactId,
        slot: ThreadSlot,
    ) -> Result<Option<ThreadId>, StoreError> {
        let item = self
            .get_contact_item(tenant, pointer_key(contact, slot))
            .await?;
        Ok(item.and_then(|i| opt_s(&i, "thread_id").and_then(ThreadId::parse)))
    }

    /// The contact that has `identity`, or its sibling (a WhatsApp number's SMS number).
    async fn identity_owner(
        &self,
        tenant: &TenantId,
        identity: &Identity,
    ) -> Result<Option<ContactId>, StoreError> {
        let owner = self.contact_by_identity(tenant, identity).await?;
        match (owner, identity.sibling()) {
            (None, Some(sibling)) => self.contact_by_identity(tenant, &sibling).await,
            (owner, _) => Ok(owner),
        }
    }

    /// Whether a contact may have `identity` or its sibling, by eventually consistent reads.
    async fn maybe_known(
        &self,
        tenant: &TenantId,
        identity: &Identity,
    ) -> Result<bool, StoreError> {
        for i in std::iter::once(identity.clone()).chain(identity.sibling()) {
            let out = self
                .client
                .get_item()
                .table_name(self.contacts_table()?)
                .key("tenant", s(tenant.as_str()))
                .key("sk", s(identity_key(&i)))
                .projection_expression("sk")
                .send()
                .await
                .map_err(|e| unavailable("GetItem", e))?;
            if out.item.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The thread a message on `channel` at `at` joins, by `policy`.
    async fn thread_to_join(
        &self,
        tenant: &TenantId,
        contact: ContactId,
        (channel, at): (Channel, chrono::DateTime<chrono::Utc>),
        policy: &ThreadPolicy,
    ) -> Result<Joined, StoreError> {
        let slot = policy.slot(channel);
        let current = self.current_thread(tenant, contact, slot).await?;
        if let Some(id) = current {
            let was = self.thread(tenant, id).await?.ok_or_else(|| {
                StoreError::Corrupt(format!("thread {id}: its contact points at no thread"))
            })?;
            if policy.keeps(&was, at) {
                return Ok(Joined::Current(was));
            }
        }
        let thread = Thread::open(tenant.clone(), contact, at);
        let item = thread_pointer(tenant, pointer_key(contact, slot), thread.id);
        let pointer = match current {
            None => self.put_new(item)?,
            Some(old) => self.put_if(item, "thread_id = :v", s(old.to_string()))?,
        };
        Ok(Joined::New {
            thread,
            pointer: Box::new(pointer),
        })
    }

    /// What threading an inbound message writes, in the transaction that stores it: a new
    /// contact for an unknown sender, a new thread when the policy gives none to join (each
    /// conditioned on being new, so a race cancels the transaction and it is tried again), the
    /// thread's changes and the entry; and the thread it joins, which the message records.
    /// Nothing, and no thread, for a sender with no identity.
    pub(super) async fn inbound_thread_items(
        &self,
        m: &InboundMessage,
        policy: &ThreadPolicy,
    ) -> Result<(Vec<TransactWriteItem>, Option<ThreadId>), StoreError> {
        let tenant = &m.tenant;
        let entry = ThreadEntry::inbound(m);
        if let Some(replied) = m.thread {
            if let Some(was) = self.thread(tenant, replied).await? {
                let items = vec![
                    self.update(tenant, thread_key(replied), received_changes(&was, &entry))?,
                    self.put_new(entry_item(tenant, replied, &entry))?,
                ];
                return Ok((items, Some(replied)));
            }
        }
        let Some(identity) = sender_identity(m.channel, &m.from) else {
            return Ok((Vec::new(), None));
        };
        let mut items = Vec::new();
        let contact = match self.identity_owner(tenant, &identity).await? {
            Some(id) => id,
            None => {
                let c = Contact::new(tenant.clone(), ContactFields::default(), vec![identity]);
                items.extend(self.new_contact_items(&c)?);
                c.id
            }
        };
        let at = (m.channel, m.received_at);
        let id = match self.thread_to_join(tenant, contact, at, policy).await? {
            Joined::Current(was) => {
                items.push(self.update(
                    tenant,
                    thread_key(was.id),
                    received_changes(&was, &entry),
                )?);
                was.id
            }
            Joined::New {
                mut thread,
                pointer,
            } => {
                thread.received(&entry);
                items.push(self.put_new(thread_item(&thread))?);
                items.push(*pointer);
                thread.id
            }
        };
        items.push(self.put_new(entry_item(tenant, id, &entry))?);
        Ok((items, Some(id)))
    }

    /// [`ThreadStore::thread_for_send`]: a new thread is written on its own, before the send
    /// joins it; one that another message opened first is joined instead.
    pub(super) async fn send_thread(
        &self,
        tenant: &TenantId,
        identity: &Identity,
        at: (Channel, chrono::DateTime<chrono::Utc>),
        policy: &ThreadPolicy,
    ) -> Result<Option<ThreadId>, StoreError> {
        // Most sends go to addresses no contact has: an eventually consistent look (half the
        // read units) settles those; a contact made this very moment may be missed.
        if !self.maybe_known(tenant, identity).await? {
            return Ok(None);
        }
        let Some(contact) = self.identity_owner(tenant, identity).await? else {
            return Ok(None);
        };
        for _ in 0..OPEN_TRIES {
            let (thread, pointer) = match self.thread_to_join(tenant, contact, at, policy).await? {
                Joined::Current(t) => return Ok(Some(t.id)),
                Joined::New { thread, pointer } => (thread, pointer),
            };
            let items = vec![self.put_new(thread_item(&thread))?, *pointer];
            if self.transact(items).await? {
                return Ok(Some(thread.id));
            }
        }
        Err(StoreError::Unavailable(format!(
            "contact {contact}: its thread kept changing while a send joined it"
        )))
    }

    /// What a merge adds: each of `from`'s current threads (one per slot) becomes `into`'s,
    /// and its current one in that slot too, if `into` has none. Earlier threads keep naming
    /// `from`, whose `merged_into` leads to `into`.
    pub(super) async fn thread_moves(
        &self,
        tenant: &TenantId,
        from: ContactId,
        into: ContactId,
    ) -> Result<Vec<TransactWriteItem>, StoreError> {
        let mut items = Vec::new();
        for (slot, thread) in self.pointers(tenant, from).await? {
            let mut moved = Changes::default();
            moved.set("contact_id", s(into.to_string()));
            let delete = Delete::builder()
                .table_name(self.contacts_table()?)
                .key("tenant", s(tenant.as_str()))
                .key("sk", s(pointer_key(from, slot)))
                .build()
                .map_err(build_error)?;
            items.push(self.update(tenant, thread_key(thread), moved)?);
            items.push(TransactWriteItem::builder().delete(delete).build());
            if self.current_thread(tenant, into, slot).await?.is_none() {
                let pointer = thread_pointer(tenant, pointer_key(into, slot), thread);
                items.push(self.put_new(pointer)?);
            }
        }
        Ok(items)
    }

    /// A contact's current threads, by slot.
    async fn pointers(
        &self,
        tenant: &TenantId,
        contact: ContactId,
    ) -> Result<Vec<(ThreadSlot, ThreadId)>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(self.contacts_table()?)
            .key_condition_expression("tenant = :t AND begins_with(sk, :o)")
            .expression_attribute_values(":t", s(tenant.as_str()))
            .expression_attribute_values(":o", s(format!("o#{contact}")))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("Query", e))?;
        let pointer = |i: &Item| {
            let slot = pointer_slot(contact, opt_s(i, "sk")?)?;
            Some((slot, ThreadId::parse(opt_s(i, "thread_id")?)?))
        };
        Ok(out.items().iter().filter_map(pointer).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pointers_key_names_its_slot() {
        let contact = ContactId::new();
        for slot in [ThreadSlot::CONTACT, ThreadSlot::parse("sms").expect("sms")] {
            assert_eq!(
                pointer_slot(contact, &pointer_key(contact, slot)),
                Some(slot)
            );
        }
        assert_eq!(pointer_slot(contact, &format!("o#{contact}x")), None);
        assert_eq!(pointer_slot(contact, &format!("o#{contact}#fax")), None);
    }
}
