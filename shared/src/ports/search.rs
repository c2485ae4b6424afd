//! Message search (`GET /v1/messages`) and bulk progress (`GET /v1/bulk/{id}`): what a store
//! answers, whatever indexes it keeps.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::{Channel, Message, MessageId, MessageStatus, Priority};

/// The filters of one search, all optional and combined with AND. Ids are UUIDv7, so a time
/// range is an id range and the order of ids is the order of accept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageFilter {
    pub status: Option<MessageStatus>,
    pub channel: Option<Channel>,
    pub priority: Option<Priority>,
    /// The recipient exactly as stored (the parsed, normalised address or number).
    pub to: Option<String>,
    pub source_type: Option<String>,
    pub source_id: Option<String>,
    pub external_id: Option<String>,
    pub bulk_id: Option<String>,
    /// Accepted at or after (inclusive).
    pub created_after: Option<DateTime<Utc>>,
    /// Accepted before (exclusive).
    pub created_before: Option<DateTime<Utc>>,
}

impl MessageFilter {
    /// The smallest id a match may have.
    pub fn lowest_id(&self) -> Option<MessageId> {
        self.created_after.map(first_id_at)
    }

    /// The id every match is below: the page's cursor or `created_before`, whichever is lower.
    pub fn below_id(&self, cursor: Option<MessageId>) -> Option<MessageId> {
        let before = self.created_before.map(first_id_at);
        match (cursor, before) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether a message passes every filter (what an index left to check, or a fake store).
    pub fn matches(&self, m: &Message) -> bool {
        let same = |want: &Option<String>, have: &Option<String>| {
            want.is_none() || want.as_deref() == have.as_deref()
        };
        self.status.is_none_or(|s| s == m.status)
            && self.channel.is_none_or(|c| c == m.channel)
            && self.priority.is_none_or(|p| p == m.priority)
            && self.to.as_deref().is_none_or(|t| t == m.to)
            && same(&self.source_type, &m.source_type)
            && same(&self.source_id, &m.source_id)
            && same(&self.external_id, &m.external_id)
            && same(&self.bulk_id, &m.bulk_id)
            && self.lowest_id().is_none_or(|low| m.id >= low)
            && self.below_id(None).is_none_or(|high| m.id < high)
    }
}

/// The smallest UUIDv7 of a millisecond: its time, the version and variant bits, zeros.
pub fn first_id_at(at: DateTime<Utc>) -> MessageId {
    let ms = u64::try_from(at.timestamp_millis())
        .unwrap_or(0)
        .min((1 << 48) - 1);
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    bytes[6] = 0x70;
    bytes[8] = 0x80;
    MessageId::from_uuid(Uuid::from_bytes(bytes))
}

/// One page of a search, newest first. A store reads a bounded number of index entries per
/// page, so a rare match in a large tenant gives short (even empty) pages that still go on:
/// `resume_below` is where the next page starts, `None` when nothing older can match.
#[derive(Debug, Clone, Default)]
pub struct SearchPage {
    pub items: Vec<Message>,
    pub resume_below: Option<MessageId>,
}

/// How many index entries a store reads for one page at most: a page answers in milliseconds
/// whatever the tenant holds.
pub const SEARCH_SCAN_BUDGET: usize = 5_000;

/// A tenant's bulk send as it was accepted, for the list of recent ones.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct BulkSummary {
    pub bulk_id: String,
    pub created_at: DateTime<Utc>,
    pub channel: Channel,
    pub priority: Priority,
    /// Recipients accepted (those refused at accept are not counted).
    pub recipients: u64,
}

impl BulkSummary {
    pub fn of(job: &crate::domain::BulkJob) -> BulkSummary {
        BulkSummary {
            bulk_id: job.bulk_id.clone(),
            created_at: job.created_at,
            channel: job.envelope.channel,
            priority: job.envelope.priority,
            recipients: job.recipients.len() as u64,
        }
    }
}

/// How many of a tenant's bulk sends the list shows, newest first.
pub const RECENT_BULK_SENDS: usize = 50;

/// A bulk send's progress: its messages by status, and the recipients not written yet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BulkProgress {
    pub by_status: BTreeMap<MessageStatus, u64>,
    /// Accepted recipients whose messages are still being written (the fan-out is running).
    pub pending: u64,
}
