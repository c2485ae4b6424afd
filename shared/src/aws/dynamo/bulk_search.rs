//! Search's second source. A bulk message whose id derives from its job's (`domain::bulk_ids`)
//! has no `by_tenant` entry, which saves a write unit per recipient (docs/cost.md). A page finds
//! such messages through their jobs: it queries the tenant's job listings (`bulk_sends.rs`) in
//! the milliseconds of the page's id range, newest first, with the job-level filters (channel,
//! priority, source, bulk id) applied by DynamoDB, and names the messages' ids by arithmetic,
//! since a job's messages are one run of ids. The table read that follows (`search.rs`,
//! `page_of`) checks each message's tenant, status and recipient-level filters, as it does for
//! the index's candidates.

use std::collections::HashMap;
use std::ops::Range;

use chrono::{DateTime, Utc};

use aws_sdk_dynamodb::types::AttributeValue;

use super::batch::Read;
use super::bulk::{part_recipients, JOB_TTL_DAYS, PART_RECIPIENTS};
use super::bulk_sends::{listing_partition, BY_JOB, FANNED_OUT};
use super::item::{get_n, get_s, n, s, Item};
use super::search::{equal_terms, ShardPage};
use super::{unavailable, DynamoStore};
use crate::domain::{BulkIds, MessageId, TenantId};
use crate::ports::{first_id_at, MessageFilter, StoreError};

/// Listings read per query page.
const LISTINGS_PER_QUERY: i32 = 200;
/// Query pages one search page reads at most.
const QUERIES_PER_PAGE: usize = 5;

/// A listed job in the page's range: its ids and how many recipients it has.
struct ListedJob {
    ids: BulkIds,
    recipients: usize,
    millisecond: i64,
    fanned_out: bool,
}

/// The listing query's key condition and filter for `f` (listing sort keys are a job's
/// millisecond times 1,000 plus a tie-breaker below 1,000: `bulk_sends.rs`).
fn listing_query(
    tenant: &TenantId,
    f: &MessageFilter,
    below: Option<MessageId>,
) -> (
    HashMap<String, String>,
    HashMap<String, AttributeValue>,
    String,
) {
    let low_ms = f.lowest_id().map_or(0, |id| id.millisecond());
    let high_ms = below.map_or(i64::MAX / 1000 - 1, |id| id.millisecond());
    let mut values = HashMap::from([
        (":p".to_owned(), s(listing_partition(tenant))),
        (":lo".to_owned(), n(low_ms.saturating_mul(1000))),
        (
            ":hi".to_owned(),
            n(high_ms.saturating_mul(1000).saturating_add(999)),
        ),
        (":yes".to_owned(), AttributeValue::Bool(true)),
    ]);
    let mut names = HashMap::from([("#by_job".to_owned(), BY_JOB.to_owned())]);
    let mut terms = vec!["#by_job = :yes".to_owned()];
    let wanted = [
        ("channel", f.channel.map(|c| c.as_str().to_owned())),
        ("priority", f.priority.map(|p| p.as_str().to_owned())),
        ("source_type", f.source_type.clone()),
        ("source_id", f.source_id.clone()),
        ("job", f.bulk_id.clone()),
    ];
    equal_terms(wanted, &mut terms, &mut names, &mut values);
    (names, values, terms.join(" AND "))
}

fn listed_job(item: &Item) -> Result<ListedJob, StoreError> {
    let job = get_s(item, "job")?;
    let ids = BulkIds::of(job)
        .ok_or_else(|| StoreError::Corrupt(format!("listing of {job}: not a derived job id")))?;
    let sort_key: i64 = get_n(item, "part")?;
    Ok(ListedJob {
        ids,
        recipients: get_n(item, "recipients")?,
        millisecond: sort_key / 1000,
        fanned_out: matches!(item.get(FANNED_OUT), Some(AttributeValue::Bool(true))),
    })
}

impl DynamoStore {
    /// Up to `budget` candidate ids of bulk messages below `below`, newest first, and where the
    /// source stopped when it did not reach the end of the range.
    pub(super) async fn bulk_candidates(
        &self,
        tenant: &TenantId,
        f: &MessageFilter,
        below: Option<MessageId>,
        budget: usize,
    ) -> Result<ShardPage, StoreError> {
        let (mut jobs, cut) = self.listed_jobs(tenant, f, below, budget).await?;
        jobs.sort_unstable_by_key(|j| std::cmp::Reverse(j.ids));
        let low = f.lowest_id();
        let mut ids = Vec::new();
        for job in &jobs {
            // The positions whose ids are in [low, below), of those written.
            let all = job.recipients;
            let top = below.map_or(all, |b| all.min(job.ids.positions_below(b)));
            let bottom = low.map_or(0, |l| job.ids.positions_below(l));
            if top <= bottom {
                continue;
            }
            let top = top.min(self.written_of(job).await?);
            let positions = self.candidate_positions(job, f, bottom..top).await?;
            for position in positions {
                let Some(id) = job.ids.recipient(position) else {
                    continue;
                };
                ids.push(id);
                if ids.len() == budget {
                    return Ok(ShardPage {
                        ids,
                        stopped_at: Some(id),
                    });
                }
            }
        }
        Ok(ShardPage {
            ids,
            stopped_at: cut,
        })
    }

    /// The positions in `range` a page names, highest first: every one; or, for a recipient or
    /// external-id filter while the job's parts are kept, those whose recipient matches (about
    /// 1.25 read units per 1,000 recipients, where reading their messages would cost 500).
    async fn candidate_positions(
        &self,
        job: &ListedJob,
        f: &MessageFilter,
        range: Range<usize>,
    ) -> Result<Box<dyn Iterator<Item = usize> + Send>, StoreError> {
        let by_recipient = f.to.is_some() || f.external_id.is_some();
        if !by_recipient || !parts_kept(job, Utc::now()) {
            return Ok(Box::new(range.rev()));
        }
        // A part holds at most PART_RECIPIENTS, so the parts up to this one hold only
        // positions below the range.
        let below_range = range.start / PART_RECIPIENTS;
        let mut matched = self.positions_in_parts(job, f, below_range).await?;
        matched.retain(|p| range.contains(p));
        matched.sort_unstable_by(|a, b| b.cmp(a));
        Ok(Box::new(matched.into_iter()))
    }

    /// The positions of a job's recipients, in its parts after `after_part`, that match the
    /// filter's recipient and external id.
    async fn positions_in_parts(
        &self,
        job: &ListedJob,
        f: &MessageFilter,
        after_part: usize,
    ) -> Result<Vec<usize>, StoreError> {
        let bulk_id = job.ids.bulk_id();
        let corrupt = |e: String| StoreError::Corrupt(format!("bulk job {bulk_id}: {e}"));
        let mut positions = Vec::new();
        // Part 0 is the job's head; its recipients are in parts 1 and on.
        let from = after_part + 1;
        self.for_each_part(&bulk_id, from, Some("recipients"), |part| {
            let matching = part_recipients(part)
                .map_err(corrupt)?
                .into_iter()
                .filter(|r| f.to.as_ref().is_none_or(|to| *to == r.to))
                .filter(|r| {
                    f.external_id
                        .as_ref()
                        .is_none_or(|e| r.external_id.as_ref() == Some(e))
                })
                .filter_map(|r| job.ids.position(r.id));
            positions.extend(matching);
            Ok(())
        })
        .await?;
        Ok(positions)
    }

    /// How many of a job's recipients may have their message written (or left to its claim),
    /// so a page names no message the fan-out has not reached.
    async fn written_of(&self, job: &ListedJob) -> Result<usize, StoreError> {
        if job.fanned_out {
            return Ok(job.recipients);
        }
        let head = self
            .fan_out_head(&job.ids.bulk_id(), Read::Eventual)
            .await?;
        // No head: the job expired with its fan-out unfinished; what was written is still there.
        Ok(head.map_or(job.recipients, |h| h.reached(job.recipients)))
    }

    /// The listed jobs whose ids all lie above where the listing was left unread (the cut,
    /// `None` when it was read to the end of the range). Listings of the cut's millisecond are
    /// left for the next page: their order in the listing is not their ids' order.
    async fn listed_jobs(
        &self,
        tenant: &TenantId,
        f: &MessageFilter,
        below: Option<MessageId>,
        budget: usize,
    ) -> Result<(Vec<ListedJob>, Option<MessageId>), StoreError> {
        let (names, values, filter) = listing_query(tenant, f, below);
        let (mut jobs, mut start) = (Vec::new(), None);
        // The millisecond of the last listing read, while the listing goes on past it.
        let mut last_ms = None;
        for _ in 0..QUERIES_PER_PAGE {
            let out = self
                .client
                .query()
                .table_name(self.bulk_table()?)
                .key_condition_expression("bulk_id = :p AND part BETWEEN :lo AND :hi")
                .filter_expression(&filter)
                .set_expression_attribute_names(Some(names.clone()))
                .set_expression_attribute_values(Some(values.clone()))
                .scan_index_forward(false)
                .limit(LISTINGS_PER_QUERY)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| unavailable("Query", e))?;
            for item in out.items() {
                jobs.push(listed_job(item)?);
            }
            start = out.last_evaluated_key;
            let Some(last) = &start else {
                return Ok((jobs, None));
            };
            let cut = get_n::<i64>(last, "part")? / 1000;
            last_ms = Some(cut);
            let complete: usize = jobs
                .iter()
                .filter(|j| j.millisecond > cut)
                .map(|j| j.recipients)
                .sum();
            if complete >= budget {
                break;
            }
        }
        let Some(last_ms) = last_ms else {
            return Ok((jobs, None));
        };
        if below.is_some_and(|b| last_ms >= b.millisecond()) {
            // Over a thousand jobs in the cursor's own millisecond: a cut there would not move
            // the cursor, so this page takes what it read.
            return Ok((jobs, None));
        }
        jobs.retain(|j| j.millisecond > last_ms);
        Ok((jobs, first_id_at_ms(last_ms + 1)))
    }
}

/// Whether a job's parts are surely still stored: TTL removes them no sooner than
/// `JOB_TTL_DAYS` after the accept for any job, whichever release stored it (an hour's margin
/// for clocks), while its messages and listing stay for the retention.
fn parts_kept(job: &ListedJob, now: DateTime<Utc>) -> bool {
    let kept = chrono::Duration::days(JOB_TTL_DAYS) - chrono::Duration::hours(1);
    job.millisecond > (now - kept).timestamp_millis()
}

/// The smallest id of millisecond `ms`.
fn first_id_at_ms(ms: i64) -> Option<MessageId> {
    chrono::DateTime::from_timestamp_millis(ms).map(first_id_at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jobs_parts_are_read_only_while_ttl_cannot_have_removed_them() {
        let now = Utc::now();
        let job = |age: chrono::Duration| ListedJob {
            ids: BulkIds::new(now - age),
            recipients: 10,
            millisecond: (now - age).timestamp_millis(),
            fanned_out: true,
        };
        assert!(parts_kept(&job(chrono::Duration::days(6)), now));
        assert!(!parts_kept(&job(chrono::Duration::days(7)), now));
        assert!(!parts_kept(
            &job(chrono::Duration::days(7) - chrono::Duration::minutes(30)),
            now
        ));
    }
}
