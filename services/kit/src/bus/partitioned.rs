//! [`Partitioned`]: every topic of a bus spread over N partitions (see the module doc of
//! [`crate::bus`]).

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;

use super::{Bus, Message, Once, base_topic, partition_of, partition_topic};

/// Every topic of `inner` in `partitions` partitions.
///
/// Publishes pick the partition: by key ([`Bus::publish_keyed`], [`Bus::publish_once_keyed`];
/// [`Bus::publish_once`] by its idempotency key), or round-robin for a plain
/// [`Bus::publish`] (no order among such messages). Everything else takes a partition topic
/// ([`partition_topic`]) and goes to `inner` as it is: consumers read each partition.
pub struct Partitioned {
    inner: Arc<dyn Bus>,
    partitions: usize,
    next: AtomicUsize,
}

impl Partitioned {
    /// `inner` with `partitions` partitions per topic (at least 1).
    pub fn new(inner: Arc<dyn Bus>, partitions: usize) -> Self {
        Self { inner, partitions: partitions.max(1), next: AtomicUsize::new(0) }
    }

    fn topic_of(&self, topic: &str, key: &str) -> String {
        partition_topic(topic, partition_of(key, self.partitions), self.partitions)
    }
}

#[async_trait]
impl Bus for Partitioned {
    async fn publish(&self, topic: &str, payloads: &[Vec<u8>]) -> anyhow::Result<Vec<String>> {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.partitions;
        self.inner.publish(&partition_topic(topic, index, self.partitions), payloads).await
    }

    async fn publish_once(
        &self,
        topic: &str,
        key: &str,
        record: &[u8],
        payload: &[u8],
        ttl: Duration,
    ) -> anyhow::Result<Once> {
        self.inner.publish_once(&self.topic_of(topic, key), key, record, payload, ttl).await
    }

    async fn publish_keyed(
        &self,
        topic: &str,
        key: &str,
        payloads: &[Vec<u8>],
    ) -> anyhow::Result<Vec<String>> {
        self.inner.publish(&self.topic_of(topic, key), payloads).await
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
        let partition = self.topic_of(topic, partition_key);
        self.inner.publish_once(&partition, key, record, payload, ttl).await
    }

    async fn ensure_group(&self, topic: &str, group: &str) -> anyhow::Result<()> {
        self.inner.ensure_group(topic, group).await
    }

    async fn receive(
        &self,
        topic: &str,
        group: &str,
        consumer: &str,
        max: usize,
        block: Duration,
    ) -> anyhow::Result<Vec<Message>> {
        self.inner.receive(topic, group, consumer, max, block).await
    }

    async fn reclaim(
        &self,
        topic: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        max: usize,
    ) -> anyhow::Result<Vec<Message>> {
        self.inner.reclaim(topic, group, consumer, min_idle, max).await
    }

    async fn ack(&self, topic: &str, group: &str, ids: &[String]) -> anyhow::Result<()> {
        self.inner.ack(topic, group, ids).await
    }

    async fn pending(&self, topic: &str, group: &str) -> anyhow::Result<u64> {
        self.inner.pending(topic, group).await
    }

    async fn backlog(&self, topic: &str, group: &str) -> anyhow::Result<u64> {
        self.inner.backlog(topic, group).await
    }

    fn durable(&self, topic: &str) -> bool {
        self.inner.durable(base_topic(topic))
    }

    fn partitions(&self, topic: &str) -> usize {
        let _ = topic;
        self.partitions
    }
}
