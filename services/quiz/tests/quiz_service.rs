//! The quiz service over gRPC, on SQLite and on PostgreSQL: the seed's codes (concurrent
//! double join and double answer included), what participants may see, scoring and rejoin,
//! the closer, exports, and the outbox relay.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use chrono::{DateTime, TimeDelta, Utc};
use ewpm_kit::{
    CancellationToken,
    auth::Role,
    bus::{Bus, MemoryBus},
    clock::{FixedClock, SharedClock},
    notices::{MemoryNotices, Notices},
    streams::StreamSlots,
};
use ewpm_proto::{
    leaderboard::v1::{SCORE_DELTAS_TOPIC, ScoreDelta},
    quiz::v1::{
        self as pb, quiz_service_client::QuizServiceClient, quiz_service_server::QuizServiceServer,
        watch_session_response::Event,
    },
};
use ewpm_quiz::{
    grpc::QuizGrpc,
    relay::{Relay, close_due},
    service::Quizzes,
    store::{NewAnswer, QuizStore},
    watch::Hub,
};
use ewpm_testkit::{Spawned, TestDb, bearer, reason, spawn_grpc, violations};
use prost::Message;
use sea_orm::{ConnectionTrait, Statement};
use tokio::sync::Notify;
use tonic::{Code, Request, transport::Channel};

#[derive(Clone, Copy, Debug)]
enum Backend {
    Sqlite,
    Postgres,
}

struct Quiz {
    db: TestDb,
    store: QuizStore,
    clock: Arc<FixedClock>,
    notices: Arc<dyn Notices>,
    client: QuizServiceClient<Channel>,
    _server: Spawned,
    streams: CancellationToken,
}

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_900_000_000, 0).unwrap()
}

async fn start(backend: Backend) -> Quiz {
    let modules: &[&'static dyn ewpm_kit::module::Module] = &[&ewpm_quiz::MODULE];
    let db = match backend {
        Backend::Sqlite => TestDb::sqlite(modules).await.unwrap(),
        Backend::Postgres => TestDb::postgres(modules).await.unwrap(),
    };
    let store = QuizStore::new(db.db.clone());
    let clock = FixedClock::new(t0());
    let shared: SharedClock = clock.clone();
    let notices: Arc<dyn Notices> = Arc::new(MemoryNotices::new());
    let quizzes =
        Quizzes::new(store.clone(), shared.clone(), notices.clone(), Arc::new(Notify::new()));
    let streams = CancellationToken::new();
    let hub = Hub::new(
        quizzes.clone(),
        notices.clone(),
        shared,
        None,
        StreamSlots::with_caps("quiz", 16, 1000),
        streams.clone(),
        Duration::from_secs(30),
    );
    tokio::spawn(hub.clone().run_deliveries(streams.clone()));
    tokio::spawn(hub.clone().run_presence(streams.clone()));
    let server = spawn_grpc(|mount, _| {
        mount.add(QuizServiceServer::new(QuizGrpc::new(quizzes, hub)));
    })
    .await
    .unwrap();
    let channel = Channel::from_shared(server.uri()).unwrap().connect().await.unwrap();
    Quiz {
        db,
        store,
        clock,
        notices,
        client: QuizServiceClient::new(channel),
        _server: server,
        streams,
    }
}

fn admin() -> String {
    bearer("admin-1", Role::Admin, None)
}

fn user(n: usize) -> String {
    bearer(&format!("user-{n}"), Role::Employee, Some("acme"))
}

fn req<T>(message: T, token: &str) -> Request<T> {
    ewpm_testkit::request(message, token)
}

fn choice(text: &str, choices: &[&str], correct: &[i32]) -> pb::Question {
    pb::Question {
        text: text.into(),
        kind: pb::QuestionKind::SingleChoice.into(),
        choices: choices.iter().map(|c| c.to_string()).collect(),
        correct_choices: correct.to_vec(),
        ..pb::Question::default()
    }
}

impl Quiz {
    async fn quiz(&mut self, employer: &str, questions: Vec<pb::Question>) -> pb::Quiz {
        self.client
            .create_quiz(req(
                pb::CreateQuizRequest {
                    title: "Wellness trivia".into(),
                    employer_id: employer.into(),
                    questions,
                    idempotency_key: String::new(),
                },
                &admin(),
            ))
            .await
            .unwrap()
            .into_inner()
            .quiz
            .unwrap()
    }

    /// A running session of a three-question quiz for acme, and its questions.
    async fn running(&mut self) -> (String, Vec<pb::Question>) {
        let quiz = self
            .quiz(
                "acme",
                vec![
                    choice("Steps a day?", &["1k", "10k", "100k"], &[1]),
                    choice("Water a day?", &["2 l", "20 l"], &[0]),
                    pb::Question {
                        text: "Capital of France?".into(),
                        kind: pb::QuestionKind::ShortText.into(),
                        accepted_answers: vec!["Paris".into()],
                        ..pb::Question::default()
                    },
                ],
            )
            .await;
        let session = self.session(&quiz.id).await;
        self.host(&session, "open").await.unwrap();
        self.host(&session, "start").await.unwrap();
        (session, quiz.questions)
    }

    async fn session(&mut self, quiz_id: &str) -> String {
        self.client
            .create_session(req(
                pb::CreateSessionRequest { quiz_id: quiz_id.into(), ..Default::default() },
                &admin(),
            ))
            .await
            .unwrap()
            .into_inner()
            .session
            .unwrap()
            .id
    }

    async fn host(&mut self, session: &str, action: &str) -> Result<(), tonic::Status> {
        let id = session.to_string();
        let a = admin();
        match action {
            "open" => self
                .client
                .open_session(req(pb::OpenSessionRequest { session_id: id }, &a))
                .await
                .map(|_| ()),
            "start" => self
                .client
                .start_session(req(pb::StartSessionRequest { session_id: id }, &a))
                .await
                .map(|_| ()),
            "reveal" => self
                .client
                .reveal_next_question(req(pb::RevealNextQuestionRequest { session_id: id }, &a))
                .await
                .map(|_| ()),
            "close" => self
                .client
                .close_question(req(pb::CloseQuestionRequest { session_id: id }, &a))
                .await
                .map(|_| ()),
            "finish" => self
                .client
                .finish_session(req(pb::FinishSessionRequest { session_id: id }, &a))
                .await
                .map(|_| ()),
            other => panic!("no host action {other}"),
        }
    }

    async fn join(&mut self, session: &str, token: &str) -> Result<pb::Participant, tonic::Status> {
        self.client
            .join_session(req(
                pb::JoinSessionRequest { session_id: session.into(), team: String::new() },
                token,
            ))
            .await
            .map(|r| r.into_inner().participant.unwrap())
    }

    async fn answer(
        &mut self,
        session: &str,
        question: &str,
        choices: Vec<i32>,
        text: &str,
        token: &str,
    ) -> Result<pb::SubmitAnswerResponse, tonic::Status> {
        self.client
            .submit_answer(req(
                pb::SubmitAnswerRequest {
                    session_id: session.into(),
                    question_id: question.into(),
                    answer: Some(pb::Answer { choices, text: text.into() }),
                },
                token,
            ))
            .await
            .map(tonic::Response::into_inner)
    }

    async fn view(&mut self, session: &str, token: &str) -> pb::GetSessionResponse {
        self.client
            .get_session(req(pb::GetSessionRequest { session_id: session.into() }, token))
            .await
            .unwrap()
            .into_inner()
    }
}

fn code_and_reason(r: Result<impl std::fmt::Debug, tonic::Status>) -> (Code, String) {
    let status = r.expect_err("expected an error");
    (status.code(), reason(&status))
}

async fn seed_codes(backend: Backend) {
    let mut q = start(backend).await;
    let quiz = q.quiz("acme", vec![choice("Steps?", &["a", "b"], &[1])]).await;
    let session = q.session(&quiz.id).await;

    // Join: unknown, malformed and missing sessions; a session that is not open yet.
    let unknown = uuid::Uuid::now_v7().to_string();
    assert_eq!(
        code_and_reason(q.join(&unknown, &user(1)).await),
        (Code::NotFound, "SESSION_NOT_FOUND".into())
    );
    let bad = q.join("nope", &user(1)).await.unwrap_err();
    assert_eq!(
        (bad.code(), violations(&bad)),
        (Code::InvalidArgument, vec!["session_id".to_string()])
    );
    assert_eq!(q.join("", &user(1)).await.unwrap_err().code(), Code::InvalidArgument);
    assert_eq!(
        code_and_reason(q.join(&session, &user(1)).await),
        (Code::FailedPrecondition, "SESSION_NOT_JOINABLE".into())
    );
    // Another employer's people do not see it at all.
    let globex = bearer("g-1", Role::Employee, Some("globex"));
    q.host(&session, "open").await.unwrap();
    assert_eq!(
        code_and_reason(q.join(&session, &globex).await),
        (Code::NotFound, "SESSION_NOT_FOUND".into())
    );

    let joined = q.join(&session, &user(1)).await.unwrap();
    assert_eq!((joined.user_id.as_str(), joined.score), ("user-1", 0.0));
    assert_eq!(
        code_and_reason(q.join(&session, &user(1)).await),
        (Code::AlreadyExists, "ALREADY_JOINED".into())
    );

    // Two concurrent joins of one user: exactly one succeeds.
    let (mut a, mut b) = (q.client.clone(), q.client.clone());
    let join = |c: &mut QuizServiceClient<Channel>| {
        let mut c = c.clone();
        let s = session.clone();
        async move {
            c.join_session(req(
                pb::JoinSessionRequest { session_id: s, team: String::new() },
                &user(2),
            ))
            .await
        }
    };
    let (r1, r2) = tokio::join!(join(&mut a), join(&mut b));
    let mut outcomes = vec![
        r1.map(|_| "ok".to_string()).unwrap_or_else(|s| reason(&s)),
        r2.map(|_| "ok".to_string()).unwrap_or_else(|s| reason(&s)),
    ];
    outcomes.sort();
    assert_eq!(outcomes, ["ALREADY_JOINED", "ok"]);

    q.host(&session, "start").await.unwrap();
    let question = quiz.questions[0].id.clone();
    // Not a participant: 403; a question of another quiz: 400; not revealed yet: 400.
    assert_eq!(
        code_and_reason(q.answer(&session, &question, vec![1], "", &user(9)).await),
        (Code::PermissionDenied, "NOT_A_PARTICIPANT".into())
    );
    let other = q.quiz("acme", vec![choice("Other?", &["x", "y"], &[0])]).await;
    assert_eq!(
        code_and_reason(q.answer(&session, &other.questions[0].id, vec![0], "", &user(1)).await),
        (Code::InvalidArgument, "QUESTION_NOT_IN_QUIZ".into())
    );
    assert_eq!(
        code_and_reason(q.answer(&session, &question, vec![1], "", &user(1)).await),
        (Code::FailedPrecondition, "QUESTION_NOT_REVEALED".into())
    );
    q.host(&session, "reveal").await.unwrap();
    // A malformed answer names its field and changes nothing.
    let bad = q.answer(&session, &question, vec![7], "", &user(1)).await.unwrap_err();
    assert_eq!(violations(&bad), ["answer.choices"]);

    // Two concurrent answers of one participant: exactly one is taken.
    let answer = |c: &QuizServiceClient<Channel>| {
        let mut c = c.clone();
        let (s, qid) = (session.clone(), question.clone());
        async move {
            c.submit_answer(req(
                pb::SubmitAnswerRequest {
                    session_id: s,
                    question_id: qid,
                    answer: Some(pb::Answer { choices: vec![1], text: String::new() }),
                },
                &user(1),
            ))
            .await
        }
    };
    let (r1, r2) = tokio::join!(answer(&q.client), answer(&q.client));
    let mut outcomes = vec![
        r1.map(|_| "ok".to_string()).unwrap_or_else(|s| reason(&s)),
        r2.map(|_| "ok".to_string()).unwrap_or_else(|s| reason(&s)),
    ];
    outcomes.sort();
    assert_eq!(outcomes, ["ALREADY_ANSWERED", "ok"]);
    let count =
        q.db.db
            .query_one_raw(Statement::from_string(
                q.db.db.get_database_backend(),
                "SELECT COUNT(*) AS n FROM quiz_answers",
            ))
            .await
            .unwrap()
            .unwrap()
            .try_get::<i64>("", "n")
            .unwrap();
    assert_eq!(count, 1, "one answer row");
    let outbox = q.store.outbox_backlog().await.unwrap();
    assert_eq!(outbox, 1, "one outbox row, written with the answer");

    // Closed by the host: a late answer is refused as closed.
    q.host(&session, "close").await.unwrap();
    assert_eq!(
        code_and_reason(q.answer(&session, &question, vec![1], "", &user(2)).await),
        (Code::FailedPrecondition, "QUESTION_CLOSED".into())
    );
    assert_eq!(
        code_and_reason(q.host(&session, "reveal").await),
        (Code::FailedPrecondition, "NO_MORE_QUESTIONS".into())
    );
    // Participants are not hosts.
    let mut c = q.client.clone();
    let r = c
        .finish_session(req(pb::FinishSessionRequest { session_id: session.clone() }, &user(1)))
        .await;
    assert_eq!(r.unwrap_err().code(), Code::PermissionDenied);
    q.host(&session, "finish").await.unwrap();
    assert_eq!(
        code_and_reason(q.join(&session, &user(3)).await),
        (Code::FailedPrecondition, "SESSION_NOT_JOINABLE".into())
    );
    // A rejoin after the end is still "already joined", and the score is intact.
    assert_eq!(
        code_and_reason(q.join(&session, &user(1)).await),
        (Code::AlreadyExists, "ALREADY_JOINED".into())
    );
    q.streams.cancel();
}

#[tokio::test]
async fn the_seeds_codes_on_sqlite() {
    seed_codes(Backend::Sqlite).await;
}

#[tokio::test]
async fn the_seeds_codes_on_postgres() {
    seed_codes(Backend::Postgres).await;
}

async fn no_leaks(backend: Backend) {
    let mut q = start(backend).await;
    let (session, questions) = q.running().await;
    q.join(&session, &user(1)).await.unwrap();
    let mut watch = q
        .client
        .clone()
        .watch_session(req(
            pb::WatchSessionRequest { session_id: session.clone(), top: 0 },
            &user(1),
        ))
        .await
        .unwrap()
        .into_inner();
    // The first events: the session and the participant count; nothing revealed yet.
    let first = watch.message().await.unwrap().unwrap();
    assert!(matches!(first.event, Some(Event::Session(_))), "{first:?}");
    q.host(&session, "reveal").await.unwrap();

    // Participants' view of an open question: no answer anywhere.
    let view = q.view(&session, &user(1)).await;
    assert!(view.host_questions.is_empty());
    assert_eq!(view.questions.len(), 1);
    assert!(view.questions[0].result.is_none(), "no result while open");
    assert!(view.standings.is_empty());
    let revealed = loop {
        let m = watch.message().await.unwrap().unwrap();
        if let Some(Event::QuestionRevealed(q)) = m.event {
            break q;
        }
    };
    assert_eq!((revealed.id.as_str(), revealed.closed), (questions[0].id.as_str(), false));
    // PlayQuestion has no answer fields at all; nothing else was sent with it.
    assert_eq!(revealed.choices, ["1k", "10k", "100k"]);

    // Hosts see the answers.
    let host = q.view(&session, &admin()).await;
    assert_eq!(host.host_questions[0].correct_choices, [1]);

    // Once closed, the result (with the correct choice) goes to everyone.
    q.answer(&session, &questions[0].id, vec![1], "", &user(1)).await.unwrap();
    q.host(&session, "close").await.unwrap();
    let closed = loop {
        let m = watch.message().await.unwrap().unwrap();
        if let Some(Event::QuestionClosed(q)) = m.event {
            break q;
        }
    };
    let result = closed.result.unwrap();
    assert_eq!(
        (result.correct_choices.as_slice(), result.answered, result.correct),
        (&[1][..], 1, 1)
    );
    assert_eq!(result.choice_counts, [0, 1, 0]);
    let view = q.view(&session, &user(1)).await;
    assert_eq!(view.questions[0].result.as_ref().unwrap().correct_choices, [1]);

    // Would-be participants may not watch; the finish ends the stream with the standings.
    let r = q
        .client
        .clone()
        .watch_session(req(
            pb::WatchSessionRequest { session_id: session.clone(), top: 0 },
            &user(5),
        ))
        .await;
    assert_eq!(r.unwrap_err().code(), Code::PermissionDenied);
    q.host(&session, "finish").await.unwrap();
    let finished = loop {
        let m = watch.message().await.unwrap().unwrap();
        if let Some(Event::Finished(f)) = m.event {
            break f;
        }
    };
    assert_eq!(finished.standings[0].user_id, "user-1");
    assert!(watch.message().await.unwrap().is_none(), "the stream ends after the finish");
    q.streams.cancel();
}

#[tokio::test]
async fn participants_never_see_answers_before_the_close_on_sqlite() {
    no_leaks(Backend::Sqlite).await;
}

#[tokio::test]
async fn participants_never_see_answers_before_the_close_on_postgres() {
    no_leaks(Backend::Postgres).await;
}

async fn scoring_and_rejoin(backend: Backend) {
    let mut q = start(backend).await;
    let (session, questions) = q.running().await;
    q.join(&session, &user(1)).await.unwrap();
    q.join(&session, &user(2)).await.unwrap();

    // Question 1 (20 s): user 1 right after 10 s (speed: 750); user 2 wrong (no penalty set).
    q.host(&session, "reveal").await.unwrap();
    q.clock.set(t0() + TimeDelta::seconds(10));
    let r = q.answer(&session, &questions[0].id, vec![1], "", &user(1)).await.unwrap();
    assert_eq!(
        (r.correct, r.points, r.score, r.streak, r.elapsed_ms),
        (Some(true), 750.0, 750.0, 1, 10_000)
    );
    let r = q.answer(&session, &questions[0].id, vec![0], "", &user(2)).await.unwrap();
    assert_eq!((r.correct, r.points, r.streak), (Some(false), 0.0, 0));

    // Question 2 revealed at t0+30: user 1 right at once, with a one-answer streak (+10 %).
    q.clock.set(t0() + TimeDelta::seconds(30));
    q.host(&session, "reveal").await.unwrap();
    let r = q.answer(&session, &questions[1].id, vec![0], "", &user(1)).await.unwrap();
    assert_eq!((r.points, r.score, r.streak), (1100.0, 1850.0, 2));

    // The time limit passes: the closer closes it, and a late answer is refused.
    q.clock.set(t0() + TimeDelta::seconds(51));
    let closed =
        close_due(&q.store, q.notices.as_ref(), &(q.clock.clone() as SharedClock)).await.unwrap();
    assert_eq!(closed, std::slice::from_ref(&session));
    assert_eq!(
        code_and_reason(q.answer(&session, &questions[1].id, vec![0], "", &user(2)).await),
        (Code::FailedPrecondition, "QUESTION_CLOSED".into())
    );

    // A dropped connection and a rejoin: "already joined", and the score is all there.
    assert_eq!(
        code_and_reason(q.join(&session, &user(1)).await),
        (Code::AlreadyExists, "ALREADY_JOINED".into())
    );
    let me = q.view(&session, &user(1)).await.me.unwrap();
    assert_eq!((me.score, me.answered, me.correct, me.streak), (1850.0, 2, 2, 2));

    // Short text: case and spacing do not matter.
    q.clock.set(t0() + TimeDelta::seconds(60));
    q.host(&session, "reveal").await.unwrap();
    let r = q.answer(&session, &questions[2].id, vec![], "  paris ", &user(2)).await.unwrap();
    assert_eq!((r.correct, r.points), (Some(true), 1000.0));

    // Presence-aware close: user 2's stream is the only connection and user 2 answered.
    q.clock.set(t0() + TimeDelta::seconds(61));
    let mut watch = q
        .client
        .clone()
        .watch_session(req(
            pb::WatchSessionRequest { session_id: session.clone(), top: 0 },
            &user(2),
        ))
        .await
        .unwrap()
        .into_inner();
    watch.message().await.unwrap().unwrap();
    // Presence is written off the stream's path, promptly: the closer sees it.
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let clock = q.clock.clone() as SharedClock;
            let closed = close_due(&q.store, q.notices.as_ref(), &clock).await.unwrap();
            if !closed.is_empty() {
                return closed;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("closed once presence is written");
    assert_eq!(closed, std::slice::from_ref(&session), "everyone connected answered: closed early");

    // Exports: per participant (ranked) and per question.
    let csv = q
        .client
        .export_results(req(
            pb::ExportResultsRequest {
                session_id: session.clone(),
                kind: pb::ExportKind::Participants.into(),
            },
            &admin(),
        ))
        .await
        .unwrap()
        .into_inner()
        .csv;
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines,
        ["rank,user_id,team,score,answered,correct", "1,user-1,,1850,2,2", "2,user-2,,1000,2,1"]
    );
    let csv = q
        .client
        .export_results(req(
            pb::ExportResultsRequest {
                session_id: session.clone(),
                kind: pb::ExportKind::Questions.into(),
            },
            &admin(),
        ))
        .await
        .unwrap()
        .into_inner()
        .csv;
    assert_eq!(csv.lines().count(), 4, "{csv}");
    assert!(csv.lines().nth(1).unwrap().starts_with("0,"), "{csv}");
    let denied = q
        .client
        .export_results(req(
            pb::ExportResultsRequest { session_id: session.clone(), kind: 0 },
            &user(1),
        ))
        .await;
    assert_eq!(denied.unwrap_err().code(), Code::PermissionDenied);
    q.streams.cancel();
}

#[tokio::test]
async fn scoring_closing_and_rejoin_on_sqlite() {
    scoring_and_rejoin(Backend::Sqlite).await;
}

#[tokio::test]
async fn scoring_closing_and_rejoin_on_postgres() {
    scoring_and_rejoin(Backend::Postgres).await;
}

async fn relays(backend: Backend) {
    let mut q = start(backend).await;
    let (session, questions) = q.running().await;
    let users = 40;
    for u in 0..users {
        q.join(&session, &user(u)).await.unwrap();
    }
    q.host(&session, "reveal").await.unwrap();
    let mut answers = Vec::new();
    for u in 0..users {
        let pick = i32::try_from(u % 3).unwrap();
        answers.push(q.answer(&session, &questions[0].id, vec![pick], "", &user(u)).await.unwrap());
    }
    // Two relays at once, several rounds each: every answer is published exactly once (no
    // relay died), in the order the answers committed.
    let bus = MemoryBus::new();
    bus.ensure_group(SCORE_DELTAS_TOPIC, "test").await.unwrap();
    let relay = |batch| Relay {
        store: q.store.clone(),
        bus: bus.clone(),
        clock: q.clock.clone(),
        batch,
        poll: Duration::from_millis(10),
        retention: Duration::from_secs(3600),
        answered: Arc::new(Notify::new()),
    };
    let (a, b) = (relay(7), relay(5));
    let mut published = 0;
    for _ in 0..20 {
        let (x, y) = tokio::join!(a.round(), b.round());
        published += x.unwrap() + y.unwrap();
    }
    assert_eq!(published, users);
    assert_eq!(q.store.outbox_backlog().await.unwrap(), 0);
    let got = bus.receive(SCORE_DELTAS_TOPIC, "test", "t", 1000, Duration::ZERO).await.unwrap();
    let deltas: Vec<ScoreDelta> =
        got.iter().map(|m| ScoreDelta::decode(m.payload.as_slice()).unwrap()).collect();
    let ids: Vec<&str> = deltas.iter().map(|d| d.event_id.as_str()).collect();
    let expected: Vec<&str> = answers.iter().map(|a| a.answer_id.as_str()).collect();
    assert_eq!(ids, expected, "each answer once, in commit order");
    let sums: BTreeMap<&str, f64> = deltas.iter().map(|d| (d.member.as_str(), d.delta)).collect();
    assert_eq!(sums.len(), users);
    assert!(deltas.iter().all(|d| d.board == format!("quiz:{session}")));
    for (d, a) in deltas.iter().zip(&answers) {
        assert_eq!(d.delta, a.points);
    }
    q.streams.cancel();
}

#[tokio::test]
async fn relays_publish_each_answer_once_in_order_on_sqlite() {
    relays(Backend::Sqlite).await;
}

#[tokio::test]
async fn relays_publish_each_answer_once_in_order_on_postgres() {
    relays(Backend::Postgres).await;
}

#[tokio::test]
async fn authoring_names_every_bad_field_and_checks_the_author() {
    let mut q = start(Backend::Sqlite).await;
    let bad = q
        .client
        .create_quiz(req(
            pb::CreateQuizRequest {
                title: " ".into(),
                employer_id: "acme".into(),
                questions: vec![
                    pb::Question { text: "x".into(), kind: 0, ..Default::default() },
                    pb::Question {
                        text: "y".into(),
                        kind: pb::QuestionKind::MultipleChoice.into(),
                        choices: vec!["a".into()],
                        time_limit_secs: 1,
                        ..Default::default()
                    },
                ],
                idempotency_key: String::new(),
            },
            &admin(),
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let fields = violations(&bad);
    for f in [
        "title",
        "questions[0].kind",
        "questions[1].choices",
        "questions[1].correct_choices",
        "questions[1].time_limit_secs",
    ] {
        assert!(fields.iter().any(|x| x == f), "{f} not in {fields:?}");
    }
    // Employer admins author their own employer's quizzes only; employees none.
    let globex_admin = bearer("ga", Role::EmployerAdmin, Some("globex"));
    let request = |employer: &str, token: &str| {
        req(
            pb::CreateQuizRequest {
                title: "t".into(),
                employer_id: employer.into(),
                questions: vec![choice("q", &["a", "b"], &[0])],
                idempotency_key: "k1".into(),
            },
            token,
        )
    };
    assert_eq!(
        q.client.create_quiz(request("acme", &globex_admin)).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    assert_eq!(
        q.client.create_quiz(request("globex", &user(1))).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    // A retry with the same key returns the first quiz; another body under it is refused.
    let first = q
        .client
        .create_quiz(request("globex", &globex_admin))
        .await
        .unwrap()
        .into_inner()
        .quiz
        .unwrap();
    let again = q
        .client
        .create_quiz(request("globex", &globex_admin))
        .await
        .unwrap()
        .into_inner()
        .quiz
        .unwrap();
    assert_eq!(first.id, again.id);
    let reused = q.client.create_quiz(request("", &globex_admin)).await.unwrap_err();
    assert_eq!(reused.code(), Code::PermissionDenied, "no employer: admins only");
    let mut other = request("globex", &globex_admin);
    other.get_mut().title = "different".into();
    assert_eq!(reason(&q.client.create_quiz(other).await.unwrap_err()), "IDEMPOTENCY_KEY_REUSED");
    // Their quizzes are theirs: acme's admin cannot read globex's.
    let acme_admin = bearer("aa", Role::EmployerAdmin, Some("acme"));
    let r = q.client.get_quiz(req(pb::GetQuizRequest { id: first.id.clone() }, &acme_admin)).await;
    assert_eq!(r.unwrap_err().code(), Code::NotFound);
    let list = q
        .client
        .list_quizzes(req(pb::ListQuizzesRequest::default(), &globex_admin))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.quizzes.len(), 1);
    q.streams.cancel();
}

#[tokio::test]
async fn team_mode_ranks_teams_by_their_members_average() {
    let mut q = start(Backend::Sqlite).await;
    let quiz = q.quiz("acme", vec![choice("Steps?", &["a", "b"], &[1])]).await;
    let session = q
        .client
        .create_session(req(
            pb::CreateSessionRequest {
                quiz_id: quiz.id.clone(),
                team_mode: true,
                scoring: Some(pb::ScoringRules { accuracy_only: true, ..Default::default() }),
                ..Default::default()
            },
            &admin(),
        ))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap()
        .id;
    q.host(&session, "open").await.unwrap();
    let join =
        |team: &str| pb::JoinSessionRequest { session_id: session.clone(), team: team.into() };
    let missing = q.client.join_session(req(join(""), &user(1))).await.unwrap_err();
    assert_eq!(violations(&missing), ["team"]);
    // Red: three players, one right; blue: one player, right. Blue wins on the average.
    for (u, team) in [(1, "red"), (2, "red"), (3, "red"), (4, "blue")] {
        q.client.join_session(req(join(team), &user(u))).await.unwrap();
    }
    q.host(&session, "start").await.unwrap();
    q.host(&session, "reveal").await.unwrap();
    q.clock.set(t0() + TimeDelta::seconds(15));
    for (u, pick) in [(1, 1), (2, 0), (3, 0), (4, 1)] {
        let r = q.answer(&session, &quiz.questions[0].id, vec![pick], "", &user(u)).await.unwrap();
        assert_eq!(
            r.points,
            if pick == 1 { 1000.0 } else { 0.0 },
            "accuracy only: no speed factor"
        );
    }
    let finished = q
        .client
        .finish_session(req(pb::FinishSessionRequest { session_id: session.clone() }, &admin()))
        .await
        .unwrap()
        .into_inner();
    let teams: Vec<(i32, &str, f64, i32)> =
        finished.teams.iter().map(|t| (t.rank, t.team.as_str(), t.score, t.members)).collect();
    assert!((teams[1].2 - 1000.0 / 3.0).abs() < 1e-9, "{teams:?}");
    assert_eq!(
        (teams[0], (teams[1].0, teams[1].1, teams[1].3)),
        ((1, "blue", 1000.0, 1), (2, "red", 3))
    );
    // Not in team mode: a team is refused by name.
    let plain = q.session(&quiz.id).await;
    q.host(&plain, "open").await.unwrap();
    let r = q
        .client
        .join_session(req(
            pb::JoinSessionRequest { session_id: plain, team: "red".into() },
            &user(1),
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&r), ["team"]);
    // Rebuild facts: admins and services only, every answer with its id.
    let denied = q
        .client
        .get_session_scores(req(
            pb::GetSessionScoresRequest { session_id: session.clone() },
            &user(1),
        ))
        .await;
    assert_eq!(denied.unwrap_err().code(), Code::PermissionDenied);
    let mut stream = q
        .client
        .get_session_scores(req(
            pb::GetSessionScoresRequest { session_id: session.clone() },
            &admin(),
        ))
        .await
        .unwrap()
        .into_inner();
    let mut answers = 0;
    while let Some(chunk) = stream.message().await.unwrap() {
        answers += chunk.participants.iter().map(|p| p.answers.len()).sum::<usize>();
    }
    assert_eq!(answers, 4);
    q.streams.cancel();
}

#[tokio::test]
async fn speed_counts_from_when_the_question_reached_the_participants_connection() {
    let mut q = start(Backend::Sqlite).await;
    let (session, questions) = q.running().await;
    let me = q.join(&session, &user(1)).await.unwrap();
    q.join(&session, &user(2)).await.unwrap();
    // User 2 watches: handing them the revealed question records the moment.
    let mut watch = q
        .client
        .clone()
        .watch_session(req(
            pb::WatchSessionRequest { session_id: session.clone(), top: 0 },
            &user(2),
        ))
        .await
        .unwrap()
        .into_inner();
    q.host(&session, "reveal").await.unwrap();
    loop {
        let m = watch.message().await.unwrap().unwrap();
        if matches!(m.event, Some(Event::QuestionRevealed(_))) {
            break;
        }
    }
    let recorded = async {
        loop {
            let n =
                q.db.db
                    .query_one_raw(Statement::from_string(
                        q.db.db.get_database_backend(),
                        "SELECT COUNT(*) AS n FROM quiz_deliveries",
                    ))
                    .await
                    .unwrap()
                    .unwrap()
                    .try_get::<i64>("", "n")
                    .unwrap();
            if n == 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), recorded).await.expect("delivery recorded");
    // User 1's connection got it 1.5 s after the reveal (a slow network); they answer 5 s
    // after the reveal: 3.5 s count.
    q.store
        .record_deliveries(&[(
            me.id.clone(),
            questions[0].id.clone(),
            t0() + TimeDelta::milliseconds(1500),
        )])
        .await
        .unwrap();
    q.clock.set(t0() + TimeDelta::seconds(5));
    let r = q.answer(&session, &questions[0].id, vec![1], "", &user(1)).await.unwrap();
    assert_eq!(r.elapsed_ms, 3500);
    // User 2's stream got it at the reveal itself (the fixed clock): all 5 s count.
    let r = q.answer(&session, &questions[0].id, vec![1], "", &user(2)).await.unwrap();
    assert_eq!(r.elapsed_ms, 5000);
    q.streams.cancel();
}

async fn batch_semantics(backend: Backend) {
    let mut q = start(backend).await;
    let (session, questions) = q.running().await;
    let p = q.join(&session, &user(1)).await.unwrap();
    let other = q.join(&session, &user(2)).await.unwrap();
    let answer = |participant: &pb::Participant, question: usize, score: f64| NewAnswer {
        id: uuid::Uuid::now_v7().to_string(),
        participant_id: participant.id.clone(),
        session_id: session.clone(),
        user_id: participant.user_id.clone(),
        question_id: questions[question].id.clone(),
        position: i32::try_from(question).unwrap(),
        answer: "1".into(),
        correct: Some(true),
        score,
        streak: 1,
        elapsed_ms: 0,
        at: t0(),
    };
    let board = format!("quiz:{session}");
    // In one batch: the same answer twice (the second is refused), the same participant on
    // two questions (both count, in order), and another participant.
    let batch = vec![
        (answer(&p, 0, 100.0), board.clone()),
        (answer(&p, 0, 999.0), board.clone()),
        (answer(&p, 1, 50.0), board.clone()),
        (answer(&other, 0, 7.0), board.clone()),
    ];
    let scores = q.store.answers(&batch).await.unwrap();
    assert_eq!(scores, [Some(100.0), None, Some(150.0), Some(7.0)]);
    // Already stored: refused in a later batch too.
    let again = q.store.answers(&[(answer(&other, 0, 1.0), board.clone())]).await.unwrap();
    assert_eq!(again, [None]);
    assert_eq!(q.store.outbox_backlog().await.unwrap(), 3, "one outbox row per stored answer");
    let me = q.view(&session, &user(1)).await.me.unwrap();
    assert_eq!((me.score, me.answered, me.correct), (150.0, 2, 2));
    q.streams.cancel();
}

#[tokio::test]
async fn a_batch_of_answers_counts_each_once_on_sqlite() {
    batch_semantics(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_batch_of_answers_counts_each_once_on_postgres() {
    batch_semantics(Backend::Postgres).await;
}
