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
//! pinning the stream; each group's backlog on each partition is the gauge
//! `ewpm_bus_group_backlog{topic, partition, group}`, sampled by the group's consumers (see
//! [`crate::consumer::Consumer::run`]) and, on Redis, for every group of a stream whenever it is
//! trimmed (so a group nobody consumes any more still shows its backlog growing).
//!
//! # Layout
//! - this file: the [`Bus`] trait, [`Message`], [`Once`], [`Routed`] and the helpers the
//!   backends share;
//! - [`memory`]: [`MemoryBus`], the embedded mode's bus;
//! - [`sqlite`]: [`SqliteBus`], the embedded mode's durable bus;
//! - [`redis`]: [`RedisBus`], the mesh bus on Redis Streams;
//! - [`partitioned`]: [`Partitioned`], a topic spread over several partitions (streams).
//!
//! # Partitions
//! A topic may have several partitions, each a topic of its own on the bus underneath
//! ([`partition_topic`]: partition 0 is the topic itself, the others `<topic>.p<i>.<k>`, named
//! so that they spread evenly over a cluster's hash slots): on a
//! Redis Cluster each is a stream in its own hash slot, so one topic's traffic spreads over
//! the nodes. Producers publish with a key ([`Bus::publish_keyed`], [`publish_by_key`]): one
//! key always goes to one partition ([`partition_of`]), so per-key order holds. A
//! [`crate::consumer::Consumer`] reads every partition of its topic (one loop each), and each
//! partition is a consumer group of its own. Counts of pending and backlog are per partition
//! topic; [`total_backlog`] sums them.

mod memory;
mod partitioned;
mod redis;
pub mod sqlite;

use std::{collections::HashMap, sync::Arc, time::Duration};

use anyhow::Context;
use async_trait::async_trait;
use tokio::sync::Notify;

pub use memory::MemoryBus;
pub use partitioned::Partitioned;
pub use redis::{DEFAULT_MAX_LEN, RedisBus};
pub use sqlite::SqliteBus;

/// Hash slots of a Redis Cluster.
const SLOTS: u32 = 16_384;

/// The Redis Cluster hash slot of `tag` (CRC16/XMODEM modulo 16,384, as Redis computes it
/// for a key whose hash tag is `tag`).
pub fn cluster_slot(tag: &str) -> u32 {
    let crc = tag.bytes().fold(0u16, |mut crc, byte| {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
        crc
    });
    u32::from(crc) % SLOTS
}

/// The topic of partition `index` of `topic` with `partitions` partitions.
///
/// Partition 0 is the topic itself, so a topic that grows partitions keeps reading its
/// stream. Partition `i` is `<topic>.p<i>.<k>`, with the smallest `k` that puts its hash slot
/// (its stream is tagged by this name) in the first half of the `i`-th of `partitions` equal
/// arcs of the slot ring, counted from partition 0's slot. The partitions are so spread
/// evenly over the slot space, and a cluster whose masters hold equal slot ranges (what
/// `redis-cli --cluster create` makes) gets an even share of them on every master, instead of
/// what a plain hash of a few names would give. Changing `partitions` renames partitions
/// 1 and up: drain the topics first (see the README's "Running at scale").
pub fn partition_topic(topic: &str, index: usize, partitions: usize) -> String {
    if index == 0 || partitions <= 1 {
        return topic.to_string();
    }
    let n = partitions as u32;
    let arc = SLOTS / n;
    let start = (cluster_slot(topic) + index as u32 * arc) % SLOTS;
    let width = (arc / 2).max(1);
    (0u32..)
        .map(|k| format!("{topic}.p{index}.{k}"))
        .find(|name| (cluster_slot(name) + SLOTS - start) % SLOTS < width)
        .unwrap_or_else(|| format!("{topic}.p{index}"))
}

/// The topic a partition topic belongs to (`progress.p3.17` → `progress`; a topic → itself).
pub fn base_topic(topic: &str) -> &str {
    split_partition(topic).0
}

/// A partition topic's topic and index (`progress.p3.17` → `("progress", 3)`; a topic →
/// itself and 0).
pub fn split_partition(topic: &str) -> (&str, usize) {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let Some((rest, k)) = topic.rsplit_once('.') else { return (topic, 0) };
    match rest.rsplit_once(".p") {
        Some((base, i)) if digits(i) && digits(k) => match i.parse() {
            Ok(index) => (base, index),
            Err(_) => (topic, 0),
        },
        _ => (topic, 0),
    }
}

/// The partition of `key` among `partitions`: a stable hash (64-bit FNV-1a), the same in
/// every process and every version, so producers everywhere agree.
pub fn partition_of(key: &str, partitions: usize) -> usize {
    if partitions <= 1 {
        return 0;
    }
    (crate::idempotency::fnv1a(key.as_bytes()) % partitions as u64) as usize
}

/// Every partition topic of `topic` on `bus`.
pub fn partition_topics(bus: &dyn Bus, topic: &str) -> Vec<String> {
    let n = bus.partitions(topic).max(1);
    (0..n).map(|i| partition_topic(topic, i, n)).collect()
}

/// The backlog of `group` over every partition of `topic`.
pub async fn total_backlog(bus: &dyn Bus, topic: &str, group: &str) -> anyhow::Result<u64> {
    let mut total = 0;
    for t in partition_topics(bus, topic) {
        total += bus.backlog(&t, group).await?;
    }
    Ok(total)
}

/// The messages of `group` pending (received, unacknowledged) over every partition of
/// `topic`.
pub async fn total_pending(bus: &dyn Bus, topic: &str, group: &str) -> anyhow::Result<u64> {
    let mut total = 0;
    for t in partition_topics(bus, topic) {
        total += bus.pending(&t, group).await?;
    }
    Ok(total)
}

/// `items` (key, value) grouped by the partition of their key on `topic`, in order within
/// each group: (a key of the group, its values). One group when the topic has one partition.
pub fn group_by_partition<T>(
    bus: &dyn Bus,
    topic: &str,
    items: impl IntoIterator<Item = (String, T)>,
) -> Vec<(String, Vec<T>)> {
    let n = bus.partitions(topic).max(1);
    let mut groups: Vec<Option<(String, Vec<T>)>> = (0..n).map(|_| None).collect();
    for (key, value) in items {
        let slot = &mut groups[partition_of(&key, n)];
        slot.get_or_insert_with(|| (key, Vec::new())).1.push(value);
    }
    groups.into_iter().flatten().collect()
}

/// Publishes (key, payload) pairs on `topic`: one publish per partition their keys fall in,
/// each in order (the partitions concurrently).
pub async fn publish_by_key(
    bus: &dyn Bus,
    topic: &str,
    items: impl IntoIterator<Item = (String, Vec<u8>)>,
) -> anyhow::Result<()> {
    publish_groups(bus, topic, &group_by_partition(bus, topic, items)).await
}

/// Publishes groups of [`group_by_partition`] (a key of the group, its payloads), each in
/// order, the groups concurrently.
pub async fn publish_groups(
    bus: &dyn Bus,
    topic: &str,
    groups: &[(String, Vec<Vec<u8>>)],
) -> anyhow::Result<()> {
    futures::future::try_join_all(
        groups.iter().map(|(key, payloads)| bus.publish_keyed(topic, key, payloads)),
    )
    .await?;
    Ok(())
}

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

    /// How many partitions `topic` has (see the module doc); 1 unless partitioned.
    fn partitions(&self, topic: &str) -> usize {
        let _ = topic;
        1
    }

    /// Appends `payloads` to the partition of `key` on `topic`, in order: messages with one
    /// key keep their order. Without partitions, [`Bus::publish`].
    async fn publish_keyed(
        &self,
        topic: &str,
        key: &str,
        payloads: &[Vec<u8>],
    ) -> anyhow::Result<Vec<String>> {
        let _ = key;
        self.publish(topic, payloads).await
    }

    /// [`Bus::publish_once`] on the partition of `partition_key`.
    async fn publish_once_keyed(
        &self,
        topic: &str,
        partition_key: &str,
        key: &str,
        record: &[u8],
        payload: &[u8],
        ttl: Duration,
    ) -> anyhow::Result<Once> {
        let _ = partition_key;
        self.publish_once(topic, key, record, payload, ttl).await
    }
}

/// The sequence number of a message id of the memory and SQLite buses.
pub(crate) fn seq_of(id: &str) -> anyhow::Result<u64> {
    id.parse().with_context(|| format!("{id:?} is not a message id of this bus"))
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

    /// The bus of `topic` (a partition goes where its topic goes).
    fn bus(&self, topic: &str) -> &dyn Bus {
        self.routes.get(base_topic(topic)).unwrap_or(&self.default).as_ref()
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

    fn partitions(&self, topic: &str) -> usize {
        self.bus(topic).partitions(topic)
    }

    async fn publish_keyed(
        &self,
        topic: &str,
        key: &str,
        payloads: &[Vec<u8>],
    ) -> anyhow::Result<Vec<String>> {
        self.bus(topic).publish_keyed(topic, key, payloads).await
    }

    async fn publish_once_keyed(
        &self,
        topic: &str,
        partition_key: &str,
        key: &str,
        record: &[u8],
        payload: &[u8],
        ttl: Duration,
    ) -> anyhow::Result<Once> {
        self.bus(topic).publish_once_keyed(topic, partition_key, key, record, payload, ttl).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_topics_and_keys_are_stable() {
        // Redis's own answers (`CLUSTER KEYSLOT`).
        assert_eq!(cluster_slot("bench"), 2933);
        assert_eq!(cluster_slot("bench.p5"), 3951);
        assert_eq!(cluster_slot("123456789"), 12_739); // CRC16/XMODEM check value 0x31c3
        assert_eq!(partition_topic("progress", 0, 8), "progress");
        assert_eq!(partition_topic("progress", 3, 1), "progress");
        for n in [2, 3, 4, 8, 64] {
            let base = cluster_slot("progress");
            for i in 1..n {
                let name = partition_topic("progress", i, n);
                assert!(name.starts_with(&format!("progress.p{i}.")), "{name}");
                assert_eq!(base_topic(&name), "progress");
                assert_eq!(split_partition(&name), ("progress", i));
                // In the first half of its own arc of the ring: apart from every other.
                let arc = 16_384 / n as u32;
                let offset = (cluster_slot(&name) + 16_384 - base) % 16_384;
                assert!(offset >= i as u32 * arc && offset < i as u32 * arc + arc / 2, "{name}");
            }
        }
        assert_eq!(base_topic("progress"), "progress");
        assert_eq!(base_topic("a.pb.1"), "a.pb.1");
        assert_eq!(base_topic("a.p1"), "a.p1");
        assert_eq!(base_topic("a.p.1"), "a.p.1");
        assert_eq!(split_partition("progress"), ("progress", 0));
        assert_eq!(
            split_partition("a.p99999999999999999999999.1"),
            ("a.p99999999999999999999999.1", 0)
        );
        // FNV-1a, fixed: producers of every version agree on a key's partition.
        assert_eq!(partition_of("alice", 1), 0);
        assert_eq!(["alice", "bob", "carol", "dave"].map(|k| partition_of(k, 8)), [7, 4, 2, 7]);
        let spread: std::collections::BTreeSet<usize> =
            (0..1000).map(|i| partition_of(&format!("user-{i}"), 8)).collect();
        assert_eq!(spread.len(), 8, "1,000 keys reach every one of 8 partitions");
    }
}
