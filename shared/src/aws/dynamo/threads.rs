//! Threads on DynamoDB, in the contacts table beside the contacts they belong to (one
//! partition per tenant), so that a message, its contact and its thread are written in one
//! transaction:
//! - `t#<thread id>`: a thread, its fields as attributes (lists filter on them) and `activity`,
//!   the sort key of the `by_activity` index (`<ms, 13 digits>.<thread id>`);
//! - `o#<contact id>`: the contact's current thread (`thread_id`);
//! - `e#<thread id>#<message id>`: a timeline entry; message ids sort by time.
//!
//! Changes are UpdateItems of the attributes they touch, so an inbound message counted while
//! the platform changes the assignee loses neither.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{
    AttributeValue, Delete, Put, ReturnValue, TransactWriteItem, Update,
};

use super::item::{get_n, get_s, ms, n, opt_n, opt_s, s, Item};
use super::{build_error, unavailable, DynamoStore};
use crate::domain::notify::Notice;
use crate::domain::thread::{
    sender_identity, Direction, Insights, ReplyRoute, Thread, ThreadCursor, ThreadEntry,
    ThreadFilter, ThreadId, ThreadPatch, ThreadStatus,
};
use crate::domain::{
    Channel, Contact, ContactFields, ContactId, InboundMessage, MessageId, TenantId,
};
use crate::ports::{ContactStore, StoreError, ThreadStore, WebhookStore};

/// The contacts table's index of threads by last activity.
pub(crate) const BY_ACTIVITY: &str = "by_activity";
/// The contacts table's index of follow-ups not yet announced, by time (every tenant's: only
/// pending ones have its key, `followup_pending`).
pub(crate) const FOLLOWUPS_DUE: &str = "followups_due";
/// The value of `followup_pending` while a follow-up waits.
const PENDING: &str = "due";

fn thread_key(id: ThreadId) -> String {
    format!("t#{id}")
}

fn pointer_key(contact: ContactId) -> String {
    format!("o#{contact}")
}

fn entry_key(thread: ThreadId, message: MessageId) -> String {
    format!("e#{thread}#{message}")
}

fn at(v: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(v).unwrap_or_default()
}

fn thread_item(t: &Thread) -> Item {
    let mut item = Item::new();
    let mut put = |k: &str, v: AttributeValue| {
        item.insert(k.to_owned(), v);
    };
    put("tenant", s(t.tenant.as_str()));
    put("sk", s(thread_key(t.id)));
    put("contact_id", s(t.contact.to_string()));
    put("status", s(t.status.as_str()));
    put("unread", n(t.unread));
    put("activity_at", n(ms(t.last_activity_at)));
    put("activity", s(ThreadCursor::of(t).key()));
    put("created_at", n(ms(t.created_at)));
    let optional = [
        ("assignee", t.assignee.clone()),
        ("label", t.insights.label.clone()),
        ("next_step", t.insights.next_step.clone()),
        ("summary", t.insights.summary.clone()),
        ("insights_set_by", t.insights.set_by.clone()),
    ];
    for (k, v) in optional {
        if let Some(v) = v {
            put(k, s(v));
        }
    }
    let times = [
        ("next_followup_at", t.insights.next_followup_at),
        ("last_inbound_at", t.last_inbound_at),
        ("last_outbound_at", t.last_outbound_at),
    ];
    for (k, v) in times {
        if let Some(v) = v {
            put(k, n(ms(v)));
        }
    }
    if t.followup_pending {
        put("followup_pending", s(PENDING));
    }
    if let Some(r) = &t.reply {
        put("reply_channel", s(r.channel.as_str()));
        put("reply_to", s(&r.to));
        put("reply_from", s(&r.from));
    }
    item
}

fn read_thread(item: &Item) -> Result<Thread, StoreError> {
    let corrupt = |what: String| StoreError::Corrupt(format!("thread item: {what}"));
    let text = |k: &str| opt_s(item, k).map(str::to_owned);
    let time = |k: &str| Ok::<_, StoreError>(opt_n::<i64>(item, k)?.map(at));
    let sk = get_s(item, "sk")?;
    let id = sk.strip_prefix("t#").and_then(ThreadId::parse);
    let reply = match opt_s(item, "reply_channel") {
        Some(c) => Some(ReplyRoute {
            channel: Channel::parse(c).ok_or_else(|| corrupt(format!("channel {c}")))?,
            to: text("reply_to").unwrap_or_default(),
            from: text("reply_from").unwrap_or_default(),
        }),
        None => None,
    };
    let (tenant, contact, status) = (
        get_s(item, "tenant")?,
        get_s(item, "contact_id")?,
        get_s(item, "status")?,
    );
    Ok(Thread {
        id: id.ok_or_else(|| corrupt(format!("key {sk}")))?,
        tenant: TenantId::parse(tenant).map_err(|e| corrupt(format!("tenant {tenant}: {e}")))?,
        contact: ContactId::parse(contact).ok_or_else(|| corrupt(format!("contact {contact}")))?,
        status: ThreadStatus::parse(status).ok_or_else(|| corrupt(format!("status {status}")))?,
        assignee: text("assignee"),
        insights: Insights {
            label: text("label"),
            next_step: text("next_step"),
            next_followup_at: time("next_followup_at")?,
            summary: text("summary"),
            set_by: text("insights_set_by"),
        },
        unread: get_n(item, "unread")?,
        last_inbound_at: time("last_inbound_at")?,
        last_outbound_at: time("last_outbound_at")?,
        last_activity_at: at(get_n(item, "activity_at")?),
        reply,
        created_at: at(get_n(item, "created_at")?),
        followup_pending: opt_s(item, "followup_pending").is_some(),
    })
}

fn entry_item(tenant: &TenantId, thread: ThreadId, e: &ThreadEntry) -> Item {
    Item::from([
        ("tenant".to_owned(), s(tenant.as_str())),
        ("sk".to_owned(), s(entry_key(thread, e.message))),
        ("direction".to_owned(), s(e.direction.as_str())),
        ("channel".to_owned(), s(e.channel.as_str())),
        ("from".to_owned(), s(&e.from)),
        ("to".to_owned(), s(&e.to)),
        ("body".to_owned(), s(&e.body)),
        ("at".to_owned(), n(ms(e.at))),
    ])
}

fn read_entry(item: &Item) -> Result<ThreadEntry, StoreError> {
    let corrupt = |what: String| StoreError::Corrupt(format!("thread entry: {what}"));
    let sk = get_s(item, "sk")?;
    let message = sk.rsplit('#').next().and_then(MessageId::parse);
    let (direction, channel) = (get_s(item, "direction")?, get_s(item, "channel")?);
    Ok(ThreadEntry {
        message: message.ok_or_else(|| corrupt(format!("key {sk}")))?,
        direction: Direction::parse(direction)
            .ok_or_else(|| corrupt(format!("direction {direction}")))?,
        channel: Channel::parse(channel).ok_or_else(|| corrupt(format!("channel {channel}")))?,
        from: get_s(item, "from")?.to_owned(),
        to: get_s(item, "to")?.to_owned(),
        body: get_s(item, "body")?.to_owned(),
        at: at(get_n(item, "at")?),
    })
}

/// An UpdateItem's expression, built from the attributes it sets and removes.
#[derive(Default)]
struct Changes {
    set: Vec<String>,
    remove: Vec<String>,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl Changes {
    fn set(&mut self, attr: &str, value: AttributeValue) {
        let i = self.names.len();
        self.set.push(format!("#a{i} = :v{i}"));
        self.names.insert(format!("#a{i}"), attr.to_owned());
        self.values.insert(format!(":v{i}"), value);
    }

    fn text(&mut self, attr: &str, value: &Option<String>) {
        match value {
            Some(v) => self.set(attr, s(v)),
            None => {
                let i = self.names.len();
                self.remove.push(format!("#a{i}"));
                self.names.insert(format!("#a{i}"), attr.to_owned());
            }
        }
    }

    fn expression(&self) -> String {
        let mut parts = Vec::new();
        if !self.set.is_empty() {
            parts.push(format!("SET {}", self.set.join(", ")));
        }
        if !self.remove.is_empty() {
            parts.push(format!("REMOVE {}", self.remove.join(", ")));
        }
        parts.join(" ")
    }
}

/// What an inbound message changes on its contact's current thread.
fn received_changes(thread: ThreadId, e: &ThreadEntry) -> Changes {
    let mut c = Changes::default();
    let cursor = ThreadCursor {
        activity_ms: ms(e.at),
        id: thread,
    };
    c.set("status", s(ThreadStatus::Open.as_str()));
    c.set("last_inbound_at", n(ms(e.at)));
    c.set("activity_at", n(ms(e.at)));
    c.set("activity", s(cursor.key()));
    c.set("reply_channel", s(e.channel.as_str()));
    c.set("reply_to", s(&e.from));
    c.set("reply_from", s(&e.to));
    let i = c.names.len();
    c.set
        .push(format!("#a{i} = if_not_exists(#a{i}, :zero) + :one"));
    c.names.insert(format!("#a{i}"), "unread".into());
    c.values.insert(":zero".into(), n(0));
    c.values.insert(":one".into(), n(1));
    c
}

/// What a platform's change sets, as [`Thread::apply`] does it.
fn patch_changes(p: &ThreadPatch) -> Changes {
    let mut c = Changes::default();
    if let Some(status) = p.status {
        c.set("status", s(status.as_str()));
    }
    if let Some(assignee) = &p.assignee {
        c.text("assignee", assignee);
    }
    let mut touched = false;
    for (attr, value) in [
        ("label", &p.label),
        ("next_step", &p.next_step),
        ("summary", &p.summary),
    ] {
        if let Some(v) = value {
            c.text(attr, v);
            touched = true;
        }
    }
    if let Some(when) = p.next_followup_at {
        match when {
            Some(t) => {
                c.set("next_followup_at", n(ms(t)));
                c.set("followup_pending", s(PENDING));
            }
            None => {
                c.text("next_followup_at", &None);
                c.text("followup_pending", &None);
            }
        }
        touched = true;
    }
    if touched {
        c.text("insights_set_by", &Some(p.set_by.clone()));
    }
    c
}

impl DynamoStore {
    fn threads_table(&self) -> Result<&str, StoreError> {
        super::required(&self.tables.contacts, crate::aws::settings::CONTACTS_TABLE)
    }

    async fn get_item_at(&self, tenant: &TenantId, sk: String) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(self.threads_table()?)
            .key("tenant", s(tenant.as_str()))
            .key("sk", s(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("GetItem", e))?;
        Ok(out.item)
    }

    fn put_new(&self, item: Item) -> Result<TransactWriteItem, StoreError> {
        let put = Put::builder()
            .table_name(self.threads_table()?)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(sk)")
            .build()
            .map_err(build_error)?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    fn update(
        &self,
        tenant: &TenantId,
        sk: String,
        c: Changes,
    ) -> Result<TransactWriteItem, StoreError> {
        let update = Update::builder()
            .table_name(self.threads_table()?)
            .key("tenant", s(tenant.as_str()))
            .key("sk", s(sk))
            .update_expression(c.expression())
            .condition_expression("attribute_exists(sk)")
            .set_expression_attribute_names(Some(c.names))
            .set_expression_attribute_values((!c.values.is_empty()).then_some(c.values))
            .build()
            .map_err(build_error)?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    /// The contact's current thread.
    async fn current_thread(
        &self,
        tenant: &TenantId,
        contact: ContactId,
    ) -> Result<Option<ThreadId>, StoreError> {
        let item = self.get_item_at(tenant, pointer_key(contact)).await?;
        Ok(item.and_then(|i| opt_s(&i, "thread_id").and_then(ThreadId::parse)))
    }

    /// What threading an inbound message writes, in the transaction that stores it: a new
    /// contact for an unknown sender, a new thread for a contact without one (each
    /// conditioned on being new, so a race cancels the transaction and it is tried again), the
    /// thread's changes and the entry. Nothing for a sender with no identity.
    pub(super) async fn inbound_thread_items(
        &self,
        m: &InboundMessage,
    ) -> Result<Vec<TransactWriteItem>, StoreError> {
        let Some(identity) = sender_identity(m.channel, &m.from) else {
            return Ok(Vec::new());
        };
        let tenant = &m.tenant;
        let mut items = Vec::new();
        let mut owner = self.contact_by_identity(tenant, &identity).await?;
        if let (None, Some(sibling)) = (owner, identity.sibling()) {
            owner = self.contact_by_identity(tenant, &sibling).await?;
        }
        let contact = match owner {
            Some(id) => id,
            None => {
                let c = Contact::new(tenant.clone(), ContactFields::default(), vec![identity]);
                items.extend(self.new_contact_items(&c)?);
                c.id
            }
        };
        let entry = ThreadEntry::new(
            m.id,
            Direction::Inbound,
            m.channel,
            (m.from.clone(), m.to.clone()),
            &m.body,
            m.received_at,
        );
        match self.current_thread(tenant, contact).await? {
            Some(id) => {
                items.push(self.update(tenant, thread_key(id), received_changes(id, &entry))?);
                items.push(self.put_new(entry_item(tenant, id, &entry))?);
            }
            None => {
                let mut t = Thread::open(tenant.clone(), contact, m.received_at);
                t.received(&entry);
                items.push(self.put_new(thread_item(&t))?);
                let pointer = Item::from([
                    ("tenant".to_owned(), s(tenant.as_str())),
                    ("sk".to_owned(), s(pointer_key(contact))),
                    ("thread_id".to_owned(), s(t.id.to_string())),
                ]);
                items.push(self.put_new(pointer)?);
                items.push(self.put_new(entry_item(tenant, t.id, &entry))?);
            }
        }
        Ok(items)
    }

    /// What a merge adds: `from`'s current thread becomes `into`'s (its current one too, if
    /// `into` has none).
    pub(super) async fn thread_moves(
        &self,
        tenant: &TenantId,
        from: ContactId,
        into: ContactId,
    ) -> Result<Vec<TransactWriteItem>, StoreError> {
        let Some(thread) = self.current_thread(tenant, from).await? else {
            return Ok(Vec::new());
        };
        let mut moved = Changes::default();
        moved.set("contact_id", s(into.to_string()));
        let delete = Delete::builder()
            .table_name(self.threads_table()?)
            .key("tenant", s(tenant.as_str()))
            .key("sk", s(pointer_key(from)))
            .build()
            .map_err(build_error)?;
        let mut items = vec![
            self.update(tenant, thread_key(thread), moved)?,
            TransactWriteItem::builder().delete(delete).build(),
        ];
        if self.current_thread(tenant, into).await?.is_none() {
            let pointer = Item::from([
                ("tenant".to_owned(), s(tenant.as_str())),
                ("sk".to_owned(), s(pointer_key(into))),
                ("thread_id".to_owned(), s(thread.to_string())),
            ]);
            items.push(self.put_new(pointer)?);
        }
        Ok(items)
    }

    /// Applies `changes` to a thread and returns it as it is now; `None` when there is none.
    async fn change_thread(
        &self,
        tenant: &TenantId,
        id: ThreadId,
        c: Changes,
    ) -> Result<Option<Thread>, StoreError> {
        if c.set.is_empty() && c.remove.is_empty() {
            return self.thread(tenant, id).await;
        }
        let out = self
            .client
            .update_item()
            .table_name(self.threads_table()?)
            .key("tenant", s(tenant.as_str()))
            .key("sk", s(thread_key(id)))
            .update_expression(c.expression())
            .condition_expression("attribute_exists(sk)")
            .set_expression_attribute_names(Some(c.names))
            .set_expression_attribute_values((!c.values.is_empty()).then_some(c.values))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match out {
            Ok(out) => out.attributes.as_ref().map(read_thread).transpose(),
            Err(e) if super::condition_failed(&e) => Ok(None),
            Err(e) => Err(unavailable("UpdateItem", e)),
        }
    }
}

#[async_trait]
impl ThreadStore for DynamoStore {
    async fn threads(
        &self,
        tenant: &TenantId,
        filter: &ThreadFilter,
        after: Option<ThreadCursor>,
        limit: usize,
    ) -> Result<Vec<Thread>, StoreError> {
        // `~` sorts after every cursor key: no cursor starts at the top.
        let below = after.map_or_else(|| "~".to_owned(), |c| c.key());
        let query = self
            .client
            .query()
            .table_name(self.threads_table()?)
            .index_name(BY_ACTIVITY)
            .scan_index_forward(false)
            .key_condition_expression("tenant = :t AND activity < :below")
            .expression_attribute_values(":t", s(tenant.as_str()))
            .expression_attribute_values(":below", s(below));
        let query = match filter.status {
            Some(status) => query
                .filter_expression("#status = :status")
                .expression_attribute_names("#status", "status")
                .expression_attribute_values(":status", s(status.as_str())),
            None => query,
        };
        // The rest of the filter is applied here, over a bounded read.
        let read = super::query_up_to(query, limit.saturating_mul(20), read_thread).await?;
        Ok(read
            .into_iter()
            .filter(|t| filter.matches(t))
            .take(limit)
            .collect())
    }

    async fn thread(&self, tenant: &TenantId, id: ThreadId) -> Result<Option<Thread>, StoreError> {
        let item = self.get_item_at(tenant, thread_key(id)).await?;
        item.as_ref().map(read_thread).transpose()
    }

    async fn thread_entries(
        &self,
        tenant: &TenantId,
        id: ThreadId,
        after: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<ThreadEntry>, StoreError> {
        let from = match after {
            Some(a) => format!("{}~", entry_key(id, a)),
            None => format!("e#{id}#"),
        };
        let query = self
            .client
            .query()
            .table_name(self.threads_table()?)
            .key_condition_expression("tenant = :t AND sk BETWEEN :from AND :to")
            .expression_attribute_values(":t", s(tenant.as_str()))
            .expression_attribute_values(":from", s(from))
            .expression_attribute_values(":to", s(format!("e#{id}#~")));
        super::query_up_to(query, limit, read_entry).await
    }

    async fn update_thread(
        &self,
        tenant: &TenantId,
        id: ThreadId,
        patch: &ThreadPatch,
    ) -> Result<Option<Thread>, StoreError> {
        self.change_thread(tenant, id, patch_changes(patch)).await
    }

    async fn mark_read(
        &self,
        tenant: &TenantId,
        id: ThreadId,
    ) -> Result<Option<Thread>, StoreError> {
        let mut c = Changes::default();
        c.set("unread", n(0));
        self.change_thread(tenant, id, c).await
    }

    async fn record_outbound(
        &self,
        tenant: &TenantId,
        id: ThreadId,
        entry: &ThreadEntry,
    ) -> Result<Option<Thread>, StoreError> {
        let mut c = Changes::default();
        let cursor = ThreadCursor {
            activity_ms: ms(entry.at),
            id,
        };
        c.set("last_outbound_at", n(ms(entry.at)));
        c.set("activity_at", n(ms(entry.at)));
        c.set("activity", s(cursor.key()));
        let items = vec![
            self.update(tenant, thread_key(id), c)?,
            self.put_new(entry_item(tenant, id, entry))?,
        ];
        let written = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await;
        // Refused when the thread is missing (index 0) or has the entry already (index 1).
        if let Err(e) = written {
            if !super::cancelled_by_condition(&e, Some(0))
                && !super::cancelled_by_condition(&e, Some(1))
            {
                return Err(unavailable("TransactWriteItems", e));
            }
        }
        self.thread(tenant, id).await
    }

    async fn followups_due(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> Result<Vec<Thread>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(self.threads_table()?)
            .index_name(FOLLOWUPS_DUE)
            .key_condition_expression("followup_pending = :due AND next_followup_at <= :now")
            .expression_attribute_values(":due", s(PENDING))
            .expression_attribute_values(":now", n(ms(now)));
        super::query_up_to(query, limit, read_thread).await
    }

    /// Announces first, then marks: a crash between the two announces it again at the next
    /// sweep with the same event id, which the ordered notify queue drops as a duplicate.
    async fn fire_followup(&self, thread: &Thread, notice: Notice) -> Result<bool, StoreError> {
        let Some(due) = thread.insights.next_followup_at else {
            return Ok(false);
        };
        WebhookStore::publish(self, vec![notice]).await?;
        let marked = self
            .client
            .update_item()
            .table_name(self.threads_table()?)
            .key("tenant", s(thread.tenant.as_str()))
            .key("sk", s(thread_key(thread.id)))
            .update_expression("REMOVE followup_pending")
            .condition_expression("attribute_exists(followup_pending) AND next_followup_at = :due")
            .expression_attribute_values(":due", n(ms(due)))
            .send()
            .await;
        super::applied(marked, "UpdateItem")
    }
}
