//! Errors of the challenge service and their one mapping to `tonic::Status`.

use ewpm_kit::error::{self, FieldViolation};
use tonic::{Code, Status};

/// What went wrong, for the caller.
#[derive(Debug, thiserror::Error)]
pub enum ChallengeError {
    /// The request has bad fields.
    #[error("invalid request")]
    Invalid(Vec<FieldViolation>),
    /// No challenge with this id is visible to the caller.
    #[error("challenge {id} not found")]
    NotFound {
        /// The id asked for.
        id: String,
    },
    /// The caller's role or employer does not allow this.
    #[error("{0}")]
    Forbidden(&'static str),
    /// The idempotency key was used before for a different request.
    #[error("idempotency key reused with a different request")]
    IdempotencyKeyReused,
    /// Anything else: logged, answered as Internal.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<FieldViolation> for ChallengeError {
    fn from(v: FieldViolation) -> Self {
        Self::Invalid(vec![v])
    }
}

impl From<Vec<FieldViolation>> for ChallengeError {
    fn from(v: Vec<FieldViolation>) -> Self {
        Self::Invalid(v)
    }
}

impl From<crate::domain::Denied> for ChallengeError {
    fn from(d: crate::domain::Denied) -> Self {
        Self::Forbidden(d.0)
    }
}

impl From<ChallengeError> for Status {
    fn from(err: ChallengeError) -> Self {
        match err {
            ChallengeError::Invalid(violations) => {
                error::invalid_argument("INVALID_ARGUMENT", &violations)
            }
            ChallengeError::NotFound { id } => error::status(
                Code::NotFound,
                "CHALLENGE_NOT_FOUND",
                format!("challenge {id} not found"),
            ),
            ChallengeError::Forbidden(why) => {
                error::status(Code::PermissionDenied, "PERMISSION_DENIED", why)
            }
            ChallengeError::IdempotencyKeyReused => error::invalid_argument(
                "IDEMPOTENCY_KEY_REUSED",
                &[FieldViolation::new(
                    "idempotency_key",
                    "was already used for a different request",
                )],
            ),
            ChallengeError::Unexpected(err) => error::internal(&err),
        }
    }
}
