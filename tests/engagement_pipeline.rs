//! Fan engagement end to end as separate processes on PostgreSQL + Redis: `ewpm serve
//! engagement` with its persisters off and one `ewpm serve engagement-persister` that is
//! SIGKILLed every 2 seconds while 100,000 events arrive; the live counters are deleted from
//! Redis mid-run. Every acknowledged event must be stored once, and every match's metrics must
//! equal a recomputation from SQL. Then the seed note's requests through the REST edge.

mod common;

use std::{
    collections::{BTreeMap, HashSet},
    time::{Duration, Instant},
};

use common::{Mesh, admin, wait_serving};
use ewpm_engagement::{domain, grpc::metrics, store::EventStore};
use ewpm_kit::auth::Role;
use ewpm_proto::engagement::v1::{self as pb, engagement_service_client::EngagementServiceClient};
use ewpm_testkit::{Proc, TestDb, bearer, free_port, servers};
use futures::StreamExt;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};
use tonic::{Request, transport::Channel};

const EVENTS: usize = 100_000;
const BATCH: usize = 500;
const MATCHES: usize = 5;
const CONCURRENCY: usize = 8;

fn req<T>(message: T, token: &str) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut().insert("authorization", token.parse().unwrap());
    r
}

fn feed() -> String {
    bearer("feed-e2e", Role::Ingest, None)
}

/// Event `n` of the run: a client id, one of the matches, one of four types, a match clock on
/// every other event.
fn event(n: usize) -> pb::EventInput {
    let types = ["goal", "cheer", "card", "shot"];
    let metadata = n.is_multiple_of(2).then(|| prost_types::Struct {
        fields: [(
            "minute".to_string(),
            prost_types::Value {
                kind: Some(prost_types::value::Kind::NumberValue(((n / 1000) % 90) as f64)),
            },
        )]
        .into(),
    });
    pb::EventInput {
        event_id: format!("ev-{n}"),
        match_id: format!("m{}", n % MATCHES),
        event_type: types[n % 4].into(),
        metadata,
        ..Default::default()
    }
}

/// Stored events per match, from SQL.
async fn sql_counts(mesh: &Mesh) -> BTreeMap<String, i64> {
    let db = &mesh.db.db;
    db.query_all_raw(Statement::from_string(
        db.get_database_backend(),
        "SELECT match_id, COUNT(*) AS n FROM match_events GROUP BY match_id",
    ))
    .await
    .unwrap()
    .into_iter()
    .map(|r| (r.try_get("", "match_id").unwrap(), r.try_get("", "n").unwrap()))
    .collect()
}

/// What of the metrics does not move with the clock.
fn timeless(mut m: pb::MatchMetrics) -> pb::MatchMetrics {
    for minute in &mut m.minutes {
        minute.r#final = false;
    }
    if let Some(w) = m.watermark.as_mut() {
        w.final_before = None;
    }
    m
}

async fn start_mesh(engagement: u16, env: &[(&str, &str)]) -> Mesh {
    let db = TestDb::postgres_unmigrated().await.unwrap();
    let mut all = vec![
        ("EWPM_SERVICES__ENGAGEMENT".to_string(), format!("http://127.0.0.1:{engagement}")),
        // The load is a few callers standing in for many devices.
        ("EWPM_LIMITS__RATE_PER_SEC".to_string(), "0".to_string()),
        ("EWPM_ENGAGEMENT__RECLAIM_IDLE_MS".to_string(), "1000".to_string()),
    ];
    all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Mesh::start_on(db, servers().redis_url.clone(), all, true, false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_thousand_events_through_a_persister_killed_every_two_seconds_are_stored_and_counted_once()
 {
    let port = free_port();
    let mut mesh = start_mesh(port, &[]).await;
    mesh.spawn(&["serve", "engagement"], port, &[("EWPM_ENGAGEMENT__PERSISTER_ENABLED", "false")]);
    wait_serving(port, pb::SERVICE_NAME).await;
    let client = EngagementServiceClient::new(Mesh::channel(port).await);

    let ingest = {
        let client = client.clone();
        tokio::spawn(async move {
            let batches: Vec<Vec<usize>> =
                (0..EVENTS).collect::<Vec<_>>().chunks(BATCH).map(<[usize]>::to_vec).collect();
            futures::stream::iter(batches)
                .map(|batch| {
                    let mut c = client.clone();
                    async move {
                        // A client retries a batch until it is answered; its ids make the
                        // retries harmless.
                        loop {
                            let events = batch.iter().map(|&n| event(n)).collect();
                            let r = c
                                .ingest_events(req(
                                    pb::IngestEventsRequest { events, ..Default::default() },
                                    &feed(),
                                ))
                                .await;
                            match r {
                                Ok(r) => {
                                    // Paced to about 10,000 events/s, so the run spans
                                    // several persister lives.
                                    tokio::time::sleep(Duration::from_millis(400)).await;
                                    let r = r.into_inner();
                                    assert_eq!(r.rejected, 0, "{r:?}");
                                    return r
                                        .results
                                        .into_iter()
                                        .map(|x| x.event_id)
                                        .collect::<Vec<_>>();
                                }
                                Err(status) => {
                                    eprintln!("ingest refused, retrying: {status:?}");
                                    tokio::time::sleep(Duration::from_millis(200)).await;
                                }
                            }
                        }
                    }
                })
                .buffer_unordered(CONCURRENCY)
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .flatten()
                .collect::<HashSet<String>>()
        })
    };

    let mut persister =
        Proc(mesh.spawn_child(&["serve", "engagement-persister"], free_port(), &[]));
    let mut kills = 0;
    let mut kills_during_ingest = 0;
    while !ingest.is_finished() || kills < 3 {
        if !ingest.is_finished() {
            kills_during_ingest += 1;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        persister.0.kill().unwrap();
        persister.0.wait().unwrap();
        kills += 1;
        if kills == 2 {
            // Lose the live counters: they are rebuilt from SQL.
            let redis = ewpm_kit::redis::connect(&mesh.redis_url).await.unwrap();
            let keys: Vec<String> = (0..MATCHES)
                .flat_map(|m| {
                    ["c", "t", "m", "l", "k", "f", "h", "a"]
                        .map(|k| format!("{}eng:{{m{m}}}:{k}", mesh.prefix))
                })
                .collect();
            let _: i64 = fred::prelude::KeysInterface::del(&redis, keys).await.unwrap();
        }
        persister = Proc(mesh.spawn_child(&["serve", "engagement-persister"], free_port(), &[]));
    }
    let acknowledged = ingest.await.unwrap();
    assert_eq!(acknowledged.len(), EVENTS, "every event acknowledged once, by its id");
    eprintln!("persister killed {kills} times, {kills_during_ingest} of them while events arrived");
    assert!(
        kills_during_ingest >= 3,
        "the persister died only {kills_during_ingest} times during ingest"
    );

    // Every acknowledged event is stored once …
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut c = client.clone();
    let stored = loop {
        let sql = sql_counts(&mesh).await;
        let mut counted = BTreeMap::new();
        for m in 0..MATCHES {
            let id = format!("m{m}");
            let r = c
                .get_match_metrics(req(
                    pb::GetMatchMetricsRequest { match_id: id.clone() },
                    &admin(),
                ))
                .await
                .unwrap()
                .into_inner()
                .metrics
                .unwrap();
            counted.insert(id, r.total_events);
        }
        if sql.values().sum::<i64>() == EVENTS as i64 && counted == sql {
            break sql;
        }
        assert!(Instant::now() < deadline, "not converged: SQL {sql:?}, counted {counted:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(stored.len(), MATCHES);
    // … and every match's metrics are what SQL says.
    let store = EventStore::new(mesh.db.db.clone());
    for m in 0..MATCHES {
        let id = format!("m{m}");
        let live = c
            .get_match_metrics(req(pb::GetMatchMetricsRequest { match_id: id.clone() }, &admin()))
            .await
            .unwrap()
            .into_inner()
            .metrics
            .unwrap();
        let (counts, _) = store.aggregate(&id, 0).await.unwrap();
        let recomputed = metrics(&domain::snapshot(
            &id,
            &counts,
            domain::micros(chrono::Utc::now()),
            Duration::from_secs(60),
        ));
        assert_eq!(timeless(live), timeless(recomputed), "match {id}");
    }
    drop(persister);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_seed_notes_requests_work_through_the_rest_edge() {
    let port = free_port();
    let mut mesh = start_mesh(port, &[]).await;
    mesh.spawn(&["serve", "engagement"], port, &[]);
    wait_serving(port, pb::SERVICE_NAME).await;
    let http = ewpm_testkit::http_client();
    let base = mesh.base();
    let auth = feed();

    let r = http
        .post(format!("{base}/api/events"))
        .header("authorization", &auth)
        .json(&json!({
            "matchId": "match_123",
            "eventType": "goal",
            "teamId": "al-hilal",
            "playerId": "player_456",
            "metadata": {"minute": 34, "score": "2-1"}
        }))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let location = r.headers().get("location").map(|v| v.to_str().unwrap().to_string());
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 202, "{body}");
    let location = location.unwrap();
    let event_id = body["eventId"].as_str().unwrap().to_string();
    assert_eq!(location, format!("/api/matches/match_123/events/{event_id}"));

    let reader = admin();
    let deadline = Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        let m: Value = http
            .get(format!("{base}/api/matches/match_123/metrics"))
            .header("authorization", &reader)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if m["totalEvents"] == 1 {
            break m;
        }
        assert!(Instant::now() < deadline, "the event was not counted: {m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let keys: Vec<&str> = metrics.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "eventsByType",
            "matchId",
            "peakEngagementPeriods",
            "responseTimePercentiles",
            "totalEvents"
        ]
    );
    assert_eq!(metrics["eventsByType"], json!({"goal": 1}));
    assert_eq!(metrics["peakEngagementPeriods"][0]["eventCount"], 1);
    let stored: Value = http
        .get(format!("{base}{location}"))
        .header("authorization", &reader)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (stored["eventId"].as_str(), stored["teamId"].as_str()),
        (Some(event_id.as_str()), Some("al-hilal"))
    );

    // A bad event names its field and stores nothing.
    let bad = http
        .post(format!("{base}/api/events"))
        .header("authorization", &auth)
        .json(&json!({"matchId": "match_123", "eventType": "Goal!"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(bad.headers()["content-type"], "application/problem+json");
    let problem: Value = bad.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "eventType", "{problem}");
    // A reader's token cannot send; an ingest token cannot read.
    let denied = http
        .post(format!("{base}/api/events"))
        .header("authorization", bearer("fan", Role::Employee, None))
        .json(&json!({"matchId": "match_123", "eventType": "goal"}))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
    let blind = http
        .get(format!("{base}/api/matches/match_123/metrics"))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(blind.status(), 403);
    let sql: BTreeMap<String, i64> = sql_counts(&mesh).await;
    assert_eq!(sql, [("match_123".to_string(), 1)].into());
}

/// Ingests `n` events with client ids `{prefix}-{i}` into match `f1`, retrying each call until
/// it is answered (as a client does); returns how many calls were refused meanwhile.
async fn ingest_all(client: &EngagementServiceClient<Channel>, prefix: &str, n: usize) -> usize {
    let mut refused = 0;
    let events: Vec<pb::EventInput> = (0..n)
        .map(|i| pb::EventInput {
            event_id: format!("{prefix}-{i}"),
            match_id: "f1".into(),
            event_type: "goal".into(),
            ..Default::default()
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = client
            .clone()
            .ingest_events(req(
                pb::IngestEventsRequest { events: events.clone(), ..Default::default() },
                &feed(),
            ))
            .await;
        match r {
            Ok(r) => {
                assert_eq!(r.into_inner().rejected, 0);
                return refused;
            }
            Err(status) => {
                assert!(
                    matches!(
                        status.code(),
                        tonic::Code::Unavailable | tonic::Code::ResourceExhausted
                    ),
                    "{status:?}"
                );
                refused += 1;
                assert!(Instant::now() < deadline, "ingest did not recover: {status:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Waits until match `f1` counts `total` events and SQL holds as many.
async fn counted(mesh: &Mesh, client: &EngagementServiceClient<Channel>, total: i64) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let live = client
            .clone()
            .get_match_metrics(req(pb::GetMatchMetricsRequest { match_id: "f1".into() }, &admin()))
            .await
            .map(|r| r.into_inner().metrics.unwrap().total_events);
        let sql = sql_counts(mesh).await.get("f1").copied().unwrap_or_default();
        if live.as_ref().ok() == Some(&total) && sql == total {
            return;
        }
        assert!(Instant::now() < deadline, "f1: counted {live:?}, SQL {sql}, want {total}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ingest_rides_out_postgres_and_redis_outages_and_a_redis_that_lost_its_data() {
    let mut redis = ewpm_testkit::OwnRedis::start().unwrap();
    let pg = ewpm_testkit::OwnPostgres::start().unwrap();
    let db = TestDb::postgres_unmigrated_on(&pg.url).await.unwrap();
    let port = free_port();
    let env = vec![
        ("EWPM_SERVICES__ENGAGEMENT".to_string(), format!("http://127.0.0.1:{port}")),
        ("EWPM_LIMITS__RATE_PER_SEC".to_string(), "0".to_string()),
        ("EWPM_ENGAGEMENT__RECLAIM_IDLE_MS".to_string(), "1000".to_string()),
    ];
    let mut mesh = Mesh::start_on(db, redis.url.clone(), env, true, false).await;
    mesh.spawn(&["serve", "engagement"], port, &[]);
    wait_serving(port, pb::SERVICE_NAME).await;
    let client = EngagementServiceClient::new(Mesh::channel(port).await);
    ingest_all(&client, "a", 10).await;
    counted(&mesh, &client, 10).await;

    // PostgreSQL stops: events are still taken (queued in Redis) and written once it is back.
    pg.down().unwrap();
    assert_eq!(ingest_all(&client, "b", 20).await, 0, "ingest refused while only SQL was down");
    tokio::time::sleep(Duration::from_secs(2)).await;
    pg.up().unwrap();
    counted(&mesh, &client, 30).await;

    // Redis is SIGKILLed for longer than a command may wait (5 s): ingest answers UNAVAILABLE
    // meanwhile (calls in the first seconds just wait for the reconnect), then goes on.
    redis.kill();
    let refused = {
        let c = client.clone();
        let during = tokio::spawn(async move { ingest_all(&c, "c", 10).await });
        tokio::time::sleep(Duration::from_secs(8)).await;
        redis.up().unwrap();
        during.await.unwrap()
    };
    assert!(refused > 0, "ingest must not be accepted while Redis is down");
    counted(&mesh, &client, 40).await;

    // Redis comes back empty (no persistence): the queue's consumer group, the counters and the
    // remembered ids are gone. Nobody intervenes: the group is created again, the counters are
    // rebuilt from SQL, and a retry of an old id is found among the stored events.
    let conn = ewpm_kit::redis::connect(&redis.url).await.unwrap();
    let _: () = fred::prelude::ClientLike::flushall(&conn, false).await.unwrap();
    ingest_all(&client, "d", 10).await;
    counted(&mesh, &client, 50).await;
    let again = client
        .clone()
        .ingest_events(req(
            pb::IngestEventsRequest {
                events: vec![pb::EventInput {
                    event_id: "a-0".into(),
                    match_id: "f1".into(),
                    event_type: "goal".into(),
                    ..Default::default()
                }],
                ..Default::default()
            },
            &feed(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.results[0].outcome(), pb::EventOutcome::Duplicate);
    drop(mesh);
}
