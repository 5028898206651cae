//! The persister: a batch consumer of the `match-events` topic (group
//! `engagement-persister`) that writes events to `match_events`, then counts what it stored
//! into the live counters and tells watchers.
//!
//! Exactly once: an event is counted for the ingest call whose write stored its row (a row
//! stored by an earlier delivery of the same message is found by its `ingest_id` and counted
//! for it again, under the same call id, which the counters apply once; a row another call
//! stored is not counted). Counters a match lost take nothing and are rebuilt in the
//! background from SQL, which holds every row already.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use async_trait::async_trait;
use ewpm_kit::{clock::SharedClock, consumer::Handler, notices::Notices};
use ewpm_proto::engagement::v1::{QueuedEvent, QueuedEvents};
use prost::Message;
use uuid::Uuid;

use crate::{
    counters::Applied,
    domain::{Counts, Event, latency_bucket, micros},
    rebuild::Rebuilder,
    store::{EventStore, Stored},
};

/// The persisters' consumer group.
pub const GROUP: &str = "engagement-persister";

/// Rows one insert statement writes at most (a batch of many large calls takes several).
const ROWS_PER_WRITE: usize = 20_000;

/// How long increments refused by a rebuild are retried before the batch is.
const BUSY_WAIT: Duration = Duration::from_secs(20);

/// Writes and counts queued events.
pub struct Persister {
    /// The table.
    pub store: EventStore,
    /// Counters and their rebuilds.
    pub rebuilder: Arc<Rebuilder>,
    /// Change notices for watchers.
    pub notices: Arc<dyn Notices>,
    /// The clock.
    pub clock: SharedClock,
}

/// The bus form of an event.
pub fn encode(e: &Event) -> QueuedEvent {
    QueuedEvent {
        event_id: e.event_id.to_string(),
        client_event_id: e.client_event_id.clone().unwrap_or_default(),
        match_id: e.match_id.clone(),
        event_type: e.event_type.clone(),
        team_id: e.team_id.clone().unwrap_or_default(),
        player_id: e.player_id.clone().unwrap_or_default(),
        metadata_json: e.metadata_json.clone().unwrap_or_default(),
        occurred_us: e.occurred_us,
        client_occurred_us: e.client_occurred_us,
        received_us: e.received_us,
        source: e.source.clone(),
        match_minute: e.match_minute,
        late: e.late,
        backfill: e.backfill,
        ingest_id: e.ingest_id.to_string(),
        fingerprint: e.fingerprint.clone(),
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// An event from its bus form.
pub fn decode(q: QueuedEvent) -> anyhow::Result<Event> {
    let QueuedEvent {
        event_id,
        client_event_id,
        match_id,
        event_type,
        team_id,
        player_id,
        metadata_json,
        occurred_us,
        client_occurred_us,
        received_us,
        source,
        match_minute,
        late,
        backfill,
        ingest_id,
        fingerprint,
    } = q;
    Ok(Event {
        event_id: Uuid::parse_str(&event_id).context("event_id")?,
        client_event_id: non_empty(client_event_id),
        match_id,
        event_type,
        team_id: non_empty(team_id),
        player_id: non_empty(player_id),
        metadata_json: non_empty(metadata_json),
        occurred_us,
        client_occurred_us,
        received_us,
        source,
        match_minute,
        late,
        backfill,
        ingest_id: Uuid::parse_str(&ingest_id).context("ingest_id")?,
        fingerprint,
    })
}

/// The payload of one bus message holding `events`: each event's own one-event
/// `QueuedEvents`, concatenated (how repeated fields concatenate on the wire).
pub fn payload<'a>(events: impl IntoIterator<Item = &'a Event>) -> Vec<u8> {
    let mut out = Vec::new();
    for e in events {
        QueuedEvents { events: vec![encode(e)] }.encode(&mut out).unwrap_or_default();
    }
    out
}

#[async_trait]
impl Handler for Persister {
    type Item = Vec<Event>;

    fn decode(&self, payload: &[u8]) -> anyhow::Result<Vec<Event>> {
        let QueuedEvents { events } =
            QueuedEvents::decode(payload).context("not a QueuedEvents message")?;
        anyhow::ensure!(!events.is_empty(), "an empty QueuedEvents message");
        events.into_iter().map(decode).collect()
    }

    async fn handle(&self, items: &[Vec<Event>]) -> anyhow::Result<()> {
        let stored_us = micros(self.clock.now());
        let rows: Vec<Stored> = items
            .iter()
            .flatten()
            .map(|e| Stored {
                event: e.clone(),
                stored_us,
                latency_bucket: latency_bucket(stored_us - e.received_us),
            })
            .collect();
        // Statements of at most ROWS_PER_WRITE rows, split only between messages: a rebuild
        // must never see part of one ingest call's rows.
        let mut inserted: HashSet<Uuid> = HashSet::with_capacity(rows.len());
        let ends: Vec<usize> = items
            .iter()
            .scan(0, |acc, m| {
                *acc += m.len();
                Some(*acc)
            })
            .collect();
        let (mut start, mut next) = (0, 0);
        while next < ends.len() {
            let mut end = ends[next];
            next += 1;
            while next < ends.len() && ends[next] - start <= ROWS_PER_WRITE {
                end = ends[next];
                next += 1;
            }
            inserted.extend(self.store.insert(&rows[start..end]).await?);
            start = end;
        }
        let others: Vec<Uuid> =
            rows.iter().map(|r| r.event.event_id).filter(|id| !inserted.contains(id)).collect();
        let owners =
            if others.is_empty() { Default::default() } else { self.store.owners(&others).await? };
        let mut deltas: BTreeMap<(String, Uuid), Counts> = BTreeMap::new();
        for r in &rows {
            let e = &r.event;
            let (bucket, at) = if inserted.contains(&e.event_id) {
                metrics::histogram!("ewpm_engagement_ingest_latency_seconds")
                    .record((stored_us - e.received_us).max(0) as f64 / 1e6);
                (r.latency_bucket, r.stored_us)
            } else {
                match owners.get(&e.event_id) {
                    // Stored by an earlier delivery of this very message: count it (once).
                    Some(o) if o.ingest_id == e.ingest_id => (o.latency_bucket, o.stored_us),
                    // Stored by another call (a re-sent event): counted there.
                    _ => continue,
                }
            };
            deltas.entry((e.match_id.clone(), e.ingest_id)).or_default().count(e, bucket, at);
        }
        metrics::counter!("events_processed_total").increment(inserted.len() as u64);
        let now_ms = self.clock.now().timestamp_millis();
        // Every (match, call) at once: the Redis client pipelines them on its connection.
        let applied =
            futures::future::try_join_all(deltas.iter().map(|((match_id, ingest), delta)| {
                let ingest = ingest.to_string();
                async move {
                    let give_up = tokio::time::Instant::now() + BUSY_WAIT;
                    loop {
                        match self
                            .rebuilder
                            .counters()
                            .apply(match_id, &ingest, delta, now_ms)
                            .await?
                        {
                            Applied::Busy if tokio::time::Instant::now() < give_up => {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            Applied::Busy => anyhow::bail!("match {match_id} stayed in rebuild"),
                            done => return Ok::<_, anyhow::Error>((match_id.clone(), done)),
                        }
                    }
                }
            }))
            .await?;
        let mut touched = BTreeSet::new();
        let mut missing = BTreeSet::new();
        for (match_id, done) in applied {
            if done == Applied::Missing {
                missing.insert(match_id);
            } else {
                touched.insert(match_id);
            }
        }
        for match_id in missing {
            let rebuilder = self.rebuilder.clone();
            let notices = self.notices.clone();
            tokio::spawn(async move {
                match rebuilder.counts(&match_id).await {
                    Ok(_) => drop(notices.publish(&[match_id]).await),
                    Err(err) => tracing::warn!(
                        match_id,
                        error = format!("{err:#}"),
                        "rebuilding match counters failed; the next read retries"
                    ),
                }
            });
        }
        if !touched.is_empty() {
            let keys: Vec<String> = touched.into_iter().collect();
            if let Err(err) = self.notices.publish(&keys).await {
                tracing::warn!(error = format!("{err:#}"), "match change notices failed");
            }
        }
        Ok(())
    }
}
