//! The board routes over real HTTP, against a scripted leaderboard service in this process:
//! the edge's own behaviour (routes with `<kind>:<id>` segments, JSON ↔ proto, statuses per
//! outcome, field names, problem+json, the SSE stream, the token forwarded untouched). The
//! real service's rules are tested end to end in the workspace's `tests/boards_rest.rs`.

use std::sync::{Arc, Mutex};

use ewpm_gateway::AppState;
use ewpm_kit::{
    CancellationToken,
    auth::{Role, TokenKeys},
    error::{FieldViolation, invalid_argument, status},
    settings::Settings,
};
use ewpm_proto::leaderboard::v1::{
    self as lpb,
    leaderboard_service_server::{LeaderboardService, LeaderboardServiceServer},
};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tonic::{Code, Request, Response, Status};

/// What the scripted service was asked, in order: (RPC, `authorization`, the request).
type Calls = Arc<Mutex<Vec<(&'static str, String, String)>>>;

/// A leaderboard service that answers by script:
///
/// - CreateBoard: id `taken` is ALREADY_EXISTS, a time zone `Mars/Olympus` a violation of
///   `definition.reset.time_zone`; otherwise the definition as `board:<id>`.
/// - GetBoard: `board:missing` is NOT_FOUND; otherwise a weekly board of that name.
/// - SubmitScore: an event id starting `seen` is a retry (`created: false`), a fact before
///   2000 falls in a closed period (FAILED_PRECONDITION `PERIOD_CLOSED`).
/// - VoidEntry: member `ann` is voided now, anyone else was void already.
/// - Reads echo what they were asked; WatchLeaderboard sends one snapshot and ends.
#[derive(Clone, Default)]
struct Scripted {
    calls: Calls,
}

impl Scripted {
    fn record<T: std::fmt::Debug>(&self, rpc: &'static str, request: &Request<T>) {
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let message = format!("{:?}", request.get_ref());
        self.calls.lock().unwrap().push((rpc, authorization, message));
    }
}

fn entry(rank: i64, member: &str, score: f64) -> lpb::LeaderboardEntry {
    lpb::LeaderboardEntry {
        rank,
        member: member.into(),
        score,
        subscore: 0.0,
        position: rank - 1,
        pseudonymous: false,
    }
}

fn at(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos: 0 })
}

#[tonic::async_trait]
impl LeaderboardService for Scripted {
    type WatchLeaderboardStream =
        tokio_stream::Iter<std::vec::IntoIter<Result<lpb::WatchLeaderboardResponse, Status>>>;

    async fn create_board(
        &self,
        request: Request<lpb::CreateBoardRequest>,
    ) -> Result<Response<lpb::CreateBoardResponse>, Status> {
        self.record("CreateBoard", &request);
        let lpb::CreateBoardRequest { board_id, definition } = request.into_inner();
        let definition = definition.unwrap_or_default();
        if board_id == "taken" {
            return Err(status(
                Code::AlreadyExists,
                "BOARD_EXISTS",
                "board:taken is defined otherwise",
            ));
        }
        if definition.reset.as_ref().is_some_and(|r| r.time_zone == "Mars/Olympus") {
            return Err(invalid_argument(
                "INVALID_ARGUMENT",
                &[FieldViolation::new("definition.reset.time_zone", "is not an IANA time zone")],
            ));
        }
        let board = lpb::BoardDefinition {
            board: format!("board:{board_id}"),
            owner: "leaderboard".into(),
            create_time: at(1_796_025_600),
            current_period: "all".into(),
            ..definition
        };
        Ok(Response::new(lpb::CreateBoardResponse { board: Some(board), created: true }))
    }

    async fn get_board(
        &self,
        request: Request<lpb::GetBoardRequest>,
    ) -> Result<Response<lpb::GetBoardResponse>, Status> {
        self.record("GetBoard", &request);
        let board = request.into_inner().board;
        if board == "board:missing" {
            return Err(status(Code::NotFound, "BOARD_NOT_FOUND", "no such board"));
        }
        Ok(Response::new(lpb::GetBoardResponse {
            board: Some(lpb::BoardDefinition {
                board,
                title: "Weekly steps".into(),
                operator: lpb::ScoreOperator::Sum as i32,
                order: lpb::SortOrder::Descending as i32,
                subscore_order: 0,
                rank_style: lpb::RankStyle::Competition as i32,
                reset: Some(lpb::Reset {
                    kind: lpb::ResetKind::Weekly as i32,
                    cron: String::new(),
                    time_zone: String::new(),
                }),
                employer_id: String::new(),
                members_submit: true,
                owner: "leaderboard".into(),
                create_time: at(1_796_025_600),
                current_period: "2026-W49".into(),
                next_reset_time: at(1_796_601_600),
            }),
        }))
    }

    async fn list_periods(
        &self,
        request: Request<lpb::ListPeriodsRequest>,
    ) -> Result<Response<lpb::ListPeriodsResponse>, Status> {
        self.record("ListPeriods", &request);
        Ok(Response::new(lpb::ListPeriodsResponse {
            periods: vec![lpb::Period {
                period: "2026-W49".into(),
                start_time: at(1_795_996_800),
                end_time: at(1_796_601_600),
                closed: false,
                members: 0,
            }],
            next_page_token: format!("after-{}", request.get_ref().page_size),
        }))
    }

    async fn submit_score(
        &self,
        request: Request<lpb::SubmitScoreRequest>,
    ) -> Result<Response<lpb::SubmitScoreResponse>, Status> {
        self.record("SubmitScore", &request);
        let r = request.into_inner();
        if r.occurred_at.is_some_and(|t| t.seconds < 946_684_800) {
            return Err(status(Code::FailedPrecondition, "PERIOD_CLOSED", "that week is closed"));
        }
        Ok(Response::new(lpb::SubmitScoreResponse {
            period: "2026-W49".into(),
            created: !r.event_id.starts_with("seen"),
            entry: Some(entry(1, if r.member.is_empty() { "ann" } else { &r.member }, r.score)),
        }))
    }

    async fn get_leaderboard(
        &self,
        request: Request<lpb::GetLeaderboardRequest>,
    ) -> Result<Response<lpb::GetLeaderboardResponse>, Status> {
        self.record("GetLeaderboard", &request);
        let r = request.into_inner();
        Ok(Response::new(lpb::GetLeaderboardResponse {
            entries: vec![entry(1, "bob", 55.0), entry(2, "ann", 40.0)],
            next_page_token: format!("next-{}", r.start_rank),
            total_members: 2,
            prev_page_token: r.page_token,
            me: Some(lpb::MyPlace {
                entry: Some(entry(2, "ann", 40.0)),
                top_percent: 100,
                page: 1,
                page_token: String::new(),
            }),
            period: if r.period.is_empty() { "all".into() } else { r.period },
            withheld: false,
        }))
    }

    async fn get_rank(
        &self,
        request: Request<lpb::GetRankRequest>,
    ) -> Result<Response<lpb::GetRankResponse>, Status> {
        self.record("GetRank", &request);
        if request.get_ref().member == "nobody" {
            return Err(status(Code::NotFound, "MEMBER_NOT_ON_BOARD", "no score on this board"));
        }
        Ok(Response::new(lpb::GetRankResponse {
            entry: Some(entry(2, "ann", 40.0)),
            window: vec![entry(1, "bob", 55.0), entry(2, "ann", 40.0)],
            total_members: 2,
            top_percent: 100,
            page: 1,
            period: "all".into(),
        }))
    }

    async fn get_places(
        &self,
        request: Request<lpb::GetPlacesRequest>,
    ) -> Result<Response<lpb::GetPlacesResponse>, Status> {
        self.record("GetPlaces", &request);
        Err(Status::unimplemented("no edge route calls GetPlaces"))
    }

    async fn get_ranks(
        &self,
        request: Request<lpb::GetRanksRequest>,
    ) -> Result<Response<lpb::GetRanksResponse>, Status> {
        self.record("GetRanks", &request);
        let r = request.into_inner();
        Ok(Response::new(lpb::GetRanksResponse {
            entries: (1..).zip(&r.members).map(|(i, m)| entry(i, m, 10.0)).collect(),
            total_members: 9,
            period: "all".into(),
        }))
    }

    async fn watch_leaderboard(
        &self,
        request: Request<lpb::WatchLeaderboardRequest>,
    ) -> Result<Response<Self::WatchLeaderboardStream>, Status> {
        self.record("WatchLeaderboard", &request);
        let snapshot = lpb::WatchLeaderboardResponse {
            board: request.get_ref().board.clone(),
            entries: vec![entry(1, "bob", 55.0)],
            total_members: 2,
            snapshot_time: at(1_796_025_600),
            me: Some(entry(2, "ann", 50.0)),
            window: Vec::new(),
            notices: vec![lpb::RankNotice {
                kind: lpb::rank_notice::Kind::Passed as i32,
                old_rank: 1,
                new_rank: 2,
                other: "bob".into(),
                gap: 0.0,
            }],
            period: "all".into(),
            withheld: false,
        };
        Ok(Response::new(tokio_stream::iter(vec![Ok(snapshot)])))
    }

    async fn void_entry(
        &self,
        request: Request<lpb::VoidEntryRequest>,
    ) -> Result<Response<lpb::VoidEntryResponse>, Status> {
        self.record("VoidEntry", &request);
        let created = request.get_ref().member == "ann";
        Ok(Response::new(lpb::VoidEntryResponse {
            created,
            periods: if created { vec!["2026-W49".into()] } else { Vec::new() },
        }))
    }

    async fn get_privacy(
        &self,
        request: Request<lpb::GetPrivacyRequest>,
    ) -> Result<Response<lpb::GetPrivacyResponse>, Status> {
        self.record("GetPrivacy", &request);
        let privacy =
            lpb::Privacy { member: "ann".into(), hide_name: false, pseudonym: "anon-7f3a".into() };
        Ok(Response::new(lpb::GetPrivacyResponse { privacy: Some(privacy) }))
    }

    async fn set_privacy(
        &self,
        request: Request<lpb::SetPrivacyRequest>,
    ) -> Result<Response<lpb::SetPrivacyResponse>, Status> {
        self.record("SetPrivacy", &request);
        let privacy = lpb::Privacy {
            member: "ann".into(),
            hide_name: request.get_ref().hide_name,
            pseudonym: "anon-7f3a".into(),
        };
        Ok(Response::new(lpb::SetPrivacyResponse { privacy: Some(privacy) }))
    }

    async fn get_employer_settings(
        &self,
        request: Request<lpb::GetEmployerSettingsRequest>,
    ) -> Result<Response<lpb::GetEmployerSettingsResponse>, Status> {
        self.record("GetEmployerSettings", &request);
        let employer_id = request.into_inner().employer_id;
        let settings = lpb::EmployerSettings { employer_id, min_members: 0 };
        Ok(Response::new(lpb::GetEmployerSettingsResponse { settings: Some(settings) }))
    }

    async fn set_employer_settings(
        &self,
        request: Request<lpb::SetEmployerSettingsRequest>,
    ) -> Result<Response<lpb::SetEmployerSettingsResponse>, Status> {
        self.record("SetEmployerSettings", &request);
        let lpb::SetEmployerSettingsRequest { employer_id, min_members } = request.into_inner();
        if min_members > 10_000 {
            return Err(invalid_argument(
                "INVALID_ARGUMENT",
                &[FieldViolation::new("min_members", "must be from 0 to 10,000")],
            ));
        }
        let settings = lpb::EmployerSettings { employer_id, min_members };
        Ok(Response::new(lpb::SetEmployerSettingsResponse { settings: Some(settings) }))
    }
}

struct Edge {
    base: String,
    token: String,
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

async fn start() -> Edge {
    let settings = Settings::default();
    let keys = TokenKeys::new("boards-test", &settings.auth);
    let service = Scripted::default();
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc_addr = grpc.local_addr().unwrap();
    let grpc_stop = CancellationToken::new();
    let (served, stop) = (service.clone(), grpc_stop.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(LeaderboardServiceServer::new(served))
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
    let state = AppState::connect(&addrs, keys.clone(), &settings.limits).unwrap();
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_addr = http.local_addr().unwrap();
    let edge_stop = CancellationToken::new();
    tokio::spawn(ewpm_gateway::serve(http, state, edge_stop.clone()));
    ewpm_kit::install_tls_provider();
    Edge {
        base: format!("http://{http_addr}"),
        token: keys.mint("ann", Role::Admin, None),
        service,
        client: reqwest::Client::builder().no_proxy().build().unwrap(),
        _stop: Stop(edge_stop, grpc_stop),
    }
}

/// An answer of the edge: status, `content-type`, `location`, body (JSON, or the text).
#[derive(Debug)]
struct Answer {
    status: u16,
    content_type: String,
    location: Option<String>,
    body: Value,
}

impl Answer {
    /// The bad fields of a problem+json answer.
    fn fields(&self) -> Vec<&str> {
        let errors = self.body["errors"].as_array().map(Vec::as_slice).unwrap_or_default();
        errors.iter().map(|e| e["field"].as_str().unwrap()).collect()
    }

    fn problem(&self) -> (u16, &str, &str) {
        (self.status, self.content_type.as_str(), self.body["reason"].as_str().unwrap_or_default())
    }
}

impl Edge {
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        let mut request =
            self.client.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let header =
            |name: &str| response.headers().get(name).map(|v| v.to_str().unwrap().to_string());
        let (status, content_type, location) = (
            response.status().as_u16(),
            header("content-type").unwrap_or_default(),
            header("location"),
        );
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer { status, content_type, location, body }
    }

    /// The RPCs the service was called with since the last look, each checked to carry the
    /// caller's token untouched.
    fn calls(&self) -> Vec<(&'static str, String)> {
        let calls = std::mem::take(&mut *self.service.calls.lock().unwrap());
        calls
            .into_iter()
            .map(|(rpc, authorization, message)| {
                assert_eq!(authorization, format!("Bearer {}", self.token), "{rpc}");
                (rpc, message)
            })
            .collect()
    }
}

const PROBLEM: &str = "application/problem+json";

#[tokio::test]
async fn a_board_is_created_with_201_and_its_location_and_refusals_name_the_fields() {
    let edge = start().await;
    let body = json!({
        "boardId": "weekly-steps", "title": "Weekly steps", "operator": "sum", "order": "desc",
        "rankStyle": "dense", "reset": {"kind": "weekly", "timeZone": "Europe/Paris"},
        "membersSubmit": true
    });
    let answer = edge.call(Method::POST, "/api/boards", Some(body)).await;
    assert_eq!(
        (answer.status, answer.location.as_deref()),
        (201, Some("/api/boards/board:weekly-steps"))
    );
    assert_eq!(
        answer.body,
        json!({
            "board": "board:weekly-steps", "title": "Weekly steps", "operator": "sum",
            "order": "desc", "subscoreOrder": null, "rankStyle": "dense",
            "reset": {"kind": "weekly", "cron": null, "timeZone": "Europe/Paris"},
            "employerId": null, "membersSubmit": true, "owner": "leaderboard",
            "createTime": "2026-11-30T08:00:00Z", "currentPeriod": "all", "nextResetTime": null
        })
    );
    assert_eq!(edge.calls().len(), 1);

    // Unknown enum names never reach the service; each is named.
    let answer = edge
        .call(
            Method::POST,
            "/api/boards",
            Some(json!({"boardId": "b", "operator": "max", "reset": {"kind": "hourly"}})),
        )
        .await;
    assert_eq!(answer.problem(), (400, PROBLEM, "INVALID_ARGUMENT"));
    assert_eq!(answer.fields(), ["operator", "reset.kind"]);
    // The service's paths lose `definition.` and read in camelCase.
    let answer = edge
        .call(
            Method::POST,
            "/api/boards",
            Some(json!({"boardId": "b", "reset": {"timeZone": "Mars/Olympus"}})),
        )
        .await;
    assert_eq!(answer.problem(), (400, PROBLEM, "INVALID_ARGUMENT"));
    assert_eq!(answer.fields(), ["reset.timeZone"]);
    let answer = edge.call(Method::POST, "/api/boards", Some(json!({"boardId": "taken"}))).await;
    assert_eq!(answer.problem(), (409, PROBLEM, "BOARD_EXISTS"));
    let answer = edge.call(Method::POST, "/api/boards", Some(json!({"boardID": "b"}))).await;
    assert_eq!(answer.problem(), (400, PROBLEM, "INVALID_ARGUMENT"));
    assert_eq!(answer.fields(), ["body"]);
    assert_eq!(edge.calls().len(), 2);
}

#[tokio::test]
async fn a_board_is_read_by_its_full_name_as_one_segment_encoded_or_not() {
    let edge = start().await;
    let board = "challenge:0194d3c2-5b1e-7c4f-9a51-2d3e4f5a6b7c";
    let answer = edge.call(Method::GET, &format!("/api/boards/{board}"), None).await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        (&answer.body["board"], &answer.body["currentPeriod"], &answer.body["nextResetTime"]),
        (&json!(board), &json!("2026-W49"), &json!("2026-12-07T00:00:00Z"))
    );
    let encoded = edge.call(Method::GET, "/api/boards/board%3Aweekly-steps", None).await;
    assert_eq!(encoded.body["board"], "board:weekly-steps");
    let missing = edge.call(Method::GET, "/api/boards/board:missing", None).await;
    assert_eq!(missing.problem(), (404, PROBLEM, "BOARD_NOT_FOUND"));
    let answer = edge.call(Method::GET, "/api/boards/board:w/periods?pageSize=5", None).await;
    assert_eq!(
        answer.body,
        json!({"periods": [{"period": "2026-W49", "startTime": "2026-11-30T00:00:00Z",
            "endTime": "2026-12-07T00:00:00Z", "closed": false, "members": 0}],
            "nextPageToken": "after-5"})
    );
    assert_eq!(
        edge.calls().iter().map(|(rpc, _)| *rpc).collect::<Vec<_>>(),
        ["GetBoard", "GetBoard", "GetBoard", "ListPeriods"]
    );
}

#[tokio::test]
async fn a_score_is_201_when_stored_200_for_a_retry_and_422_in_a_closed_period() {
    let edge = start().await;
    let path = "/api/boards/board:weekly-steps/scores";
    let answer = edge
        .call(
            Method::POST,
            path,
            Some(json!({"score": 8000, "eventId": "watch-1", "occurredAt": "2026-11-30T09:00:00+01:00"})),
        )
        .await;
    assert_eq!(
        (answer.status, answer.body.clone()),
        (
            201,
            json!({"period": "2026-W49", "created": true, "entry": {"rank": 1, "member": "ann",
                "score": 8000.0, "subscore": 0.0, "position": 0, "pseudonymous": false}})
        )
    );
    let calls = edge.calls();
    assert_eq!(
        calls,
        [(
            "SubmitScore",
            format!(
                "{:?}",
                lpb::SubmitScoreRequest {
                    board: "board:weekly-steps".into(),
                    member: String::new(),
                    score: 8000.0,
                    subscore: 0.0,
                    event_id: "watch-1".into(),
                    occurred_at: at(1_796_025_600),
                }
            )
        )]
    );
    let retry = edge.call(Method::POST, path, Some(json!({"score": 1, "eventId": "seen-1"}))).await;
    assert_eq!((retry.status, &retry.body["created"]), (200, &json!(false)));
    let closed = edge
        .call(
            Method::POST,
            path,
            Some(json!({"score": 1, "eventId": "e", "occurredAt": "1999-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(closed.problem(), (422, PROBLEM, "PERIOD_CLOSED"));
    let bad =
        edge.call(Method::POST, path, Some(json!({"eventId": "e", "occurredAt": "soon"}))).await;
    assert_eq!(bad.problem(), (400, PROBLEM, "INVALID_ARGUMENT"));
    assert_eq!(bad.fields(), ["score", "occurredAt"]);
    assert_eq!(edge.calls().len(), 2);
}

#[tokio::test]
async fn pages_ranks_and_team_ranks_pass_their_queries_through() {
    let edge = start().await;
    let answer = edge
        .call(
            Method::GET,
            "/api/boards/board:w/entries?pageSize=2&pageToken=t-1&startRank=3&period=2026-W48",
            None,
        )
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        (&answer.body["nextPageToken"], &answer.body["prevPageToken"], &answer.body["period"]),
        (&json!("next-3"), &json!("t-1"), &json!("2026-W48"))
    );
    assert_eq!(answer.body["me"]["entry"]["member"], "ann");
    assert_eq!(answer.body["me"]["topPercent"], 100);
    let answer = edge.call(Method::GET, "/api/boards/board:w/entries?startRank=x", None).await;
    assert_eq!((answer.status, answer.fields()), (400, vec!["startRank"]));

    let answer =
        edge.call(Method::GET, "/api/boards/board:w/rank?member=ann&neighbours=1", None).await;
    assert_eq!(
        (answer.status, &answer.body["entry"]["rank"], &answer.body["window"][0]["member"]),
        (200, &json!(2), &json!("bob"))
    );
    let nobody = edge.call(Method::GET, "/api/boards/board:w/rank?member=nobody", None).await;
    assert_eq!(nobody.problem(), (404, PROBLEM, "MEMBER_NOT_ON_BOARD"));

    let answer = edge
        .call(
            Method::GET,
            "/api/boards/board:w/ranks?member=ann&members=ben,cid&member=d%20n",
            None,
        )
        .await;
    let members: Vec<&str> = answer.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["member"].as_str().unwrap())
        .collect();
    assert_eq!((answer.status, members), (200, vec!["ann", "ben", "cid", "d n"]));
    let calls = edge.calls();
    assert_eq!(calls.len(), 4);
    assert_eq!(
        calls[0].1,
        format!(
            "{:?}",
            lpb::GetLeaderboardRequest {
                board: "board:w".into(),
                page_size: 2,
                page_token: "t-1".into(),
                start_rank: 3,
                period: "2026-W48".into(),
            }
        )
    );
}

#[tokio::test]
async fn the_stream_sends_a_snapshot_with_notices_and_ends_when_the_service_does() {
    let edge = start().await;
    let answer = edge
        .call(
            Method::GET,
            "/api/boards/board:w/stream?topN=5&withMe=true&notifyPassed=true&notifyWithin=2.5",
            None,
        )
        .await;
    assert_eq!((answer.status, answer.content_type.as_str()), (200, "text/event-stream"));
    let text = answer.body.as_str().unwrap();
    let data = text
        .strip_prefix("event: snapshot\ndata: ")
        .and_then(|rest| rest.split_once('\n'))
        .map(|(data, _)| data)
        .unwrap_or_else(|| panic!("not one snapshot event: {text:?}"));
    assert_eq!(
        serde_json::from_str::<Value>(data).unwrap(),
        json!({
            "board": "board:w",
            "entries": [{"rank": 1, "member": "bob", "score": 55.0, "subscore": 0.0, "position": 0, "pseudonymous": false}],
            "totalMembers": 2, "snapshotTime": "2026-11-30T08:00:00Z",
            "me": {"rank": 2, "member": "ann", "score": 50.0, "subscore": 0.0, "position": 1, "pseudonymous": false},
            "window": [],
            "notices": [{"kind": "passed", "oldRank": 1, "newRank": 2, "other": "bob", "gap": 0.0}],
            "period": "all", "withheld": false
        })
    );
    assert_eq!(
        edge.calls(),
        [(
            "WatchLeaderboard",
            format!(
                "{:?}",
                lpb::WatchLeaderboardRequest {
                    board: "board:w".into(),
                    top_n: 5,
                    neighbours: 0,
                    with_me: true,
                    notify_passed: true,
                    notify_within: 2.5,
                }
            )
        )]
    );
    let bad = edge.call(Method::GET, "/api/boards/board:w/stream?withMe=yes&topN=ten", None).await;
    assert_eq!((bad.status, bad.fields()), (400, vec!["topN", "withMe"]));
}

#[tokio::test]
async fn voids_privacy_and_employer_settings_answer_their_statuses() {
    let edge = start().await;
    let path = "/api/boards/board:w/voids";
    let answer =
        edge.call(Method::POST, path, Some(json!({"member": "ann", "reason": "revoked"}))).await;
    assert_eq!(
        (answer.status, answer.body),
        (201, json!({"created": true, "periods": ["2026-W49"]}))
    );
    let again =
        edge.call(Method::POST, path, Some(json!({"member": "ben", "reason": "revoked"}))).await;
    assert_eq!((again.status, again.body), (200, json!({"created": false, "periods": []})));

    let privacy = edge.call(Method::GET, "/api/me/privacy", None).await;
    assert_eq!(
        (privacy.status, privacy.body),
        (200, json!({"member": "ann", "hideName": false, "pseudonym": "anon-7f3a"}))
    );
    let hidden = edge.call(Method::PUT, "/api/me/privacy", Some(json!({"hideName": true}))).await;
    assert_eq!((hidden.status, &hidden.body["hideName"]), (200, &json!(true)));
    let missing = edge.call(Method::PUT, "/api/me/privacy", Some(json!({}))).await;
    assert_eq!((missing.status, missing.fields()), (400, vec!["hideName"]));

    let path = "/api/employers/acme/board-settings";
    let settings = edge.call(Method::GET, path, None).await;
    assert_eq!(
        (settings.status, settings.body),
        (200, json!({"employerId": "acme", "minMembers": 0}))
    );
    let set = edge.call(Method::PUT, path, Some(json!({"minMembers": 5}))).await;
    assert_eq!((set.status, set.body), (200, json!({"employerId": "acme", "minMembers": 5})));
    let too_many = edge.call(Method::PUT, path, Some(json!({"minMembers": 20000}))).await;
    assert_eq!((too_many.status, too_many.fields()), (400, vec!["minMembers"]));
    assert_eq!(
        edge.calls().iter().map(|(rpc, _)| *rpc).collect::<Vec<_>>(),
        [
            "VoidEntry",
            "VoidEntry",
            "GetPrivacy",
            "SetPrivacy",
            "GetEmployerSettings",
            "SetEmployerSettings",
            "SetEmployerSettings"
        ]
    );
}
