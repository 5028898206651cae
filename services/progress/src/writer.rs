//! The batch writer: queue → SQL → score deltas → acknowledge.
//!
//! A batch is due when it holds `batch_size` entries or when its oldest entry has waited
//! `flush_interval` (a real timer: the queue read blocks no longer than the deadline). One
//! transaction per batch; entries already written (a batch redelivered after a crash) insert
//! nothing. Only after the commit are the batch's score deltas published, and only after
//! that are the entries acknowledged, so a crash at any point leads to redelivery, never to
//! loss, and redelivery changes nothing (the entry id is the primary key and the delta's
//! event id).
//!
//! Several writers (tasks and processes) may run at once; each is a consumer of one group.
//! Entries a dead writer received and never acknowledged are taken over by another after
//! `reclaim_idle`.

use std::{sync::Arc, time::Duration};

use ewpm_kit::{
    CancellationToken,
    batch::{Batch, BatchRule},
    bus::{Bus, Message},
};
use ewpm_proto::leaderboard::v1::ScoreDelta;
use prost::Message as _;
use tokio::time::Instant;

use crate::{
    PROGRESS_TOPIC, SCORE_DELTAS_TOPIC, WRITER_GROUP, domain::Entry, store::ProgressStore,
};

/// How a writer runs.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// The flush rule.
    pub rule: BatchRule,
    /// Idle time after which another writer's unacknowledged entries are taken over.
    pub reclaim_idle: Duration,
    /// This writer's consumer name (unique per task and process).
    pub consumer: String,
}

/// One batch writer.
pub struct Writer {
    bus: Arc<dyn Bus>,
    store: ProgressStore,
    config: WriterConfig,
}

/// A received entry and its queue message id.
struct Received {
    message_id: String,
    entry: Entry,
}

impl Writer {
    /// A writer from `bus` into `store`.
    pub fn new(bus: Arc<dyn Bus>, store: ProgressStore, config: WriterConfig) -> Self {
        Self { bus, store, config }
    }

    /// Runs until `shutdown`; what was received by then is written before it returns.
    pub async fn run(self, shutdown: CancellationToken) {
        while let Err(err) = self.bus.ensure_group(PROGRESS_TOPIC, WRITER_GROUP).await {
            tracing::warn!(
                error = format!("{err:#}"),
                "progress writer: queue not ready; retrying"
            );
            if sleep_or_shutdown(Duration::from_secs(1), &shutdown).await {
                return;
            }
        }
        tracing::info!(consumer = %self.config.consumer, "progress writer started");
        let mut batch = Batch::new(self.config.rule);
        let mut next_reclaim = Instant::now();
        let mut failures = 0u32;
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            if Instant::now() >= next_reclaim {
                next_reclaim =
                    Instant::now() + self.config.reclaim_idle.max(Duration::from_millis(100)) / 2;
                match self.receive_reclaimed().await {
                    Ok(reclaimed) => {
                        if !reclaimed.is_empty() {
                            tracing::info!(
                                entries = reclaimed.len(),
                                "progress writer took over unacknowledged entries"
                            );
                        }
                        for r in reclaimed {
                            if let Some(full) = batch.push(r, Instant::now()) {
                                failures = self.flush_until_done(full, failures, &shutdown).await;
                            }
                        }
                    }
                    Err(err) => tracing::warn!(error = format!("{err:#}"), "reclaim failed"),
                }
            }
            // Wait for entries no longer than the batch's deadline (or the next reclaim).
            let now = Instant::now();
            let until = batch.deadline().unwrap_or(next_reclaim).min(next_reclaim);
            let wait = until.saturating_duration_since(now).min(Duration::from_secs(1));
            let room = self.config.rule.size.saturating_sub(batch.len()).max(1);
            let received = tokio::select! {
                r = self.bus.receive(PROGRESS_TOPIC, WRITER_GROUP, &self.config.consumer, room, wait) => r,
                () = shutdown.cancelled() => Ok(Vec::new()),
            };
            match received {
                Ok(messages) => {
                    for r in self.decode(messages).await {
                        if let Some(full) = batch.push(r, Instant::now()) {
                            failures = self.flush_until_done(full, failures, &shutdown).await;
                        }
                    }
                }
                Err(err) => {
                    tracing::warn!(error = format!("{err:#}"), "progress queue read failed");
                    sleep_or_shutdown(Duration::from_millis(500), &shutdown).await;
                }
            }
            if batch.deadline().is_some_and(|d| d <= Instant::now()) {
                let due = batch.take();
                failures = self.flush_until_done(due, failures, &shutdown).await;
            }
        }
        // Drain: what was received is written now rather than left for a reclaim. On the
        // in-memory bus so is what is still queued (the servers have drained, so the queue no
        // longer grows): nothing would ever write it otherwise. On a durable bus the queue
        // outlives this process and other writers may be feeding it: draining there would
        // chase a queue that keeps growing.
        let mut rest = batch.take();
        let drain_queue = !self.bus.durable(PROGRESS_TOPIC);
        loop {
            let more = if !drain_queue {
                Vec::new()
            } else {
                match self
                    .bus
                    .receive(
                        PROGRESS_TOPIC,
                        WRITER_GROUP,
                        &self.config.consumer,
                        self.config.rule.size,
                        Duration::ZERO,
                    )
                    .await
                {
                    Ok(messages) => self.decode(messages).await,
                    Err(_) => Vec::new(),
                }
            };
            let last = more.is_empty();
            rest.extend(more);
            if !rest.is_empty() {
                if let Err(err) = self.flush(&rest).await {
                    tracing::warn!(
                        error = format!("{err:#}"),
                        entries = rest.len(),
                        "final flush failed; entries stay queued for another writer"
                    );
                    break;
                }
                rest.clear();
            }
            if last {
                break;
            }
        }
        tracing::info!(consumer = %self.config.consumer, "progress writer stopped");
    }

    async fn receive_reclaimed(&self) -> anyhow::Result<Vec<Received>> {
        let messages = self
            .bus
            .reclaim(
                PROGRESS_TOPIC,
                WRITER_GROUP,
                &self.config.consumer,
                self.config.reclaim_idle,
                self.config.rule.size,
            )
            .await?;
        Ok(self.decode(messages).await)
    }

    /// Decodes queue messages; one that is not an entry is logged and acknowledged, so a
    /// poison message cannot block the queue.
    async fn decode(&self, messages: Vec<Message>) -> Vec<Received> {
        let mut out = Vec::with_capacity(messages.len());
        let mut poison = Vec::new();
        for m in messages {
            match serde_json::from_slice::<Entry>(&m.payload) {
                Ok(entry) => out.push(Received { message_id: m.id, entry }),
                Err(err) => {
                    tracing::error!(message = %m.id, error = %err, "dropping a queue message that is not a progress entry");
                    poison.push(m.id);
                }
            }
        }
        if !poison.is_empty()
            && let Err(err) = self.bus.ack(PROGRESS_TOPIC, WRITER_GROUP, &poison).await
        {
            tracing::warn!(error = format!("{err:#}"), "ack of poison messages failed");
        }
        out
    }

    /// Flushes `batch`, retrying with backoff until it succeeds or shutdown (then the entries
    /// stay pending for another writer). Returns the consecutive failure count.
    async fn flush_until_done(
        &self,
        batch: Vec<Received>,
        mut failures: u32,
        shutdown: &CancellationToken,
    ) -> u32 {
        loop {
            match self.flush(&batch).await {
                Ok(()) => return 0,
                Err(err) => {
                    failures += 1;
                    tracing::warn!(
                        error = format!("{err:#}"),
                        entries = batch.len(),
                        failures,
                        "progress batch flush failed; retrying"
                    );
                    let backoff = Duration::from_millis(100 * 2u64.pow(failures.min(6)));
                    if sleep_or_shutdown(backoff, shutdown).await {
                        return failures;
                    }
                }
            }
        }
    }

    /// SQL, then deltas, then acknowledgement.
    async fn flush(&self, batch: &[Received]) -> anyhow::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let entries: Vec<Entry> = batch.iter().map(|r| r.entry.clone()).collect();
        let inserted = self.store.write_batch(&entries).await?;
        let committed = chrono::Utc::now().timestamp_millis();
        // Every entry of the batch gets its delta, new or not: a writer that died between
        // commit and publish left deltas unsent, and the leaderboard drops repeats.
        let deltas: Vec<Vec<u8>> = entries
            .iter()
            .map(|e| {
                ScoreDelta {
                    board: e.board(),
                    member: e.user_id.clone(),
                    delta: e.value,
                    event_id: e.id.to_string(),
                    committed_unix_ms: committed,
                }
                .encode_to_vec()
            })
            .collect();
        self.bus.publish(SCORE_DELTAS_TOPIC, &deltas).await?;
        let ids: Vec<String> = batch.iter().map(|r| r.message_id.clone()).collect();
        self.bus.ack(PROGRESS_TOPIC, WRITER_GROUP, &ids).await?;
        metrics::histogram!("ewpm_progress_batch_entries").record(batch.len() as f64);
        metrics::histogram!("ewpm_progress_flush_seconds").record(started.elapsed().as_secs_f64());
        metrics::counter!("ewpm_progress_written_total").increment(inserted);
        Ok(())
    }
}

/// Sleeps `d`; true when shutdown came first.
async fn sleep_or_shutdown(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => false,
        () = shutdown.cancelled() => true,
    }
}
