//! The live quiz end to end as separate processes on PostgreSQL + Redis: `ewpm serve quiz`
//! with its relay off, two `ewpm serve quiz-relay`, the leaderboard and the rest of the mesh.
//! 1,000 participants answer 20 questions; one relay is SIGKILLed mid-run. The board
//! `quiz:<session>` must equal the SQL sum of every participant's answers, each counted once.

mod common;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use common::{Mesh, admin, wait_serving};
use ewpm_kit::auth::Role;
use ewpm_proto::{
    leaderboard::v1::{
        GetLeaderboardRequest, leaderboard_service_client::LeaderboardServiceClient,
    },
    quiz::v1::{self as pb, quiz_service_client::QuizServiceClient},
};
use ewpm_testkit::{OwnRedis, Proc, TestDb, bearer, free_port, servers};
use futures::StreamExt;
use sea_orm::{ConnectionTrait, Statement};
use tonic::{Request, transport::Channel};

const PARTICIPANTS: usize = 1000;
const QUESTIONS: usize = 20;
const CONCURRENCY: usize = 48;

fn req<T>(message: T, token: &str) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut().insert("authorization", token.parse().unwrap());
    r
}

fn player(n: usize) -> String {
    bearer(&format!("player-{n:04}"), Role::Employee, Some("acme"))
}

/// Creates a quiz of `questions` for acme and an OPEN session of it, as the admin.
async fn open_session(
    client: &mut QuizServiceClient<Channel>,
    title: &str,
    questions: Vec<pb::Question>,
) -> (pb::Quiz, String) {
    let r = pb::CreateQuizRequest {
        title: title.into(),
        employer_id: "acme".into(),
        questions,
        idempotency_key: String::new(),
    };
    let quiz = client.create_quiz(req(r, &admin())).await.unwrap().into_inner().quiz.unwrap();
    let r = pb::CreateSessionRequest { quiz_id: quiz.id.clone(), ..Default::default() };
    let session =
        client.create_session(req(r, &admin())).await.unwrap().into_inner().session.unwrap().id;
    let r = pb::OpenSessionRequest { session_id: session.clone() };
    client.open_session(req(r, &admin())).await.unwrap();
    (quiz, session)
}

/// Every participant's total on the board, read through the leaderboard service.
async fn board(mesh: &Mesh, session: &str) -> BTreeMap<String, f64> {
    let mut client = LeaderboardServiceClient::new(Mesh::channel(mesh.leaderboard).await);
    let mut totals = BTreeMap::new();
    let mut token = String::new();
    loop {
        let page = client
            .get_leaderboard(req(
                GetLeaderboardRequest {
                    board: format!("quiz:{session}"),
                    page_size: 100,
                    page_token: token.clone(),
                    ..Default::default()
                },
                &admin(),
            ))
            .await
            .unwrap()
            .into_inner();
        for e in page.entries {
            totals.insert(e.member, e.score);
        }
        if page.next_page_token.is_empty() {
            return totals;
        }
        token = page.next_page_token;
    }
}

/// Every participant's sum of answer scores in SQL, and the number of answers.
async fn sql(mesh: &Mesh, session: &str) -> (BTreeMap<String, f64>, i64) {
    let db = &mesh.db.db;
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            format!(
                "SELECT p.user_id AS u, SUM(a.score) AS s, COUNT(*) AS n FROM quiz_answers a \
                 JOIN quiz_participants p ON p.id = a.participant_id \
                 WHERE a.session_id = '{session}' GROUP BY p.user_id"
            ),
        ))
        .await
        .unwrap();
    let mut totals = BTreeMap::new();
    let mut n = 0;
    for r in rows {
        n += r.try_get::<i64>("", "n").unwrap();
        totals.insert(r.try_get("", "u").unwrap(), r.try_get("", "s").unwrap());
    }
    (totals, n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_players_twenty_questions_two_relays_one_killed_every_answer_counted_once() {
    let quiz_port = free_port();
    let db = TestDb::postgres_unmigrated().await.unwrap();
    let env = vec![
        ("EWPM_SERVICES__QUIZ".to_string(), format!("http://127.0.0.1:{quiz_port}")),
        ("EWPM_QUIZ__RELAY_POLL_MS".to_string(), "20".to_string()),
        ("EWPM_QUIZ__RELAY_BATCH".to_string(), "50".to_string()),
        // The load is a few callers standing in for a thousand.
        ("EWPM_LIMITS__RATE_PER_SEC".to_string(), "0".to_string()),
    ];
    let mut mesh = Mesh::start_on(db, servers().redis_url.clone(), env, false, false).await;
    mesh.spawn(&["serve", "quiz"], quiz_port, &[("EWPM_QUIZ__RELAY_ENABLED", "false")]);
    let mut doomed = Proc(mesh.spawn_child(&["serve", "quiz-relay"], free_port(), &[]));
    mesh.spawn(&["serve", "quiz-relay"], free_port(), &[]);
    wait_serving(quiz_port, "ewpm.quiz.v1.QuizService").await;

    let channel = Mesh::channel(quiz_port).await;
    let mut client = QuizServiceClient::new(channel.clone());
    let questions = (0..QUESTIONS)
        .map(|i| pb::Question {
            text: format!("Question {i}?"),
            kind: pb::QuestionKind::SingleChoice.into(),
            choices: vec!["a".into(), "b".into(), "c".into(), "d".into()],
            correct_choices: vec![i32::try_from(i % 4).unwrap()],
            time_limit_secs: 600,
            wrong_penalty: if i % 5 == 0 { 100 } else { 0 },
            ..Default::default()
        })
        .collect();
    let (quiz, session) = open_session(&mut client, "Load", questions).await;

    let joined = futures::stream::iter(0..PARTICIPANTS)
        .map(|n| {
            let mut c = client.clone();
            let s = session.clone();
            async move {
                c.join_session(req(
                    pb::JoinSessionRequest { session_id: s, team: String::new() },
                    &player(n),
                ))
                .await
            }
        })
        .buffer_unordered(CONCURRENCY)
        .filter(|r| std::future::ready(r.is_ok()))
        .count()
        .await;
    assert_eq!(joined, PARTICIPANTS);
    client
        .start_session(req(pb::StartSessionRequest { session_id: session.clone() }, &admin()))
        .await
        .unwrap();

    let mut taken = 0usize;
    for (i, q) in quiz.questions.iter().enumerate() {
        client
            .reveal_next_question(req(
                pb::RevealNextQuestionRequest { session_id: session.clone() },
                &admin(),
            ))
            .await
            .unwrap();
        if i == QUESTIONS / 2 {
            // Mid-run, while the relays are busy with the backlog: SIGKILL one.
            doomed.0.kill().unwrap();
            doomed.0.wait().unwrap();
        }
        let ok = futures::stream::iter(0..PARTICIPANTS)
            .map(|n| {
                let mut c = client.clone();
                let (s, qid) = (session.clone(), q.id.clone());
                let pick = i32::try_from((n + i) % 4).unwrap();
                async move {
                    c.submit_answer(req(
                        pb::SubmitAnswerRequest {
                            session_id: s,
                            question_id: qid,
                            answer: Some(pb::Answer { choices: vec![pick], text: String::new() }),
                        },
                        &player(n),
                    ))
                    .await
                }
            })
            .buffer_unordered(CONCURRENCY)
            .filter(|r| {
                std::future::ready(
                    r.as_ref().map_err(|e| eprintln!("answer refused: {e:?}")).is_ok(),
                )
            })
            .count()
            .await;
        taken += ok;
    }
    assert_eq!(taken, PARTICIPANTS * QUESTIONS, "every answer taken");
    client
        .finish_session(req(pb::FinishSessionRequest { session_id: session.clone() }, &admin()))
        .await
        .unwrap();

    let (totals, answers) = sql(&mesh, &session).await;
    assert_eq!(answers, i64::try_from(PARTICIPANTS * QUESTIONS).unwrap());
    assert_eq!(totals.len(), PARTICIPANTS);
    // The participants' running totals agree with their answers.
    let standings = client
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
    for line in standings.lines().skip(1) {
        let cols: Vec<&str> = line.split(',').collect();
        assert_eq!(cols[3].parse::<f64>().unwrap(), totals[cols[1]], "{line}");
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let on_board = board(&mesh, &session).await;
        if on_board == totals {
            break;
        }
        if Instant::now() > deadline {
            let differing: Vec<_> =
                totals.iter().filter(|(k, v)| on_board.get(*k) != Some(*v)).take(5).collect();
            panic!("board {} members vs SQL {}; e.g. {differing:?}", on_board.len(), totals.len());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The board is a cache of the quiz's facts: lost, it is rebuilt from the quiz service
    // (GetSessionScores) and equals SQL again.
    let redis = ewpm_kit::redis::connect(&mesh.redis_url).await.unwrap();
    let key = format!("{}lb:{{quiz:{session}}}", mesh.prefix);
    let keys = vec![key.clone(), format!("{key}:seen"), format!("{key}:ready")];
    let deleted: i64 = fred::prelude::KeysInterface::del(&redis, keys).await.unwrap();
    assert_eq!(deleted, 3, "the board, its dedupe set and its ready mark were there");
    assert_eq!(board(&mesh, &session).await, totals, "rebuilt from the quiz service");
    let db = &mesh.db.db;
    let unpublished = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT COUNT(*) AS n FROM quiz_outbox WHERE published_at IS NULL",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<i64>("", "n")
        .unwrap();
    assert_eq!(unpublished, 0, "every outbox row published");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn answers_taken_while_redis_is_down_reach_the_board_once_it_is_back() {
    let mut redis = OwnRedis::start().unwrap();
    let quiz_port = free_port();
    let db = TestDb::postgres_unmigrated().await.unwrap();
    let env = vec![
        ("EWPM_SERVICES__QUIZ".to_string(), format!("http://127.0.0.1:{quiz_port}")),
        ("EWPM_QUIZ__RELAY_POLL_MS".to_string(), "50".to_string()),
    ];
    let mut mesh = Mesh::start_on(db, redis.url.clone(), env, false, false).await;
    mesh.spawn(&["serve", "quiz"], quiz_port, &[]);
    wait_serving(quiz_port, "ewpm.quiz.v1.QuizService").await;
    let mut client = QuizServiceClient::new(Mesh::channel(quiz_port).await);
    let question = pb::Question {
        text: "Steps?".into(),
        kind: pb::QuestionKind::SingleChoice.into(),
        choices: vec!["a".into(), "b".into()],
        correct_choices: vec![1],
        time_limit_secs: 600,
        ..Default::default()
    };
    let (quiz, session) = open_session(&mut client, "Faults", vec![question]).await;
    for n in 0..20 {
        let r = pb::JoinSessionRequest { session_id: session.clone(), team: String::new() };
        client.join_session(req(r, &player(n))).await.unwrap();
    }
    let r = pb::StartSessionRequest { session_id: session.clone() };
    client.start_session(req(r, &admin())).await.unwrap();
    let r = pb::RevealNextQuestionRequest { session_id: session.clone() };
    client.reveal_next_question(req(r, &admin())).await.unwrap();
    // Redis dies: answers still commit (with their outbox rows) in PostgreSQL.
    redis.kill();
    for n in 0..20 {
        let pick = i32::from(n % 2 == 0);
        let r = pb::SubmitAnswerRequest {
            session_id: session.clone(),
            question_id: quiz.questions[0].id.clone(),
            answer: Some(pb::Answer { choices: vec![pick], text: String::new() }),
        };
        client.submit_answer(req(r, &player(n))).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.up().unwrap();
    let (totals, answers) = sql(&mesh, &session).await;
    assert_eq!(answers, 20);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let client = LeaderboardServiceClient::new(Mesh::channel(mesh.leaderboard).await);
        let page = client
            .clone()
            .get_leaderboard(req(
                GetLeaderboardRequest {
                    board: format!("quiz:{session}"),
                    page_size: 100,
                    page_token: String::new(),
                    ..Default::default()
                },
                &admin(),
            ))
            .await;
        if let Ok(page) = page {
            let on_board: BTreeMap<String, f64> =
                page.into_inner().entries.into_iter().map(|e| (e.member, e.score)).collect();
            if on_board == totals {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the board did not catch up within 60 s of Redis returning"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
