//! `ewpm`: one binary for the whole mesh.
//!
//! - `ewpm` / `ewpm dev`: every service and the REST edge in one process, embedded defaults.
//! - `ewpm serve <service>`: one service (or `gateway`) for a mesh deployment.
//! - `ewpm migrate`: apply every service's migrations to `DATABASE_URL`.
//! - `ewpm token`: mint a development token.

use std::{future::Future, net::SocketAddr, time::Duration};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use ewpm_challenge::standings::Standings;
use ewpm_incentive::notices::IncentiveNotices;
use ewpm_kit::{
    CancellationToken,
    auth::{Authenticator, Role, ServiceToken, TokenKeys},
    bus::{Bus, MemoryBus, RedisBus, Routed, SqliteBus},
    clock::{SharedClock, SystemClock},
    db,
    health::Dependency,
    server::{self, Mount},
    settings::{ServiceAddrs, Settings},
    shutdown, telemetry,
};
use ewpm_leaderboard::{
    access::ChallengeAudience,
    notices::{Notices, RedisNotices},
    rebuild::{ChallengeOwner, Owners},
    scores::{Dedupe, RedisScores, ScoreStore},
};
mod bench;
mod bench_incentives;
mod bench_progress;

/// mimalloc instead of glibc's allocator: under load the request path is allocation-heavy
/// (HTTP/2 frames, protobuf messages) and glibc's arena locks showed up as futex waits in
/// the profile of `ewpm bench progress`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use sea_orm::DatabaseConnection;
use std::sync::Arc;

/// EWPM: wellness challenges, incentives, quizzes, fan engagement and parcel tracking as a
/// gRPC mesh. Settings come from `EWPM_*` variables (see the README).
#[derive(Debug, Parser)]
#[command(name = "ewpm", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every service and the REST edge in one process (SQLite under ./data). The default.
    Dev,
    /// Run one service of the mesh against DATABASE_URL.
    Serve {
        /// Which service.
        service: ServiceName,
    },
    /// Apply every service's pending migrations to DATABASE_URL.
    Migrate,
    /// Load generators; figures are printed, never asserted.
    #[command(subcommand)]
    Bench(bench::Bench),
    /// Mint a token that an `ewpm dev` started in the same directory (or a mesh with the same
    /// EWPM_AUTH__SECRET) accepts.
    Token {
        /// User id (`sub`).
        #[arg(long)]
        sub: String,
        /// `admin`, `employer_admin` or `employee`.
        #[arg(long)]
        role: Role,
        /// Employer id.
        #[arg(long)]
        employer: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ServiceName {
    /// The challenge service (gRPC).
    Challenge,
    /// The scan service (gRPC), with its projector unless EWPM_SCAN__PROJECTOR__ENABLED=false.
    Scan,
    /// The scan projector alone (gRPC health and metrics only).
    ScanProjector,
    /// The progress service (gRPC), with its batch writers unless
    /// EWPM_PROGRESS__WRITER_ENABLED=false.
    Progress,
    /// The progress batch writers alone (metrics and health only).
    ProgressWriter,
    /// The leaderboard service (gRPC), with its delta applier unless
    /// EWPM_LEADERBOARD__APPLIER_ENABLED=false.
    Leaderboard,
    /// The incentive service (gRPC), with its processors unless
    /// EWPM_INCENTIVE__PROCESSOR_ENABLED=false.
    Incentive,
    /// The incentive processors alone (metrics and health only).
    IncentiveProcessor,
    /// The REST edge.
    Gateway,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = runtime.block_on(async move {
        match cli.command.unwrap_or(Command::Dev) {
            Command::Dev => dev(settings).await,
            Command::Serve { service: ServiceName::Challenge } => serve_challenge(settings).await,
            Command::Serve { service: ServiceName::Scan } => serve_scan(settings, true).await,
            Command::Serve { service: ServiceName::ScanProjector } => {
                serve_scan(settings, false).await
            }
            Command::Serve { service: ServiceName::Progress } => {
                serve_progress(settings, true).await
            }
            Command::Serve { service: ServiceName::ProgressWriter } => {
                serve_progress(settings, false).await
            }
            Command::Serve { service: ServiceName::Leaderboard } => {
                serve_leaderboard(settings).await
            }
            Command::Serve { service: ServiceName::Incentive } => {
                serve_incentive(settings, true).await
            }
            Command::Serve { service: ServiceName::IncentiveProcessor } => {
                serve_incentive(settings, false).await
            }
            Command::Serve { service: ServiceName::Gateway } => serve_gateway(settings).await,
            Command::Migrate => migrate(settings).await,
            Command::Bench(b) => bench::run(b).await,
            Command::Token { sub, role, employer } => {
                let keys = TokenKeys::for_embedded(&settings.auth, &settings.data_dir)?;
                println!("{}", keys.mint(&sub, role, employer.as_deref()));
                Ok(())
            }
        }
    });
    // Servers and background tasks have drained by now: bound how long dropping the runtime
    // may wait for blocking threads.
    runtime.shutdown_timeout(Duration::from_millis(200));
    result
}

/// Embedded mode: SQLite (the services' tables and, in a file of its own, the bus), the
/// in-process score store, every service on one gRPC port, the REST edge beside it.
async fn dev(mut settings: Settings) -> anyhow::Result<()> {
    telemetry::init_tracing(&settings.log);
    telemetry::metrics_handle();
    let shutdown = shutdown::on_signal();
    // Background work (writers, applier, projector) stops only after the servers drained, so
    // what the last calls queued is still written.
    let tasks = CancellationToken::new();
    let keys = TokenKeys::for_embedded(&settings.auth, &settings.data_dir)?;
    let url = settings.database_url_or_embedded();
    let db = db::connect(&url).await?;
    db::migrate_all(&db).await?;

    let grpc_listener = server::bind(settings.grpc.addr).await?;
    let http_listener = server::bind(settings.http.addr).await?;
    let grpc_addr = grpc_listener.local_addr()?;
    let http_addr = http_listener.local_addr()?;
    let own = format!("http://{}", loopback(grpc_addr));
    settings.services = ServiceAddrs {
        challenge: own.clone(),
        scan: own.clone(),
        progress: own.clone(),
        leaderboard: own.clone(),
        incentive: own,
    };

    let clock: SharedClock = Arc::new(SystemClock);
    let bus = embedded_bus(&settings.data_dir).await?;
    let mut mount =
        Mount::configured(Authenticator::with_limits(keys.clone(), &settings.limits), &settings);
    mount.depend_on(Dependency::Database(db.clone()));
    mount_challenge(&mut mount, &settings, &keys, db.clone(), clock.clone())?;
    let mut background =
        mount_scan(&mut mount, &settings, db.clone(), &url, clock.clone(), true, &tasks)?;
    let incentive_notices = Arc::new(ewpm_incentive::notices::MemoryNotices::new());
    background.extend(mount_progress(
        &mut mount,
        &settings,
        &keys,
        db.clone(),
        bus.clone(),
        clock.clone(),
        true,
        &tasks,
    )?);
    background.extend(mount_incentive(
        &mut mount,
        &settings,
        db,
        bus.clone(),
        incentive_notices,
        clock,
        true,
        &tasks,
        &shutdown,
    ));
    let scores = Arc::new(
        ewpm_leaderboard::scores::MemoryScores::new().with_dedupe(dedupe(&settings.leaderboard)),
    );
    let notices = Arc::new(ewpm_leaderboard::notices::MemoryNotices::new());
    background.extend(mount_leaderboard(
        &mut mount, &settings, &keys, scores, bus, notices, &tasks, &shutdown,
    )?);
    let state =
        ewpm_gateway::AppState::connect(&settings.services, keys.clone(), &settings.limits)?;

    print_banner(&keys, loopback(grpc_addr), loopback(http_addr), &db::redact(&url));
    let grace = Duration::from_secs(settings.grpc.shutdown_grace_secs);
    let served = tokio::try_join!(
        server::serve(grpc_listener, mount, &settings.grpc, shutdown.clone()),
        bounded(ewpm_gateway::serve(http_listener, state, shutdown.clone()), &shutdown, grace),
    );
    tasks.cancel();
    background.join(grace).await;
    served?;
    tracing::info!("stopped");
    Ok(())
}

/// The embedded mode's bus: accepted progress and activity (what a client was answered 202
/// for, `data/bus.db`) and recorded activity (what the writer acknowledged the queue for,
/// until the incentive processors have counted it, `data/activity-bus.db`) in SQLite files of
/// their own, so they are still queued after a crash; score deltas in memory, as the
/// in-process score store they feed is rebuilt from SQL after a restart anyway.
async fn embedded_bus(data_dir: &std::path::Path) -> anyhow::Result<Arc<dyn Bus>> {
    // One file (and connection) per topic: the queue that SubmitProgress answers from does
    // not wait behind the writers' activity publishes and the processors' reads and acks.
    let queue = SqliteBus::open(&data_dir.join("bus.db")).await?;
    let activity = SqliteBus::open(&data_dir.join("activity-bus.db")).await?;
    Ok(Arc::new(
        Routed::new(MemoryBus::new())
            .route(ewpm_progress::PROGRESS_TOPIC, queue)
            .route(ewpm_proto::progress::v1::ACTIVITY_TOPIC, activity),
    ))
}

/// Mounts the challenge service, with standings read from the leaderboard service.
fn mount_challenge(
    mount: &mut Mount,
    settings: &Settings,
    keys: &TokenKeys,
    db: DatabaseConnection,
    clock: SharedClock,
) -> anyhow::Result<()> {
    let token = Arc::new(ServiceToken::new(keys.clone(), "challenge"));
    let standings = Standings::from_leaderboard(&settings.services.leaderboard, token)?;
    mount.add(ewpm_challenge::app::build_with(db, clock, &settings.grpc, standings));
    Ok(())
}

/// Mounts the progress service (when `with_service`) and starts its batch writers (when
/// enabled, or always when the writers run alone).
#[allow(clippy::too_many_arguments)]
fn mount_progress(
    mount: &mut Mount,
    settings: &Settings,
    keys: &TokenKeys,
    db: DatabaseConnection,
    bus: Arc<dyn Bus>,
    clock: SharedClock,
    with_service: bool,
    shutdown: &CancellationToken,
) -> anyhow::Result<Background> {
    let token = Arc::new(ServiceToken::new(keys.clone(), "progress"));
    if with_service {
        mount.add(ewpm_progress::app::build(
            db.clone(),
            bus.clone(),
            &settings.services.challenge,
            token,
            clock,
            &settings.progress,
            &settings.grpc,
        )?);
    }
    let mut background = Background::default();
    if settings.progress.writer_enabled || !with_service {
        let name = ewpm_progress::app::process_name();
        for writer in ewpm_progress::app::writers(db, bus, &settings.progress, &name) {
            background.0.push(tokio::spawn(writer.run(shutdown.clone())));
        }
    }
    Ok(background)
}

/// Mounts the incentive service (when `with_service`; its watch streams end with `streams`)
/// and starts its processors (when enabled, or always when they run alone; they end with
/// `tasks`).
#[allow(clippy::too_many_arguments)]
fn mount_incentive(
    mount: &mut Mount,
    settings: &Settings,
    db: DatabaseConnection,
    bus: Arc<dyn Bus>,
    awards: Arc<dyn IncentiveNotices>,
    clock: SharedClock,
    with_service: bool,
    tasks: &CancellationToken,
    streams: &CancellationToken,
) -> Background {
    if with_service {
        mount.add(ewpm_incentive::app::build(
            db.clone(),
            clock.clone(),
            awards.clone(),
            &settings.grpc,
            &settings.limits,
            streams.clone(),
        ));
    }
    let mut background = Background::default();
    if settings.incentive.processor_enabled || !with_service {
        let name = ewpm_progress::app::process_name();
        for processor in
            ewpm_incentive::app::processors(db, bus, awards, clock, &settings.incentive, &name)
        {
            background.0.push(tokio::spawn(processor.run(tasks.clone())));
        }
    }
    background
}

/// Mounts the leaderboard service (its watch streams end with `streams`) and starts its
/// delta applier (when enabled; it ends with `tasks`).
#[allow(clippy::too_many_arguments)]
fn mount_leaderboard(
    mount: &mut Mount,
    settings: &Settings,
    keys: &TokenKeys,
    scores: Arc<dyn ScoreStore>,
    bus: Arc<dyn Bus>,
    notices: Arc<dyn Notices>,
    tasks: &CancellationToken,
    streams: &CancellationToken,
) -> anyhow::Result<Background> {
    let owner = ChallengeOwner::new(&settings.services.progress, keys.clone())?;
    let audience = ChallengeAudience::new(&settings.services.challenge, keys.clone())?;
    let owners = Owners::new()
        .with("challenge", Arc::new(owner))
        .with_audience("challenge", Arc::new(audience));
    let built = ewpm_leaderboard::app::build(
        scores,
        bus,
        notices,
        owners,
        &settings.leaderboard,
        &settings.grpc,
        streams.clone(),
    );
    mount.add(built.service);
    let mut background = Background::default();
    if settings.leaderboard.applier_enabled {
        let applier = built.applier;
        let tasks = tasks.clone();
        background.0.push(tokio::spawn(async move {
            if let Err(err) = applier.run(tasks).await {
                tracing::error!(error = format!("{err:#}"), "score delta applier stopped");
            }
        }));
    }
    Ok(background)
}

/// The score stores' dedupe window from the settings, on the wall clock.
fn dedupe(settings: &ewpm_kit::settings::LeaderboardSettings) -> Dedupe {
    Dedupe { window: Duration::from_secs(settings.dedupe_window_secs), ..Dedupe::default() }
}

/// One challenge service of the mesh.
async fn serve_challenge(settings: Settings) -> anyhow::Result<()> {
    serve_mesh(settings, "challenge", async |m: Ctx<'_>| {
        let db = m.db()?;
        mount_challenge(m.mount, m.settings, m.keys, db, Arc::new(SystemClock))?;
        Ok(Background::default())
    })
    .await
}

/// The progress service with its writers (`with_service`), or the writers alone.
async fn serve_progress(settings: Settings, with_service: bool) -> anyhow::Result<()> {
    let name = if with_service { "progress" } else { "progress-writer" };
    serve_mesh(settings, name, async |m: Ctx<'_>| {
        let db = m.db()?;
        let redis = m.settings.require_redis_url()?;
        let prefix = &m.settings.redis_prefix;
        let bus: Arc<dyn Bus> =
            Arc::new(RedisBus::connect(&redis, prefix).await?.with_max_len(m.settings.bus_max_len));
        m.mount.depend_on(Dependency::Redis(ewpm_kit::redis::connect(&redis).await?));
        let clock: SharedClock = Arc::new(SystemClock);
        mount_progress(m.mount, m.settings, m.keys, db, bus, clock, with_service, m.tasks)
    })
    .await
}

/// The leaderboard service (with its applier).
async fn serve_leaderboard(settings: Settings) -> anyhow::Result<()> {
    serve_mesh(settings, "leaderboard", async |m: Ctx<'_>| {
        let redis = m.settings.require_redis_url()?;
        let prefix = &m.settings.redis_prefix;
        let bus: Arc<dyn Bus> =
            Arc::new(RedisBus::connect(&redis, prefix).await?.with_max_len(m.settings.bus_max_len));
        m.mount.depend_on(Dependency::Redis(ewpm_kit::redis::connect(&redis).await?));
        let scores = Arc::new(
            RedisScores::connect(&redis, prefix)
                .await?
                .with_dedupe(dedupe(&m.settings.leaderboard)),
        );
        let notices = Arc::new(RedisNotices::connect(&redis, prefix).await?);
        mount_leaderboard(m.mount, m.settings, m.keys, scores, bus, notices, m.tasks, m.shutdown)
    })
    .await
}

/// The incentive service with its processors (`with_service`), or the processors alone.
async fn serve_incentive(settings: Settings, with_service: bool) -> anyhow::Result<()> {
    let name = if with_service { "incentive" } else { "incentive-processor" };
    serve_mesh(settings, name, async |m: Ctx<'_>| {
        let db = m.db()?;
        let redis = m.settings.require_redis_url()?;
        let prefix = &m.settings.redis_prefix;
        let bus: Arc<dyn Bus> =
            Arc::new(RedisBus::connect(&redis, prefix).await?.with_max_len(m.settings.bus_max_len));
        m.mount.depend_on(Dependency::Redis(ewpm_kit::redis::connect(&redis).await?));
        let awards =
            Arc::new(ewpm_incentive::notices::RedisNotices::connect(&redis, prefix).await?);
        let clock: SharedClock = Arc::new(SystemClock);
        Ok(mount_incentive(
            m.mount,
            m.settings,
            db,
            bus,
            awards,
            clock,
            with_service,
            m.tasks,
            m.shutdown,
        ))
    })
    .await
}

/// The scan service (with `with_service`) or its projector alone.
async fn serve_scan(settings: Settings, with_service: bool) -> anyhow::Result<()> {
    let name = if with_service { "scan" } else { "scan-projector" };
    serve_mesh(settings, name, async |m: Ctx<'_>| {
        let db = m.db()?;
        let url = m.settings.require_database_url()?;
        mount_scan(m.mount, m.settings, db, &url, Arc::new(SystemClock), with_service, m.tasks)
    })
    .await
}

/// What a service's `mount` step of [`serve_mesh`] gets.
struct Ctx<'a> {
    mount: &'a mut Mount,
    settings: &'a Settings,
    keys: &'a TokenKeys,
    /// Ends streams and servers (SIGTERM).
    shutdown: &'a CancellationToken,
    /// Ends background tasks, once the servers have drained.
    tasks: &'a CancellationToken,
    db: Option<DatabaseConnection>,
}

impl Ctx<'_> {
    /// The service's database (DATABASE_URL is required by services that own tables).
    fn db(&self) -> anyhow::Result<DatabaseConnection> {
        self.db.clone().context(
            "DATABASE_URL is required here (e.g. DATABASE_URL=postgres://user:pass@host/ewpm)",
        )
    }
}

/// What every `ewpm serve <service>` does: tracing, metrics, the required token secret, the
/// database (when DATABASE_URL is set), the gRPC and metrics listeners; `mount` adds the
/// service and starts its background tasks; then serve until SIGTERM and drain.
async fn serve_mesh(
    settings: Settings,
    name: &str,
    mount: impl AsyncFnOnce(Ctx<'_>) -> anyhow::Result<Background>,
) -> anyhow::Result<()> {
    telemetry::init_tracing(&settings.log);
    telemetry::metrics_handle();
    let shutdown = shutdown::on_signal();
    let tasks = CancellationToken::new();
    let keys = TokenKeys::required(&settings.auth)?;
    let db = match &settings.database_url {
        Some(url) => Some(db::connect(url).await?),
        None => None,
    };
    let grpc_listener = server::bind(settings.grpc.addr).await?;
    let metrics_listener = server::bind(settings.metrics.addr).await?;
    let mut services =
        Mount::configured(Authenticator::with_limits(keys.clone(), &settings.limits), &settings);
    if let Some(db) = &db {
        services.depend_on(Dependency::Database(db.clone()));
    }
    let background = mount(Ctx {
        mount: &mut services,
        settings: &settings,
        keys: &keys,
        shutdown: &shutdown,
        tasks: &tasks,
        db,
    })
    .await?;
    tracing::info!(
        service = name,
        grpc = %grpc_listener.local_addr()?,
        metrics = %metrics_listener.local_addr()?,
        "listening"
    );
    let served = tokio::try_join!(
        server::serve(grpc_listener, services, &settings.grpc, shutdown.clone()),
        server::serve_metrics(metrics_listener, shutdown.clone()),
    );
    tasks.cancel();
    background.join(Duration::from_secs(settings.grpc.shutdown_grace_secs)).await;
    served?;
    Ok(())
}

/// Mounts the scan service (when `with_service`) and starts its projector (when enabled, or
/// always when the projector runs alone).
fn mount_scan(
    mount: &mut Mount,
    settings: &Settings,
    db: DatabaseConnection,
    url: &str,
    clock: SharedClock,
    with_service: bool,
    shutdown: &CancellationToken,
) -> anyhow::Result<Background> {
    let status = ewpm_scan::projector::Status::default();
    if with_service {
        mount.add(ewpm_scan::app::build(db.clone(), clock.clone(), &settings.grpc, status.clone()));
    }
    let mut background = Background::default();
    let projector_settings = &settings.scan.projector;
    if projector_settings.enabled || !with_service {
        let projector =
            ewpm_scan::app::projector(db, url, clock.clone(), projector_settings, status.clone())?;
        background.0.push(tokio::spawn(projector.run(shutdown.clone())));
        background.0.push(tokio::spawn(ewpm_scan::app::report_health(
            mount.health(),
            status,
            clock,
            Duration::from_secs(projector_settings.stale_after_secs),
            shutdown.clone(),
        )));
    }
    Ok(background)
}

/// Background tasks that end on shutdown.
#[derive(Default)]
struct Background(Vec<tokio::task::JoinHandle<()>>);

impl Background {
    /// Adds `other`'s tasks.
    fn extend(&mut self, other: Background) {
        self.0.extend(other.0);
    }

    /// Waits up to `grace` for every task to end.
    async fn join(self, grace: Duration) {
        if tokio::time::timeout(grace, futures::future::join_all(self.0)).await.is_err() {
            tracing::warn!("background tasks outlived the grace period");
        }
    }
}

/// The REST edge of the mesh.
async fn serve_gateway(settings: Settings) -> anyhow::Result<()> {
    telemetry::init_tracing(&settings.log);
    telemetry::metrics_handle();
    let shutdown = shutdown::on_signal();
    let keys = TokenKeys::required(&settings.auth)?;
    let state = ewpm_gateway::AppState::connect(&settings.services, keys, &settings.limits)?;
    let listener = server::bind(settings.http.addr).await?;
    tracing::info!(http = %listener.local_addr()?, challenge = %settings.services.challenge, "REST edge listening");
    let grace = Duration::from_secs(settings.grpc.shutdown_grace_secs);
    bounded(ewpm_gateway::serve(listener, state, shutdown.clone()), &shutdown, grace).await
}

async fn migrate(settings: Settings) -> anyhow::Result<()> {
    telemetry::init_tracing(&settings.log);
    let url = settings.require_database_url()?;
    let db = db::connect(&url).await?;
    db::migrate_all(&db).await?;
    tracing::info!(database = %db::redact(&url), "migrations applied");
    Ok(())
}

/// Runs `server` until it ends, or until `grace` after `shutdown`, whichever is first.
async fn bounded(
    server: impl Future<Output = anyhow::Result<()>>,
    shutdown: &CancellationToken,
    grace: Duration,
) -> anyhow::Result<()> {
    tokio::select! {
        result = server => result,
        () = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!("open HTTP connections outlived the grace period; dropped");
            Ok(())
        }
    }
}

/// A wildcard listen address as the loopback address clients can dial.
fn loopback(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() { SocketAddr::from(([127, 0, 0, 1], addr.port())) } else { addr }
}

fn print_banner(keys: &TokenKeys, grpc: SocketAddr, http: SocketAddr, database: &str) {
    let admin = keys.mint("dev-admin", Role::Admin, None);
    let employee = keys.mint("dev-employee", Role::Employee, Some("acme"));
    let now = example_window();
    println!(
        "\
EWPM dev is running (embedded mode: {database})
  gRPC      {grpc}   (challenge, progress, leaderboard, incentive, scan, health, reflection)
  REST      http://{http}   (docs: http://{http}/docs)

Development tokens (valid 24 h; `ewpm token --help` mints more):
  ADMIN={admin}
  EMPLOYEE={employee}

Try:
  grpcurl -plaintext -H 'authorization: Bearer {admin}' {grpc} ewpm.challenge.v1.ChallengeService/ListChallenges
  curl -sS -X POST http://{http}/api/challenges -H 'authorization: Bearer {admin}' -H 'content-type: application/json' -d '{{\"name\":\"10k steps a day\",\"startTime\":\"{start}\",\"endTime\":\"{end}\",\"goal\":{{\"target\":300000,\"unit\":\"steps\"}}}}'
",
        start = now.0,
        end = now.1,
    );
}

/// Today 00:00 UTC and 30 days later, as RFC 3339 strings, for the printed example.
fn example_window() -> (String, String) {
    let today = chrono::Utc::now().date_naive();
    let fmt = |d: chrono::NaiveDate| format!("{d}T00:00:00Z");
    (fmt(today), fmt(today + chrono::Days::new(30)))
}
