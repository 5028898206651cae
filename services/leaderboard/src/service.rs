//! The reads behind the RPCs: every read first makes the board ready (rebuilding a missing
//! board from its owner), then reads the score store.

use std::sync::Arc;

use anyhow::Context;

use crate::{
    domain::Board,
    error::LeaderboardError,
    rebuild::Rebuilder,
    scores::{Around, Entry, ScoreStore},
    watch::{WatchHub, WatchStream},
};

/// One page of a board.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The entries, best first.
    pub entries: Vec<Entry>,
    /// Position of the next page, if there is one.
    pub next_offset: Option<u64>,
    /// Members on the board.
    pub total_members: u64,
}

/// A member's place and neighbourhood.
#[derive(Debug, Clone, PartialEq)]
pub struct Rank {
    /// The member and its window.
    pub around: Around,
    /// Members on the board.
    pub total_members: u64,
}

/// Leaderboard reads.
#[derive(Clone)]
pub struct Leaderboards {
    scores: Arc<dyn ScoreStore>,
    rebuilder: Rebuilder,
    hub: WatchHub,
}

impl Leaderboards {
    /// Reads of `scores`, made ready by `rebuilder`, watched through `hub`.
    pub fn new(scores: Arc<dyn ScoreStore>, rebuilder: Rebuilder, hub: WatchHub) -> Self {
        Self { scores, rebuilder, hub }
    }

    /// `size` entries from position `offset`.
    pub async fn page(
        &self,
        board: &Board,
        offset: u64,
        size: u32,
    ) -> Result<Page, LeaderboardError> {
        let read = || self.scores.page(board.as_str(), offset, u64::from(size));
        let (entries, total_members) = match read().await.context("read page")? {
            Some(page) => page,
            None => {
                self.rebuilder.ensure_ready(board).await?;
                // Ready now; a board lost again at once reads as empty until the next read.
                read().await.context("read page")?.unwrap_or_default()
            }
        };
        let end = offset.saturating_add(entries.len() as u64);
        let next_offset = (!entries.is_empty() && end < total_members).then_some(end);
        Ok(Page { entries, next_offset, total_members })
    }

    /// `member`'s rank and up to `neighbours` entries on each side.
    pub async fn rank(
        &self,
        board: &Board,
        member: &str,
        neighbours: u32,
    ) -> Result<Rank, LeaderboardError> {
        self.rebuilder.ensure_ready(board).await?;
        let around = self
            .scores
            .around(board.as_str(), member, u64::from(neighbours))
            .await
            .context("read rank")?
            .ok_or_else(|| LeaderboardError::MemberNotOnBoard {
                board: board.to_string(),
                member: member.to_string(),
            })?;
        let total_members = self.scores.len(board.as_str()).await.context("count members")?;
        Ok(Rank { around, total_members })
    }

    /// Live snapshots of the top `top_n`.
    pub async fn watch(&self, board: Board, top_n: u32) -> Result<WatchStream, LeaderboardError> {
        self.hub.watch(board, top_n).await
    }
}
