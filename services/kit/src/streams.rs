//! Caps on live streams (gRPC server streams, SSE): per caller (token `sub`) and per process,
//! so one token, or a crowd, cannot hold unbounded streams, each with its buffers and tasks.
//!
//! A stream takes a [`StreamSlot`] before it starts and gives it back when it ends or the
//! client goes away (the slot is dropped with the stream). Counts live in one process: with
//! N replicas a caller may hold N × `max_streams_per_caller` streams in all. The caps are the
//! `limits` settings (`EWPM_LIMITS__MAX_STREAMS_PER_CALLER`, `EWPM_LIMITS__MAX_STREAMS`).
//!
//! Metrics: `ewpm_streams_open{streams}` and `ewpm_streams_refused_total{streams,scope}`,
//! `streams` naming the kind (`leaderboard`, `awards`, `sse`), never a caller's input.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use crate::settings::LimitSettings;

/// Why a stream was refused: `caller` (its own cap) or `process` (this process's cap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamsFull {
    /// `caller` or `process`.
    pub scope: &'static str,
}

/// The caps and the streams open now.
#[derive(Debug)]
pub struct StreamSlots {
    kind: &'static str,
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

impl StreamSlots {
    /// Streams of `kind` under the caps of `limits`.
    pub fn new(kind: &'static str, limits: &LimitSettings) -> Arc<Self> {
        Self::with_caps(kind, limits.max_streams_per_caller, limits.max_streams)
    }

    /// At most `per_caller` streams per caller and `total` in all.
    pub fn with_caps(kind: &'static str, per_caller: usize, total: usize) -> Arc<Self> {
        Arc::new(Self {
            kind,
            per_caller: per_caller.max(1),
            total: total.max(1),
            open: Mutex::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        self.lock().total
    }

    /// Callers holding a stream now.
    pub fn callers(&self) -> usize {
        self.lock().by_caller.len()
    }

    /// A slot for one more stream of `caller`, or which cap is full.
    pub fn acquire(self: &Arc<Self>, caller: &str) -> Result<StreamSlot, StreamsFull> {
        let mut open = self.lock();
        let mine = open.by_caller.get(caller).copied().unwrap_or(0);
        let scope = if mine >= self.per_caller {
            Some("caller")
        } else if open.total >= self.total {
            Some("process")
        } else {
            None
        };
        if let Some(scope) = scope {
            metrics::counter!("ewpm_streams_refused_total", "streams" => self.kind, "scope" => scope)
                .increment(1);
            return Err(StreamsFull { scope });
        }
        open.total += 1;
        open.by_caller.insert(caller.to_string(), mine + 1);
        metrics::gauge!("ewpm_streams_open", "streams" => self.kind).set(open.total as f64);
        Ok(StreamSlot { slots: self.clone(), caller: caller.to_string() })
    }
}

/// One open stream's place under the caps; dropping it frees the place.
#[derive(Debug)]
pub struct StreamSlot {
    slots: Arc<StreamSlots>,
    caller: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.slots.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_caller.get_mut(&self.caller) {
            *n -= 1;
            if *n == 0 {
                open.by_caller.remove(&self.caller);
            }
        }
        metrics::gauge!("ewpm_streams_open", "streams" => self.slots.kind).set(open.total as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(r: Result<StreamSlot, StreamsFull>) -> &'static str {
        r.map_or_else(|full| full.scope, |_| "ok")
    }

    #[test]
    fn a_caller_over_its_cap_is_refused_until_one_of_its_streams_ends() {
        let slots = StreamSlots::with_caps("test", 2, 10);
        let a1 = slots.acquire("alice").unwrap();
        let _a2 = slots.acquire("alice").unwrap();
        assert_eq!(scope(slots.acquire("alice")), "caller");
        // Another caller is not affected.
        let _b1 = slots.acquire("bob").unwrap();
        drop(a1);
        assert_eq!((scope(slots.acquire("alice")), slots.open()), ("ok", 2));
    }

    #[test]
    fn the_process_cap_holds_across_callers_and_slots_come_back() {
        let slots = StreamSlots::with_caps("test", 5, 3);
        let held: Vec<_> = ["a", "b", "c"].iter().map(|c| slots.acquire(c).unwrap()).collect();
        assert_eq!(scope(slots.acquire("d")), "process");
        drop(held);
        assert_eq!((slots.open(), slots.callers()), (0, 0));
    }
}
