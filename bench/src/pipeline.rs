//! `ewpm bench progress` and `ewpm bench leaderboard`: load over gRPC against the whole score
//! pipeline (challenge, progress with its batch writers, leaderboard with its applier).
//!
//! The stack runs in this process on a port-0 server — embedded backends (SQLite, the
//! SQLite-file bus, the in-process score store) by default, PostgreSQL + Redis with `--postgres` and
//! `--redis` — or is an already running `ewpm dev` / mesh given with `--target`. Every run
//! also measures a bare unary RPC (`grpc.health.v1.Health/Check`, no auth, no I/O) at the
//! same concurrency over the same connections, so each figure comes with its ratio to this
//! machine's limit. Figures are printed (or emitted as JSON), never asserted.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::Args;
use ewpm_kit::{
    CancellationToken,
    auth::{Role, TokenKeys},
    module::Module,
    settings::LimitSettings,
};
use ewpm_proto::{
    challenge::v1::{self as cpb, challenge_service_client::ChallengeServiceClient},
    leaderboard::v1::{
        GetLeaderboardRequest, WatchLeaderboardRequest,
        leaderboard_service_client::LeaderboardServiceClient,
    },
    progress::v1::{SubmitProgressRequest, progress_service_client::ProgressServiceClient},
};
use serde_json::json;
use tonic::{Request, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::{BenchDb, Edge, Stack, Stores, percentile};

/// Options shared by both benches.
#[derive(Debug, Args)]
pub struct PipelineArgs {
    /// Concurrent clients (over 4 connections).
    #[arg(long, default_value_t = 64)]
    pub(crate) concurrency: usize,
    /// Distinct users submitting.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) users: usize,
    /// Challenges (boards) the load spreads over.
    #[arg(long, default_value_t = 10)]
    pub(crate) challenges: usize,
    /// Seconds of each measured phase.
    #[arg(long, default_value_t = 10)]
    pub(crate) duration: u64,
    /// A running gRPC endpoint serving challenge, progress and leaderboard (`ewpm dev`'s
    /// port, or one address per service with --progress-target / --leaderboard-target).
    /// Without it the stack runs in this process.
    #[arg(long)]
    target: Option<String>,
    /// The progress service, when it is not at --target.
    #[arg(long)]
    progress_target: Option<String>,
    /// The leaderboard service, when it is not at --target.
    #[arg(long)]
    leaderboard_target: Option<String>,
    /// HS256 secret of the target's tokens; default: the embedded key in ./data (what
    /// `ewpm dev` in this directory uses).
    #[arg(long)]
    secret: Option<String>,
    /// In-process stack on PostgreSQL (an admin URL; a throwaway database is created and
    /// dropped). Needs --redis.
    #[arg(long, requires = "redis")]
    postgres: Option<String>,
    /// In-process stack on Redis (bus and score store, under a throwaway key prefix).
    #[arg(long, requires = "postgres")]
    redis: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `ewpm bench leaderboard` options.
#[derive(Debug, Args)]
pub struct LeaderboardArgs {
    #[command(flatten)]
    pub(crate) pipeline: PipelineArgs,
    /// Watchers of one board for the fan-out phase.
    #[arg(long, default_value_t = 10_000)]
    watchers: usize,
}

/// What a run talks to.
pub(crate) struct Target {
    challenge: Vec<Channel>,
    pub(crate) progress: Vec<Channel>,
    pub(crate) leaderboard: Vec<Channel>,
    pub(crate) leaderboard_uri: String,
    /// Where the quiz service is (the target, or the in-process stack).
    pub(crate) quiz_uri: String,
    /// Where the engagement service is (the target, or the in-process stack).
    pub(crate) engagement_uri: String,
    pub(crate) keys: TokenKeys,
    /// The limits an in-process REST edge holds callers to (the stack's settings).
    limits: LimitSettings,
    pub(crate) backend: String,
    /// The in-process stack and its database, stopped and dropped at the end.
    local: Option<(Stack, BenchDb)>,
}

pub(crate) async fn channels(uri: &str, n: usize) -> anyhow::Result<Vec<Channel>> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(
            Channel::from_shared(uri.to_string())?
                .connect()
                .await
                .with_context(|| format!("connect to {uri}"))?,
        );
    }
    Ok(v)
}

impl Target {
    pub(crate) async fn open(
        args: &PipelineArgs,
        modules: &'static [&'static dyn Module],
    ) -> anyhow::Result<Self> {
        if let Some(target) = &args.target {
            let settings = crate::settings(modules, &[])?;
            let keys = match &args.secret {
                Some(secret) => TokenKeys::new(secret, &settings.auth),
                None => TokenKeys::for_embedded(&settings.auth, &settings.data_dir)?,
            };
            let p = args.progress_target.as_deref().unwrap_or(target);
            let l = args.leaderboard_target.as_deref().unwrap_or(target);
            return Ok(Self {
                challenge: channels(target, 1).await?,
                progress: channels(p, 4).await?,
                leaderboard: channels(l, 4).await?,
                leaderboard_uri: l.to_string(),
                quiz_uri: target.clone(),
                engagement_uri: target.clone(),
                keys,
                limits: settings.limits,
                backend: format!("target {target}"),
                local: None,
            });
        }
        // EWPM_* variables tune the in-process stack (e.g. EWPM_PROGRESS__WRITERS).
        let settings = crate::settings(modules, &[])?;
        let keys = TokenKeys::new(&uuid::Uuid::new_v4().to_string(), &settings.auth);
        let limits = settings.limits.clone();
        // Every module, the incentive processors included: they consume the activity the
        // writers publish, as in `ewpm dev`.
        let every: Vec<&str> = modules.iter().map(|m| m.name()).collect();
        let (bench_db, stack, backend) = match (&args.postgres, &args.redis) {
            (Some(pg), Some(redis)) => {
                let bench_db = BenchDb::create(Some(pg)).await?;
                let prefix = format!("bench{}:", uuid::Uuid::new_v4().simple());
                let stack = Stack::start(
                    settings,
                    keys.clone(),
                    modules,
                    &every,
                    &bench_db.url,
                    Stores::Redis(redis, &prefix),
                )
                .await?;
                (bench_db, stack, "postgres+redis")
            }
            _ => {
                let bench_db = BenchDb::create(None).await?;
                let dir = bench_db.sqlite_dir().context("bench directory")?.to_path_buf();
                let stack = Stack::start(
                    settings,
                    keys.clone(),
                    modules,
                    &every,
                    &bench_db.url,
                    Stores::Embedded(&dir),
                )
                .await?;
                (
                    bench_db,
                    stack,
                    "embedded (sqlite, durable topics in sqlite files, deltas and scores in memory)",
                )
            }
        };
        let uri = stack.uri.clone();
        Ok(Self {
            challenge: channels(&uri, 1).await?,
            progress: channels(&uri, 4).await?,
            leaderboard: channels(&uri, 4).await?,
            leaderboard_uri: uri.clone(),
            quiz_uri: uri.clone(),
            engagement_uri: uri.clone(),
            keys,
            limits,
            backend: backend.to_string(),
            local: Some((stack, bench_db)),
        })
    }

    pub(crate) async fn close(self) {
        if let Some((stack, bench_db)) = self.local {
            stack.stop().await;
            bench_db.drop_database().await;
        }
    }

    /// The REST edge in front of the in-process stack, served in this process as `ewpm dev`
    /// serves it beside its gRPC port; `None` for a running target (its edge is its own).
    pub(crate) async fn local_edge(&self) -> anyhow::Result<Option<Edge>> {
        match &self.local {
            Some((stack, _)) => {
                Ok(Some(Edge::start(stack.local.clone(), self.keys.clone(), &self.limits).await?))
            }
            None => Ok(None),
        }
    }

    pub(crate) fn bearer(
        &self,
        sub: &str,
        role: Role,
    ) -> tonic::metadata::MetadataValue<tonic::metadata::Ascii> {
        format!("Bearer {}", self.keys.mint(sub, role, None)).parse().expect("a token is ASCII")
    }

    /// Creates `n` open challenges running from yesterday for a year.
    pub(crate) async fn challenges(&self, n: usize) -> anyhow::Result<Vec<String>> {
        let mut client = ChallengeServiceClient::new(self.challenge[0].clone());
        let now = chrono::Utc::now();
        let mut ids = Vec::with_capacity(n);
        for i in 0..n {
            let mut request = Request::new(cpb::CreateChallengeRequest {
                name: format!("bench challenge {i}"),
                description: String::new(),
                start_time: Some(ewpm_kit::timestamp::to_proto(now - chrono::TimeDelta::days(1))),
                end_time: Some(ewpm_kit::timestamp::to_proto(now + chrono::TimeDelta::days(365))),
                goal: Some(cpb::Goal { target: 1e9, unit: "points".into() }),
                employer_id: String::new(),
                idempotency_key: String::new(),
                late_grace_seconds: 0,
            });
            request.metadata_mut().insert("authorization", self.bearer("bench-admin", Role::Admin));
            let c = client.create_challenge(request).await.context("create bench challenge")?;
            ids.push(c.into_inner().challenge.context("challenge")?.id);
        }
        Ok(ids)
    }
}

/// Rate and latency of one closed-loop phase.
pub(crate) struct Phase {
    pub(crate) ops: u64,
    pub(crate) errors: u64,
    pub(crate) secs: f64,
    pub(crate) latencies: Vec<Duration>,
}

impl Phase {
    pub(crate) fn rate(&self) -> f64 {
        self.ops as f64 / self.secs
    }

    pub(crate) fn json(&self, echo: f64) -> serde_json::Value {
        json!({
            "per_sec": self.rate().round(),
            "ratio_to_echo": (self.rate() / echo * 100.0).round() / 100.0,
            "refused": self.errors,
            "latency_ms": {
                "p50": percentile(&self.latencies, 0.5),
                "p99": percentile(&self.latencies, 0.99),
                "max": percentile(&self.latencies, 1.0),
            },
        })
    }

    pub(crate) fn line(&self, what: &str, echo: f64) -> String {
        format!(
            "  {what:<22} {:>8.0}/s  ({:>3.0} % of echo)  p50 {:.2} ms  p99 {:.2} ms  max {:.1} ms{}",
            self.rate(),
            self.rate() / echo * 100.0,
            percentile(&self.latencies, 0.5),
            percentile(&self.latencies, 0.99),
            percentile(&self.latencies, 1.0),
            if self.errors > 0 {
                format!("  ({} refused: pushed back or failed)", self.errors)
            } else {
                String::new()
            },
        )
    }
}

/// Runs `call(worker, i)` from `concurrency` workers for `duration`.
pub(crate) async fn closed_loop<F, Fut>(concurrency: usize, duration: Duration, call: F) -> Phase
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let call = Arc::new(call);
    let counter = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let (call, counter) = (call.clone(), counter.clone());
        tasks.push(tokio::spawn(async move {
            let (mut latencies, mut errors) = (Vec::new(), 0u64);
            while Instant::now() < deadline {
                let i = counter.fetch_add(1, Ordering::Relaxed);
                let t = Instant::now();
                if call(w, i).await {
                    latencies.push(t.elapsed());
                } else {
                    errors += 1;
                }
            }
            (latencies, errors)
        }));
    }
    let (mut latencies, mut errors) = (Vec::new(), 0);
    for t in tasks {
        if let Ok((l, e)) = t.await {
            latencies.extend(l);
            errors += e;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    latencies.sort();
    Phase { ops: latencies.len() as u64, errors, secs, latencies }
}

/// The bare RPC: health checks at `concurrency` over `channels`.
pub(crate) async fn echo(channels: &[Channel], concurrency: usize, duration: Duration) -> Phase {
    let clients: Vec<_> = channels.iter().map(|c| HealthClient::new(c.clone())).collect();
    closed_loop(concurrency, duration, move |w, _| {
        let mut client = clients[w % clients.len()].clone();
        async move { client.check(HealthCheckRequest { service: String::new() }).await.is_ok() }
    })
    .await
}

/// Resident memory of this process, in MiB (Linux).
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Submission-to-visible probes: a probe user far ahead of everyone submits 1 point at a
/// time to board 0 while the load runs; a watcher of that board's top 1 reports when the
/// probe's new total shows. Returns the lags.
async fn probe_visibility(
    target: &Target,
    challenge: &str,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Vec<Duration>> {
    let mut progress = ProgressServiceClient::new(target.progress[0].clone());
    let token = target.bearer("bench-probe", Role::Employee);
    let submit = |value: f64| {
        let mut request = Request::new(SubmitProgressRequest {
            challenge_id: challenge.to_string(),
            value,
            occurred_at: None,
            idempotency_key: String::new(),
        });
        request.metadata_mut().insert("authorization", token.clone());
        request
    };
    // Far ahead of the load, so the probe is always the top entry.
    progress.submit_progress(submit(1e6)).await.context("probe submit")?;
    let mut watcher = LeaderboardServiceClient::new(target.leaderboard[0].clone());
    let mut request = Request::new(WatchLeaderboardRequest {
        board: format!("challenge:{challenge}"),
        top_n: 1,
        ..Default::default()
    });
    request.metadata_mut().insert("authorization", token.clone());
    let mut stream = watcher.watch_leaderboard(request).await.context("watch")?.into_inner();
    // Wait for the probe's first points to show.
    let mut expected = 1e6;
    while let Some(s) = stream.message().await? {
        if s.entries.first().is_some_and(|e| e.member == "bench-probe" && e.score >= expected) {
            break;
        }
    }
    let mut lags = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let sent = Instant::now();
        match progress.submit_progress(submit(1.0)).await {
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
            Err(s) => return Err(anyhow::Error::new(s).context("probe submit")),
        }
        expected += 1.0;
        loop {
            let next = tokio::time::timeout(Duration::from_secs(10), stream.message()).await;
            match next {
                Ok(Ok(Some(s))) => {
                    if s.entries.first().is_some_and(|e| e.score >= expected) {
                        // A probe still in flight when the load ended waits for a partial
                        // batch's timer: not a figure "under load".
                        if !stop.load(Ordering::Relaxed) {
                            lags.push(sent.elapsed());
                        }
                        break;
                    }
                }
                _ => anyhow::bail!("the watch stream stalled"),
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    lags.sort();
    Ok(lags)
}

/// The submit load: `concurrency` clients, random users and challenges.
async fn submit_phase(target: &Target, args: &PipelineArgs, challenges: &[String]) -> Phase {
    let tokens: Arc<Vec<_>> = Arc::new(
        (0..args.users.max(1))
            .map(|u| target.bearer(&format!("user-{u}"), Role::Employee))
            .collect(),
    );
    let clients: Vec<_> =
        target.progress.iter().map(|c| ProgressServiceClient::new(c.clone())).collect();
    let challenges: Arc<Vec<String>> = Arc::new(challenges.to_vec());
    closed_loop(args.concurrency, Duration::from_secs(args.duration), move |w, i| {
        let mut client = clients[w % clients.len()].clone();
        let mut request = Request::new(SubmitProgressRequest {
            challenge_id: challenges[(i as usize * 31) % challenges.len()].clone(),
            value: (i % 100 + 1) as f64,
            occurred_at: None,
            idempotency_key: String::new(),
        });
        request
            .metadata_mut()
            .insert("authorization", tokens[(i as usize * 7919) % tokens.len()].clone());
        async move {
            match client.submit_progress(request).await {
                Ok(_) => true,
                // Pushed back (the writers' backlog is full): a polite client waits a little.
                Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    false
                }
                Err(_) => false,
            }
        }
    })
    .await
}

/// Top-10 reads of the boards.
async fn read_phase(target: &Target, args: &PipelineArgs, challenges: &[String]) -> Phase {
    let token = target.bearer("bench-reader", Role::Employee);
    let clients: Vec<_> =
        target.leaderboard.iter().map(|c| LeaderboardServiceClient::new(c.clone())).collect();
    let boards: Arc<Vec<String>> =
        Arc::new(challenges.iter().map(|c| format!("challenge:{c}")).collect());
    closed_loop(args.concurrency, Duration::from_secs(args.duration), move |w, i| {
        let mut client = clients[w % clients.len()].clone();
        let mut request = Request::new(GetLeaderboardRequest {
            board: boards[i as usize % boards.len()].clone(),
            page_size: 10,
            page_token: String::new(),
            ..Default::default()
        });
        request.metadata_mut().insert("authorization", token.clone());
        async move { client.get_leaderboard(request).await.is_ok() }
    })
    .await
}

/// `ewpm bench progress`.
pub async fn progress(
    args: PipelineArgs,
    modules: &'static [&'static dyn Module],
) -> anyhow::Result<serde_json::Value> {
    let target = Target::open(&args, modules).await?;
    let result = progress_on(&target, &args).await;
    target.close().await;
    result
}

async fn progress_on(target: &Target, args: &PipelineArgs) -> anyhow::Result<serde_json::Value> {
    let challenges = target.challenges(args.challenges.max(1)).await?;
    let idle_rss = rss_mib();
    let duration = Duration::from_secs(args.duration);
    let echo = echo(&target.progress, args.concurrency, duration).await;
    let peak_rss = Arc::new(Mutex::new(idle_rss));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (peak_rss.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                {
                    let mut p = peak.lock().unwrap_or_else(|p| p.into_inner());
                    *p = p.max(rss_mib());
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    // The probe runs beside the load; it stops when the load does.
    let (lags, submits) =
        tokio::join!(probe_visibility(target, &challenges[0], stop.clone()), async {
            let p = submit_phase(target, args, &challenges).await;
            stop.store(true, Ordering::Relaxed);
            p
        });
    let lags = lags.unwrap_or_else(|err| {
        eprintln!("visibility probe failed: {err:#}");
        Vec::new()
    });
    sampler.await.ok();
    let reads = read_phase(target, args, &challenges).await;
    let peak = *peak_rss.lock().unwrap_or_else(|p| p.into_inner());
    let echo_rate = echo.rate();
    let local = target.local.is_some();
    if args.json {
        let mut report = json!({
            "bench": "progress",
            "backend": target.backend,
            "concurrency": args.concurrency,
            "users": args.users,
            "challenges": args.challenges,
            "duration_secs": args.duration,
            "echo": echo.json(echo_rate),
            "submit": submits.json(echo_rate),
            "visible_in_watch_ms": {"samples": lags.len(), "p50": percentile(&lags, 0.5), "p99": percentile(&lags, 0.99), "max": percentile(&lags, 1.0)},
            "leaderboard_top10_reads": reads.json(echo_rate),
        });
        if local {
            report["rss_mib"] = json!({"idle": idle_rss.round(), "peak_under_load": peak.round()});
        }
        return Ok(report);
    } else {
        println!(
            "progress bench on {} — {} clients, {} users, {} challenges, {} s phases",
            target.backend, args.concurrency, args.users, args.challenges, args.duration
        );
        println!("{}", echo.line("bare echo (health)", echo_rate));
        println!("{}", submits.line("SubmitProgress", echo_rate));
        println!(
            "  visible in Watch       p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms  ({} probes under load)",
            percentile(&lags, 0.5),
            percentile(&lags, 0.99),
            percentile(&lags, 1.0),
            lags.len()
        );
        println!("{}", reads.line("GetLeaderboard top 10", echo_rate));
        if local {
            println!(
                "  resident memory        {idle_rss:.0} MiB idle, {peak:.0} MiB peak under load (server and client in this process)"
            );
        }
    }
    Ok(serde_json::Value::Null)
}

/// `ewpm bench leaderboard`: reads, then `watchers` streams of one board while submissions
/// keep changing its top 10; lag from submission to each watcher's snapshot.
pub async fn leaderboard(
    args: LeaderboardArgs,
    modules: &'static [&'static dyn Module],
) -> anyhow::Result<serde_json::Value> {
    let target = Target::open(&args.pipeline, modules).await?;
    let result = leaderboard_on(&target, &args).await;
    target.close().await;
    result
}

async fn leaderboard_on(
    target: &Target,
    args: &LeaderboardArgs,
) -> anyhow::Result<serde_json::Value> {
    let p = &args.pipeline;
    let challenges = target.challenges(p.challenges.max(1)).await?;
    let duration = Duration::from_secs(p.duration);
    // Fill the boards a little so reads return full pages.
    let fill = PipelineArgs { duration: 2, ..clone_args(p) };
    submit_phase(target, &fill, &challenges).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let echo = echo(&target.leaderboard, p.concurrency, duration).await;
    let reads = read_phase(target, p, &challenges).await;

    // Fan-out: watchers of board 0 over one connection per 100 streams.
    let board = format!("challenge:{}", challenges[0]);
    let uri = target_uri(target);
    let connections = args.watchers.div_ceil(100).max(1);
    let mut watch_channels = Vec::with_capacity(connections);
    for _ in 0..connections {
        watch_channels.push(Channel::from_shared(uri.clone())?.connect().await?);
    }
    // sent[score] = when the probe submission that produced that probe score was sent.
    let sent: Arc<Mutex<HashMap<u64, Instant>>> = Arc::new(Mutex::new(HashMap::new()));
    let lags: Arc<Mutex<Vec<Duration>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = CancellationToken::new();
    let ready = Arc::new(AtomicU64::new(0));
    // Why watchers that could not open were refused.
    let refused: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let mut watchers = Vec::with_capacity(args.watchers);
    for w in 0..args.watchers {
        let mut client = LeaderboardServiceClient::new(watch_channels[w % connections].clone());
        let mut request = Request::new(WatchLeaderboardRequest {
            board: board.clone(),
            top_n: 10,
            ..Default::default()
        });
        // One caller per watcher: a caller holds at most `max_streams_per_caller` streams.
        let token = target.bearer(&format!("bench-watcher-{w}"), Role::Employee);
        request.metadata_mut().insert("authorization", token);
        let (sent, lags, stop, ready) = (sent.clone(), lags.clone(), stop.clone(), ready.clone());
        let refused = refused.clone();
        watchers.push(tokio::spawn(async move {
            let response = match client.watch_leaderboard(request).await {
                Ok(response) => response,
                Err(status) => {
                    refused.lock().unwrap_or_else(|p| p.into_inner()).push(format!(
                        "{:?}: {}",
                        status.code(),
                        status.message()
                    ));
                    return;
                }
            };
            let mut stream = response.into_inner();
            ready.fetch_add(1, Ordering::Relaxed);
            let mut last = 0u64;
            loop {
                let message = tokio::select! {
                    m = stream.message() => m,
                    () = stop.cancelled() => return,
                };
                let Ok(Some(snapshot)) = message else { return };
                let probe = snapshot
                    .entries
                    .iter()
                    .find(|e| e.member == "bench-probe")
                    .map_or(0, |e| e.score as u64);
                if probe > last {
                    last = probe;
                    let at = sent.lock().unwrap_or_else(|p| p.into_inner()).get(&probe).copied();
                    if let Some(at) = at {
                        lags.lock().unwrap_or_else(|p| p.into_inner()).push(at.elapsed());
                    }
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while (ready.load(Ordering::Relaxed) as usize) < args.watchers && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let connected = ready.load(Ordering::Relaxed);
    // Probes: the probe user (far ahead) gains 1 point every 250 ms while background load
    // keeps the board changing.
    let mut progress = ProgressServiceClient::new(target.progress[0].clone());
    let probe_token = target.bearer("bench-probe", Role::Employee);
    let mut score = 1_000_000u64;
    let load = {
        let bg = PipelineArgs { duration: p.duration, concurrency: 8, ..clone_args(p) };
        let challenges = vec![challenges[0].clone()];
        async move { submit_phase(target, &bg, &challenges).await }
    };
    let probes = async {
        let end = Instant::now() + duration;
        let mut first = true;
        while Instant::now() < end {
            let value = if first { 1_000_000.0 } else { 1.0 };
            if !first {
                score += 1;
            }
            first = false;
            sent.lock().unwrap_or_else(|p| p.into_inner()).insert(score, Instant::now());
            let mut request = Request::new(SubmitProgressRequest {
                challenge_id: challenges[0].clone(),
                value,
                occurred_at: None,
                idempotency_key: String::new(),
            });
            request.metadata_mut().insert("authorization", probe_token.clone());
            progress.submit_progress(request).await.ok();
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    let (background, ()) = tokio::join!(load, probes);
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.cancel();
    for w in watchers {
        w.await.ok();
    }
    let mut lags = std::mem::take(&mut *lags.lock().unwrap_or_else(|p| p.into_inner()));
    lags.sort();
    let refused = std::mem::take(&mut *refused.lock().unwrap_or_else(|p| p.into_inner()));
    let echo_rate = echo.rate();
    if p.json {
        return Ok(json!({
                "bench": "leaderboard",
                "backend": target.backend,
                "concurrency": p.concurrency,
                "echo": echo.json(echo_rate),
                "leaderboard_top10_reads": reads.json(echo_rate),
                "watchers": {"requested": args.watchers, "connected": connected, "refused": refused.len(),
                    "first_refusal": refused.first(), "lag_samples": lags.len(),
                    "update_lag_ms": {"p50": percentile(&lags, 0.5), "p99": percentile(&lags, 0.99), "max": percentile(&lags, 1.0)},
                    "background_submits_per_sec": background.rate().round()},
        }));
    } else {
        println!(
            "leaderboard bench on {} — {} clients, {} s phases",
            target.backend, p.concurrency, p.duration
        );
        println!("{}", echo.line("bare echo (health)", echo_rate));
        println!("{}", reads.line("GetLeaderboard top 10", echo_rate));
        println!(
            "  {connected} watchers of one board: update lag p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms  ({} samples; {:.0} submits/s beside)",
            percentile(&lags, 0.5),
            percentile(&lags, 0.99),
            percentile(&lags, 1.0),
            lags.len(),
            background.rate()
        );
        if let Some(first) = refused.first() {
            println!("      {} watchers refused; the first: {first}", refused.len());
        }
    }
    Ok(serde_json::Value::Null)
}

fn target_uri(target: &Target) -> String {
    target.leaderboard_uri.clone()
}

fn clone_args(p: &PipelineArgs) -> PipelineArgs {
    PipelineArgs {
        concurrency: p.concurrency,
        users: p.users,
        challenges: p.challenges,
        duration: p.duration,
        target: p.target.clone(),
        progress_target: p.progress_target.clone(),
        leaderboard_target: p.leaderboard_target.clone(),
        secret: p.secret.clone(),
        postgres: p.postgres.clone(),
        redis: p.redis.clone(),
        json: p.json,
    }
}
