//! A batch consumer of one bus topic: receive → batch (by size or age) → handle → acknowledge.
//!
//! The one receive / reclaim / acknowledge loop every queue consumer shares. A batch is due
//! when it holds `rule.size` messages or when its oldest has waited `rule.max_wait` (a real
//! timer: the read blocks no longer than the deadline; a `max_wait` of zero handles whatever
//! one read brought at once). Only after the handler succeeded are the messages
//! acknowledged, so a crash at any point leads to redelivery, never to loss; handlers make
//! redelivery harmless (ids as primary keys, unique constraints, idempotent state updates).
//!
//! Several consumers (tasks and processes) may run at once, each a consumer of one group.
//! Messages a dead consumer received and never acknowledged are taken over by another after
//! `reclaim_idle`. A failing batch is retried with backoff until it succeeds or shutdown.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{
    batch::{Batch, BatchRule},
    bus::{Bus, Message},
    retry::{backoff, sleep_or_shutdown},
};

/// The first retry of a failed batch waits about this long; each further failure doubles it.
const RETRY_BASE: Duration = Duration::from_millis(200);
/// The longest wait between retries of a failed batch.
const RETRY_CAP: Duration = Duration::from_millis(6400);
/// How often a consumer samples its topic's backlog into `ewpm_bus_group_backlog`.
const BACKLOG_EVERY: Duration = Duration::from_secs(5);

/// What a consumer does with its messages.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// A decoded message.
    type Item: Send + Sync + 'static;

    /// Decodes one payload; an error marks a poison message (logged, shown to
    /// [`Handler::reject`], then acknowledged, so it cannot block the queue).
    fn decode(&self, payload: &[u8]) -> anyhow::Result<Self::Item>;

    /// Sets aside a message that did not decode (e.g. in a dead-letter table) before it is
    /// acknowledged; an error leaves it unacknowledged (taken over again after
    /// `reclaim_idle`). By default it is only logged.
    async fn reject(
        &self,
        _message_id: &str,
        _payload: &[u8],
        _error: &anyhow::Error,
    ) -> anyhow::Result<()> {
        Ok(())
    }

    /// Handles a due batch; an error retries the whole batch.
    async fn handle(&self, items: &[Self::Item]) -> anyhow::Result<()>;
}

/// Where and how a consumer reads.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// The topic.
    pub topic: &'static str,
    /// The consumer group.
    pub group: &'static str,
    /// This consumer's name (unique per task and process).
    pub consumer: String,
    /// The flush rule: a batch is due at `rule.size` messages or when its oldest has waited
    /// `rule.max_wait`.
    pub rule: BatchRule,
    /// Messages one flush takes at most: when more than `rule.size` are already waiting (a
    /// backlog), a flush takes them all up to this, so a busy queue is written in fewer,
    /// larger transactions; the batch still becomes due at `rule.size`. Below `rule.size`
    /// counts as `rule.size`.
    pub take: usize,
    /// Idle time after which another consumer's unacknowledged messages are taken over.
    pub reclaim_idle: Duration,
}

/// The claim of one consumer to sample a bus's topic and group in this process (released when
/// dropped).
struct Sampler(SamplerKey);

/// A bus (by address), topic and group.
type SamplerKey = (usize, &'static str, &'static str);

static SAMPLERS: std::sync::Mutex<std::collections::BTreeSet<SamplerKey>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

impl Sampler {
    fn claim(bus: &Arc<dyn Bus>, topic: &'static str, group: &'static str) -> Option<Self> {
        let key = (Arc::as_ptr(bus).cast::<()>() as usize, topic, group);
        let mut samplers = SAMPLERS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // No claim is made unless won: one dropped here would lock again (a deadlock) and
        // release the key of the consumer that holds it.
        if samplers.insert(key) { Some(Self(key)) } else { None }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        SAMPLERS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&self.0);
    }
}

/// One batch consumer.
pub struct Consumer<H: Handler> {
    bus: Arc<dyn Bus>,
    handler: H,
    config: ConsumerConfig,
}

/// A received item and its message id.
struct Received<T> {
    message_id: String,
    item: T,
}

impl<H: Handler> Consumer<H> {
    /// A consumer of `config.topic` on `bus`, feeding `handler`.
    pub fn new(bus: Arc<dyn Bus>, handler: H, config: ConsumerConfig) -> Self {
        Self { bus, handler, config }
    }

    /// Runs until `shutdown`; what was received by then is handled before it returns (and on
    /// a non-durable bus, what is still queued too: nothing would handle it otherwise).
    ///
    /// A partitioned topic (see [`crate::bus`]) is read by one loop per partition, each a
    /// consumer named `<consumer>.p<i>` with a batch of its own.
    ///
    /// Meanwhile it samples each partition's backlog for its group every few seconds into the
    /// gauge `ewpm_bus_group_backlog{topic, partition, group}` (received but unacknowledged,
    /// plus not yet received), whether or not its loops make progress: one consumer per
    /// process, bus, topic and group does, the others of its group leave it to that one.
    pub async fn run(self, shutdown: CancellationToken) {
        let topics = crate::bus::partition_topics(self.bus.as_ref(), self.config.topic);
        let sampling = shutdown.child_token();
        let reading = async {
            if let [topic] = topics.as_slice() {
                self.run_on(topic, &self.config.consumer, shutdown.clone()).await;
            } else {
                let this = &self;
                futures::future::join_all(topics.iter().enumerate().map(|(i, topic)| {
                    let consumer = format!("{}.p{i}", this.config.consumer);
                    let shutdown = shutdown.clone();
                    async move { this.run_on(topic, &consumer, shutdown).await }
                }))
                .await;
            }
            // The loops are done (shutdown): so is the sampling.
            sampling.cancel();
        };
        futures::future::join(reading, self.sample_backlog(&topics, &sampling)).await;
    }

    /// Sets the backlog gauge of every partition of the topic, every [`BACKLOG_EVERY`], until
    /// `stop`, unless another consumer of this process samples the same bus, topic and group.
    async fn sample_backlog(&self, topics: &[String], stop: &CancellationToken) {
        let (topic, group) = (self.config.topic, self.config.group);
        let Some(_sampler) = Sampler::claim(&self.bus, topic, group) else { return };
        loop {
            for (i, partition) in topics.iter().enumerate() {
                let backlog = tokio::select! {
                    r = self.bus.backlog(partition, group) => r,
                    () = stop.cancelled() => return,
                };
                match backlog {
                    // Names from code (topic and group constants), never from callers.
                    Ok(n) => metrics::gauge!(
                        "ewpm_bus_group_backlog",
                        "topic" => topic,
                        "partition" => i.to_string(),
                        "group" => group
                    )
                    .set(n as f64),
                    Err(err) => {
                        tracing::debug!(
                            topic = partition,
                            error = format!("{err:#}"),
                            "backlog sample failed"
                        )
                    }
                }
            }
            if sleep_or_shutdown(BACKLOG_EVERY, stop).await {
                return;
            }
        }
    }

    /// The loop of one partition topic.
    async fn run_on(&self, topic: &str, consumer: &str, shutdown: CancellationToken) {
        let group = self.config.group;
        while let Err(err) = self.bus.ensure_group(topic, group).await {
            tracing::warn!(topic, group, error = format!("{err:#}"), "queue not ready; retrying");
            if sleep_or_shutdown(Duration::from_secs(1), &shutdown).await {
                return;
            }
        }
        tracing::info!(topic, group, consumer, "consumer started");
        let rule = self.config.rule;
        let take = self.config.take.max(rule.size).max(1);
        // Split only at `take`; due by size at `rule.size`, checked after each read.
        let mut batch = Batch::new(BatchRule { size: take, ..rule });
        let mut next_reclaim = Instant::now();
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            if Instant::now() >= next_reclaim {
                // At a fraction of the idle time, at most every 30 s.
                let every = (self.config.reclaim_idle / 2)
                    .clamp(Duration::from_millis(50), Duration::from_secs(30));
                next_reclaim = Instant::now() + every;
                // As many as one flush takes (a dead consumer held up to that many).
                let room = take.saturating_sub(batch.len()).max(1);
                match self.bus.reclaim(topic, group, consumer, self.config.reclaim_idle, room).await
                {
                    Ok(messages) => {
                        // As many as it could take: more may be waiting (a dead consumer's
                        // whole batch); look again at once rather than after `every`.
                        if messages.len() >= room {
                            next_reclaim = Instant::now();
                        }
                        if !messages.is_empty() {
                            tracing::info!(
                                topic,
                                group,
                                messages = messages.len(),
                                "took over unacknowledged messages"
                            );
                        }
                        for r in self.decode(topic, messages).await {
                            if let Some(full) = batch.push(r, Instant::now()) {
                                self.flush_until_done(topic, full, &shutdown).await;
                            }
                        }
                    }
                    Err(err) => tracing::warn!(topic, error = format!("{err:#}"), "reclaim failed"),
                }
                // Due by size now: not after another wait for messages.
                if batch.len() >= rule.size {
                    let due = batch.take();
                    self.flush_until_done(topic, due, &shutdown).await;
                }
            }
            // Wait for messages no longer than the batch's deadline (or the next reclaim).
            let until = batch.deadline().unwrap_or(next_reclaim).min(next_reclaim);
            let wait = until.saturating_duration_since(Instant::now()).min(Duration::from_secs(1));
            let room = take.saturating_sub(batch.len()).max(1);
            let received = tokio::select! {
                r = self.bus.receive(topic, group, consumer, room, wait) => r,
                () = shutdown.cancelled() => Ok(Vec::new()),
            };
            match received {
                Ok(messages) => {
                    for r in self.decode(topic, messages).await {
                        if let Some(full) = batch.push(r, Instant::now()) {
                            self.flush_until_done(topic, full, &shutdown).await;
                        }
                    }
                }
                Err(err) => {
                    tracing::warn!(topic, error = format!("{err:#}"), "queue read failed");
                    sleep_or_shutdown(Duration::from_millis(500), &shutdown).await;
                }
            }
            if batch.len() >= rule.size || batch.deadline().is_some_and(|d| d <= Instant::now()) {
                let due = batch.take();
                self.flush_until_done(topic, due, &shutdown).await;
            }
        }
        // Drain: what was received is handled now rather than left for a reclaim. On a
        // durable bus the queue outlives this process and other consumers may be feeding
        // it: draining there would chase a queue that keeps growing.
        let mut rest: Vec<Received<H::Item>> = batch.take();
        let drain_queue = !self.bus.durable(topic);
        loop {
            let more = if drain_queue {
                match self.bus.receive(topic, group, consumer, take, Duration::ZERO).await {
                    Ok(messages) => self.decode(topic, messages).await,
                    Err(_) => Vec::new(),
                }
            } else {
                Vec::new()
            };
            let last = more.is_empty();
            rest.extend(more);
            if !rest.is_empty() {
                let (ids, items) = split(std::mem::take(&mut rest));
                if let Err(err) = self.flush(topic, &ids, &items).await {
                    tracing::warn!(
                        topic,
                        error = format!("{err:#}"),
                        messages = ids.len(),
                        "final flush failed; messages stay queued for another consumer"
                    );
                    break;
                }
            }
            if last {
                break;
            }
        }
        tracing::info!(topic, group, consumer, "consumer stopped");
    }

    /// Decodes messages; a poison message is logged and acknowledged.
    async fn decode(&self, topic: &str, messages: Vec<Message>) -> Vec<Received<H::Item>> {
        let mut out = Vec::with_capacity(messages.len());
        let mut poison = Vec::new();
        for m in messages {
            match self.handler.decode(&m.payload) {
                Ok(item) => out.push(Received { message_id: m.id, item }),
                Err(err) => {
                    tracing::error!(topic, message = %m.id, error = format!("{err:#}"), "dropping an undecodable message");
                    match self.handler.reject(&m.id, &m.payload, &err).await {
                        Ok(()) => poison.push(m.id),
                        Err(e) => {
                            tracing::warn!(message = %m.id, error = format!("{e:#}"), "setting aside an undecodable message failed; it stays pending")
                        }
                    }
                }
            }
        }
        if !poison.is_empty()
            && let Err(err) = self.bus.ack(topic, self.config.group, &poison).await
        {
            tracing::warn!(error = format!("{err:#}"), "ack of poison messages failed");
        }
        out
    }

    /// Flushes `batch`, retrying with backoff until it succeeds or shutdown (then its
    /// messages stay pending for another consumer).
    async fn flush_until_done(
        &self,
        topic: &str,
        batch: Vec<Received<H::Item>>,
        shutdown: &CancellationToken,
    ) {
        let (ids, items) = split(batch);
        let mut failures = 0u32;
        loop {
            match self.flush(topic, &ids, &items).await {
                Ok(()) => return,
                Err(err) => {
                    failures += 1;
                    tracing::warn!(
                        topic,
                        error = format!("{err:#}"),
                        messages = ids.len(),
                        failures,
                        "batch failed; retrying"
                    );
                    if sleep_or_shutdown(backoff(failures, RETRY_BASE, RETRY_CAP), shutdown).await {
                        return;
                    }
                }
            }
        }
    }

    /// Handles, then acknowledges.
    async fn flush(&self, topic: &str, ids: &[String], items: &[H::Item]) -> anyhow::Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.handler.handle(items).await?;
        self.bus.ack(topic, self.config.group, ids).await
    }
}

/// Message ids and items, in order.
fn split<T>(batch: Vec<Received<T>>) -> (Vec<String>, Vec<T>) {
    batch.into_iter().map(|r| (r.message_id, r.item)).unzip()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One sampler per bus, topic and group: a second claim is refused and leaves the first
    /// in place (returning, not deadlocking on the registry's lock), and a dropped claim frees
    /// its key.
    #[test]
    fn one_sampler_per_bus_topic_and_group() {
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let bus: Arc<dyn Bus> = crate::bus::MemoryBus::new();
            let other: Arc<dyn Bus> = crate::bus::MemoryBus::new();
            let first = Sampler::claim(&bus, "sampled", "g");
            let second = Sampler::claim(&bus, "sampled", "g");
            let third = Sampler::claim(&bus, "sampled", "g");
            let elsewhere = [
                Sampler::claim(&other, "sampled", "g"),
                Sampler::claim(&bus, "sampled", "h"),
                Sampler::claim(&bus, "unsampled", "g"),
            ];
            let results = (first.is_some(), second.is_none(), third.is_none());
            drop(first);
            let again = Sampler::claim(&bus, "sampled", "g").is_some();
            done.send((results, elsewhere.iter().all(Option::is_some), again)).unwrap();
        });
        let outcome = finished.recv_timeout(Duration::from_secs(10)).expect("claims return");
        assert_eq!(outcome, ((true, true, true), true, true));
    }
}
