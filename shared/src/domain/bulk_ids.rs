//! A bulk send's ids. The job's id is a UUIDv7 whose low [`RECIPIENT_BITS`] bits are zero, and
//! the message of its n-th accepted recipient (from 0) has that id plus n + 1. So a job's
//! messages are one run of ids, ascending in the order of its recipients and inside the job's
//! millisecond, and two jobs' runs never overlap: a store can list a job's messages from the
//! job alone (DynamoDB's search keeps no index entry per bulk message: docs/dynamodb.md).

use chrono::{DateTime, Utc};
use uuid::{timestamp::context::NoContext, Timestamp, Uuid};

use super::MessageId;

/// The low bits of a job's id that number its recipients.
pub const RECIPIENT_BITS: u32 = 24;
/// The most recipients one bulk send may have: every one needs an id in the job's run.
pub const MAX_BULK_RECIPIENTS: usize = (1 << RECIPIENT_BITS) - 1;

const PREFIX: &str = "bulk_";
const LOW_BITS: u128 = (1 << RECIPIENT_BITS) - 1;

/// A bulk job's id, and so the ids of its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct BulkIds(Uuid);

impl BulkIds {
    /// A new job accepted at `at` (its millisecond is its messages' too).
    pub fn new(at: DateTime<Utc>) -> BulkIds {
        let secs = u64::try_from(at.timestamp()).unwrap_or(0);
        let stamp = Timestamp::from_unix(NoContext, secs, at.timestamp_subsec_nanos());
        BulkIds(Uuid::from_u128(Uuid::new_v7(stamp).as_u128() & !LOW_BITS))
    }

    /// The ids of a job named `bulk_id`; `None` for a job from before ids were derived (its
    /// messages' ids are random and stored with its recipients) or for text that is no job id.
    pub fn of(bulk_id: &str) -> Option<BulkIds> {
        let hex = bulk_id.strip_prefix(PREFIX)?;
        let id = Uuid::try_parse(hex).ok()?;
        (id.get_version_num() == 7 && id.as_u128() & LOW_BITS == 0).then_some(BulkIds(id))
    }

    /// The job's id as the API shows it: `bulk_` and 32 hex digits.
    pub fn bulk_id(&self) -> String {
        format!("{PREFIX}{}", self.0.simple())
    }

    /// The message id of the job's recipient at `position`; `None` past the last one possible.
    pub fn recipient(&self, position: usize) -> Option<MessageId> {
        (position < MAX_BULK_RECIPIENTS)
            .then(|| MessageId::from_uuid(Uuid::from_u128(self.0.as_u128() + position as u128 + 1)))
    }

    /// How many of the job's positions have an id below `id` (all of them for an id past the
    /// run, none for one before it).
    pub fn positions_below(&self, id: MessageId) -> usize {
        let first = self.0.as_u128() + 1;
        let below = id.as_uuid().as_u128().saturating_sub(first);
        below.min(MAX_BULK_RECIPIENTS as u128) as usize
    }

    /// The job whose run `id` would fall in, and its position there. Any UUIDv7 has one: whether
    /// that job exists is for the store to say.
    pub fn containing(id: MessageId) -> Option<(BulkIds, usize)> {
        let job = Uuid::from_u128(id.as_uuid().as_u128() & !LOW_BITS);
        if job.get_version_num() != 7 {
            return None;
        }
        let ids = BulkIds(job);
        Some((ids, ids.position(id)?))
    }

    /// Where `id` falls in the job's run: its recipient's position; `None` outside the run.
    pub fn position(&self, id: MessageId) -> Option<usize> {
        let offset = id.as_uuid().as_u128().checked_sub(self.0.as_u128())?;
        (1..=MAX_BULK_RECIPIENTS as u128)
            .contains(&offset)
            .then(|| offset as usize - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_names_its_job_and_position() {
        let job = BulkIds::new(Utc::now());
        let id = job.recipient(41).unwrap();
        assert_eq!(BulkIds::containing(id), Some((job, 41)));
        assert_eq!(
            BulkIds::containing(MessageId::from_uuid(job.0)),
            None,
            "the job's own id"
        );
    }

    #[test]
    fn a_jobs_messages_are_one_ascending_run_inside_its_millisecond() {
        let at = Utc::now();
        let job = BulkIds::new(at);
        assert_eq!(BulkIds::of(&job.bulk_id()), Some(job), "the id reads back");
        let ids: Vec<MessageId> = (0..1_000).filter_map(|n| job.recipient(n)).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ascending");
        assert!(
            ids.iter()
                .all(|id| id.millisecond() == at.timestamp_millis()),
            "the job's millisecond"
        );
        assert_eq!(job.position(ids[0]), Some(0));
        assert_eq!(job.position(ids[999]), Some(999));
        assert_eq!(
            job.recipient(MAX_BULK_RECIPIENTS),
            None,
            "no id outside the run"
        );
        assert_eq!(job.positions_below(ids[10]), 10);
        assert_eq!(job.positions_below(MessageId::from_uuid(Uuid::nil())), 0);
        let past = MessageId::from_uuid(Uuid::max());
        assert_eq!(job.positions_below(past), MAX_BULK_RECIPIENTS);
        let last = job.recipient(MAX_BULK_RECIPIENTS - 1);
        assert!(last.is_some_and(|id| id.millisecond() == at.timestamp_millis()));
    }

    #[test]
    fn runs_of_two_jobs_never_meet() {
        let at = Utc::now();
        let (a, b) = (BulkIds::new(at), BulkIds::new(at));
        assert_ne!(a, b, "random bits differ");
        let (low, high) = if a < b { (a, b) } else { (b, a) };
        let low_last = low.recipient(MAX_BULK_RECIPIENTS - 1);
        assert!(low_last.is_some_and(|id| Some(id) < high.recipient(0)));
        assert_eq!(high.position(low.recipient(5).unwrap_or_default()), None);
    }

    #[test]
    fn ids_from_before_or_not_of_a_job_are_refused() {
        let random = format!("bulk_{}", Uuid::now_v7().simple());
        let refused = BulkIds::of(&random).map(|_| ());
        // A random UUIDv7 has its low 24 bits all zero once in 16 million.
        assert!(refused.is_none() || random.ends_with("000000"));
        assert_eq!(BulkIds::of("bulk_zz"), None);
        assert_eq!(BulkIds::of(&Uuid::now_v7().simple().to_string()), None);
        let mut v4 = *Uuid::now_v7().as_bytes();
        v4[6] = (v4[6] & 0x0f) | 0x40;
        let v4 = Uuid::from_u128(Uuid::from_bytes(v4).as_u128() & !LOW_BITS);
        assert_eq!(
            BulkIds::of(&format!("bulk_{}", v4.simple())),
            None,
            "not a UUIDv7"
        );
    }
}
