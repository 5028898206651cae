//! The JSON shapes of the engagement routes and their mapping from proto. Every proto
//! message is destructured field by field, so a field added to the contract breaks this build
//! until the edge decides what to do with it.
//!
//! One builder, [`live_dto`], turns `MatchMetrics` into the full snapshot: the live route,
//! the `metrics` SSE events and the replay answer use it as it is, and the seed's metrics
//! route ([`seed_dto`]) is its projection onto the seed note's keys.

use std::collections::BTreeMap;

use ewpm_proto::engagement::v1 as pb;
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::rfc3339 as time;

// ---------------------------------------------------------------------------------------
// Request bodies (documentation and parse target of `input`)

/// One event as a client sends it.
#[derive(Debug, Clone, Default, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewEventDto {
    /// The match: 1 to 64 of `A-Z a-z 0-9 _ - . :` (the feed's own id, e.g. `match_123`).
    /// Absent reads as empty, which the service refuses naming it.
    #[schema(example = "match_123")]
    pub match_id: String,
    /// What happened: 1 to 64 of `a-z 0-9 _` (`goal`, `yellow_card`, `cheer`). Absent reads
    /// as empty, which the service refuses naming it.
    #[schema(example = "goal")]
    pub event_type: String,
    /// The team, up to 64 characters.
    pub team_id: Option<String>,
    /// The player, up to 64 characters.
    pub player_id: Option<String>,
    /// Free-form details: a JSON object (at most 32 keys, 4 deep, 4 KiB). `minute` (0 to 200)
    /// is the match clock: peaks are then bucketed by match minute.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    /// Client event id (1 to 128 of `A-Z a-z 0-9 _ - . :`): a retry with the same id and
    /// body is one event (answered 200, `duplicate`); the same id with another body is 409.
    pub event_id: Option<String>,
    /// When it happened by the client's clock, RFC 3339; default: when it arrived.
    #[schema(format = DateTime)]
    pub occurred_at: Option<String>,
}

/// Body of `POST /api/events`: one event.
#[derive(Debug, Clone, Default, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventBody {
    /// The event.
    #[serde(flatten)]
    pub event: NewEventDto,
    /// When the client sent it by its own clock, RFC 3339: the service corrects the event's
    /// time by the client's clock offset.
    #[schema(format = DateTime)]
    pub sent_at: Option<String>,
}

/// Body of `POST /api/events/batch`.
#[derive(Debug, Clone, Default, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchBody {
    /// 1 to 1,000 events.
    pub events: Vec<NewEventDto>,
    /// When the client sent the batch by its own clock, RFC 3339 (clock-skew correction).
    #[schema(format = DateTime)]
    pub sent_at: Option<String>,
    /// A past match's log: events keep their own time, are never late, not rate limited.
    pub backfill: Option<bool>,
}

// ---------------------------------------------------------------------------------------
// Ingest answers

/// Answer of `POST /api/events`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngestedDto {
    /// The event's id (UUID; a client event id always maps to the same one).
    pub event_id: String,
    /// `true` when the event was accepted before (a retry); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate: Option<bool>,
}

/// What became of one event of a batch.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventResultDto {
    /// The event's position in `events` (0-based).
    pub index: i32,
    /// `accepted` (queued), `duplicate` (accepted before: not queued again) or `rejected`.
    pub outcome: String,
    /// The event's id; `null` when rejected.
    pub event_id: Option<String>,
    /// Why it was rejected: `EVENT_ID_CONFLICT` or `TOO_MANY_EVENT_TYPES`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The field the rejection is about (`events[2].eventId`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// A sentence for people.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Answer of `POST /api/events/batch`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchAnswerDto {
    /// One per event, in the order sent.
    pub results: Vec<EventResultDto>,
    /// How many were accepted.
    pub accepted: i32,
    /// How many were duplicates.
    pub duplicates: i32,
    /// How many were rejected.
    pub rejected: i32,
    /// The clock offset applied to the batch's event times, in milliseconds.
    pub clock_offset_ms: i64,
}

/// The REST outcome name of an event result.
pub(crate) fn outcome_name(outcome: i32) -> &'static str {
    match pb::EventOutcome::try_from(outcome) {
        Ok(pb::EventOutcome::Accepted) => "accepted",
        Ok(pb::EventOutcome::Duplicate) => "duplicate",
        Ok(pb::EventOutcome::Rejected) => "rejected",
        _ => "unspecified",
    }
}

/// The batch answer, field paths in JSON naming (`events[2].eventId`).
pub fn batch_dto(r: pb::IngestEventsResponse) -> BatchAnswerDto {
    let pb::IngestEventsResponse { results, accepted, duplicates, rejected, clock_offset_ms } = r;
    let results = results
        .into_iter()
        .map(|r| {
            let pb::EventResult { index, outcome, event_id, reason, field, description } = r;
            let some = |s: String| (!s.is_empty()).then_some(s);
            EventResultDto {
                index,
                outcome: outcome_name(outcome).to_string(),
                event_id: some(event_id),
                reason: some(reason),
                field: some(super::input::json_field(&field, false)),
                description: some(description),
            }
        })
        .collect();
    BatchAnswerDto { results, accepted, duplicates, rejected, clock_offset_ms }
}

// ---------------------------------------------------------------------------------------
// Metrics

/// The seed note's metrics of a match, exactly its keys.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MatchMetricsDto {
    /// The match.
    pub match_id: String,
    /// Events stored and counted.
    pub total_events: i64,
    /// Events by type.
    pub events_by_type: BTreeMap<String, i64>,
    /// The busiest minutes (up to 5, busiest first).
    pub peak_engagement_periods: Vec<PeakPeriodDto>,
    /// Ingest latency (acceptance to durable storage) percentiles, in milliseconds.
    pub response_time_percentiles: PercentilesDto,
}

/// One of the busiest minutes, as the seed note has it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PeakPeriodDto {
    /// The minute's start, RFC 3339 UTC (for a match-clock bucket: its first event's time).
    #[schema(example = "2025-12-24T14:35:00Z")]
    pub timestamp: String,
    /// Events in it.
    pub event_count: i64,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct PercentilesDto {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
}

/// Everything the service knows of a match's metrics: the seed's keys plus bucketing, the
/// per-minute counts, the watermark and late events.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LiveMetricsDto {
    /// The match.
    pub match_id: String,
    /// Events stored and counted.
    pub total_events: i64,
    /// Events by type.
    pub events_by_type: BTreeMap<String, i64>,
    /// The busiest minutes (up to 5, busiest first; ties: earlier first).
    pub peak_engagement_periods: Vec<LivePeakDto>,
    /// Ingest latency percentiles, in milliseconds.
    pub response_time_percentiles: PercentilesDto,
    /// How peaks are bucketed: `wall_clock` or `match_clock` (`metadata.minute`).
    pub bucketing: String,
    /// Events per wall-clock minute (UTC), oldest first, the last 24 hours of event time.
    pub minutes: Vec<MinuteDto>,
    /// How far the match's events are known.
    pub watermark: WatermarkDto,
    /// Events that arrived after their minute was final.
    pub late_events: i64,
}

/// One of the busiest minutes.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LivePeakDto {
    /// The minute's start, RFC 3339 UTC (for a match-clock bucket: its first event's time).
    pub timestamp: String,
    /// Events in it.
    pub event_count: i64,
    /// The match minute, when bucketed by match clock; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub match_minute: Option<i32>,
}

/// Events in one wall-clock minute.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MinuteDto {
    /// The minute's start, RFC 3339 UTC.
    pub start: String,
    /// Events in it (late ones included).
    pub count: i64,
    /// Whether the minute is final (only late events can still change it).
    #[serde(rename = "final")]
    pub is_final: bool,
    /// Late events counted in it.
    pub late_events: i64,
}

/// How far a match's events are known.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WatermarkDto {
    /// The newest event time counted, RFC 3339; `null` before the first event.
    pub max_event_time: Option<String>,
    /// Minutes that ended before this time are final, RFC 3339; `null` before the first event.
    pub final_before: Option<String>,
    /// How long the newest counted event took from acceptance to storage, in milliseconds.
    pub ingest_lag_ms: i64,
}

/// A final minute changed by late events since the previous push.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CorrectionDto {
    /// The minute's start, RFC 3339 UTC.
    pub minute: String,
    /// Its count in the previous push.
    pub previous_count: i64,
    /// Its count now.
    pub count: i64,
}

/// Data of an `event: metrics` of `GET /api/matches/{matchId}/stream`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricsPushDto {
    /// The metrics now (the keys of the live snapshot).
    #[serde(flatten)]
    pub metrics: LiveMetricsDto,
    /// Final minutes whose count changed since the previous push (late events).
    pub corrections: Vec<CorrectionDto>,
}

/// Answer of `POST /api/matches/{matchId}/replay`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplayDto {
    /// Stored events the recomputation read.
    pub events_replayed: i64,
    /// The metrics recomputed from them.
    pub metrics: LiveMetricsDto,
}

/// A set time as RFC 3339, an unset one as `null`.
fn maybe_time(ts: Option<prost_types::Timestamp>) -> Option<String> {
    ts.map(|t| time(Some(t)))
}

/// The full snapshot of `m`; `match_id` names the match when the answer has none (a service
/// that sent no metrics at all).
pub fn live_dto(m: Option<pb::MatchMetrics>, match_id: &str) -> LiveMetricsDto {
    let pb::MatchMetrics {
        match_id: answered,
        total_events,
        events_by_type,
        peak_engagement_periods,
        response_time_percentiles,
        bucketing,
        minutes,
        watermark,
        late_events,
    } = m.unwrap_or_default();
    let pb::ResponseTimePercentiles { p50, p95, p99 } =
        response_time_percentiles.unwrap_or_default();
    let pb::Watermark { max_event_time, final_before, ingest_lag_ms } =
        watermark.unwrap_or_default();
    LiveMetricsDto {
        match_id: if answered.is_empty() { match_id.to_string() } else { answered },
        total_events,
        events_by_type: events_by_type.into_iter().collect(),
        peak_engagement_periods: peak_engagement_periods
            .into_iter()
            .map(|p| {
                let pb::PeakPeriod { timestamp, event_count, match_minute } = p;
                LivePeakDto { timestamp: time(timestamp), event_count, match_minute }
            })
            .collect(),
        response_time_percentiles: PercentilesDto { p50, p95, p99 },
        bucketing: match pb::Bucketing::try_from(bucketing) {
            Ok(pb::Bucketing::WallClock) => "wall_clock",
            Ok(pb::Bucketing::MatchClock) => "match_clock",
            _ => "unspecified",
        }
        .to_string(),
        minutes: minutes
            .into_iter()
            .map(|m| {
                let pb::MinuteCount { start, count, r#final, late_events } = m;
                MinuteDto { start: time(start), count, is_final: r#final, late_events }
            })
            .collect(),
        watermark: WatermarkDto {
            max_event_time: maybe_time(max_event_time),
            final_before: maybe_time(final_before),
            ingest_lag_ms,
        },
        late_events,
    }
}

/// The seed note's view of a snapshot: its keys and no others.
pub fn seed_dto(live: LiveMetricsDto) -> MatchMetricsDto {
    let LiveMetricsDto {
        match_id,
        total_events,
        events_by_type,
        peak_engagement_periods,
        response_time_percentiles,
        bucketing: _,
        minutes: _,
        watermark: _,
        late_events: _,
    } = live;
    MatchMetricsDto {
        match_id,
        total_events,
        events_by_type,
        peak_engagement_periods: peak_engagement_periods
            .into_iter()
            .map(|p| PeakPeriodDto { timestamp: p.timestamp, event_count: p.event_count })
            .collect(),
        response_time_percentiles,
    }
}

/// One push of WatchMatch.
pub fn push_dto(r: pb::WatchMatchResponse, match_id: &str) -> MetricsPushDto {
    let pb::WatchMatchResponse { metrics, corrections } = r;
    MetricsPushDto {
        metrics: live_dto(metrics, match_id),
        corrections: corrections
            .into_iter()
            .map(|c| {
                let pb::Correction { minute, previous_count, count } = c;
                CorrectionDto { minute: time(minute), previous_count, count }
            })
            .collect(),
    }
}

// ---------------------------------------------------------------------------------------
// Stored events

/// A stored event.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MatchEventDto {
    /// Its id (UUID).
    pub event_id: String,
    /// The client's event id; `null` when it sent none.
    pub client_event_id: Option<String>,
    /// The match.
    pub match_id: String,
    /// What happened.
    pub event_type: String,
    /// The team; `null` when none.
    pub team_id: Option<String>,
    /// The player; `null` when none.
    pub player_id: Option<String>,
    /// Its details (`{}` when none).
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    /// When it happened (server time: corrected for the client's clock skew), RFC 3339.
    pub occurred_at: String,
    /// When it happened by the client's clock, as sent.
    pub client_occurred_at: String,
    /// When the service accepted it.
    pub received_at: String,
    /// When it was stored.
    pub stored_at: String,
    /// Who sent it (the ingest token's subject).
    pub source: String,
    /// Whether it arrived after its minute was final (a correction).
    pub late: bool,
    /// Whether it came in a backfill.
    pub backfill: bool,
}

/// A page of a match's events.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MatchEventPage {
    /// Oldest first by event time (ties by id).
    pub events: Vec<MatchEventDto>,
    /// Pass as `pageToken` for the next page; empty on the last page.
    pub next_page_token: String,
}

/// The REST shape of a stored event.
pub fn event_dto(e: pb::MatchEvent) -> MatchEventDto {
    let pb::MatchEvent {
        event_id,
        client_event_id,
        match_id,
        event_type,
        team_id,
        player_id,
        metadata,
        occurred_at,
        client_occurred_at,
        received_at,
        stored_at,
        source,
        late,
        backfill,
    } = e;
    let some = |s: String| (!s.is_empty()).then_some(s);
    MatchEventDto {
        event_id,
        client_event_id: some(client_event_id),
        match_id,
        event_type,
        team_id: some(team_id),
        player_id: some(player_id),
        metadata: metadata.map(ewpm_kit::json::from_struct_lossy).unwrap_or_default(),
        occurred_at: time(occurred_at),
        client_occurred_at: time(client_occurred_at),
        received_at: time(received_at),
        stored_at: time(stored_at),
        source,
        late,
        backfill,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn at(seconds: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds, nanos: 0 })
    }

    #[test]
    fn metrics_without_a_watermark_or_percentiles_answer_nulls_and_zeros() {
        let live = live_dto(None, "m-1");
        assert_eq!(
            serde_json::to_value(&live).unwrap(),
            json!({
                "matchId": "m-1", "totalEvents": 0, "eventsByType": {},
                "peakEngagementPeriods": [],
                "responseTimePercentiles": {"p50": 0.0, "p95": 0.0, "p99": 0.0},
                "bucketing": "unspecified", "minutes": [],
                "watermark": {"maxEventTime": null, "finalBefore": null, "ingestLagMs": 0},
                "lateEvents": 0
            })
        );
    }

    #[test]
    fn a_stored_event_without_optional_parts_answers_nulls_and_an_empty_object() {
        let e = pb::MatchEvent {
            event_id: "e-1".into(),
            match_id: "m-1".into(),
            event_type: "cheer".into(),
            occurred_at: at(1_766_587_200),
            client_occurred_at: at(1_766_587_200),
            received_at: at(1_766_587_201),
            stored_at: at(1_766_587_202),
            source: "feed-1".into(),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(event_dto(e)).unwrap(),
            json!({
                "eventId": "e-1", "clientEventId": null, "matchId": "m-1", "eventType": "cheer",
                "teamId": null, "playerId": null, "metadata": {},
                "occurredAt": "2025-12-24T14:40:00Z", "clientOccurredAt": "2025-12-24T14:40:00Z",
                "receivedAt": "2025-12-24T14:40:01Z", "storedAt": "2025-12-24T14:40:02Z",
                "source": "feed-1", "late": false, "backfill": false
            })
        );
    }
}
