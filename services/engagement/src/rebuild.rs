//! Rebuilding a match's counters from `match_events` (see [`crate::counters`] for why the
//! result is exact). One rebuild per match per process at a time: concurrent callers share
//! it; across processes the match's lease decides, and a caller that cannot take it waits for
//! the holder's result.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context;
use ewpm_kit::clock::SharedClock;
use futures::{
    FutureExt,
    future::{BoxFuture, Shared},
};
use uuid::Uuid;

use crate::{
    counters::{APPLIED_RETENTION, Counters},
    domain::{Counts, micros},
    store::EventStore,
};

/// How long a rebuild's lease lasts (a rebuild that takes longer loses it and starts over).
const LEASE: Duration = Duration::from_secs(30);
/// How long a caller waits for a rebuild before it gives up.
const WAIT: Duration = Duration::from_secs(60);
/// Between looks at a lease another process holds.
const POLL: Duration = Duration::from_millis(50);

type Running = Shared<BoxFuture<'static, Result<Counts, Arc<anyhow::Error>>>>;

/// Reads counters, rebuilding them when they are missing.
pub struct Rebuilder {
    store: EventStore,
    counters: Arc<dyn Counters>,
    clock: SharedClock,
    running: Mutex<HashMap<(String, bool), Running>>,
}

impl Rebuilder {
    /// A rebuilder of `counters` from `store`.
    pub fn new(store: EventStore, counters: Arc<dyn Counters>, clock: SharedClock) -> Arc<Self> {
        Arc::new(Self { store, counters, clock, running: Mutex::default() })
    }

    /// The counters.
    pub fn counters(&self) -> &Arc<dyn Counters> {
        &self.counters
    }

    /// `match_id`'s counts: as the counters hold them, or rebuilt from SQL when missing. A
    /// match with no stored events has empty counts, and nothing is written for it (a reader
    /// of made-up match ids leaves no state behind).
    pub async fn counts(self: &Arc<Self>, match_id: &str) -> anyhow::Result<Counts> {
        if let Some(c) = self.counters.read(match_id).await? {
            return Ok(c);
        }
        self.rebuild(match_id, false).await
    }

    /// Rebuilds `match_id`'s counters (`force`: even when present, as ReplayMatch does).
    pub async fn rebuild(self: &Arc<Self>, match_id: &str, force: bool) -> anyhow::Result<Counts> {
        let key = (match_id.to_string(), force);
        let running = {
            let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            running
                .entry(key.clone())
                .or_insert_with(|| {
                    let this = self.clone();
                    let match_id = match_id.to_string();
                    let task = tokio::spawn(async move { this.run(&match_id, force).await });
                    async move {
                        match task.await {
                            Ok(r) => r.map_err(Arc::new),
                            Err(e) => Err(Arc::new(anyhow::anyhow!("rebuild task: {e}"))),
                        }
                    }
                    .boxed()
                    .shared()
                })
                .clone()
        };
        let result = running.await;
        {
            let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            running.remove(&key);
        }
        result.map_err(|e| anyhow::anyhow!("{e:#}"))
    }

    async fn run(&self, match_id: &str, force: bool) -> anyhow::Result<Counts> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if !force && let Some(c) = self.counters.read(match_id).await? {
                return Ok(c);
            }
            let token = Uuid::now_v7().to_string();
            if self.counters.begin_rebuild(match_id, &token, LEASE).await? {
                let now = self.clock.now();
                let since = micros(now) - APPLIED_RETENTION.as_micros() as i64;
                let read = self.store.aggregate(match_id, since).await;
                let (counts, ingests) = match read {
                    Ok(r) => r,
                    Err(err) => {
                        drop(self.counters.abort_rebuild(match_id, &token).await);
                        return Err(err.context("read the match's events"));
                    }
                };
                if counts.total == 0 {
                    self.counters.abort_rebuild(match_id, &token).await?;
                    return Ok(counts);
                }
                if self
                    .counters
                    .finish_rebuild(match_id, &token, &counts, &ingests, now.timestamp_millis())
                    .await
                    .context("swap in the rebuilt counters")?
                {
                    metrics::counter!("ewpm_engagement_rebuilds_total").increment(1);
                    tracing::info!(match_id, events = counts.total, "match counters rebuilt");
                    return Ok(counts);
                }
                tracing::warn!(match_id, "rebuild lost its lease; starting over");
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!("the counters of match {match_id} were not rebuilt within {WAIT:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }
}
