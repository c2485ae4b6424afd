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

pub(crate) struct SettingsCache<T>(parking_lot::Mutex<HashMap<TenantId, (Instant, T)>>);

impl<T> Default for SettingsCache<T> {
    fn default() -> Self {
        SettingsCache(parking_lot::Mutex::new(HashMap::new()))
    }
}

impl<T: Clone> SettingsCache<T> {
    pub(crate) fn get(&self, tenant: &TenantId) -> Option<T> {
        let cache = self.0.lock();
        let (read_at, value) = cache.get(tenant)?;
        (read_at.elapsed() < SETTINGS_TTL).then(|| value.clone())
    }

    pub(crate) fn put(&self, tenant: &TenantId, value: T) {
        let mut cache = self.0.lock();
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(tenant.clone(), (Instant::now(), value));
    }
}
