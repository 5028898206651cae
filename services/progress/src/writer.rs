//! The batch writer: queue → SQL → score deltas → activity visitors → acknowledge.
//!
//! A [`ewpm_kit::consumer::Consumer`] of the progress queue (batches of `batch_size`, or when
//! the oldest has waited `flush_interval`). One transaction per batch writes its progress
//! entries and logged activities; rows already written (a batch redelivered after a crash)
//! insert nothing. Only after the commit are the batch's score deltas published and its
//! activities shown to the visitors, and only after that is it acknowledged, so a crash at any
//! point leads to redelivery, never to loss, and redelivery changes nothing (an entry's id is
//! its primary key and its delta's event id; visitors are idempotent).

use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use ewpm_kit::{bus::Bus, consumer::Handler};
use ewpm_proto::leaderboard::v1::ScoreDelta;
use prost::Message as _;

use crate::{
    SCORE_DELTAS_TOPIC,
    domain::{Entry, LoggedActivity, Queued},
    store::ProgressStore,
    visitor::{Activity, Visitors},
};

/// What a batch writer does with a due batch.
pub struct Writer {
    bus: Arc<dyn Bus>,
    store: ProgressStore,
    visitors: Visitors,
}

impl Writer {
    /// Writes into `store`, publishes deltas on `bus`, shows activity to `visitors`.
    pub fn new(bus: Arc<dyn Bus>, store: ProgressStore, visitors: Visitors) -> Self {
        Self { bus, store, visitors }
    }
}

#[async_trait]
impl Handler for Writer {
    type Item = Queued;

    fn decode(&self, payload: &[u8]) -> anyhow::Result<Queued> {
        serde_json::from_slice(payload).context("not a progress entry or logged activity")
    }

    /// SQL, then deltas, then visitors.
    async fn handle(&self, batch: &[Queued]) -> anyhow::Result<()> {
        let started = std::time::Instant::now();
        let mut entries: Vec<&Entry> = Vec::new();
        let mut logged: Vec<&LoggedActivity> = Vec::new();
        for q in batch {
            match q {
                Queued::Progress(e) => entries.push(e),
                Queued::Activity(a) => logged.push(a),
            }
        }
        let inserted = self.store.write_batch(&entries, &logged).await?;
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
        if !deltas.is_empty() {
            self.bus.publish(SCORE_DELTAS_TOPIC, &deltas).await?;
        }
        let activities: Vec<Activity> = batch.iter().map(Queued::activity).collect();
        self.visitors.visit(&activities).await?;
        metrics::histogram!("ewpm_progress_batch_entries").record(batch.len() as f64);
        metrics::histogram!("ewpm_progress_flush_seconds").record(started.elapsed().as_secs_f64());
        metrics::counter!("ewpm_progress_written_total").increment(inserted);
        Ok(())
    }
}
