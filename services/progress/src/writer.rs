//! The batch writer: queue → SQL → score deltas and recorded activity → acknowledge.
//!
//! A [`ewpm_kit::consumer::Consumer`] of the progress queue (batches of `batch_size`, or when
//! the oldest has waited `flush_interval`). One transaction per batch writes its progress
//! entries and logged activities; rows already written (a batch redelivered after a crash)
//! insert nothing. Only after the commit are the batch's score deltas published and its
//! activities published on the `activity` topic (one `ActivityBatch` message per written batch,
//! an `ActivityRecorded` per activity inside it, consumed by the incentive service), and only
//! after that is it acknowledged, so a crash at any point leads to redelivery, never to loss,
//! and redelivery changes nothing (an entry's id is its primary key and its delta's event id;
//! an activity's id is part of every incentive effect's identity).
//! The writer calls no other service: an incentive outage only grows the `activity` backlog.
//!
//! Poison: a batch whose SQL write failed [`Writer::split_after_failures`] times in a row
//! with an error about the data (not an outage) is split until the items that cannot be
//! written are isolated ([`crate::poison`]); those are set aside in `progress_dead_letters`
//! with their payload and error (`ewpm_progress_dead_letters_total`), the rest is written and
//! the batch acknowledged. A payload that does not decode is set aside the same way. Deltas
//! and activity events cover only what was written. Failures to publish are outages of the
//! bus: they are retried, never set aside.

use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
    sync::{Arc, Mutex},
};

use anyhow::Context;
use async_trait::async_trait;
use chrono::Utc;
use ewpm_kit::{
    bus::{self, Bus},
    consumer::Handler,
};
use ewpm_proto::{
    leaderboard::v1::ScoreDelta,
    progress::v1::{ACTIVITY_TOPIC, ActivityBatch},
};
use prost::Message as _;
use uuid::Uuid;

use crate::{
    SCORE_DELTAS_TOPIC,
    domain::{Entry, LoggedActivity, Queued},
    poison, queue,
    store::{DeadLetter, ProgressStore},
};

/// Failed attempts of a batch before it is split, unless set otherwise.
pub const DEFAULT_SPLIT_AFTER_FAILURES: u32 = 3;

/// Failing batches remembered at once (far more than one writer's read loops: one per bus
/// partition, 64 at most).
const MAX_FAILING_BATCHES: usize = 1024;

/// What a batch writer does with a due batch.
pub struct Writer {
    bus: Arc<dyn Bus>,
    store: ProgressStore,
    split_after: u32,
    /// Failing batches (a hash of their item ids) and their failed attempts so far. One per
    /// read loop at most: a consumer retries its batch until it succeeds, but the loops of
    /// a partitioned topic share this writer, and another partition's success must not reset
    /// this one's count (its poison would then never be split off).
    failing: Mutex<HashMap<u64, u32>>,
}

impl Writer {
    /// Writes into `store`, publishes deltas and recorded activity on `bus`.
    pub fn new(bus: Arc<dyn Bus>, store: ProgressStore) -> Self {
        Self {
            bus,
            store,
            split_after: DEFAULT_SPLIT_AFTER_FAILURES,
            failing: Mutex::new(HashMap::new()),
        }
    }

    /// Splits a batch to isolate its poison after `failures` failed attempts (at least 1).
    pub fn split_after_failures(mut self, failures: u32) -> Self {
        self.split_after = failures.max(1);
        self
    }

    /// Drops `batch`'s failure count, if it has one.
    fn forget(&self, batch: &[Queued]) {
        let mut failing = lock(&self.failing);
        if !failing.is_empty() {
            failing.remove(&fingerprint(batch));
        }
    }

    /// Writes `batch` to SQL; after repeated permanent failures, isolates and sets aside what
    /// cannot be written. Returns what was written and how many rows were new.
    async fn write<'a>(&self, batch: &'a [Queued]) -> anyhow::Result<(Vec<&'a Queued>, u64)> {
        let err = match write_items(&self.store, batch).await {
            Ok(inserted) => {
                self.forget(batch);
                return Ok((batch.iter().collect(), inserted));
            }
            Err(err) => err,
        };
        if !poison::is_permanent(&err) {
            return Err(err);
        }
        let failures = {
            let mut failing = lock(&self.failing);
            // A batch that failed and then changed (reclaimed messages joined it) is never
            // retried as it was: bound what such leftovers can hold.
            if failing.len() >= MAX_FAILING_BATCHES {
                failing.clear();
            }
            let count = failing.entry(fingerprint(batch)).or_insert(0);
            *count += 1;
            *count
        };
        if failures < self.split_after {
            return Err(err);
        }
        tracing::warn!(
            error = format!("{err:#}"),
            entries = batch.len(),
            failures,
            "a batch keeps failing; splitting it to isolate what cannot be written"
        );
        let isolated =
            poison::isolate(batch, |part| write_items(&self.store, part), poison::is_permanent)
                .await?;
        let now = Utc::now();
        let mut letters = Vec::with_capacity(isolated.rejected.len());
        for (item, err) in &isolated.rejected {
            let id = item_id(item);
            tracing::error!(id = %id, error = format!("{err:#}"), "setting aside an entry that cannot be written");
            letters.push(DeadLetter {
                id,
                payload: queue::encode(item),
                error: format!("{err:#}"),
                failed_at: now,
            });
        }
        self.store.dead_letter(&letters).await?;
        metrics::counter!("ewpm_progress_dead_letters_total").increment(letters.len() as u64);
        self.forget(batch);
        Ok((isolated.written, isolated.inserted))
    }
}

/// Writes a mixed batch of entries and activities in one transaction.
async fn write_items(store: &ProgressStore, items: &[Queued]) -> anyhow::Result<u64> {
    let mut entries: Vec<&Entry> = Vec::new();
    let mut logged: Vec<&LoggedActivity> = Vec::new();
    for q in items {
        match q {
            Queued::Progress(e) => entries.push(e),
            Queued::Activity(a) => logged.push(a),
        }
    }
    store.write_batch(&entries, &logged).await
}

fn item_id(item: &Queued) -> Uuid {
    match item {
        Queued::Progress(e) => e.id,
        Queued::Activity(a) => a.id,
    }
}

/// Tells one batch from another (the ids of its items).
fn fingerprint(batch: &[Queued]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for item in batch {
        item_id(item).hash(&mut hasher);
    }
    hasher.finish()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[async_trait]
impl Handler for Writer {
    type Item = Queued;

    fn decode(&self, payload: &[u8]) -> anyhow::Result<Queued> {
        queue::decode(payload)
    }

    /// Sets an undecodable payload aside as a dead letter (then the consumer acknowledges it).
    async fn reject(
        &self,
        message_id: &str,
        payload: &[u8],
        error: &anyhow::Error,
    ) -> anyhow::Result<()> {
        let letter = DeadLetter {
            id: Uuid::now_v7(),
            payload: payload.to_vec(),
            error: format!("message {message_id} does not decode: {error:#}"),
            failed_at: Utc::now(),
        };
        self.store.dead_letter(&[letter]).await?;
        metrics::counter!("ewpm_progress_dead_letters_total").increment(1);
        Ok(())
    }

    /// SQL, then deltas, then recorded activity.
    async fn handle(&self, batch: &[Queued]) -> anyhow::Result<()> {
        let started = std::time::Instant::now();
        let (written, inserted) = self.write(batch).await?;
        let entries: Vec<&Entry> = written
            .iter()
            .filter_map(|q| match q {
                Queued::Progress(e) => Some(e),
                Queued::Activity(_) => None,
            })
            .collect();
        let committed = chrono::Utc::now().timestamp_millis();
        // Every entry of the batch gets its delta, new or not: a writer that died between
        // commit and publish left deltas unsent, and the leaderboard drops repeats.
        // Keyed by board: a board's deltas keep their order on a partitioned topic.
        let deltas: Vec<(String, Vec<u8>)> = entries
            .iter()
            .map(|e| {
                let board = e.board();
                let delta = ScoreDelta {
                    board: board.clone(),
                    member: e.user_id.clone(),
                    delta: e.value,
                    event_id: e.id.to_string(),
                    committed_unix_ms: committed,
                };
                (board, delta.encode_to_vec())
            })
            .collect();
        if !deltas.is_empty() {
            bus::publish_by_key(self.bus.as_ref(), SCORE_DELTAS_TOPIC, deltas).await?;
        }
        // Every written activity is published, new or not, for the same reason as deltas;
        // the incentive processors count an (activity, link) pair once. One bus message for
        // the whole batch: the topic's cost (a row to insert, deliver and acknowledge on the
        // embedded bus, a stream entry on Redis) is paid per batch, not per activity.
        // On a partitioned topic, one message per partition the users fall in (keyed by user:
        // one user's activity keeps its order).
        if !written.is_empty() {
            let events = written.iter().map(|q| {
                let event = q.activity().to_event();
                (event.user_id.clone(), event)
            });
            let batches: Vec<(String, Vec<Vec<u8>>)> =
                bus::group_by_partition(self.bus.as_ref(), ACTIVITY_TOPIC, events)
                    .into_iter()
                    .map(|(key, activities)| {
                        (key, vec![ActivityBatch { activities }.encode_to_vec()])
                    })
                    .collect();
            bus::publish_groups(self.bus.as_ref(), ACTIVITY_TOPIC, &batches)
                .await
                .context("publish activity")?;
        }
        metrics::histogram!("ewpm_progress_batch_entries").record(batch.len() as f64);
        metrics::histogram!("ewpm_progress_flush_seconds").record(started.elapsed().as_secs_f64());
        metrics::counter!("ewpm_progress_written_total").increment(inserted);
        Ok(())
    }
}
