//! The rules: who may ingest and read, what ingest decides per event (accepted, duplicate,
//! rejected), rate and backlog limits, and the reads.

use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use ewpm_kit::{
    auth::{Caller, Role},
    bus::Bus,
    clock::SharedClock,
    error::FieldViolation,
    paging,
};
use ewpm_proto::engagement::v1::MATCH_EVENTS_TOPIC;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    admission::{Admission, Taken},
    domain::{self, Counts, Event, Input, Limits, Snapshot, micros, parse_batch},
    error::EngagementError,
    persister::{self, GROUP},
    rebuild::Rebuilder,
    settings::EngagementSettings,
    store::{EventStore, Stored},
};

/// How long a reserved id waits for its event to be published before a retry may publish it.
const PENDING: Duration = Duration::from_secs(30);
/// How often the persister backlog is looked at (ingest answers from the last look).
const BACKLOG_EVERY: Duration = Duration::from_millis(250);

/// What became of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Queued, with its id.
    Accepted(Uuid),
    /// Seen before with the same body.
    Duplicate(Uuid),
    /// Not queued.
    Rejected {
        /// `EVENT_ID_CONFLICT`, `TOO_MANY_EVENT_TYPES`.
        reason: &'static str,
        /// `events[i].field`.
        field: String,
        /// For people.
        description: String,
    },
}

/// The answer to an ingest call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingested {
    /// Per event, in order.
    pub outcomes: Vec<Outcome>,
    /// The clock offset applied, ms.
    pub offset_ms: i64,
}

/// A page of events.
#[derive(Debug, Clone)]
pub struct Page {
    /// Events.
    pub events: Vec<Stored>,
    /// The next page's token, if any.
    pub next: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Cursor {
    at: i64,
    id: Uuid,
}

/// The engagement service's rules.
#[derive(Clone)]
pub struct Engagement {
    inner: Arc<Inner>,
}

struct Inner {
    store: EventStore,
    bus: Arc<dyn Bus>,
    admission: Arc<dyn Admission>,
    rebuilder: Arc<Rebuilder>,
    clock: SharedClock,
    limits: Limits,
    settings: EngagementSettings,
    limiter: Option<governor::DefaultKeyedRateLimiter<String>>,
    backlog: AtomicU64,
    backlog_at: Mutex<Option<Instant>>,
}

fn conflict(i: usize) -> Outcome {
    Outcome::Rejected {
        reason: "EVENT_ID_CONFLICT",
        field: format!("events[{i}].event_id"),
        description: "this event id was used before from this source for another event".into(),
    }
}

impl Engagement {
    /// The service on its stores.
    pub fn new(
        store: EventStore,
        bus: Arc<dyn Bus>,
        admission: Arc<dyn Admission>,
        rebuilder: Arc<Rebuilder>,
        clock: SharedClock,
        settings: EngagementSettings,
    ) -> Self {
        let limits = Limits {
            max_batch: settings.max_batch_events.clamp(1, 10_000),
            max_future: Duration::from_secs(settings.max_future_secs),
            max_age: Duration::from_secs(settings.max_age_secs),
            skew_tolerance: Duration::from_millis(settings.skew_tolerance_ms),
            lateness: Duration::from_secs(settings.lateness_secs),
        };
        let limiter = NonZeroU32::new(settings.source_rate_per_sec).map(|rate| {
            let burst = NonZeroU32::new(settings.source_burst.max(settings.source_rate_per_sec))
                .unwrap_or(rate);
            governor::RateLimiter::keyed(governor::Quota::per_second(rate).allow_burst(burst))
        });
        Self {
            inner: Arc::new(Inner {
                store,
                bus,
                admission,
                rebuilder,
                clock,
                limits,
                settings,
                limiter,
                backlog: AtomicU64::new(0),
                backlog_at: Mutex::new(None),
            }),
        }
    }

    /// The rules ingest holds events to.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Ingests a batch from `caller` (see the contract for every rule).
    pub async fn ingest(
        &self,
        caller: &Caller,
        inputs: Vec<Input>,
        sent_at: Option<DateTime<Utc>>,
        backfill: bool,
    ) -> Result<Ingested, EngagementError> {
        let s = &self.inner;
        if !matches!(caller.role, Role::Ingest | Role::Admin) {
            return Err(EngagementError::NotIngestClient);
        }
        let source = caller.user_id.as_str();
        let now = s.clock.now();
        let parsed =
            parse_batch(inputs, sent_at, backfill, source, Uuid::now_v7(), now, &s.limits)?;
        let events = parsed.events;
        self.check_rate(source, events.len())?;
        self.check_backlog().await?;

        let mut outcomes: Vec<Option<Outcome>> = vec![None; events.len()];
        // The same client id twice in one call: the second is a duplicate or a conflict.
        let mut first: HashMap<Uuid, usize> = HashMap::new();
        for (i, e) in events.iter().enumerate() {
            if e.client_event_id.is_none() {
                continue;
            }
            if let Some(&j) = first.get(&e.event_id) {
                outcomes[i] = Some(if events[j].fingerprint == e.fingerprint {
                    Outcome::Duplicate(e.event_id)
                } else {
                    conflict(i)
                });
            } else {
                first.insert(e.event_id, i);
            }
        }
        self.gate_types(&events, &mut outcomes).await?;

        // Client ids: reserve, then look for stored events among the newly reserved.
        let keyed: Vec<usize> = (0..events.len())
            .filter(|&i| outcomes[i].is_none() && events[i].client_event_id.is_some())
            .collect();
        let ids: Vec<(Uuid, String)> =
            keyed.iter().map(|&i| (events[i].event_id, events[i].fingerprint.clone())).collect();
        let taken = s
            .admission
            .reserve(source, &ids, PENDING)
            .await
            .map_err(EngagementError::Unavailable)?;
        let mut reserved = Vec::new();
        for (&i, held) in keyed.iter().zip(taken) {
            let e = &events[i];
            match held {
                None => reserved.push(i),
                Some(Taken { fingerprint, .. }) if fingerprint != e.fingerprint => {
                    outcomes[i] = Some(conflict(i));
                }
                Some(Taken { settled: true, .. }) => {
                    outcomes[i] = Some(Outcome::Duplicate(e.event_id));
                }
                // Reserved by a call that may have died before publishing: publish again (the
                // persister stores an id once).
                Some(Taken { settled: false, .. }) => {}
            }
        }
        let mut settle: Vec<(Uuid, String)> = Vec::new();
        if !reserved.is_empty() {
            let ids: Vec<Uuid> = reserved.iter().map(|&i| events[i].event_id).collect();
            // With SQL down, ingest goes on: an old event sent again is then queued again,
            // and the persister still stores its id once (it only misses being answered
            // DUPLICATE, or a reuse with another body being answered a conflict).
            let stored = match s.store.fingerprints(&ids).await {
                Ok(f) => f,
                Err(err) => {
                    metrics::counter!("ewpm_engagement_dedupe_sql_unavailable_total").increment(1);
                    tracing::warn!(
                        error = format!("{err:#}"),
                        "looking up stored event ids failed; accepting without"
                    );
                    HashMap::new()
                }
            };
            for &i in &reserved {
                let e = &events[i];
                if let Some(fingerprint) = stored.get(&e.event_id) {
                    outcomes[i] = Some(if *fingerprint == e.fingerprint {
                        Outcome::Duplicate(e.event_id)
                    } else {
                        conflict(i)
                    });
                    settle.push((e.event_id, fingerprint.clone()));
                }
            }
        }

        let accepted: Vec<usize> = (0..events.len()).filter(|&i| outcomes[i].is_none()).collect();
        let keyed_accepted: Vec<(Uuid, String)> = accepted
            .iter()
            .filter(|&&i| events[i].client_event_id.is_some())
            .map(|&i| (events[i].event_id, events[i].fingerprint.clone()))
            .collect();
        if !accepted.is_empty() {
            // One message per partition the matches fall in, keyed by match: a match's events
            // keep their order. If one publish fails after another succeeded, the whole call
            // fails and may be sent again: the persister stores an event id once.
            let groups = ewpm_kit::bus::group_by_partition(
                s.bus.as_ref(),
                MATCH_EVENTS_TOPIC,
                accepted.iter().map(|&i| (events[i].match_id.clone(), i)),
            );
            for (key, members) in groups {
                let payload = persister::payload(members.iter().map(|&i| &events[i]));
                if let Err(err) = s.bus.publish_keyed(MATCH_EVENTS_TOPIC, &key, &[payload]).await {
                    drop(s.admission.release(source, &keyed_accepted).await);
                    return Err(EngagementError::Unavailable(err.context("queue the events")));
                }
            }
        }
        settle.extend(keyed_accepted);
        if let Err(err) = s
            .admission
            .settle(
                source,
                &settle,
                Duration::from_secs(s.settings.dedupe_hours * 3600).max(PENDING),
            )
            .await
        {
            // The reservations expire; a retry then publishes again, and the id is stored once.
            tracing::warn!(error = format!("{err:#}"), "settling event ids failed");
        }
        for &i in &accepted {
            outcomes[i] = Some(Outcome::Accepted(events[i].event_id));
        }
        let outcomes: Vec<Outcome> = outcomes.into_iter().flatten().collect();
        for o in &outcomes {
            let label = match o {
                Outcome::Accepted(_) => "accepted",
                Outcome::Duplicate(_) => "duplicate",
                Outcome::Rejected { .. } => "rejected",
            };
            metrics::counter!("ewpm_engagement_events_total", "outcome" => label).increment(1);
        }
        Ok(Ingested { outcomes, offset_ms: parsed.offset_ms })
    }

    fn check_rate(&self, source: &str, n: usize) -> Result<(), EngagementError> {
        let Some(limiter) = &self.inner.limiter else { return Ok(()) };
        if limiter.len() > 100_000 {
            limiter.retain_recent();
        }
        let n = NonZeroU32::new(u32::try_from(n).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
        match limiter.check_key_n(&source.to_string(), n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => {
                use governor::clock::Clock;
                metrics::counter!("ewpm_rate_limited_total").increment(1);
                Err(EngagementError::RateLimited(not_until.wait_time_from(limiter.clock().now())))
            }
            Err(_) => Err(EngagementError::RateLimited(Duration::from_secs(1))),
        }
    }

    async fn check_backlog(&self) -> Result<(), EngagementError> {
        let s = &self.inner;
        let stale = {
            let mut at = s.backlog_at.lock().unwrap_or_else(|p| p.into_inner());
            let stale = at.is_none_or(|t| t.elapsed() >= BACKLOG_EVERY);
            if stale {
                *at = Some(Instant::now());
            }
            stale
        };
        if stale {
            match ewpm_kit::bus::total_backlog(s.bus.as_ref(), MATCH_EVENTS_TOPIC, GROUP).await {
                Ok(n) => {
                    s.backlog.store(n, Ordering::Relaxed);
                    metrics::gauge!("ewpm_engagement_backlog").set(n as f64);
                }
                Err(err) => return Err(EngagementError::Unavailable(err)),
            }
        }
        if s.backlog.load(Ordering::Relaxed) > s.settings.max_backlog {
            return Err(EngagementError::QueueFull);
        }
        Ok(())
    }

    /// Rejects events whose type would be one too many for their match.
    async fn gate_types(
        &self,
        events: &[Event],
        outcomes: &mut [Option<Outcome>],
    ) -> Result<(), EngagementError> {
        let s = &self.inner;
        let cap = s.settings.max_event_types.max(1);
        let open: Vec<&Event> = events
            .iter()
            .zip(outcomes.iter())
            .filter(|(_, o)| o.is_none())
            .map(|(e, _)| e)
            .collect();
        let mut refused: Vec<(String, String)> = Vec::new();
        for (match_id, types) in domain::types_by_match(&open) {
            let unavailable = EngagementError::Unavailable;
            let mut admitted =
                s.admission.admit_types(&match_id, &types, cap).await.map_err(unavailable)?;
            if admitted.is_none() {
                let known: Vec<String> = s
                    .rebuilder
                    .counts(&match_id)
                    .await
                    .map_err(EngagementError::Unavailable)?
                    .by_type
                    .into_keys()
                    .collect();
                s.admission
                    .load_types(&match_id, &known)
                    .await
                    .map_err(EngagementError::Unavailable)?;
                admitted = s
                    .admission
                    .admit_types(&match_id, &types, cap)
                    .await
                    .map_err(EngagementError::Unavailable)?;
            }
            let admitted = admitted.unwrap_or_else(|| vec![false; types.len()]);
            for (t, ok) in types.into_iter().zip(admitted) {
                if !ok {
                    refused.push((match_id.clone(), t));
                }
            }
        }
        if refused.is_empty() {
            return Ok(());
        }
        for (i, e) in events.iter().enumerate() {
            if outcomes[i].is_none()
                && refused.iter().any(|(m, t)| *m == e.match_id && *t == e.event_type)
            {
                outcomes[i] = Some(Outcome::Rejected {
                    reason: "TOO_MANY_EVENT_TYPES",
                    field: format!("events[{i}].event_type"),
                    description: format!(
                        "match {} has its maximum of {cap} distinct event types; {} is not one of them",
                        e.match_id, e.event_type
                    ),
                });
            }
        }
        Ok(())
    }

    fn reader(caller: &Caller) -> Result<(), EngagementError> {
        if caller.role == Role::Ingest { Err(EngagementError::IngestToken) } else { Ok(()) }
    }

    /// The metrics of a match.
    pub async fn metrics(
        &self,
        caller: &Caller,
        match_id: &str,
    ) -> Result<Snapshot, EngagementError> {
        Self::reader(caller)?;
        let match_id = domain::parse_match_id("match_id", match_id)?;
        let counts = self.counts(&match_id).await?;
        Ok(self.snapshot(&match_id, &counts))
    }

    async fn counts(&self, match_id: &str) -> Result<Counts, EngagementError> {
        self.inner.rebuilder.counts(match_id).await.map_err(EngagementError::Unavailable)
    }

    /// The snapshot of `counts` now.
    pub fn snapshot(&self, match_id: &str, counts: &Counts) -> Snapshot {
        domain::snapshot(
            match_id,
            counts,
            micros(self.inner.clock.now()),
            self.inner.limits.lateness,
        )
    }

    /// Checks a watcher before its stream opens.
    pub fn may_watch(&self, caller: &Caller, match_id: &str) -> Result<String, EngagementError> {
        Self::reader(caller)?;
        Ok(domain::parse_match_id("match_id", match_id)?)
    }

    /// A page of a match's events.
    pub async fn list(
        &self,
        caller: &Caller,
        match_id: &str,
        event_type: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<Page, EngagementError> {
        Self::reader(caller)?;
        let mut violations = Vec::new();
        let match_id =
            domain::parse_match_id("match_id", match_id).map_err(|v| violations.push(v)).ok();
        let event_type = if event_type.is_empty() {
            Some(None)
        } else {
            domain::parse_event_type("event_type", event_type)
                .map(Some)
                .map_err(|v| violations.push(v))
                .ok()
        };
        let size = match page_size {
            0 => Some(50),
            n @ 1.. => Some(u32::try_from(n).unwrap_or(500).min(500)),
            _ => {
                violations.push(FieldViolation::new("page_size", "must not be negative"));
                None
            }
        };
        let cursor =
            paging::decode_token::<Cursor>(page_token).map_err(|v| violations.push(v)).ok();
        let (Some(match_id), Some(event_type), Some(size), Some(cursor)) =
            (match_id, event_type, size, cursor)
        else {
            return Err(EngagementError::Invalid(violations));
        };
        let mut events = self
            .inner
            .store
            .list(&match_id, event_type.as_deref(), cursor.map(|c| (c.at, c.id)), size + 1)
            .await
            .map_err(EngagementError::Unavailable)?;
        let next = if events.len() > size as usize {
            events.truncate(size as usize);
            events.last().map(|e| {
                paging::encode_token(&Cursor { at: e.event.occurred_us, id: e.event.event_id })
            })
        } else {
            None
        };
        Ok(Page { events, next })
    }

    /// One stored event.
    pub async fn get(
        &self,
        caller: &Caller,
        match_id: &str,
        event_id: &str,
    ) -> Result<Stored, EngagementError> {
        Self::reader(caller)?;
        let mut violations = Vec::new();
        let match_id =
            domain::parse_match_id("match_id", match_id).map_err(|v| violations.push(v)).ok();
        let id = Uuid::parse_str(event_id)
            .map_err(|_| violations.push(FieldViolation::new("event_id", "must be a UUID")))
            .ok();
        let (Some(match_id), Some(id)) = (match_id, id) else {
            return Err(EngagementError::Invalid(violations));
        };
        self.inner
            .store
            .get(&match_id, id)
            .await
            .map_err(EngagementError::Unavailable)?
            .ok_or_else(|| EngagementError::EventNotFound(event_id.to_string()))
    }

    /// Rebuilds a match's counters from its stored events (admins).
    pub async fn replay(
        &self,
        caller: &Caller,
        match_id: &str,
    ) -> Result<Snapshot, EngagementError> {
        if !caller.is_admin() {
            return Err(EngagementError::Forbidden("only admins may replay a match"));
        }
        let match_id = domain::parse_match_id("match_id", match_id)?;
        let counts = self
            .inner
            .rebuilder
            .rebuild(&match_id, true)
            .await
            .map_err(EngagementError::Unavailable)?;
        Ok(self.snapshot(&match_id, &counts))
    }
}
