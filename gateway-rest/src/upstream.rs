//! Calls to the services: forward the caller's token untouched, propagate the trace.

use std::time::Duration;

use axum::http::HeaderMap;
use tonic::metadata::MetadataValue;

/// A gRPC request carrying the HTTP request's `authorization` and `traceparent` headers.
pub fn request<T>(headers: &HeaderMap, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(Duration::from_secs(30));
    for name in ["authorization", "traceparent"] {
        if let Some(value) =
            headers.get(name).and_then(|v| MetadataValue::try_from(v.as_bytes()).ok())
        {
            request.metadata_mut().insert(name, value);
        }
    }
    request
}

/// A lazily connecting channel to `uri`: the edge starts even when a service is not up yet,
/// and answers 503 for it until it is.
pub use ewpm_kit::client::channel;
