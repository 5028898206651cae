//! The delta applier: score deltas from the bus topic `score-deltas` into the score store,
//! each at most once per board, then change notices for the boards that moved.
//!
//! - Consumer group `leaderboard-applier`: every applier process shares the work; a batch is
//!   acknowledged only after it was applied, so a crash redelivers it and the store's per
//!   event dedupe makes that harmless. Deltas a dead applier left pending are reclaimed after
//!   `reclaim_idle_ms`.
//! - A malformed payload (not a `ScoreDelta`, a bad board name, a non-finite delta) is logged
//!   and acknowledged: a poison message must not block the queue.
//! - A delta whose board is missing is dropped by the store; the board's rebuild is started
//!   in the background and will include the delta's fact (its owner committed it before the
//!   delta was sent). Boards of a kind without an owner have no facts to rebuild from, so
//!   their rebuild (an empty board) is awaited here and their deltas applied again.
//! - A delta older than the store's dedupe window is refused ([`Applied::Stale`], see
//!   [`crate::scores`]): the board may or may not have counted it, so the applier marks the
//!   board missing and starts its rebuild, which counts every committed fact once. Boards
//!   without an owner cannot be rebuilt; their stale deltas are counted as lost.
//! - A store failure is retried in place, with backoff, until it succeeds or shutdown.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use ewpm_kit::{CancellationToken, bus::Bus, bus::Message, settings::LeaderboardSettings};
use ewpm_proto::leaderboard::v1::ScoreDelta;
use prost::Message as _;

use crate::{
    domain::Board,
    notices::Notices,
    rebuild::Rebuilder,
    scores::{Applied, Delta, ScoreStore},
};

/// The bus topic producers put score deltas on.
pub const TOPIC: &str = "score-deltas";
/// The applier's consumer group.
pub const GROUP: &str = "leaderboard-applier";
/// Deltas per receive.
const BATCH: usize = 500;
/// Longest a receive waits for deltas (also how soon shutdown is noticed).
const BLOCK: Duration = Duration::from_secs(1);

/// Applies score deltas from the bus.
pub struct Applier {
    bus: Arc<dyn Bus>,
    scores: Arc<dyn ScoreStore>,
    notices: Arc<dyn Notices>,
    rebuilder: Rebuilder,
    reclaim_idle: Duration,
    consumer: String,
}

/// One decoded delta and when its fact was committed.
struct Decoded {
    delta: Delta,
    board: Board,
    committed_unix_ms: i64,
}

impl Applier {
    /// An applier with a consumer name unique to this process.
    pub fn new(
        bus: Arc<dyn Bus>,
        scores: Arc<dyn ScoreStore>,
        notices: Arc<dyn Notices>,
        rebuilder: Rebuilder,
        settings: &LeaderboardSettings,
    ) -> Self {
        Self {
            bus,
            scores,
            notices,
            rebuilder,
            reclaim_idle: Duration::from_millis(settings.reclaim_idle_ms),
            consumer: format!("applier-{}", uuid::Uuid::new_v4().simple()),
        }
    }

    /// Applies deltas until `shutdown` is cancelled. A batch in progress is finished first
    /// (a receive waits at most a second).
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        while let Err(err) = self.bus.ensure_group(TOPIC, GROUP).await {
            tracing::warn!(error = format!("{err:#}"), "create the applier's consumer group");
            if pause(&shutdown, Duration::from_secs(1)).await {
                return Ok(());
            }
        }
        tracing::info!(consumer = %self.consumer, "score delta applier started");
        // Check for abandoned deltas at a fraction of their idle time, at most every 30 s.
        let reclaim_every =
            (self.reclaim_idle / 2).clamp(Duration::from_millis(100), Duration::from_secs(30));
        let mut next_reclaim = tokio::time::Instant::now();
        let mut failures = 0u32;
        while !shutdown.is_cancelled() {
            let now = tokio::time::Instant::now();
            let received = if now >= next_reclaim {
                next_reclaim = now + reclaim_every;
                self.bus.reclaim(TOPIC, GROUP, &self.consumer, self.reclaim_idle, BATCH).await
            } else {
                self.bus.receive(TOPIC, GROUP, &self.consumer, BATCH, BLOCK).await
            };
            let result = match received {
                Ok(messages) if messages.is_empty() => Ok(()),
                Ok(messages) => self.handle(&messages, &shutdown).await,
                Err(err) => Err(err),
            };
            match result {
                Ok(()) => failures = 0,
                Err(err) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(error = format!("{err:#}"), "score delta applier");
                    if pause(&shutdown, backoff(failures)).await {
                        break;
                    }
                }
            }
        }
        tracing::info!("score delta applier stopped");
        Ok(())
    }

    /// Applies one batch and acknowledges it. Store failures are retried here, so the batch
    /// is only abandoned (left pending, to be reclaimed) at shutdown or if the ack fails.
    async fn handle(
        &self,
        messages: &[Message],
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let decoded: Vec<Decoded> = messages.iter().filter_map(decode).collect();
        let deltas: Vec<Delta> = decoded.iter().map(|d| d.delta.clone()).collect();
        let mut failures = 0u32;
        let outcomes = loop {
            match self.scores.apply_many(&deltas).await {
                Ok(o) => break o,
                Err(err) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(error = format!("{err:#}"), "apply score deltas");
                    if pause(shutdown, backoff(failures)).await {
                        return Ok(());
                    }
                }
            }
        };

        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut touched = BTreeSet::new();
        let mut missing: BTreeMap<Board, Vec<Delta>> = BTreeMap::new();
        let mut stale: BTreeMap<Board, u64> = BTreeMap::new();
        let (mut applied, mut duplicate) = (0u64, 0u64);
        for (d, outcome) in decoded.iter().zip(&outcomes) {
            match outcome {
                Applied::Applied => {
                    applied += 1;
                    touched.insert(d.delta.board.clone());
                    if d.committed_unix_ms > 0 {
                        let lag = now_ms.saturating_sub(d.committed_unix_ms).max(0);
                        metrics::histogram!("ewpm_leaderboard_apply_lag_seconds")
                            .record(lag as f64 / 1000.0);
                    }
                }
                Applied::Duplicate => duplicate += 1,
                Applied::Missing => {
                    missing.entry(d.board.clone()).or_default().push(d.delta.clone());
                }
                Applied::Stale => *stale.entry(d.board.clone()).or_default() += 1,
            }
        }
        for (board, n) in stale {
            if self.rebuilder.has_owner(board.kind()) {
                metrics::counter!("ewpm_leaderboard_deltas_skipped_total", "reason" => "stale")
                    .increment(n);
                tracing::warn!(%board, deltas = n, "deltas older than the dedupe window; rebuilding the board from its owner");
                self.scores.forget(board.as_str()).await?;
                self.rebuilder.spawn_ensure_ready(board);
            } else {
                metrics::counter!("ewpm_leaderboard_deltas_skipped_total", "reason" => "stale_lost")
                    .increment(n);
                tracing::error!(%board, deltas = n, "deltas older than the dedupe window on a board without an owner: not counted");
            }
        }
        for (board, deltas) in missing {
            metrics::counter!("ewpm_leaderboard_deltas_skipped_total", "reason" => "missing_board")
                .increment(deltas.len() as u64);
            if self.rebuilder.has_owner(board.kind()) {
                self.rebuilder.spawn_ensure_ready(board);
            } else {
                // No owner holds these facts: make the (empty) board and count them now.
                self.rebuilder.ensure_ready(&board).await.map_err(anyhow::Error::new)?;
                let again = self.scores.apply_many(&deltas).await?;
                let n = again.iter().filter(|a| **a == Applied::Applied).count() as u64;
                applied += n;
                if n > 0 {
                    touched.insert(board.to_string());
                }
            }
        }
        metrics::counter!("ewpm_leaderboard_deltas_applied_total").increment(applied);
        metrics::counter!("ewpm_leaderboard_deltas_skipped_total", "reason" => "duplicate")
            .increment(duplicate);

        if !touched.is_empty() {
            let boards: Vec<String> = touched.into_iter().collect();
            // Watchers also refresh periodically, so a lost notice only delays them.
            if let Err(err) = self.notices.publish(&boards).await {
                tracing::warn!(error = format!("{err:#}"), "publish board change notices");
            }
        }
        let ids: Vec<String> = messages.iter().map(|m| m.id.clone()).collect();
        self.bus.ack(TOPIC, GROUP, &ids).await
    }
}

/// Decodes and checks one message; `None` (logged) for a poison message.
fn decode(message: &Message) -> Option<Decoded> {
    let poison = |why: &str| {
        tracing::warn!(id = %message.id, why, "dropping malformed score delta");
        metrics::counter!("ewpm_leaderboard_deltas_skipped_total", "reason" => "malformed")
            .increment(1);
    };
    let ScoreDelta { board, member, delta, event_id, committed_unix_ms } =
        match ScoreDelta::decode(message.payload.as_slice()) {
            Ok(d) => d,
            Err(_) => {
                poison("not a ScoreDelta");
                return None;
            }
        };
    let Ok(parsed) = Board::parse(&board, "board") else {
        poison("bad board name");
        return None;
    };
    if member.is_empty() || event_id.is_empty() || !delta.is_finite() {
        poison("empty member or event id, or a non-finite delta");
        return None;
    }
    if crate::scores::fact_time_ms(&event_id).is_none() {
        // Accepted, but remembered for good (no time to expire it by): visible, so a
        // producer sending such ids is noticed before its boards' seen sets grow.
        metrics::counter!("ewpm_leaderboard_deltas_untimed_total").increment(1);
    }
    Some(Decoded {
        delta: Delta { board, member, delta, event_id },
        board: parsed,
        committed_unix_ms,
    })
}

/// Capped exponential backoff: 100 ms, 200 ms, … 5 s.
fn backoff(failures: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << failures.min(6))).min(Duration::from_secs(5))
}

/// Sleeps for `d`; `true` if shutdown came first.
async fn pause(shutdown: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => true,
        () = tokio::time::sleep(d) => false,
    }
}
