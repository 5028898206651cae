//! Accepting progress and logged activity: check it (an entry against its challenge), then
//! queue it durably, once per idempotency key. The batch writers take it from there (and
//! publish it on the `activity` topic).

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use chrono::{DateTime, Utc};
use ewpm_kit::{
    auth::Caller,
    bus::{Bus, Once},
    clock::SharedClock,
};
use uuid::Uuid;

use crate::{
    PROGRESS_TOPIC, WRITER_GROUP,
    activity::ActivityKind,
    challenges::ChallengeWindows,
    domain::{
        self, ActivityValue, Entry, IdempotencyKey, LoggedActivity, Note, ProgressValue, Queued,
    },
    error::ProgressError,
    queue::{self, Remembered},
};

/// How long an idempotency key is remembered.
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);

/// A parsed submission.
#[derive(Debug, Clone, PartialEq)]
pub struct Submission {
    /// The challenge.
    pub challenge_id: Uuid,
    /// The amount.
    pub value: ProgressValue,
    /// When it happened, if the client said.
    pub occurred_at: Option<DateTime<Utc>>,
    /// The client's retry key.
    pub idempotency_key: Option<IdempotencyKey>,
}

impl Submission {
    /// What tells a retry from a different request under the same key.
    fn fingerprint(&self) -> String {
        format!(
            "{}|{}|{}",
            self.challenge_id,
            self.value.get(),
            self.occurred_at.map(|t| t.to_rfc3339()).unwrap_or_default()
        )
    }
}

/// A parsed activity log request.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivityLog {
    /// What was logged (never challenge progress).
    pub kind: ActivityKind,
    /// The measurement.
    pub value: ActivityValue,
    /// The note.
    pub note: Note,
    /// When it happened, if the client said.
    pub occurred_at: Option<DateTime<Utc>>,
    /// The client's retry key.
    pub idempotency_key: Option<IdempotencyKey>,
}

impl ActivityLog {
    /// What tells a retry from a different request under the same key.
    fn fingerprint(&self) -> String {
        format!(
            "activity|{}|{:?}|{}|{}",
            self.kind.as_str(),
            self.value.get(),
            self.note.clone().into_string(),
            self.occurred_at.map(|t| t.to_rfc3339()).unwrap_or_default()
        )
    }
}

/// The writers' backlog as last sampled, shared with a sampling task.
#[derive(Debug, Default)]
pub struct Backlog(std::sync::atomic::AtomicU64);

impl Backlog {
    /// Samples the backlog of the writers' group every `every` while `backlog` is alive (the
    /// task ends once the service is dropped).
    pub fn watch(bus: Arc<dyn Bus>, every: Duration) -> Arc<Self> {
        let backlog = Arc::new(Self::default());
        let weak = Arc::downgrade(&backlog);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(backlog) = weak.upgrade() else { return };
                match ewpm_kit::bus::total_backlog(bus.as_ref(), PROGRESS_TOPIC, WRITER_GROUP).await
                {
                    Ok(n) => {
                        backlog.0.store(n, std::sync::atomic::Ordering::Relaxed);
                        metrics::gauge!("ewpm_progress_queue_backlog").set(n as f64);
                    }
                    Err(err) => tracing::debug!(error = format!("{err:#}"), "sample queue backlog"),
                }
            }
        });
        backlog
    }

    /// The last sample.
    pub fn get(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The submit path.
#[derive(Clone)]
pub struct Progress {
    bus: Arc<dyn Bus>,
    windows: ChallengeWindows,
    clock: SharedClock,
    backlog: Arc<Backlog>,
    max_backlog: u64,
}

impl Progress {
    /// Accepts onto `bus`, checking windows from `windows`, pushing back while the writers'
    /// backlog exceeds `max_backlog`.
    pub fn new(
        bus: Arc<dyn Bus>,
        windows: ChallengeWindows,
        clock: SharedClock,
        max_backlog: u64,
    ) -> Self {
        let backlog = Backlog::watch(bus.clone(), Duration::from_millis(50));
        Self { bus, windows, clock, backlog, max_backlog }
    }

    /// Accepts one entry for `caller`; answers the entry as queued (for a retry, the first
    /// request's entry).
    pub async fn submit(
        &self,
        caller: &Caller,
        submission: Submission,
    ) -> Result<Entry, ProgressError> {
        let backlog = self.backlog.get();
        if backlog > self.max_backlog {
            return Err(ProgressError::Overloaded { backlog });
        }
        let now = self.clock.now();
        let occurred_at = domain::occurred_at(submission.occurred_at, now)?;
        let id = submission.challenge_id;
        let not_found = || ProgressError::ChallengeNotFound { id: id.to_string() };
        let window = self.windows.get(id).await?.ok_or_else(not_found)?;
        if !window.visible_to(caller) {
            return Err(not_found());
        }
        // A finished board is final: nothing, not even a backdated entry, after the grace.
        if !window.open_at(now) {
            return Err(ProgressError::ChallengeEnded {
                id: id.to_string(),
                ends_at: window.ends_at,
                closed_at: window.ends_at + window.late_grace,
            });
        }
        window.active_at(occurred_at).map_err(|_| ProgressError::NotActive {
            id: id.to_string(),
            at: occurred_at,
            starts_at: window.starts_at,
            ends_at: window.ends_at,
        })?;
        let entry = Entry {
            id: Uuid::now_v7(),
            challenge_id: id,
            user_id: caller.user_id.clone(),
            employer_id: caller.employer_id.clone(),
            value: submission.value.get(),
            occurred_at,
            accepted_at: now,
        };
        let fingerprint = submission.fingerprint();
        let key = submission.idempotency_key.as_ref();
        match self.queue(caller, key, fingerprint, Queued::Progress(entry)).await? {
            Queued::Progress(first) => Ok(first),
            // The key first answered a logged activity: another request under it.
            Queued::Activity(_) => Err(ProgressError::IdempotencyKeyReused),
        }
    }

    /// Accepts one logged activity for `caller`; answers it as queued (for a retry, the first
    /// request's activity).
    pub async fn log(
        &self,
        caller: &Caller,
        log: ActivityLog,
    ) -> Result<LoggedActivity, ProgressError> {
        let backlog = self.backlog.get();
        if backlog > self.max_backlog {
            return Err(ProgressError::Overloaded { backlog });
        }
        let now = self.clock.now();
        let occurred_at = domain::activity_occurred_at(log.occurred_at, now)?;
        let fingerprint = log.fingerprint();
        let activity = LoggedActivity {
            id: Uuid::now_v7(),
            kind: log.kind,
            user_id: caller.user_id.clone(),
            employer_id: caller.employer_id.clone(),
            value: log.value.get(),
            note: log.note.into_string(),
            occurred_at,
            accepted_at: now,
        };
        let key = log.idempotency_key.as_ref();
        match self.queue(caller, key, fingerprint, Queued::Activity(activity)).await? {
            Queued::Activity(first) => Ok(first),
            // The key first answered challenge progress: another request under it.
            Queued::Progress(_) => Err(ProgressError::IdempotencyKeyReused),
        }
    }

    /// Queues `queued` durably, once per idempotency key: the first request under a key
    /// queues and is answered `queued`; a retry (same fingerprint) gets the first request's
    /// item and queues nothing; another request under the key is rejected.
    async fn queue(
        &self,
        caller: &Caller,
        key: Option<&IdempotencyKey>,
        fingerprint: String,
        queued: Queued,
    ) -> Result<Queued, ProgressError> {
        let payload = queue::encode(&queued);
        let kind = match &queued {
            Queued::Progress(_) => "challenge_progress",
            Queued::Activity(a) => a.kind.as_str(),
        };
        let queued = match key {
            None => {
                // Keyed by user: one user's entries keep their order on a partitioned topic.
                self.bus
                    .publish_keyed(PROGRESS_TOPIC, &caller.user_id, &[payload])
                    .await
                    .map_err(ProgressError::QueueUnavailable)?;
                queued
            }
            Some(key) => {
                let remembered = Remembered { fingerprint, answer: queued };
                let record = queue::encode_record(&remembered);
                // The key is scoped to the user: one user's key never answers another's request.
                let scoped = format!("{}\u{1f}{}", caller.user_id, key.as_str());
                let once = self
                    .bus
                    .publish_once_keyed(
                        PROGRESS_TOPIC,
                        &caller.user_id,
                        &scoped,
                        &record,
                        &payload,
                        IDEMPOTENCY_TTL,
                    )
                    .await
                    .map_err(ProgressError::QueueUnavailable)?;
                if let Once::Existing(first) = once {
                    let first =
                        queue::decode_record(&first).context("decode idempotency record")?;
                    if first.fingerprint != remembered.fingerprint {
                        return Err(ProgressError::IdempotencyKeyReused);
                    }
                    return Ok(first.answer);
                }
                remembered.answer
            }
        };
        metrics::counter!("ewpm_progress_accepted_total", "kind" => kind).increment(1);
        Ok(queued)
    }
}
