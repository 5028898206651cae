//! Background work of the quiz service: the outbox relay and the question closer.
//!
//! **Relay.** Answers write their score change to `quiz_outbox` in the answer's transaction.
//! A relay takes the sessions with unpublished rows, claims one session's rows at a time (see
//! [`QuizStore::relay`]: one relay per session, rows in order), publishes them as
//! `ewpm.leaderboard.v1.ScoreDelta` on the `score-deltas` topic (board `quiz:<session>`,
//! member the user, `event_id` the answer id) and marks them published in the same
//! transaction. A relay killed between the publish and the commit leaves the rows unmarked:
//! the next relay publishes them again, and the leaderboard applier drops the repeats by
//! `event_id`, so nothing counts twice. Any number of relays may run (`ewpm serve
//! quiz-relay`). Published rows are deleted after `outbox_retention_hours`.
//!
//! **Closer.** Every `closer_interval_ms` it closes each open question whose deadline passed,
//! and each whose every connected participant answered (presence-aware early close), and
//! announces the change. Every quiz process runs one; closing is a conditional update, so
//! two closers never both announce the same close.

use std::{sync::Arc, time::Duration};

use ewpm_kit::{
    CancellationToken, bus::Bus, clock::SharedClock, notices::Notices, retry::sleep_or_shutdown,
};
use ewpm_proto::leaderboard::v1::{SCORE_DELTAS_TOPIC, ScoreDelta};
use prost::Message;
use tokio::sync::Notify;

use crate::store::QuizStore;

/// Sessions a relay looks at per round.
const SESSIONS_PER_ROUND: u32 = 32;

/// The outbox relay.
pub struct Relay {
    /// The tables.
    pub store: QuizStore,
    /// Where deltas go.
    pub bus: Arc<dyn Bus>,
    /// The clock.
    pub clock: SharedClock,
    /// Rows per claim.
    pub batch: u32,
    /// Idle wait.
    pub poll: Duration,
    /// How long published rows are kept.
    pub retention: Duration,
    /// Woken by answers of this process.
    pub answered: Arc<Notify>,
}

impl Relay {
    /// Relays until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut last_purge = tokio::time::Instant::now();
        loop {
            let published = match self.round().await {
                Ok(n) => n,
                Err(err) => {
                    tracing::warn!(
                        error = format!("{err:#}"),
                        "outbox relay round failed; retrying"
                    );
                    0
                }
            };
            if last_purge.elapsed() > Duration::from_secs(60) {
                last_purge = tokio::time::Instant::now();
                let cutoff = self.clock.now()
                    - chrono::TimeDelta::from_std(self.retention).unwrap_or(chrono::TimeDelta::MAX);
                match self.store.purge_outbox(cutoff).await {
                    Ok(n) if n > 0 => tracing::debug!(rows = n, "purged published outbox rows"),
                    Ok(_) => {}
                    Err(err) => tracing::warn!(error = format!("{err:#}"), "outbox purge failed"),
                }
                if let Ok(backlog) = self.store.outbox_backlog().await {
                    #[allow(clippy::cast_precision_loss)]
                    metrics::gauge!("ewpm_quiz_outbox_backlog").set(backlog as f64);
                }
            }
            if published > 0 {
                if shutdown.is_cancelled() {
                    return;
                }
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.answered.notified() => {},
                () = tokio::time::sleep(self.poll) => {},
            }
        }
    }

    /// One pass over the sessions with unpublished rows; how many rows went out.
    pub async fn round(&self) -> anyhow::Result<usize> {
        let mut published = 0;
        for session in self.store.pending_sessions(SESSIONS_PER_ROUND).await? {
            let bus = self.bus.clone();
            let sent = self
                .store
                .relay(&session, self.batch, self.clock.now(), |rows| async move {
                    // Keyed by board: a board's deltas keep their order.
                    let payloads: Vec<(String, Vec<u8>)> = rows
                        .into_iter()
                        .map(|r| {
                            let delta = ScoreDelta {
                                board: r.change.board.clone(),
                                member: r.change.member,
                                delta: r.change.delta,
                                event_id: r.event_id,
                                committed_unix_ms: r.change.committed_unix_ms,
                            };
                            (r.change.board, delta.encode_to_vec())
                        })
                        .collect();
                    ewpm_kit::bus::publish_by_key(bus.as_ref(), SCORE_DELTAS_TOPIC, payloads).await
                })
                .await?;
            if let Some(n) = sent {
                published += n;
                metrics::counter!("ewpm_quiz_outbox_published_total").increment(n as u64);
            }
        }
        Ok(published)
    }
}

/// Closes questions at their deadline, or once every connected participant answered.
pub async fn run_closer(
    store: QuizStore,
    notices: Arc<dyn Notices>,
    clock: SharedClock,
    every: Duration,
    shutdown: CancellationToken,
) {
    while !sleep_or_shutdown(every, &shutdown).await {
        if let Err(err) = close_due(&store, notices.as_ref(), &clock).await {
            tracing::warn!(error = format!("{err:#}"), "question closer pass failed");
        }
    }
}

/// One closer pass; the sessions it closed a question of.
pub async fn close_due(
    store: &QuizStore,
    notices: &dyn Notices,
    clock: &SharedClock,
) -> anyhow::Result<Vec<String>> {
    let mut closed = Vec::new();
    for (session, q) in store.open_questions().await? {
        let now = clock.now();
        let due = if now >= q.deadline {
            true
        } else {
            let (present, answered) =
                store.presence(&session, &q.question_id, now.timestamp_millis()).await?;
            present > 0 && answered >= present
        };
        if due && store.close_question(&session, Some(q.position), now).await?.is_some() {
            closed.push(session);
        }
    }
    if !closed.is_empty() {
        notices.publish(&closed).await?;
    }
    Ok(closed)
}
