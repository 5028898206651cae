//! Background work of the leaderboard service on `board:` boards: the fact relay and the
//! period closer. Every leaderboard process runs both; both are idempotent.
//!
//! **Relay.** Applies stored facts not yet marked applied (their inline apply failed, or the
//! process died between the commit and the apply; see [`crate::writes`]), oldest first, and
//! marks them. Facts of closed periods are only marked: their archive already counts them.
//!
//! **Closer.** Every `close_interval_ms` it closes each period with facts that ended more than
//! `close_grace_secs` ago: one transaction reads the period's facts (voids excluded), ranks
//! them with [`crate::ranking`] (the same rules the score store keeps) and writes the
//! archive; a period closed twice is closed once ([`crate::store::LeaderboardStore::close_period`]).
//! SubmitScore refuses facts for a period past its grace, and the store refuses them once
//! the period is closed, so the archive is exactly the period's facts. The period's board is
//! then deleted from the score store; reads of it go to the archive.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use ewpm_kit::{CancellationToken, retry::sleep_or_shutdown};

use crate::{
    definition::{Definition, store_key},
    notices::Notices,
    ranking::{Record, Shape, rank_all, records, version},
    service::Leaderboards,
    store::{FactRow, StandingRow},
    writes::apply_facts,
};

/// Facts the relay takes per round.
const RELAY_BATCH: u32 = 500;
/// Periods the closer takes per round.
const CLOSE_BATCH: u32 = 50;

/// The relay and the closer.
pub struct Background {
    /// The reads (and through them the stores).
    pub boards: Leaderboards,
    /// Where changes are announced.
    pub notices: Arc<dyn Notices>,
    /// Gap between relay rounds when idle.
    pub relay_interval: Duration,
    /// Gap between closer rounds.
    pub close_interval: Duration,
}

impl Background {
    /// Runs both until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        tokio::join!(self.relay(shutdown.clone()), self.closer(shutdown));
    }

    async fn relay(&self, shutdown: CancellationToken) {
        loop {
            let busy = match self.relay_round().await {
                Ok(n) => n == RELAY_BATCH as usize,
                Err(err) => {
                    tracing::warn!(error = format!("{err:#}"), "fact relay round failed; retrying");
                    false
                }
            };
            if !busy && sleep_or_shutdown(self.relay_interval, &shutdown).await {
                return;
            }
            if shutdown.is_cancelled() {
                return;
            }
        }
    }

    /// One round: the facts it looked at.
    pub async fn relay_round(&self) -> anyhow::Result<usize> {
        let reader = self.boards.reader();
        let store = reader.definitions().store();
        let facts = store.unapplied(RELAY_BATCH).await?;
        let n = facts.len();
        let mut by_board: BTreeMap<String, Vec<FactRow>> = BTreeMap::new();
        for f in facts {
            by_board.entry(f.board.clone()).or_default().push(f);
        }
        let now = reader.now();
        for (board, facts) in by_board {
            let Some(def) = definition(&self.boards, &board).await? else {
                store.mark_applied(&ids(&facts)).await?;
                continue;
            };
            let (mut live, mut archived) = (Vec::new(), Vec::new());
            // Whether each period of these facts is closed, asked once per period.
            let mut closed: BTreeMap<String, bool> = BTreeMap::new();
            for f in facts {
                let is_closed = match closed.get(&f.period) {
                    Some(c) => *c,
                    None => {
                        let settled = def
                            .schedule
                            .period(&f.period)
                            .is_some_and(|p| self.boards.settled(&p, now));
                        let c = settled && store.period_row(&board, &f.period).await?.is_some();
                        closed.insert(f.period.clone(), c);
                        c
                    }
                };
                if is_closed {
                    archived.push(f);
                } else {
                    live.push(f);
                }
            }
            if !archived.is_empty() {
                store.mark_applied(&ids(&archived)).await?;
            }
            if !live.is_empty() {
                metrics::counter!("ewpm_leaderboard_facts_relayed_total")
                    .increment(live.len() as u64);
                apply_facts(&self.boards, &self.notices, &def, &live).await;
            }
        }
        Ok(n)
    }

    async fn closer(&self, shutdown: CancellationToken) {
        loop {
            if let Err(err) = self.close_round().await {
                tracing::warn!(error = format!("{err:#}"), "period closer round failed; retrying");
            }
            if sleep_or_shutdown(self.close_interval, &shutdown).await {
                return;
            }
        }
    }

    /// One round: the periods it closed.
    pub async fn close_round(&self) -> anyhow::Result<usize> {
        let reader = self.boards.reader();
        let store = reader.definitions().store();
        let due = store.due_periods(self.boards.close_cutoff(reader.now()), CLOSE_BATCH).await?;
        let mut closed = 0;
        for (board, id) in due {
            let Some(def) = definition(&self.boards, &board).await? else { continue };
            let Some(period) = def.schedule.period(&id) else {
                tracing::error!(%board, period = %id, "a stored period the board's schedule does not know");
                continue;
            };
            let shape = def.shape;
            let rank = move |facts: Vec<FactRow>| standings(shape, facts);
            if store
                .close_period(&board, &id, period.start, period.end, reader.now(), &rank)
                .await?
            {
                closed += 1;
                metrics::counter!("ewpm_leaderboard_periods_closed_total").increment(1);
                tracing::info!(%board, period = %id, "period closed and archived");
            }
            reader.scores().delete(&store_key(&board, &id)).await?;
        }
        Ok(closed)
    }
}

async fn definition(boards: &Leaderboards, board: &str) -> anyhow::Result<Option<Arc<Definition>>> {
    let Ok(parsed) = crate::domain::Board::parse(board, "board") else { return Ok(None) };
    boards.reader().definitions().get(&parsed).await
}

fn ids(facts: &[FactRow]) -> Vec<String> {
    facts.iter().map(|f| f.fact_id.clone()).collect()
}

/// A period's standings from its facts: the plain recomputation of [`crate::ranking`], facts
/// taken in the order they happened.
pub fn standings(shape: Shape, mut facts: Vec<FactRow>) -> Vec<StandingRow> {
    facts.sort_by(|a, b| a.occurred_at.cmp(&b.occurred_at).then_with(|| a.fact_id.cmp(&b.fact_id)));
    let values: Vec<(String, Record)> = facts
        .iter()
        .map(|f| {
            let v = version(f.occurred_at.timestamp_micros(), &f.fact_id);
            (f.member.clone(), Record { score: f.score, sub: f.subscore, version: v })
        })
        .collect();
    let recs = records(shape, values.iter().map(|(m, r)| (m.as_str(), r)));
    rank_all(shape, &recs)
        .into_iter()
        .map(|r| StandingRow {
            position: r.position,
            rank: r.rank,
            member: r.member,
            score: r.score,
            subscore: r.sub,
        })
        .collect()
}
