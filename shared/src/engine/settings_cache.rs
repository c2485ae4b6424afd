//! A tenant's settings read through a short cache: the hot paths (every inbound message, every
//! send, every bulk hand-off) need them, and they change rarely. A change made through the
//! engine applies at once in this process, and within [`SETTINGS_TTL`] in the others (the
//! other Lambda functions, on AWS).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::domain::TenantId;

/// How long a settings read is used before it is read again.
pub const SETTINGS_TTL: Duration = Duration::from_secs(30);
/// The most tenants kept; past it the cache starts again (a bound, not an LRU).
const MAX_CACHED: usize = 10_000;

pub(crate) struct SettingsCache<T>(parking_lot::Mutex<Cached<T>>);

struct Cached<T> {
    values: HashMap<TenantId, (Instant, T)>,
    /// Changes made so far: a read keeps its value only if none was made while it ran, so a
    /// slow read from before a change cannot hide the change.
    changes: u64,
}

impl<T> Default for SettingsCache<T> {
    fn default() -> Self {
        SettingsCache(parking_lot::Mutex::new(Cached {
            values: HashMap::new(),
            changes: 0,
        }))
    }
}

impl<T: Clone> SettingsCache<T> {
    pub(crate) fn get(&self, tenant: &TenantId) -> Option<T> {
        let cache = self.0.lock();
        let (read_at, value) = cache.values.get(tenant)?;
        (read_at.elapsed() < SETTINGS_TTL).then(|| value.clone())
    }

    /// The cached value, or `read`'s, kept unless a change came meanwhile.
    pub(crate) async fn read_through<E, F>(&self, tenant: &TenantId, read: F) -> Result<T, E>
    where
        F: std::future::Future<Output = Result<T, E>>,
    {
        if let Some(value) = self.get(tenant) {
            return Ok(value);
        }
        let since = self.changes();
        let value = read.await?;
        self.keep_read(tenant, value.clone(), since);
        Ok(value)
    }

    /// How many changes were made so far (for [`SettingsCache::keep_read`]).
    pub(crate) fn changes(&self) -> u64 {
        self.0.lock().changes
    }

    /// Keeps a value read after `since` changes, unless another change came meanwhile.
    pub(crate) fn keep_read(&self, tenant: &TenantId, value: T, since: u64) {
        let mut cache = self.0.lock();
        if cache.changes == since {
            cache.insert(tenant, value);
        }
    }

    /// Keeps a value this process just changed.
    pub(crate) fn put(&self, tenant: &TenantId, value: T) {
        let mut cache = self.0.lock();
        cache.changes += 1;
        cache.insert(tenant, value);
    }
}

impl<T> Cached<T> {
    fn insert(&mut self, tenant: &TenantId, value: T) {
        if self.values.len() >= MAX_CACHED {
            self.values.clear();
        }
        self.values.insert(tenant.clone(), (Instant::now(), value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_read_that_spans_a_change_does_not_replace_it() {
        let cache = SettingsCache::default();
        let tenant = TenantId::parse("acme").unwrap();
        let since = cache.changes();
        // A change lands while a read of the old value is on its way ...
        cache.put(&tenant, "new");
        cache.keep_read(&tenant, "old", since);
        assert_eq!(cache.get(&tenant), Some("new"));
        // ... and a read that began after it is kept.
        cache.keep_read(&tenant, "read later", cache.changes());
        assert_eq!(cache.get(&tenant), Some("read later"));
        let other = TenantId::parse("globex").unwrap();
        let read = cache.read_through(&other, async { Ok::<_, ()>("theirs") });
        assert_eq!(read.await, Ok("theirs"));
        assert_eq!(cache.get(&other), Some("theirs"));
    }
}
