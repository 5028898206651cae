//! What ingest decides before it queues: whether a client event id was seen (dedupe, the fast
//! path; stored events are also found in SQL by the service) and whether a match may get
//! another event type (the per-match cap). Redis in the mesh ([`RedisAdmission`]), in process
//! embedded ([`MemoryAdmission`]); both held to one contract (`tests/admission_contract.rs`).
//!
//! An id is *reserved* (pending) before its event is published and *settled* after, so a
//! crash in between leaves a pending reservation that a retry with the same body may publish
//! again (the persister stores an id once), while a concurrent reuse with another body is
//! refused.

use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::Context;
use async_trait::async_trait;
use fred::prelude::Client;
use uuid::Uuid;

/// What an id's reservation holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    /// The body fingerprint it was reserved with.
    pub fingerprint: String,
    /// Whether its event was published (settled) or may still be on its way (pending).
    pub settled: bool,
}

/// The dedupe and type-cap store.
#[async_trait]
pub trait Admission: Send + Sync + 'static {
    /// Reserves each `(event id, fingerprint)` of `source` as pending for `pending`, unless
    /// it is held already: then what holds it. In order; an id twice in `ids` finds its first
    /// reservation.
    async fn reserve(
        &self,
        source: &str,
        ids: &[(Uuid, String)],
        pending: Duration,
    ) -> anyhow::Result<Vec<Option<Taken>>>;

    /// Marks `ids` settled with their fingerprints, for `keep`.
    async fn settle(
        &self,
        source: &str,
        ids: &[(Uuid, String)],
        keep: Duration,
    ) -> anyhow::Result<()>;

    /// Drops pending reservations of `ids` (their publish failed).
    async fn release(&self, source: &str, ids: &[(Uuid, String)]) -> anyhow::Result<()>;

    /// Whether each of `types` may be an event type of `match_id` (known, or new within
    /// `cap`; new ones are added); `None` when the match's known types are not loaded.
    async fn admit_types(
        &self,
        match_id: &str,
        types: &[String],
        cap: usize,
    ) -> anyhow::Result<Option<Vec<bool>>>;

    /// Loads `match_id`'s known types (from its counters).
    async fn load_types(&self, match_id: &str, types: &[String]) -> anyhow::Result<()>;
}

/// Ids held at most in memory; past that, expired and then settled ones are dropped (their
/// stored events are still found in SQL).
pub const MAX_IDS: usize = 1_000_000;
/// Matches whose types are held at most in memory (others reload from their counters).
pub const MAX_GATES: usize = 10_000;

/// In-process admission.
#[derive(Default)]
pub struct MemoryAdmission {
    ids: Mutex<HashMap<(String, Uuid), (Taken, Instant)>>,
    gates: Mutex<HashMap<String, HashSet<String>>>,
}

impl MemoryAdmission {
    /// Empty.
    pub fn new() -> Self {
        Self::default()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[async_trait]
impl Admission for MemoryAdmission {
    async fn reserve(
        &self,
        source: &str,
        ids: &[(Uuid, String)],
        pending: Duration,
    ) -> anyhow::Result<Vec<Option<Taken>>> {
        let now = Instant::now();
        let mut held = lock(&self.ids);
        if held.len() + ids.len() > MAX_IDS {
            held.retain(|_, (_, until)| *until > now);
            if held.len() + ids.len() > MAX_IDS {
                let excess = held.len() + ids.len() - MAX_IDS * 9 / 10;
                let settled: Vec<_> = held
                    .iter()
                    .filter(|(_, (t, _))| t.settled)
                    .map(|(k, _)| k.clone())
                    .take(excess)
                    .collect();
                for k in settled {
                    held.remove(&k);
                }
            }
        }
        Ok(ids
            .iter()
            .map(|(id, fingerprint)| {
                let key = (source.to_string(), *id);
                match held.get(&key) {
                    Some((taken, until)) if *until > now => Some(taken.clone()),
                    _ => {
                        held.insert(
                            key,
                            (
                                Taken { fingerprint: fingerprint.clone(), settled: false },
                                now + pending,
                            ),
                        );
                        None
                    }
                }
            })
            .collect())
    }

    async fn settle(
        &self,
        source: &str,
        ids: &[(Uuid, String)],
        keep: Duration,
    ) -> anyhow::Result<()> {
        let until = Instant::now() + keep;
        let mut held = lock(&self.ids);
        for (id, fingerprint) in ids {
            held.insert(
                (source.to_string(), *id),
                (Taken { fingerprint: fingerprint.clone(), settled: true }, until),
            );
        }
        Ok(())
    }

    async fn release(&self, source: &str, ids: &[(Uuid, String)]) -> anyhow::Result<()> {
        let mut held = lock(&self.ids);
        for (id, fingerprint) in ids {
            let key = (source.to_string(), *id);
            if held.get(&key).is_some_and(|(t, _)| !t.settled && &t.fingerprint == fingerprint) {
                held.remove(&key);
            }
        }
        Ok(())
    }

    async fn admit_types(
        &self,
        match_id: &str,
        types: &[String],
        cap: usize,
    ) -> anyhow::Result<Option<Vec<bool>>> {
        let mut gates = lock(&self.gates);
        let Some(known) = gates.get_mut(match_id) else { return Ok(None) };
        Ok(Some(
            types
                .iter()
                .map(|t| known.contains(t) || (known.len() < cap && known.insert(t.clone())))
                .collect(),
        ))
    }

    async fn load_types(&self, match_id: &str, types: &[String]) -> anyhow::Result<()> {
        let mut gates = lock(&self.gates);
        if gates.len() >= MAX_GATES && !gates.contains_key(match_id) {
            let drop: Vec<String> = gates.keys().take(MAX_GATES / 10).cloned().collect();
            for k in drop {
                gates.remove(&k);
            }
        }
        gates.entry(match_id.to_string()).or_default().extend(types.iter().cloned());
        Ok(())
    }
}

/// Admission in Redis: `{prefix}eng:{<source hash>}:id:<event id>` → `<fingerprint>|p` or `|s`
/// (one hash slot per source, so a call's ids go in one script), and
/// `{prefix}eng:{<match>}:g`, a set of the match's types with an empty member marking it
/// loaded, expiring [`GATE_TTL`] after its last use.
pub struct RedisAdmission {
    client: Client,
    prefix: String,
}

/// How long an unused type gate is kept.
pub const GATE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

const RESERVE_SCRIPT: &str = r#"
local out = {}
for i, k in ipairs(KEYS) do
  local v = redis.call('GET', k)
  if v then out[i] = v else
    redis.call('SET', k, ARGV[i + 1] .. '|p', 'PX', ARGV[1])
    out[i] = ''
  end
end
return out
"#;

const SETTLE_SCRIPT: &str = r#"
for i, k in ipairs(KEYS) do redis.call('SET', k, ARGV[i + 1] .. '|s', 'PX', ARGV[1]) end
return 1
"#;

const RELEASE_SCRIPT: &str = r#"
for i, k in ipairs(KEYS) do
  if redis.call('GET', k) == ARGV[i] .. '|p' then redis.call('DEL', k) end
end
return 1
"#;

const ADMIT_SCRIPT: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local n = redis.call('SCARD', KEYS[1]) - 1
local out = {}
for i = 3, #ARGV do
  if redis.call('SISMEMBER', KEYS[1], ARGV[i]) == 1 then out[#out + 1] = 1
  elseif n < tonumber(ARGV[1]) then
    redis.call('SADD', KEYS[1], ARGV[i]); n = n + 1; out[#out + 1] = 1
  else out[#out + 1] = 0 end
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return out
"#;

const LOAD_SCRIPT: &str = r#"
redis.call('SADD', KEYS[1], '', unpack(ARGV, 2))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"#;

impl RedisAdmission {
    /// Admission on `client`, keys under `prefix`.
    pub fn new(client: Client, prefix: &str) -> Self {
        Self { client, prefix: prefix.to_string() }
    }

    fn id_keys(&self, source: &str, ids: &[(Uuid, String)]) -> Vec<String> {
        let tag = ewpm_kit::idempotency::fingerprint(source.as_bytes());
        ids.iter().map(|(id, _)| format!("{}eng:{{{tag}}}:id:{id}", self.prefix)).collect()
    }

    fn gate(&self, match_id: &str) -> String {
        format!("{}eng:{{{match_id}}}:g", self.prefix)
    }
}

fn ms(d: Duration) -> String {
    d.as_millis().max(1).to_string()
}

#[async_trait]
impl Admission for RedisAdmission {
    async fn reserve(
        &self,
        source: &str,
        ids: &[(Uuid, String)],
        pending: Duration,
    ) -> anyhow::Result<Vec<Option<Taken>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = vec![ms(pending)];
        args.extend(ids.iter().map(|(_, f)| f.clone()));
        let reply: Vec<String> =
            ewpm_kit::redis::eval(&self.client, RESERVE_SCRIPT, self.id_keys(source, ids), args)
                .await
                .context("reserve event ids")?;
        Ok(reply
            .into_iter()
            .map(|v| {
                if v.is_empty() {
                    return None;
                }
                let (fingerprint, state) = v.rsplit_once('|').unwrap_or((v.as_str(), "s"));
                Some(Taken { fingerprint: fingerprint.to_string(), settled: state == "s" })
            })
            .collect())
    }

    async fn settle(
        &self,
        source: &str,
        ids: &[(Uuid, String)],
        keep: Duration,
    ) -> anyhow::Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut args = vec![ms(keep)];
        args.extend(ids.iter().map(|(_, f)| f.clone()));
        let _: i64 =
            ewpm_kit::redis::eval(&self.client, SETTLE_SCRIPT, self.id_keys(source, ids), args)
                .await
                .context("settle event ids")?;
        Ok(())
    }

    async fn release(&self, source: &str, ids: &[(Uuid, String)]) -> anyhow::Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let args: Vec<String> = ids.iter().map(|(_, f)| f.clone()).collect();
        let _: i64 =
            ewpm_kit::redis::eval(&self.client, RELEASE_SCRIPT, self.id_keys(source, ids), args)
                .await
                .context("release event ids")?;
        Ok(())
    }

    async fn admit_types(
        &self,
        match_id: &str,
        types: &[String],
        cap: usize,
    ) -> anyhow::Result<Option<Vec<bool>>> {
        let mut args = vec![cap.to_string(), ms(GATE_TTL)];
        args.extend(types.iter().cloned());
        let reply: Option<Vec<i64>> =
            ewpm_kit::redis::eval(&self.client, ADMIT_SCRIPT, vec![self.gate(match_id)], args)
                .await
                .context("admit event types")?;
        Ok(reply.map(|r| r.into_iter().map(|v| v == 1).collect()))
    }

    async fn load_types(&self, match_id: &str, types: &[String]) -> anyhow::Result<()> {
        let mut args = vec![ms(GATE_TTL)];
        args.extend(types.iter().cloned());
        let _: i64 =
            ewpm_kit::redis::eval(&self.client, LOAD_SCRIPT, vec![self.gate(match_id)], args)
                .await
                .context("load event types")?;
        Ok(())
    }
}
