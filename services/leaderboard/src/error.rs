//! Errors of the leaderboard service and their one mapping to `tonic::Status`.

use ewpm_kit::error::{self, FieldViolation};
use tonic::{Code, Status};

use crate::rebuild::RebuildError;

/// What a caller over a stream cap is told to wait before trying again.
const STREAM_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

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
    /// The board does not exist, or the caller may not see it (one answer for both).
    #[error("board {board} not found")]
    BoardNotFound {
        /// The board.
        board: String,
    },
    /// The board's owner could not say who may read it (and had not said so before).
    #[error("the owner of board {board} is unavailable")]
    OwnerUnavailable {
        /// The board.
        board: String,
    },
    /// The caller (or this process) has as many watch streams open as allowed.
    #[error("too many watch streams")]
    TooManyStreams {
        /// Whose cap was reached: `caller` or `process`.
        scope: &'static str,
    },
    /// The board is below its employer's minimum members: nothing of it is shown.
    #[error("board {board} is withheld")]
    Withheld {
        /// The board.
        board: String,
    },
    /// The caller's role or employer does not allow this.
    #[error("{message}")]
    PermissionDenied {
        /// Machine-readable reason.
        reason: &'static str,
        /// For people.
        message: String,
    },
    /// The period no longer takes facts.
    #[error("period {period} of {board} is closed")]
    PeriodClosed {
        /// The board.
        board: String,
        /// The period.
        period: String,
    },
    /// A write that contradicts what is stored.
    #[error("{message}")]
    Conflict {
        /// Machine-readable reason.
        reason: &'static str,
        /// For people.
        message: String,
    },
    /// Scores of challenge and quiz boards come from their owners.
    #[error("board {board} does not take submitted scores")]
    NotSubmittable {
        /// The board.
        board: String,
    },
    /// No fact with that event id on the board.
    #[error("no event {event_id} on board {board}")]
    EventNotOnBoard {
        /// The board.
        board: String,
        /// The event id.
        event_id: String,
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
            LeaderboardError::BoardNotFound { board } => {
                error::status(Code::NotFound, "BOARD_NOT_FOUND", format!("no board {board}"))
            }
            LeaderboardError::OwnerUnavailable { board } => error::retry_after(
                Code::Unavailable,
                "BOARD_OWNER_UNAVAILABLE",
                format!("cannot check access to board {board} now; try again shortly"),
                std::time::Duration::from_secs(1),
            ),
            LeaderboardError::TooManyStreams { scope } => error::retry_after(
                Code::ResourceExhausted,
                "TOO_MANY_STREAMS",
                match scope {
                    "caller" => "too many open watch streams for this caller; close one first",
                    _ => "too many open watch streams on this server; try again shortly",
                },
                STREAM_RETRY_AFTER,
            ),
            LeaderboardError::Withheld { board } => error::status(
                Code::FailedPrecondition,
                "BOARD_WITHHELD",
                format!(
                    "board {board} has fewer members than its employer's minimum; it is not shown yet"
                ),
            ),
            LeaderboardError::PermissionDenied { reason, message } => {
                error::status(Code::PermissionDenied, reason, message)
            }
            LeaderboardError::PeriodClosed { board, period } => error::status(
                Code::FailedPrecondition,
                "PERIOD_CLOSED",
                format!("period {period} of board {board} is closed; its archive is final"),
            ),
            LeaderboardError::Conflict { reason, message } => {
                error::status(Code::AlreadyExists, reason, message)
            }
            LeaderboardError::NotSubmittable { board } => error::status(
                Code::FailedPrecondition,
                "BOARD_NOT_SUBMITTABLE",
                format!(
                    "board {board} is fed by its owner (progress, quiz answers); SubmitScore takes board: boards"
                ),
            ),
            LeaderboardError::EventNotOnBoard { board, event_id } => error::status(
                Code::NotFound,
                "EVENT_NOT_ON_BOARD",
                format!("no event {event_id} on board {board}"),
            ),
            LeaderboardError::Unexpected(err) => error::unexpected(&err),
        }
    }
}
