//! Errors of the incentive service and their one mapping to `tonic::Status`.

use ewpm_kit::error::{self, FieldViolation};
use tonic::{Code, Status};

/// What went wrong, for the caller.
#[derive(Debug, thiserror::Error)]
pub enum IncentiveError {
    /// The request has bad fields.
    #[error("invalid request")]
    Invalid(Vec<FieldViolation>),
    /// No catalog incentive with this id or slug.
    #[error("incentive {0} not found")]
    IncentiveNotFound(String),
    /// No employer incentive with this id.
    #[error("employer incentive {0} not found")]
    LinkNotFound(String),
    /// The slug is taken.
    #[error("an incentive named {0} exists already")]
    SlugTaken(String),
    /// The catalog incentive was deactivated and cannot be linked.
    #[error("incentive {0} is deactivated")]
    IncentiveInactive(String),
    /// The caller's role or employer does not allow this.
    #[error("{0}")]
    Forbidden(&'static str),
    /// Anything else: logged, answered as Internal.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<FieldViolation> for IncentiveError {
    fn from(v: FieldViolation) -> Self {
        Self::Invalid(vec![v])
    }
}

impl From<Vec<FieldViolation>> for IncentiveError {
    fn from(v: Vec<FieldViolation>) -> Self {
        Self::Invalid(v)
    }
}

impl From<IncentiveError> for Status {
    fn from(err: IncentiveError) -> Self {
        match err {
            IncentiveError::Invalid(violations) => {
                error::invalid_argument("INVALID_ARGUMENT", &violations)
            }
            IncentiveError::IncentiveNotFound(id) => error::status(
                Code::NotFound,
                "INCENTIVE_NOT_FOUND",
                format!("incentive {id} not found"),
            ),
            IncentiveError::LinkNotFound(id) => error::status(
                Code::NotFound,
                "EMPLOYER_INCENTIVE_NOT_FOUND",
                format!("employer incentive {id} not found"),
            ),
            IncentiveError::SlugTaken(slug) => error::status(
                Code::AlreadyExists,
                "INCENTIVE_SLUG_TAKEN",
                format!("an incentive named {slug} exists already"),
            ),
            IncentiveError::IncentiveInactive(id) => error::status(
                Code::FailedPrecondition,
                "INCENTIVE_INACTIVE",
                format!("incentive {id} is deactivated and cannot be linked"),
            ),
            IncentiveError::Forbidden(why) => {
                error::status(Code::PermissionDenied, "PERMISSION_DENIED", why)
            }
            IncentiveError::Unexpected(err) => error::internal(&err),
        }
    }
}
