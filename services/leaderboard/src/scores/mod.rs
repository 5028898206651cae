//! The score store: one sorted set of member scores per board, and the board's lifecycle.
//!
//! - A delta carries an `event_id`, unique per real-world fact; applying it again changes
//!   nothing (dedupe and increment are one atomic step: a Lua script on Redis, one lock in
//!   memory).
//! - A board is *ready* (its marker key exists: it holds every fact), *building* (a rebuild
//!   holds the lease and fills an aside copy), or *missing* (never built, or lost to eviction
//!   or a flush). Deltas go to the live board when ready, to the aside copy while building,
//!   and are dropped (`Missing`) otherwise: producers emit a delta only after its fact is
//!   committed to the owner's SQL, so the rebuild that must follow includes it.
//! - A rebuild is [`ScoreStore::begin_rebuild`] (take the lease, empty the aside copy),
//!   [`ScoreStore::load`] (the owner's entries, deduped by event id against deltas that
//!   landed in the aside copy meanwhile), [`ScoreStore::finish_rebuild`] (swap the aside
//!   copy in and mark the board ready, in one step, only while the lease is still ours).
//! - Shape: each board's [`Shape`] (operator, orders, rank style; see [`crate::ranking`])
//!   travels with its deltas and reads. Order: the board's order on the score, then the
//!   subscore's, then member id descending, so pages are stable. Plain sum boards (challenge
//!   and quiz) keep exactly the layout they always had.
//! - Ranks are read with the page in one script, so a concurrent delta cannot tear a page
//!   from its ranks.
//! - Voids: a board holds its voids (`m:<member>`, `e:<event id>`); a void fact is
//!   remembered but not counted. A void arrives by a rebuild (the owner's facts without it).
//! - Keys of one board share a Redis Cluster hash slot: `lb:{<board>}` (the sorted set),
//!   `…:seen` (applied event ids, scored by fact time), `…:r` (each member's record:
//!   score, subscore, version; not for plain sums), `…:d` and `…:dn` (the distinct
//!   (score, subscore) pairs and their counts, for dense ranks), `…:void`, `…:ready`,
//!   `…:building` (the lease: the rebuild's token, with a TTL), and `…:next…` (the aside copy
//!   of each data key).
//!
//! # Bounded dedupe: a time window
//!
//! A board remembers the event ids it counted (`…:seen`, a sorted set scored by the fact's
//! time; in memory the same per board) only for a window ([`Dedupe::window`], setting
//! `dedupe_window_secs`, default 7 days). The time of a fact is the time in its UUIDv7 event
//! id (progress entry and quiz answer ids are v7, minted when the fact is accepted), so it is
//! fixed by the id and the same for every delivery of it. With `now` from the injected clock:
//!
//! 1. a delta whose fact time is before `now - window` is not counted ([`Applied::Stale`]);
//! 2. otherwise it counts iff its id is not remembered (added with its time, atomically);
//! 3. remembered ids are dropped once their time is before `now - window - skew`
//!    ([`CLOCK_SKEW`]), so every id the window can still accept stays remembered.
//!
//! Exactly once in effect: let e (time t) be counted at `a1`, so `t >= a1 - window`, and come
//! again at `a2`. If `t < a2 - window` it is refused by (1). Otherwise `t >= a2 - window`, and
//! every prune so far, run at some `p` with `p <= a2 + skew` (appliers' clocks differ by less
//! than `skew`), removed only times before `p - window - skew <= a2 - window`: e is still
//! remembered and (2) skips it. A rebuild keeps this: owner entries are counted unless their
//! id is remembered, and remembered (with their time) unless already outside the window,
//! where (1) refuses their deltas anyway. So no delta counts twice, and the set holds only
//! the ids of `window + skew` of facts.
//!
//! Nothing is lost either: a delta refused as stale was accepted longer than the window ago
//! and is committed with its owner, so the applier marks its board missing
//! ([`ScoreStore::forget`]) and the rebuild from the owner counts it. (Boards without an
//! owner cannot be rebuilt: a stale delta of theirs is counted as lost in metrics.) The
//! window must exceed any delay between a fact's acceptance and its delta's last delivery
//! (bus reclaim after a dead applier, producer retries, outages); 7 days is far beyond them.
//!
//! Ids that are not UUIDv7 carry no time: they are remembered for good (never stale, never
//! dropped). No producer sends them; they are accepted so older data keeps its exactness.
//! Boards written before the window existed kept their ids in a plain set; the first delta
//! converts it (times from the v7 ids, the rest kept for good).
//!
//! Limits: a board is only as durable as Redis, which is why it can be rebuilt.
//!
//! # Layout
//! - this file: the [`ScoreStore`] trait, its types, and the dedupe window both stores keep
//!   ([`Dedupe`], [`fact_time_ms`]);
//! - [`memory`]: [`MemoryScores`], the embedded mode's store;
//! - [`redis`]: [`RedisScores`], the mesh store (Redis sorted sets and Lua scripts).

mod memory;
mod redis;

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use async_trait::async_trait;
use ewpm_kit::clock::{SharedClock, SystemClock};

pub use crate::ranking::Shape;

pub use memory::MemoryScores;
pub use redis::RedisScores;

/// One member's place on a board.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Rank in the board's style (1 is first; ties share a rank).
    pub rank: u64,
    /// Member id.
    pub member: String,
    /// Score.
    pub score: f64,
    /// Subscore (0 on boards without one).
    pub subscore: f64,
    /// 0-based position in board order.
    pub position: u64,
}

/// A member and the entries around it.
#[derive(Debug, Clone, PartialEq)]
pub struct Around {
    /// The member's own entry.
    pub me: Entry,
    /// Up to `n` entries above and `n` below, in board order, the member included.
    pub window: Vec<Entry>,
}

/// One fact for one member on one board.
#[derive(Debug, Clone, PartialEq)]
pub struct Delta {
    /// Board name (in the store: `<board>` or `<board>@<period>`).
    pub board: String,
    /// Member id.
    pub member: String,
    /// The fact's value (finite; may be negative): added (sum), compared (best), or taken
    /// (set).
    pub delta: f64,
    /// The fact's id: a board counts it at most once.
    pub event_id: String,
    /// The fact's subscore (ignored by boards without one).
    pub subscore: f64,
    /// The fact's version for `set` boards ([`crate::ranking::version`]); empty otherwise.
    pub version: String,
    /// The board's shape.
    pub shape: Shape,
}

impl Delta {
    /// A fact of a plain sum board (challenge and quiz boards).
    pub fn sum(board: &str, member: &str, delta: f64, event_id: &str) -> Self {
        Self {
            board: board.to_string(),
            member: member.to_string(),
            delta,
            event_id: event_id.to_string(),
            subscore: 0.0,
            version: String::new(),
            shape: Shape::default(),
        }
    }
}

/// What became of one delta.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Counted (on the live board, or on the aside copy of a rebuild in progress). For
    /// `best` and `set` boards a fact that does not beat the member's record is counted too
    /// (remembered) without changing the board.
    Applied,
    /// The board had counted this event before: nothing changed.
    Duplicate,
    /// The board is neither ready nor being rebuilt: dropped; a rebuild must follow (it will
    /// include the fact, which its owner committed before the delta was sent).
    Missing,
    /// The fact is older than the dedupe window: not counted, as the board no longer knows
    /// whether it did; a rebuild from the owner must follow to include it.
    Stale,
    /// The fact, or its member, is void on this board: not counted.
    Voided,
}

/// Allowance for the clocks of applier processes disagreeing: remembered ids are kept this
/// much longer than the window (see the module doc).
pub const CLOCK_SKEW: Duration = Duration::from_secs(600);

/// How long applied event ids are remembered, and the clock that says when now is.
#[derive(Clone)]
pub struct Dedupe {
    /// Facts older than this are refused; their ids are forgotten `CLOCK_SKEW` later.
    pub window: Duration,
    /// The time source.
    pub clock: SharedClock,
}

impl Default for Dedupe {
    /// 7 days on the wall clock (the default of `dedupe_window_secs`).
    fn default() -> Self {
        Self { window: Duration::from_secs(7 * 24 * 3600), clock: Arc::new(SystemClock) }
    }
}

impl Dedupe {
    /// The cut-offs at this moment.
    pub(super) fn cut(&self) -> Cut {
        let now = self.clock.now().timestamp_millis();
        let window = i64::try_from(self.window.as_millis()).unwrap_or(i64::MAX / 4);
        let skew = i64::try_from(CLOCK_SKEW.as_millis()).unwrap_or(0);
        let stale_before = now.saturating_sub(window);
        Cut { stale_before, forget_before: stale_before.saturating_sub(skew) }
    }
}

/// Fact times (Unix ms) below which deltas are stale, and remembered ids are dropped.
#[derive(Debug, Clone, Copy)]
pub(super) struct Cut {
    stale_before: i64,
    pub(super) forget_before: i64,
}

impl Cut {
    pub(super) fn is_stale(self, time: Option<i64>) -> bool {
        time.is_some_and(|t| t < self.stale_before)
    }
}

/// The time of a fact, from its event id: the Unix milliseconds of a UUIDv7 (hyphenated, as
/// producers send them); `None` for any other id.
pub fn fact_time_ms(event_id: &str) -> Option<i64> {
    if event_id.len() != 36 {
        return None;
    }
    let id = uuid::Uuid::try_parse(event_id).ok()?;
    if id.get_version_num() != 7 {
        return None;
    }
    let b = id.as_bytes();
    Some(i64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]]))
}

/// One fact as the board's owner has it, for a rebuild.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OwnedEntry {
    /// Member id.
    pub member: String,
    /// The fact's id (the same id its delta carries).
    pub event_id: String,
    /// The fact's value.
    pub value: f64,
    /// The fact's subscore.
    pub subscore: f64,
    /// The fact's version (`set` boards).
    pub version: String,
}

/// A void on a board, as the store keeps it: `m:<member>` (everything of a member) or
/// `e:<event id>` (one fact).
pub fn void_member(member: &str) -> String {
    format!("m:{member}")
}

/// See [`void_member`].
pub fn void_event(event_id: &str) -> String {
    format!("e:{event_id}")
}

/// Scores of named boards.
#[async_trait]
pub trait ScoreStore: Send + Sync + 'static {
    /// Applies each delta at most once per board (see [`Applied`]); one result per delta, in
    /// order. Deltas of one board carry the same shape.
    async fn apply_many(&self, deltas: &[Delta]) -> anyhow::Result<Vec<Applied>>;

    /// Applies one fact of a plain sum board.
    async fn apply(
        &self,
        board: &str,
        member: &str,
        delta: f64,
        event_id: &str,
    ) -> anyhow::Result<Applied> {
        let one = Delta::sum(board, member, delta, event_id);
        self.apply_many(&[one]).await?.pop().context("apply_many returned no result")
    }

    /// Starts a rebuild of `board` under `token`: takes the lease for `lease`, empties the
    /// aside copy and gives it the board's `voids` ([`void_member`], [`void_event`]).
    /// `false` when the board is ready or another rebuild holds the lease.
    async fn begin_rebuild(
        &self,
        board: &str,
        token: &str,
        lease: Duration,
        voids: &[String],
    ) -> anyhow::Result<bool>;

    /// Adds the owner's `entries` to the aside copy (each event id at most once; void ones
    /// remembered but not counted) and extends the lease to `lease` from now. `false`,
    /// adding nothing, when the lease is not ours.
    async fn load(
        &self,
        board: &str,
        shape: Shape,
        token: &str,
        entries: &[OwnedEntry],
        lease: Duration,
    ) -> anyhow::Result<bool>;

    /// Makes the aside copy the live board and marks it ready, in one step, if the lease is
    /// still ours; `false` (changing nothing) otherwise.
    async fn finish_rebuild(&self, board: &str, token: &str) -> anyhow::Result<bool>;

    /// Gives up a rebuild: releases the lease if it is ours, so another can start at once.
    async fn abort_rebuild(&self, board: &str, token: &str) -> anyhow::Result<()>;

    /// `limit` entries from position `offset` and the number of members, as one consistent
    /// read; `None` when the board is not ready. The read path's one round trip.
    async fn page(
        &self,
        board: &str,
        shape: Shape,
        offset: u64,
        limit: u64,
    ) -> anyhow::Result<Option<(Vec<Entry>, u64)>>;

    /// `member`'s entry and up to `n` neighbours on each side; `None` if the member is not
    /// on the board (or the board is not ready).
    async fn around(
        &self,
        board: &str,
        shape: Shape,
        member: &str,
        n: u64,
    ) -> anyhow::Result<Option<Around>>;

    /// The entries of those `members` that are on the board, in board order, and the number
    /// of members; `None` when the board is not ready.
    async fn ranks(
        &self,
        board: &str,
        shape: Shape,
        members: &[String],
    ) -> anyhow::Result<Option<(Vec<Entry>, u64)>>;

    /// Number of members on `board`.
    async fn len(&self, board: &str) -> anyhow::Result<u64>;

    /// Whether `board` is ready (a board that is not must be rebuilt from its owner).
    async fn exists(&self, board: &str) -> anyhow::Result<bool>;

    /// Marks `board` missing, so that it is rebuilt from its owner (after a stale delta, a
    /// void).
    async fn forget(&self, board: &str) -> anyhow::Result<()>;

    /// Deletes everything of `board` (a closed period, archived in SQL).
    async fn delete(&self, board: &str) -> anyhow::Result<()>;

    /// Event ids the live `board` remembers (for tests and metrics).
    async fn remembered(&self, board: &str) -> anyhow::Result<u64>;

    /// `limit` entries of a plain sum board from position `offset` (empty when not ready).
    async fn top(&self, board: &str, offset: u64, limit: u64) -> anyhow::Result<Vec<Entry>> {
        Ok(self.page(board, Shape::default(), offset, limit).await?.unwrap_or_default().0)
    }
}
