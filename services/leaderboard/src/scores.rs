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
//! - Order: score descending; within a tie, member id descending (Redis' own order for
//!   `ZREVRANGE`, kept by the memory store too), so pages are stable.
//! - Ranks are competition ranks (1, 2, 2, 4): one plus the number of members with a strictly
//!   higher score. On Redis a page and its ranks are read by one script, so a concurrent
//!   delta cannot tear them apart.
//! - Keys of one board share a Redis Cluster hash slot: `lb:{<board>}` (the sorted set),
//!   `…:seen` (applied event ids, scored by fact time), `…:ready`, `…:building` (the lease: the rebuild's token,
//!   with a TTL), `…:next` and `…:next:seen` (the aside copy).
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

use std::{
    cmp::Reverse,
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use async_trait::async_trait;
use ewpm_kit::clock::{SharedClock, SystemClock};
use fred::{
    prelude::{Client, KeysInterface, SortedSetsInterface},
    types::Value,
};

/// One member's place on a board.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Competition rank (1 is first; ties share a rank).
    pub rank: u64,
    /// Member id.
    pub member: String,
    /// Total score.
    pub score: f64,
}

/// A member and the entries around it.
#[derive(Debug, Clone, PartialEq)]
pub struct Around {
    /// The member's own entry.
    pub me: Entry,
    /// Up to `n` entries above and `n` below, in board order, the member included.
    pub window: Vec<Entry>,
}

/// A change of one member's score on one board.
#[derive(Debug, Clone, PartialEq)]
pub struct Delta {
    /// Board name.
    pub board: String,
    /// Member id.
    pub member: String,
    /// Amount added (finite; may be negative).
    pub delta: f64,
    /// The fact's id: a board counts it at most once.
    pub event_id: String,
}

/// What became of one delta.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Counted (on the live board, or on the aside copy of a rebuild in progress).
    Applied,
    /// The board had counted this event before: nothing changed.
    Duplicate,
    /// The board is neither ready nor being rebuilt: dropped; a rebuild must follow (it will
    /// include the fact, which its owner committed before the delta was sent).
    Missing,
    /// The fact is older than the dedupe window: not counted, as the board no longer knows
    /// whether it did; a rebuild from the owner must follow to include it.
    Stale,
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
    fn cut(&self) -> Cut {
        let now = self.clock.now().timestamp_millis();
        let window = i64::try_from(self.window.as_millis()).unwrap_or(i64::MAX / 4);
        let skew = i64::try_from(CLOCK_SKEW.as_millis()).unwrap_or(0);
        let stale_before = now.saturating_sub(window);
        Cut { stale_before, forget_before: stale_before.saturating_sub(skew) }
    }
}

/// Fact times (Unix ms) below which deltas are stale, and remembered ids are dropped.
#[derive(Debug, Clone, Copy)]
struct Cut {
    stale_before: i64,
    forget_before: i64,
}

impl Cut {
    fn is_stale(self, time: Option<i64>) -> bool {
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
#[derive(Debug, Clone, PartialEq)]
pub struct OwnedEntry {
    /// Member id.
    pub member: String,
    /// The fact's id (the same id its delta carries).
    pub event_id: String,
    /// The fact's value.
    pub value: f64,
}

/// Scores of named boards.
#[async_trait]
pub trait ScoreStore: Send + Sync + 'static {
    /// Applies each delta at most once per board (see [`Applied`]); one result per delta, in
    /// order.
    async fn apply_many(&self, deltas: &[Delta]) -> anyhow::Result<Vec<Applied>>;

    /// Applies one delta.
    async fn apply(
        &self,
        board: &str,
        member: &str,
        delta: f64,
        event_id: &str,
    ) -> anyhow::Result<Applied> {
        let one = Delta {
            board: board.to_string(),
            member: member.to_string(),
            delta,
            event_id: event_id.to_string(),
        };
        self.apply_many(&[one]).await?.pop().context("apply_many returned no result")
    }

    /// Starts a rebuild of `board` under `token`: takes the lease for `lease` and empties the
    /// aside copy. `false` when the board is ready or another rebuild holds the lease.
    async fn begin_rebuild(
        &self,
        board: &str,
        token: &str,
        lease: Duration,
    ) -> anyhow::Result<bool>;

    /// Adds the owner's `entries` to the aside copy (each event id at most once) and extends
    /// the lease to `lease` from now. `false`, adding nothing, when the lease is not ours.
    async fn load(
        &self,
        board: &str,
        token: &str,
        entries: &[OwnedEntry],
        lease: Duration,
    ) -> anyhow::Result<bool>;

    /// Makes the aside copy the live board and marks it ready, in one step, if the lease is
    /// still ours; `false` (changing nothing) otherwise.
    async fn finish_rebuild(&self, board: &str, token: &str) -> anyhow::Result<bool>;

    /// Gives up a rebuild: releases the lease if it is ours, so another can start at once.
    async fn abort_rebuild(&self, board: &str, token: &str) -> anyhow::Result<()>;

    /// `limit` entries from position `offset` (0-based), in board order.
    async fn top(&self, board: &str, offset: u64, limit: u64) -> anyhow::Result<Vec<Entry>>;

    /// `member`'s entry and up to `n` neighbours on each side; `None` if not on the board.
    async fn around(&self, board: &str, member: &str, n: u64) -> anyhow::Result<Option<Around>>;

    /// Number of members on `board`.
    async fn len(&self, board: &str) -> anyhow::Result<u64>;

    /// Whether `board` is ready (a board that is not must be rebuilt from its owner).
    async fn exists(&self, board: &str) -> anyhow::Result<bool>;

    /// Marks `board` missing, so that it is rebuilt from its owner (after a stale delta).
    async fn forget(&self, board: &str) -> anyhow::Result<()>;

    /// Event ids the live `board` remembers (for tests and metrics).
    async fn remembered(&self, board: &str) -> anyhow::Result<u64>;

    /// `limit` entries from `offset` and the number of members, as one consistent read;
    /// `None` when the board is not ready. The read path's one round trip.
    async fn page(
        &self,
        board: &str,
        offset: u64,
        limit: u64,
    ) -> anyhow::Result<Option<(Vec<Entry>, u64)>> {
        if !self.exists(board).await? {
            return Ok(None);
        }
        Ok(Some((self.top(board, offset, limit).await?, self.len(board).await?)))
    }
}

/// Board order key: score descending, then member descending.
type OrderKey = (Reverse<OrderedScore>, Reverse<String>);

/// A total order on finite scores.
#[derive(Debug, Clone, Copy, PartialEq)]
struct OrderedScore(f64);

impl Eq for OrderedScore {}

impl PartialOrd for OrderedScore {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OrderedScore {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Remembered event ids with their fact times (`None`: no time, kept for good).
#[derive(Debug, Default)]
struct Seen {
    ids: HashMap<String, Option<i64>>,
    by_time: BTreeSet<(i64, String)>,
}

impl Seen {
    fn contains(&self, id: &str) -> bool {
        self.ids.contains_key(id)
    }

    /// Remembers `id`; `false` if it already was.
    fn insert(&mut self, id: &str, time: Option<i64>) -> bool {
        if self.ids.contains_key(id) {
            return false;
        }
        self.ids.insert(id.to_string(), time);
        if let Some(t) = time {
            self.by_time.insert((t, id.to_string()));
        }
        true
    }

    /// Drops ids whose time is before `before`.
    fn forget_before(&mut self, before: i64) {
        while let Some((t, _)) = self.by_time.first()
            && *t < before
        {
            if let Some((_, id)) = self.by_time.pop_first() {
                self.ids.remove(&id);
            }
        }
    }
}

#[derive(Debug, Default)]
struct MemoryBoard {
    scores: HashMap<String, f64>,
    order: BTreeSet<OrderKey>,
    seen: Seen,
}

impl MemoryBoard {
    /// A delta: counted unless stale or its id is remembered.
    fn apply(&mut self, member: &str, delta: f64, event_id: &str, cut: Cut) -> Applied {
        self.seen.forget_before(cut.forget_before);
        let time = fact_time_ms(event_id);
        if cut.is_stale(time) {
            return Applied::Stale;
        }
        if !self.seen.insert(event_id, time) {
            return Applied::Duplicate;
        }
        self.add(member, delta);
        Applied::Applied
    }

    /// An owner's entry: counted unless its id is remembered; remembered unless stale.
    fn load(&mut self, member: &str, value: f64, event_id: &str, cut: Cut) {
        if self.seen.contains(event_id) {
            return;
        }
        let time = fact_time_ms(event_id);
        if !cut.is_stale(time) {
            self.seen.insert(event_id, time);
        }
        self.add(member, value);
    }

    fn add(&mut self, member: &str, delta: f64) {
        let old = self.scores.get(member).copied();
        if let Some(old) = old {
            self.order.remove(&(Reverse(OrderedScore(old)), Reverse(member.to_string())));
        }
        let new = old.unwrap_or(0.0) + delta;
        self.scores.insert(member.to_string(), new);
        self.order.insert((Reverse(OrderedScore(new)), Reverse(member.to_string())));
    }

    /// One plus the members strictly above `score` (they come first in the order). Linear
    /// in the rank: fine for embedded boards.
    fn rank_of(&self, score: f64) -> u64 {
        self.order.iter().take_while(|(Reverse(s), _)| s.0 > score).count() as u64 + 1
    }

    fn entries_from(&self, offset: usize, limit: usize) -> Vec<Entry> {
        let mut out = Vec::with_capacity(limit.min(self.order.len()));
        let mut rank = 0;
        let mut previous: Option<f64> = None;
        for (i, (Reverse(score), Reverse(member))) in self.order.iter().enumerate() {
            if previous != Some(score.0) {
                rank = i as u64 + 1;
                previous = Some(score.0);
            }
            if i >= offset.saturating_add(limit) {
                break;
            }
            if i >= offset {
                out.push(Entry { rank, member: member.clone(), score: score.0 });
            }
        }
        out
    }
}

/// One board's state in memory: `live` is `Some` exactly when the board is ready.
#[derive(Debug, Default)]
struct MemoryState {
    live: Option<MemoryBoard>,
    /// The rebuild lease: token and expiry.
    building: Option<(String, Instant)>,
    next: MemoryBoard,
}

impl MemoryState {
    fn lease_held_by(&self, token: &str) -> bool {
        matches!(&self.building, Some((t, expires)) if t == token && *expires > Instant::now())
    }

    fn building(&self) -> bool {
        matches!(&self.building, Some((_, expires)) if *expires > Instant::now())
    }
}

/// The embedded score store: every board under one mutex, mirroring the Redis store.
#[derive(Default)]
pub struct MemoryScores {
    boards: Mutex<HashMap<String, MemoryState>>,
    dedupe: Dedupe,
}

impl MemoryScores {
    /// An empty store with the default dedupe window.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same store remembering applied ids for `dedupe`'s window.
    pub fn with_dedupe(self, dedupe: Dedupe) -> Self {
        Self { dedupe, ..self }
    }

    /// Boards with any state (ready, building, or once begun): what reads and rebuilds
    /// leave behind, for tests that check nothing was created.
    pub fn boards(&self) -> usize {
        self.with(|boards| boards.len())
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, MemoryState>) -> T) -> T {
        f(&mut self.boards.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn with_live<T>(&self, board: &str, f: impl FnOnce(&MemoryBoard) -> T) -> Option<T> {
        self.with(|boards| boards.get(board).and_then(|s| s.live.as_ref()).map(f))
    }
}

#[async_trait]
impl ScoreStore for MemoryScores {
    async fn apply_many(&self, deltas: &[Delta]) -> anyhow::Result<Vec<Applied>> {
        let cut = self.dedupe.cut();
        Ok(self.with(|boards| {
            deltas
                .iter()
                .map(|d| {
                    let Some(state) = boards.get_mut(&d.board) else { return Applied::Missing };
                    let building = state.building();
                    let target = match &mut state.live {
                        Some(live) => live,
                        None if building => &mut state.next,
                        None => return Applied::Missing,
                    };
                    target.apply(&d.member, d.delta, &d.event_id, cut)
                })
                .collect()
        }))
    }

    async fn begin_rebuild(
        &self,
        board: &str,
        token: &str,
        lease: Duration,
    ) -> anyhow::Result<bool> {
        Ok(self.with(|boards| {
            let state = boards.entry(board.to_string()).or_default();
            if state.live.is_some() || state.building() {
                return false;
            }
            state.building = Some((token.to_string(), Instant::now() + lease));
            state.next = MemoryBoard::default();
            true
        }))
    }

    async fn load(
        &self,
        board: &str,
        token: &str,
        entries: &[OwnedEntry],
        lease: Duration,
    ) -> anyhow::Result<bool> {
        let cut = self.dedupe.cut();
        Ok(self.with(|boards| {
            let Some(state) = boards.get_mut(board).filter(|s| s.lease_held_by(token)) else {
                return false;
            };
            state.building = Some((token.to_string(), Instant::now() + lease));
            for e in entries {
                state.next.load(&e.member, e.value, &e.event_id, cut);
            }
            true
        }))
    }

    async fn finish_rebuild(&self, board: &str, token: &str) -> anyhow::Result<bool> {
        Ok(self.with(|boards| {
            let Some(state) = boards.get_mut(board).filter(|s| s.lease_held_by(token)) else {
                return false;
            };
            state.live = Some(std::mem::take(&mut state.next));
            state.building = None;
            true
        }))
    }

    async fn abort_rebuild(&self, board: &str, token: &str) -> anyhow::Result<()> {
        self.with(|boards| {
            if let Some(state) = boards.get_mut(board).filter(|s| s.lease_held_by(token)) {
                state.building = None;
                state.next = MemoryBoard::default();
            }
        });
        Ok(())
    }

    async fn top(&self, board: &str, offset: u64, limit: u64) -> anyhow::Result<Vec<Entry>> {
        let (offset, limit) = (to_usize(offset), to_usize(limit));
        Ok(self.with_live(board, |b| b.entries_from(offset, limit)).unwrap_or_default())
    }

    async fn around(&self, board: &str, member: &str, n: u64) -> anyhow::Result<Option<Around>> {
        let n = to_usize(n);
        Ok(self
            .with_live(board, |b| {
                let score = b.scores.get(member).copied()?;
                let key = (Reverse(OrderedScore(score)), Reverse(member.to_string()));
                let position = b.order.range(..&key).count();
                let start = position.saturating_sub(n);
                let window = b.entries_from(start, (position - start + 1).saturating_add(n));
                let me = Entry { rank: b.rank_of(score), member: member.to_string(), score };
                Some(Around { me, window })
            })
            .flatten())
    }

    async fn len(&self, board: &str) -> anyhow::Result<u64> {
        Ok(self.with_live(board, |b| b.scores.len() as u64).unwrap_or(0))
    }

    async fn exists(&self, board: &str) -> anyhow::Result<bool> {
        Ok(self.with_live(board, |_| ()).is_some())
    }

    async fn forget(&self, board: &str) -> anyhow::Result<()> {
        self.with(|boards| {
            if let Some(state) = boards.get_mut(board) {
                state.live = None;
            }
        });
        Ok(())
    }

    async fn remembered(&self, board: &str) -> anyhow::Result<u64> {
        Ok(self.with_live(board, |b| b.seen.ids.len() as u64).unwrap_or(0))
    }

    async fn page(
        &self,
        board: &str,
        offset: u64,
        limit: u64,
    ) -> anyhow::Result<Option<(Vec<Entry>, u64)>> {
        let (offset, limit) = (to_usize(offset), to_usize(limit));
        Ok(self.with_live(board, |b| (b.entries_from(offset, limit), b.scores.len() as u64)))
    }
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Converts a seen set kept as a plain set (before the dedupe window) into the sorted set of
/// fact times: UUIDv7 ids get their time, other ids `+inf` (kept for good). Prepended to the
/// scripts that write seen sets.
const SEEN_UPGRADE: &str = r#"
local function upgrade_seen(key)
  if redis.call('TYPE', key).ok ~= 'set' then return end
  local ids = redis.call('SMEMBERS', key)
  redis.call('DEL', key)
  for i = 1, #ids, 500 do
    local args = {}
    for j = i, math.min(i + 499, #ids) do
      local id, t = ids[j], '+inf'
      if #id == 36 and string.sub(id, 15, 15) == '7' then
        local ms = tonumber(string.sub(id, 1, 8) .. string.sub(id, 10, 13), 16)
        if ms then t = string.format('%d', ms) end
      end
      args[#args + 1] = t
      args[#args + 1] = id
    end
    redis.call('ZADD', key, unpack(args))
  end
end
"#;

/// Applies a batch of one board's deltas to the live keys when ready, to the aside keys
/// while building; one reply per delta: 1 applied, 0 duplicate, 2 missing, 3 stale. First
/// drops remembered ids older than the forget cut-off (see the module doc).
/// KEYS: live, seen, ready, building, next, next:seen. ARGV: stale-before ms, forget-before
/// ms, then member, delta, event id, fact time (ms or `+inf`) per delta.
const APPLY_SCRIPT: &str = r#"
local z, s
if redis.call('EXISTS', KEYS[3]) == 1 then
  z, s = KEYS[1], KEYS[2]
elseif redis.call('EXISTS', KEYS[4]) == 1 then
  z, s = KEYS[5], KEYS[6]
end
if s then
  upgrade_seen(s)
  redis.call('ZREMRANGEBYSCORE', s, '-inf', '(' .. ARGV[2])
end
local stale_before = tonumber(ARGV[1])
local out = {}
for i = 3, #ARGV, 4 do
  local t = ARGV[i + 3]
  if not z then
    out[#out + 1] = 2
  elseif t ~= '+inf' and tonumber(t) < stale_before then
    out[#out + 1] = 3
  elseif redis.call('ZADD', s, 'NX', t, ARGV[i + 2]) == 1 then
    redis.call('ZINCRBY', z, ARGV[i + 1], ARGV[i])
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
"#;

/// Takes the lease unless the board is ready or leased, and empties the aside keys.
/// KEYS: ready, building, next, next:seen. ARGV: token, lease ms.
const BEGIN_SCRIPT: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
redis.call('DEL', KEYS[3], KEYS[4])
return 1
"#;

/// Loads owner entries into the aside keys if the lease is ours, and extends it: an entry
/// counts unless its id is remembered, and is remembered unless stale.
/// KEYS: building, next, next:seen. ARGV: token, lease ms, stale-before ms, then member,
/// event id, value, fact time (ms or `+inf`) per entry.
const LOAD_SCRIPT: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
upgrade_seen(KEYS[3])
local stale_before = tonumber(ARGV[3])
for i = 4, #ARGV, 4 do
  if not redis.call('ZSCORE', KEYS[3], ARGV[i + 1]) then
    local t = ARGV[i + 3]
    if t == '+inf' or tonumber(t) >= stale_before then
      redis.call('ZADD', KEYS[3], t, ARGV[i + 1])
    end
    redis.call('ZINCRBY', KEYS[2], ARGV[i + 2], ARGV[i])
  end
end
return 1
"#;

/// Swaps the aside keys in (an empty aside copy means an empty board) and marks the board
/// ready, if the lease is ours. KEYS: live, seen, ready, building, next, next:seen.
const FINISH_SCRIPT: &str = r#"
if redis.call('GET', KEYS[4]) ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[5]) == 1 then
  redis.call('RENAME', KEYS[5], KEYS[1])
else
  redis.call('DEL', KEYS[1])
end
if redis.call('EXISTS', KEYS[6]) == 1 then
  redis.call('RENAME', KEYS[6], KEYS[2])
else
  redis.call('DEL', KEYS[2])
end
redis.call('SET', KEYS[3], '1')
redis.call('DEL', KEYS[4])
return 1
"#;

/// Releases the lease and the aside keys if the lease is ours.
/// KEYS: building, next, next:seen. ARGV: token.
const ABORT_SCRIPT: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
end
return 0
"#;

/// Positions ARGV[1]..=ARGV[2] with scores, and how many members score strictly above the
/// first of them (its competition rank minus one). KEYS: live.
const RANGE_SCRIPT: &str = r#"
local r = redis.call('ZREVRANGE', KEYS[1], ARGV[1], ARGV[2], 'WITHSCORES')
local above = 0
if #r > 0 then above = redis.call('ZCOUNT', KEYS[1], '(' .. r[2], '+inf') end
return {above, r}
"#;

/// A page in one step: nil when the board is not ready, else {members, members above the
/// first entry, entries ARGV[1]..=ARGV[2] with scores}. KEYS: live, ready.
const PAGE_SCRIPT: &str = r#"
if redis.call('EXISTS', KEYS[2]) == 0 then return false end
local card = redis.call('ZCARD', KEYS[1])
local r = {}
if tonumber(ARGV[2]) >= tonumber(ARGV[1]) then
  r = redis.call('ZREVRANGE', KEYS[1], ARGV[1], ARGV[2], 'WITHSCORES')
end
local above = 0
if #r > 0 then above = redis.call('ZCOUNT', KEYS[1], '(' .. r[2], '+inf') end
return {card, above, r}
"#;

/// A member's window: nil when it is not on the board, else {first position, members above
/// the first, members above the member, the window with scores}. KEYS: live. ARGV: member, n.
const AROUND_SCRIPT: &str = r#"
local pos = redis.call('ZREVRANK', KEYS[1], ARGV[1])
if not pos then return false end
local n = tonumber(ARGV[2])
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
local start = pos - n
if start < 0 then start = 0 end
local r = redis.call('ZREVRANGE', KEYS[1], start, pos + n, 'WITHSCORES')
local above_first = redis.call('ZCOUNT', KEYS[1], '(' .. r[2], '+inf')
local above_me = redis.call('ZCOUNT', KEYS[1], '(' .. score, '+inf')
return {start, above_first, above_me, r}
"#;

/// `[member, score, …]` as a script returns it (scores as strings, exact to the bit).
fn pairs(raw: Vec<Value>) -> anyhow::Result<Vec<(String, f64)>> {
    raw.chunks(2)
        .map(|kv| {
            let member = kv.first().and_then(Value::as_string).context("member")?;
            let score = kv
                .get(1)
                .and_then(Value::as_string)
                .and_then(|s| s.parse::<f64>().ok())
                .context("score")?;
            Ok((member, score))
        })
        .collect()
}

/// Competition ranks for entries in board order from position `start`, the first having
/// `above` members strictly above it.
fn ranked(start: u64, above: u64, raw: Vec<(String, f64)>) -> Vec<Entry> {
    let mut out = Vec::with_capacity(raw.len());
    let mut rank = 0;
    let mut previous: Option<f64> = None;
    for (i, (member, score)) in raw.into_iter().enumerate() {
        if previous != Some(score) {
            rank = if i == 0 { above + 1 } else { start + i as u64 + 1 };
            previous = Some(score);
        }
        out.push(Entry { rank, member, score });
    }
    out
}

/// Owner entries per LOAD script call: bounds one script's run time (Redis runs scripts
/// alone).
const LOAD_CHUNK: usize = 500;

/// The keys of one board.
struct Keys {
    live: String,
    seen: String,
    ready: String,
    building: String,
    next: String,
    next_seen: String,
}

/// The mesh score store: Redis sorted sets.
pub struct RedisScores {
    client: Client,
    prefix: String,
    dedupe: Dedupe,
}

impl RedisScores {
    /// Connects to `url`; every key starts with `prefix` (empty in production; per test in
    /// tests).
    pub async fn connect(url: &str, prefix: &str) -> anyhow::Result<Self> {
        let client = ewpm_kit::redis::connect(url).await?;
        Ok(Self { client, prefix: prefix.to_string(), dedupe: Dedupe::default() })
    }

    /// The same store remembering applied ids for `dedupe`'s window.
    pub fn with_dedupe(self, dedupe: Dedupe) -> Self {
        Self { dedupe, ..self }
    }

    fn key(&self, board: &str) -> String {
        format!("{}lb:{{{board}}}", self.prefix)
    }

    fn keys(&self, board: &str) -> Keys {
        let live = self.key(board);
        Keys {
            seen: format!("{live}:seen"),
            ready: format!("{live}:ready"),
            building: format!("{live}:building"),
            next: format!("{live}:next"),
            next_seen: format!("{live}:next:seen"),
            live,
        }
    }

    /// Entries at positions `start..=stop`, with competition ranks, read in one script so
    /// that a concurrent delta cannot tear the page from its ranks.
    async fn range(&self, key: &str, start: u64, stop: u64) -> anyhow::Result<Vec<Entry>> {
        let reply: Value = ewpm_kit::redis::eval(
            &self.client,
            RANGE_SCRIPT,
            vec![key.to_string()],
            vec![index(start), index(stop)],
        )
        .await
        .context("read board range")?;
        let mut parts = reply.into_array().into_iter();
        let above = parts.next().and_then(|v| v.as_u64()).context("range reply")?;
        let raw = parts.next().context("range reply")?.into_array();
        Ok(ranked(start, above, pairs(raw)?))
    }

    async fn apply_board(&self, board: &str, deltas: &[&Delta]) -> anyhow::Result<Vec<Applied>> {
        let k = self.keys(board);
        let cut = self.dedupe.cut();
        let mut args = vec![cut.stale_before.to_string(), cut.forget_before.to_string()];
        for d in deltas {
            args.extend([
                d.member.clone(),
                d.delta.to_string(),
                d.event_id.clone(),
                time_arg(&d.event_id),
            ]);
        }
        let codes: Vec<i64> = ewpm_kit::redis::eval(
            &self.client,
            APPLY.as_str(),
            vec![k.live, k.seen, k.ready, k.building, k.next, k.next_seen],
            args,
        )
        .await
        .context("apply score deltas")?;
        anyhow::ensure!(codes.len() == deltas.len(), "apply script answered {} codes", codes.len());
        Ok(codes
            .into_iter()
            .map(|c| match c {
                1 => Applied::Applied,
                0 => Applied::Duplicate,
                3 => Applied::Stale,
                _ => Applied::Missing,
            })
            .collect())
    }
}

/// A fact's time as the scripts take it: Unix ms, or `+inf` for an id without one.
fn time_arg(event_id: &str) -> String {
    fact_time_ms(event_id).map_or_else(|| "+inf".to_string(), |t| t.to_string())
}

/// The scripts that write seen sets, with the upgrade of old plain sets in front.
static APPLY: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("{SEEN_UPGRADE}{APPLY_SCRIPT}"));
static LOAD: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("{SEEN_UPGRADE}{LOAD_SCRIPT}"));

/// Milliseconds of a lease for Redis (at least 1: `PX 0` is an error).
fn lease_ms(lease: Duration) -> String {
    lease.as_millis().clamp(1, i64::MAX as u128).to_string()
}

/// A position as Redis takes it (signed 64-bit).
fn index(n: u64) -> String {
    i64::try_from(n).unwrap_or(i64::MAX).to_string()
}

#[async_trait]
impl ScoreStore for RedisScores {
    async fn apply_many(&self, deltas: &[Delta]) -> anyhow::Result<Vec<Applied>> {
        // One script per board; fred pipelines the concurrent calls on its connection.
        let mut by_board: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, d) in deltas.iter().enumerate() {
            by_board.entry(&d.board).or_default().push(i);
        }
        let calls = by_board.iter().map(|(board, positions)| async move {
            let batch: Vec<&Delta> = positions.iter().map(|&i| &deltas[i]).collect();
            self.apply_board(board, &batch).await.map(|r| (positions, r))
        });
        let mut out = vec![Applied::Missing; deltas.len()];
        for (positions, results) in futures::future::try_join_all(calls).await? {
            for (&i, r) in positions.iter().zip(results) {
                out[i] = r;
            }
        }
        Ok(out)
    }

    async fn begin_rebuild(
        &self,
        board: &str,
        token: &str,
        lease: Duration,
    ) -> anyhow::Result<bool> {
        let k = self.keys(board);
        let began: i64 = ewpm_kit::redis::eval(
            &self.client,
            BEGIN_SCRIPT,
            vec![k.ready, k.building, k.next, k.next_seen],
            vec![token.to_string(), lease_ms(lease)],
        )
        .await
        .context("begin rebuild")?;
        Ok(began == 1)
    }

    async fn load(
        &self,
        board: &str,
        token: &str,
        entries: &[OwnedEntry],
        lease: Duration,
    ) -> anyhow::Result<bool> {
        let k = self.keys(board);
        // An empty load still extends the lease and reports whether it is ours.
        let chunks: Vec<&[OwnedEntry]> =
            if entries.is_empty() { vec![&[]] } else { entries.chunks(LOAD_CHUNK).collect() };
        let cut = self.dedupe.cut();
        for chunk in chunks {
            let mut args = vec![token.to_string(), lease_ms(lease), cut.stale_before.to_string()];
            for e in chunk {
                args.extend([
                    e.member.clone(),
                    e.event_id.clone(),
                    e.value.to_string(),
                    time_arg(&e.event_id),
                ]);
            }
            let ours: i64 = ewpm_kit::redis::eval(
                &self.client,
                LOAD.as_str(),
                vec![k.building.clone(), k.next.clone(), k.next_seen.clone()],
                args,
            )
            .await
            .context("load rebuild entries")?;
            if ours != 1 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    async fn finish_rebuild(&self, board: &str, token: &str) -> anyhow::Result<bool> {
        let k = self.keys(board);
        let done: i64 = ewpm_kit::redis::eval(
            &self.client,
            FINISH_SCRIPT,
            vec![k.live, k.seen, k.ready, k.building, k.next, k.next_seen],
            vec![token.to_string()],
        )
        .await
        .context("finish rebuild")?;
        Ok(done == 1)
    }

    async fn abort_rebuild(&self, board: &str, token: &str) -> anyhow::Result<()> {
        let k = self.keys(board);
        let _: i64 = ewpm_kit::redis::eval(
            &self.client,
            ABORT_SCRIPT,
            vec![k.building, k.next, k.next_seen],
            vec![token.to_string()],
        )
        .await
        .context("abort rebuild")?;
        Ok(())
    }

    async fn top(&self, board: &str, offset: u64, limit: u64) -> anyhow::Result<Vec<Entry>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.range(&self.key(board), offset, offset.saturating_add(limit - 1)).await
    }

    async fn around(&self, board: &str, member: &str, n: u64) -> anyhow::Result<Option<Around>> {
        let reply: Value = ewpm_kit::redis::eval(
            &self.client,
            AROUND_SCRIPT,
            vec![self.key(board)],
            vec![member.to_string(), n.min(1 << 40).to_string()],
        )
        .await
        .context("read around a member")?;
        if reply.is_null() {
            return Ok(None);
        }
        let mut parts = reply.into_array().into_iter();
        let mut number = || parts.next().and_then(|v| v.as_u64()).context("around reply");
        let (start, above_first, above_me) = (number()?, number()?, number()?);
        let raw = parts.next().context("around reply")?.into_array();
        let window = ranked(start, above_first, pairs(raw)?);
        let me = window
            .iter()
            .find(|e| e.member == member)
            .cloned()
            .map(|e| Entry { rank: above_me + 1, ..e })
            .context("the member is missing from its own window")?;
        Ok(Some(Around { me, window }))
    }

    async fn len(&self, board: &str) -> anyhow::Result<u64> {
        Ok(self.client.zcard(self.key(board)).await.context("ZCARD")?)
    }

    async fn exists(&self, board: &str) -> anyhow::Result<bool> {
        let n: u64 = self.client.exists(self.keys(board).ready).await.context("EXISTS")?;
        Ok(n == 1)
    }

    async fn forget(&self, board: &str) -> anyhow::Result<()> {
        let _: u64 = self.client.del(self.keys(board).ready).await.context("DEL ready")?;
        Ok(())
    }

    async fn remembered(&self, board: &str) -> anyhow::Result<u64> {
        Ok(self.client.zcard(self.keys(board).seen).await.context("ZCARD seen")?)
    }

    async fn page(
        &self,
        board: &str,
        offset: u64,
        limit: u64,
    ) -> anyhow::Result<Option<(Vec<Entry>, u64)>> {
        let k = self.keys(board);
        // An empty page asks for positions offset..=offset-1, which the script skips.
        let stop = if limit == 0 { None } else { Some(offset.saturating_add(limit - 1)) };
        let (start, stop) = match stop {
            Some(stop) => (index(offset), index(stop)),
            None => ("1".to_string(), "0".to_string()),
        };
        let reply: Value = ewpm_kit::redis::eval(
            &self.client,
            PAGE_SCRIPT,
            vec![k.live, k.ready],
            vec![start, stop],
        )
        .await
        .context("read board page")?;
        if reply.is_null() {
            return Ok(None);
        }
        let mut parts = reply.into_array().into_iter();
        let card = parts.next().and_then(|v| v.as_u64()).context("page reply")?;
        let above = parts.next().and_then(|v| v.as_u64()).context("page reply")?;
        let raw = parts.next().context("page reply")?.into_array();
        Ok(Some((ranked(offset, above, pairs(raw)?), card)))
    }
}
