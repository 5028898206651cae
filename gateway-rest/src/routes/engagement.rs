//! REST routes of fan engagement: the seed note's event ingest (`POST /api/events`) and
//! match metrics (`GET /api/matches/{matchId}/metrics`), a batch ingest, the full live
//! snapshot and its Server-Sent Events stream, the stored events, and the admins' replay.
//!
//! Every route forwards the caller's token to the engagement service, which decides who may
//! do what (ingest tokens ingest, readers read, admins replay) and checks every value. The
//! edge reads shapes and maps them: JSON ↔ proto, the service's field paths into the routes'
//! JSON names, and an event's outcome into an HTTP status (202 accepted, 200 duplicate, 409
//! rejected).
//!
//! # Layout
//! - this file: the handlers and their OpenAPI documentation.
//! - [`input`]: request bodies → `IngestEventsRequest` (every bad field named at once);
//!   service field paths → JSON paths; `google.protobuf.Struct` ↔ JSON.
//! - [`shapes`]: the JSON shapes and their mapping from proto; the one snapshot builder the
//!   metrics, live, stream and replay routes share.

use axum::{
    Extension, Json,
    body::Bytes,
    extract::{Path, Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::IntoResponse,
};
use ewpm_kit::auth::Caller;
use ewpm_proto::engagement::v1 as pb;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::{
    AppState,
    challenges::parse_page_size,
    problem::{ApiError, ApiResult, FieldError, Problem},
    upstream,
};

pub mod input;
pub mod shapes;

pub use shapes::*;

/// Ingests one match event (the seed's route).
#[utoipa::path(
    post, path = "/api/events", tag = "engagement",
    request_body = EventBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "The client event id when the body has no `eventId`")),
    responses(
        (status = 202, description = "Accepted: queued, stored and counted within moments; `Location` is the stored event", body = IngestedDto,
            headers(("Location" = String, description = "/api/matches/{matchId}/events/{eventId}"))),
        (status = 200, description = "A retry of an event accepted before (same client event id, same body): `duplicate: true`, nothing queued again", body = IngestedDto,
            headers(("Location" = String, description = "/api/matches/{matchId}/events/{eventId}"))),
        (status = 400, description = "Bad fields, all named at once (`eventType`, `metadata.foo`), or a body that is no JSON object", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Rejected: the client event id was used before for another body (`EVENT_ID_CONFLICT`, field `eventId`), or the match has its maximum of event types and this is a new one (`TOO_MANY_EVENT_TYPES`, field `eventType`)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn ingest(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let (match_id, request) = input::single_request(&body, upstream::idempotency_key(&headers))?;
    let r = state
        .engagement
        .clone()
        .ingest_events(upstream::request(&headers, request))
        .await
        .map_err(|s| Problem::from_status_with(&s, |f| input::json_field(f, true)))?;
    let Some(result) = r.into_inner().results.into_iter().next() else {
        return Err(bad_upstream("IngestEvents answered no result for the event"));
    };
    let pb::EventResult { index: _, outcome, event_id, reason, field, description } = result;
    let location = || {
        let path = format!("/api/matches/{}/events/{}", segment(&match_id), segment(&event_id));
        HeaderValue::from_str(&path).map(|v| [(header::LOCATION, v)])
    };
    match pb::EventOutcome::try_from(outcome) {
        Ok(pb::EventOutcome::Accepted) => {
            let location = location().map_err(|_| bad_upstream("the event id is not a URL"))?;
            let dto = IngestedDto { event_id, duplicate: None };
            Ok((StatusCode::ACCEPTED, location, Json(dto)).into_response())
        }
        Ok(pb::EventOutcome::Duplicate) => {
            let location = location().map_err(|_| bad_upstream("the event id is not a URL"))?;
            let dto = IngestedDto { event_id, duplicate: Some(true) };
            Ok((StatusCode::OK, location, Json(dto)).into_response())
        }
        Ok(pb::EventOutcome::Rejected) => {
            let reason = if reason.is_empty() { "EVENT_REJECTED".to_string() } else { reason };
            let description =
                if description.is_empty() { "the event was rejected".into() } else { description };
            let mut p = Problem::new(StatusCode::CONFLICT, &reason, description.clone());
            if !field.is_empty() {
                p.errors.push(FieldError { field: input::json_field(&field, true), description });
            }
            Err(p.into())
        }
        _ => Err(bad_upstream("IngestEvents answered an unknown outcome")),
    }
}

/// Ingests a batch of events: each gets its own result.
#[utoipa::path(
    post, path = "/api/events/batch", tag = "engagement",
    request_body = BatchBody,
    responses(
        (status = 202, description = "At least one event was accepted; every event's result in order", body = BatchAnswerDto),
        (status = 200, description = "No event was accepted (all duplicates or rejected); every event's result in order", body = BatchAnswerDto),
        (status = 400, description = "Bad fields, all named at once (`events[3].eventType`); nothing was stored", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn ingest_batch(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let request = input::batch_request(&body)?;
    let r = state
        .engagement
        .clone()
        .ingest_events(upstream::request(&headers, request))
        .await
        .map_err(|s| Problem::from_status_with(&s, |f| input::json_field(f, false)))?;
    let answer = batch_dto(r.into_inner());
    let status = if answer.accepted > 0 { StatusCode::ACCEPTED } else { StatusCode::OK };
    Ok((status, Json(answer)).into_response())
}

/// A match's metrics in the seed note's shape.
#[utoipa::path(
    get, path = "/api/matches/{matchId}/metrics", tag = "engagement",
    params(("matchId" = String, Path, description = "The match (the feed's own id)")),
    responses(
        (status = 200, description = "The metrics; a match nobody sent events for has zero events", body = MatchMetricsDto),
        (status = 400, description = "A malformed match id", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn metrics(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(match_id): Path<String>,
) -> ApiResult<Json<MatchMetricsDto>> {
    Ok(Json(seed_dto(snapshot(&state, &headers, match_id).await?)))
}

/// Everything the service knows of a match's metrics, once.
#[utoipa::path(
    get, path = "/api/matches/{matchId}/metrics/live", tag = "engagement",
    params(("matchId" = String, Path, description = "The match (the feed's own id)")),
    responses(
        (status = 200, description = "The full snapshot: the seed's keys plus bucketing, minutes, watermark and late events", body = LiveMetricsDto),
        (status = 400, description = "A malformed match id", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn live(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(match_id): Path<String>,
) -> ApiResult<Json<LiveMetricsDto>> {
    Ok(Json(snapshot(&state, &headers, match_id).await?))
}

async fn snapshot(
    state: &AppState,
    headers: &HeaderMap,
    match_id: String,
) -> ApiResult<LiveMetricsDto> {
    let request = pb::GetMatchMetricsRequest { match_id: match_id.clone() };
    let r = state.engagement.clone().get_match_metrics(upstream::request(headers, request)).await?;
    Ok(live_dto(r.into_inner().metrics, &match_id))
}

/// A match's metrics as Server-Sent Events: an `event: metrics` with the full snapshot at
/// once, then after every change (coalesced: a slow reader gets the latest), with the
/// corrections late events made. Comments keep idle connections alive.
#[utoipa::path(
    get, path = "/api/matches/{matchId}/stream", tag = "engagement",
    params(("matchId" = String, Path, description = "The match (the feed's own id)")),
    responses(
        (status = 200, description = "text/event-stream of `metrics` events (MetricsPushDto JSON); a failure is an `error` event with problem+json", content_type = "text/event-stream", body = MetricsPushDto),
        (status = 400, description = "A malformed match id", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn stream(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Path(match_id): Path<String>,
) -> ApiResult {
    let slot = state.streams.acquire(&caller)?;
    let request =
        upstream::stream_request(&headers, pb::WatchMatchRequest { match_id: match_id.clone() });
    let pushes = state.engagement.clone().watch_match(request).await?.into_inner();
    Ok(upstream::sse(slot, pushes, "metrics", move |push| Some(push_dto(push, &match_id))))
}

/// Query of `GET /api/matches/{matchId}/events`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// Events per page: default 50, at most 500.
    pub page_size: Option<String>,
    /// `nextPageToken` of the previous page.
    pub page_token: Option<String>,
    /// Only events of this type.
    pub event_type: Option<String>,
}

/// A match's stored events, oldest first by event time.
#[utoipa::path(
    get, path = "/api/matches/{matchId}/events", tag = "engagement",
    params(("matchId" = String, Path, description = "The match (the feed's own id)"), EventQuery),
    responses(
        (status = 200, description = "One page", body = MatchEventPage),
        (status = 400, description = "A bad page size or token, or a malformed match id or event type", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(match_id): Path<String>,
    Query(q): Query<EventQuery>,
) -> ApiResult<Json<MatchEventPage>> {
    let EventQuery { page_size, page_token, event_type } = q;
    let request = pb::ListMatchEventsRequest {
        match_id,
        page_size: parse_page_size(page_size.as_deref(), "pageSize")?,
        page_token: page_token.unwrap_or_default(),
        event_type: event_type.unwrap_or_default(),
    };
    let r =
        state.engagement.clone().list_match_events(upstream::request(&headers, request)).await?;
    let pb::ListMatchEventsResponse { events, next_page_token } = r.into_inner();
    Ok(Json(MatchEventPage {
        events: events.into_iter().map(event_dto).collect(),
        next_page_token,
    }))
}

/// One stored event.
#[utoipa::path(
    get, path = "/api/matches/{matchId}/events/{eventId}", tag = "engagement",
    params(
        ("matchId" = String, Path, description = "The match (the feed's own id)"),
        ("eventId" = String, Path, description = "The event's id, as the ingest answered it"),
    ),
    responses(
        (status = 200, description = "The event", body = MatchEventDto),
        (status = 404, description = "No such event in this match, or accepted but not stored yet (`EVENT_NOT_FOUND`)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn event(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((match_id, event_id)): Path<(String, String)>,
) -> ApiResult<Json<MatchEventDto>> {
    let request = pb::GetMatchEventRequest { match_id, event_id };
    let r = state.engagement.clone().get_match_event(upstream::request(&headers, request)).await?;
    let Some(event) = r.into_inner().event else {
        return Err(bad_upstream("GetMatchEvent answered no event"));
    };
    Ok(Json(event_dto(event)))
}

/// Recomputes a match's metrics from its stored events and replaces the live counters
/// (admins only).
#[utoipa::path(
    post, path = "/api/matches/{matchId}/replay", tag = "engagement",
    params(("matchId" = String, Path, description = "The match (the feed's own id)")),
    responses(
        (status = 200, description = "The recomputed metrics and how many stored events they came from", body = ReplayDto),
        (status = 400, description = "A malformed match id", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn replay(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(match_id): Path<String>,
) -> ApiResult<Json<ReplayDto>> {
    let request = pb::ReplayMatchRequest { match_id: match_id.clone() };
    let r = state.engagement.clone().replay_match(upstream::request(&headers, request)).await?;
    let pb::ReplayMatchResponse { metrics, events_replayed } = r.into_inner();
    Ok(Json(ReplayDto { events_replayed, metrics: live_dto(metrics, &match_id) }))
}

/// 502: the service answered something the contract rules out.
fn bad_upstream(detail: &str) -> ApiError {
    Problem::new(StatusCode::BAD_GATEWAY, "UPSTREAM_BAD_ANSWER", detail).into()
}

/// `raw` as one URL path segment: every byte but the unreserved ones (`A-Z a-z 0-9 - . _ ~`)
/// percent-encoded.
pub(crate) fn segment(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_location_segment_is_percent_encoded() {
        assert_eq!(segment("match_123"), "match_123");
        assert_eq!(segment("cup:final.2026"), "cup%3Afinal.2026");
        assert_eq!(segment("a b/ü"), "a%20b%2F%C3%BC");
    }
}
