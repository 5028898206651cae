//! Errors of the engagement service and their one mapping to `tonic::Status`.
//!
//! | error | gRPC code | reason | REST |
//! |---|---|---|---|
//! | bad field | INVALID_ARGUMENT | `INVALID_ARGUMENT` + field violations | 400 |
//! | a reader's token on ingest | PERMISSION_DENIED | `NOT_AN_INGEST_CLIENT` | 403 |
//! | an ingest token on a read | PERMISSION_DENIED | `INGEST_TOKEN` | 403 |
//! | replay by a non-admin | PERMISSION_DENIED | `PERMISSION_DENIED` | 403 |
//! | unknown event | NOT_FOUND | `EVENT_NOT_FOUND` | 404 |
//! | over the source's event rate | RESOURCE_EXHAUSTED | `RATE_LIMITED` + RetryInfo | 429 |
//! | persister backlog full | RESOURCE_EXHAUSTED | `QUEUE_FULL` + RetryInfo | 429 |
//! | too many watch streams | RESOURCE_EXHAUSTED | `TOO_MANY_STREAMS` + RetryInfo | 429 |
//! | Redis / SQL down | UNAVAILABLE | `UNAVAILABLE` + RetryInfo | 503 |

use std::time::Duration;

use ewpm_kit::error::{self, FieldViolation};
use tonic::{Code, Status};

/// What went wrong, for the caller.
#[derive(Debug, thiserror::Error)]
pub enum EngagementError {
    /// The request has bad fields.
    #[error("invalid request")]
    Invalid(Vec<FieldViolation>),
    /// A reader's token called IngestEvents.
    #[error("only ingest clients (role ingest) and admins may send events")]
    NotIngestClient,
    /// An ingest token called a read.
    #[error("an ingest token may only send events")]
    IngestToken,
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(&'static str),
    /// No such stored event.
    #[error("event {0} not found (an accepted event is found once it is written)")]
    EventNotFound(String),
    /// The source is over its event rate.
    #[error("over the event rate of this source; retry in {} ms", .0.as_millis().max(1))]
    RateLimited(Duration),
    /// The persister's backlog is full.
    #[error("too many events are waiting to be written; retry shortly")]
    QueueFull,
    /// The caller (`caller`) or this process (`process`) holds too many streams.
    #[error("too many open match streams ({0} cap)")]
    TooManyStreams(&'static str),
    /// A store is unreachable.
    #[error("a store is unavailable; retry shortly")]
    Unavailable(#[source] anyhow::Error),
    /// Anything else: logged, answered as Internal.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<Vec<FieldViolation>> for EngagementError {
    fn from(v: Vec<FieldViolation>) -> Self {
        Self::Invalid(v)
    }
}

impl From<FieldViolation> for EngagementError {
    fn from(v: FieldViolation) -> Self {
        Self::Invalid(vec![v])
    }
}

impl From<EngagementError> for Status {
    fn from(err: EngagementError) -> Self {
        let message = err.to_string();
        let (code, reason) = match err {
            EngagementError::Invalid(violations) => {
                return error::invalid_argument("INVALID_ARGUMENT", &violations);
            }
            EngagementError::Unexpected(err) => return error::internal(&err),
            EngagementError::Unavailable(err) => {
                tracing::warn!(error = format!("{err:#}"), "store unavailable");
                return error::retry_after(
                    Code::Unavailable,
                    "UNAVAILABLE",
                    message,
                    Duration::from_secs(1),
                );
            }
            EngagementError::RateLimited(wait) => {
                return error::retry_after(
                    Code::ResourceExhausted,
                    "RATE_LIMITED",
                    message,
                    wait.max(Duration::from_millis(1)),
                );
            }
            EngagementError::QueueFull => {
                return error::retry_after(
                    Code::ResourceExhausted,
                    "QUEUE_FULL",
                    message,
                    Duration::from_secs(1),
                );
            }
            EngagementError::TooManyStreams(_) => {
                return error::retry_after(
                    Code::ResourceExhausted,
                    "TOO_MANY_STREAMS",
                    message,
                    Duration::from_secs(5),
                );
            }
            EngagementError::NotIngestClient => (Code::PermissionDenied, "NOT_AN_INGEST_CLIENT"),
            EngagementError::IngestToken => (Code::PermissionDenied, "INGEST_TOKEN"),
            EngagementError::Forbidden(_) => (Code::PermissionDenied, "PERMISSION_DENIED"),
            EngagementError::EventNotFound(_) => (Code::NotFound, "EVENT_NOT_FOUND"),
        };
        error::status(code, reason, message)
    }
}
