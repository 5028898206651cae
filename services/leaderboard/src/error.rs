//! Errors of the leaderboard service and their one mapping to `tonic::Status`.

use ewpm_kit::error::{self, FieldViolation};
use tonic::{Code, Status};

use crate::rebuild::RebuildError;

/// What went wrong, for the caller.
#[derive(Debug, thiserror::Error)]
pub enum LeaderboardError {
    /// The request has bad fields.
    #[error("invalid request")]
    Invalid(Vec<FieldViolation>),
    /// The member has no score on the board.
    #[error("{member} is not on board {board}")]
    MemberNotOnBoard {
        /// The board.
        board: String,
        /// The member asked for.
        member: String,
    },
    /// The board is missing and could not be made ready in time (its rebuild is slow, or its
    /// owner is unreachable); a retry may succeed.
    #[error("board {board} is not available")]
    BoardUnavailable {
        /// The board.
        board: String,
    },
    /// Anything else: logged, answered as Internal.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<FieldViolation> for LeaderboardError {
    fn from(v: FieldViolation) -> Self {
        Self::Invalid(vec![v])
    }
}

impl From<Vec<FieldViolation>> for LeaderboardError {
    fn from(v: Vec<FieldViolation>) -> Self {
        Self::Invalid(v)
    }
}

impl From<RebuildError> for LeaderboardError {
    fn from(err: RebuildError) -> Self {
        let board = match &err {
            RebuildError::Timeout(board) | RebuildError::Failed { board, .. } => board.clone(),
        };
        // The caller learns only that the board is unavailable; the cause goes to the log.
        tracing::warn!(error = format!("{:#}", anyhow::Error::new(err)), "board not ready");
        Self::BoardUnavailable { board }
    }
}

impl From<LeaderboardError> for Status {
    fn from(err: LeaderboardError) -> Self {
        match err {
            LeaderboardError::Invalid(violations) => {
                error::invalid_argument("INVALID_ARGUMENT", &violations)
            }
            LeaderboardError::MemberNotOnBoard { board, member } => error::status(
                Code::NotFound,
                "MEMBER_NOT_ON_BOARD",
                format!("{member} has no score on board {board}"),
            ),
            LeaderboardError::BoardUnavailable { board } => error::status(
                Code::Unavailable,
                "BOARD_UNAVAILABLE",
                format!("board {board} is being rebuilt; try again shortly"),
            ),
            LeaderboardError::Unexpected(err) => error::internal(&err),
        }
    }
}
