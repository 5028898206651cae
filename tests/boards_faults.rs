//! `board:` boards on the mesh (separate processes, their own PostgreSQL and Redis), through
//! the faults users meet, with nobody intervening:
//!
//! - the leaderboard process SIGKILLed while scores pour in, clients retrying with the same
//!   event ids: every score stored once, the board equal to SQL;
//! - Redis SIGKILLed and back empty: scores are still taken (stored in SQL), reads answer
//!   UNAVAILABLE meanwhile (never an internal error), then the board is rebuilt equal to SQL;
//! - PostgreSQL stopped: the board is still read (from Redis), scores answer UNAVAILABLE, then
//!   are taken again.

mod common;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use common::Mesh;
use ewpm_kit::auth::Role;
use ewpm_proto::leaderboard::v1::{
    self as pb, leaderboard_service_client::LeaderboardServiceClient,
};
use ewpm_testkit::{TestDb, bearer, request};
use sea_orm::{ConnectionTrait, Statement};
use tonic::{Code, transport::Channel};

const BOARD: &str = "board:steps";

fn admin() -> String {
    bearer("root", Role::Admin, None)
}

fn client(port: u16) -> LeaderboardServiceClient<Channel> {
    LeaderboardServiceClient::new(
        Channel::from_shared(format!("http://127.0.0.1:{port}")).unwrap().connect_lazy(),
    )
}

fn score(i: usize) -> pb::SubmitScoreRequest {
    pb::SubmitScoreRequest {
        board: BOARD.into(),
        member: format!("m{}", i % 9),
        score: (i % 7 + 1) as f64,
        event_id: format!("e{i}"),
        ..Default::default()
    }
}

/// Submits scores `range`, each retried (same event id) until it is taken; the codes of the
/// failed tries.
async fn submit_all(port: u16, range: std::ops::Range<usize>) -> Vec<Code> {
    let mut failures = Vec::new();
    for i in range {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match client(port).submit_score(request(score(i), &admin())).await {
                Ok(_) => break,
                Err(status) => {
                    failures.push(status.code());
                    assert!(Instant::now() < deadline, "score {i} not taken: {status:?}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    failures
}

/// Per-member sums of the stored facts, by SQL.
async fn sql_sums(mesh: &Mesh) -> (BTreeMap<String, f64>, i64) {
    let db = &mesh.db.db;
    let backend = db.get_database_backend();
    let rows = db
        .query_all_raw(Statement::from_string(
            backend,
            format!("SELECT member, SUM(score) AS s, COUNT(*) AS n FROM lb_facts WHERE board = '{BOARD}' GROUP BY member"),
        ))
        .await
        .unwrap();
    let mut sums = BTreeMap::new();
    let mut n = 0;
    for r in rows {
        sums.insert(r.try_get::<String>("", "member").unwrap(), r.try_get::<f64>("", "s").unwrap());
        n += r.try_get::<i64>("", "n").unwrap();
    }
    (sums, n)
}

/// Waits until the board read over gRPC equals SQL's sums of `facts` facts.
async fn board_equals_sql(mesh: &Mesh, facts: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (sums, n) = sql_sums(mesh).await;
        assert_eq!(n, facts, "facts stored");
        let r =
            pb::GetLeaderboardRequest { board: BOARD.into(), page_size: 100, ..Default::default() };
        let read = client(mesh.leaderboard).get_leaderboard(request(r, &admin())).await;
        let got: Option<BTreeMap<String, f64>> = read
            .ok()
            .map(|r| r.into_inner().entries.into_iter().map(|e| (e.member, e.score)).collect());
        if got.as_ref() == Some(&sums) {
            return;
        }
        assert!(Instant::now() < deadline, "board {got:?} never equalled SQL {sums:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_board_rides_out_a_killed_leaderboard_redis_loss_and_a_postgres_outage() {
    let mut redis = ewpm_testkit::OwnRedis::start().unwrap();
    let pg = ewpm_testkit::OwnPostgres::start().unwrap();
    let db = TestDb::postgres_unmigrated_on(&pg.url).await.unwrap();
    let env = vec![("EWPM_LIMITS__RATE_PER_SEC".to_string(), "0".to_string())];
    let mut mesh = Mesh::start_on(db, redis.url.clone(), env, false, false).await;
    let port = mesh.leaderboard;
    let definition = pb::BoardDefinition { title: "Steps".into(), ..Default::default() };
    client(port)
        .create_board(request(
            pb::CreateBoardRequest { board_id: "steps".into(), definition: Some(definition) },
            &admin(),
        ))
        .await
        .unwrap();
    submit_all(port, 0..50).await;
    board_equals_sql(&mesh, 50).await;

    // The leaderboard process is SIGKILLed in the middle of the load, and started again.
    let load = tokio::spawn(async move { submit_all(port, 50..400).await });
    tokio::time::sleep(Duration::from_millis(700)).await;
    // The mesh's processes: challenge, progress, leaderboard, incentive, gateway.
    let leaderboard = 2;
    mesh.procs[leaderboard].0.kill().unwrap();
    mesh.procs[leaderboard].0.wait().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    mesh.spawn(&["serve", "leaderboard"], port, &[]);
    let failures = load.await.unwrap();
    assert!(!failures.is_empty(), "the kill happened during the load");
    board_equals_sql(&mesh, 400).await;

    // Redis is SIGKILLed: scores are still taken (kept in SQL; each waits out one Redis
    // command timeout); reads answer UNAVAILABLE, never INTERNAL. Redis comes back with its
    // data: the relay applies the scores taken meanwhile.
    redis.kill();
    let during: Vec<_> = (400..420)
        .map(|i| {
            tokio::spawn(
                async move { client(port).submit_score(request(score(i), &admin())).await },
            )
        })
        .collect();
    for call in during {
        let taken = call.await.unwrap().unwrap().into_inner();
        assert!(taken.created && taken.entry.is_none(), "{taken:?}");
    }
    let r = pb::GetLeaderboardRequest { board: BOARD.into(), ..Default::default() };
    let err = client(port).get_leaderboard(request(r, &admin())).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    redis.up().unwrap();
    board_equals_sql(&mesh, 420).await;
    // Redis loses everything (FLUSHALL): the board is rebuilt from SQL on its next read.
    let conn = ewpm_kit::redis::connect(&redis.url).await.unwrap();
    let _: () = fred::prelude::ClientLike::flushall(&conn, false).await.unwrap();
    // (Past the 100 ms the process serves a page it read from memory.)
    tokio::time::sleep(Duration::from_millis(300)).await;
    board_equals_sql(&mesh, 420).await;

    // PostgreSQL stops: the board is still read; scores answer UNAVAILABLE until it is back.
    pg.down().unwrap();
    let r = pb::GetLeaderboardRequest { board: BOARD.into(), page_size: 100, ..Default::default() };
    let during = client(port).get_leaderboard(request(r, &admin())).await.unwrap().into_inner();
    assert_eq!(during.entries.len(), 9);
    let err = client(port).submit_score(request(score(420), &admin())).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    pg.up().unwrap();
    assert!(submit_all(port, 420..430).await.is_empty());
    board_equals_sql(&mesh, 430).await;
    drop(mesh);
}
