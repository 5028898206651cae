//! `application/problem+json` (RFC 9457) answers, mapped from gRPC statuses.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use tonic::Code;
use tonic_types::StatusExt;
use utoipa::ToSchema;

/// An error answer.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    /// A URI naming the problem kind: `urn:ewpm:problem:<reason>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short, human-readable summary of the kind (the HTTP reason phrase).
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong in this case.
    pub detail: String,
    /// Stable machine-readable reason (the gRPC `ErrorInfo.reason`), e.g. `CHALLENGE_NOT_FOUND`.
    pub reason: String,
    /// The bad fields, for 400 answers (camelCase JSON paths), and the field a 409 is about
    /// (a rejected event's `eventId`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Seconds after which a retry may succeed (429 and 503): the `Retry-After` header.
    #[serde(skip)]
    #[schema(ignore)]
    pub retry_after_secs: Option<u64>,
}

/// One bad field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// The field's JSON path, e.g. `endTime` or `goal.target`.
    pub field: String,
    /// What is wrong with it.
    pub description: String,
}

impl Problem {
    /// A problem with `status`, `reason` and `detail`.
    pub fn new(status: StatusCode, reason: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("urn:ewpm:problem:{}", reason.to_ascii_lowercase().replace('_', "-")),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail: detail.into(),
            reason: reason.to_string(),
            errors: Vec::new(),
            retry_after_secs: None,
        }
    }

    /// The same, telling the client to retry after `delay` (whole seconds, at least 1).
    pub fn retry_after(mut self, delay: std::time::Duration) -> Self {
        self.retry_after_secs = Some(delay.as_secs_f64().ceil().max(1.0) as u64);
        self
    }

    /// 400 for a request body or query the edge itself cannot read.
    pub fn bad_request(field: &str, description: impl Into<String>) -> Self {
        let description = description.into();
        let mut p = Self::new(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            format!("{field} {description}"),
        );
        p.errors.push(FieldError { field: field.to_string(), description });
        p
    }

    /// 400 naming every field in `errors` (all of a body's bad fields at once).
    pub fn invalid(errors: Vec<FieldError>) -> Self {
        let detail =
            errors.iter().map(|e| format!("{} {}", e.field, e.description)).collect::<Vec<_>>();
        let mut p = Self::new(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", detail.join("; "));
        p.errors = errors;
        p
    }

    /// The problem for a gRPC status from a service. `strip` is a field-path prefix that
    /// the REST shape does not have (`challenge.` for an update whose body is the challenge).
    pub fn from_status(status: &tonic::Status, strip: &str) -> Self {
        Self::from_status_with(status, |field| {
            camel_path(field.strip_prefix(strip).unwrap_or(field))
        })
    }

    /// As [`Problem::from_status`], naming each violated field `rename(field)`: for a route
    /// whose JSON paths are not just the proto paths in camelCase (a single-event body is
    /// `events[0]` of the request; free-form keys under it keep their spelling).
    pub fn from_status_with(status: &tonic::Status, rename: impl Fn(&str) -> String) -> Self {
        // A call the transport broke (the upstream closed the connection, e.g. dropped at its
        // shutdown, or reset it) never reached an answer: the upstream is unavailable, not
        // failing. tonic reports those as Unknown/Internal with the transport error as source
        // and no `grpc-status` from a server.
        let code = match status.code() {
            Code::Unknown | Code::Internal
                if std::error::Error::source(status).is_some()
                    && status.metadata().get("grpc-status").is_none() =>
            {
                Code::Unavailable
            }
            code => code,
        };
        let http = http_status(code);
        let details = status.get_error_details();
        let reason = details
            .error_info()
            .map(|i| i.reason.clone())
            .unwrap_or_else(|| default_reason(code).to_string());
        let detail = if code == Code::Unavailable && code != status.code() {
            "the upstream service closed the call; retry".to_string()
        } else if code == Code::Internal || code == Code::Unknown {
            "internal error".to_string()
        } else {
            status.message().to_string()
        };
        let mut p = Self::new(http, &reason, detail);
        if let Some(bad) = details.bad_request() {
            p.errors = bad
                .field_violations
                .iter()
                .map(|v| FieldError { field: rename(&v.field), description: v.description.clone() })
                .collect();
            p.detail = p
                .errors
                .iter()
                .map(|e| format!("{} {}", e.field, e.description))
                .collect::<Vec<_>>()
                .join("; ");
        }
        if matches!(code, Code::ResourceExhausted | Code::Unavailable) {
            let delay = details
                .retry_info()
                .and_then(|r| r.retry_delay)
                .unwrap_or(std::time::Duration::from_secs(1));
            p = p.retry_after(delay);
        }
        p
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = self.retry_after_secs;
        let mut response = (status, axum::Json(self)).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(secs) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// A handler's error: a boxed [`Problem`] (kept small so `Result`s stay cheap).
#[derive(Debug)]
pub struct ApiError(pub Box<Problem>);

/// What handlers return.
pub type ApiResult<T = Response> = Result<T, ApiError>;

impl ApiError {
    /// From a service's status, stripping the field prefix `strip` (see [`Problem::from_status`]).
    pub fn from_status(status: &tonic::Status, strip: &str) -> Self {
        Self(Box::new(Problem::from_status(status, strip)))
    }
}

impl From<Problem> for ApiError {
    fn from(p: Problem) -> Self {
        Self(Box::new(p))
    }
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        Self::from_status(&status, "")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.0.into_response()
    }
}

/// The HTTP status for a gRPC code (DESIGN.md's table, completed).
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        // 412 is for conditional request headers; a state the request does not fit is 422.
        Code::FailedPrecondition => StatusCode::UNPROCESSABLE_ENTITY,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Cancelled => StatusCode::from_u16(499).expect("499 is a valid status"),
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Internal | Code::Unknown | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn default_reason(code: Code) -> &'static str {
    match code {
        Code::Unavailable => "UPSTREAM_UNAVAILABLE",
        Code::DeadlineExceeded => "UPSTREAM_TIMEOUT",
        Code::Unauthenticated => "UNAUTHENTICATED",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::NotFound => "NOT_FOUND",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        _ => "INTERNAL",
    }
}

/// `goal.unit_name` → `goal.unitName`: proto field paths as the REST JSON names them.
pub fn camel_path(path: &str) -> String {
    path.split('.')
        .map(|segment| {
            let mut out = String::with_capacity(segment.len());
            let mut upper = false;
            for c in segment.chars() {
                if c == '_' {
                    upper = true;
                } else if upper {
                    out.extend(c.to_uppercase());
                    upper = false;
                } else {
                    out.push(c);
                }
            }
            out
        })
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proto_paths_become_camel_case() {
        assert_eq!(camel_path("end_time"), "endTime");
        assert_eq!(camel_path("goal.target"), "goal.target");
        assert_eq!(camel_path("challenge.employer_id"), "challenge.employerId");
    }

    #[test]
    fn a_status_with_violations_becomes_a_400_naming_the_fields() {
        let status = ewpm_kit::error::invalid_argument(
            "INVALID_ARGUMENT",
            &[ewpm_kit::error::FieldViolation::new(
                "challenge.end_time",
                "must be after the start time",
            )],
        );
        let p = Problem::from_status(&status, "challenge.");
        assert_eq!(p.status, 400);
        assert_eq!(p.reason, "INVALID_ARGUMENT");
        assert_eq!(
            p.errors,
            vec![FieldError {
                field: "endTime".into(),
                description: "must be after the start time".into()
            }]
        );
    }

    #[test]
    fn internal_errors_never_leak_their_message() {
        let p = Problem::from_status(&tonic::Status::internal("connection string xyz"), "");
        assert_eq!((p.status, p.detail.as_str()), (500, "internal error"));
    }

    #[test]
    fn every_design_code_maps_to_its_http_status() {
        let table = [
            (Code::InvalidArgument, 400),
            (Code::Unauthenticated, 401),
            (Code::PermissionDenied, 403),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::ResourceExhausted, 429),
            (Code::Unavailable, 503),
            (Code::DeadlineExceeded, 504),
        ];
        for (code, http) in table {
            assert_eq!(http_status(code).as_u16(), http, "{code:?}");
        }
    }

    #[test]
    fn a_call_the_transport_broke_is_503_with_retry_after() {
        // What tonic returns when the upstream drops the connection mid-call (its shutdown).
        let broken = tonic::Status::from_error(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset by peer",
        )));
        let p = Problem::from_status(&broken, "");
        assert_eq!(
            (p.status, p.reason.as_str(), p.retry_after_secs),
            (503, "UPSTREAM_UNAVAILABLE", Some(1))
        );
        // A server's own INTERNAL answer stays a 500.
        assert_eq!(Problem::from_status(&tonic::Status::internal("boom"), "").status, 500);
    }

    #[test]
    fn retry_info_becomes_retry_after_on_429_and_503() {
        let limited = ewpm_kit::error::retry_after(
            Code::ResourceExhausted,
            "RATE_LIMITED",
            "slow down",
            std::time::Duration::from_millis(1500),
        );
        let response = Problem::from_status(&limited, "").into_response();
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        let down = Problem::from_status(&tonic::Status::unavailable("down"), "").into_response();
        assert_eq!(
            (down.status().as_u16(), &down.headers()[header::RETRY_AFTER]),
            (503, &HeaderValue::from(1))
        );
        let bad = Problem::from_status(&tonic::Status::invalid_argument("x"), "").into_response();
        assert!(bad.headers().get(header::RETRY_AFTER).is_none());
    }
}
