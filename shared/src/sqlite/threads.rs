//! Threads on SQLite: a row per thread (the columns lists filter on) and a row per timeline
//! entry. An inbound message is threaded inside the writer job that stores it, so the message,
//! its contact, its thread and its entry are written together or not at all.

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::contacts::{owner_of, save as save_contact};
use super::{from_ms, ms, SqliteBackend};
use crate::domain::notify::EventId;
use crate::domain::thread::followup_notice;
use crate::domain::thread::{
    sender_identity, Direction, Insights, ReplyRoute, Thread, ThreadCursor, ThreadEntry,
    ThreadFilter, ThreadId, ThreadPatch, ThreadStatus,
};
use crate::domain::thread_policy::{ThreadPolicy, ThreadSlot};
use crate::domain::{
    Channel, Contact, ContactFields, ContactId, Identity, InboundMessage, MessageId, TenantId,
};
use crate::ports::{StoreError, ThreadScan, ThreadStore, THREAD_SCAN_BUDGET};
use chrono::{DateTime, Utc};

pub(super) const SCHEMA: &str = r#"
-- Conversations (see threads.rs): one row per thread, the newest of a contact's is its current.
CREATE TABLE IF NOT EXISTS threads (
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    contact_id TEXT NOT NULL,
    status TEXT NOT NULL,
    assignee TEXT,
    label TEXT,
    next_step TEXT,
    next_followup_at INTEGER,
    summary TEXT,
    insights_set_by TEXT,
    unread INTEGER NOT NULL,
    last_inbound_at INTEGER,
    last_outbound_at INTEGER,
    activity_at INTEGER NOT NULL,
    reply_channel TEXT,
    reply_to TEXT,
    reply_from TEXT,
    created_at INTEGER NOT NULL,
    followup_pending INTEGER NOT NULL DEFAULT 0,
    -- The contact's current thread (new messages join it); one per contact and slot.
    is_current INTEGER NOT NULL DEFAULT 1,
    -- `*` for a thread across channels, else its channel (the tenant's thread policy).
    slot TEXT NOT NULL DEFAULT '*',
    human_takeover INTEGER NOT NULL DEFAULT 0,
    -- The last auto-reply: when, and for which inbound message (the rules' loop guard).
    auto_reply_at INTEGER,
    auto_reply_by TEXT,
    PRIMARY KEY (tenant, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS threads_followups_due ON threads (next_followup_at)
    WHERE followup_pending = 1;
CREATE INDEX IF NOT EXISTS threads_by_activity ON threads (tenant, activity_at, id);
CREATE INDEX IF NOT EXISTS threads_by_contact ON threads (tenant, contact_id, activity_at);
-- A thread's timeline: its inbound messages and the messages sent through it.
CREATE TABLE IF NOT EXISTS thread_entries (
    thread_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    direction TEXT NOT NULL,
    channel TEXT NOT NULL,
    sender TEXT NOT NULL,
    recipient TEXT NOT NULL,
    body TEXT NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (thread_id, message_id)
) WITHOUT ROWID;
"#;

/// The thread a message is in: an email reply names the message it answers.
pub(super) const ENTRIES_BY_MESSAGE: &str =
    "CREATE INDEX IF NOT EXISTS thread_entries_by_message ON thread_entries (message_id);";

const COLUMNS: &str = "tenant, id, contact_id, status, assignee, label, next_step, \
    next_followup_at, summary, insights_set_by, unread, last_inbound_at, last_outbound_at, \
    activity_at, reply_channel, reply_to, reply_from, created_at, followup_pending, \
    human_takeover, auto_reply_at, auto_reply_by";

/// What saving a thread that exists rewrites: everything but its keys, its contact and
/// whether it is its contact's current one (a merge sets those).
const UPDATES: &str = "status = excluded.status, assignee = excluded.assignee, \
    label = excluded.label, next_step = excluded.next_step, \
    next_followup_at = excluded.next_followup_at, summary = excluded.summary, \
    insights_set_by = excluded.insights_set_by, unread = excluded.unread, \
    last_inbound_at = excluded.last_inbound_at, last_outbound_at = excluded.last_outbound_at, \
    activity_at = excluded.activity_at, reply_channel = excluded.reply_channel, \
    reply_to = excluded.reply_to, reply_from = excluded.reply_from, \
    followup_pending = excluded.followup_pending, human_takeover = excluded.human_takeover, \
    auto_reply_at = excluded.auto_reply_at, auto_reply_by = excluded.auto_reply_by";

fn bad(col: usize, what: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(col, rusqlite::types::Type::Text, what.into())
}

fn thread_row(r: &Row<'_>) -> rusqlite::Result<Thread> {
    let text = |i: usize| r.get::<_, String>(i);
    let at = |i: usize| Ok::<_, rusqlite::Error>(r.get::<_, Option<i64>>(i)?.map(from_ms));
    let (tenant, id, contact, status) = (text(0)?, text(1)?, text(2)?, text(3)?);
    let reply_channel: Option<String> = r.get(14)?;
    let reply = match reply_channel {
        Some(c) => Some(ReplyRoute {
            channel: Channel::parse(&c).ok_or_else(|| bad(14, format!("channel {c}")))?,
            to: r.get::<_, Option<String>>(15)?.unwrap_or_default(),
            from: r.get::<_, Option<String>>(16)?.unwrap_or_default(),
        }),
        None => None,
    };
    Ok(Thread {
        tenant: TenantId::parse(&tenant).map_err(|e| bad(0, e))?,
        id: ThreadId::parse(&id).ok_or_else(|| bad(1, format!("thread id {id}")))?,
        contact: ContactId::parse(&contact).ok_or_else(|| bad(2, format!("contact {contact}")))?,
        status: ThreadStatus::parse(&status).ok_or_else(|| bad(3, format!("status {status}")))?,
        assignee: r.get(4)?,
        insights: Insights {
            label: r.get(5)?,
            next_step: r.get(6)?,
            next_followup_at: at(7)?,
            summary: r.get(8)?,
            set_by: r.get(9)?,
        },
        unread: r.get(10)?,
        last_inbound_at: at(11)?,
        last_outbound_at: at(12)?,
        last_activity_at: from_ms(r.get(13)?),
        reply,
        created_at: from_ms(r.get(17)?),
        followup_pending: r.get(18)?,
        human_takeover: r.get(19)?,
        last_auto_reply: match (at(20)?, r.get::<_, Option<String>>(21)?) {
            (Some(at), Some(by)) => Some((
                at,
                MessageId::parse(&by).ok_or_else(|| bad(21, format!("message id {by}")))?,
            )),
            _ => None,
        },
    })
}

fn entry_row(r: &Row<'_>) -> rusqlite::Result<ThreadEntry> {
    let (id, direction, channel): (String, String, String) = (r.get(0)?, r.get(1)?, r.get(2)?);
    Ok(ThreadEntry {
        message: MessageId::parse(&id).ok_or_else(|| bad(0, format!("message id {id}")))?,
        direction: Direction::parse(&direction)
            .ok_or_else(|| bad(1, format!("direction {direction}")))?,
        channel: Channel::parse(&channel).ok_or_else(|| bad(2, format!("channel {channel}")))?,
        from: r.get(3)?,
        to: r.get(4)?,
        body: r.get(5)?,
        at: from_ms(r.get(6)?),
    })
}

fn save_thread(conn: &Connection, t: &Thread) -> rusqlite::Result<()> {
    let i = &t.insights;
    let reply = t.reply.as_ref();
    conn.prepare_cached(&format!(
        "INSERT INTO threads ({COLUMNS}) VALUES \
         (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, \
         ?20, ?21, ?22) \
         ON CONFLICT (tenant, id) DO UPDATE SET {UPDATES}"
    ))?
    .execute(params![
        t.tenant.as_str(),
        t.id.to_string(),
        t.contact.to_string(),
        t.status.as_str(),
        t.assignee,
        i.label,
        i.next_step,
        i.next_followup_at.map(ms),
        i.summary,
        i.set_by,
        t.unread,
        t.last_inbound_at.map(ms),
        t.last_outbound_at.map(ms),
        ms(t.last_activity_at),
        reply.map(|r| r.channel.as_str()),
        reply.map(|r| r.to.as_str()),
        reply.map(|r| r.from.as_str()),
        ms(t.created_at),
        t.followup_pending,
        t.human_takeover,
        t.last_auto_reply.map(|(at, _)| ms(at)),
        t.last_auto_reply.map(|(_, by)| by.to_string()),
    ])?;
    Ok(())
}

/// Adds an entry; false when the thread has it already.
fn add_entry(conn: &Connection, thread: ThreadId, e: &ThreadEntry) -> rusqlite::Result<bool> {
    let added = conn
        .prepare_cached(
            "INSERT INTO thread_entries (thread_id, message_id, direction, channel, sender, \
             recipient, body, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
             ON CONFLICT DO NOTHING",
        )?
        .execute(params![
            thread.to_string(),
            e.message.to_string(),
            e.direction.as_str(),
            e.channel.as_str(),
            e.from,
            e.to,
            e.body,
            ms(e.at),
        ])?;
    Ok(added == 1)
}

fn read_thread(conn: &Connection, tenant: &str, id: ThreadId) -> rusqlite::Result<Option<Thread>> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM threads WHERE tenant = ?1 AND id = ?2"
    ))?
    .query_row(params![tenant, id.to_string()], thread_row)
    .optional()
}

/// The contact's current thread in `slot`.
fn current_thread(
    conn: &Connection,
    tenant: &str,
    contact: ContactId,
    slot: ThreadSlot,
) -> rusqlite::Result<Option<Thread>> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM threads WHERE tenant = ?1 AND contact_id = ?2 AND is_current = 1 \
         AND slot = ?3 LIMIT 1"
    ))?
    .query_row(
        params![tenant, contact.to_string(), slot.as_str()],
        thread_row,
    )
    .optional()
}

/// The thread a message on `channel` at `at` joins: the contact's current one in the slot the
/// policy gives, unless the policy lets it go; else a new thread, saved and made current in
/// the old one's place.
fn thread_to_join(
    conn: &Connection,
    tenant: &TenantId,
    contact: ContactId,
    (channel, at): (Channel, DateTime<Utc>),
    policy: &ThreadPolicy,
) -> rusqlite::Result<Thread> {
    let slot = policy.slot(channel);
    if let Some(t) = current_thread(conn, tenant.as_str(), contact, slot)? {
        if policy.keeps(&t, at) {
            return Ok(t);
        }
    }
    conn.prepare_cached(
        "UPDATE threads SET is_current = 0 \
         WHERE tenant = ?1 AND contact_id = ?2 AND is_current = 1 AND slot = ?3",
    )?
    .execute(params![tenant.as_str(), contact.to_string(), slot.as_str()])?;
    let t = Thread::open(tenant.clone(), contact, at);
    save_thread(conn, &t)?;
    conn.prepare_cached("UPDATE threads SET slot = ?3 WHERE tenant = ?1 AND id = ?2")?
        .execute(params![tenant.as_str(), t.id.to_string(), slot.as_str()])?;
    Ok(t)
}

/// Threads an inbound message just stored (inside its writer job): the thread it replies in,
/// when it names one the tenant has; else its sender's identity, the identity's contact (a new
/// one if nobody has it), the contact's thread (a new one if it has none). A sender with no
/// identity (a short code, a push token) stays unthreaded.
pub(super) fn thread_inbound(
    conn: &Connection,
    m: &InboundMessage,
    policy: &ThreadPolicy,
) -> rusqlite::Result<Option<ThreadId>> {
    if let Some(replied) = m.thread {
        if let Some(thread) = read_thread(conn, m.tenant.as_str(), replied)? {
            received_in(conn, thread, m)?;
            return Ok(Some(replied));
        }
    }
    let Some(identity) = sender_identity(m.channel, &m.from) else {
        return Ok(None);
    };
    let contact = match identity_owner(conn, m.tenant.as_str(), &identity)? {
        Some(id) => id,
        None => {
            let c = Contact::new(m.tenant.clone(), ContactFields::default(), vec![identity]);
            save_contact(conn, &c)?;
            c.id
        }
    };
    let thread = thread_to_join(conn, &m.tenant, contact, (m.channel, m.received_at), policy)?;
    let id = thread.id;
    received_in(conn, thread, m)?;
    Ok(Some(id))
}

/// The contact that has `identity`, or its sibling (a WhatsApp number's SMS number).
fn identity_owner(
    conn: &Connection,
    tenant: &str,
    identity: &Identity,
) -> rusqlite::Result<Option<ContactId>> {
    let mut owner = owner_of(conn, tenant, &identity.key())?;
    if let (None, Some(sibling)) = (&owner, identity.sibling()) {
        owner = owner_of(conn, tenant, &sibling.key())?;
    }
    Ok(owner.and_then(|o| ContactId::parse(&o)))
}

fn received_in(conn: &Connection, mut thread: Thread, m: &InboundMessage) -> rusqlite::Result<()> {
    let entry = ThreadEntry::inbound(m);
    if add_entry(conn, thread.id, &entry)? {
        thread.received(&entry);
        save_thread(conn, &thread)?;
    }
    Ok(())
}

/// On a merge, as on DynamoDB: each of `from`'s current threads (one per slot) becomes
/// `into`'s, and stays current only if `into` had none in its slot. Earlier threads keep
/// naming `from`, whose `merged_into` leads to `into`.
pub(super) fn move_threads(
    conn: &Connection,
    tenant: &str,
    from: ContactId,
    into: ContactId,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE threads SET contact_id = ?3, is_current = NOT EXISTS (SELECT 1 FROM threads o \
         WHERE o.tenant = ?1 AND o.contact_id = ?3 AND o.is_current = 1 \
         AND o.slot = threads.slot) \
         WHERE tenant = ?1 AND contact_id = ?2 AND is_current = 1",
    )?
    .execute(params![tenant, from.to_string(), into.to_string()])?;
    Ok(())
}

impl SqliteBackend {
    /// Reads a thread, changes it with `change`, and writes it back, in one writer job.
    async fn change_thread(
        &self,
        tenant: &TenantId,
        id: ThreadId,
        change: impl Fn(&Connection, &mut Thread) -> rusqlite::Result<bool> + Send + 'static,
    ) -> Result<Option<Thread>, StoreError> {
        let tenant = tenant.as_str().to_owned();
        self.writer
            .run(1, move |conn| {
                let Some(mut t) = read_thread(conn, &tenant, id)? else {
                    return Ok(None);
                };
                if change(conn, &mut t)? {
                    save_thread(conn, &t)?;
                }
                Ok(Some(t))
            })
            .await
    }
}

#[async_trait]
impl ThreadStore for SqliteBackend {
    async fn threads(
        &self,
        tenant: &TenantId,
        filter: &ThreadFilter,
        after: Option<ThreadCursor>,
        limit: usize,
    ) -> Result<ThreadScan, StoreError> {
        let (tenant, filter) = (tenant.as_str().to_owned(), filter.clone());
        let (below_ms, below_id) = after.map_or((i64::MAX, String::new()), |c| {
            (c.activity_ms, c.id.to_string())
        });
        self.readers
            .run(move |conn| {
                // Filters are applied in Rust over a bounded read: a predicate in SQL that
                // matches little would walk the tenant's whole index.
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM threads WHERE tenant = ?1 \
                     AND (activity_at < ?2 OR (activity_at = ?2 AND id < ?3) OR ?3 = '') \
                     ORDER BY activity_at DESC, id DESC LIMIT ?4"
                ))?;
                let rows = stmt.query_map(
                    params![tenant, below_ms, below_id, THREAD_SCAN_BUDGET as i64],
                    thread_row,
                )?;
                let read = rows.map(|r| r.map_err(super::to_store_error));
                let scanned = ThreadScan::collect(read, &filter, limit, THREAD_SCAN_BUDGET);
                Ok(scanned.map(|(scan, _)| scan))
            })
            .await?
    }

    async fn thread(&self, tenant: &TenantId, id: ThreadId) -> Result<Option<Thread>, StoreError> {
        let tenant = tenant.as_str().to_owned();
        self.readers
            .run(move |conn| read_thread(conn, &tenant, id))
            .await
    }

    async fn thread_of_message(
        &self,
        tenant: &TenantId,
        message: MessageId,
    ) -> Result<Option<ThreadId>, StoreError> {
        let tenant = tenant.as_str().to_owned();
        self.readers
            .run(move |conn| {
                let found: Option<String> = conn
                    .prepare_cached(
                        "SELECT e.thread_id FROM thread_entries e \
                         JOIN threads t ON t.tenant = ?1 AND t.id = e.thread_id \
                         WHERE e.message_id = ?2 LIMIT 1",
                    )?
                    .query_row(params![tenant, message.to_string()], |r| r.get(0))
                    .optional()?;
                Ok(found.and_then(|t| ThreadId::parse(&t)))
            })
            .await
    }

    async fn thread_entries(
        &self,
        tenant: &TenantId,
        id: ThreadId,
        after: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<ThreadEntry>, StoreError> {
        let tenant = tenant.as_str().to_owned();
        let after = after.map(|a| a.to_string()).unwrap_or_default();
        self.readers
            .run(move |conn| {
                // Only the tenant's thread: another tenant's id reads nothing.
                let mut stmt = conn.prepare_cached(
                    "SELECT message_id, direction, channel, sender, recipient, body, at \
                     FROM thread_entries WHERE thread_id = ?1 AND message_id > ?2 \
                     AND EXISTS (SELECT 1 FROM threads WHERE tenant = ?4 AND id = ?1) \
                     ORDER BY message_id LIMIT ?3",
                )?;
                let rows = stmt.query_map(
                    params![id.to_string(), after, limit as i64, tenant],
                    entry_row,
                )?;
                rows.collect()
            })
            .await
    }

    async fn update_thread(
        &self,
        tenant: &TenantId,
        id: ThreadId,
        patch: &ThreadPatch,
    ) -> Result<Option<Thread>, StoreError> {
        let patch = patch.clone();
        self.change_thread(tenant, id, move |_, t| {
            t.apply(&patch);
            Ok(true)
        })
        .await
    }

    async fn mark_read(
        &self,
        tenant: &TenantId,
        id: ThreadId,
    ) -> Result<Option<Thread>, StoreError> {
        self.change_thread(tenant, id, |_, t| {
            t.unread = 0;
            Ok(true)
        })
        .await
    }

    async fn thread_for_send(
        &self,
        tenant: &TenantId,
        identity: &Identity,
        channel: Channel,
        policy: &ThreadPolicy,
        now: DateTime<Utc>,
    ) -> Result<Option<ThreadId>, StoreError> {
        // Most recipients are no contact's: a point read says so without a turn on the
        // writer. A contact created after this read is as if it came a moment after the send.
        let (t, i) = (tenant.clone(), identity.clone());
        let owned = self
            .readers
            .lookup(move |conn| identity_owner(conn, t.as_str(), &i))
            .await?;
        if owned.is_none() {
            return Ok(None);
        }
        let (tenant, identity, policy) = (tenant.clone(), identity.clone(), policy.clone());
        self.writer
            .run(1, move |conn| {
                let Some(contact) = identity_owner(conn, tenant.as_str(), &identity)? else {
                    return Ok(None);
                };
                let t = thread_to_join(conn, &tenant, contact, (channel, now), &policy)?;
                Ok(Some(t.id))
            })
            .await
    }

    async fn record_outbound(
        &self,
        tenant: &TenantId,
        id: ThreadId,
        entry: &ThreadEntry,
    ) -> Result<Option<Thread>, StoreError> {
        let entry = entry.clone();
        self.change_thread(tenant, id, move |conn, t| {
            let added = add_entry(conn, t.id, &entry)?;
            if added {
                t.sent(entry.at);
            }
            Ok(added)
        })
        .await
    }

    async fn claim_auto_reply(
        &self,
        tenant: &TenantId,
        id: ThreadId,
        by: MessageId,
        now: chrono::DateTime<chrono::Utc>,
        every: std::time::Duration,
    ) -> Result<bool, StoreError> {
        // One writer job: the read and the write cannot interleave with another claim.
        let claimed = self
            .change_thread(tenant, id, move |_, t| {
                let mine = t.last_auto_reply.is_some_and(|(_, b)| b == by);
                // A person who took the thread over meanwhile wins over the rule.
                let take = !mine && !t.human_takeover && t.may_auto_reply(by, now, every);
                if take {
                    t.last_auto_reply = Some((now, by));
                }
                Ok(take)
            })
            .await?;
        Ok(claimed.is_some_and(|t| t.last_auto_reply.is_some_and(|(_, b)| b == by)))
    }

    async fn followups_due(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> Result<Vec<Thread>, StoreError> {
        self.readers
            .run(move |conn| {
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM threads WHERE followup_pending = 1 \
                     AND next_followup_at <= ?1 ORDER BY next_followup_at LIMIT ?2"
                ))?;
                let rows = stmt.query_map(params![ms(now), limit as i64], thread_row)?;
                rows.collect()
            })
            .await
    }

    async fn fire_followup(&self, thread: &Thread) -> Result<bool, StoreError> {
        let Some(due) = thread.insights.next_followup_at else {
            return Ok(false);
        };
        let (tenant, id) = (thread.tenant.clone(), thread.id);
        // The mark and the event are one transaction: announced once, crash or not, and
        // from the thread as it is in that transaction.
        self.writer
            .run(1, move |conn| {
                let Some(mut t) = read_thread(conn, tenant.as_str(), id)? else {
                    return Ok(false);
                };
                if !t.followup_pending || t.insights.next_followup_at != Some(due) {
                    return Ok(false);
                }
                t.followup_pending = false;
                save_thread(conn, &t)?;
                let notice = followup_notice(&t, due, EventId::new());
                let row = serde_json::to_string(&notice).unwrap_or_default();
                conn.prepare_cached("INSERT INTO notify_outbox (notice) VALUES (?1)")?
                    .execute([&row])?;
                Ok(true)
            })
            .await
    }
}
