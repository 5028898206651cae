//! A small time-to-live cache for look-ups from another service that may be a little stale
//! (challenge windows, incentive links: they change rarely, requests arrive all the time).

use std::{
    collections::HashMap,
    hash::Hash,
    sync::Mutex,
    time::{Duration, Instant},
};

/// Values by key, each fresh for `ttl` after it was put (or for the time given with
/// [`TtlCache::put_for`]); at most `capacity` entries when made with
/// [`TtlCache::with_capacity`].
#[derive(Debug)]
pub struct TtlCache<K, V> {
    ttl: Duration,
    capacity: usize,
    /// Expiry and value.
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: Hash + Eq + Clone, V: Clone> TtlCache<K, V> {
    /// An empty cache.
    pub fn new(ttl: Duration) -> Self {
        Self::with_capacity(ttl, usize::MAX)
    }

    /// An empty cache that never holds more than `capacity` entries (at least 1): when full,
    /// the entries that expire first make room (a tenth of them at a time). For keys a caller chooses (ids looked up on
    /// their behalf), so that random keys cannot grow it.
    pub fn with_capacity(ttl: Duration, capacity: usize) -> Self {
        Self { ttl, capacity: capacity.max(1), entries: Mutex::default() }
    }

    /// Entries held, fresh or not.
    pub fn len(&self) -> usize {
        self.entries.lock().expect("cache lock").len()
    }

    /// Whether it holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            entries.retain(|_, (expires, _)| *expires > now);
            if entries.len() >= self.capacity {
                // Still full of fresh entries: the tenth that expires first goes in one pass,
                // so a stream of new keys costs O(1) per insert on average, not a scan each.
                let mut expiries: Vec<Instant> = entries.values().map(|(e, _)| *e).collect();
                let n = (expiries.len() / 10).max(1);
                let cutoff = *expiries.select_nth_unstable(n - 1).1;
                let mut dropped = 0;
                entries.retain(|_, (expires, _)| {
                    let drop = *expires <= cutoff && dropped < n;
                    dropped += usize::from(drop);
                    !drop
                });
            }
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

    #[test]
    fn a_full_cache_drops_the_tenth_that_expires_first() {
        let cache = TtlCache::with_capacity(Duration::from_secs(60), 100);
        for i in 0..100u64 {
            cache.put_for(i, i, Duration::from_secs(10 + i));
        }
        cache.put(100, 100);
        let kept: Vec<u64> = (0..=100).filter(|i| cache.get(i).is_some()).collect();
        assert_eq!(kept, (10..=100).collect::<Vec<_>>());
    }

    #[test]
    fn a_capped_cache_never_holds_more_than_its_capacity() {
        let cache = TtlCache::with_capacity(Duration::from_secs(60), 3);
        cache.put_for(0, 0, Duration::from_secs(1));
        for i in 1..1000 {
            cache.put(i, i);
        }
        assert_eq!(cache.len(), 3);
        // The entries expiring first made room; the latest ones are kept.
        assert_eq!(
            (cache.get(&0), cache.get(&997), cache.get(&998), cache.get(&999)),
            (None, Some(997), Some(998), Some(999))
        );
        // Replacing a held key evicts nothing.
        cache.put(998, 1);
        assert_eq!((cache.len(), cache.get(&997)), (3, Some(997)));
    }
}
