//! [`RedisScores`]: the mesh score store, one Redis sorted set per board plus its seen set,
//! marker, lease and aside copy, each multi-key step one Lua script.

use std::{collections::HashMap, time::Duration};

use anyhow::Context;
use async_trait::async_trait;
use fred::{
    prelude::{Client, KeysInterface, SortedSetsInterface},
    types::Value,
};

use super::{Applied, Around, Dedupe, Delta, Entry, OwnedEntry, ScoreStore, Shape, fact_time_ms};
use crate::ranking::{Operator, Order, RankStyle};

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

/// The board's shape and the helpers every script that writes or ranks entries shares (see
/// the module doc of [`crate::scores`]). A script calls `init(op, asc, sub, dense)` first:
/// op `s`um / `b`est / `t` (set), asc `1`/`0`, sub `0` none / `1` descending / `2`
/// ascending, dense `1`/`0`. Keys: members of the sorted set are the member id, or (boards
/// with a subscore) 16 hex digits of the signed subscore, sortable, then the member id.
const SHAPE_LUA: &str = r#"
local OP, ASC, SUBO, DENSE, SUBSIGN = 's', false, 0, false, 1
local function init(op, asc, sub, dense)
  OP = op; ASC = asc == '1'; SUBO = tonumber(sub); DENSE = dense == '1'
  if SUBO == 2 then SUBSIGN = -1 else SUBSIGN = 1 end
end
local function plain() return OP == 's' and SUBO == 0 end
local function fmt(x) return string.format('%.17g', x) end
local function zs(score)
  local v = score
  if ASC then v = -score end
  if v == 0 then v = 0 end
  return v
end
local function ss(sub)
  if SUBO == 0 then return 0 end
  local v = SUBSIGN * sub
  if v == 0 then v = 0 end
  return v
end
local function enc(x)
  if x == 0 then x = 0 end
  local b = {string.byte(struct.pack('>d', x), 1, 8)}
  if b[1] >= 128 then
    for i = 1, 8 do b[i] = 255 - b[i] end
  else
    b[1] = b[1] + 128
  end
  return string.format('%02x%02x%02x%02x%02x%02x%02x%02x', b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8])
end
local function key_of(member, sub)
  if SUBO == 0 then return member end
  return enc(ss(sub)) .. member
end
local function member_of(key)
  if SUBO == 0 then return key end
  return string.sub(key, 17)
end
local function pair_of(z, sub)
  if z == 0 then z = 0 end
  return enc(ss(sub)) .. fmt(z)
end
local function rec_get(r, member)
  local v = redis.call('HGET', r, member)
  if not v then return nil end
  local a, b, c = string.match(v, '^(%S+) (%S+) ?(.*)$')
  return tonumber(a), tonumber(b), c
end
local function dense_inc(d, dn, pk, z)
  if redis.call('HINCRBY', dn, pk, 1) == 1 then redis.call('ZADD', d, fmt(z), pk) end
end
local function dense_dec(d, dn, pk)
  if redis.call('HINCRBY', dn, pk, -1) <= 0 then
    redis.call('HDEL', dn, pk)
    redis.call('ZREM', d, pk)
  end
end
local function better(s1, b1, s2, b2)
  local z1, z2 = zs(s1), zs(s2)
  if z1 ~= z2 then return z1 > z2 end
  return ss(b1) > ss(b2)
end
-- One fact into the board z (records r, dense pairs d/dn).
local function update(z, r, d, dn, member, value, sub, version)
  if plain() then
    if DENSE then
      local cur = redis.call('ZSCORE', z, member)
      if cur then dense_dec(d, dn, pair_of(tonumber(cur), 0)) end
    end
    local inc = value
    if ASC then inc = -value end
    local now = tonumber(redis.call('ZINCRBY', z, fmt(inc), member))
    if DENSE then dense_inc(d, dn, pair_of(now, 0), now) end
    return
  end
  local os, ob, ov = rec_get(r, member)
  local ns, nb, nv
  if os == nil then
    ns, nb, nv = value, sub, version
  elseif OP == 's' then
    ns, nb, nv = os + value, ob + sub, version
  elseif OP == 'b' then
    if not better(value, sub, os, ob) then return end
    ns, nb, nv = value, sub, version
  else
    if not (version > ov) then return end
    ns, nb, nv = value, sub, version
  end
  if SUBO == 0 then nb = 0 end
  if os ~= nil then
    redis.call('ZREM', z, key_of(member, ob))
    if DENSE then dense_dec(d, dn, pair_of(zs(os), ob)) end
  end
  redis.call('ZADD', z, fmt(zs(ns)), key_of(member, nb))
  redis.call('HSET', r, member, fmt(ns) .. ' ' .. fmt(nb) .. ' ' .. nv)
  if DENSE then dense_inc(d, dn, pair_of(zs(ns), nb), zs(ns)) end
end
local function is_void(v, has, member, id)
  return has and (redis.call('SISMEMBER', v, 'm:' .. member) == 1 or redis.call('SISMEMBER', v, 'e:' .. id) == 1)
end
"#;

/// Applies a batch of one board's deltas to the live keys when ready, to the aside keys
/// while building; one reply per delta: 1 applied, 0 duplicate, 2 missing, 3 stale, 4 void.
/// First drops remembered ids older than the forget cut-off (see the module doc).
/// KEYS: ready, building, then live z, seen, r, d, dn, void, then the same six aside.
/// ARGV: stale-before ms, forget-before ms, op, asc, sub, dense, then member, value,
/// subscore, event id, fact time (ms or `+inf`), version per delta.
const APPLY_SCRIPT: &str = r#"
init(ARGV[3], ARGV[4], ARGV[5], ARGV[6])
local base
if redis.call('EXISTS', KEYS[1]) == 1 then
  base = 3
elseif redis.call('EXISTS', KEYS[2]) == 1 then
  base = 9
end
local z, s, r, d, dn, v
local has_void = false
if base then
  z, s, r, d, dn, v = KEYS[base], KEYS[base + 1], KEYS[base + 2], KEYS[base + 3], KEYS[base + 4], KEYS[base + 5]
  upgrade_seen(s)
  redis.call('ZREMRANGEBYSCORE', s, '-inf', '(' .. ARGV[2])
  has_void = redis.call('SCARD', v) > 0
end
local stale_before = tonumber(ARGV[1])
local out = {}
for i = 7, #ARGV, 6 do
  local member, id, t = ARGV[i], ARGV[i + 3], ARGV[i + 4]
  if not base then
    out[#out + 1] = 2
  elseif t ~= '+inf' and tonumber(t) < stale_before then
    out[#out + 1] = 3
  elseif redis.call('ZADD', s, 'NX', t, id) == 0 then
    out[#out + 1] = 0
  elseif is_void(v, has_void, member, id) then
    out[#out + 1] = 4
  else
    update(z, r, d, dn, member, tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), ARGV[i + 5])
    out[#out + 1] = 1
  end
end
return out
"#;

/// Takes the lease unless the board is ready or leased, empties the aside keys and gives
/// them the board's voids. KEYS: ready, building, aside z, seen, r, d, dn, void.
/// ARGV: token, lease ms, voids….
const BEGIN_SCRIPT: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
redis.call('DEL', KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8])
for i = 3, #ARGV, 500 do
  redis.call('SADD', KEYS[8], unpack(ARGV, i, math.min(i + 499, #ARGV)))
end
return 1
"#;

/// Loads owner entries into the aside keys if the lease is ours, and extends it: an entry
/// counts unless its id is remembered or void, and is remembered unless stale.
/// KEYS: building, aside z, seen, r, d, dn, void. ARGV: token, lease ms, stale-before ms,
/// op, asc, sub, dense, then member, event id, value, subscore, fact time (ms or `+inf`),
/// version per entry.
const LOAD_SCRIPT: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
init(ARGV[4], ARGV[5], ARGV[6], ARGV[7])
upgrade_seen(KEYS[3])
local has_void = redis.call('SCARD', KEYS[7]) > 0
local stale_before = tonumber(ARGV[3])
for i = 8, #ARGV, 6 do
  local member, id, t = ARGV[i], ARGV[i + 1], ARGV[i + 4]
  if not redis.call('ZSCORE', KEYS[3], id) then
    if t == '+inf' or tonumber(t) >= stale_before then
      redis.call('ZADD', KEYS[3], t, id)
    end
    if not is_void(KEYS[7], has_void, member, id) then
      update(KEYS[2], KEYS[4], KEYS[5], KEYS[6], member, tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3]), ARGV[i + 5])
    end
  end
end
return 1
"#;

/// Swaps the aside keys in (an empty aside key means an empty live one) and marks the board
/// ready, if the lease is ours. KEYS: ready, building, then (live, aside) pairs.
const FINISH_SCRIPT: &str = r#"
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
for i = 3, #KEYS, 2 do
  if redis.call('EXISTS', KEYS[i + 1]) == 1 then
    redis.call('RENAME', KEYS[i + 1], KEYS[i])
  else
    redis.call('DEL', KEYS[i])
  end
end
redis.call('SET', KEYS[1], '1')
redis.call('DEL', KEYS[2])
return 1
"#;

/// Releases the lease and the aside keys if the lease is ours.
/// KEYS: building, then the aside keys. ARGV: token.
const ABORT_SCRIPT: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', unpack(KEYS))
end
return 0
"#;

/// Reads in one step: false when the board is not ready, else {members, rows…} where a row
/// is member, score, subscore, rank, position. KEYS: z, r, d, ready. ARGV: op, asc, sub,
/// dense, then a mode: `page` offset stop | `around` member n (rows of the window, after
/// the member's position) | `ranks` members….
/// Competition ranks on boards with a subscore are found by ranking a sentinel key placed
/// just after the entry's (score, subscore) group, added and removed within the script.
const READ_SCRIPT: &str = r#"
init(ARGV[1], ARGV[2], ARGV[3], ARGV[4])
if redis.call('EXISTS', KEYS[4]) == 0 then return false end
local z, r, d = KEYS[1], KEYS[2], KEYS[3]
local function sub_of(member)
  if SUBO == 0 then return 0 end
  local _, b = rec_get(r, member)
  return b or 0
end
local function rank_of(zsc, sub)
  if DENSE then return redis.call('ZREVRANK', d, pair_of(zsc, sub)) + 1 end
  if SUBO == 0 then return redis.call('ZCOUNT', z, '(' .. fmt(zsc), '+inf') + 1 end
  local sentinel = enc(ss(sub)) .. '\255'
  redis.call('ZADD', z, fmt(zsc), sentinel)
  local above = redis.call('ZREVRANK', z, sentinel)
  redis.call('ZREM', z, sentinel)
  return above + 1
end
local function row(out, member, zsc, b, rank, pos)
  local score = zsc
  if ASC then score = -zsc end
  out[#out + 1] = member
  out[#out + 1] = fmt(score)
  out[#out + 1] = fmt(b)
  out[#out + 1] = rank
  out[#out + 1] = pos
end
local function range(out, start, stop)
  if stop < start then return end
  local raw = redis.call('ZREVRANGE', z, start, stop, 'WITHSCORES')
  local pz, pb, rank
  for i = 1, #raw, 2 do
    local member, zsc = member_of(raw[i]), tonumber(raw[i + 1])
    local b = sub_of(member)
    local pos = start + (i - 1) / 2
    if rank == nil then
      rank = rank_of(zsc, b)
    elseif zsc ~= pz or ss(b) ~= ss(pb) then
      if DENSE then rank = rank + 1 else rank = pos + 1 end
    end
    pz, pb = zsc, b
    row(out, member, zsc, b, rank, pos)
  end
end
local function key_for(member)
  if SUBO == 0 then return member end
  local s, b = rec_get(r, member)
  if s == nil then return nil end
  return key_of(member, b)
end
local out = {redis.call('ZCARD', z)}
local mode = ARGV[5]
if mode == 'page' then
  range(out, tonumber(ARGV[6]), tonumber(ARGV[7]))
elseif mode == 'around' then
  local key = key_for(ARGV[6])
  local pos = key and redis.call('ZREVRANK', z, key)
  if pos then
    local n = tonumber(ARGV[7])
    local start = pos - n
    if start < 0 then start = 0 end
    range(out, start, pos + n)
  end
else
  for i = 6, #ARGV do
    local key = key_for(ARGV[i])
    local pos = key and redis.call('ZREVRANK', z, key)
    if pos then
      local zsc = tonumber(redis.call('ZSCORE', z, key))
      local b = sub_of(ARGV[i])
      row(out, ARGV[i], zsc, b, rank_of(zsc, b), pos)
    end
  end
end
return out
"#;

/// Owner entries per LOAD script call: bounds one script's run time (Redis runs scripts
/// alone).
const LOAD_CHUNK: usize = 500;

/// The keys of one board: the data keys live and aside, and the markers.
struct Keys {
    /// z, seen, r, d, dn, void.
    live: [String; 6],
    /// The same six, aside (`…:next…`).
    next: [String; 6],
    ready: String,
    building: String,
}

/// A board's shape as the scripts take it: op, asc, sub, dense.
fn shape_args(shape: Shape) -> [String; 4] {
    let op = match shape.op {
        Operator::Sum => "s",
        Operator::Best => "b",
        Operator::Set => "t",
    };
    let sub = match shape.sub {
        None => "0",
        Some(Order::Descending) => "1",
        Some(Order::Ascending) => "2",
    };
    [
        op.to_string(),
        if shape.order == Order::Ascending { "1" } else { "0" }.to_string(),
        sub.to_string(),
        if shape.style == RankStyle::Dense { "1" } else { "0" }.to_string(),
    ]
}

/// `{members, rows…}` from the read script: rows of member, score, subscore, rank,
/// position.
fn read_reply(reply: Value) -> anyhow::Result<Option<(u64, Vec<Entry>)>> {
    if reply.is_null() {
        return Ok(None);
    }
    let mut parts = reply.into_array().into_iter();
    let card = parts.next().and_then(|v| v.as_u64()).context("read reply: members")?;
    let rest: Vec<Value> = parts.collect();
    let mut entries = Vec::with_capacity(rest.len() / 5);
    for row in rest.chunks(5) {
        let text = |i: usize| row.get(i).and_then(Value::as_string).context("read reply row");
        let number = |i: usize| row.get(i).and_then(Value::as_u64).context("read reply row");
        entries.push(Entry {
            member: text(0)?,
            score: text(1)?.parse().context("read reply score")?,
            subscore: text(2)?.parse().context("read reply subscore")?,
            rank: number(3)?,
            position: number(4)?,
        });
    }
    Ok(Some((card, entries)))
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

    fn keys(&self, board: &str) -> Keys {
        let base = format!("{}lb:{{{board}}}", self.prefix);
        let data = |aside: &str| {
            ["", ":seen", ":r", ":d", ":dn", ":void"].map(|suffix| format!("{base}{aside}{suffix}"))
        };
        Keys {
            live: data(""),
            next: data(":next"),
            ready: format!("{base}:ready"),
            building: format!("{base}:building"),
        }
    }

    async fn read(
        &self,
        board: &str,
        shape: Shape,
        mode: Vec<String>,
    ) -> anyhow::Result<Option<(u64, Vec<Entry>)>> {
        let k = self.keys(board);
        let mut args: Vec<String> = shape_args(shape).into();
        args.extend(mode);
        let [z, _, r, d, _, _] = k.live;
        let reply: Value =
            ewpm_kit::redis::eval(&self.client, READ.as_str(), vec![z, r, d, k.ready], args)
                .await
                .context("read board")?;
        read_reply(reply)
    }

    async fn apply_board(&self, deltas: &[&Delta]) -> anyhow::Result<Vec<Applied>> {
        let Some(first) = deltas.first() else { return Ok(Vec::new()) };
        let k = self.keys(&first.board);
        let cut = self.dedupe.cut();
        let mut args = vec![cut.stale_before.to_string(), cut.forget_before.to_string()];
        args.extend(shape_args(first.shape));
        for d in deltas {
            args.extend([
                d.member.clone(),
                d.delta.to_string(),
                d.subscore.to_string(),
                d.event_id.clone(),
                time_arg(&d.event_id),
                d.version.clone(),
            ]);
        }
        let mut keys = vec![k.ready, k.building];
        keys.extend(k.live);
        keys.extend(k.next);
        let codes: Vec<i64> = ewpm_kit::redis::eval(&self.client, APPLY.as_str(), keys, args)
            .await
            .context("apply score deltas")?;
        anyhow::ensure!(codes.len() == deltas.len(), "apply script answered {} codes", codes.len());
        Ok(codes
            .into_iter()
            .map(|c| match c {
                1 => Applied::Applied,
                0 => Applied::Duplicate,
                3 => Applied::Stale,
                4 => Applied::Voided,
                _ => Applied::Missing,
            })
            .collect())
    }
}

/// A fact's time as the scripts take it: Unix ms, or `+inf` for an id without one.
fn time_arg(event_id: &str) -> String {
    fact_time_ms(event_id).map_or_else(|| "+inf".to_string(), |t| t.to_string())
}

/// The scripts, with the helpers they use in front.
static APPLY: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("{SEEN_UPGRADE}{SHAPE_LUA}{APPLY_SCRIPT}"));
static LOAD: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("{SEEN_UPGRADE}{SHAPE_LUA}{LOAD_SCRIPT}"));
static READ: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("{SHAPE_LUA}{READ_SCRIPT}"));

/// Milliseconds of a lease for Redis (at least 1: `PX 0` is an error).
fn lease_ms(lease: Duration) -> String {
    lease.as_millis().clamp(1, i64::MAX as u128).to_string()
}

/// A position as the scripts take it: Lua numbers are doubles, so positions are capped at
/// 2^50 (far beyond any board).
fn index(n: u64) -> String {
    n.min(1 << 50).to_string()
}

#[async_trait]
impl ScoreStore for RedisScores {
    async fn apply_many(&self, deltas: &[Delta]) -> anyhow::Result<Vec<Applied>> {
        // One script per board; fred pipelines the concurrent calls on its connection.
        let mut by_board: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, d) in deltas.iter().enumerate() {
            by_board.entry(&d.board).or_default().push(i);
        }
        let calls = by_board.values().map(|positions| async move {
            let batch: Vec<&Delta> = positions.iter().map(|&i| &deltas[i]).collect();
            self.apply_board(&batch).await.map(|r| (positions, r))
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
        voids: &[String],
    ) -> anyhow::Result<bool> {
        let k = self.keys(board);
        let mut keys = vec![k.ready, k.building];
        keys.extend(k.next);
        let mut args = vec![token.to_string(), lease_ms(lease)];
        args.extend(voids.iter().cloned());
        let began: i64 = ewpm_kit::redis::eval(&self.client, BEGIN_SCRIPT, keys, args)
            .await
            .context("begin rebuild")?;
        Ok(began == 1)
    }

    async fn load(
        &self,
        board: &str,
        shape: Shape,
        token: &str,
        entries: &[OwnedEntry],
        lease: Duration,
    ) -> anyhow::Result<bool> {
        let k = self.keys(board);
        let mut keys = vec![k.building];
        keys.extend(k.next);
        // An empty load still extends the lease and reports whether it is ours.
        let chunks: Vec<&[OwnedEntry]> =
            if entries.is_empty() { vec![&[]] } else { entries.chunks(LOAD_CHUNK).collect() };
        let cut = self.dedupe.cut();
        for chunk in chunks {
            let mut args = vec![token.to_string(), lease_ms(lease), cut.stale_before.to_string()];
            args.extend(shape_args(shape));
            for e in chunk {
                args.extend([
                    e.member.clone(),
                    e.event_id.clone(),
                    e.value.to_string(),
                    e.subscore.to_string(),
                    time_arg(&e.event_id),
                    e.version.clone(),
                ]);
            }
            let ours: i64 = ewpm_kit::redis::eval(&self.client, LOAD.as_str(), keys.clone(), args)
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
        let mut keys = vec![k.ready, k.building];
        for (live, next) in k.live.into_iter().zip(k.next) {
            keys.extend([live, next]);
        }
        let done: i64 =
            ewpm_kit::redis::eval(&self.client, FINISH_SCRIPT, keys, vec![token.to_string()])
                .await
                .context("finish rebuild")?;
        Ok(done == 1)
    }

    async fn abort_rebuild(&self, board: &str, token: &str) -> anyhow::Result<()> {
        let k = self.keys(board);
        let mut keys = vec![k.building];
        keys.extend(k.next);
        let _: i64 =
            ewpm_kit::redis::eval(&self.client, ABORT_SCRIPT, keys, vec![token.to_string()])
                .await
                .context("abort rebuild")?;
        Ok(())
    }

    async fn page(
        &self,
        board: &str,
        shape: Shape,
        offset: u64,
        limit: u64,
    ) -> anyhow::Result<Option<(Vec<Entry>, u64)>> {
        // An empty page asks for positions 1..=0, which the script skips.
        let (start, stop) = match limit {
            0 => ("1".to_string(), "0".to_string()),
            _ => (index(offset), index(offset.saturating_add(limit - 1))),
        };
        let read = self.read(board, shape, vec!["page".into(), start, stop]).await?;
        Ok(read.map(|(card, entries)| (entries, card)))
    }

    async fn around(
        &self,
        board: &str,
        shape: Shape,
        member: &str,
        n: u64,
    ) -> anyhow::Result<Option<Around>> {
        let mode = vec!["around".into(), member.to_string(), n.min(1 << 40).to_string()];
        let Some((_, window)) = self.read(board, shape, mode).await? else { return Ok(None) };
        let me = window.iter().find(|e| e.member == member).cloned();
        Ok(me.map(|me| Around { me, window }))
    }

    async fn ranks(
        &self,
        board: &str,
        shape: Shape,
        members: &[String],
    ) -> anyhow::Result<Option<(Vec<Entry>, u64)>> {
        let mut mode = vec!["ranks".to_string()];
        mode.extend(members.iter().cloned());
        let read = self.read(board, shape, mode).await?;
        Ok(read.map(|(card, mut entries)| {
            entries.sort_by_key(|e| e.position);
            entries.dedup_by_key(|e| e.position);
            (entries, card)
        }))
    }

    async fn len(&self, board: &str) -> anyhow::Result<u64> {
        let [z, ..] = self.keys(board).live;
        Ok(self.client.zcard(z).await.context("ZCARD")?)
    }

    async fn exists(&self, board: &str) -> anyhow::Result<bool> {
        let n: u64 = self.client.exists(self.keys(board).ready).await.context("EXISTS")?;
        Ok(n == 1)
    }

    async fn forget(&self, board: &str) -> anyhow::Result<()> {
        let _: u64 = self.client.del(self.keys(board).ready).await.context("DEL ready")?;
        Ok(())
    }

    async fn delete(&self, board: &str) -> anyhow::Result<()> {
        let k = self.keys(board);
        let mut keys = vec![k.ready, k.building];
        keys.extend(k.live);
        keys.extend(k.next);
        let _: u64 = self.client.del(keys).await.context("DEL board")?;
        Ok(())
    }

    async fn remembered(&self, board: &str) -> anyhow::Result<u64> {
        let [_, seen, ..] = self.keys(board).live;
        Ok(self.client.zcard(seen).await.context("ZCARD seen")?)
    }
}
