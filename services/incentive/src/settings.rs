//! The incentive module's settings: the `[incentive]` section (`EWPM_INCENTIVE__…`).

use serde::{Deserialize, Serialize};

/// Incentive service settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncentiveSettings {
    /// Run the processors inside `ewpm serve incentive` / `ewpm dev` (they also run alone as
    /// `ewpm serve incentive-processor`).
    pub processor_enabled: bool,
    /// Processor tasks per process (each a consumer of the `activity` topic).
    pub processors: usize,
    /// Messages of the `activity` topic (each an `ActivityBatch` of one writer batch) a
    /// processor takes at once; their activities are applied in transactions of at most
    /// 2,000. Large batches pay: a transaction costs a handful of statements whatever its size.
    pub batch_size: usize,
    /// Longest the oldest received activity waits for its batch, in milliseconds.
    pub flush_interval_ms: u64,
    /// Activities a processor received but has not acknowledged for this long are taken over by
    /// another processor, in milliseconds.
    pub reclaim_idle_ms: u64,
    /// How long a processor caches an employer's active incentive links and a link's
    /// definition, in seconds (an announced link change empties the cache at once).
    pub lookup_cache_secs: u64,
    /// How many calendar days before a user's latest counted day a late activity still
    /// lands on its own day of a streak (older ones are ignored): 0 to 31.
    pub backfill_days: u32,
}

impl Default for IncentiveSettings {
    fn default() -> Self {
        Self {
            processor_enabled: true,
            processors: 2,
            batch_size: 2000,
            flush_interval_ms: 100,
            reclaim_idle_ms: 30_000,
            lookup_cache_secs: 10,
            backfill_days: 7,
        }
    }
}
