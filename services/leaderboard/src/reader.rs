//! Reads of live boards (one period of one board in the score store), made ready first.
//!
//! A read asks the store once; a board that is not ready is made ready and read again:
//! rebuilt from its owner, except a period of a `board:` board that has no facts yet, which
//! is answered empty without writing anything (so reading made-up or quiet periods leaves
//! no keys behind; its first fact creates it).

use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Utc};
use ewpm_kit::clock::SharedClock;

use crate::{
    definition::{Definition, Definitions, Target},
    domain::Board,
    error::LeaderboardError,
    rebuild::Rebuilder,
    scores::{Around, Entry, ScoreStore},
};

/// Reads of live boards.
#[derive(Clone)]
pub struct Reader {
    scores: Arc<dyn ScoreStore>,
    rebuilder: Rebuilder,
    definitions: Definitions,
    clock: SharedClock,
}

impl Reader {
    /// Reads `scores`, making boards ready with `rebuilder`.
    pub fn new(
        scores: Arc<dyn ScoreStore>,
        rebuilder: Rebuilder,
        definitions: Definitions,
        clock: SharedClock,
    ) -> Self {
        Self { scores, rebuilder, definitions, clock }
    }

    /// The score store.
    pub fn scores(&self) -> &Arc<dyn ScoreStore> {
        &self.scores
    }

    /// The definitions.
    pub fn definitions(&self) -> &Definitions {
        &self.definitions
    }

    /// The rebuilder.
    pub fn rebuilder(&self) -> &Rebuilder {
        &self.rebuilder
    }

    /// Now, by the service's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// `board`'s definition; NOT_FOUND when it has none.
    pub async fn definition(&self, board: &Board) -> Result<Arc<Definition>, LeaderboardError> {
        self.definitions
            .get(board)
            .await
            .context("read the board's definition")?
            .ok_or_else(|| LeaderboardError::BoardNotFound { board: board.to_string() })
    }

    /// The period of `board` open now.
    pub async fn current(&self, board: &Board) -> Result<Target, LeaderboardError> {
        let def = self.definition(board).await?;
        Ok(Target::new(&def, def.current(self.now())))
    }

    /// Makes `target` ready; `false` when it is a period without facts (read as empty).
    pub async fn ready(&self, target: &Target) -> Result<bool, LeaderboardError> {
        if target.board.kind() == crate::definition::OWN_KIND {
            let open = self
                .definitions
                .store()
                .open_periods_of(target.board.as_str())
                .await
                .context("read the board's open periods")?;
            if !open.contains(&target.period.id) {
                return Ok(false);
            }
        }
        self.rebuilder.ensure_ready(target).await?;
        Ok(true)
    }

    /// `limit` entries from `offset`, and the number of members.
    pub async fn page(
        &self,
        target: &Target,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<Entry>, u64), LeaderboardError> {
        let key = target.key();
        let read = || self.scores.page(&key, target.shape, offset, limit);
        if let Some(page) = read().await.context("read page")? {
            return Ok(page);
        }
        if !self.ready(target).await? {
            return Ok((Vec::new(), 0));
        }
        // Ready now; a board lost again at once reads as empty until the next read.
        Ok(read().await.context("read page")?.unwrap_or_default())
    }

    /// `member` and up to `n` entries on each side; `None` when not on the board.
    pub async fn around(
        &self,
        target: &Target,
        member: &str,
        n: u64,
    ) -> Result<Option<Around>, LeaderboardError> {
        let ready = self.scores.exists(&target.key()).await.context("read board state")?;
        if !ready && !self.ready(target).await? {
            return Ok(None);
        }
        Ok(self.scores.around(&target.key(), target.shape, member, n).await.context("read rank")?)
    }

    /// The entries of those of `members` on the board, and the number of members.
    pub async fn ranks(
        &self,
        target: &Target,
        members: &[String],
    ) -> Result<(Vec<Entry>, u64), LeaderboardError> {
        let key = target.key();
        let read = || self.scores.ranks(&key, target.shape, members);
        if let Some(found) = read().await.context("read ranks")? {
            return Ok(found);
        }
        if !self.ready(target).await? {
            return Ok((Vec::new(), 0));
        }
        Ok(read().await.context("read ranks")?.unwrap_or_default())
    }
}
