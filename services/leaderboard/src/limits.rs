//! Caps on concurrent watch streams: per caller (token `sub`) and per process, so one token
//! (or a crowd) cannot hold unbounded streams, each with its buffers and a snapshot reader.
//!
//! A stream takes a [`StreamSlot`] before it starts and gives it back when it ends or the
//! client goes away (the slot is dropped with the stream). Counts live in this process:
//! with N replicas a caller may hold N × `max_streams_per_caller` streams in all.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use crate::error::LeaderboardError;

/// The caps and the streams open now.
#[derive(Debug)]
pub struct StreamLimits {
    per_caller: usize,
    total: usize,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    /// Callers with at least one stream (an entry is removed with its last stream, so this
    /// never holds more than `total` entries).
    by_caller: HashMap<String, usize>,
}

impl StreamLimits {
    /// At most `per_caller` streams per caller and `total` in all.
    pub fn new(per_caller: usize, total: usize) -> Arc<Self> {
        Arc::new(Self { per_caller, total, open: Mutex::default() })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        self.lock().total
    }

    /// A slot for one more stream of `caller`, or TOO_MANY_STREAMS.
    pub fn acquire(self: &Arc<Self>, caller: &str) -> Result<StreamSlot, LeaderboardError> {
        let mut open = self.lock();
        let mine = open.by_caller.get(caller).copied().unwrap_or(0);
        if mine >= self.per_caller {
            metrics::counter!("ewpm_leaderboard_streams_refused_total", "scope" => "caller")
                .increment(1);
            return Err(LeaderboardError::TooManyStreams { scope: "caller" });
        }
        if open.total >= self.total {
            metrics::counter!("ewpm_leaderboard_streams_refused_total", "scope" => "process")
                .increment(1);
            return Err(LeaderboardError::TooManyStreams { scope: "process" });
        }
        open.total += 1;
        open.by_caller.insert(caller.to_string(), mine + 1);
        metrics::gauge!("ewpm_leaderboard_streams_open").set(open.total as f64);
        Ok(StreamSlot { limits: self.clone(), caller: caller.to_string() })
    }
}

/// One open stream's place under the caps; dropping it frees the place.
#[derive(Debug)]
pub struct StreamSlot {
    limits: Arc<StreamLimits>,
    caller: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.limits.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_caller.get_mut(&self.caller) {
            *n -= 1;
            if *n == 0 {
                open.by_caller.remove(&self.caller);
            }
        }
        metrics::gauge!("ewpm_leaderboard_streams_open").set(open.total as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(r: Result<StreamSlot, LeaderboardError>) -> &'static str {
        match r {
            Ok(_) => "ok",
            Err(LeaderboardError::TooManyStreams { scope }) => scope,
            Err(_) => "other error",
        }
    }

    #[test]
    fn a_caller_over_its_cap_is_refused_until_one_of_its_streams_ends() {
        let limits = StreamLimits::new(2, 10);
        let a1 = limits.acquire("alice").unwrap();
        let _a2 = limits.acquire("alice").unwrap();
        assert_eq!(scope(limits.acquire("alice")), "caller");
        // Another caller is not affected.
        let _b1 = limits.acquire("bob").unwrap();
        drop(a1);
        assert_eq!((scope(limits.acquire("alice")), limits.open()), ("ok", 2));
    }

    #[test]
    fn the_process_cap_holds_across_callers_and_slots_come_back() {
        let limits = StreamLimits::new(5, 3);
        let slots: Vec<_> = ["a", "b", "c"].iter().map(|c| limits.acquire(c).unwrap()).collect();
        assert_eq!(scope(limits.acquire("d")), "process");
        drop(slots);
        assert_eq!(limits.open(), 0);
        assert_eq!(limits.lock().by_caller.len(), 0);
    }
}
