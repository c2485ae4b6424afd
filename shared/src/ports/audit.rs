//! The audit log's port: append an entry, read a scope's entries newest first. Nothing updates
//! or deletes an entry; only a backend's retention drops old ones.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::search::first_id_at;
use super::{StoreError, SEARCH_SCAN_BUDGET};
use crate::domain::audit::{Actor, AuditAction, AuditEntry, AuditId};
use crate::domain::suppression::Scope;

/// The filters of one read, all optional and combined with AND.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditFilter {
    pub action: Option<AuditAction>,
    pub actor: Option<Actor>,
    pub target: Option<String>,
    /// At or after (inclusive).
    pub after: Option<DateTime<Utc>>,
    /// Before (exclusive).
    pub before: Option<DateTime<Utc>>,
}

impl AuditFilter {
    /// The smallest id a match may have.
    pub fn lowest_id(&self) -> Option<AuditId> {
        self.after
            .map(|t| AuditId::from_uuid(first_id_at(t).as_uuid()))
    }

    /// The id every match is below: the cursor or `before`, whichever is lower.
    pub fn below_id(&self, cursor: Option<AuditId>) -> Option<AuditId> {
        let before = self
            .before
            .map(|t| AuditId::from_uuid(first_id_at(t).as_uuid()));
        match (cursor, before) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn matches(&self, e: &AuditEntry) -> bool {
        self.action.is_none_or(|a| a == e.action)
            && self.actor.as_ref().is_none_or(|a| *a == e.actor)
            && self
                .target
                .as_deref()
                .is_none_or(|t| Some(t) == e.target.as_deref())
            && self.lowest_id().is_none_or(|low| e.id >= low)
            && self.below_id(None).is_none_or(|high| e.id < high)
    }
}

/// One page, newest first. Like message search, a store reads a bounded number of entries per
/// page, so a page may be short and still go on: read until `resume_below` is `None`.
#[derive(Debug, Clone, Default)]
pub struct AuditPage {
    pub items: Vec<AuditEntry>,
    pub resume_below: Option<AuditId>,
}

/// Fills one page from entries read newest first: the one rule every store follows for when
/// a page ends (full, or [`SEARCH_SCAN_BUDGET`] entries read) and where the next one starts.
pub struct AuditPageFill<'a> {
    filter: &'a AuditFilter,
    limit: usize,
    scanned: usize,
    page: AuditPage,
}

impl<'a> AuditPageFill<'a> {
    pub fn new(filter: &'a AuditFilter, limit: usize) -> AuditPageFill<'a> {
        AuditPageFill {
            filter,
            limit,
            scanned: 0,
            page: AuditPage::default(),
        }
    }

    /// Entries read so far.
    pub fn scanned(&self) -> usize {
        self.scanned
    }

    /// Takes the next entry read; `true` when the page is done, resuming below that entry.
    pub fn take(&mut self, entry: AuditEntry) -> bool {
        self.scanned += 1;
        let id = entry.id;
        if self.filter.matches(&entry) {
            self.page.items.push(entry);
        }
        let done = self.page.items.len() == self.limit || self.scanned == SEARCH_SCAN_BUDGET;
        if done {
            self.page.resume_below = Some(id);
        }
        done
    }

    pub fn finish(self) -> AuditPage {
        self.page
    }
}

#[async_trait]
pub trait AuditLog: Send + Sync + 'static {
    /// Adds an entry; an id already stored is refused by the backend, never overwritten.
    async fn append(&self, entry: &AuditEntry) -> Result<(), StoreError>;

    /// Up to `limit` of `scope`'s entries that pass `filter`, below `cursor`, newest first.
    async fn audit_page(
        &self,
        scope: &Scope,
        filter: &AuditFilter,
        cursor: Option<AuditId>,
        limit: usize,
    ) -> Result<AuditPage, StoreError>;
}
