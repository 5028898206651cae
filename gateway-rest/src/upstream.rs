//! Calls to the services: forward the caller's token untouched, propagate the trace.

use std::{convert::Infallible, time::Duration};

use axum::{
    http::HeaderMap,
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures::StreamExt;
use serde::Serialize;
use tonic::metadata::MetadataValue;

use crate::problem::Problem;

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

/// As [`request`], for a server stream: it lives as long as the browser keeps it open.
pub fn stream_request<T>(headers: &HeaderMap, message: T) -> tonic::Request<T> {
    let mut request = request(headers, message);
    request.set_timeout(Duration::from_secs(24 * 3600));
    request
}

/// The `Idempotency-Key` header, for writes whose body names no key.
pub fn idempotency_key(headers: &HeaderMap) -> Option<String> {
    headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// A gRPC server stream as Server-Sent Events: each message that `dto` turns into a value is
/// an `event` with that JSON, a failure an `error` event with problem+json, and a keep-alive
/// comment goes out every 15 s. The stream holds `slot` until it ends.
pub fn sse<M, D>(
    slot: crate::StreamSlot,
    upstream: tonic::Streaming<M>,
    event: &'static str,
    mut dto: impl FnMut(M) -> Option<D> + Send + 'static,
) -> Response
where
    M: Send + 'static,
    D: Serialize,
{
    sse_events(slot, upstream.map(move |message| message.map(|m| dto(m).map(|d| (event, d)))))
}

/// As [`sse`], for a stream whose items name their own event: `Some((name, value))` is an
/// event `name` with the JSON of `value`, `None` a comment.
pub fn sse_events<D, S>(slot: crate::StreamSlot, upstream: S) -> Response
where
    D: Serialize,
    S: futures::Stream<Item = Result<Option<(&'static str, D)>, tonic::Status>> + Send + 'static,
{
    let events = upstream.map(move |message| -> Result<Event, Infallible> {
        let _held = &slot;
        Ok(match message {
            Ok(Some((event, value))) => Event::default()
                .event(event)
                .json_data(&value)
                .unwrap_or_else(|_| Event::default().comment("unserializable message")),
            Ok(None) => Event::default().comment("empty message"),
            Err(status) => Event::default()
                .event("error")
                .json_data(Problem::from_status(&status, ""))
                .unwrap_or_else(|_| Event::default().comment("stream failed")),
        })
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response()
}
