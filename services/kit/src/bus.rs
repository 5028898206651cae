//! The bus: durable topics with consumer groups, at-least-once. Redis Streams in mesh mode
//! ([`RedisBus`]), memory in embedded mode ([`MemoryBus`]); both behind [`Bus`] and both
//! held to one contract (`tests/bus_contract.rs`).
//!
//! A consumer group sees every message of a topic once; within a group each message goes to
//! one consumer and stays *pending* until acknowledged. A consumer that dies leaves its
//! messages pending; another consumer of the group takes them over with [`Bus::reclaim`] once
//! they have been idle long enough.
//!
//! Limits: the memory bus lives and dies with its process. Redis streams are trimmed (at most
//! once a second, after an ack) of what every group has acknowledged, and every publish caps
//! its stream at about [`RedisBus::with_max_len`] entries (`bus_max_len`, default 1,000,000),
//! so a group that lags that far (or was abandoned) loses its oldest entries instead of
//! pinning the stream; each group's backlog is the gauge `ewpm_bus_group_backlog`.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use async_trait::async_trait;
use fred::prelude::{Client, ClientLike, StreamsInterface};
use fred::types::Value;
use tokio::sync::Notify;

/// A message as a consumer receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Its id within the topic (pass it to [`Bus::ack`]).
    pub id: String,
    /// What was published.
    pub payload: Vec<u8>,
}

/// What [`Bus::publish_once`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Once {
    /// The payload was published with this id, and the record remembered.
    Published(String),
    /// The key was taken: nothing was published; this is the record stored with it.
    Existing(Vec<u8>),
}

/// A blocking receive: `attempt` until it yields messages or `block` has passed, waiting
/// between attempts for `notify` (a publish on the topic). The wait is registered before each
/// attempt, so a publish in between is not missed.
pub(crate) async fn wait_for_messages<F, Fut>(
    notify: &Notify,
    block: Duration,
    mut attempt: F,
) -> anyhow::Result<Vec<Message>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Vec<Message>>>,
{
    let deadline = tokio::time::Instant::now() + block;
    loop {
        let notified = notify.notified();
        let got = attempt().await?;
        if !got.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(got);
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return Ok(Vec::new());
        }
    }
}

/// Durable topics with consumer groups.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Appends `payloads` to `topic`, in order; returns their ids.
    async fn publish(&self, topic: &str, payloads: &[Vec<u8>]) -> anyhow::Result<Vec<String>>;

    /// Appends `payload` to `topic` and remembers `record` under `key` for `ttl`, as one atomic
    /// step, unless `key` is remembered already: then nothing is published and the record
    /// stored first is returned. This is how a retried request queues nothing twice.
    async fn publish_once(
        &self,
        topic: &str,
        key: &str,
        record: &[u8],
        payload: &[u8],
        ttl: Duration,
    ) -> anyhow::Result<Once>;

    /// Creates `group` on `topic` unless it exists; a new group starts at the oldest message
    /// the topic retains.
    async fn ensure_group(&self, topic: &str, group: &str) -> anyhow::Result<()>;

    /// Up to `max` messages no consumer of `group` has received yet, for `consumer`; waits up
    /// to `block` when there are none (zero: does not wait). They stay pending until
    /// acknowledged.
    async fn receive(
        &self,
        topic: &str,
        group: &str,
        consumer: &str,
        max: usize,
        block: Duration,
    ) -> anyhow::Result<Vec<Message>>;

    /// Takes over up to `max` messages of `group` that have been pending, unacknowledged, for
    /// at least `min_idle` (their consumer is presumed dead), for `consumer`.
    async fn reclaim(
        &self,
        topic: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        max: usize,
    ) -> anyhow::Result<Vec<Message>>;

    /// Acknowledges messages of `group`: they are done.
    async fn ack(&self, topic: &str, group: &str, ids: &[String]) -> anyhow::Result<()>;

    /// How many messages of `group` are pending (received, not acknowledged).
    async fn pending(&self, topic: &str, group: &str) -> anyhow::Result<u64>;

    /// How many messages of `group` are not done: never received plus pending. What a
    /// producer checks to push back before a backlog outgrows its consumers.
    async fn backlog(&self, topic: &str, group: &str) -> anyhow::Result<u64>;

    /// Whether what is queued on `topic` outlives this process (false for the in-memory bus,
    /// whose consumers must drain it before their process ends).
    fn durable(&self, topic: &str) -> bool {
        let _ = topic;
        true
    }
}

/// The embedded bus: topics in memory.
#[derive(Debug, Default)]
pub struct MemoryBus {
    topics: Mutex<HashMap<String, Topic>>,
}

#[derive(Debug, Default)]
struct Topic {
    next_seq: u64,
    log: BTreeMap<u64, Vec<u8>>,
    groups: HashMap<String, Group>,
    /// Keys of `publish_once`: key → (record, expiry).
    once: HashMap<String, (Vec<u8>, Instant)>,
    /// Wakes this topic's blocked receivers (and only them) on publish.
    notify: Arc<Notify>,
}

#[derive(Debug, Default)]
struct Group {
    /// The next sequence number no consumer has received.
    next: u64,
    /// Received, unacknowledged: seq → (consumer, when delivered).
    pending: BTreeMap<u64, (String, Instant)>,
}

impl MemoryBus {
    /// An empty bus.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Topic>) -> T) -> T {
        f(&mut self.topics.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// The sequence number of a message id of the memory and SQLite buses.
pub(crate) fn seq_of(id: &str) -> anyhow::Result<u64> {
    id.parse().with_context(|| format!("{id:?} is not a message id of this bus"))
}

#[async_trait]
impl Bus for MemoryBus {
    fn durable(&self, _topic: &str) -> bool {
        false
    }

    async fn backlog(&self, topic: &str, group: &str) -> anyhow::Result<u64> {
        Ok(self.with(|topics| {
            topics.get(topic).and_then(|t| t.groups.get(group).map(|g| (t, g))).map_or(
                0,
                |(t, g)| {
                    // Sequence numbers are contiguous: everything from `next` on is undelivered.
                    (t.next_seq + 1).saturating_sub(g.next) + g.pending.len() as u64
                },
            )
        }))
    }

    async fn publish(&self, topic: &str, payloads: &[Vec<u8>]) -> anyhow::Result<Vec<String>> {
        let (ids, notify) = self.with(|topics| {
            let t = topics.entry(topic.to_string()).or_default();
            let ids = payloads
                .iter()
                .map(|p| {
                    t.next_seq += 1;
                    t.log.insert(t.next_seq, p.clone());
                    t.next_seq.to_string()
                })
                .collect();
            (ids, t.notify.clone())
        });
        notify.notify_waiters();
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
        let (once, notify) = self.with(|topics| {
            let t = topics.entry(topic.to_string()).or_default();
            let notify = t.notify.clone();
            let now = Instant::now();
            if t.once.len() > 10_000 {
                t.once.retain(|_, (_, expires)| *expires > now);
            }
            if let Some((record, expires)) = t.once.get(key)
                && *expires > now
            {
                return (Once::Existing(record.clone()), notify);
            }
            t.once.insert(key.to_string(), (record.to_vec(), now + ttl));
            t.next_seq += 1;
            t.log.insert(t.next_seq, payload.to_vec());
            (Once::Published(t.next_seq.to_string()), notify)
        });
        if matches!(once, Once::Published(_)) {
            notify.notify_waiters();
        }
        Ok(once)
    }

    async fn ensure_group(&self, topic: &str, group: &str) -> anyhow::Result<()> {
        self.with(|topics| {
            let t = topics.entry(topic.to_string()).or_default();
            let first = t.log.keys().next().copied().unwrap_or(t.next_seq + 1);
            t.groups
                .entry(group.to_string())
                .or_insert_with(|| Group { next: first, pending: BTreeMap::new() });
        });
        Ok(())
    }

    async fn receive(
        &self,
        topic: &str,
        group: &str,
        consumer: &str,
        max: usize,
        block: Duration,
    ) -> anyhow::Result<Vec<Message>> {
        let notify =
            self.with(|topics| topics.entry(topic.to_string()).or_default().notify.clone());
        wait_for_messages(&notify, block, || async {
            self.with(|topics| -> anyhow::Result<Vec<Message>> {
                let t = topics.get_mut(topic).with_context(|| format!("no topic {topic}"))?;
                let g = t
                    .groups
                    .get_mut(group)
                    .with_context(|| format!("no group {group} on {topic}"))?;
                let now = Instant::now();
                let mut out = Vec::new();
                for (seq, payload) in t.log.range(g.next..) {
                    if out.len() == max {
                        break;
                    }
                    g.pending.insert(*seq, (consumer.to_string(), now));
                    out.push(Message { id: seq.to_string(), payload: payload.clone() });
                }
                if let Some(last) = out.last() {
                    g.next = seq_of(&last.id)? + 1;
                }
                Ok(out)
            })
        })
        .await
    }

    async fn reclaim(
        &self,
        topic: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        max: usize,
    ) -> anyhow::Result<Vec<Message>> {
        self.with(|topics| {
            let Some(t) = topics.get_mut(topic) else { return Ok(Vec::new()) };
            let g =
                t.groups.get_mut(group).with_context(|| format!("no group {group} on {topic}"))?;
            let now = Instant::now();
            let mut out = Vec::new();
            for (seq, (owner, at)) in g.pending.iter_mut() {
                if out.len() == max {
                    break;
                }
                if now.duration_since(*at) >= min_idle {
                    *owner = consumer.to_string();
                    *at = now;
                    if let Some(payload) = t.log.get(seq) {
                        out.push(Message { id: seq.to_string(), payload: payload.clone() });
                    }
                }
            }
            Ok(out)
        })
    }

    async fn ack(&self, topic: &str, group: &str, ids: &[String]) -> anyhow::Result<()> {
        let seqs = ids.iter().map(|id| seq_of(id)).collect::<anyhow::Result<Vec<_>>>()?;
        self.with(|topics| {
            let Some(t) = topics.get_mut(topic) else { return };
            if let Some(g) = t.groups.get_mut(group) {
                for s in &seqs {
                    g.pending.remove(s);
                }
            }
            // Drop what every group has received and acknowledged.
            let low = t
                .groups
                .values()
                .map(|g| g.pending.keys().next().copied().unwrap_or(g.next).min(g.next))
                .min()
                .unwrap_or(0);
            t.log = t.log.split_off(&low);
        });
        Ok(())
    }

    async fn pending(&self, topic: &str, group: &str) -> anyhow::Result<u64> {
        Ok(self.with(|topics| {
            topics
                .get(topic)
                .and_then(|t| t.groups.get(group))
                .map_or(0, |g| g.pending.len() as u64)
        }))
    }
}

/// The mesh bus: one Redis stream per topic (key `bus:{topic}`), consumer groups on it; the
/// keys of `publish_once` are `bus:{topic}:once:<key>`, in the stream's hash slot.
pub struct RedisBus {
    client: Client,
    /// A blocked XREADGROUP holds its connection, and every command queued behind it on that
    /// connection waits too: each consumer gets a connection of its own for its reads, so
    /// one consumer idling on an empty topic never stalls another.
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
    for group in &groups {
        // Names from code (topic and group constants), never from callers.
        metrics::gauge!("ewpm_bus_group_backlog", "topic" => topic.to_string(), "group" => group.name.clone())
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

    /// The read connection of `consumer`, opened on its first read.
    async fn reader(&self, consumer: &str) -> anyhow::Result<Client> {
        let lock = || self.blocking.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = lock().get(consumer) {
            return Ok(client.clone());
        }
        let client = crate::redis::connect(&self.url).await?;
        Ok(lock().entry(consumer.to_string()).or_insert(client).clone())
    }

    fn key(&self, topic: &str) -> String {
        format!("{}bus:{{{topic}}}", self.prefix)
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
        let reply: Value = self
            .reader(consumer)
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
            .await
            .context("XREADGROUP")?;
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
        let reply: Value = self
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
            .await
            .context("XAUTOCLAIM")?;
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

/// Topics on different buses behind one [`Bus`]: the named topics on their own bus, every
/// other topic on the default one. `ewpm dev` keeps client-acknowledged work on a durable
/// bus and derived, rebuildable work in memory.
pub struct Routed {
    default: Arc<dyn Bus>,
    routes: HashMap<String, Arc<dyn Bus>>,
}

impl Routed {
    /// Every topic on `default` unless routed.
    pub fn new(default: Arc<dyn Bus>) -> Self {
        Self { default, routes: HashMap::new() }
    }

    /// `topic` on `bus`.
    pub fn route(mut self, topic: &str, bus: Arc<dyn Bus>) -> Self {
        self.routes.insert(topic.to_string(), bus);
        self
    }

    fn bus(&self, topic: &str) -> &dyn Bus {
        self.routes.get(topic).unwrap_or(&self.default).as_ref()
    }
}

#[async_trait]
impl Bus for Routed {
    async fn publish(&self, topic: &str, payloads: &[Vec<u8>]) -> anyhow::Result<Vec<String>> {
        self.bus(topic).publish(topic, payloads).await
    }

    async fn publish_once(
        &self,
        topic: &str,
        key: &str,
        record: &[u8],
        payload: &[u8],
        ttl: Duration,
    ) -> anyhow::Result<Once> {
        self.bus(topic).publish_once(topic, key, record, payload, ttl).await
    }

    async fn ensure_group(&self, topic: &str, group: &str) -> anyhow::Result<()> {
        self.bus(topic).ensure_group(topic, group).await
    }

    async fn receive(
        &self,
        topic: &str,
        group: &str,
        consumer: &str,
        max: usize,
        block: Duration,
    ) -> anyhow::Result<Vec<Message>> {
        self.bus(topic).receive(topic, group, consumer, max, block).await
    }

    async fn reclaim(
        &self,
        topic: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        max: usize,
    ) -> anyhow::Result<Vec<Message>> {
        self.bus(topic).reclaim(topic, group, consumer, min_idle, max).await
    }

    async fn ack(&self, topic: &str, group: &str, ids: &[String]) -> anyhow::Result<()> {
        self.bus(topic).ack(topic, group, ids).await
    }

    async fn pending(&self, topic: &str, group: &str) -> anyhow::Result<u64> {
        self.bus(topic).pending(topic, group).await
    }

    async fn backlog(&self, topic: &str, group: &str) -> anyhow::Result<u64> {
        self.bus(topic).backlog(topic, group).await
    }

    fn durable(&self, topic: &str) -> bool {
        self.bus(topic).durable(topic)
    }
}
