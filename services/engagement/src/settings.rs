//! The engagement module's settings: the `[engagement]` section (`EWPM_ENGAGEMENT__…`).

use serde::{Deserialize, Serialize};

/// Engagement service settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngagementSettings {
    /// Run the persister inside `ewpm serve engagement` / `ewpm dev` (it also runs alone as
    /// `ewpm serve engagement-persister`; any number may run).
    pub persister_enabled: bool,
    /// Persister tasks per process.
    pub persisters: usize,
    /// Bus messages (ingest calls) a persister writes in one batch.
    pub persister_batch: usize,
    /// Longest a persister batch waits to fill, in milliseconds.
    pub persister_max_wait_ms: u64,
    /// How long a message a persister took stays unacknowledged before another persister
    /// takes it over (its taker presumed dead), in milliseconds.
    pub reclaim_idle_ms: u64,
    /// Most events one IngestEvents call may carry.
    pub max_batch_events: usize,
    /// Most distinct event types per match.
    pub max_event_types: usize,
    /// Events per second one source (ingest token subject) may send, sustained; 0: no limit.
    pub source_rate_per_sec: u32,
    /// Events one source may send at once above its rate.
    pub source_burst: u32,
    /// How far in the future an event time may lie (after clock-skew correction), in seconds.
    pub max_future_secs: u64,
    /// How far in the past an event time may lie outside a backfill, in seconds.
    pub max_age_secs: u64,
    /// Clock offsets up to this are taken as network delay, not skew, in milliseconds.
    pub skew_tolerance_ms: u64,
    /// How long after a minute ends it stays provisional, in seconds; events for it arriving
    /// later are late (corrections).
    pub lateness_secs: u64,
    /// How long client event ids are remembered in Redis (or memory), in hours; after that a
    /// retry is still stored once (ids derive from them) but reported as accepted.
    pub dedupe_hours: u64,
    /// Queued ingest calls (bus messages, up to `max_batch_events` events each) not yet
    /// written above which ingest answers RESOURCE_EXHAUSTED `QUEUE_FULL`: what bounds the
    /// queue (and, embedded, its file) while the persisters fall behind.
    pub max_backlog: u64,
    /// Hours of event time of per-minute counts kept per match.
    pub minute_retention_hours: u64,
}

impl Default for EngagementSettings {
    fn default() -> Self {
        Self {
            persister_enabled: true,
            persisters: 2,
            persister_batch: 128,
            persister_max_wait_ms: 20,
            reclaim_idle_ms: 30_000,
            max_batch_events: 1000,
            max_event_types: 100,
            source_rate_per_sec: 200_000,
            source_burst: 400_000,
            max_future_secs: 300,
            max_age_secs: 24 * 3600,
            skew_tolerance_ms: 1000,
            lateness_secs: 60,
            dedupe_hours: 24,
            max_backlog: 10_000,
            minute_retention_hours: 24,
        }
    }
}
