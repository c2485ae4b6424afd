//! Threads on DynamoDB, in the contacts table beside the contacts they belong to (one
//! partition per tenant), so that a message, its contact and its thread are written in one
//! transaction:
//! - `t#<thread id>`: a thread, its fields as attributes (lists filter on them) and `activity`,
//!   the sort key of the `by_activity` index (`<ms, 13 digits>.<thread id>`);
//! - `o#<contact id>` (`o#<contact id>#<channel>` when the tenant keeps a thread per channel):
//!   the contact's current thread (`thread_id`), see `thread_join.rs`;
//! - `e#<thread id>#<message id>`: a timeline entry; message ids sort by time.
//!
//! Changes are UpdateItems of the attributes they touch, so an inbound message counted while
//! the platform changes the assignee loses neither.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{
    AttributeValue, Put, ReturnValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
    Update,
};

use super::item::{get_n, get_s, ms, n, opt_n, opt_s, s, Item};
use super::{build_error, unavailable, DynamoStore, Updated};
use crate::domain::notify::EventId;
use crate::domain::thread::{
    followup_key, followup_notice, Direction, Insights, ReplyRoute, Thread, ThreadCursor,
    ThreadEntry, ThreadFilter, ThreadId, ThreadPatch, ThreadStatus,
};
use crate::domain::thread_policy::ThreadPolicy;
use crate::domain::{Channel, ContactId, Identity, MessageId, TenantId};
use crate::ports::{StoreError, ThreadScan, ThreadStore, WebhookStore, THREAD_SCAN_BUDGET};

/// The contacts table's index of threads by last activity.
pub(crate) const BY_ACTIVITY: &str = "by_activity";
/// The contacts table's index of follow-ups not yet announced, by time (every tenant's: only
/// pending ones have its key, `followup_pending`).
pub(crate) const FOLLOWUPS_DUE: &str = "followups_due";
/// The value of `followup_pending` while a follow-up waits.
const PENDING: &str = "due";
/// When the thread's last auto-reply was sent (N, ms), and for which inbound message (S).
const AUTO_REPLY_AT: &str = "ar_at";
const AUTO_REPLY_BY: &str = "ar_by";

pub(super) fn thread_key(id: ThreadId) -> String {
    format!("t#{id}")
}

fn entry_key(thread: ThreadId, message: MessageId) -> String {
    format!("e#{thread}#{message}")
}

/// Which thread a message sent through one is in (an email reply names the message).
fn message_key(message: MessageId) -> String {
    format!("m#{message}")
}

fn at(v: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(v).unwrap_or_default()
}

pub(super) fn thread_item(t: &Thread) -> Item {
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
    put("human_takeover", AttributeValue::Bool(t.human_takeover));
    if let Some((at, by)) = t.last_auto_reply {
        put(AUTO_REPLY_AT, n(ms(at)));
        put(AUTO_REPLY_BY, s(by.to_string()));
    }
    item
}

/// The last auto-reply, from `ar_at` and `ar_by` (written together).
fn read_auto_reply(
    item: &Item,
) -> Result<Option<(chrono::DateTime<chrono::Utc>, MessageId)>, StoreError> {
    let (Some(when), Some(by)) = (
        opt_n::<i64>(item, AUTO_REPLY_AT)?,
        opt_s(item, AUTO_REPLY_BY),
    ) else {
        return Ok(None);
    };
    let by = MessageId::parse(by)
        .ok_or_else(|| StoreError::Corrupt(format!("thread item: {AUTO_REPLY_BY} {by}")))?;
    Ok(Some((at(when), by)))
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
        // Threads written before takeovers existed have no attribute: none taken over.
        human_takeover: matches!(item.get("human_takeover"), Some(AttributeValue::Bool(true))),
        last_auto_reply: read_auto_reply(item)?,
    })
}

pub(super) fn entry_item(tenant: &TenantId, thread: ThreadId, e: &ThreadEntry) -> Item {
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
pub(super) struct Changes {
    /// The update's condition, if not that the item exists.
    condition: Option<String>,
    set: Vec<String>,
    remove: Vec<String>,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl Changes {
    pub(super) fn set(&mut self, attr: &str, value: AttributeValue) {
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

/// What an inbound message changes on its contact's current thread, as read (`was`): its
/// activity only moves forward (a provider's late or retried message is older), on the
/// condition that it is still what was read.
pub(super) fn received_changes(was: &Thread, e: &ThreadEntry) -> Changes {
    let mut c = Changes::default();
    let was_ms = ms(was.last_activity_at);
    c.condition = Some("attribute_exists(sk) AND activity_at = :was".into());
    c.values.insert(":was".into(), n(was_ms));
    if ms(e.at) > was_ms {
        let cursor = ThreadCursor {
            activity_ms: ms(e.at),
            id: was.id,
        };
        c.set("activity_at", n(ms(e.at)));
        c.set("activity", s(cursor.key()));
    }
    c.set("status", s(ThreadStatus::Open.as_str()));
    c.set("last_inbound_at", n(ms(e.at)));
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
    // Closing ends a takeover, unless the same change takes over again (as `Thread::apply`);
    // one attribute is set once per expression.
    let closed = p.status == Some(ThreadStatus::Closed);
    if let Some(takeover) = p.human_takeover.or(closed.then_some(false)) {
        c.set("human_takeover", AttributeValue::Bool(takeover));
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

/// An item that points at a thread: a contact's current one (`o#`), a sent message's (`m#`).
pub(super) fn thread_pointer(tenant: &TenantId, sk: String, thread: ThreadId) -> Item {
    Item::from([
        ("tenant".to_owned(), s(tenant.as_str())),
        ("sk".to_owned(), s(sk)),
        ("thread_id".to_owned(), s(thread.to_string())),
    ])
}

impl DynamoStore {
    /// A Put of an item that must be new.
    pub(super) fn put_new(&self, item: Item) -> Result<TransactWriteItem, StoreError> {
        self.put(item, Some("attribute_not_exists(sk)"))
    }

    /// A Put on `condition`, which names one value (`:v`): a version, a pointer's target.
    pub(super) fn put_if(
        &self,
        item: Item,
        condition: &str,
        value: AttributeValue,
    ) -> Result<TransactWriteItem, StoreError> {
        let put = Put::builder()
            .table_name(self.contacts_table()?)
            .set_item(Some(item))
            .condition_expression(condition)
            .expression_attribute_values(":v", value)
            .build()
            .map_err(build_error)?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    pub(super) fn put(
        &self,
        item: Item,
        condition: Option<&str>,
    ) -> Result<TransactWriteItem, StoreError> {
        let put = Put::builder()
            .table_name(self.contacts_table()?)
            .set_item(Some(item))
            .set_condition_expression(condition.map(str::to_owned))
            .build()
            .map_err(build_error)?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    pub(super) fn update(
        &self,
        tenant: &TenantId,
        sk: String,
        c: Changes,
    ) -> Result<TransactWriteItem, StoreError> {
        let condition = c
            .condition
            .clone()
            .unwrap_or_else(|| "attribute_exists(sk)".to_owned());
        let update = Update::builder()
            .table_name(self.contacts_table()?)
            .key("tenant", s(tenant.as_str()))
            .key("sk", s(sk))
            .update_expression(c.expression())
            .condition_expression(condition)
            .set_expression_attribute_names(Some(c.names))
            .set_expression_attribute_values((!c.values.is_empty()).then_some(c.values))
            .build()
            .map_err(build_error)?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    /// Changes a thread whose follow-up at `due` waits (and was claimed at `claimed`, if
    /// given); false when it no longer does.
    async fn followup_update(
        &self,
        t: &Thread,
        due: chrono::DateTime<chrono::Utc>,
        claimed: Option<i64>,
        mut c: Changes,
    ) -> Result<bool, StoreError> {
        c.values.insert(":due".into(), n(ms(due)));
        let mut condition =
            "attribute_exists(followup_pending) AND next_followup_at = :due".to_owned();
        if let Some(claimed) = claimed {
            condition.push_str(" AND followup_claimed_at = :claimed");
            c.values.insert(":claimed".into(), n(claimed));
        }
        let out = self
            .client
            .update_item()
            .table_name(self.contacts_table()?)
            .key("tenant", s(t.tenant.as_str()))
            .key("sk", s(thread_key(t.id)))
            .update_expression(c.expression())
            .condition_expression(condition)
            .set_expression_attribute_names(Some(c.names))
            .set_expression_attribute_values(Some(c.values))
            .send()
            .await;
        super::applied(out, "UpdateItem")
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
            .table_name(self.contacts_table()?)
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
    ) -> Result<ThreadScan, StoreError> {
        // `~` sorts after every cursor key: no cursor starts at the top. No FilterExpression:
        // every item read counts against the budget, and the filter runs here as they come.
        let below = after.map_or_else(|| "~".to_owned(), |c| c.key());
        let mut query = self
            .client
            .query()
            .table_name(self.contacts_table()?)
            .index_name(BY_ACTIVITY)
            .scan_index_forward(false)
            .key_condition_expression("tenant = :t AND activity < :below")
            .expression_attribute_values(":t", s(tenant.as_str()))
            .expression_attribute_values(":below", s(below));
        let mut scan = ThreadScan::default();
        let mut budget = THREAD_SCAN_BUDGET;
        loop {
            let out = query
                .clone()
                .limit(budget.min(200) as i32)
                .send()
                .await
                .map_err(|e| unavailable("Query", e))?;
            let read = out.items().iter().map(read_thread);
            let want = limit - scan.items.len();
            let (page, seen) = ThreadScan::collect(read, filter, want, budget)?;
            scan.items.extend(page.items);
            budget -= seen;
            // A page never asks for more than the budget left, so the scan stops (page full,
            // or budget spent) inside a page, and says where to resume.
            if page.resume.is_some() {
                scan.resume = page.resume;
                return Ok(scan);
            }
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => query = query.set_exclusive_start_key(Some(k)),
                _ => return Ok(scan),
            }
        }
    }

    async fn thread(&self, tenant: &TenantId, id: ThreadId) -> Result<Option<Thread>, StoreError> {
        let item = self.get_contact_item(tenant, thread_key(id)).await?;
        item.as_ref().map(read_thread).transpose()
    }

    async fn thread_of_message(
        &self,
        tenant: &TenantId,
        message: MessageId,
    ) -> Result<Option<ThreadId>, StoreError> {
        let item = self.get_contact_item(tenant, message_key(message)).await?;
        Ok(item.and_then(|i| opt_s(&i, "thread_id").and_then(ThreadId::parse)))
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
            .table_name(self.contacts_table()?)
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

    async fn thread_for_send(
        &self,
        tenant: &TenantId,
        identity: &Identity,
        channel: Channel,
        policy: &ThreadPolicy,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<ThreadId>, StoreError> {
        self.send_thread(tenant, identity, (channel, now), policy)
            .await
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
        let pointer = thread_pointer(tenant, message_key(entry.message), id);
        let items = vec![
            self.update(tenant, thread_key(id), c)?,
            self.put_new(entry_item(tenant, id, entry))?,
            self.put(pointer, None)?,
        ];
        // An inbound message counted on the thread at the same moment cancels this with a
        // conflict: try again, a little later each time.
        for tries in 1..=3u64 {
            let written = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .send()
                .await;
            match written {
                Ok(_) => break,
                // The thread is missing (index 0) or has the entry already (index 1).
                Err(e)
                    if super::cancelled_by_condition(&e, Some(0))
                        || super::cancelled_by_condition(&e, Some(1)) =>
                {
                    break
                }
                Err(e) if tries < 3 && super::transaction_cancelled(&e) => {
                    tokio::time::sleep(std::time::Duration::from_millis(20 * tries)).await;
                }
                Err(e) => return Err(unavailable("TransactWriteItems", e)),
            }
        }
        self.thread(tenant, id).await
    }

    /// One UpdateItem: the slot is taken when it is free, or free again after `every`; the
    /// message that holds it finds it in the refusal's old item, without moving its time.
    async fn claim_auto_reply(
        &self,
        tenant: &TenantId,
        id: ThreadId,
        by: MessageId,
        now: chrono::DateTime<chrono::Utc>,
        every: std::time::Duration,
    ) -> Result<bool, StoreError> {
        // A window too long to subtract is never over.
        let cutoff = chrono::Duration::from_std(every)
            .ok()
            .and_then(|every| now.checked_sub_signed(every))
            .map_or(i64::MIN, ms);
        let by = by.to_string();
        let result = self
            .client
            .update_item()
            .table_name(self.contacts_table()?)
            .key("tenant", s(tenant.as_str()))
            .key("sk", s(thread_key(id)))
            .update_expression(format!("SET {AUTO_REPLY_AT} = :now, {AUTO_REPLY_BY} = :by"))
            // A person who took the thread over meanwhile wins over the rule.
            .condition_expression(format!(
                "attribute_exists(sk) AND (attribute_not_exists({AUTO_REPLY_AT}) OR \
                 ({AUTO_REPLY_AT} <= :cutoff AND {AUTO_REPLY_BY} <> :by)) AND \
                 (attribute_not_exists(human_takeover) OR human_takeover = :no)"
            ))
            .expression_attribute_values(":no", AttributeValue::Bool(false))
            .expression_attribute_values(":now", n(ms(now)))
            .expression_attribute_values(":by", s(&by))
            .expression_attribute_values(":cutoff", n(cutoff))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        Ok(match super::updated(result)? {
            Updated::Applied(_) => true,
            // No thread (or another tenant's) has no old item.
            Updated::Refused(old) => {
                old.is_some_and(|i| opt_s(&i, AUTO_REPLY_BY) == Some(by.as_str()))
            }
        })
    }

    async fn followups_due(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> Result<Vec<Thread>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(self.contacts_table()?)
            .index_name(FOLLOWUPS_DUE)
            .key_condition_expression("followup_pending = :due AND next_followup_at <= :now")
            .expression_attribute_values(":due", s(PENDING))
            .expression_attribute_values(":now", n(ms(now)));
        super::query_up_to(query, limit, read_thread).await
    }

    /// Claims, announces, then marks. The claim stores when the follow-up was first tried,
    /// and the event id is derived from that time: a crash before the mark announces it again
    /// at the next sweep under the same id (the ordered notify queue drops the duplicate), and
    /// streams see it at about the time it was announced.
    async fn fire_followup(&self, thread: &Thread) -> Result<bool, StoreError> {
        let Some(due) = thread.insights.next_followup_at else {
            return Ok(false);
        };
        // The index lags: decide, and announce, from the thread as it is.
        let Some(item) = self
            .get_contact_item(&thread.tenant, thread_key(thread.id))
            .await?
        else {
            return Ok(false);
        };
        let current = read_thread(&item)?;
        if !current.followup_pending || current.insights.next_followup_at != Some(due) {
            return Ok(false);
        }
        let claimed_for: Option<i64> = opt_n(&item, "followup_claimed_for")?;
        let claimed_at = match opt_n::<i64>(&item, "followup_claimed_at")? {
            Some(at) if claimed_for == Some(ms(due)) => at,
            _ => {
                let now = ms(chrono::Utc::now());
                let mut c = Changes::default();
                c.set("followup_claimed_at", n(now));
                c.set("followup_claimed_for", n(ms(due)));
                if !self.followup_update(&current, due, None, c).await? {
                    return Ok(false);
                }
                now
            }
        };
        let id = EventId::derived(at(claimed_at), &followup_key(&current, due));
        WebhookStore::publish(self, vec![followup_notice(&current, due, id)]).await?;
        let mut done = Changes::default();
        done.text("followup_pending", &None);
        self.followup_update(&current, due, Some(claimed_at), done)
            .await
    }
}
