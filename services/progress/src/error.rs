//! Errors of the progress service and their one mapping to `tonic::Status`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use ewpm_kit::error::{self, FieldViolation};
use tonic::{Code, Status};

/// What went wrong, for the caller.
#[derive(Debug, thiserror::Error)]
pub enum ProgressError {
    /// The request has bad fields.
    #[error("invalid request")]
    Invalid(Vec<FieldViolation>),
    /// No challenge with this id is visible to the caller.
    #[error("challenge {id} not found")]
    ChallengeNotFound {
        /// The id asked for.
        id: String,
    },
    /// The challenge does not take progress at that time.
    #[error("challenge {id} is not active at {at}")]
    NotActive {
        /// The challenge.
        id: String,
        /// The entry's time.
        at: DateTime<Utc>,
        /// The challenge's window.
        starts_at: DateTime<Utc>,
        /// The challenge's window.
        ends_at: DateTime<Utc>,
    },
    /// The challenge has ended and its late grace is over: its board is final.
    #[error("challenge {id} ended at {ends_at} and takes no more entries")]
    ChallengeEnded {
        /// The challenge.
        id: String,
        /// Its end.
        ends_at: DateTime<Utc>,
        /// Its end plus its late grace.
        closed_at: DateTime<Utc>,
    },
    /// The caller's role does not allow this.
    #[error("{0}")]
    Forbidden(&'static str),
    /// The idempotency key was used before for a different request.
    #[error("idempotency key reused with a different request")]
    IdempotencyKeyReused,
    /// The queue holds more unwritten entries than allowed: retry shortly.
    #[error("too many entries are waiting to be written")]
    Overloaded {
        /// Entries waiting.
        backlog: u64,
    },
    /// The queue (the bus) failed: the request was not queued; retry.
    #[error("the progress queue is unavailable")]
    QueueUnavailable(#[source] anyhow::Error),
    /// A service this one depends on did not answer.
    #[error("{0} is unavailable")]
    Unavailable(&'static str),
    /// Anything else: logged, answered as Internal.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// How long a caller is told to wait before retrying a transient failure or a full queue.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

impl From<FieldViolation> for ProgressError {
    fn from(v: FieldViolation) -> Self {
        Self::Invalid(vec![v])
    }
}

impl From<Vec<FieldViolation>> for ProgressError {
    fn from(v: Vec<FieldViolation>) -> Self {
        Self::Invalid(v)
    }
}

impl From<ProgressError> for Status {
    fn from(err: ProgressError) -> Self {
        match err {
            ProgressError::Invalid(violations) => {
                error::invalid_argument("INVALID_ARGUMENT", &violations)
            }
            ProgressError::ChallengeNotFound { id } => error::status(
                Code::NotFound,
                "CHALLENGE_NOT_FOUND",
                format!("challenge {id} not found"),
            ),
            ProgressError::NotActive { id, at, starts_at, ends_at } => error::status(
                Code::FailedPrecondition,
                "CHALLENGE_NOT_ACTIVE",
                format!(
                    "challenge {id} is not active at {at}: it runs from {starts_at} to {ends_at}",
                    at = at.to_rfc3339(),
                    starts_at = starts_at.to_rfc3339(),
                    ends_at = ends_at.to_rfc3339(),
                ),
            ),
            ProgressError::ChallengeEnded { id, ends_at, closed_at } => error::status(
                Code::FailedPrecondition,
                "CHALLENGE_ENDED",
                format!(
                    "challenge {id} ended at {ends_at} and took late entries until {closed_at}; \
                     its board is final",
                    ends_at = ends_at.to_rfc3339(),
                    closed_at = closed_at.to_rfc3339(),
                ),
            ),
            ProgressError::Forbidden(why) => {
                error::status(Code::PermissionDenied, "PERMISSION_DENIED", why)
            }
            ProgressError::IdempotencyKeyReused => error::invalid_argument(
                "IDEMPOTENCY_KEY_REUSED",
                &[FieldViolation::new(
                    "idempotency_key",
                    "was already used for a different request",
                )],
            ),
            ProgressError::Overloaded { backlog } => error::retry_after(
                Code::ResourceExhausted,
                "PROGRESS_QUEUE_FULL",
                format!("{backlog} entries are waiting to be written; retry in a moment"),
                RETRY_AFTER,
            ),
            ProgressError::QueueUnavailable(cause) => {
                tracing::warn!(error = format!("{cause:#}"), "progress queue unavailable");
                error::retry_after(
                    Code::Unavailable,
                    "QUEUE_UNAVAILABLE",
                    "the progress queue is unavailable; nothing was queued, retry",
                    RETRY_AFTER,
                )
            }
            ProgressError::Unavailable(what) => error::retry_after(
                Code::Unavailable,
                "DEPENDENCY_UNAVAILABLE",
                format!("{what} is unavailable; retry"),
                RETRY_AFTER,
            ),
            ProgressError::Unexpected(err) => error::internal(&err),
        }
    }
}
