//! `ewpm`: one binary for the whole mesh.
//!
//! - `ewpm` / `ewpm dev`: every service and the REST edge in one process, embedded defaults.
//! - `ewpm serve <service>`: one service (or `gateway`) for a mesh deployment.
//! - `ewpm migrate`: apply every service's migrations to `DATABASE_URL`.
//! - `ewpm token`: mint a development token.

use std::{future::Future, net::SocketAddr, time::Duration};

use clap::{Parser, Subcommand, ValueEnum};
use ewpm_kit::{
    CancellationToken,
    auth::{Authenticator, Role, TokenKeys},
    clock::{SharedClock, SystemClock},
    db,
    server::{self, Mount},
    settings::Settings,
    shutdown, telemetry,
};
mod bench;

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

/// Embedded mode: SQLite, every service on one gRPC port, the REST edge beside it.
async fn dev(mut settings: Settings) -> anyhow::Result<()> {
    telemetry::init_tracing(&settings.log);
    telemetry::metrics_handle();
    let shutdown = shutdown::on_signal();
    let keys = TokenKeys::for_embedded(&settings.auth, &settings.data_dir)?;
    let url = settings.database_url_or_embedded();
    let db = db::connect(&url).await?;
    db::migrate_all(&db).await?;

    let grpc_listener = server::bind(settings.grpc.addr).await?;
    let http_listener = server::bind(settings.http.addr).await?;
    let grpc_addr = grpc_listener.local_addr()?;
    let http_addr = http_listener.local_addr()?;
    settings.services.challenge = format!("http://{}", loopback(grpc_addr));
    settings.services.scan = settings.services.challenge.clone();

    let clock: SharedClock = Arc::new(SystemClock);
    let mut mount = Mount::new(Authenticator::new(keys.clone()));
    mount.add(ewpm_challenge::app::build(db.clone(), clock.clone(), &settings.grpc));
    let background = mount_scan(&mut mount, &settings, db, &url, clock, true, &shutdown)?;
    let state = ewpm_gateway::AppState::connect(&settings.services)?;

    print_banner(&keys, loopback(grpc_addr), loopback(http_addr), &db::redact(&url));
    let grace = Duration::from_secs(settings.grpc.shutdown_grace_secs);
    tokio::try_join!(
        server::serve(grpc_listener, mount, &settings.grpc, shutdown.clone()),
        bounded(ewpm_gateway::serve(http_listener, state, shutdown.clone()), &shutdown, grace),
    )?;
    background.join(grace).await;
    tracing::info!("stopped");
    Ok(())
}

/// One challenge service of the mesh.
async fn serve_challenge(settings: Settings) -> anyhow::Result<()> {
    serve_mesh(settings, "challenge", |mount, settings, db, _, _| {
        mount.add(ewpm_challenge::app::build(db, Arc::new(SystemClock), &settings.grpc));
        Ok(Background::default())
    })
    .await
}

/// The scan service (with `with_service`) or its projector alone.
async fn serve_scan(settings: Settings, with_service: bool) -> anyhow::Result<()> {
    let name = if with_service { "scan" } else { "scan-projector" };
    serve_mesh(settings, name, |mount, settings, db, url, shutdown| {
        mount_scan(mount, settings, db, url, Arc::new(SystemClock), with_service, shutdown)
    })
    .await
}

/// What every `ewpm serve <service>` does: tracing, metrics, the required token secret and
/// database, the gRPC and metrics listeners; `mount` adds the service and starts its
/// background tasks; then serve until SIGTERM and drain.
async fn serve_mesh(
    settings: Settings,
    name: &str,
    mount: impl FnOnce(
        &mut Mount,
        &Settings,
        DatabaseConnection,
        &str,
        &CancellationToken,
    ) -> anyhow::Result<Background>,
) -> anyhow::Result<()> {
    telemetry::init_tracing(&settings.log);
    telemetry::metrics_handle();
    let shutdown = shutdown::on_signal();
    let keys = TokenKeys::required(&settings.auth)?;
    let url = settings.require_database_url()?;
    let db = db::connect(&url).await?;
    let grpc_listener = server::bind(settings.grpc.addr).await?;
    let metrics_listener = server::bind(settings.metrics.addr).await?;
    let mut services = Mount::new(Authenticator::new(keys));
    let background = mount(&mut services, &settings, db, &url, &shutdown)?;
    tracing::info!(
        service = name,
        grpc = %grpc_listener.local_addr()?,
        metrics = %metrics_listener.local_addr()?,
        "listening"
    );
    tokio::try_join!(
        server::serve(grpc_listener, services, &settings.grpc, shutdown.clone()),
        server::serve_metrics(metrics_listener, shutdown.clone()),
    )?;
    background.join(Duration::from_secs(settings.grpc.shutdown_grace_secs)).await;
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
    let state = ewpm_gateway::AppState::connect(&settings.services)?;
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
  gRPC      {grpc}   (challenge, scan, health, reflection)
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
