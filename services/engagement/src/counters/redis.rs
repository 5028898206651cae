//! The mesh's counters in Redis. Per match (`{prefix}eng:{<match>}:…`, one hash slot per
//! match): `c` (hash: total, newest event time, newest acceptance and its lag, `built`), `t`
//! (by type), `m` (per minute), `l` (late per minute), `k` (per match minute), `f` (first event
//! time per match minute), `h` (latency histogram buckets), `a` (sorted set: applied ingest
//! ids by time) and `lease`. Every change is one Lua script, so it is atomic; every key
//! expires [`RedisCounters::with_ttl`] after the match's last change (a match read again later
//! rebuilds from SQL).

use std::{collections::BTreeMap, time::Duration};

use anyhow::Context;
use async_trait::async_trait;
use fred::{
    prelude::{Client, KeysInterface},
    types::{Expiration, SetOptions, Value},
};

use super::{APPLIED_RETENTION, Applied, Counters};
use crate::domain::{Counts, MINUTE_US};

/// Counters of matches in Redis.
pub struct RedisCounters {
    client: Client,
    prefix: String,
    ttl: Duration,
    retention: Duration,
}

/// Adds the sections of a delta (or, on empty hashes, sets them): ARGV from `i` on holds,
/// per hash, a count and then field/value pairs; `f` keeps the minimum.
const SECTIONS: &str = r#"
local function sections(i)
  for _, key in ipairs({KEYS[2], KEYS[3], KEYS[4], KEYS[5]}) do
    local n = tonumber(ARGV[i]); i = i + 1
    for _ = 1, n do redis.call('HINCRBY', key, ARGV[i], ARGV[i + 1]); i = i + 2 end
  end
  local n = tonumber(ARGV[i]); i = i + 1
  for _ = 1, n do
    local cur = redis.call('HGET', KEYS[6], ARGV[i])
    if (not cur) or tonumber(ARGV[i + 1]) < tonumber(cur) then
      redis.call('HSET', KEYS[6], ARGV[i], ARGV[i + 1])
    end
    i = i + 2
  end
  n = tonumber(ARGV[i]); i = i + 1
  for _ = 1, n do redis.call('HINCRBY', KEYS[7], ARGV[i], ARGV[i + 1]); i = i + 2 end
  return i
end
local function expire(ms)
  for k = 1, 8 do redis.call('PEXPIRE', KEYS[k], ms) end
end
"#;

/// KEYS: c t m l k f h a lease. ARGV: ingest id, now ms, applied cutoff ms, ttl ms, minute
/// cutoff, total, max event, newest received, its lag, then the sections.
const APPLY_BODY: &str = r#"
if redis.call('EXISTS', KEYS[9]) == 1 then return 3 end
if redis.call('HGET', KEYS[1], 'built') ~= '1' then return 0 end
if redis.call('ZSCORE', KEYS[8], ARGV[1]) then return 2 end
redis.call('ZADD', KEYS[8], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[8], '-inf', '(' .. ARGV[3])
redis.call('HINCRBY', KEYS[1], 'total', ARGV[6])
if tonumber(ARGV[7]) > tonumber(redis.call('HGET', KEYS[1], 'maxev') or '0') then
  redis.call('HSET', KEYS[1], 'maxev', ARGV[7])
end
if tonumber(ARGV[8]) >= tonumber(redis.call('HGET', KEYS[1], 'recv') or '0') then
  redis.call('HSET', KEYS[1], 'recv', ARGV[8], 'lag', ARGV[9])
end
sections(10)
if redis.call('HLEN', KEYS[3]) > 1500 then
  local cutoff = tonumber(ARGV[5])
  for _, f in ipairs(redis.call('HKEYS', KEYS[3])) do
    if tonumber(f) < cutoff then redis.call('HDEL', KEYS[3], f); redis.call('HDEL', KEYS[4], f) end
  end
end
expire(ARGV[4])
return 1
"#;

/// KEYS as apply. ARGV: token, now ms, ttl ms, total, max event, newest received, its lag,
/// the sections, then a count of applied ingest ids and the ids.
const FINISH_BODY: &str = r#"
if redis.call('GET', KEYS[9]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8])
redis.call('HSET', KEYS[1], 'total', ARGV[4], 'maxev', ARGV[5], 'recv', ARGV[6], 'lag', ARGV[7], 'built', '1')
local i = sections(8)
local n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do redis.call('ZADD', KEYS[8], ARGV[2], ARGV[i]); i = i + 1 end
expire(ARGV[3])
redis.call('DEL', KEYS[9])
return 1
"#;

const READ_SCRIPT: &str = r#"
if redis.call('HGET', KEYS[1], 'built') ~= '1' then return false end
local out = {}
for k = 1, 7 do out[k] = redis.call('HGETALL', KEYS[k]) end
return out
"#;

const ABORT_SCRIPT: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"#;

static APPLY_SCRIPT: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("{SECTIONS}{APPLY_BODY}"));
static FINISH_SCRIPT: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("{SECTIONS}{FINISH_BODY}"));

impl RedisCounters {
    /// Counters on `client`, every key starting with `prefix`.
    pub fn new(client: Client, prefix: &str) -> Self {
        Self {
            client,
            prefix: prefix.to_string(),
            ttl: Duration::from_secs(7 * 24 * 3600),
            retention: Duration::from_secs(24 * 3600),
        }
    }

    /// Keys expire this long after a match's last change (default 7 days).
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl.max(Duration::from_secs(1));
        self
    }

    /// Per-minute counts are kept for this much event time before the newest (default 24 h).
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    fn keys(&self, match_id: &str) -> Vec<String> {
        ["c", "t", "m", "l", "k", "f", "h", "a", "lease"]
            .iter()
            .map(|k| format!("{}eng:{{{match_id}}}:{k}", self.prefix))
            .collect()
    }
}

/// The sections of `c` as script arguments.
fn sections(c: &Counts, args: &mut Vec<String>) {
    fn section<K: ToString>(map: &BTreeMap<K, i64>, args: &mut Vec<String>) {
        args.push(map.len().to_string());
        for (k, v) in map {
            args.push(k.to_string());
            args.push(v.to_string());
        }
    }
    section(&c.by_type, args);
    section(&c.minutes, args);
    section(&c.late, args);
    section(&c.clock, args);
    section(&c.clock_first, args);
    section(&c.latency, args);
}

fn ms(d: Duration) -> String {
    d.as_millis().to_string()
}

fn parse_map<K: std::str::FromStr + Ord>(v: &Value) -> anyhow::Result<BTreeMap<K, i64>> {
    let items = v.clone().into_array();
    let mut out = BTreeMap::new();
    for kv in items.chunks(2) {
        let [k, v] = kv else { anyhow::bail!("a hash reply of odd length") };
        let k = k.as_string().context("a hash field")?;
        let v = v.as_string().context("a hash value")?;
        out.insert(
            k.parse().map_err(|_| anyhow::anyhow!("hash field {k:?}"))?,
            v.parse().with_context(|| format!("hash value {v:?}"))?,
        );
    }
    Ok(out)
}

#[async_trait]
impl Counters for RedisCounters {
    async fn apply(
        &self,
        match_id: &str,
        ingest_id: &str,
        delta: &Counts,
        now_ms: i64,
    ) -> anyhow::Result<Applied> {
        let minute_cutoff =
            delta.max_event_us.div_euclid(MINUTE_US) - (self.retention.as_secs() / 60) as i64;
        let mut args = vec![
            ingest_id.to_string(),
            now_ms.to_string(),
            (now_ms - APPLIED_RETENTION.as_millis() as i64).to_string(),
            ms(self.ttl),
            minute_cutoff.to_string(),
            delta.total.to_string(),
            delta.max_event_us.to_string(),
            delta.newest_received_us.to_string(),
            delta.newest_lag_us.to_string(),
        ];
        sections(delta, &mut args);
        let script: &'static str = APPLY_SCRIPT.as_str();
        let code: i64 = ewpm_kit::redis::eval(&self.client, script, self.keys(match_id), args)
            .await
            .context("apply match counts")?;
        Ok(match code {
            1 => Applied::Applied,
            2 => Applied::Already,
            3 => Applied::Busy,
            _ => Applied::Missing,
        })
    }

    async fn read(&self, match_id: &str) -> anyhow::Result<Option<Counts>> {
        let keys: Vec<String> = self.keys(match_id).into_iter().take(7).collect();
        let reply: Value =
            ewpm_kit::redis::eval(&self.client, READ_SCRIPT, keys, Vec::<String>::new())
                .await
                .context("read match counts")?;
        if reply.is_null() {
            return Ok(None);
        }
        let parts = reply.into_array();
        let [c, t, m, l, k, f, h] = parts.as_slice() else {
            anyhow::bail!("a counts reply of {} parts", parts.len())
        };
        let c: BTreeMap<String, i64> = parse_map(c)?;
        let get = |name: &str| c.get(name).copied().unwrap_or_default();
        Ok(Some(Counts {
            total: get("total"),
            by_type: parse_map(t)?,
            minutes: parse_map(m)?,
            late: parse_map(l)?,
            clock: parse_map(k)?,
            clock_first: parse_map(f)?,
            latency: parse_map(h)?,
            max_event_us: get("maxev"),
            newest_received_us: get("recv"),
            newest_lag_us: get("lag"),
        }))
    }

    async fn begin_rebuild(
        &self,
        match_id: &str,
        token: &str,
        lease: Duration,
    ) -> anyhow::Result<bool> {
        let key = self.keys(match_id).pop().context("lease key")?;
        let set: Option<String> = self
            .client
            .set(
                key,
                token,
                Some(Expiration::PX(lease.as_millis().max(1) as i64)),
                Some(SetOptions::NX),
                false,
            )
            .await
            .context("take the rebuild lease")?;
        Ok(set.is_some())
    }

    async fn finish_rebuild(
        &self,
        match_id: &str,
        token: &str,
        counts: &Counts,
        ingest_ids: &[String],
        now_ms: i64,
    ) -> anyhow::Result<bool> {
        let mut counts = counts.clone();
        counts.prune(self.retention);
        let mut args = vec![
            token.to_string(),
            now_ms.to_string(),
            ms(self.ttl),
            counts.total.to_string(),
            counts.max_event_us.to_string(),
            counts.newest_received_us.to_string(),
            counts.newest_lag_us.to_string(),
        ];
        sections(&counts, &mut args);
        args.push(ingest_ids.len().to_string());
        args.extend(ingest_ids.iter().cloned());
        let script: &'static str = FINISH_SCRIPT.as_str();
        let done: i64 = ewpm_kit::redis::eval(&self.client, script, self.keys(match_id), args)
            .await
            .context("swap in rebuilt match counts")?;
        Ok(done == 1)
    }

    async fn abort_rebuild(&self, match_id: &str, token: &str) -> anyhow::Result<()> {
        let key = self.keys(match_id).pop().context("lease key")?;
        let _: i64 = ewpm_kit::redis::eval(&self.client, ABORT_SCRIPT, vec![key], vec![token])
            .await
            .context("release the rebuild lease")?;
        Ok(())
    }

    async fn forget(&self, match_id: &str) -> anyhow::Result<()> {
        let keys: Vec<String> = self.keys(match_id).into_iter().take(8).collect();
        let _: i64 = self.client.del(keys).await.context("drop match counts")?;
        Ok(())
    }
}
