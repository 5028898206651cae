//! Error shapes shared by every service.
//!
//! Every non-Internal status carries a `google.rpc.ErrorInfo` with a stable UPPER_SNAKE
//! `reason` (domain `ewpm`); bad input also carries `google.rpc.BadRequest` field violations.
//! An unexpected error is logged with its cause chain and answered as a bare Internal, so no
//! internals reach the caller.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `ErrorInfo.domain` of every EWPM error.
pub const DOMAIN: &str = "ewpm";

/// One bad field of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// The field's path in the request, e.g. `goal.target`.
    pub field: String,
    /// What is wrong with it, phrased to follow the field name.
    pub description: String,
}

impl FieldViolation {
    /// A violation of `field`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self { field: field.into(), description: description.into() }
    }

    /// The same violation under a parent path (`goal` + `target` → `goal.target`).
    pub fn under(self, parent: &str) -> Self {
        Self { field: format!("{parent}.{}", self.field), ..self }
    }
}

impl std::fmt::Display for FieldViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.field, self.description)
    }
}

/// A status with `code`, `message` and an `ErrorInfo` carrying `reason`.
pub fn status(code: Code, reason: &str, message: impl Into<String>) -> Status {
    Status::with_error_details(code, message, ErrorDetails::with_error_info(reason, DOMAIN, []))
}

/// A status a client should retry after `retry_after`: `code` (RESOURCE_EXHAUSTED for
/// overload, UNAVAILABLE for a dependency outage) with an `ErrorInfo` carrying `reason` and a
/// `google.rpc.RetryInfo` (the REST edge turns it into `Retry-After`).
pub fn retry_after(
    code: Code,
    reason: &str,
    message: impl Into<String>,
    retry_after: std::time::Duration,
) -> Status {
    let mut details = ErrorDetails::with_error_info(reason, DOMAIN, []);
    details.set_retry_info(Some(retry_after));
    Status::with_error_details(code, message, details)
}

/// How long a status asks its caller to wait before retrying (its `RetryInfo`), if it does.
pub fn retry_delay(status: &Status) -> Option<std::time::Duration> {
    status.get_error_details().retry_info().and_then(|r| r.retry_delay)
}

/// InvalidArgument with reason `reason` and the given field violations; the message lists them.
pub fn invalid_argument(reason: &str, violations: &[FieldViolation]) -> Status {
    let message = violations.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
    let mut details = ErrorDetails::with_error_info(reason, DOMAIN, []);
    for v in violations {
        details.add_bad_request_violation(v.field.clone(), v.description.clone());
    }
    Status::with_error_details(Code::InvalidArgument, message, details)
}

/// Logs an unexpected error with its whole cause chain and returns a bare Internal.
pub fn internal(err: &anyhow::Error) -> Status {
    tracing::error!(error = format!("{err:#}"), "unexpected error");
    Status::internal("internal error")
}

/// Whether `err` comes from a store that could not be reached: a connection refused, lost
/// or shut down, a pool with no connection in time, a command that timed out. That is an
/// outage, answered UNAVAILABLE (callers retry), not a bug.
pub fn is_outage(err: &anyhow::Error) -> bool {
    use sea_orm::{DbErr, RuntimeErr, sqlx};
    err.chain().any(|cause| {
        if let Some(e) = cause.downcast_ref::<fred::error::Error>() {
            use fred::error::ErrorKind;
            return matches!(e.kind(), ErrorKind::IO | ErrorKind::Timeout | ErrorKind::Canceled);
        }
        if let Some(e) = cause.downcast_ref::<DbErr>() {
            return match e {
                DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
                DbErr::Exec(RuntimeErr::SqlxError(s)) | DbErr::Query(RuntimeErr::SqlxError(s)) => {
                    match &**s {
                        sqlx::Error::Io(_)
                        | sqlx::Error::PoolTimedOut
                        | sqlx::Error::PoolClosed
                        | sqlx::Error::WorkerCrashed => true,
                        // Class 08: connection exception; 57: operator intervention (shutdown).
                        sqlx::Error::Database(db) => {
                            db.code().is_some_and(|c| c.starts_with("08") || c.starts_with("57"))
                        }
                        _ => false,
                    }
                }
                _ => false,
            };
        }
        cause.downcast_ref::<std::io::Error>().is_some()
    })
}

/// An unexpected error as a status: UNAVAILABLE with a 1 s `RetryInfo` when a store is out
/// ([`is_outage`]), a bare Internal otherwise; logged either way.
pub fn unexpected(err: &anyhow::Error) -> Status {
    if is_outage(err) {
        tracing::warn!(error = format!("{err:#}"), "a store is unavailable");
        return retry_after(
            Code::Unavailable,
            "STORE_UNAVAILABLE",
            "a store is unavailable; retry shortly",
            std::time::Duration::from_secs(1),
        );
    }
    internal(err)
}

/// Collects field violations from several parse results and returns them all at once, so a
/// caller fixes every bad field in one round trip.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    /// An empty collection.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps the value of `result`, or records its violation and returns `None`.
    pub fn check<T>(&mut self, result: Result<T, FieldViolation>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(v) => {
                self.0.push(v);
                None
            }
        }
    }

    /// Records a violation.
    pub fn push(&mut self, violation: FieldViolation) {
        self.0.push(violation);
    }

    /// `Ok(())` when nothing was recorded, else every violation.
    pub fn finish(self) -> Result<(), Vec<FieldViolation>> {
        if self.0.is_empty() { Ok(()) } else { Err(self.0) }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn invalid_argument_carries_reason_and_every_violation() {
        let s = invalid_argument(
            "INVALID_CHALLENGE",
            &[
                FieldViolation::new("name", "must not be empty"),
                FieldViolation::new("goal.target", "must be > 0"),
            ],
        );
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(s.message(), "name must not be empty; goal.target must be > 0");
        let details = s.get_error_details();
        assert_eq!(details.error_info().unwrap().reason, "INVALID_CHALLENGE");
        let fields: Vec<_> = details
            .bad_request()
            .unwrap()
            .field_violations
            .iter()
            .map(|v| (v.field.as_str(), v.description.as_str()))
            .collect();
        assert_eq!(fields, vec![("name", "must not be empty"), ("goal.target", "must be > 0")]);
    }

    #[test]
    fn retry_after_carries_reason_and_delay() {
        let s =
            retry_after(Code::Unavailable, "QUEUE_UNAVAILABLE", "retry", Duration::from_secs(1));
        let details = s.get_error_details();
        assert_eq!(
            (s.code(), details.error_info().unwrap().reason.as_str()),
            (Code::Unavailable, "QUEUE_UNAVAILABLE")
        );
        assert_eq!(details.retry_info().unwrap().retry_delay, Some(Duration::from_secs(1)));
    }

    #[test]
    fn store_outages_are_unavailable_and_bugs_internal() {
        let refused =
            anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
                .context("read page");
        let timeout = anyhow::Error::new(fred::error::Error::new(
            fred::error::ErrorKind::Timeout,
            "Request timed out.",
        ))
        .context("apply");
        let acquire = anyhow::Error::new(sea_orm::DbErr::ConnectionAcquire(
            sea_orm::error::ConnAcquireErr::Timeout,
        ));
        for outage in [&refused, &timeout, &acquire] {
            assert!(is_outage(outage), "{outage:#}");
            assert_eq!(unexpected(outage).code(), Code::Unavailable);
            assert!(retry_delay(&unexpected(outage)).is_some());
        }
        let bug = anyhow::anyhow!("stored operator \"max\"");
        let script = anyhow::Error::new(fred::error::Error::new(
            fred::error::ErrorKind::Unknown,
            "ERR value is not an integer",
        ));
        for bug in [&bug, &script] {
            assert!(!is_outage(bug), "{bug:#}");
            assert_eq!(unexpected(bug).code(), Code::Internal);
        }
    }

    #[test]
    fn internal_hides_the_cause() {
        let s = internal(&anyhow::anyhow!("db password is hunter2"));
        assert_eq!((s.code(), s.message()), (Code::Internal, "internal error"));
    }
}
