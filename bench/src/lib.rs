//! `ewpm bench`: load generators that report throughput and latency against this machine's
//! own limits. Figures are printed (or emitted as JSON), never asserted.

mod all;
mod boards;
mod bus;
mod edge;
mod engagement;
mod incentives;
mod pipeline;
mod quiz;

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::{Args, Subcommand};
use ewpm_kit::{
    CancellationToken,
    auth::{Authenticator, Role, TokenKeys},
    clock::{SharedClock, SystemClock},
    db,
    host::Host,
    module::Module,
    server::{self, Mount},
    settings::Settings,
};
use ewpm_proto::scan::v1::{self as pb, scan_service_client::ScanServiceClient};
use ewpm_scan::{
    projector::{Lease, Projector, ProjectorConfig, Source, Status, Step},
    store::ScanStore,
};
use sea_orm::ConnectionTrait;
use serde_json::json;
use tonic::transport::Channel;

/// What to measure.
#[derive(Debug, Subcommand)]
pub enum Bench {
    /// Scan ingest over gRPC (batched device uploads) and projection into parcel states.
    Scan(ScanArgs),
    /// SubmitProgress throughput and latency, submission-to-visible in WatchLeaderboard,
    /// leaderboard reads and resident memory, each against a bare echo RPC.
    Progress(crate::pipeline::PipelineArgs),
    /// Leaderboard top-10 reads and the update lag of many watchers of one board.
    Leaderboard(crate::pipeline::LeaderboardArgs),
    /// Recorded activity on the `activity` topic through the incentive processors into awards, with
    /// an exactly-once check.
    Incentives(crate::incentives::IncentiveArgs),
    /// SubmitAnswer throughput against the bare echo, and the fan-out lag of a quiz session's
    /// room (WatchSession streams) from a reveal to each participant, for rooms of 1,000 and
    /// 10,000.
    Quiz(crate::quiz::QuizArgs),
    /// Match event ingest: batched IngestEvents (accepted and persisted events/s) against the
    /// bare echo, the lag from an event to the WatchMatch push counting it, and single-event
    /// `POST /api/events` through the REST edge against the edge's `/health`.
    Engagement(crate::engagement::EngagementArgs),
    /// A `board:` board (sum, descending, daily reset) fed by its members: SubmitScore,
    /// GetLeaderboard pages that also place the caller, and GetRanks of 20, each against the
    /// bare echo; then the lag of members watching their own place (with neighbours and
    /// rank notices) from a score that moves them to the view showing it.
    Boards(crate::boards::BoardsArgs),
    /// The REST edge in front of the in-process stack: `POST …/progress`, `GET …/leaderboard`
    /// and `GET …/challenges/active` against the edge's own no-upstream route (`/livez`), and
    /// `/health`.
    Edge(crate::edge::EdgeArgs),
    /// The bus alone on a Redis or a Redis Cluster: keyed producers and consumers for each
    /// partition count (`--partitions 1,2,4,8`), messages consumed per second.
    Bus(crate::bus::BusArgs),
    /// Every figure of the performance table in one run: progress (embedded, then on
    /// PostgreSQL and Redis), 10,000 watchers, the REST edge, scan, engagement ingest and the
    /// incentive processors on PostgreSQL, each with the bare echo / no-upstream baseline of
    /// its own phase; then one summary of every row against its goal.
    All(crate::all::AllArgs),
}

/// `ewpm bench scan` options.
#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Scans to ingest and project.
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Scans per IngestScanEvents call.
    #[arg(long, default_value_t = 1_000)]
    batch: usize,
    /// Concurrent uploading clients.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Distinct parcels.
    #[arg(long, default_value_t = 50_000)]
    parcels: u64,
    /// Projector page size.
    #[arg(long, default_value_t = 5_000)]
    page_size: u32,
    /// PostgreSQL server to measure against (an admin URL; a throwaway database is created
    /// and dropped). Without it, a temporary SQLite file.
    #[arg(long)]
    postgres: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Runs a bench; in-process stacks run `modules` (the binary's registry) as `ewpm dev` or a
/// mesh would.
pub async fn run(bench: Bench, modules: &'static [&'static dyn Module]) -> anyhow::Result<()> {
    // Each bench prints its text as it goes; with --json it returns one report to print.
    let (json, report) = match bench {
        Bench::Scan(args) => (args.json, scan(args, modules).await?),
        Bench::Progress(args) => (args.json, crate::pipeline::progress(args, modules).await?),
        Bench::Leaderboard(args) => {
            (args.pipeline.json, crate::pipeline::leaderboard(args, modules).await?)
        }
        Bench::Incentives(args) => (args.json, crate::incentives::incentives(args, modules).await?),
        Bench::Engagement(args) => {
            (args.pipeline.json, crate::engagement::engagement(args, modules).await?)
        }
        Bench::Edge(args) => (args.pipeline.json, crate::edge::edge(args, modules).await?),
        Bench::All(args) => (args.json, crate::all::all(args, modules).await?),
        Bench::Bus(args) => (args.json, crate::bus::bus(args).await?),
        Bench::Quiz(args) => return crate::quiz::quiz(args, modules).await,
        Bench::Boards(args) => return crate::boards::boards(args, modules).await,
    };
    if json {
        println!("{report}");
    }
    Ok(())
}

/// The settings of an in-process stack: the process environment (`EWPM_*` tunes it, e.g.
/// EWPM_PROGRESS__WRITERS), then `overrides` (`EWPM_…` names), with every module's section.
pub(crate) fn settings(
    modules: &[&'static dyn Module],
    overrides: &[(&str, String)],
) -> anyhow::Result<Settings> {
    let mut vars: Vec<(String, String)> = std::env::vars().collect();
    vars.extend(overrides.iter().map(|(k, v)| (k.to_string(), v.clone())));
    let sections: Vec<_> = modules.iter().map(|m| m.section()).collect();
    let mut settings = Settings::load_from(&vars, &sections)?;
    settings.grpc.addr = SocketAddr::from(([127, 0, 0, 1], 0));
    Ok(settings)
}

/// Where an in-process stack keeps what its modules share.
pub(crate) enum Stores<'a> {
    /// As `ewpm dev`: SQLite at the database's URL, the bus's durable topics in files under
    /// the directory, in-process score stores.
    Embedded(&'a std::path::Path),
    /// As the mesh: Redis at the URL, keys under the prefix.
    Redis(&'a str, &'a str),
}

/// Some modules of the registry served in this process on one port, as `ewpm dev` (or one
/// mesh process holding them all) serves them.
pub(crate) struct Stack {
    /// `http://127.0.0.1:<port>`.
    pub(crate) uri: String,
    /// The stack's database.
    pub(crate) db: sea_orm::DatabaseConnection,
    /// The stack's bus (the one its modules publish on and consume).
    pub(crate) bus: Arc<dyn ewpm_kit::bus::Bus>,
    /// The stack's services callable in this process (what `ewpm dev`'s REST edge calls).
    pub(crate) local: ewpm_kit::client::Upstream,
    stop: CancellationToken,
    server: tokio::task::JoinHandle<()>,
    /// Redis and the stack's throwaway key prefix, emptied at the end.
    redis: Option<(String, String)>,
}

impl Stack {
    /// Migrates `database_url` and starts the modules named in `start` over `stores`.
    pub(crate) async fn start(
        mut settings: Settings,
        keys: TokenKeys,
        modules: &'static [&'static dyn Module],
        start: &[&str],
        database_url: &str,
        stores: Stores<'_>,
    ) -> anyhow::Result<Self> {
        let listener = server::bind(settings.grpc.addr).await?;
        let uri = format!("http://{}", listener.local_addr()?);
        settings.services = modules.iter().map(|m| (m.name().to_string(), uri.clone())).collect();
        settings.database_url = Some(database_url.to_string());
        // The bench's few callers send far beyond one user's rate: no per-caller limit (as
        // `bench --target` wants EWPM_LIMITS__RATE_PER_SEC=0).
        settings.limits.rate_per_sec = 0;
        let stop = CancellationToken::new();
        let redis = match stores {
            Stores::Redis(url, prefix) => Some((url.to_string(), prefix.to_string())),
            Stores::Embedded(_) => None,
        };
        let mut host = match stores {
            Stores::Embedded(dir) => {
                settings.data_dir = dir.to_path_buf();
                Host::embedded(settings, keys, modules, stop.clone()).await?
            }
            Stores::Redis(url, prefix) => {
                settings.redis_url = Some(url.to_string());
                settings.redis_prefix = prefix.to_string();
                let conn = db::connect(database_url).await?;
                ewpm_kit::host::migrate(&conn, modules).await?;
                Host::mesh(settings, keys, stop.clone()).await?
            }
        };
        for module in modules.iter().filter(|m| start.contains(&m.name())) {
            host.start(*module, None).await?;
        }
        let db = host.database().context("the stack's database")?.clone();
        let local = host.local();
        let bus = host.bus().await?;
        let server = tokio::spawn(async move {
            if let Err(err) = host.serve(listener, async { Ok(()) }).await {
                eprintln!("bench server failed: {err:#}");
            }
        });
        Ok(Self { uri, db, bus, local, stop, server, redis })
    }

    /// Stops the servers, then the background tasks (up to the grace period); then deletes
    /// the stack's Redis keys (client event ids, for one, would stay for a day).
    pub(crate) async fn stop(self) {
        self.stop.cancel();
        drop(self.server.await);
        if let Some((url, prefix)) = self.redis
            && let Err(err) = delete_prefix(&url, &prefix).await
        {
            eprintln!("could not delete the bench's Redis keys under {prefix}: {err:#}");
        }
    }
}

/// Deletes every key under `prefix`, a thousand at a time.
async fn delete_prefix(url: &str, prefix: &str) -> anyhow::Result<()> {
    use fred::prelude::KeysInterface;
    use futures::StreamExt;
    let client = ewpm_kit::redis::connect(url).await?;
    let mut keys = client.scan_buffered(format!("{prefix}*"), Some(10_000), None).chunks(1_000);
    while let Some(chunk) = keys.next().await {
        let chunk = chunk.into_iter().collect::<Result<Vec<fred::types::Key>, _>>()?;
        let _: i64 = client.unlink(chunk).await?;
    }
    Ok(())
}

/// The REST edge in front of a stack, served in this process on a port-0 listener, as
/// `ewpm dev` serves it beside its gRPC port.
pub(crate) struct Edge {
    /// `http://127.0.0.1:<port>`.
    pub(crate) base: String,
    stop: CancellationToken,
    server: tokio::task::JoinHandle<()>,
}

impl Edge {
    /// The edge calling `local`'s services in this process, as `ewpm dev`'s edge does,
    /// verifying tokens with `keys`.
    pub(crate) async fn start(
        local: ewpm_kit::client::Upstream,
        keys: TokenKeys,
        limits: &ewpm_kit::settings::LimitSettings,
    ) -> anyhow::Result<Self> {
        let state = ewpm_gateway::AppState::in_process(local, keys, limits);
        let listener = server::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let base = format!("http://{}", listener.local_addr()?);
        let stop = CancellationToken::new();
        let server = tokio::spawn({
            let stop = stop.clone();
            async move {
                if let Err(err) = ewpm_gateway::serve(listener, state, stop).await {
                    eprintln!("bench REST edge failed: {err:#}");
                }
            }
        });
        Ok(Self { base, stop, server })
    }

    /// Stops the edge.
    pub(crate) async fn stop(self) {
        self.stop.cancel();
        drop(self.server.await);
    }
}

/// A throwaway database: a temp SQLite file, or a fresh PostgreSQL database dropped at the end.
pub(crate) struct BenchDb {
    pub(crate) url: String,
    backend: &'static str,
    drop_with: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

impl BenchDb {
    pub(crate) async fn create(postgres: Option<&str>) -> anyhow::Result<Self> {
        match postgres {
            None => {
                let dir = tempfile::tempdir()?;
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("bench.db").display());
                Ok(Self { url, backend: "sqlite", drop_with: None, _dir: Some(dir) })
            }
            Some(admin) => {
                let name = format!("ewpm_bench_{}", uuid::Uuid::new_v4().simple());
                let conn = db::connect(admin).await?;
                conn.execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
                    .await
                    .context("create bench database")?;
                let url = db::with_database(admin, &name);
                Ok(Self {
                    url,
                    backend: "postgres",
                    drop_with: Some((admin.to_string(), name)),
                    _dir: None,
                })
            }
        }
    }

    /// The temporary directory of a SQLite bench database.
    pub(crate) fn sqlite_dir(&self) -> Option<&std::path::Path> {
        self._dir.as_ref().map(tempfile::TempDir::path)
    }

    pub(crate) async fn drop_database(self) {
        if let Some((admin, name)) = self.drop_with
            && let Ok(conn) = db::connect(&admin).await
        {
            drop(
                conn.execute_unprepared(&format!(
                    "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                ))
                .await,
            );
        }
    }
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

pub(crate) async fn scan(
    args: ScanArgs,
    modules: &'static [&'static dyn Module],
) -> anyhow::Result<serde_json::Value> {
    let bench_db = BenchDb::create(args.postgres.as_deref()).await?;
    let result = scan_on(&args, &bench_db, modules).await;
    bench_db.drop_database().await;
    result
}

async fn scan_on(
    args: &ScanArgs,
    bench_db: &BenchDb,
    modules: &'static [&'static dyn Module],
) -> anyhow::Result<serde_json::Value> {
    let conn = db::connect(&bench_db.url).await?;
    ewpm_kit::host::migrate(&conn, modules).await?;
    let clock: SharedClock = Arc::new(SystemClock);
    let keys = TokenKeys::new(&uuid::Uuid::new_v4().to_string(), &Settings::default().auth);
    let token = format!("Bearer {}", keys.mint("bench-device", Role::Employee, None));
    let mut mount = Mount::new(Authenticator::new(keys));
    let grpc = Settings::default().grpc;
    mount.add(ewpm_scan::app::build(conn.clone(), clock.clone(), &grpc, Status::default()));
    let listener = server::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let server = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { server::serve(listener, mount, &grpc, shutdown).await }
    });

    // Ingest: `concurrency` clients over 4 connections upload batches until `events` are in.
    let channels: Vec<Channel> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(Channel::from_shared(format!("http://{addr}"))?.connect().await?);
        }
        v
    };
    let batches = args.events.div_ceil(args.batch);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..args.concurrency {
        let mut client = ScanServiceClient::new(channels[c % channels.len()].clone())
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        let next = next.clone();
        let token = token.clone();
        let (batch, events, parcels) = (args.batch, args.events, args.parcels);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let b = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if b >= batches {
                    return Ok::<_, anyhow::Error>(latencies);
                }
                let first = b * batch;
                let scans: Vec<pb::NewScanEvent> = (first..(first + batch).min(events))
                    .map(|i| pb::NewScanEvent {
                        parcel_id: (i as u64 * 7_919 % parcels) as i64 + 1,
                        r#type: ["PICKUP", "STATUS", "DELIVERY"][i % 3].to_string(),
                        create_time: Some(prost_types::Timestamp {
                            seconds: 1_672_531_200 + i as i64,
                            nanos: 0,
                        }),
                        status_code: String::new(),
                        device: Some(pb::Device {
                            device_id: (i % 500) as i64,
                            device_transaction_id: i as i64 + 1,
                        }),
                        user: Some(pb::ScanUser {
                            user_id: "NC1001".into(),
                            carrier_id: "NC".into(),
                            run_id: (i / 100).to_string(),
                        }),
                    })
                    .collect();
                let mut request =
                    tonic::Request::new(pb::IngestScanEventsRequest { events: scans });
                request.metadata_mut().insert("authorization", token.parse()?);
                let t = Instant::now();
                client.ingest_scan_events(request).await.context("ingest")?;
                latencies.push(t.elapsed());
            }
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    let ingest_secs = started.elapsed().as_secs_f64();
    latencies.sort();

    // Projection: the projector from an empty checkpoint until caught up.
    let store = ScanStore::new(conn.clone());
    let config = ProjectorConfig { page_size: args.page_size, ..ProjectorConfig::default() };
    let mut projector = Projector::new(
        store.clone(),
        Source::Own(store.clone()),
        Lease::Local,
        config,
        Status::default(),
        clock,
    );
    let started = Instant::now();
    let token = CancellationToken::new();
    let mut pages = 0;
    loop {
        match projector.step(&token).await? {
            Step::CaughtUp => break,
            _ => pages += 1,
        }
    }
    let project_secs = started.elapsed().as_secs_f64();
    let projected = store.checkpoint("own", chrono::Utc::now()).await?;
    shutdown.cancel();
    drop(server.await);

    let ingest_rate = args.events as f64 / ingest_secs;
    let project_rate = projected as f64 / project_secs;
    let report = json!({
        "bench": "scan",
        "backend": bench_db.backend,
        "events": args.events,
        "batch": args.batch,
        "concurrency": args.concurrency,
        "ingest": {
            "events_per_sec": ingest_rate.round(),
            "seconds": ingest_secs,
            "batch_latency_ms": {"p50": percentile(&latencies, 0.5), "p99": percentile(&latencies, 0.99), "max": percentile(&latencies, 1.0)},
        },
        "projection": {"events_per_sec": project_rate.round(), "seconds": project_secs, "pages": pages, "page_size": args.page_size, "checkpoint": projected},
    });
    if !args.json {
        println!(
            "scan bench on {} — {} events, batches of {}, {} clients\n  ingest:     {:>9.0} events/s  (batch latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms)\n  projection: {:>9.0} events/s  ({} pages of up to {})",
            bench_db.backend,
            args.events,
            args.batch,
            args.concurrency,
            ingest_rate,
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            percentile(&latencies, 1.0),
            project_rate,
            pages,
            args.page_size,
        );
    }
    Ok(report)
}
