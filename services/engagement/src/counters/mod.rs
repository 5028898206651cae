//! Live per-match counters: a cache of sums over `match_events` that can be lost and rebuilt.
//! Redis in the mesh ([`RedisCounters`]), in process embedded ([`MemoryCounters`]); both held
//! to one contract (`tests/counters_contract.rs`).
//!
//! Exactly once: the persister applies, per match, the counts of the rows one ingest call's
//! write stored, under that call's id; a match remembers the ids it applied (for
//! [`APPLIED_RETENTION`]), so a redelivered message counts nothing twice.
//!
//! Rebuild: counters that are missing (never built, lost, expired, deleted) take no
//! increments ([`Applied::Missing`]: the rows are in SQL already, and a rebuild reads them).
//! A rebuild takes the match's lease, reads the aggregates from SQL and swaps them in with
//! the ids of recent ingest calls, unless its lease was lost meanwhile. While a lease is held,
//! increments are refused ([`Applied::Busy`]) and the persister retries them after the swap,
//! when they either count (their rows were not in the read) or are found applied (they were).

mod memory;
mod redis;

use std::time::Duration;

use async_trait::async_trait;

pub use memory::MemoryCounters;
pub use redis::RedisCounters;

use crate::domain::Counts;

/// How long a match remembers the ingest calls it applied; far longer than a message can
/// stay pending before it is redelivered.
pub const APPLIED_RETENTION: Duration = Duration::from_secs(3600);

/// What an increment did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Counted.
    Applied,
    /// This ingest call was counted before: nothing changed.
    Already,
    /// The match has no counters: nothing changed (a rebuild will read the rows).
    Missing,
    /// A rebuild holds the match: retry after it.
    Busy,
}

/// A store of live match counters.
#[async_trait]
pub trait Counters: Send + Sync + 'static {
    /// Adds `delta` to `match_id`'s counters as ingest call `ingest_id`'s, unless it was
    /// added before, the counters are missing, or a rebuild holds them. `now_ms` is the
    /// store's notion of time for remembering ingest ids.
    async fn apply(
        &self,
        match_id: &str,
        ingest_id: &str,
        delta: &Counts,
        now_ms: i64,
    ) -> anyhow::Result<Applied>;

    /// The counters of `match_id`; `None` when missing.
    async fn read(&self, match_id: &str) -> anyhow::Result<Option<Counts>>;

    /// Takes `match_id`'s rebuild lease for `lease` as `token`; false while another holds it.
    async fn begin_rebuild(
        &self,
        match_id: &str,
        token: &str,
        lease: Duration,
    ) -> anyhow::Result<bool>;

    /// Replaces `match_id`'s counters with `counts`, remembering `ingest_ids` as applied, and
    /// releases the lease; false (nothing changed) when `token` no longer holds it.
    async fn finish_rebuild(
        &self,
        match_id: &str,
        token: &str,
        counts: &Counts,
        ingest_ids: &[String],
        now_ms: i64,
    ) -> anyhow::Result<bool>;

    /// Releases the lease if `token` holds it (a rebuild that failed).
    async fn abort_rebuild(&self, match_id: &str, token: &str) -> anyhow::Result<()>;

    /// Drops `match_id`'s counters (what losing them looks like).
    async fn forget(&self, match_id: &str) -> anyhow::Result<()>;
}
