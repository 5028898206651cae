//! [`RedisBus`]: the mesh bus, one Redis stream per topic, and its Redis helpers (group
//! listing, trimming what every group acknowledged, the `publish_once` script).

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::Context;
use async_trait::async_trait;
use fred::prelude::{Client, ClientLike, KeysInterface, StreamsInterface};
use fred::types::{SetOptions, Value};

use super::{Bus, Message, Once};

/// The mesh bus: one Redis stream per topic (key `bus:{topic}`), consumer groups on it; the
/// keys of `publish_once` are `bus:{topic}:once:<key>`, in the stream's hash slot.
pub struct RedisBus {
    client: Client,
    /// A blocked XREADGROUP holds its connection, and every command queued behind it on that
    /// connection waits too: each consumer (of each topic and group: two modules in one
    /// process may name their consumers alike) gets a connection of its own for its reads,
    /// so one consumer idling on an empty topic never stalls another.
    blocking: Mutex<HashMap<String, Client>>,
    url: String,
    prefix: String,
    /// When each stream was last trimmed (at most once a second, after an ack).
    trimmed: Mutex<HashMap<String, Instant>>,
    /// Entries a stream keeps at most (approximately), whatever its groups have acknowledged.
    max_len: u64,
}

/// Entries a stream keeps at most unless [`RedisBus::with_max_len`] says otherwise.
pub const DEFAULT_MAX_LEN: u64 = 1_000_000;

/// How often a stream is trimmed of what every group has acknowledged.
const TRIM_EVERY: Duration = Duration::from_secs(1);

/// A stream id as a comparable pair (`<ms>-<seq>`).
fn stream_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// One consumer group of a stream, as XINFO GROUPS reports it.
struct GroupInfo {
    name: String,
    /// Received, not acknowledged.
    pending: u64,
    /// Not delivered yet (Redis 7; 0 when unknown).
    lag: u64,
    last_delivered: Option<String>,
}

/// The groups of stream `key` (none when the stream does not exist).
async fn groups_of(client: &Client, key: &str) -> anyhow::Result<Vec<GroupInfo>> {
    let reply: Value = match client.xinfo_groups(key).await {
        Ok(v) => v,
        Err(e) if e.details().contains("no such key") => return Ok(Vec::new()),
        Err(e) => return Err(anyhow::Error::new(e).context("XINFO GROUPS")),
    };
    reply
        .into_array()
        .into_iter()
        .map(|info| {
            // Each group is a flat [field, value, …] list.
            let fields = info.into_array();
            let field = |name: &str| {
                fields
                    .chunks(2)
                    .find(|kv| kv[0].as_string().as_deref() == Some(name))
                    .and_then(|kv| kv.get(1).cloned())
            };
            Ok(GroupInfo {
                name: field("name").and_then(|v| v.as_string()).context("group name")?,
                pending: field("pending").and_then(|v| v.as_u64()).unwrap_or(0),
                lag: field("lag").and_then(|v| v.as_u64()).unwrap_or(0),
                last_delivered: field("last-delivered-id").and_then(|v| v.as_string()),
            })
        })
        .collect()
}

/// Removes from stream `key` the entries every group has received and acknowledged: those
/// below each group's oldest pending entry, or below its last delivered entry when nothing
/// is pending. A stream without groups is left alone.
async fn trim_acknowledged(client: &Client, key: &str, topic: &str) -> anyhow::Result<()> {
    let mut floor: Option<((u64, u64), String)> = None;
    let groups = groups_of(client, key).await?;
    let (base, partition) = super::split_partition(topic);
    for group in &groups {
        // Names from code (topic and group constants), never from callers.
        metrics::gauge!(
            "ewpm_bus_group_backlog",
            "topic" => base.to_string(),
            "partition" => partition.to_string(),
            "group" => group.name.clone()
        )
        .set((group.pending + group.lag) as f64);
    }
    for group in groups {
        let group_floor = if group.pending > 0 {
            // XPENDING summary: [count, smallest id, greatest id, consumers].
            let summary: Value =
                client.xpending(key, group.name.as_str(), ()).await.context("XPENDING")?;
            summary.into_array().into_iter().nth(1).and_then(|v| v.as_string())
        } else {
            group.last_delivered
        };
        let Some(id) = group_floor else { return Ok(()) };
        let Some(parsed) = stream_id(&id) else { return Ok(()) };
        if floor.as_ref().is_none_or(|(f, _)| parsed < *f) {
            floor = Some((parsed, id));
        }
    }
    if let Some((_, id)) = floor {
        let _: u64 = client.xtrim(key, ("MINID", "=", id)).await.context("XTRIM")?;
    }
    Ok(())
}

/// `publish_once` on Redis: GET the key; if absent, XADD and SET the key with its expiry.
const PUBLISH_ONCE_SCRIPT: &str = r#"
local prev = redis.call('GET', KEYS[2])
if prev then return {0, prev} end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '*', 'd', ARGV[1])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
return {1, id}
"#;

impl RedisBus {
    /// Connects to `url` (`redis://host:port/db`); every key starts with `prefix`.
    pub async fn connect(url: &str, prefix: &str) -> anyhow::Result<Self> {
        let client = crate::redis::connect(url).await?;
        Ok(Self {
            client,
            blocking: Mutex::default(),
            url: url.to_string(),
            prefix: prefix.to_string(),
            trimmed: Mutex::default(),
            max_len: DEFAULT_MAX_LEN,
        })
    }

    /// Caps every stream at about `max_len` entries (XADD `MAXLEN ~`): a consumer group that
    /// lags that far behind (or was abandoned) loses its oldest entries rather than pin the
    /// stream in Redis's memory for ever. Its lag is the metric `ewpm_bus_group_backlog`.
    pub fn with_max_len(mut self, max_len: u64) -> Self {
        self.max_len = max_len.max(1);
        self
    }

    /// The reply of a group read, or `None` after Redis answered NOGROUP: the stream or its
    /// groups are gone (a Redis restarted without persistence, a flushed database), so the
    /// group is created again and consumers carry on with whatever is published from now on,
    /// instead of failing every read until someone re-creates the group by hand.
    async fn or_recreate(
        &self,
        topic: &str,
        group: &str,
        reply: Result<Value, fred::error::Error>,
        command: &'static str,
    ) -> anyhow::Result<Option<Value>> {
        match reply {
            Ok(reply) => Ok(Some(reply)),
            Err(e) if e.details().contains("NOGROUP") => {
                tracing::warn!(
                    topic,
                    group,
                    "consumer group missing (Redis lost its data?); creating it again"
                );
                metrics::counter!("ewpm_bus_groups_recreated_total").increment(1);
                self.ensure_group(topic, group).await?;
                Ok(None)
            }
            Err(e) => Err(anyhow::Error::new(e).context(command)),
        }
    }

    /// The read connection of `consumer` of `group` on `topic`, opened on its first read.
    async fn reader(&self, topic: &str, group: &str, consumer: &str) -> anyhow::Result<Client> {
        let name = format!("{topic}\n{group}\n{consumer}");
        let lock = || self.blocking.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = lock().get(&name) {
            return Ok(client.clone());
        }
        let client = crate::redis::connect(&self.url).await?;
        Ok(lock().entry(name).or_insert(client).clone())
    }

    fn key(&self, topic: &str) -> String {
        format!("{}bus:{{{topic}}}", self.prefix)
    }

    /// Records that this bus runs with `partitions` partitions per topic (the key
    /// `<prefix>bus:partitions`, written by the first process), or fails when it was recorded
    /// with another count: processes counting differently would publish to streams the others
    /// never read, and find no idempotency record where the others left it.
    pub async fn claim_partitions(&self, partitions: u16) -> anyhow::Result<()> {
        let key = format!("{}bus:partitions", self.prefix);
        let _: Value = self
            .client
            .set(&key, partitions.to_string(), None, Some(SetOptions::NX), false)
            .await
            .context("SET bus:partitions")?;
        let recorded: Option<String> = self.client.get(&key).await.context("GET bus:partitions")?;
        match recorded.as_deref().map(str::parse::<u16>) {
            Some(Ok(n)) if n == partitions => Ok(()),
            Some(Ok(n)) => anyhow::bail!(
                "bus_partitions (EWPM_BUS_PARTITIONS) is {partitions}, but the bus under the \
                 prefix {:?} on this Redis runs with {n} (recorded in the key {key}); a process \
                 counting otherwise would strand messages. To change the count: stop the \
                 producers, wait until ewpm_bus_group_backlog is 0 for every partition, stop \
                 every process, delete the key (redis-cli -c DEL {key}) and start them all with \
                 the new count",
                self.prefix
            ),
            _ => anyhow::bail!("the key {key} holds {recorded:?}, not a partition count"),
        }
    }
}

/// Entries of a stream reply: `[[id, [field, value, …]], …]` (a deleted entry is nil).
fn entries(value: Value) -> Vec<Message> {
    value
        .into_array()
        .into_iter()
        .filter_map(|entry| {
            let mut parts = entry.into_array().into_iter();
            let id = parts.next()?.as_string()?;
            let fields = parts.next()?.into_array();
            let payload = fields
                .chunks(2)
                .find(|kv| kv[0].as_string().as_deref() == Some("d"))
                .and_then(|kv| kv.get(1).and_then(|v| v.as_bytes().map(<[u8]>::to_vec)))?;
            Some(Message { id, payload })
        })
        .collect()
}

#[async_trait]
impl Bus for RedisBus {
    async fn publish(&self, topic: &str, payloads: &[Vec<u8>]) -> anyhow::Result<Vec<String>> {
        let key = self.key(topic);
        let pipeline = self.client.pipeline();
        for p in payloads {
            let () = pipeline
                .xadd(&key, false, ("MAXLEN", "~", self.max_len as i64), "*", ("d", p.as_slice()))
                .await?;
        }
        let ids: Vec<String> = pipeline.all().await.context("XADD")?;
        Ok(ids)
    }

    async fn publish_once(
        &self,
        topic: &str,
        key: &str,
        record: &[u8],
        payload: &[u8],
        ttl: Duration,
    ) -> anyhow::Result<Once> {
        let stream = self.key(topic);
        let once = format!("{stream}:once:{key}");
        let reply: Value = crate::redis::eval(
            &self.client,
            PUBLISH_ONCE_SCRIPT,
            vec![stream, once],
            vec![
                Value::from(payload),
                Value::from(record),
                Value::from(ttl.as_millis().max(1) as i64),
                Value::from(self.max_len as i64),
            ],
        )
        .await
        .context("publish once")?;
        let mut parts = reply.into_array().into_iter();
        let published = parts.next().and_then(|v| v.as_i64()).context("publish once reply")?;
        let value = parts.next().context("publish once reply")?;
        Ok(if published == 1 {
            Once::Published(value.as_string().context("stream id")?)
        } else {
            Once::Existing(value.as_bytes().map(<[u8]>::to_vec).unwrap_or_default())
        })
    }

    async fn ensure_group(&self, topic: &str, group: &str) -> anyhow::Result<()> {
        let result: Result<(), _> =
            self.client.xgroup_create(self.key(topic), group, "0", true).await;
        match result {
            Ok(()) => Ok(()),
            Err(e) if e.details().contains("BUSYGROUP") => Ok(()),
            Err(e) => Err(anyhow::Error::new(e).context("XGROUP CREATE")),
        }
    }

    async fn receive(
        &self,
        topic: &str,
        group: &str,
        consumer: &str,
        max: usize,
        block: Duration,
    ) -> anyhow::Result<Vec<Message>> {
        let reply: Result<Value, _> = self
            .reader(topic, group, consumer)
            .await?
            .with_options(&crate::redis::with_timeout(block))
            .xreadgroup(
                group,
                consumer,
                Some(max as u64),
                // Redis reads BLOCK 0 as "forever": a zero wait is no BLOCK at all, and a
                // sub-millisecond one rounds up rather than down to 0.
                (!block.is_zero()).then(|| block.as_micros().div_ceil(1000) as u64),
                false,
                self.key(topic),
                ">",
            )
            .await;
        let Some(reply) = self.or_recreate(topic, group, reply, "XREADGROUP").await? else {
            return Ok(Vec::new());
        };
        // [[key, entries]] or nil on timeout.
        Ok(reply
            .into_array()
            .into_iter()
            .flat_map(|stream| {
                stream.into_array().into_iter().nth(1).map(entries).unwrap_or_default()
            })
            .collect())
    }

    async fn reclaim(
        &self,
        topic: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        max: usize,
    ) -> anyhow::Result<Vec<Message>> {
        let reply: Result<Value, _> = self
            .client
            .xautoclaim(
                self.key(topic),
                group,
                consumer,
                min_idle.as_millis() as u64,
                "0-0",
                Some(max as u64),
                false,
            )
            .await;
        let Some(reply) = self.or_recreate(topic, group, reply, "XAUTOCLAIM").await? else {
            return Ok(Vec::new());
        };
        // [next-cursor, entries, deleted-ids]
        Ok(reply.into_array().into_iter().nth(1).map(entries).unwrap_or_default())
    }

    async fn ack(&self, topic: &str, group: &str, ids: &[String]) -> anyhow::Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let key = self.key(topic);
        let _: u64 = self.client.xack(&key, group, ids.to_vec()).await.context("XACK")?;
        let due = {
            let mut trimmed = self.trimmed.lock().unwrap_or_else(|p| p.into_inner());
            let last = trimmed.entry(key.clone()).or_insert_with(|| Instant::now() - TRIM_EVERY);
            let due = last.elapsed() >= TRIM_EVERY;
            if due {
                *last = Instant::now();
            }
            due
        };
        if due {
            // Off the ack's path: a slow trim must not hold up a consumer.
            let client = self.client.clone();
            let topic = topic.to_string();
            tokio::spawn(async move {
                if let Err(err) = trim_acknowledged(&client, &key, &topic).await {
                    tracing::warn!(error = format!("{err:#}"), "trim stream {key}");
                }
            });
        }
        Ok(())
    }

    async fn backlog(&self, topic: &str, group: &str) -> anyhow::Result<u64> {
        let groups = groups_of(&self.client, &self.key(topic)).await?;
        Ok(groups.iter().find(|g| g.name == group).map_or(0, |g| g.pending + g.lag))
    }

    async fn pending(&self, topic: &str, group: &str) -> anyhow::Result<u64> {
        let reply: Value =
            self.client.xpending(self.key(topic), group, ()).await.context("XPENDING")?;
        Ok(reply.into_array().into_iter().next().and_then(|v| v.as_u64()).unwrap_or(0))
    }
}
