//! The leaderboard module's settings: the `[leaderboard]` section (`EWPM_LEADERBOARD__…`).

use serde::{Deserialize, Serialize};

/// Leaderboard service settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaderboardSettings {
    /// Run the score delta applier inside `ewpm serve leaderboard` / `ewpm dev`.
    pub applier_enabled: bool,
    /// Shortest gap between two snapshots of one board to its watchers, in milliseconds.
    pub watch_interval_ms: u64,
    /// Deltas a dead applier left unacknowledged for this long are taken over, in
    /// milliseconds.
    pub reclaim_idle_ms: u64,
    /// How long a page read is served from this process's memory before the score store is
    /// read again, in milliseconds (0: always read the store). Boards change by batches
    /// anyway; this keeps hot top-10 reads off Redis.
    pub read_cache_ms: u64,
    /// How long who may read a board (its challenge's employer) is remembered, in seconds.
    /// A challenge moved to another employer is seen by reads after at most this long.
    pub audience_cache_secs: u64,
    /// Most boards whose audience is remembered (and, separately, most unknown boards
    /// remembered as unknown); the entry expiring first makes room.
    pub audience_cache_entries: usize,
    /// Most concurrent WatchLeaderboard streams of one caller (token `sub`) in one process.
    pub max_streams_per_caller: usize,
    /// Most concurrent WatchLeaderboard streams in one process.
    pub max_streams: usize,
    /// How long an applied delta's event id is remembered, in seconds, counted from the time
    /// in its UUIDv7 id. A delta older than this is not applied (it makes its board rebuild
    /// from the owner instead); keep it far beyond any redelivery delay of the bus.
    pub dedupe_window_secs: u64,
    /// How long after its end a period of a resetting board still takes scores (late
    /// deliveries, clock skew), in seconds; then it is closed and archived.
    pub close_grace_secs: u64,
    /// Gap between two rounds of the period closer, in milliseconds.
    pub close_interval_ms: u64,
    /// Gap between two rounds of the fact relay when idle (it applies scores whose inline
    /// apply failed), in milliseconds.
    pub relay_interval_ms: u64,
}

impl Default for LeaderboardSettings {
    fn default() -> Self {
        Self {
            applier_enabled: true,
            watch_interval_ms: 100,
            reclaim_idle_ms: 30_000,
            read_cache_ms: 100,
            audience_cache_secs: 30,
            audience_cache_entries: 10_000,
            max_streams_per_caller: 16,
            max_streams: 10_000,
            dedupe_window_secs: 7 * 24 * 3600,
            close_grace_secs: 60,
            close_interval_ms: 5_000,
            relay_interval_ms: 1_000,
        }
    }
}
