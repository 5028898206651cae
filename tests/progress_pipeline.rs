//! The score pipeline end to end, as separate processes on PostgreSQL + Redis: client →
//! progress service → Redis Streams → batch writer processes → SQL → score deltas →
//! leaderboard applier → boards → watchers, and the REST edge in front.
//!
//! The crash and rebuild proofs count: SQL equals what was acknowledged to clients, every
//! board equals the SQL totals, and nothing is left pending.

use std::{
    collections::BTreeMap,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use ewpm_kit::auth::Role;
use ewpm_proto::progress::v1::{
    SubmitProgressRequest, progress_service_client::ProgressServiceClient,
};
use ewpm_testkit::{Proc, bearer, free_port, get_json, servers};
use serde_json::{Value, json};
use tonic::Request;

mod common;
use common::{Mesh, start_dev};

/// Load: `clients` concurrent submitters over 4 connections, `total` entries spread over
/// `users` and `challenges`, integer values (so sums are exact in any order). Returns the
/// acknowledged count and sum; `during` runs once a third of the load is acknowledged.
async fn submit_load(
    progress_port: u16,
    challenges: &[String],
    users: usize,
    total: u64,
    during: impl std::future::Future<Output = ()> + Send + 'static,
) -> (u64, f64) {
    let mut channels = Vec::new();
    for _ in 0..4 {
        channels.push(Mesh::channel(progress_port).await);
    }
    let tokens: Arc<Vec<String>> = Arc::new(
        (0..users).map(|u| bearer(&format!("user-{u:04}"), Role::Employee, None)).collect(),
    );
    let next = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let acked_sum = Arc::new(AtomicU64::new(0));
    let triggered = Arc::new(AtomicBool::new(false));
    let during = Arc::new(tokio::sync::Mutex::new(Some(Box::pin(during))));
    let challenges = Arc::new(challenges.to_vec());
    let mut tasks = Vec::new();
    for t in 0..32 {
        let client = ProgressServiceClient::new(channels[t % 4].clone());
        let (tokens, next, acked, acked_sum, triggered, during, challenges) = (
            tokens.clone(),
            next.clone(),
            acked.clone(),
            acked_sum.clone(),
            triggered.clone(),
            during.clone(),
            challenges.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut client = client;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return;
                }
                let value = (i % 97 + 1) as f64;
                let token = &tokens[(i as usize * 7919) % tokens.len()];
                // An entry counts once the service acknowledged it. A push-back (queue full)
                // is retried as a real client would; any other failure is simply not counted.
                loop {
                    let mut request = Request::new(SubmitProgressRequest {
                        challenge_id: challenges[(i as usize) % challenges.len()].clone(),
                        value,
                        occurred_at: None,
                        idempotency_key: String::new(),
                    });
                    request.metadata_mut().insert("authorization", token.parse().unwrap());
                    match client.submit_progress(request).await {
                        Ok(_) => {
                            acked.fetch_add(1, Ordering::Relaxed);
                            acked_sum.fetch_add(value as u64, Ordering::Relaxed);
                        }
                        Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                        Err(_) => {}
                    }
                    break;
                }
                if i == total / 3 && !triggered.swap(true, Ordering::SeqCst) {
                    let during = during.lock().await.take();
                    if let Some(during) = during {
                        during.await;
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    (acked.load(Ordering::Relaxed), acked_sum.load(Ordering::Relaxed) as f64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn progress_flows_from_rest_to_the_leaderboard_and_its_stream() {
    let mesh = Mesh::start(true).await;
    let challenge = mesh.challenge().await;
    let base = mesh.base();
    let http = ewpm_testkit::http_client();
    let alice = bearer("alice", Role::Employee, Some("acme"));
    let bob = bearer("bob", Role::Employee, Some("acme"));

    // A watcher over SSE first: its first event is the (empty) board at once.
    let mut stream = http
        .get(format!("{base}/api/challenges/{challenge}/leaderboard/stream?limit=5"))
        .header("authorization", &alice)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");

    let submit = |auth: String, body: Value| {
        http.post(format!("{base}/api/challenges/{challenge}/progress"))
            .header("authorization", auth)
            .json(&body)
            .send()
    };
    let r = submit(alice.clone(), json!({"value": 40, "idempotencyKey": "a-1"})).await.unwrap();
    assert_eq!(r.status(), 202);
    let accepted: Value = r.json().await.unwrap();
    assert_eq!(
        (accepted["userId"].as_str(), accepted["value"].as_f64()),
        (Some("alice"), Some(40.0))
    );
    // A retry answers the first entry.
    let again: Value = submit(alice.clone(), json!({"value": 40, "idempotencyKey": "a-1"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["entryId"], accepted["entryId"]);
    assert_eq!(submit(bob.clone(), json!({"value": 55})).await.unwrap().status(), 202);

    // Bad input: 400 naming the field, 422 outside the window, nothing queued.
    let r = submit(alice.clone(), json!({"value": -3})).await.unwrap();
    assert_eq!(r.status(), 400);
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "value");
    let r = submit(alice.clone(), json!({"value": 1, "occurredAt": "2019-06-01T00:00:00Z"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let r = submit(alice.clone(), json!({"value": 1, "extra": true})).await.unwrap();
    assert_eq!(r.status(), 400);

    // The watcher sees both submissions, best first.
    let mut buffer = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let expected = r#""entries":[{"rank":1,"userId":"bob","score":55.0},{"rank":2,"userId":"alice","score":40.0}]"#;
    while !buffer.contains(expected) {
        assert!(Instant::now() < deadline, "the stream never showed both entries: {buffer}");
        let chunk =
            tokio::time::timeout(Duration::from_secs(30), stream.chunk()).await.unwrap().unwrap();
        buffer.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    assert!(buffer.starts_with("event: snapshot\ndata: "), "{buffer}");

    let board: Value =
        get_json(&format!("{base}/api/challenges/{challenge}/leaderboard"), &alice).await;
    assert_eq!(
        board,
        json!({"challengeId": challenge, "totalMembers": 2, "entries": [
            {"rank": 1, "userId": "bob", "score": 55.0},
            {"rank": 2, "userId": "alice", "score": 40.0},
        ]})
    );
    let me: Value =
        get_json(&format!("{base}/api/challenges/{challenge}/leaderboard/me?neighbours=1"), &alice)
            .await;
    assert_eq!(me["me"], json!({"rank": 2, "userId": "alice", "score": 40.0}));
    assert_eq!(me["window"].as_array().unwrap().len(), 2);
    let active: Value =
        get_json(&format!("{base}/api/users/alice/challenges/active"), &alice).await;
    assert_eq!(active["challenges"][0]["id"], challenge.as_str());
    assert_eq!(
        active["challenges"][0]["standing"],
        json!({"total": 40.0, "percentOfGoal": 0.004, "rank": 2})
    );

    // A challenge the caller cannot see (here: none with that id) has no board either.
    let unknown = uuid::Uuid::now_v7();
    let r = http
        .get(format!("{base}/api/challenges/{unknown}/leaderboard"))
        .header("authorization", &alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_thousand_submissions_survive_batch_writers_killed_every_two_seconds() {
    let mut mesh = Mesh::start(false).await;
    let challenges = vec![mesh.challenge().await, mesh.challenge().await, mesh.challenge().await];
    // Two writer processes; every two seconds one of them is killed with SIGKILL and
    // restarted, alternating. The killer runs on its own thread with a recipe for a writer.
    let recipe = {
        let mut c = mesh.ewpm();
        c.args(["serve", "progress-writer"]);
        let envs: Vec<(std::ffi::OsString, std::ffi::OsString)> =
            c.get_envs().filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))).collect();
        (c.get_program().to_owned(), mesh.dir.path().to_owned(), envs)
    };
    let spawn_writer = move || {
        let (program, cwd, envs) = &recipe;
        let mut cmd = Command::new(program);
        cmd.current_dir(cwd).args(["serve", "progress-writer"]).envs(envs.iter().cloned());
        cmd.env("EWPM_GRPC__ADDR", format!("127.0.0.1:{}", free_port()))
            .env("EWPM_METRICS__ADDR", format!("127.0.0.1:{}", free_port()))
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let killer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut writers = [spawn_writer(), spawn_writer()];
            let mut kills = 0u32;
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_secs(2));
                let victim = &mut writers[kills as usize % 2];
                victim.kill().ok(); // SIGKILL
                victim.wait().ok();
                *victim = spawn_writer();
                kills += 1;
            }
            (kills, writers)
        })
    };
    let (accepted, sum) = submit_load(mesh.progress, &challenges, 500, 100_000, async {}).await;
    stop.store(true, Ordering::SeqCst);
    let (kills, survivors) = killer.join().unwrap();
    assert!(kills >= 2, "the writers were killed {kills} times");
    for s in survivors {
        mesh.procs.push(Proc(s));
    }
    assert!(accepted > 99_000, "most submissions were acknowledged: {accepted}");
    mesh.drained(&challenges, accepted, sum).await;
    eprintln!("{accepted} acknowledged entries exact after {kills} writer kills");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_score_store_flushed_mid_run_is_rebuilt_to_the_sql_totals() {
    let mesh = Mesh::start(true).await;
    let challenges = vec![mesh.challenge().await, mesh.challenge().await];
    let prefix = mesh.prefix.clone();
    // A third of the way in, every board key of this mesh is deleted (as FLUSHALL would,
    // but only for this test's prefix on the shared test Redis).
    let flush = async move {
        let client = redis_client().await;
        let pattern = format!("{prefix}lb:*");
        let keys: Vec<String> = scan_keys(&client, &pattern).await;
        assert!(!keys.is_empty(), "boards existed before the flush");
        let _: i64 = fred::interfaces::KeysInterface::del(&client, keys).await.unwrap();
    };
    let (accepted, sum) = submit_load(mesh.progress, &challenges, 300, 20_000, flush).await;
    mesh.drained(&challenges, accepted, sum).await;
}

async fn redis_client() -> fred::clients::Client {
    use fred::interfaces::ClientLike;
    let config = fred::types::config::Config::from_url(&servers().redis_url).unwrap();
    let client = fred::types::Builder::from_config(config).build().unwrap();
    client.init().await.unwrap();
    client
}

async fn scan_keys(client: &fred::clients::Client, pattern: &str) -> Vec<String> {
    use fred::interfaces::ClientLike;
    let mut cursor = "0".to_string();
    let mut keys = Vec::new();
    loop {
        let (next, batch): (String, Vec<String>) = client
            .custom(
                fred::types::CustomCommand::new_static("SCAN", None, false),
                vec![
                    cursor.clone(),
                    "MATCH".into(),
                    pattern.to_string(),
                    "COUNT".into(),
                    "1000".into(),
                ],
            )
            .await
            .unwrap();
        keys.extend(batch);
        if next == "0" {
            return keys;
        }
        cursor = next;
    }
}

/// Submits 301 entries to a fresh `ewpm dev`, stops it with `signal` at once, starts it
/// again, and checks the board equals what was acknowledged.
async fn ewpm_dev_keeps_every_accepted_entry_across(signal: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (mut dev, base, admin) = start_dev(dir.path(), &[]).await;
    let http = ewpm_testkit::http_client();
    let created: Value = http
        .post(format!("{base}/api/challenges"))
        .bearer_auth(&admin)
        .json(&json!({"name": "steps", "startTime": "2020-01-01T00:00:00Z", "endTime": "2099-01-01T00:00:00Z",
            "goal": {"target": 1000, "unit": "steps"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let challenge = created["id"].as_str().unwrap().to_string();
    // Tokens for three users from `ewpm token` (the dev key in ./data).
    let token = |sub: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_ewpm"))
            .current_dir(dir.path())
            .args(["token", "--sub", sub, "--role", "employee"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let users = [("ann", token("ann")), ("ben", token("ben")), ("cid", token("cid"))];
    // 301 submissions (not a multiple of the batch size of 50, so at least one partial batch
    // is waiting for its 2 s timer), then the signal at once: a clean stop writes every one;
    // after a kill the durable queue still holds them for the next start.
    let mut expected: BTreeMap<String, f64> = BTreeMap::new();
    let mut calls = Vec::new();
    for i in 0..301u32 {
        let (user, token) = &users[i as usize % 3];
        *expected.entry(user.to_string()).or_default() += f64::from(i % 10 + 1);
        let request = http
            .post(format!("{base}/api/challenges/{challenge}/progress"))
            .bearer_auth(token)
            .json(&json!({"value": i % 10 + 1}));
        calls.push(async move { request.send().await.unwrap().status().as_u16() });
    }
    let statuses = futures::future::join_all(calls).await;
    assert!(statuses.iter().all(|s| *s == 202), "{statuses:?}");
    let status = Command::new("kill").args([signal, &dev.0.id().to_string()]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let exit = loop {
        if let Some(exit) = dev.0.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "ewpm dev did not exit after {signal}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    if signal == "-TERM" {
        assert!(exit.success(), "{exit:?}");
    }

    // A new process: the in-process score store starts empty and the board is rebuilt from
    // SQLite on first read; entries still queued are written by the new writers (and their
    // deltas counted) within a flush interval or two.
    let (_dev, base, _) = start_dev(dir.path(), &[]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let board: Value = get_json(
            &format!("{base}/api/challenges/{challenge}/leaderboard"),
            &format!("Bearer {}", users[0].1),
        )
        .await;
        let got: BTreeMap<String, f64> = board["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["userId"].as_str().unwrap().to_string(), e["score"].as_f64().unwrap()))
            .collect();
        if got == expected || Instant::now() > deadline {
            assert_eq!(got, expected);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ewpm_dev_keeps_every_accepted_entry_across_a_sigterm_and_restart() {
    ewpm_dev_keeps_every_accepted_entry_across("-TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ewpm_dev_keeps_every_accepted_entry_across_a_sigkill_and_restart() {
    ewpm_dev_keeps_every_accepted_entry_across("-KILL").await;
}
