//! The quiz room over a real WebSocket, against a scripted quiz service in this process: the
//! edge's own behaviour (token at the upgrade, one upstream stream per socket with the
//! caller's token, answers, score updates, refusals that keep the socket, close when the
//! upstream ends). The real service's rules are tested end to end in the workspace's
//! `tests/quiz_edge.rs`.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use ewpm_gateway::AppState;
use ewpm_kit::{
    CancellationToken,
    auth::{Role, TokenKeys},
    error::status,
    settings::Settings,
};
use ewpm_proto::quiz::v1::{
    self as qpb,
    quiz_service_server::{QuizService, QuizServiceServer},
    watch_session_response::Event,
};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::mpsc};
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest};
use tonic::{Code, Request, Response, Status};

const SESSION: &str = "0194d3c2-5b1e-7c4f-9a51-2d3e4f5a6b7c";

type Watcher = (String, mpsc::Sender<Result<qpb::WatchSessionResponse, Status>>);

/// A quiz service that knows one session with one question `q-1`, takes one answer per
/// caller and question, and hands each WatchSession stream to the test.
#[derive(Default, Clone)]
struct Scripted {
    watchers: Arc<Mutex<Vec<Watcher>>>,
    answered: Arc<Mutex<HashSet<(String, String)>>>,
}

fn authorization<T>(request: &Request<T>) -> String {
    request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

fn unused<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("not scripted"))
}

#[tonic::async_trait]
impl QuizService for Scripted {
    type WatchSessionStream =
        tokio_stream::wrappers::ReceiverStream<Result<qpb::WatchSessionResponse, Status>>;
    type GetSessionScoresStream =
        tokio_stream::wrappers::ReceiverStream<Result<qpb::GetSessionScoresResponse, Status>>;

    async fn create_quiz(
        &self,
        _: Request<qpb::CreateQuizRequest>,
    ) -> Result<Response<qpb::CreateQuizResponse>, Status> {
        unused()
    }
    async fn get_quiz(
        &self,
        _: Request<qpb::GetQuizRequest>,
    ) -> Result<Response<qpb::GetQuizResponse>, Status> {
        unused()
    }
    async fn list_quizzes(
        &self,
        _: Request<qpb::ListQuizzesRequest>,
    ) -> Result<Response<qpb::ListQuizzesResponse>, Status> {
        unused()
    }
    async fn create_session(
        &self,
        _: Request<qpb::CreateSessionRequest>,
    ) -> Result<Response<qpb::CreateSessionResponse>, Status> {
        unused()
    }
    async fn open_session(
        &self,
        _: Request<qpb::OpenSessionRequest>,
    ) -> Result<Response<qpb::OpenSessionResponse>, Status> {
        unused()
    }
    async fn start_session(
        &self,
        _: Request<qpb::StartSessionRequest>,
    ) -> Result<Response<qpb::StartSessionResponse>, Status> {
        unused()
    }
    async fn reveal_next_question(
        &self,
        _: Request<qpb::RevealNextQuestionRequest>,
    ) -> Result<Response<qpb::RevealNextQuestionResponse>, Status> {
        unused()
    }
    async fn close_question(
        &self,
        _: Request<qpb::CloseQuestionRequest>,
    ) -> Result<Response<qpb::CloseQuestionResponse>, Status> {
        unused()
    }
    async fn finish_session(
        &self,
        _: Request<qpb::FinishSessionRequest>,
    ) -> Result<Response<qpb::FinishSessionResponse>, Status> {
        unused()
    }
    async fn get_session(
        &self,
        _: Request<qpb::GetSessionRequest>,
    ) -> Result<Response<qpb::GetSessionResponse>, Status> {
        unused()
    }
    async fn join_session(
        &self,
        _: Request<qpb::JoinSessionRequest>,
    ) -> Result<Response<qpb::JoinSessionResponse>, Status> {
        unused()
    }

    async fn submit_answer(
        &self,
        request: Request<qpb::SubmitAnswerRequest>,
    ) -> Result<Response<qpb::SubmitAnswerResponse>, Status> {
        let who = authorization(&request);
        let r = request.into_inner();
        if r.question_id != "q-1" {
            return Err(status(Code::InvalidArgument, "QUESTION_NOT_IN_QUIZ", "not this quiz's"));
        }
        if !self.answered.lock().unwrap().insert((who, r.question_id)) {
            return Err(status(Code::AlreadyExists, "ALREADY_ANSWERED", "answered already"));
        }
        let correct = r.answer.is_some_and(|a| a.choices == [0]);
        Ok(Response::new(qpb::SubmitAnswerResponse {
            answer_id: "a-1".into(),
            correct: Some(correct),
            points: if correct { 900.0 } else { 0.0 },
            score: if correct { 900.0 } else { 0.0 },
            streak: i32::from(correct),
            elapsed_ms: 1200,
            accept_time: Some(prost_types::Timestamp { seconds: 1_767_225_601, nanos: 0 }),
        }))
    }

    async fn watch_session(
        &self,
        request: Request<qpb::WatchSessionRequest>,
    ) -> Result<Response<Self::WatchSessionStream>, Status> {
        if request.get_ref().session_id != SESSION {
            return Err(status(Code::NotFound, "SESSION_NOT_FOUND", "no such session"));
        }
        let (tx, rx) = mpsc::channel(16);
        self.watchers.lock().unwrap().push((authorization(&request), tx));
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    async fn export_results(
        &self,
        _: Request<qpb::ExportResultsRequest>,
    ) -> Result<Response<qpb::ExportResultsResponse>, Status> {
        unused()
    }
    async fn get_session_scores(
        &self,
        _: Request<qpb::GetSessionScoresRequest>,
    ) -> Result<Response<Self::GetSessionScoresStream>, Status> {
        unused()
    }
}

struct Edge {
    base: String,
    ws: String,
    keys: TokenKeys,
    state: AppState,
    quiz: Scripted,
    stop: Stop,
}

/// Cancels the edge (the first) and the scripted service (the second) when the test ends.
struct Stop(CancellationToken, CancellationToken);

impl Drop for Stop {
    fn drop(&mut self) {
        self.0.cancel();
        self.1.cancel();
    }
}

async fn start() -> Edge {
    let quiz = Scripted::default();
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc_addr = grpc.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let service = quiz.clone();
    let grpc_shutdown = CancellationToken::new();
    let stop = grpc_shutdown.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(QuizServiceServer::new(service))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(grpc),
                stop.cancelled_owned(),
            )
            .await
            .unwrap();
    });
    let settings = Settings::default();
    let addrs = ewpm_gateway::upstream_names()
        .map(|name| (name.to_string(), format!("http://{grpc_addr}")));
    let state = AppState::connect(
        &addrs.into_iter().collect(),
        TokenKeys::new("room-test", &settings.auth),
        &settings.limits,
    )
    .unwrap();
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_addr = http.local_addr().unwrap();
    tokio::spawn(ewpm_gateway::serve(http, state.clone(), shutdown.clone()));
    Edge {
        base: format!("http://{http_addr}"),
        ws: format!("ws://{http_addr}"),
        keys: TokenKeys::new("room-test", &settings.auth),
        state,
        quiz,
        stop: Stop(shutdown, grpc_shutdown),
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next JSON text message (pings and pongs skipped), within 5 s.
async fn next_json(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("a message within 5 s")
            .expect("the socket is open")
            .unwrap();
        match message {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

impl Edge {
    /// The watchers the service has now, waiting up to 5 s for `n`.
    async fn watchers(&self, n: usize) -> Vec<Watcher> {
        for _ in 0..500 {
            let watchers = self.quiz.watchers.lock().unwrap().clone();
            if watchers.len() >= n {
                return watchers;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the edge opened fewer than {n} WatchSession streams");
    }
}

async fn send(watcher: &Watcher, event: Event) {
    watcher.1.send(Ok(qpb::WatchSessionResponse { event: Some(event) })).await.unwrap();
}

#[tokio::test]
async fn the_room_forwards_events_takes_answers_and_closes_when_the_session_stream_ends() {
    let edge = start().await;
    let token = edge.keys.mint("ann", Role::Employee, None);
    let url = format!("{}/api/quiz-sessions/{SESSION}/ws?top=5&access_token={token}", edge.ws);
    let (mut socket, response) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert_eq!(response.status(), 101);

    // One upstream stream, opened with the caller's token from the query.
    let watchers = edge.watchers(1).await;
    assert_eq!(watchers[0].0, format!("Bearer {token}"));
    let upstream = &watchers[0];

    send(upstream, Event::ParticipantCount(3)).await;
    assert_eq!(next_json(&mut socket).await, json!({"type": "participant_count", "count": 3}));
    send(
        upstream,
        Event::QuestionRevealed(qpb::PlayQuestion {
            id: "q-1".into(),
            kind: qpb::QuestionKind::SingleChoice as i32,
            choices: vec!["yes".into(), "no".into()],
            ..Default::default()
        }),
    )
    .await;
    let revealed = next_json(&mut socket).await;
    assert_eq!(
        (&revealed["type"], &revealed["question"]["kind"]),
        (&json!("question_revealed"), &json!("single_choice"))
    );

    // Garbage is answered and the socket stays open.
    socket.send(Message::text("hello")).await.unwrap();
    let refused = next_json(&mut socket).await;
    assert_eq!(
        (
            &refused["type"],
            &refused["problem"]["status"],
            &refused["problem"]["errors"][0]["field"]
        ),
        (&json!("error"), &json!(400), &json!("message"))
    );
    socket.send(Message::binary(vec![0u8, 159, 146, 150])).await.unwrap();
    assert_eq!(next_json(&mut socket).await["problem"]["status"], 400);
    let long = format!(r#"{{"type":"answer","questionId":"{}","answer":0}}"#, "q".repeat(5000));
    socket.send(Message::text(long)).await.unwrap();
    assert_eq!(next_json(&mut socket).await["problem"]["reason"], "PAYLOAD_TOO_LARGE");
    socket
        .send(Message::text(r#"{"type":"answer","questionId":"q-1","answer":true}"#))
        .await
        .unwrap();
    let refused = next_json(&mut socket).await;
    assert_eq!(
        (&refused["questionId"], &refused["problem"]["errors"][0]["field"]),
        (&json!("q-1"), &json!("answer"))
    );

    // An answer: its receipt, and the caller's score update.
    socket.send(Message::text(r#"{"type":"answer","questionId":"q-1","answer":0}"#)).await.unwrap();
    let mut replies = vec![next_json(&mut socket).await, next_json(&mut socket).await];
    replies.sort_by_key(|r| r["type"].as_str().unwrap_or_default().to_string());
    assert_eq!(
        replies,
        [
            json!({"type": "answer_receipt", "questionId": "q-1", "receipt": {
                "answerId": "a-1", "correct": true, "points": 900.0, "score": 900.0, "streak": 1,
                "elapsedMs": 1200, "acceptTime": "2026-01-01T00:00:01Z"}}),
            json!({"type": "score_update", "update": {"sessionId": SESSION, "questionId": "q-1",
                "answerId": "a-1", "correct": true, "points": 900.0, "score": 900.0, "streak": 1}}),
        ]
    );
    // A second answer: the problem the REST route would give.
    socket.send(Message::text(r#"{"type":"answer","questionId":"q-1","answer":1}"#)).await.unwrap();
    let refused = next_json(&mut socket).await;
    assert_eq!(
        (&refused["type"], &refused["problem"]["status"], &refused["problem"]["reason"]),
        (&json!("error"), &json!(400), &json!("ALREADY_ANSWERED"))
    );

    // Another user's REST answers do not reach ann's socket.
    let bob = edge.keys.mint("bob", Role::Employee, None);
    let path = format!("/api/quiz-sessions/{SESSION}/answers");
    let (status, _) = post(&edge.base, &path, &bob, r#"{"questionId":"q-1","answer":1}"#).await;
    assert_eq!(status, 200);
    let body = format!(r#"{{"quiz_session_id":"{SESSION}","question_id":"q-9","answer":1}}"#);
    let (status, body) = post(&edge.base, "/update-score", &bob, &body).await;
    assert_eq!((status, &body["reason"]), (400, &json!("QUESTION_NOT_IN_QUIZ")));
    // Bob's answer over REST is bob's score update, not ann's: ann's socket gets the board.
    send(
        upstream,
        Event::Leaderboard(qpb::LeaderboardTop { entries: Vec::new(), member_count: 2 }),
    )
    .await;
    assert_eq!(
        next_json(&mut socket).await,
        json!({"type": "leaderboard", "entries": [], "memberCount": 2})
    );

    // The session's stream ends: the socket closes normally.
    drop(watchers);
    edge.quiz.watchers.lock().unwrap().clear();
    let close = tokio::time::timeout(Duration::from_secs(5), socket.next()).await.unwrap();
    match close {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(u16::from(frame.code), 1000)
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    for _ in 0..100 {
        if edge.state.score_updates.subscribers() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(edge.state.score_updates.subscribers(), 0);
}

#[tokio::test]
async fn a_room_upgrade_is_refused_with_problem_json_before_any_socket_exists() {
    let edge = start().await;
    let token = edge.keys.mint("ann", Role::Employee, None);
    let refused = |url: String| async move {
        match tokio_tungstenite::connect_async(url).await {
            Err(tungstenite::Error::Http(response)) => {
                let body: Value =
                    serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
                (
                    response.status().as_u16(),
                    body["reason"].as_str().unwrap_or_default().to_string(),
                )
            }
            other => panic!("expected an HTTP refusal, got {other:?}"),
        }
    };
    let unknown = "0194d3c2-0000-7c4f-9a51-2d3e4f5a6b7c";
    assert_eq!(
        refused(format!("{}/api/quiz-sessions/{unknown}/ws?access_token={token}", edge.ws)).await,
        (404, "SESSION_NOT_FOUND".to_string())
    );
    assert_eq!(
        refused(format!("{}/api/quiz-sessions/{SESSION}/ws", edge.ws)).await,
        (401, "MISSING_TOKEN".to_string())
    );
    assert_eq!(
        refused(format!("{}/api/quiz-sessions/{SESSION}/ws?access_token=x.y.z", edge.ws)).await,
        (401, "INVALID_TOKEN".to_string())
    );
    assert_eq!(
        refused(format!("{}/api/quiz-sessions/{SESSION}/ws?top=0&access_token={token}", edge.ws))
            .await,
        (400, "INVALID_ARGUMENT".to_string())
    );
    // The header works as well as the query.
    let mut request =
        format!("{}/api/quiz-sessions/{SESSION}/ws", edge.ws).into_client_request().unwrap();
    request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (_socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.status(), 101);
}

/// POSTs `body` as JSON to the edge at `base` with `token`; answers the status and the body.
async fn post(base: &str, path: &str, token: &str, body: &str) -> (u16, Value) {
    ewpm_kit::install_tls_provider();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let response = client
        .post(format!("{base}{path}"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_room_closes_with_1001_when_the_edge_shuts_down() {
    let edge = start().await;
    let token = edge.keys.mint("ann", Role::Employee, None);
    let url = format!("{}/api/quiz-sessions/{SESSION}/ws?access_token={token}", edge.ws);
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    edge.watchers(1).await;
    edge.stop.0.cancel();
    let close = tokio::time::timeout(Duration::from_secs(5), socket.next()).await.unwrap();
    match close {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1001),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

#[tokio::test]
async fn a_frame_over_the_protocol_cap_ends_the_socket_and_nothing_else() {
    let edge = start().await;
    let token = edge.keys.mint("ann", Role::Employee, None);
    let url = format!("{}/api/quiz-sessions/{SESSION}/ws?access_token={token}", edge.ws);
    let (mut socket, _) = tokio_tungstenite::connect_async(url.clone()).await.unwrap();
    edge.watchers(1).await;
    socket.send(Message::text("x".repeat(64 * 1024))).await.unwrap();
    let close = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    })
    .await
    .expect("the socket ends within 5 s")
    .expect("a close frame with a code");
    assert_eq!(u16::from(close.code), 1009, "{close:?}");
    // The edge still serves rooms.
    let (mut again, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let watchers = edge.watchers(2).await;
    send(&watchers[1], Event::ParticipantCount(1)).await;
    assert_eq!(next_json(&mut again).await, json!({"type": "participant_count", "count": 1}));
}
