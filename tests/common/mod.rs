//! The mesh as separate processes on PostgreSQL + Redis, shared by the end-to-end suites.
// Each test crate uses its own part of this module.
#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use ewpm_kit::{auth::Role, bus::RedisBus};
use ewpm_proto::{
    challenge::v1::{self as cpb, challenge_service_client::ChallengeServiceClient},
    leaderboard::v1::{
        GetLeaderboardRequest, leaderboard_service_client::LeaderboardServiceClient,
    },
};
use ewpm_testkit::{Proc, TEST_SECRET, TestDb, bearer, free_port, key_prefix, servers};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::Value;
use tonic::{Request, transport::Channel};

/// The REST edge at `base`, called with full `Bearer …` values.
pub struct Rest {
    pub base: String,
    pub http: reqwest::Client,
}

impl Rest {
    /// One call with an optional JSON body: the status and the body (JSON, else its text).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        auth: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let mut request = match method {
            "GET" => self.http.get(url),
            _ => self.http.post(url),
        }
        .header("authorization", auth);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub async fn post(&self, path: &str, auth: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, auth, Some(body)).await
    }

    pub async fn get(&self, path: &str, auth: &str) -> (u16, Value) {
        self.call("GET", path, auth, None).await
    }

    /// A call that must succeed (2xx): its body (`null` when empty).
    pub async fn ok(&self, method: &str, path: &str, auth: &str, body: Option<Value>) -> Value {
        match self.call(method, path, auth, body).await {
            (200..=299, Value::String(text)) if text.is_empty() => Value::Null,
            (200..=299, body) => body,
            (status, body) => panic!("{method} {path}: {status} {body}"),
        }
    }

    pub async fn post_ok(&self, path: &str, auth: &str, body: Value) -> Value {
        self.ok("POST", path, auth, Some(body)).await
    }

    pub async fn get_ok(&self, path: &str, auth: &str) -> Value {
        self.ok("GET", path, auth, None).await
    }
}

/// The mesh under test: one process per service, sharing a database and a Redis prefix.
pub struct Mesh {
    pub dir: tempfile::TempDir,
    pub db: TestDb,
    pub prefix: String,
    /// The Redis the processes use (the shared test Redis unless a test brings its own).
    pub redis_url: String,
    /// Extra environment for every process.
    pub env: Vec<(String, String)>,
    pub challenge: u16,
    pub progress: u16,
    pub leaderboard: u16,
    pub incentive: u16,
    pub http: u16,
    pub procs: Vec<Proc>,
    /// Where the incentive service's process is in `procs` while it runs.
    pub incentive_proc: Option<usize>,
}

impl Mesh {
    /// Migrates a fresh database and starts challenge, progress (with its writers when
    /// `progress_writers`), leaderboard, incentive and the gateway.
    pub async fn start(progress_writers: bool) -> Self {
        Self::start_with(progress_writers, true).await
    }

    /// As [`Mesh::start`], with the incentive service's processors only when
    /// `incentive_processors`.
    pub async fn start_with(progress_writers: bool, incentive_processors: bool) -> Self {
        let db = TestDb::postgres_unmigrated().await.unwrap();
        Self::start_on(
            db,
            servers().redis_url.clone(),
            Vec::new(),
            progress_writers,
            incentive_processors,
        )
        .await
    }

    /// As [`Mesh::start_with`], on database `db` and the Redis at `redis_url`, with `env` for
    /// every process.
    pub async fn start_on(
        db: TestDb,
        redis_url: String,
        env: Vec<(String, String)>,
        progress_writers: bool,
        incentive_processors: bool,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut mesh = Mesh {
            dir,
            db,
            prefix: key_prefix(),
            redis_url,
            env,
            challenge: free_port(),
            progress: free_port(),
            leaderboard: free_port(),
            incentive: free_port(),
            http: free_port(),
            procs: Vec::new(),
            incentive_proc: None,
        };
        let status = mesh.ewpm().arg("migrate").status().unwrap();
        assert!(status.success(), "ewpm migrate failed");
        let (c, p, l) = (mesh.challenge, mesh.progress, mesh.leaderboard);
        mesh.spawn(&["serve", "challenge"], c, &[]);
        let writers = if progress_writers { "true" } else { "false" };
        mesh.spawn(&["serve", "progress"], p, &[("EWPM_PROGRESS__WRITER_ENABLED", writers)]);
        mesh.spawn(&["serve", "leaderboard"], l, &[]);
        // Its processors consume the activity the progress writers publish.
        let i = mesh.incentive;
        mesh.incentive_proc = Some(mesh.procs.len());
        let processors = if incentive_processors { "true" } else { "false" };
        mesh.spawn(
            &["serve", "incentive"],
            i,
            &[("EWPM_INCENTIVE__PROCESSOR_ENABLED", processors)],
        );
        let gateway = mesh
            .ewpm()
            .args(["serve", "gateway"])
            .env("EWPM_HTTP__ADDR", format!("127.0.0.1:{}", mesh.http))
            .spawn()
            .unwrap();
        mesh.procs.push(Proc(gateway));
        mesh.wait_ready().await;
        mesh
    }

    pub fn ewpm(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ewpm"));
        cmd.current_dir(self.dir.path())
            .env("EWPM_LOG__FORMAT", "json")
            .env("EWPM_LOG__LEVEL", "warn")
            .env("DATABASE_URL", &self.db.url)
            .env("REDIS_URL", &self.redis_url)
            .env("EWPM_REDIS_PREFIX", &self.prefix)
            .env("EWPM_AUTH__SECRET", TEST_SECRET)
            .env("EWPM_SERVICES__CHALLENGE", format!("http://127.0.0.1:{}", self.challenge))
            .env("EWPM_SERVICES__PROGRESS", format!("http://127.0.0.1:{}", self.progress))
            .env("EWPM_SERVICES__LEADERBOARD", format!("http://127.0.0.1:{}", self.leaderboard))
            .env("EWPM_SERVICES__SCAN", format!("http://127.0.0.1:{}", self.challenge))
            .env("EWPM_SERVICES__INCENTIVE", format!("http://127.0.0.1:{}", self.incentive))
            // Fast flushes and a short reclaim so killed writers are taken over quickly.
            .env("EWPM_PROGRESS__FLUSH_INTERVAL_MS", "200")
            .env("EWPM_PROGRESS__RECLAIM_IDLE_MS", "1000")
            .env("EWPM_LEADERBOARD__RECLAIM_IDLE_MS", "1000");
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    pub fn spawn(&mut self, args: &[&str], grpc_port: u16, env: &[(&str, &str)]) {
        let child = self.spawn_child(args, grpc_port, env);
        self.procs.push(Proc(child));
    }

    pub fn spawn_child(
        &self,
        args: &[&str],
        grpc_port: u16,
        env: &[(&str, &str)],
    ) -> std::process::Child {
        let mut cmd = self.ewpm();
        cmd.args(args)
            .env("EWPM_GRPC__ADDR", format!("127.0.0.1:{grpc_port}"))
            .env("EWPM_METRICS__ADDR", format!("127.0.0.1:{}", free_port()))
            .stdout(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.spawn().unwrap()
    }

    /// Kills the incentive service with SIGKILL: an outage.
    pub fn kill_incentive(&mut self) {
        let i = self.incentive_proc.take().expect("the incentive service runs");
        self.procs[i].0.kill().unwrap();
        self.procs[i].0.wait().unwrap();
    }

    /// Starts the incentive service again, with its processors, on its port; waits until the
    /// mesh is ready.
    pub async fn start_incentive(&mut self) {
        self.incentive_proc = Some(self.procs.len());
        let i = self.incentive;
        self.spawn(&["serve", "incentive"], i, &[("EWPM_INCENTIVE__PROCESSOR_ENABLED", "true")]);
        self.wait_ready().await;
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }

    /// Waits until the edge sees challenge, progress, leaderboard and incentive serving (two
    /// minutes at most: several meshes may start at once on a small machine); fails with the
    /// last health answer.
    pub async fn wait_ready(&self) {
        let client = ewpm_testkit::http_client();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let last = match client.get(format!("{}/health", self.base())).send().await {
                Ok(r) => match r.json::<Value>().await {
                    Ok(body)
                        if ["challenge", "progress", "leaderboard", "incentive"]
                            .iter()
                            .all(|s| body["services"][s] == "serving") =>
                    {
                        return;
                    }
                    Ok(body) => body.to_string(),
                    Err(err) => format!("unreadable /health: {err}"),
                },
                Err(err) => format!("/health: {err}"),
            };
            assert!(Instant::now() < deadline, "the mesh did not become ready: {last}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn channel(port: u16) -> Channel {
        Channel::from_shared(format!("http://127.0.0.1:{port}")).unwrap().connect().await.unwrap()
    }

    /// Creates an open challenge active from 2020 to 2099; returns its id.
    pub async fn challenge(&self) -> String {
        let mut client = ChallengeServiceClient::new(Self::channel(self.challenge).await);
        let mut request = Request::new(cpb::CreateChallengeRequest {
            name: "steps".into(),
            description: String::new(),
            start_time: Some(prost_types::Timestamp { seconds: 1_577_836_800, nanos: 0 }),
            end_time: Some(prost_types::Timestamp { seconds: 4_070_908_800, nanos: 0 }),
            goal: Some(cpb::Goal { target: 1_000_000.0, unit: "steps".into() }),
            employer_id: String::new(),
            idempotency_key: String::new(),
            late_grace_seconds: 0,
        });
        request.metadata_mut().insert("authorization", admin().parse().unwrap());
        client.create_challenge(request).await.unwrap().into_inner().challenge.unwrap().id
    }

    /// SQL totals per (challenge, user), and the overall count and sum.
    pub async fn sql_totals(&self) -> (BTreeMap<(String, String), f64>, i64, f64) {
        let rows = self
            .db
            .db
            .query_all_raw(Statement::from_string(
                self.db.db.get_database_backend(),
                "SELECT challenge_id::text AS c, user_id AS u, SUM(value) AS t, COUNT(*) AS n \
                 FROM progress_entries GROUP BY 1, 2",
            ))
            .await
            .unwrap();
        let mut totals = BTreeMap::new();
        let (mut count, mut sum) = (0, 0.0);
        for r in rows {
            let t: f64 = r.try_get("", "t").unwrap();
            let n: i64 = r.try_get("", "n").unwrap();
            totals.insert((r.try_get("", "c").unwrap(), r.try_get("", "u").unwrap()), t);
            count += n;
            sum += t;
        }
        (totals, count, sum)
    }

    /// Every board of `challenges`, read through the leaderboard service.
    pub async fn board_totals(&self, challenges: &[String]) -> BTreeMap<(String, String), f64> {
        let mut client = LeaderboardServiceClient::new(Self::channel(self.leaderboard).await);
        let mut totals = BTreeMap::new();
        for c in challenges {
            let mut token = String::new();
            loop {
                let mut request = Request::new(GetLeaderboardRequest {
                    board: format!("challenge:{c}"),
                    page_size: 100,
                    page_token: token.clone(),
                    ..Default::default()
                });
                request.metadata_mut().insert("authorization", admin().parse().unwrap());
                let page = client.get_leaderboard(request).await.unwrap().into_inner();
                for e in page.entries {
                    totals.insert((c.clone(), e.member), e.score);
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
        }
        totals
    }

    /// Waits until SQL holds `accepted` entries, both queues have nothing pending, and every
    /// board equals the SQL totals; fails with the last difference after two minutes.
    pub async fn drained(&self, challenges: &[String], accepted: u64, accepted_sum: f64) {
        let partitions = self
            .env
            .iter()
            .find(|(k, _)| k == "EWPM_BUS_PARTITIONS")
            .map_or(1, |(_, v)| v.parse().unwrap());
        let redis = RedisBus::connect(&self.redis_url, &self.prefix).await.unwrap();
        let bus = ewpm_kit::bus::Partitioned::new(std::sync::Arc::new(redis), partitions);
        let pending = async |topic: &str, group: &str| {
            ewpm_kit::bus::total_pending(&bus, topic, group).await.unwrap()
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (sql, count, sum) = self.sql_totals().await;
            let pending_writes = pending("progress", "progress-writer").await;
            let pending_deltas = pending("score-deltas", "leaderboard-applier").await;
            let boards = self.board_totals(challenges).await;
            let done = count as u64 == accepted
                && pending_writes == 0
                && pending_deltas == 0
                && boards == sql;
            if done {
                assert_eq!(sum, accepted_sum, "SQL sum equals the acknowledged sum");
                return;
            }
            if Instant::now() > deadline {
                let differing: Vec<_> =
                    sql.iter().filter(|(k, v)| boards.get(*k) != Some(*v)).take(5).collect();
                panic!(
                    "not drained: sql {count} of {accepted} acknowledged, pending writes {pending_writes}, \
                     pending deltas {pending_deltas}, {} board entries vs {} SQL totals, e.g. {differing:?}",
                    boards.len(),
                    sql.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// `ewpm dev` in `dir` on fresh ports, with `env`; returns the process, the REST base URL and
/// the printed admin token.
pub async fn start_dev(dir: &std::path::Path, env: &[(&str, &str)]) -> (Proc, String, String) {
    start_dev_on(dir, (free_port(), free_port()), env).await
}

/// [`start_dev`] on the given gRPC and REST ports (a restart in the same place).
pub async fn start_dev_on(
    dir: &std::path::Path,
    (grpc_port, http_port): (u16, u16),
    env: &[(&str, &str)],
) -> (Proc, String, String) {
    let stdout = std::fs::File::create(dir.join("stdout")).unwrap();
    let dev = Proc(
        Command::new(env!("CARGO_BIN_EXE_ewpm"))
            .current_dir(dir)
            .env("EWPM_LOG__FORMAT", "json")
            .env("EWPM_LOG__LEVEL", "warn")
            .env("EWPM_GRPC__ADDR", format!("127.0.0.1:{grpc_port}"))
            .env("EWPM_HTTP__ADDR", format!("127.0.0.1:{http_port}"))
            .envs(env.iter().copied())
            .stdout(Stdio::from(stdout))
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{http_port}");
    let client = ewpm_testkit::http_client();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client.get(format!("{base}/health")).send().await
            && r.status() == 200
            && r.json::<Value>().await.is_ok_and(|b| b["status"] == "ok")
        {
            break;
        }
        assert!(Instant::now() < deadline, "ewpm dev did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let banner = std::fs::read_to_string(dir.join("stdout")).unwrap();
    let admin = banner
        .lines()
        .find_map(|l| l.trim().strip_prefix("ADMIN=").map(str::to_string))
        .expect("admin token printed");
    (dev, base, admin)
}

/// An admin token.
pub fn admin() -> String {
    bearer("admin-1", Role::Admin, None)
}

/// Waits until the process on `port` reports `service` SERVING (one minute at most).
pub async fn wait_serving(port: u16, service: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(channel) =
            Channel::from_shared(format!("http://127.0.0.1:{port}")).unwrap().connect().await
        {
            let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
            let r = health
                .check(tonic_health::pb::HealthCheckRequest { service: service.into() })
                .await;
            if r.is_ok_and(|r| r.into_inner().status == 1) {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{service} on {port} did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
