//! The progress module's settings: the `[progress]` section (`EWPM_PROGRESS__…`).

use serde::{Deserialize, Serialize};

/// Progress service settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgressSettings {
    /// Run the batch writer inside `ewpm serve progress` / `ewpm dev` (it also runs alone as
    /// `ewpm serve progress-writer`).
    pub writer_enabled: bool,
    /// Writer tasks per process (each a consumer of the queue).
    pub writers: usize,
    /// Entries that make a batch due at once.
    pub batch_size: usize,
    /// Entries one batch takes at most when more than `batch_size` are already queued (a
    /// backlog is written in fewer, larger transactions).
    pub batch_max: usize,
    /// Longest the oldest queued entry waits for its batch, in milliseconds.
    pub flush_interval_ms: u64,
    /// Entries a writer received but has not acknowledged for this long are taken over by
    /// another writer (the first is presumed dead), in milliseconds.
    pub reclaim_idle_ms: u64,
    /// How long a challenge's window is cached by the submit path, in seconds.
    pub challenge_cache_secs: u64,
    /// How long past its cache time a challenge's window is still served while the challenge
    /// service fails (it is down, or its database is), in seconds; 0 serves nothing stale.
    pub challenge_stale_secs: u64,
    /// Failed attempts of a writer batch before it is split to isolate the entries that
    /// cannot be written (they go to `progress_dead_letters`, the rest is written).
    pub split_after_failures: u32,
    /// Entries queued but not yet written beyond which SubmitProgress pushes back with
    /// RESOURCE_EXHAUSTED (HTTP 429) instead of letting the leaderboards fall behind.
    pub max_backlog: u64,
}

impl Default for ProgressSettings {
    fn default() -> Self {
        Self {
            writer_enabled: true,
            writers: 2,
            batch_size: 50,
            batch_max: 500,
            flush_interval_ms: 2000,
            reclaim_idle_ms: 30_000,
            challenge_cache_secs: 30,
            challenge_stale_secs: 600,
            split_after_failures: 3,
            max_backlog: 10_000,
        }
    }
}
