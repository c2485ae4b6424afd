//! The console's lane counts, read through a shared cache. Counting a lane is a walk of its
//! index (about 100 ms for a 1M backlog on SQLite; five queue-attribute requests on SQS), and
//! a live overview asks every few seconds per viewer. So a count is reused for [`FRESH`];
//! after that, within [`USABLE`], the last count is answered at once while one recount runs
//! behind it, and the page says when the count was taken. With no usable count, a look waits
//! [`WAIT`] for a new one and otherwise answers "counting": the count goes on, and the live
//! refresh (or a reload) shows it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::Herald;
use crate::domain::TenantId;
use crate::ports::{LaneQueue, LaneStats, StoreError};

const FRESH: Duration = Duration::from_secs(1);
const USABLE: Duration = Duration::from_secs(60);
/// How long a look with no usable count waits for one before it answers "counting".
const WAIT: Duration = Duration::from_millis(40);
/// The most counts kept; past it the cache starts again (a bound, not an LRU).
const MAX_CACHED: usize = 10_000;

/// The lanes as counted at `at`.
#[derive(Debug)]
pub struct LaneSnapshot {
    pub at: DateTime<Utc>,
    pub lanes: Vec<LaneStats>,
}

#[derive(Default)]
struct Entry {
    counted: Option<(Instant, Arc<LaneSnapshot>)>,
    /// When the count under way started; one older than [`USABLE`] is taken for lost.
    counting_since: Option<Instant>,
}

type Counts = parking_lot::Mutex<HashMap<Option<TenantId>, Entry>>;

#[derive(Default)]
pub(crate) struct LaneCounts(Arc<Counts>);

/// What the cache can answer now.
enum Cached {
    Answer(Arc<LaneSnapshot>),
    AnswerAndRecount(Arc<LaneSnapshot>),
    /// Nothing usable, and a count is under way.
    Counting,
    /// Nothing usable: count (this caller starts it).
    Count,
}

fn look(counts: &Counts, key: &Option<TenantId>) -> Cached {
    let mut counts = counts.lock();
    if counts.len() >= MAX_CACHED && !counts.contains_key(key) {
        counts.clear();
    }
    let entry = counts.entry(key.clone()).or_default();
    let usable = entry
        .counted
        .as_ref()
        .filter(|(read, _)| read.elapsed() < USABLE)
        .map(|(read, snapshot)| (read.elapsed(), snapshot.clone()));
    let counting = entry.counting_since.is_some_and(|t| t.elapsed() < USABLE);
    match usable {
        Some((age, snapshot)) if age < FRESH || counting => Cached::Answer(snapshot),
        Some((_, snapshot)) => {
            entry.counting_since = Some(Instant::now());
            Cached::AnswerAndRecount(snapshot)
        }
        None if counting => Cached::Counting,
        None => {
            entry.counting_since = Some(Instant::now());
            Cached::Count
        }
    }
}

async fn count(
    queue: Arc<dyn LaneQueue>,
    counts: Arc<Counts>,
    key: Option<TenantId>,
) -> Result<Arc<LaneSnapshot>, StoreError> {
    let at = Utc::now();
    let result = queue.stats(at, key.as_ref()).await;
    let mut counts = counts.lock();
    let entry = counts.entry(key).or_default();
    entry.counting_since = None;
    let snapshot = Arc::new(LaneSnapshot { at, lanes: result? });
    entry.counted = Some((Instant::now(), snapshot.clone()));
    Ok(snapshot)
}

impl Herald {
    /// The lanes' counts for a tenant (or all), at most [`USABLE`] old, or None while a first
    /// count takes longer than [`WAIT`] (it goes on, and the next look has it); see the module.
    pub async fn lane_snapshot(
        &self,
        tenant: Option<&TenantId>,
    ) -> Result<Option<Arc<LaneSnapshot>>, StoreError> {
        let key = tenant.cloned();
        let recount = || {
            let (queue, counts) = (self.queue.clone(), self.lane_counts.0.clone());
            tokio::spawn(count(queue, counts, key.clone()))
        };
        match look(&self.lane_counts.0, &key) {
            Cached::Answer(snapshot) => Ok(Some(snapshot)),
            Cached::AnswerAndRecount(snapshot) => {
                recount();
                Ok(Some(snapshot))
            }
            Cached::Counting => Ok(None),
            Cached::Count => match tokio::time::timeout(WAIT, recount()).await {
                Ok(Ok(counted)) => counted.map(Some),
                Ok(Err(_)) | Err(_) => Ok(None),
            },
        }
    }
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::domain::Priority;
    use crate::ports::contract::{accept, message, tenant};
    use crate::sqlite::SqliteBackend;

    fn age(counts: &Counts, key: &Option<TenantId>, by: Duration) {
        let mut counts = counts.lock();
        let (read, _) = counts.get_mut(key).unwrap().counted.as_mut().unwrap();
        *read = Instant::now().checked_sub(by).unwrap();
    }

    fn depth(snapshot: &LaneSnapshot) -> u64 {
        snapshot.lanes[Priority::P3.index()].depth
    }

    /// One count at a time; a count is reused while fresh, answered while one recount runs
    /// once it is not, and counted afresh past its use.
    #[tokio::test]
    async fn a_count_is_reused_then_recounted_once_behind_the_answer() {
        let dir = tempfile::tempdir().unwrap();
        let queue: Arc<dyn LaneQueue> =
            Arc::new(SqliteBackend::open(&dir.path().join("t.db")).unwrap());
        let counts = Arc::new(Counts::default());
        let key = Some(tenant("acme"));
        let recount = || count(queue.clone(), counts.clone(), key.clone());
        assert!(matches!(look(&counts, &key), Cached::Count));
        assert!(
            matches!(look(&counts, &key), Cached::Counting),
            "one count at a time"
        );
        assert_eq!(depth(&recount().await.unwrap()), 0);

        let backend = SqliteBackend::open(&dir.path().join("t.db")).unwrap();
        accept(&backend, message(&tenant("acme"), Priority::P3)).await;
        let Cached::Answer(fresh) = look(&counts, &key) else {
            panic!("a fresh count is reused");
        };
        assert_eq!(depth(&fresh), 0);

        age(&counts, &key, Duration::from_secs(2));
        let Cached::AnswerAndRecount(stale) = look(&counts, &key) else {
            panic!("a stale count is answered and recounted");
        };
        assert_eq!(depth(&stale), 0);
        assert!(
            matches!(look(&counts, &key), Cached::Answer(_)),
            "one recount at a time"
        );
        assert_eq!(depth(&recount().await.unwrap()), 1);
        assert!(matches!(look(&counts, &key), Cached::Answer(s) if depth(&s) == 1));

        age(&counts, &key, USABLE);
        assert!(matches!(look(&counts, &key), Cached::Count));
        assert!(
            matches!(look(&counts, &None), Cached::Count),
            "each tenant has its own count"
        );
    }
}
