//! A small time-to-live cache for look-ups from another service that may be a little stale
//! (challenge windows, incentive links: they change rarely, requests arrive all the time).

use std::{
    collections::HashMap,
    hash::Hash,
    sync::Mutex,
    time::{Duration, Instant},
};

/// Values by key, each fresh for `ttl` after it was put (or for the time given with
/// [`TtlCache::put_for`]).
#[derive(Debug)]
pub struct TtlCache<K, V> {
    ttl: Duration,
    /// Expiry and value.
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: Hash + Eq, V: Clone> TtlCache<K, V> {
    /// An empty cache.
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, entries: Mutex::default() }
    }

    /// The value of `key` if it is fresh.
    pub fn get(&self, key: &K) -> Option<V> {
        let entries = self.entries.lock().expect("cache lock");
        entries.get(key).filter(|(expires, _)| *expires > Instant::now()).map(|(_, v)| v.clone())
    }

    /// The value of `key` however old (for when a refresh failed).
    pub fn get_stale(&self, key: &K) -> Option<V> {
        let entries = self.entries.lock().expect("cache lock");
        entries.get(key).map(|(_, v)| v.clone())
    }

    /// Forgets `key`.
    pub fn remove(&self, key: &K) {
        self.entries.lock().expect("cache lock").remove(key);
    }

    /// Forgets everything.
    pub fn clear(&self) {
        self.entries.lock().expect("cache lock").clear();
    }

    /// Stores `value` for `key`, fresh for the cache's time to live.
    pub fn put(&self, key: K, value: V) {
        self.put_for(key, value, self.ttl);
    }

    /// Stores `value` for `key`, fresh for `ttl` (dropping long-expired entries when the
    /// cache grows).
    pub fn put_for(&self, key: K, value: V, ttl: Duration) {
        let now = Instant::now();
        let mut entries = self.entries.lock().expect("cache lock");
        if entries.len() >= 10_000 {
            // Keep what a failed refresh could still fall back on for a while.
            let keep = self.ttl * 60;
            entries.retain(|_, (expires, _)| *expires + keep > now);
        }
        entries.insert(key, (now + ttl, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_served_until_its_time_to_live_ends() {
        let cache = TtlCache::new(Duration::from_millis(50));
        cache.put("acme", 1);
        assert_eq!(cache.get(&"acme"), Some(1));
        assert_eq!(cache.get(&"globex"), None);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(cache.get(&"acme"), None);
        assert_eq!(cache.get_stale(&"acme"), Some(1));
        cache.put("globex", 2);
        cache.remove(&"acme");
        assert_eq!((cache.get_stale(&"acme"), cache.get(&"globex")), (None, Some(2)));
        cache.clear();
        assert_eq!(cache.get_stale(&"globex"), None);
        cache.put_for("initech", 3, Duration::ZERO);
        assert_eq!((cache.get(&"initech"), cache.get_stale(&"initech")), (None, Some(3)));
    }
}
