//! The engagement routes over real HTTP, against a scripted engagement service in this
//! process: the edge's own behaviour (JSON ↔ proto, statuses per outcome, field names,
//! problem+json, the SSE stream, the token forwarded untouched, CORS). The real service's
//! rules are tested end to end with the service itself.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use ewpm_gateway::AppState;
use ewpm_kit::{
    CancellationToken,
    auth::{Role, TokenKeys},
    error::{FieldViolation, invalid_argument, retry_after, status},
    settings::Settings,
};
use ewpm_proto::engagement::v1::{
    self as pb,
    engagement_service_server::{EngagementService, EngagementServiceServer},
};
use reqwest::{Method, header::HeaderMap};
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::mpsc};
use tonic::{Code, Request, Response, Status};

type Push = mpsc::Sender<Result<pb::WatchMatchResponse, Status>>;

/// An engagement service that answers by script and records who called what:
///
/// - IngestEvents: an `event_type` `Goal!`, a `metadata` key `bad_key` or a `sent_at` before
///   2000 are field violations (proto paths, as the service names them); match `flood` is
///   rate limited; otherwise per event: id `conflict` is rejected (`EVENT_ID_CONFLICT`), type
///   `new_type` rejected (`TOO_MANY_EVENT_TYPES`), an id starting `seen` a duplicate
///   (`dup-<id>`), anything else accepted as `evt-<index>`.
/// - GetMatchMetrics, ReplayMatch: [`sample_metrics`]; replay only for admins.
/// - ListMatchEvents, GetMatchEvent: [`stored`] events; only `evt-0` exists.
/// - WatchMatch: hands each stream to the test.
#[derive(Clone)]
struct Scripted {
    keys: TokenKeys,
    /// (RPC, the `authorization` metadata it came with).
    calls: Arc<Mutex<Vec<(&'static str, String)>>>,
    ingested: Arc<Mutex<Vec<pb::IngestEventsRequest>>>,
    listed: Arc<Mutex<Vec<pb::ListMatchEventsRequest>>>,
    watchers: Arc<Mutex<Vec<Push>>>,
}

impl Scripted {
    fn record<T>(&self, rpc: &'static str, request: &Request<T>) {
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        self.calls.lock().unwrap().push((rpc, authorization));
    }

    fn calls(&self) -> Vec<(&'static str, String)> {
        self.calls.lock().unwrap().clone()
    }
}

fn at(rfc3339: &str) -> Option<prost_types::Timestamp> {
    let t = chrono::DateTime::parse_from_rfc3339(rfc3339).unwrap();
    Some(ewpm_kit::timestamp::to_proto(t.into()))
}

fn metadata(value: Value) -> prost_types::Struct {
    use prost_types::value::Kind;
    fn convert(v: Value) -> prost_types::Value {
        let kind = match v {
            Value::Null => Kind::NullValue(0),
            Value::Bool(b) => Kind::BoolValue(b),
            Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap()),
            Value::String(s) => Kind::StringValue(s),
            Value::Array(items) => Kind::ListValue(prost_types::ListValue {
                values: items.into_iter().map(convert).collect(),
            }),
            Value::Object(map) => Kind::StructValue(prost_types::Struct {
                fields: map.into_iter().map(|(k, v)| (k, convert(v))).collect(),
            }),
        };
        prost_types::Value { kind: Some(kind) }
    }
    match convert(value).kind {
        Some(Kind::StructValue(s)) => s,
        other => panic!("not an object: {other:?}"),
    }
}

/// The metrics every metrics read answers, for `match_id`.
fn sample_metrics(match_id: &str) -> pb::MatchMetrics {
    pb::MatchMetrics {
        match_id: match_id.to_string(),
        total_events: 1247,
        events_by_type: [("goal", 5), ("yellow_card", 3), ("substitution", 6)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        peak_engagement_periods: vec![
            pb::PeakPeriod {
                timestamp: at("2025-12-24T14:35:00Z"),
                event_count: 143,
                match_minute: Some(34),
            },
            pb::PeakPeriod {
                timestamp: at("2025-12-24T14:36:00Z"),
                event_count: 120,
                match_minute: None,
            },
        ],
        response_time_percentiles: Some(pb::ResponseTimePercentiles {
            p50: 12.5,
            p95: 45.2,
            p99: 89.3,
        }),
        bucketing: pb::Bucketing::MatchClock as i32,
        minutes: vec![
            pb::MinuteCount {
                start: at("2025-12-24T14:35:00Z"),
                count: 143,
                r#final: true,
                late_events: 2,
            },
            pb::MinuteCount {
                start: at("2025-12-24T14:36:00Z"),
                count: 120,
                r#final: false,
                late_events: 0,
            },
        ],
        watermark: Some(pb::Watermark {
            max_event_time: at("2025-12-24T14:36:59Z"),
            final_before: at("2025-12-24T14:36:00Z"),
            ingest_lag_ms: 12,
        }),
        late_events: 2,
    }
}

/// The JSON of [`sample_metrics`] on the live route.
fn sample_live_json(match_id: &str) -> Value {
    json!({
        "matchId": match_id,
        "totalEvents": 1247,
        "eventsByType": {"goal": 5, "yellow_card": 3, "substitution": 6},
        "peakEngagementPeriods": [
            {"timestamp": "2025-12-24T14:35:00Z", "eventCount": 143, "matchMinute": 34},
            {"timestamp": "2025-12-24T14:36:00Z", "eventCount": 120}
        ],
        "responseTimePercentiles": {"p50": 12.5, "p95": 45.2, "p99": 89.3},
        "bucketing": "match_clock",
        "minutes": [
            {"start": "2025-12-24T14:35:00Z", "count": 143, "final": true, "lateEvents": 2},
            {"start": "2025-12-24T14:36:00Z", "count": 120, "final": false, "lateEvents": 0}
        ],
        "watermark": {
            "maxEventTime": "2025-12-24T14:36:59Z",
            "finalBefore": "2025-12-24T14:36:00Z",
            "ingestLagMs": 12
        },
        "lateEvents": 2
    })
}

/// A stored event of `match_id`.
fn stored(match_id: &str, event_id: &str) -> pb::MatchEvent {
    pb::MatchEvent {
        event_id: event_id.to_string(),
        client_event_id: "feed-1:77".into(),
        match_id: match_id.to_string(),
        event_type: "goal".into(),
        team_id: "al-hilal".into(),
        player_id: String::new(),
        metadata: Some(metadata(json!({"minute": 34, "score": "2-1", "xg": 0.37}))),
        occurred_at: at("2025-12-24T14:35:10Z"),
        client_occurred_at: at("2025-12-24T14:35:08Z"),
        received_at: at("2025-12-24T14:35:11Z"),
        stored_at: at("2025-12-24T14:35:11.250Z"),
        source: "feed-1".into(),
        late: true,
        backfill: false,
    }
}

/// The JSON of [`stored`].
fn stored_json(match_id: &str, event_id: &str) -> Value {
    json!({
        "eventId": event_id, "clientEventId": "feed-1:77", "matchId": match_id,
        "eventType": "goal", "teamId": "al-hilal", "playerId": null,
        "metadata": {"minute": 34, "score": "2-1", "xg": 0.37},
        "occurredAt": "2025-12-24T14:35:10Z", "clientOccurredAt": "2025-12-24T14:35:08Z",
        "receivedAt": "2025-12-24T14:35:11Z", "storedAt": "2025-12-24T14:35:11.250Z",
        "source": "feed-1", "late": true, "backfill": false
    })
}

#[tonic::async_trait]
impl EngagementService for Scripted {
    type WatchMatchStream =
        tokio_stream::wrappers::ReceiverStream<Result<pb::WatchMatchResponse, Status>>;

    async fn ingest_events(
        &self,
        request: Request<pb::IngestEventsRequest>,
    ) -> Result<Response<pb::IngestEventsResponse>, Status> {
        self.record("IngestEvents", &request);
        let r = request.into_inner();
        self.ingested.lock().unwrap().push(r.clone());
        let mut violations = Vec::new();
        for (i, e) in r.events.iter().enumerate() {
            if e.event_type == "Goal!" {
                violations.push(FieldViolation::new(
                    format!("events[{i}].event_type"),
                    "must be 1 to 64 of a-z 0-9 _",
                ));
            }
            if e.metadata.as_ref().is_some_and(|m| m.fields.contains_key("bad_key")) {
                violations.push(FieldViolation::new(
                    format!("events[{i}].metadata.bad_key"),
                    "must be at most 1,024 characters",
                ));
            }
        }
        if r.sent_at.is_some_and(|t| t.seconds < 946_684_800) {
            violations.push(FieldViolation::new("sent_at", "must be within a day of now"));
        }
        if !violations.is_empty() {
            return Err(invalid_argument("INVALID_ARGUMENT", &violations));
        }
        if r.events.iter().any(|e| e.match_id == "flood") {
            return Err(retry_after(
                Code::ResourceExhausted,
                "RATE_LIMITED",
                "too many events from this source",
                Duration::from_millis(2500),
            ));
        }
        let mut answer = pb::IngestEventsResponse {
            clock_offset_ms: if r.sent_at.is_some() { 1500 } else { 0 },
            ..Default::default()
        };
        for (i, e) in r.events.iter().enumerate() {
            let index = i32::try_from(i).unwrap();
            let rejected = |reason: &str, field: &str, description: &str| pb::EventResult {
                index,
                outcome: pb::EventOutcome::Rejected as i32,
                event_id: String::new(),
                reason: reason.into(),
                field: format!("events[{i}].{field}"),
                description: description.into(),
            };
            let result = if e.event_id == "conflict" {
                answer.rejected += 1;
                rejected(
                    "EVENT_ID_CONFLICT",
                    "event_id",
                    "this event id was used before for another event",
                )
            } else if e.event_type == "new_type" {
                answer.rejected += 1;
                rejected(
                    "TOO_MANY_EVENT_TYPES",
                    "event_type",
                    "the match has its maximum of 100 event types",
                )
            } else if e.event_id.starts_with("seen") {
                answer.duplicates += 1;
                pb::EventResult {
                    index,
                    outcome: pb::EventOutcome::Duplicate as i32,
                    event_id: format!("dup-{}", e.event_id),
                    ..Default::default()
                }
            } else {
                answer.accepted += 1;
                pb::EventResult {
                    index,
                    outcome: pb::EventOutcome::Accepted as i32,
                    event_id: format!("evt-{i}"),
                    ..Default::default()
                }
            };
            answer.results.push(result);
        }
        Ok(Response::new(answer))
    }

    async fn get_match_metrics(
        &self,
        request: Request<pb::GetMatchMetricsRequest>,
    ) -> Result<Response<pb::GetMatchMetricsResponse>, Status> {
        self.record("GetMatchMetrics", &request);
        let metrics = sample_metrics(&request.get_ref().match_id);
        Ok(Response::new(pb::GetMatchMetricsResponse { metrics: Some(metrics) }))
    }

    async fn list_match_events(
        &self,
        request: Request<pb::ListMatchEventsRequest>,
    ) -> Result<Response<pb::ListMatchEventsResponse>, Status> {
        self.record("ListMatchEvents", &request);
        let r = request.into_inner();
        self.listed.lock().unwrap().push(r.clone());
        Ok(Response::new(pb::ListMatchEventsResponse {
            events: vec![stored(&r.match_id, "evt-0")],
            next_page_token: "page-2".into(),
        }))
    }

    async fn get_match_event(
        &self,
        request: Request<pb::GetMatchEventRequest>,
    ) -> Result<Response<pb::GetMatchEventResponse>, Status> {
        self.record("GetMatchEvent", &request);
        let r = request.into_inner();
        if r.event_id != "evt-0" {
            return Err(status(Code::NotFound, "EVENT_NOT_FOUND", "no such event in this match"));
        }
        Ok(Response::new(pb::GetMatchEventResponse {
            event: Some(stored(&r.match_id, &r.event_id)),
        }))
    }

    async fn watch_match(
        &self,
        request: Request<pb::WatchMatchRequest>,
    ) -> Result<Response<Self::WatchMatchStream>, Status> {
        self.record("WatchMatch", &request);
        let (tx, rx) = mpsc::channel(16);
        self.watchers.lock().unwrap().push(tx);
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    async fn replay_match(
        &self,
        request: Request<pb::ReplayMatchRequest>,
    ) -> Result<Response<pb::ReplayMatchResponse>, Status> {
        self.record("ReplayMatch", &request);
        let header = request.metadata().get("authorization").and_then(|v| v.to_str().ok());
        if !self.keys.verify_header(header)?.is_admin() {
            return Err(status(Code::PermissionDenied, "NOT_AN_ADMIN", "admins only"));
        }
        Ok(Response::new(pb::ReplayMatchResponse {
            metrics: Some(sample_metrics(&request.get_ref().match_id)),
            events_replayed: 42,
        }))
    }
}

struct Edge {
    base: String,
    keys: TokenKeys,
    service: Scripted,
    client: reqwest::Client,
    _stop: Stop,
}

/// Cancels the edge and the scripted service when the test ends.
struct Stop(CancellationToken, CancellationToken);

impl Drop for Stop {
    fn drop(&mut self) {
        self.0.cancel();
        self.1.cancel();
    }
}

/// The edge, allowing `cors` origins, in front of a scripted service.
async fn start(cors: &[&str]) -> Edge {
    let settings = Settings::default();
    let keys = TokenKeys::new("engagement-test", &settings.auth);
    let service = Scripted {
        keys: keys.clone(),
        calls: Arc::default(),
        ingested: Arc::default(),
        listed: Arc::default(),
        watchers: Arc::default(),
    };
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc_addr = grpc.local_addr().unwrap();
    let grpc_stop = CancellationToken::new();
    let (served, stop) = (service.clone(), grpc_stop.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(EngagementServiceServer::new(served))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(grpc),
                stop.cancelled_owned(),
            )
            .await
            .unwrap();
    });
    let addrs = ewpm_gateway::upstream_names()
        .map(|name| (name.to_string(), format!("http://{grpc_addr}")))
        .collect();
    let origins: Vec<String> = cors.iter().map(|o| o.to_string()).collect();
    let state =
        AppState::connect(&addrs, keys.clone(), &settings.limits).unwrap().with_cors(&origins);
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_addr = http.local_addr().unwrap();
    let edge_stop = CancellationToken::new();
    tokio::spawn(ewpm_gateway::serve(http, state, edge_stop.clone()));
    ewpm_kit::install_tls_provider();
    Edge {
        base: format!("http://{http_addr}"),
        keys,
        service,
        client: reqwest::Client::builder().no_proxy().build().unwrap(),
        _stop: Stop(edge_stop, grpc_stop),
    }
}

/// An answer of the edge.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// The bad fields of a problem+json answer.
    fn fields(&self) -> Vec<&str> {
        let errors = self.body["errors"].as_array().map(Vec::as_slice).unwrap_or_default();
        errors.iter().map(|e| e["field"].as_str().unwrap()).collect()
    }
}

impl Edge {
    fn token(&self, role: Role) -> String {
        self.keys.mint("feed-1", role, None)
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_string());
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap();
        let body =
            if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
        Answer { status, headers, body }
    }

    async fn post(&self, path: &str, token: &str, body: &str) -> Answer {
        self.call(Method::POST, path, Some(token), Some(body), &[]).await
    }

    async fn get(&self, path: &str, token: &str) -> Answer {
        self.call(Method::GET, path, Some(token), None, &[]).await
    }

    /// The WatchMatch streams the service has, waiting up to 5 s for `n`.
    async fn watchers(&self, n: usize) -> Vec<Push> {
        for _ in 0..500 {
            let watchers = self.service.watchers.lock().unwrap().clone();
            if watchers.len() >= n {
                return watchers;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the edge opened fewer than {n} WatchMatch streams");
    }
}

const PROBLEM: &str = "application/problem+json";

#[tokio::test]
async fn one_event_is_accepted_with_202_its_id_and_location_and_reaches_the_service_as_sent() {
    let edge = start(&[]).await;
    let token = edge.token(Role::Admin);
    let body = json!({
        "matchId": "cup:final", "eventType": "goal", "teamId": "al-hilal",
        "playerId": "player_456", "metadata": {"minute": 34, "score": "2-1"},
        "occurredAt": "2025-12-24T14:35:10Z", "sentAt": "2025-12-24T14:35:11Z"
    });
    let answer = edge.post("/api/events", &token, &body.to_string()).await;
    assert_eq!((answer.status, &answer.body), (202, &json!({"eventId": "evt-0"})));
    assert_eq!(answer.header("content-type"), Some("application/json"));
    assert_eq!(answer.header("location"), Some("/api/matches/cup%3Afinal/events/evt-0"));

    // The service got the event as one event of a batch, with the token untouched.
    assert_eq!(edge.service.calls(), [("IngestEvents", format!("Bearer {token}"))]);
    assert_eq!(
        edge.service.ingested.lock().unwrap().clone(),
        [pb::IngestEventsRequest {
            events: vec![pb::EventInput {
                event_id: String::new(),
                match_id: "cup:final".into(),
                event_type: "goal".into(),
                team_id: "al-hilal".into(),
                player_id: "player_456".into(),
                metadata: Some(metadata(json!({"minute": 34, "score": "2-1"}))),
                occurred_at: at("2025-12-24T14:35:10Z"),
            }],
            sent_at: at("2025-12-24T14:35:11Z"),
            backfill: false,
        }]
    );

    // The Location leads to the stored event (the match id decoded again).
    let location = answer.header("location").unwrap();
    let event = edge.get(location, &token).await;
    assert_eq!((event.status, event.body), (200, stored_json("cup:final", "evt-0")));
}

#[tokio::test]
async fn a_retried_event_is_a_duplicate_answered_200_with_the_same_location() {
    let edge = start(&[]).await;
    let token = edge.token(Role::Admin);
    let body = r#"{"matchId":"match_123","eventType":"goal","eventId":"seen-1"}"#;
    let answer = edge.post("/api/events", &token, body).await;
    assert_eq!(
        (answer.status, &answer.body),
        (200, &json!({"eventId": "dup-seen-1", "duplicate": true}))
    );
    assert_eq!(answer.header("location"), Some("/api/matches/match_123/events/dup-seen-1"));
    // The Idempotency-Key header is the client event id when the body has none.
    let body = r#"{"matchId":"match_123","eventType":"goal"}"#;
    let answer = edge
        .call(
            Method::POST,
            "/api/events",
            Some(&token),
            Some(body),
            &[("idempotency-key", "seen-2")],
        )
        .await;
    assert_eq!((answer.status, &answer.body["eventId"]), (200, &json!("dup-seen-2")));
}

#[tokio::test]
async fn a_rejected_event_is_409_problem_json_with_its_reason_naming_the_field() {
    let edge = start(&[]).await;
    let token = edge.token(Role::Admin);
    let body = r#"{"matchId":"match_123","eventType":"goal","eventId":"conflict"}"#;
    let answer = edge.post("/api/events", &token, body).await;
    assert_eq!(answer.header("content-type"), Some(PROBLEM));
    assert!(answer.header("location").is_none());
    assert_eq!(
        (answer.status, answer.body),
        (
            409,
            json!({
                "type": "urn:ewpm:problem:event-id-conflict", "title": "Conflict", "status": 409,
                "detail": "this event id was used before for another event",
                "reason": "EVENT_ID_CONFLICT",
                "errors": [{"field": "eventId", "description": "this event id was used before for another event"}]
            })
        )
    );
    let body = r#"{"matchId":"match_123","eventType":"new_type"}"#;
    let answer = edge.post("/api/events", &token, body).await;
    assert_eq!(
        (answer.status, answer.body["reason"].as_str(), answer.fields()),
        (409, Some("TOO_MANY_EVENT_TYPES"), vec!["eventType"])
    );
}

#[tokio::test]
async fn the_services_field_violations_are_renamed_to_the_bodys_json_names() {
    let edge = start(&[]).await;
    let token = edge.token(Role::Admin);
    let body = json!({
        "matchId": "match_123", "eventType": "Goal!", "metadata": {"bad_key": "x"},
        "sentAt": "1999-12-31T23:59:59Z"
    });
    let answer = edge.post("/api/events", &token, &body.to_string()).await;
    assert_eq!(
        (answer.status, answer.header("content-type"), answer.body["reason"].as_str()),
        (400, Some(PROBLEM), Some("INVALID_ARGUMENT"))
    );
    assert_eq!(answer.fields(), ["eventType", "metadata.bad_key", "sentAt"]);
    assert_eq!(
        answer.body["detail"],
        "eventType must be 1 to 64 of a-z 0-9 _; metadata.bad_key must be at most 1,024 characters; sentAt must be within a day of now"
    );

    let batch = json!({"events": [
        {"matchId": "match_123", "eventType": "goal"},
        {"matchId": "match_123", "eventType": "Goal!", "metadata": {"bad_key": 1}}
    ]});
    let answer = edge.post("/api/events/batch", &token, &batch.to_string()).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.fields(), ["events[1].eventType", "events[1].metadata.bad_key"]);
}

#[tokio::test]
async fn a_batch_answers_every_result_and_is_202_only_when_one_was_accepted() {
    let edge = start(&[]).await;
    let token = edge.token(Role::Admin);
    let batch = json!({
        "events": [
            {"matchId": "match_123", "eventType": "goal"},
            {"matchId": "match_123", "eventType": "cheer", "eventId": "seen-7"},
            {"matchId": "match_123", "eventType": "cheer", "eventId": "conflict"}
        ],
        "sentAt": "2025-12-24T14:35:11Z", "backfill": true
    });
    let answer = edge.post("/api/events/batch", &token, &batch.to_string()).await;
    assert_eq!(
        (answer.status, answer.body),
        (
            202,
            json!({
                "results": [
                    {"index": 0, "outcome": "accepted", "eventId": "evt-0"},
                    {"index": 1, "outcome": "duplicate", "eventId": "dup-seen-7"},
                    {"index": 2, "outcome": "rejected", "eventId": null,
                     "reason": "EVENT_ID_CONFLICT", "field": "events[2].eventId",
                     "description": "this event id was used before for another event"}
                ],
                "accepted": 1, "duplicates": 1, "rejected": 1, "clockOffsetMs": 1500
            })
        )
    );
    let sent = edge.service.ingested.lock().unwrap()[0].clone();
    assert_eq!(
        (sent.events.len(), sent.sent_at, sent.backfill),
        (3, at("2025-12-24T14:35:11Z"), true)
    );

    let nothing_new = json!({"events": [
        {"matchId": "match_123", "eventType": "goal", "eventId": "seen-7"},
        {"matchId": "match_123", "eventType": "new_type"}
    ]});
    let answer = edge.post("/api/events/batch", &token, &nothing_new.to_string()).await;
    assert_eq!(
        (answer.status, &answer.body["accepted"], &answer.body["clockOffsetMs"]),
        (200, &json!(0), &json!(0))
    );
    assert_eq!(answer.body["results"][1]["field"], "events[1].eventType");
}

#[tokio::test]
async fn a_rate_limited_source_is_429_with_retry_after() {
    let edge = start(&[]).await;
    let token = edge.token(Role::Admin);
    let answer =
        edge.post("/api/events", &token, r#"{"matchId":"flood","eventType":"cheer"}"#).await;
    assert_eq!(
        (answer.status, answer.header("retry-after"), answer.body["reason"].as_str()),
        (429, Some("3"), Some("RATE_LIMITED"))
    );
}

#[tokio::test]
async fn the_metrics_route_answers_exactly_the_seed_shape() {
    let edge = start(&[]).await;
    let token = edge.token(Role::Employee);
    let answer = edge.get("/api/matches/match_123/metrics", &token).await;
    assert_eq!(
        (answer.status, answer.body),
        (
            200,
            json!({
                "matchId": "match_123",
                "totalEvents": 1247,
                "eventsByType": {"goal": 5, "yellow_card": 3, "substitution": 6},
                "peakEngagementPeriods": [
                    {"timestamp": "2025-12-24T14:35:00Z", "eventCount": 143},
                    {"timestamp": "2025-12-24T14:36:00Z", "eventCount": 120}
                ],
                "responseTimePercentiles": {"p50": 12.5, "p95": 45.2, "p99": 89.3}
            })
        )
    );
    assert_eq!(edge.service.calls(), [("GetMatchMetrics", format!("Bearer {token}"))]);
}

#[tokio::test]
async fn the_live_snapshot_and_a_replay_carry_every_metric() {
    let edge = start(&[]).await;
    let employee = edge.token(Role::Employee);
    let answer = edge.get("/api/matches/match_123/metrics/live", &employee).await;
    assert_eq!((answer.status, answer.body), (200, sample_live_json("match_123")));

    let admin = edge.token(Role::Admin);
    let answer =
        edge.call(Method::POST, "/api/matches/match_123/replay", Some(&admin), None, &[]).await;
    assert_eq!(
        (answer.status, answer.body),
        (200, json!({"eventsReplayed": 42, "metrics": sample_live_json("match_123")}))
    );
    // The service decides who may replay; the edge answers its refusal.
    let answer =
        edge.call(Method::POST, "/api/matches/match_123/replay", Some(&employee), None, &[]).await;
    assert_eq!(
        (answer.status, answer.body["reason"].as_str(), answer.header("content-type")),
        (403, Some("NOT_AN_ADMIN"), Some(PROBLEM))
    );
}

#[tokio::test]
async fn the_stream_pushes_metrics_events_with_corrections() {
    let edge = start(&[]).await;
    let token = edge.token(Role::Employee);
    let mut response = edge
        .client
        .get(format!("{}/api/matches/match_123/stream", edge.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let watchers = edge.watchers(1).await;
    assert_eq!(edge.service.calls(), [("WatchMatch", format!("Bearer {token}"))]);

    let push = pb::WatchMatchResponse {
        metrics: Some(sample_metrics("match_123")),
        corrections: vec![pb::Correction {
            minute: at("2025-12-24T14:35:00Z"),
            previous_count: 141,
            count: 143,
        }],
    };
    watchers[0].send(Ok(push)).await.unwrap();
    watchers[0].send(Err(Status::unavailable("the store is down"))).await.unwrap();

    // Read until both events arrived (within 5 s).
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(5), async {
        while text.matches("\n\n").count() < 2 {
            let chunk = response.chunk().await.unwrap().expect("the stream stays open");
            text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    })
    .await
    .expect("two events within 5 s");
    let events: Vec<(&str, Value)> = text
        .split("\n\n")
        .filter(|block| !block.trim().is_empty() && !block.starts_with(':'))
        .map(|block| {
            let name = block.lines().find_map(|l| l.strip_prefix("event: ")).unwrap();
            let data = block.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
            (name, serde_json::from_str(data).unwrap())
        })
        .collect();
    let mut expected = sample_live_json("match_123");
    expected["corrections"] =
        json!([{"minute": "2025-12-24T14:35:00Z", "previousCount": 141, "count": 143}]);
    assert_eq!(events[0], ("metrics", expected));
    assert_eq!(
        (events[1].0, &events[1].1["status"], &events[1].1["reason"]),
        ("error", &json!(503), &json!("UPSTREAM_UNAVAILABLE"))
    );
}

#[tokio::test]
async fn stored_events_are_listed_and_read_as_event_json() {
    let edge = start(&[]).await;
    let token = edge.token(Role::Employee);
    let answer = edge
        .get("/api/matches/match_123/events?pageSize=2&pageToken=abc&eventType=goal", &token)
        .await;
    assert_eq!(
        (answer.status, answer.body),
        (200, json!({"events": [stored_json("match_123", "evt-0")], "nextPageToken": "page-2"}))
    );
    assert_eq!(
        edge.service.listed.lock().unwrap().clone(),
        [pb::ListMatchEventsRequest {
            match_id: "match_123".into(),
            page_size: 2,
            page_token: "abc".into(),
            event_type: "goal".into(),
        }]
    );
    let answer = edge.get("/api/matches/match_123/events?pageSize=many", &token).await;
    assert_eq!((answer.status, answer.fields()), (400, vec!["pageSize"]));

    let answer = edge.get("/api/matches/match_123/events/evt-9", &token).await;
    assert_eq!(
        (answer.status, answer.body["reason"].as_str(), answer.header("content-type")),
        (404, Some("EVENT_NOT_FOUND"), Some(PROBLEM))
    );
}

#[tokio::test]
async fn bad_bodies_are_400_problem_json_naming_the_field_and_never_reach_the_service() {
    let edge = start(&[]).await;
    let token = edge.token(Role::Admin);
    let cases = [
        ("/api/events", "", "body"),
        ("/api/events", "{", "body"),
        ("/api/events", "[]", "body"),
        ("/api/events", "null", "body"),
        ("/api/events", r#"{"matchId":"m","eventType":"goal","metadata":[1,2]}"#, "metadata"),
        ("/api/events", r#"{"matchId":"m","eventType":"goal","metadata":"x"}"#, "metadata"),
        ("/api/events", r#"{"matchId":"m","eventType":"goal","metadata":5}"#, "metadata"),
        ("/api/events", r#"{"matchId":7,"eventType":"goal"}"#, "matchId"),
        ("/api/events", r#"{"matchId":"m","eventType":"goal","occurredAt":"noon"}"#, "occurredAt"),
        ("/api/events", r#"{"matchId":"m","eventType":"goal","sentAt":1}"#, "sentAt"),
        ("/api/events", r#"{"matchId":"m","eventType":"goal","colour":"red"}"#, "colour"),
        ("/api/events/batch", "{", "body"),
        ("/api/events/batch", r#"{"events":"x"}"#, "events"),
        ("/api/events/batch", r#"{"events":[5]}"#, "events[0]"),
        (
            "/api/events/batch",
            r#"{"events":[{"matchId":"m","metadata":true}]}"#,
            "events[0].metadata",
        ),
        ("/api/events/batch", r#"{"events":[],"backfill":"yes"}"#, "backfill"),
    ];
    for (path, body, field) in cases {
        let answer = edge.post(path, &token, body).await;
        assert_eq!(
            (
                answer.status,
                answer.header("content-type"),
                answer.body["reason"].as_str(),
                answer.fields()
            ),
            (400, Some(PROBLEM), Some("INVALID_ARGUMENT"), vec![field]),
            "{path} {body}"
        );
    }
    let answer = edge.post("/api/events", &token, r#"{"matchId":"m","metadata":[]}"#).await;
    assert_eq!(answer.body["errors"][0]["description"], "must be a JSON object");
    assert_eq!(edge.service.calls(), []);
}

#[tokio::test]
async fn a_request_without_a_valid_token_is_401_and_never_reaches_the_service() {
    let edge = start(&[]).await;
    let routes = [
        (Method::POST, "/api/events"),
        (Method::POST, "/api/events/batch"),
        (Method::GET, "/api/matches/m/metrics"),
        (Method::GET, "/api/matches/m/metrics/live"),
        (Method::GET, "/api/matches/m/stream"),
        (Method::GET, "/api/matches/m/events"),
        (Method::GET, "/api/matches/m/events/evt-0"),
        (Method::POST, "/api/matches/m/replay"),
    ];
    let forged = TokenKeys::new("another-secret", &Settings::default().auth).mint(
        "feed-1",
        Role::Admin,
        None,
    );
    for (method, path) in routes {
        // A bad body is not read before the token is checked.
        let answer = edge.call(method.clone(), path, None, Some("{"), &[]).await;
        assert_eq!(
            (answer.status, answer.header("content-type"), answer.body["reason"].as_str()),
            (401, Some(PROBLEM), Some("MISSING_TOKEN")),
            "{method} {path}"
        );
        let answer = edge.call(method.clone(), path, Some(&forged), None, &[]).await;
        assert_eq!(
            (answer.status, answer.body["reason"].as_str()),
            (401, Some("INVALID_TOKEN")),
            "{method} {path}"
        );
    }
    assert_eq!(edge.service.calls(), []);
}

#[tokio::test]
async fn cors_answers_preflights_and_marks_answers_for_allowed_origins_only() {
    let edge = start(&["https://fans.example"]).await;
    let token = edge.token(Role::Admin);
    let preflight = |origin: &'static str| {
        [
            ("origin", origin),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "authorization, content-type, idempotency-key"),
        ]
    };

    // A preflight carries no token: it is answered before authentication.
    let answer = edge
        .call(Method::OPTIONS, "/api/events", None, None, &preflight("https://fans.example"))
        .await;
    assert_eq!(answer.status, 204);
    assert_eq!(answer.header("access-control-allow-origin"), Some("https://fans.example"));
    assert_eq!(
        answer.header("access-control-allow-headers"),
        Some("authorization, content-type, idempotency-key, traceparent")
    );
    assert_eq!(
        answer.header("access-control-allow-methods"),
        Some("GET, POST, PATCH, PUT, DELETE, OPTIONS")
    );
    assert_eq!(answer.header("access-control-max-age"), Some("600"));
    assert_eq!(answer.header("vary"), Some("origin"));

    // The call itself: its answer is marked, Location readable by the page.
    let body = r#"{"matchId":"match_123","eventType":"goal"}"#;
    let from = [("origin", "https://fans.example")];
    let answer = edge.call(Method::POST, "/api/events", Some(&token), Some(body), &from).await;
    assert_eq!(answer.status, 202);
    assert_eq!(answer.header("access-control-allow-origin"), Some("https://fans.example"));
    assert_eq!(answer.header("access-control-expose-headers"), Some("location, retry-after"));
    assert_eq!(answer.header("vary"), Some("origin"));
    // Problems too, so the page can read why.
    let answer = edge.call(Method::GET, "/api/matches/m/metrics", None, None, &from).await;
    assert_eq!(
        (answer.status, answer.header("access-control-allow-origin")),
        (401, Some("https://fans.example"))
    );

    // Another origin: no CORS header; its preflight is refused as any request without a
    // token is.
    let answer = edge
        .call(Method::OPTIONS, "/api/events", None, None, &preflight("https://evil.example"))
        .await;
    assert_eq!((answer.status, answer.header("access-control-allow-origin")), (401, None));
    let other = [("origin", "https://evil.example")];
    let answer = edge.call(Method::POST, "/api/events", Some(&token), Some(body), &other).await;
    assert_eq!((answer.status, answer.header("access-control-allow-origin")), (202, None));

    // Without configured origins the edge answers no CORS at all.
    let plain = start(&[]).await;
    let answer = plain
        .call(Method::OPTIONS, "/api/events", None, None, &preflight("https://fans.example"))
        .await;
    assert_eq!((answer.status, answer.header("access-control-allow-origin")), (401, None));
}
