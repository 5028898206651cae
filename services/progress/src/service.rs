//! Accepting progress: check the entry against its challenge, queue it durably (once per
//! idempotency key), then pass it to the activity visitors.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use chrono::{DateTime, Utc};
use ewpm_kit::{
    auth::Caller,
    bus::{Bus, Once},
    clock::SharedClock,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    PROGRESS_TOPIC, WRITER_GROUP,
    challenges::ChallengeWindows,
    domain::{self, Entry, IdempotencyKey, ProgressValue},
    error::ProgressError,
    visitor::{Activity, ActivityKind, Visitors},
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

/// What an idempotency key remembers.
#[derive(Debug, Serialize, Deserialize)]
struct Remembered {
    fingerprint: String,
    entry: Entry,
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
    visitors: Visitors,
    backlog: Arc<Backlog>,
    max_backlog: u64,
}

impl Progress {
    /// Accepts onto `bus`, checking windows from `windows`, passing activity to `visitors`,
    /// pushing back while the writers' backlog exceeds `max_backlog`.
    pub fn new(
        bus: Arc<dyn Bus>,
        windows: ChallengeWindows,
        clock: SharedClock,
        visitors: Visitors,
        max_backlog: u64,
    ) -> Self {
        let backlog = Backlog::watch(bus.clone(), Duration::from_millis(50));
        Self { bus, windows, clock, visitors, backlog, max_backlog }
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
        let payload = serde_json::to_vec(&entry).context("encode entry")?;
        match &submission.idempotency_key {
            None => {
                self.bus.publish(PROGRESS_TOPIC, &[payload]).await.context("queue entry")?;
            }
            Some(key) => {
                let record = serde_json::to_vec(&Remembered {
                    fingerprint: submission.fingerprint(),
                    entry: entry.clone(),
                })
                .context("encode idempotency record")?;
                // The key is scoped to the user: one user's key never answers another's request.
                let scoped = format!("{}\u{1f}{}", caller.user_id, key.as_str());
                let once = self
                    .bus
                    .publish_once(PROGRESS_TOPIC, &scoped, &record, &payload, IDEMPOTENCY_TTL)
                    .await
                    .context("queue entry")?;
                if let Once::Existing(first) = once {
                    let first: Remembered =
                        serde_json::from_slice(&first).context("decode idempotency record")?;
                    if first.fingerprint != submission.fingerprint() {
                        return Err(ProgressError::IdempotencyKeyReused);
                    }
                    return Ok(first.entry);
                }
            }
        }
        metrics::counter!("ewpm_progress_accepted_total").increment(1);
        self.visitors
            .visit(&Activity {
                id: entry.id,
                kind: ActivityKind::ChallengeProgress { challenge_id: id },
                user_id: entry.user_id.clone(),
                employer_id: entry.employer_id.clone(),
                value: entry.value,
                occurred_at,
            })
            .await;
        Ok(entry)
    }
}
