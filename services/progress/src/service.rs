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
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use uuid::Uuid;

use crate::{
    PROGRESS_TOPIC, WRITER_GROUP,
    activity::ActivityKind,
    challenges::ChallengeWindows,
    domain::{
        self, ActivityValue, Entry, IdempotencyKey, LoggedActivity, Note, ProgressValue, Queued,
    },
    error::ProgressError,
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

/// What an idempotency key remembers: the first request's fingerprint and answer.
#[derive(Debug, Serialize, Deserialize)]
struct Remembered<F, T> {
    fingerprint: F,
    answer: T,
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
                match bus.backlog(PROGRESS_TOPIC, WRITER_GROUP).await {
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
        let queued = Queued::Progress(entry.clone());
        let fingerprint = submission.fingerprint();
        self.queue(caller, submission.idempotency_key.as_ref(), &fingerprint, entry, &queued).await
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
        let queued = Queued::Activity(activity.clone());
        self.queue(caller, log.idempotency_key.as_ref(), &fingerprint, activity, &queued).await
    }

    /// Queues `queued` durably, once per idempotency key: the first request under a key
    /// queues and is answered `answer`; a retry (same fingerprint) gets the first answer and
    /// queues nothing; another request under the key is rejected.
    async fn queue<T: Serialize + DeserializeOwned>(
        &self,
        caller: &Caller,
        key: Option<&IdempotencyKey>,
        fingerprint: &str,
        answer: T,
        queued: &Queued,
    ) -> Result<T, ProgressError> {
        let payload = serde_json::to_vec(queued).context("encode queued item")?;
        match key {
            None => {
                self.bus
                    .publish(PROGRESS_TOPIC, &[payload])
                    .await
                    .map_err(ProgressError::QueueUnavailable)?;
            }
            Some(key) => {
                let record = serde_json::to_vec(&Remembered { fingerprint, answer: &answer })
                    .context("encode idempotency record")?;
                // The key is scoped to the user: one user's key never answers another's request.
                let scoped = format!("{}\u{1f}{}", caller.user_id, key.as_str());
                let once = self
                    .bus
                    .publish_once(PROGRESS_TOPIC, &scoped, &record, &payload, IDEMPOTENCY_TTL)
                    .await
                    .map_err(ProgressError::QueueUnavailable)?;
                if let Once::Existing(first) = once {
                    let first: Remembered<String, T> =
                        serde_json::from_slice(&first).context("decode idempotency record")?;
                    if first.fingerprint != fingerprint {
                        return Err(ProgressError::IdempotencyKeyReused);
                    }
                    return Ok(first.answer);
                }
            }
        }
        metrics::counter!("ewpm_progress_accepted_total", "kind" => match queued {
            Queued::Progress(_) => "challenge_progress",
            Queued::Activity(a) => a.kind.as_str(),
        })
        .increment(1);
        Ok(answer)
    }
}
