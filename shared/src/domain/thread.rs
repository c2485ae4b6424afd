//! Threads: one conversation with one contact, across channels. Every inbound message from a
//! known identity joins its contact's thread when it is stored, and every reply sent through a
//! thread joins it. A thread carries what the platform (or a rule) learnt about it: its
//! insights.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::notify::v7_id;
use super::{Channel, ContactId, FieldError, Identity, IdentityKind, MessageId, TenantId};

v7_id!(
    /// A thread's id.
    ThreadId
);

/// The longest assignee, label and `set_by`, in characters.
pub const MAX_LABEL: usize = 200;
/// The longest `next_step`.
pub const MAX_NEXT_STEP: usize = 1000;
/// The longest `summary`.
pub const MAX_SUMMARY: usize = 4000;
/// The longest body a timeline entry keeps (the message itself keeps all of it).
pub const MAX_ENTRY_BODY: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ThreadStatus {
    Open,
    Snoozed,
    Closed,
}

impl ThreadStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ThreadStatus::Open => "open",
            ThreadStatus::Snoozed => "snoozed",
            ThreadStatus::Closed => "closed",
        }
    }

    pub fn parse(raw: &str) -> Option<ThreadStatus> {
        [
            ThreadStatus::Open,
            ThreadStatus::Snoozed,
            ThreadStatus::Closed,
        ]
        .into_iter()
        .find(|s| s.as_str() == raw)
    }
}

/// What the platform or a rule learnt about a thread, and who set it last.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Insights {
    pub label: Option<String>,
    pub next_step: Option<String>,
    pub next_followup_at: Option<DateTime<Utc>>,
    pub summary: Option<String>,
    /// `rule:<name>`, or the API key that set them (`key:<prefix>`), or what the caller named.
    pub set_by: Option<String>,
}

/// Where a reply goes by default: the channel the contact last wrote on, from the address it
/// wrote to, to the address it wrote from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyRoute {
    pub channel: Channel,
    /// The contact's address on that channel.
    pub to: String,
    /// Ours, that the contact wrote to.
    pub from: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thread {
    pub id: ThreadId,
    pub tenant: TenantId,
    pub contact: ContactId,
    pub status: ThreadStatus,
    pub assignee: Option<String>,
    pub insights: Insights,
    /// Inbound messages since it was last marked read.
    pub unread: u32,
    pub last_inbound_at: Option<DateTime<Utc>>,
    pub last_outbound_at: Option<DateTime<Utc>>,
    /// The later of the two, or when it was opened: lists sort by it.
    pub last_activity_at: DateTime<Utc>,
    pub reply: Option<ReplyRoute>,
    pub created_at: DateTime<Utc>,
    /// `next_followup_at` is set and `thread.followup_due` has not been announced for it.
    pub followup_pending: bool,
    /// A person answers: rules send no auto-replies until the thread is closed.
    pub human_takeover: bool,
    /// The last auto-reply: when, and for which inbound message.
    pub last_auto_reply: Option<(DateTime<Utc>, MessageId)>,
}

impl Thread {
    /// A new open thread for a contact.
    pub fn open(tenant: TenantId, contact: ContactId, at: DateTime<Utc>) -> Thread {
        Thread {
            id: ThreadId::new(),
            tenant,
            contact,
            status: ThreadStatus::Open,
            assignee: None,
            insights: Insights::default(),
            unread: 0,
            last_inbound_at: None,
            last_outbound_at: None,
            last_activity_at: at,
            reply: None,
            created_at: at,
            followup_pending: false,
            human_takeover: false,
            last_auto_reply: None,
        }
    }

    /// Whether the inbound message `by` may have an auto-reply at `now`, when auto-replies
    /// come at most once in `every`: none was sent in that time, or the one sent was for `by`
    /// itself (processing it again finds its own).
    pub fn may_auto_reply(&self, by: MessageId, now: DateTime<Utc>, every: Duration) -> bool {
        let every = chrono::Duration::from_std(every).unwrap_or(chrono::Duration::MAX);
        match self.last_auto_reply {
            None => true,
            Some((at, id)) => id == by || now.signed_duration_since(at) >= every,
        }
    }

    /// What an inbound message does to it: one more unread, the reply route follows the
    /// contact, and a snoozed or closed thread opens again.
    pub fn received(&mut self, entry: &ThreadEntry) {
        self.unread = self.unread.saturating_add(1);
        self.status = ThreadStatus::Open;
        self.last_inbound_at = Some(entry.at);
        self.last_activity_at = self.last_activity_at.max(entry.at);
        self.reply = Some(ReplyRoute {
            channel: entry.channel,
            to: entry.from.clone(),
            from: entry.to.clone(),
        });
    }

    /// What a message sent through it does.
    pub fn sent(&mut self, at: DateTime<Utc>) {
        self.last_outbound_at = Some(at);
        self.last_activity_at = self.last_activity_at.max(at);
    }

    /// Applies a change the platform asked for.
    pub fn apply(&mut self, patch: &ThreadPatch) {
        if let Some(status) = patch.status {
            self.status = status;
            // A takeover lasts for the conversation: closing ends it.
            if status == ThreadStatus::Closed {
                self.human_takeover = false;
            }
        }
        if let Some(takeover) = patch.human_takeover {
            self.human_takeover = takeover;
        }
        if let Some(assignee) = &patch.assignee {
            self.assignee.clone_from(assignee);
        }
        let i = &mut self.insights;
        let mut touched = false;
        if let Some(v) = &patch.label {
            i.label.clone_from(v);
            touched = true;
        }
        if let Some(v) = &patch.next_step {
            i.next_step.clone_from(v);
            touched = true;
        }
        if let Some(v) = patch.next_followup_at {
            i.next_followup_at = v;
            self.followup_pending = v.is_some();
            touched = true;
        }
        if let Some(v) = &patch.summary {
            i.summary.clone_from(v);
            touched = true;
        }
        if touched {
            i.set_by = Some(patch.set_by.clone());
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }

    pub fn parse(raw: &str) -> Option<Direction> {
        match raw {
            "inbound" => Some(Direction::Inbound),
            "outbound" => Some(Direction::Outbound),
            _ => None,
        }
    }
}

/// One message of a thread's timeline: an inbound message, or one sent through the thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadEntry {
    /// The inbound message's id, or the sent message's (`GET /v1/messages/{id}`).
    pub message: MessageId,
    pub direction: Direction,
    pub channel: Channel,
    pub from: String,
    pub to: String,
    /// The text, cut at [`MAX_ENTRY_BODY`] bytes.
    pub body: String,
    pub at: DateTime<Utc>,
}

impl ThreadEntry {
    /// An inbound message's entry.
    pub fn inbound(m: &super::InboundMessage) -> ThreadEntry {
        ThreadEntry::new(
            m.id,
            Direction::Inbound,
            m.channel,
            (m.from.clone(), m.to.clone()),
            &m.body,
            m.received_at,
        )
    }

    pub fn new(
        message: MessageId,
        direction: Direction,
        channel: Channel,
        (from, to): (String, String),
        body: &str,
        at: DateTime<Utc>,
    ) -> ThreadEntry {
        let mut end = body.len().min(MAX_ENTRY_BODY);
        while !body.is_char_boundary(end) {
            end -= 1;
        }
        ThreadEntry {
            message,
            direction,
            channel,
            from,
            to,
            body: body[..end].to_owned(),
            at,
        }
    }
}

/// The identity a message from `address` on `channel` comes from, if the channel has one.
pub fn sender_identity(channel: Channel, address: &str) -> Option<Identity> {
    Identity::of(IdentityKind::for_channel(channel)?, address).ok()
}

/// A change to a thread: a field given replaces the stored one, `Some(None)` clears it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ThreadPatch {
    pub status: Option<ThreadStatus>,
    pub assignee: Option<Option<String>>,
    pub label: Option<Option<String>>,
    pub next_step: Option<Option<String>>,
    pub next_followup_at: Option<Option<DateTime<Utc>>>,
    pub summary: Option<Option<String>>,
    pub human_takeover: Option<bool>,
    /// Who asks: kept as the insights' `set_by` when they change.
    pub set_by: String,
}

impl ThreadPatch {
    /// Checks the limits; the error points at the field.
    pub fn check(&self) -> Result<(), FieldError> {
        fn given(v: &Option<Option<String>>) -> Option<&str> {
            v.as_ref().and_then(|v| v.as_deref())
        }
        // (field, value, most characters, whether it may hold line breaks and tabs)
        let fields = [
            ("set_by", Some(self.set_by.as_str()), MAX_LABEL, false),
            ("assignee", given(&self.assignee), MAX_LABEL, false),
            ("label", given(&self.label), MAX_LABEL, false),
            ("next_step", given(&self.next_step), MAX_NEXT_STEP, true),
            ("summary", given(&self.summary), MAX_SUMMARY, true),
        ];
        for (name, value, max, lines) in fields {
            let Some(v) = value else { continue };
            let bad = |c: char| c.is_control() && !(lines && matches!(c, '\n' | '\t'));
            if v.is_empty() || v.chars().count() > max || v.chars().any(bad) {
                let detail = format!("1 to {max} characters, no control characters");
                return Err(FieldError::new(format!("/{name}"), "invalid", detail));
            }
        }
        Ok(())
    }
}

/// `GET /v1/threads`'s filters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ThreadFilter {
    pub status: Option<ThreadStatus>,
    pub label: Option<String>,
    pub assignee: Option<String>,
    /// Only threads with unread messages (true) or without (false).
    pub unread: Option<bool>,
    /// The channel a reply would go on.
    pub channel: Option<Channel>,
    pub followup_due_before: Option<DateTime<Utc>>,
}

impl ThreadFilter {
    pub fn matches(&self, t: &Thread) -> bool {
        self.status.is_none_or(|s| t.status == s)
            && self
                .label
                .as_ref()
                .is_none_or(|l| t.insights.label.as_ref() == Some(l))
            && self
                .assignee
                .as_ref()
                .is_none_or(|a| t.assignee.as_ref() == Some(a))
            && self.unread.is_none_or(|u| (t.unread > 0) == u)
            && self
                .channel
                .is_none_or(|c| t.reply.as_ref().is_some_and(|r| r.channel == c))
            && self
                .followup_due_before
                .is_none_or(|b| t.insights.next_followup_at.is_some_and(|f| f < b))
    }
}

/// What `thread.followup_due` says for the follow-up due at `due`, announced as event `id`.
pub fn followup_notice(
    t: &Thread,
    due: DateTime<Utc>,
    id: super::notify::EventId,
) -> super::notify::Notice {
    use super::notify::{EventType, Notice, Subject};
    let data = serde_json::json!({
        "thread_id": t.id,
        "contact_id": t.contact.to_string(),
        "next_followup_at": due,
        "next_step": t.insights.next_step,
        "label": t.insights.label,
        "assignee": t.assignee,
        "status": t.status,
    });
    let mut notice = Notice::new(
        Some(t.tenant.clone()),
        EventType::ThreadFollowupDue,
        Subject::Data { data },
    );
    notice.id = id;
    notice
}

/// The key that names one follow-up of one thread (an event id derived from it and the time
/// it was claimed is the same on every try).
pub fn followup_key(t: &Thread, due: DateTime<Utc>) -> String {
    format!("followup:{}:{}", t.id, due.timestamp_millis())
}

/// Where a page of threads, newest activity first, goes on: below this thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadCursor {
    pub activity_ms: i64,
    pub id: ThreadId,
}

impl ThreadCursor {
    pub fn of(t: &Thread) -> ThreadCursor {
        ThreadCursor {
            activity_ms: t.last_activity_at.timestamp_millis(),
            id: t.id,
        }
    }

    /// The sort key: milliseconds, zero-padded so that strings sort as numbers, then the id.
    pub fn key(&self) -> String {
        format!("{:013}.{}", self.activity_ms.max(0), self.id)
    }

    pub fn parse(raw: &str) -> Option<ThreadCursor> {
        let (ms, id) = raw.split_once('.')?;
        if ms.len() != 13 || !ms.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(ThreadCursor {
            activity_ms: ms.parse().ok()?,
            id: ThreadId::parse(id)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(at: i64) -> ThreadEntry {
        ThreadEntry::new(
            MessageId::new(),
            Direction::Inbound,
            Channel::Sms,
            ("+14155550100".into(), "+14155550199".into()),
            "hi",
            DateTime::from_timestamp_millis(at).unwrap_or_default(),
        )
    }

    #[test]
    fn an_inbound_message_opens_the_thread_and_routes_the_reply() {
        let tenant = TenantId::parse("acme").expect("tenant");
        let mut t = Thread::open(tenant, ContactId::new(), Utc::now());
        t.status = ThreadStatus::Closed;
        t.received(&entry(Utc::now().timestamp_millis() + 5));
        assert_eq!((t.status, t.unread), (ThreadStatus::Open, 1));
        let reply = t.reply.clone().expect("reply route");
        assert_eq!(
            (reply.to.as_str(), reply.from.as_str()),
            ("+14155550100", "+14155550199")
        );
        assert!(ThreadFilter {
            unread: Some(true),
            ..Default::default()
        }
        .matches(&t));
        assert!(!ThreadFilter {
            channel: Some(Channel::Email),
            ..Default::default()
        }
        .matches(&t));
    }

    #[test]
    fn insights_remember_who_set_them_and_bad_ones_are_refused() {
        let tenant = TenantId::parse("acme").expect("tenant");
        let mut t = Thread::open(tenant, ContactId::new(), Utc::now());
        let patch = ThreadPatch {
            assignee: Some(Some("u1".into())),
            set_by: "key:hk_1".into(),
            ..Default::default()
        };
        t.apply(&patch);
        assert_eq!(t.insights.set_by, None, "an assignee is not an insight");
        let patch = ThreadPatch {
            label: Some(Some("lead".into())),
            set_by: "ai-worker".into(),
            ..Default::default()
        };
        t.apply(&patch);
        assert_eq!(t.insights.set_by.as_deref(), Some("ai-worker"));
        let bad = ThreadPatch {
            label: Some(Some("a\nb".into())),
            set_by: "key:hk_1".into(),
            ..Default::default()
        };
        assert_eq!(bad.check().map_err(|e| e.pointer), Err("/label".into()));
        let fine = ThreadPatch {
            summary: Some(Some("line one\nline two".into())),
            set_by: "key:hk_1".into(),
            ..Default::default()
        };
        assert!(fine.check().is_ok());
    }

    #[test]
    fn cursors_sort_as_strings_and_parse_back() {
        let t = Thread::open(
            TenantId::parse("acme").expect("tenant"),
            ContactId::new(),
            Utc::now(),
        );
        let c = ThreadCursor::of(&t);
        assert_eq!(ThreadCursor::parse(&c.key()), Some(c));
        assert!(ThreadCursor::parse("12.x").is_none());
        let body = "é".repeat(MAX_ENTRY_BODY);
        assert!(entry(0).body.len() <= MAX_ENTRY_BODY);
        let long = ThreadEntry::new(
            MessageId::new(),
            Direction::Outbound,
            Channel::Email,
            (String::new(), String::new()),
            &body,
            Utc::now(),
        );
        assert!(long.body.len() <= MAX_ENTRY_BODY);
    }
}
