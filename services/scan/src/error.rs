//! Errors of the scan service and their one mapping to `tonic::Status`.

use ewpm_kit::error::{self, FieldViolation};
use tonic::{Code, Status};

/// What went wrong, for the caller.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The request has bad fields.
    #[error("invalid request")]
    Invalid(Vec<FieldViolation>),
    /// No state for this parcel (never scanned, or not projected yet).
    #[error("parcel {id} not found")]
    ParcelNotFound {
        /// The parcel asked for.
        id: i64,
    },
    /// Anything else: logged, answered as Internal.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<FieldViolation> for ScanError {
    fn from(v: FieldViolation) -> Self {
        Self::Invalid(vec![v])
    }
}

impl From<Vec<FieldViolation>> for ScanError {
    fn from(v: Vec<FieldViolation>) -> Self {
        Self::Invalid(v)
    }
}

impl From<ScanError> for Status {
    fn from(err: ScanError) -> Self {
        match err {
            ScanError::Invalid(violations) => {
                error::invalid_argument("INVALID_ARGUMENT", &violations)
            }
            ScanError::ParcelNotFound { id } => {
                error::status(Code::NotFound, "PARCEL_NOT_FOUND", format!("parcel {id} not found"))
            }
            ScanError::Unexpected(err) => error::internal(&err),
        }
    }
}
