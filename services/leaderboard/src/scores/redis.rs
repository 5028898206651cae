//! [`RedisScores`]: the mesh score store, one Redis sorted set per board plus its seen set,
//! marker, lease and aside copy, each multi-key step one Lua script.

use std::{collections::HashMap, time::Duration};

use anyhow::Context;
use async_trait::async_trait;
use fred::{
    prelude::{Client, KeysInterface, SortedSetsInterface},
    types::Value,
};

use super::{Applied, Around, Dedupe, Delta, Entry, OwnedEntry, ScoreStore, fact_time_ms};

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
