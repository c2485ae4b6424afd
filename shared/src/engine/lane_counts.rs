//! The console's lane counts, read through a shared cache. Counting a lane is a walk of its
//! index (about 70 ms for a 1M backlog on SQLite; five queue-attribute requests on SQS), and a
//! live overview asks every few seconds per viewer. So a count is reused for [`FRESH`]; after
//! that, within [`USABLE`], the last count is answered at once while one refresh runs behind
//! it, and the page says when the count was taken. Only a count older than that is waited for.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::Herald;
use crate::domain::TenantId;
use crate::ports::{LaneQueue, LaneStats, StoreError};

const FRESH: Duration = Duration::from_secs(1);
const USABLE: Duration = Duration::from_secs(60);
/// The most counts kept; past it the cache starts again (a bound, not an LRU).
const MAX_CACHED: usize = 10_000;

/// The lanes as counted at `at`.
#[derive(Debug)]
pub struct LaneSnapshot {
    pub at: DateTime<Utc>,
    pub lanes: Vec<LaneStats>,
}

struct Entry {
    read: Instant,
    snapshot: Arc<LaneSnapshot>,
    refreshing: bool,
}

type Counts = parking_lot::Mutex<HashMap<Option<TenantId>, Entry>>;

#[derive(Default)]
pub(crate) struct LaneCounts(Arc<Counts>);

/// What the cache can answer now.
enum Cached {
    Answer(Arc<LaneSnapshot>),
    AnswerAndRefresh(Arc<LaneSnapshot>),
    Nothing,
}

fn look(counts: &Counts, key: &Option<TenantId>) -> Cached {
    let mut counts = counts.lock();
    let Some(entry) = counts.get_mut(key) else {
        return Cached::Nothing;
    };
    let age = entry.read.elapsed();
    if age < FRESH || (age < USABLE && entry.refreshing) {
        return Cached::Answer(entry.snapshot.clone());
    }
    if age < USABLE {
        entry.refreshing = true;
        return Cached::AnswerAndRefresh(entry.snapshot.clone());
    }
    Cached::Nothing
}

async fn count(
    queue: &dyn LaneQueue,
    counts: &Counts,
    key: Option<TenantId>,
) -> Result<Arc<LaneSnapshot>, StoreError> {
    let at = Utc::now();
    let result = queue.stats(at, key.as_ref()).await;
    let mut counts = counts.lock();
    match result {
        Ok(lanes) => {
            let snapshot = Arc::new(LaneSnapshot { at, lanes });
            if counts.len() >= MAX_CACHED {
                counts.clear();
            }
            let entry = Entry {
                read: Instant::now(),
                snapshot: snapshot.clone(),
                refreshing: false,
            };
            counts.insert(key, entry);
            Ok(snapshot)
        }
        Err(e) => {
            // The next look tries again.
            if let Some(entry) = counts.get_mut(&key) {
                entry.refreshing = false;
            }
            Err(e)
        }
    }
}

impl Herald {
    /// The lanes' counts for a tenant (or all), at most [`USABLE`] old; see the module.
    pub async fn lane_snapshot(
        &self,
        tenant: Option<&TenantId>,
    ) -> Result<Arc<LaneSnapshot>, StoreError> {
        let key = tenant.cloned();
        match look(&self.lane_counts.0, &key) {
            Cached::Answer(snapshot) => Ok(snapshot),
            Cached::AnswerAndRefresh(snapshot) => {
                let (queue, counts) = (self.queue.clone(), self.lane_counts.0.clone());
                tokio::spawn(async move {
                    if let Err(e) = count(queue.as_ref(), &counts, key).await {
                        tracing::warn!(error = %e, "lane counts unreadable");
                    }
                });
                Ok(snapshot)
            }
            Cached::Nothing => count(self.queue.as_ref(), &self.lane_counts.0, key).await,
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
        let entry = counts.get_mut(key).unwrap();
        entry.read = Instant::now().checked_sub(by).unwrap();
    }

    fn depth(snapshot: &LaneSnapshot) -> u64 {
        snapshot.lanes[Priority::P3.index()].depth
    }

    /// A count is reused while fresh, answered while one refresh runs once it is not, and
    /// waited for only past its use.
    #[tokio::test]
    async fn a_count_is_reused_then_refreshed_once_behind_the_answer() {
        let dir = tempfile::tempdir().unwrap();
        let b = SqliteBackend::open(&dir.path().join("t.db")).unwrap();
        let counts = Counts::default();
        let key = Some(tenant("acme"));
        assert!(matches!(look(&counts, &key), Cached::Nothing));
        assert_eq!(depth(&count(&b, &counts, key.clone()).await.unwrap()), 0);

        accept(&b, message(&tenant("acme"), Priority::P3)).await;
        let Cached::Answer(fresh) = look(&counts, &key) else {
            panic!("a fresh count is reused");
        };
        assert_eq!(depth(&fresh), 0);

        age(&counts, &key, Duration::from_secs(2));
        let Cached::AnswerAndRefresh(stale) = look(&counts, &key) else {
            panic!("a stale count is answered and refreshed");
        };
        assert_eq!(depth(&stale), 0);
        assert!(
            matches!(look(&counts, &key), Cached::Answer(_)),
            "one refresh at a time"
        );
        assert_eq!(depth(&count(&b, &counts, key.clone()).await.unwrap()), 1);
        assert!(matches!(look(&counts, &key), Cached::Answer(s) if depth(&s) == 1));

        age(&counts, &key, USABLE);
        assert!(matches!(look(&counts, &key), Cached::Nothing));
        assert!(
            matches!(look(&counts, &None), Cached::Nothing),
            "each tenant has its own count"
        );
    }
}
