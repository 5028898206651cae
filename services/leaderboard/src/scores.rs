//! The score store: one sorted set of member scores per board.
//!
//! - A delta carries an `event_id`, unique per real-world fact; applying it again changes
//!   nothing (dedupe and increment are one atomic step: a Lua script on Redis, one lock in
//!   memory).
//! - Order: score descending; within a tie, member id descending (Redis' own order for
//!   `ZREVRANGE`, kept by the memory store too), so pages are stable.
//! - Ranks are competition ranks (1, 2, 2, 4): one plus the number of members with a strictly
//!   higher score.
//! - Keys of one board share a Redis Cluster hash slot: `lb:{<board>}` and `lb:{<board>}:seen`.

use std::{
    cmp::Reverse,
    collections::{BTreeSet, HashMap, HashSet},
    sync::Mutex,
};

use anyhow::Context;
use async_trait::async_trait;
use fred::{
    prelude::{Client, ClientLike, Config, KeysInterface, LuaInterface, SortedSetsInterface},
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

/// Scores of named boards.
#[async_trait]
pub trait ScoreStore: Send + Sync + 'static {
    /// Adds `delta` to `member` on `board` unless `event_id` was applied to that board before.
    /// Returns whether it was applied.
    async fn apply(
        &self,
        board: &str,
        member: &str,
        delta: f64,
        event_id: &str,
    ) -> anyhow::Result<bool>;

    /// `limit` entries from position `offset` (0-based), in board order.
    async fn top(&self, board: &str, offset: u64, limit: u64) -> anyhow::Result<Vec<Entry>>;

    /// `member`'s entry and up to `n` neighbours on each side; `None` if not on the board.
    async fn around(&self, board: &str, member: &str, n: u64) -> anyhow::Result<Option<Around>>;

    /// Number of members on `board`.
    async fn len(&self, board: &str) -> anyhow::Result<u64>;

    /// Whether `board` exists (a lost board must be rebuilt from its owner).
    async fn exists(&self, board: &str) -> anyhow::Result<bool>;
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

#[derive(Debug, Default)]
struct MemoryBoard {
    scores: HashMap<String, f64>,
    order: BTreeSet<OrderKey>,
    seen: HashSet<String>,
}

impl MemoryBoard {
    /// One plus the members strictly above `score` (they come first in the order). Linear
    /// in the rank: fine for embedded boards.
    fn rank_of(&self, score: f64) -> u64 {
        self.order.iter().take_while(|(Reverse(s), _)| s.0 > score).count() as u64 + 1
    }

    fn entries_from(&self, offset: usize, limit: usize) -> Vec<Entry> {
        let mut out = Vec::with_capacity(limit);
        let mut rank = 0;
        let mut previous: Option<f64> = None;
        for (i, (Reverse(score), Reverse(member))) in self.order.iter().enumerate() {
            if previous != Some(score.0) {
                rank = i as u64 + 1;
                previous = Some(score.0);
            }
            if i >= offset + limit {
                break;
            }
            if i >= offset {
                out.push(Entry { rank, member: member.clone(), score: score.0 });
            }
        }
        out
    }
}

/// The embedded score store.
#[derive(Debug, Default)]
pub struct MemoryScores {
    boards: Mutex<HashMap<String, MemoryBoard>>,
}

impl MemoryScores {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl ScoreStore for MemoryScores {
    async fn apply(
        &self,
        board: &str,
        member: &str,
        delta: f64,
        event_id: &str,
    ) -> anyhow::Result<bool> {
        let mut boards = self.boards.lock().unwrap_or_else(|p| p.into_inner());
        let b = boards.entry(board.to_string()).or_default();
        if !b.seen.insert(event_id.to_string()) {
            return Ok(false);
        }
        let old = b.scores.get(member).copied();
        if let Some(old) = old {
            b.order.remove(&(Reverse(OrderedScore(old)), Reverse(member.to_string())));
        }
        let new = old.unwrap_or(0.0) + delta;
        b.scores.insert(member.to_string(), new);
        b.order.insert((Reverse(OrderedScore(new)), Reverse(member.to_string())));
        Ok(true)
    }

    async fn top(&self, board: &str, offset: u64, limit: u64) -> anyhow::Result<Vec<Entry>> {
        let boards = self.boards.lock().unwrap_or_else(|p| p.into_inner());
        Ok(boards
            .get(board)
            .map(|b| b.entries_from(offset as usize, limit as usize))
            .unwrap_or_default())
    }

    async fn around(&self, board: &str, member: &str, n: u64) -> anyhow::Result<Option<Around>> {
        let boards = self.boards.lock().unwrap_or_else(|p| p.into_inner());
        let Some(b) = boards.get(board) else { return Ok(None) };
        let Some(score) = b.scores.get(member).copied() else { return Ok(None) };
        let key = (Reverse(OrderedScore(score)), Reverse(member.to_string()));
        let position = b.order.range(..&key).count();
        let start = position.saturating_sub(n as usize);
        let window = b.entries_from(start, position - start + 1 + n as usize);
        let me = Entry { rank: b.rank_of(score), member: member.to_string(), score };
        Ok(Some(Around { me, window }))
    }

    async fn len(&self, board: &str) -> anyhow::Result<u64> {
        let boards = self.boards.lock().unwrap_or_else(|p| p.into_inner());
        Ok(boards.get(board).map_or(0, |b| b.scores.len() as u64))
    }

    async fn exists(&self, board: &str) -> anyhow::Result<bool> {
        let boards = self.boards.lock().unwrap_or_else(|p| p.into_inner());
        Ok(boards.contains_key(board))
    }
}

/// Dedupe and increment in one step: `SADD seen id` then `ZINCRBY` only if it was new.
const APPLY_SCRIPT: &str = r#"
if redis.call('SADD', KEYS[2], ARGV[3]) == 1 then
  redis.call('ZINCRBY', KEYS[1], ARGV[2], ARGV[1])
  return 1
end
return 0
"#;

/// The mesh score store: Redis sorted sets.
pub struct RedisScores {
    client: Client,
    prefix: String,
}

impl RedisScores {
    /// Connects to `url`; every key starts with `prefix` (empty in production; per test in
    /// tests).
    pub async fn connect(url: &str, prefix: &str) -> anyhow::Result<Self> {
        let client = fred::types::Builder::from_config(Config::from_url(url).context("Redis URL")?)
            .build()
            .context("Redis client")?;
        client.init().await.context("connect to Redis")?;
        Ok(Self { client, prefix: prefix.to_string() })
    }

    fn key(&self, board: &str) -> String {
        format!("{}lb:{{{board}}}", self.prefix)
    }

    fn seen_key(&self, board: &str) -> String {
        format!("{}lb:{{{board}}}:seen", self.prefix)
    }

    /// Competition rank of `score`: one plus the members strictly above it.
    async fn rank_of(&self, key: &str, score: f64) -> anyhow::Result<u64> {
        // Strictly above: from the next representable score up.
        let above: u64 =
            self.client.zcount(key, score.next_up(), f64::INFINITY).await.context("ZCOUNT")?;
        Ok(above + 1)
    }

    /// Entries at positions `start..=stop`, with competition ranks.
    async fn range(&self, key: &str, start: i64, stop: i64) -> anyhow::Result<Vec<Entry>> {
        let raw: Vec<(String, f64)> =
            self.client.zrevrange(key, start, stop, true).await.context("ZREVRANGE")?;
        let mut out = Vec::with_capacity(raw.len());
        let mut rank = 0;
        let mut previous: Option<f64> = None;
        for (i, (member, score)) in raw.into_iter().enumerate() {
            if previous != Some(score) {
                rank = if i == 0 {
                    self.rank_of(key, score).await?
                } else {
                    start as u64 + i as u64 + 1
                };
                previous = Some(score);
            }
            out.push(Entry { rank, member, score });
        }
        Ok(out)
    }
}

#[async_trait]
impl ScoreStore for RedisScores {
    async fn apply(
        &self,
        board: &str,
        member: &str,
        delta: f64,
        event_id: &str,
    ) -> anyhow::Result<bool> {
        let applied: i64 = self
            .client
            .eval(
                APPLY_SCRIPT,
                vec![self.key(board), self.seen_key(board)],
                vec![member.to_string(), delta.to_string(), event_id.to_string()],
            )
            .await
            .context("apply score delta")?;
        Ok(applied == 1)
    }

    async fn top(&self, board: &str, offset: u64, limit: u64) -> anyhow::Result<Vec<Entry>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.range(&self.key(board), offset as i64, (offset + limit - 1) as i64).await
    }

    async fn around(&self, board: &str, member: &str, n: u64) -> anyhow::Result<Option<Around>> {
        let key = self.key(board);
        let position: Value =
            self.client.zrevrank(&key, member, false).await.context("ZREVRANK")?;
        let Some(position) = position.as_u64() else { return Ok(None) };
        let score: f64 = self.client.zscore(&key, member).await.context("ZSCORE")?;
        let start = position.saturating_sub(n);
        let window = self.range(&key, start as i64, (position + n) as i64).await?;
        let me =
            Entry { rank: self.rank_of(&key, score).await?, member: member.to_string(), score };
        Ok(Some(Around { me, window }))
    }

    async fn len(&self, board: &str) -> anyhow::Result<u64> {
        Ok(self.client.zcard(self.key(board)).await.context("ZCARD")?)
    }

    async fn exists(&self, board: &str) -> anyhow::Result<bool> {
        let n: u64 = self.client.exists(self.key(board)).await.context("EXISTS")?;
        Ok(n == 1)
    }
}
