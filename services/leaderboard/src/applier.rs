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
//! - A store failure fails the batch, which the kit's [`Consumer`] retries, with backoff,
//!   until it succeeds or shutdown (deltas applied by the failed try are duplicates then).
//!
//! The receive / reclaim / acknowledge loop is the kit's [`Consumer`]; this module is its
//! [`Handler`]: decoding a delta, and applying a received batch at once (no waiting to fill
//! it).

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use async_trait::async_trait;
use ewpm_kit::{
    CancellationToken,
    batch::BatchRule,
    bus::Bus,
    consumer::{Consumer, ConsumerConfig, Handler},
};
use ewpm_proto::leaderboard::v1::ScoreDelta;
use prost::Message as _;

use crate::{
    definition::Target,
    domain::Board,
    notices::Notices,
    rebuild::Rebuilder,
    scores::{Applied, Delta, ScoreStore},
    settings::LeaderboardSettings,
};

/// The bus topic producers put score deltas on (defined beside `ScoreDelta` in `ewpm-proto`).
pub use ewpm_proto::leaderboard::v1::SCORE_DELTAS_TOPIC as TOPIC;
/// The applier's consumer group.
pub const GROUP: &str = "leaderboard-applier";
/// Deltas per batch at most.
const BATCH: usize = 500;

/// Applies score deltas from the bus.
pub struct Applier {
    bus: Arc<dyn Bus>,
    apply: Apply,
    config: ConsumerConfig,
}

/// The consumer's handler: applies a batch of deltas to the store.
struct Apply {
    scores: Arc<dyn ScoreStore>,
    notices: Arc<dyn Notices>,
    rebuilder: Rebuilder,
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
        let config = ConsumerConfig {
            topic: TOPIC,
            group: GROUP,
            consumer: format!("applier-{}", uuid::Uuid::new_v4().simple()),
            // Whatever one receive brought is applied at once: a delta waits for no other.
            rule: BatchRule { size: BATCH, max_wait: Duration::ZERO },
            reclaim_idle: Duration::from_millis(settings.reclaim_idle_ms),
            take: 0,
        };
        Self { bus, apply: Apply { scores, notices, rebuilder }, config }
    }

    /// Applies deltas until `shutdown` is cancelled. A batch in progress is finished first
    /// (a receive waits at most a second).
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        Consumer::new(self.bus, self.apply, self.config).run(shutdown).await;
        Ok(())
    }
}

#[async_trait]
impl Handler for Apply {
    type Item = Decoded;

    /// Decodes and checks one delta; an error (counted as `malformed`) marks a poison message.
    fn decode(&self, payload: &[u8]) -> anyhow::Result<Decoded> {
        decode(payload).inspect_err(|_| {
            metrics::counter!("ewpm_leaderboard_deltas_skipped_total", "reason" => "malformed")
                .increment(1);
        })
    }

    /// Applies one batch; a failure (of the store, a rebuild) fails it whole, to be retried.
    async fn handle(&self, decoded: &[Decoded]) -> anyhow::Result<()> {
        let deltas: Vec<Delta> = decoded.iter().map(|d| d.delta.clone()).collect();
        let outcomes = self.scores.apply_many(&deltas).await.context("apply score deltas")?;

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
                Applied::Duplicate | Applied::Voided => duplicate += 1,
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
                self.rebuilder.spawn_ensure_ready(Target::owned(board));
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
                self.rebuilder.spawn_ensure_ready(Target::owned(board));
            } else {
                // No owner holds these facts: make the (empty) board and count them now.
                let target = Target::owned(board.clone());
                self.rebuilder.ensure_ready(&target).await.map_err(anyhow::Error::new)?;
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
        Ok(())
    }
}

/// Decodes and checks one delta; the error says why it is malformed.
fn decode(payload: &[u8]) -> anyhow::Result<Decoded> {
    let ScoreDelta { board, member, delta, event_id, committed_unix_ms } =
        ScoreDelta::decode(payload).map_err(|_| anyhow::anyhow!("not a ScoreDelta"))?;
    let Ok(parsed) = Board::parse(&board, "board") else {
        anyhow::bail!("bad board name");
    };
    if parsed.kind() == crate::definition::OWN_KIND {
        anyhow::bail!("board: boards take SubmitScore, not bus deltas");
    }
    if member.is_empty() || event_id.is_empty() || !delta.is_finite() {
        anyhow::bail!("empty member or event id, or a non-finite delta");
    }
    if crate::scores::fact_time_ms(&event_id).is_none() {
        // Accepted, but remembered for good (no time to expire it by): visible, so a
        // producer sending such ids is noticed before its boards' seen sets grow.
        metrics::counter!("ewpm_leaderboard_deltas_untimed_total").increment(1);
    }
    Ok(Decoded {
        delta: Delta::sum(&board, &member, delta, &event_id),
        board: parsed,
        committed_unix_ms,
    })
}
