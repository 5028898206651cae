//! `EngagementService`: request → domain call → response.

use std::{pin::Pin, sync::Arc};

use ewpm_kit::{
    auth::Caller,
    streams::{StreamSlot, StreamSlots},
    timestamp,
};
use ewpm_proto::engagement::v1::{self as pb, engagement_service_server::EngagementService};
use futures::Stream;
use prost_types::Struct;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::{
    domain::{self, Bucketing, Input, Snapshot, from_micros},
    error::EngagementError,
    service::{Engagement, Outcome},
    store::Stored,
    watch::Hub,
};

/// The gRPC face of [`Engagement`].
pub struct EngagementGrpc {
    engagement: Engagement,
    hub: Arc<Hub>,
    slots: Arc<StreamSlots>,
}

impl EngagementGrpc {
    /// Serves `engagement`, its watch streams from `hub` within `slots`.
    pub fn new(engagement: Engagement, hub: Arc<Hub>, slots: Arc<StreamSlots>) -> Self {
        Self { engagement, hub, slots }
    }
}

fn metadata_struct(json: Option<&str>) -> Option<Struct> {
    match serde_json::from_str(json?).ok()? {
        serde_json::Value::Object(map) => Some(ewpm_kit::json::to_struct(map)),
        _ => None,
    }
}

fn input(e: pb::EventInput) -> Input {
    let pb::EventInput {
        event_id,
        match_id,
        event_type,
        team_id,
        player_id,
        metadata,
        occurred_at,
    } = e;
    Input {
        event_id,
        match_id,
        event_type,
        team_id,
        player_id,
        metadata: metadata
            .map(|m| ewpm_kit::json::from_struct(m).map(serde_json::Value::Object))
            .transpose()
            .map_err(|e| e.to_string()),
        // An out-of-range timestamp is far outside every window: checked there.
        occurred_at: occurred_at
            .map(|t| timestamp::from_proto(&t).unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC)),
    }
}

/// The proto form of a stored event.
pub fn event(s: Stored) -> pb::MatchEvent {
    let Stored { event: e, stored_us, latency_bucket: _ } = s;
    pb::MatchEvent {
        event_id: e.event_id.to_string(),
        client_event_id: e.client_event_id.unwrap_or_default(),
        metadata: metadata_struct(e.metadata_json.as_deref()),
        match_id: e.match_id,
        event_type: e.event_type,
        team_id: e.team_id.unwrap_or_default(),
        player_id: e.player_id.unwrap_or_default(),
        occurred_at: Some(timestamp::to_proto(from_micros(e.occurred_us))),
        client_occurred_at: Some(timestamp::to_proto(from_micros(e.client_occurred_us))),
        received_at: Some(timestamp::to_proto(from_micros(e.received_us))),
        stored_at: Some(timestamp::to_proto(from_micros(stored_us))),
        source: e.source,
        late: e.late,
        backfill: e.backfill,
    }
}

/// The proto form of a snapshot.
pub fn metrics(s: &Snapshot) -> pb::MatchMetrics {
    let ts = |us: i64| Some(timestamp::to_proto(from_micros(us)));
    pb::MatchMetrics {
        match_id: s.match_id.clone(),
        total_events: s.total,
        events_by_type: s.by_type.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        peak_engagement_periods: s
            .peaks
            .iter()
            .map(|p| pb::PeakPeriod {
                timestamp: ts(p.start_us),
                event_count: p.count,
                match_minute: p.match_minute,
            })
            .collect(),
        response_time_percentiles: Some(pb::ResponseTimePercentiles {
            p50: s.percentiles[0],
            p95: s.percentiles[1],
            p99: s.percentiles[2],
        }),
        bucketing: match s.bucketing {
            Bucketing::WallClock => pb::Bucketing::WallClock,
            Bucketing::MatchClock => pb::Bucketing::MatchClock,
        }
        .into(),
        minutes: s
            .minutes
            .iter()
            .map(|m| pb::MinuteCount {
                start: ts(m.minute * domain::MINUTE_US),
                count: m.count,
                r#final: m.is_final,
                late_events: m.late,
            })
            .collect(),
        watermark: Some(pb::Watermark {
            max_event_time: (s.max_event_us > 0)
                .then(|| timestamp::to_proto(from_micros(s.max_event_us))),
            final_before: ts(s.final_before_us),
            ingest_lag_ms: s.ingest_lag_ms,
        }),
        late_events: s.late_events,
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchMatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl EngagementService for EngagementGrpc {
    async fn ingest_events(
        &self,
        request: Request<pb::IngestEventsRequest>,
    ) -> Result<Response<pb::IngestEventsResponse>, Status> {
        let caller = Caller::of(&request)?;
        let pb::IngestEventsRequest { events, sent_at, backfill } = request.into_inner();
        let sent_at = match sent_at {
            None => None,
            Some(t) => Some(timestamp::from_proto(&t).ok_or_else(|| {
                EngagementError::from(ewpm_kit::error::FieldViolation::new(
                    "sent_at",
                    "is not a valid timestamp",
                ))
            })?),
        };
        let inputs = events.into_iter().map(input).collect();
        let ingested = self.engagement.ingest(&caller, inputs, sent_at, backfill).await?;
        let mut response =
            pb::IngestEventsResponse { clock_offset_ms: ingested.offset_ms, ..Default::default() };
        for (i, outcome) in ingested.outcomes.into_iter().enumerate() {
            let index = i32::try_from(i).unwrap_or(i32::MAX);
            response.results.push(match outcome {
                Outcome::Accepted(id) => {
                    response.accepted += 1;
                    pb::EventResult {
                        index,
                        outcome: pb::EventOutcome::Accepted.into(),
                        event_id: id.to_string(),
                        ..Default::default()
                    }
                }
                Outcome::Duplicate(id) => {
                    response.duplicates += 1;
                    pb::EventResult {
                        index,
                        outcome: pb::EventOutcome::Duplicate.into(),
                        event_id: id.to_string(),
                        ..Default::default()
                    }
                }
                Outcome::Rejected { reason, field, description } => {
                    response.rejected += 1;
                    pb::EventResult {
                        index,
                        outcome: pb::EventOutcome::Rejected.into(),
                        event_id: String::new(),
                        reason: reason.to_string(),
                        field,
                        description,
                    }
                }
            });
        }
        Ok(Response::new(response))
    }

    async fn get_match_metrics(
        &self,
        request: Request<pb::GetMatchMetricsRequest>,
    ) -> Result<Response<pb::GetMatchMetricsResponse>, Status> {
        let caller = Caller::of(&request)?;
        let pb::GetMatchMetricsRequest { match_id } = request.into_inner();
        let s = self.engagement.metrics(&caller, &match_id).await?;
        Ok(Response::new(pb::GetMatchMetricsResponse { metrics: Some(metrics(&s)) }))
    }

    async fn list_match_events(
        &self,
        request: Request<pb::ListMatchEventsRequest>,
    ) -> Result<Response<pb::ListMatchEventsResponse>, Status> {
        let caller = Caller::of(&request)?;
        let pb::ListMatchEventsRequest { match_id, page_size, page_token, event_type } =
            request.into_inner();
        let page =
            self.engagement.list(&caller, &match_id, &event_type, page_size, &page_token).await?;
        Ok(Response::new(pb::ListMatchEventsResponse {
            events: page.events.into_iter().map(event).collect(),
            next_page_token: page.next.unwrap_or_default(),
        }))
    }

    async fn get_match_event(
        &self,
        request: Request<pb::GetMatchEventRequest>,
    ) -> Result<Response<pb::GetMatchEventResponse>, Status> {
        let caller = Caller::of(&request)?;
        let pb::GetMatchEventRequest { match_id, event_id } = request.into_inner();
        let stored = self.engagement.get(&caller, &match_id, &event_id).await?;
        Ok(Response::new(pb::GetMatchEventResponse { event: Some(event(stored)) }))
    }

    type WatchMatchStream = WatchStream;

    async fn watch_match(
        &self,
        request: Request<pb::WatchMatchRequest>,
    ) -> Result<Response<Self::WatchMatchStream>, Status> {
        let caller = Caller::of(&request)?;
        let pb::WatchMatchRequest { match_id } = request.into_inner();
        let match_id = self.engagement.may_watch(&caller, &match_id)?;
        let slot: StreamSlot = self
            .slots
            .acquire(&caller.user_id)
            .map_err(|full| EngagementError::TooManyStreams(full.scope))?;
        let mut latest = self.hub.subscribe(&match_id);
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            let _slot = slot;
            let mut before: Vec<domain::Minute> = Vec::new();
            loop {
                let snapshot = latest.borrow_and_update().clone();
                if let Some(s) = snapshot {
                    let corrections = domain::corrections(&before, &s.minutes)
                        .into_iter()
                        .map(|(minute, previous, count)| pb::Correction {
                            minute: Some(timestamp::to_proto(from_micros(
                                minute * domain::MINUTE_US,
                            ))),
                            previous_count: previous,
                            count,
                        })
                        .collect();
                    before = s.minutes.clone();
                    let push = pb::WatchMatchResponse { metrics: Some(metrics(&s)), corrections };
                    if tx.send(Ok(push)).await.is_err() {
                        return;
                    }
                }
                tokio::select! {
                    changed = latest.changed() => if changed.is_err() { return },
                    () = tx.closed() => return,
                }
            }
        });
        let stream: WatchStream = Box::pin(ReceiverStream::new(rx));
        Ok(Response::new(stream))
    }

    async fn replay_match(
        &self,
        request: Request<pb::ReplayMatchRequest>,
    ) -> Result<Response<pb::ReplayMatchResponse>, Status> {
        let caller = Caller::of(&request)?;
        let pb::ReplayMatchRequest { match_id } = request.into_inner();
        let s = self.engagement.replay(&caller, &match_id).await?;
        Ok(Response::new(pb::ReplayMatchResponse {
            events_replayed: s.total,
            metrics: Some(metrics(&s)),
        }))
    }
}
