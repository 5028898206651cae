//! `ewpm`: one binary for the whole mesh; the CLI over the module registry (`ewpm::MODULES`).
//!
//! - `ewpm` / `ewpm dev`: every module and the REST edge in one process, embedded defaults.
//! - `ewpm serve <module>`: one module (or one of its parts, or `gateway`) for a mesh
//!   deployment.
//! - `ewpm migrate`: every module's migrations, applied to `DATABASE_URL`.
//! - `ewpm token`: mint a development token.
//! - `ewpm bench`: the load generators (crate `ewpm-bench`).

use std::{future::Future, net::SocketAddr, time::Duration};

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use ewpm::MODULES;
use ewpm_kit::{
    CancellationToken,
    auth::{Role, TokenKeys},
    db,
    host::{self, Host},
    server,
    settings::Settings,
    shutdown, telemetry,
};

/// mimalloc instead of glibc's allocator: under load the request path is allocation-heavy
/// (HTTP/2 frames, protobuf messages) and glibc's arena locks showed up as futex waits in
/// the profile of `ewpm bench progress`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Run one module of the mesh (or one of its parts, or the REST edge) against
    /// DATABASE_URL and REDIS_URL.
    Serve {
        /// Which module, part or `gateway`.
        service: String,
    },
    /// Apply every service's pending migrations to DATABASE_URL.
    Migrate,
    /// Load generators; figures are printed, never asserted.
    #[command(subcommand)]
    Bench(Box<ewpm_bench::Bench>),
    /// Mint a token that an `ewpm dev` started in the same directory (or a mesh with the same
    /// EWPM_AUTH__SECRET) accepts.
    Token {
        /// User id (`sub`).
        #[arg(long)]
        sub: String,
        /// `admin`, `employer_admin`, `employee` or `ingest` (a device or match feed: sends
        /// fan-engagement events, reads nothing).
        #[arg(long)]
        role: Role,
        /// Employer id.
        #[arg(long)]
        employer: Option<String>,
    },
}

/// The command line, with `ewpm serve`'s choices and their help from the registry.
fn command() -> clap::Command {
    let targets: Vec<clap::builder::PossibleValue> = ewpm::serve_targets()
        .into_iter()
        // Leaked once per process: clap keeps choices as `&'static str`.
        .map(|(name, about)| clap::builder::PossibleValue::new(&*name.leak()).help(about))
        .collect();
    Cli::command().mut_subcommand("serve", |serve| {
        serve.mut_arg("service", |arg| {
            arg.value_parser(clap::builder::PossibleValuesParser::new(targets))
        })
    })
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::from_arg_matches(&command().get_matches()).unwrap_or_else(|e| e.exit());
    let settings = Settings::load(&ewpm::sections())?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = runtime.block_on(async move {
        match cli.command.unwrap_or(Command::Dev) {
            Command::Dev => dev(settings).await,
            Command::Serve { service } if service == "gateway" => serve_gateway(settings).await,
            Command::Serve { service } => serve(settings, &service).await,
            Command::Migrate => migrate(settings).await,
            Command::Bench(b) => ewpm_bench::run(*b, MODULES).await,
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

/// Embedded mode: every module in this process over SQLite (the services' tables and, in
/// files of their own, the durable bus topics) and in-process stores, on one gRPC port, the
/// REST edge beside it.
async fn dev(mut settings: Settings) -> anyhow::Result<()> {
    telemetry::init_tracing(&settings.log);
    telemetry::metrics_handle();
    let shutdown = shutdown::on_signal();
    let keys = TokenKeys::for_embedded(&settings.auth, &settings.data_dir)?;
    let grpc_listener = server::bind(settings.grpc.addr).await?;
    let http_listener = server::bind(settings.http.addr).await?;
    let grpc_addr = grpc_listener.local_addr()?;
    let http_addr = http_listener.local_addr()?;
    // Every module is here: every service address is this process's own.
    let own = format!("http://{}", loopback(grpc_addr));
    settings.services = MODULES.iter().map(|m| (m.name().to_string(), own.clone())).collect();
    let database = db::redact(&settings.database_url_or_embedded());
    let mut host =
        Host::embedded(settings.clone(), keys.clone(), MODULES, shutdown.clone()).await?;
    for module in MODULES {
        host.start(*module, None).await?;
    }
    // The edge calls the services in this process: the same layers and token checks as over
    // the network, without an HTTP/2 hop of its own.
    let state = ewpm_gateway::AppState::in_process(host.local(), keys.clone(), &settings.limits)
        .with_cors(&settings.http.cors_origins);
    print_banner(&keys, loopback(grpc_addr), loopback(http_addr), &database);
    let grace = Duration::from_secs(settings.grpc.shutdown_grace_secs);
    let edge =
        bounded(ewpm_gateway::serve(http_listener, state, shutdown.clone()), &shutdown, grace);
    host.serve(grpc_listener, edge).await?;
    tracing::info!("stopped");
    Ok(())
}

/// `ewpm serve <name>`: one module (or one of its parts) of the mesh, with its metrics
/// endpoint, until SIGTERM; then drain.
async fn serve(settings: Settings, name: &str) -> anyhow::Result<()> {
    let (module, part) =
        ewpm::find(name).ok_or_else(|| anyhow::anyhow!("no module or part is named {name}"))?;
    telemetry::init_tracing(&settings.log);
    telemetry::metrics_handle();
    let shutdown = shutdown::on_signal();
    let keys = TokenKeys::required(&settings.auth)?;
    let grpc_addr = settings.grpc.addr;
    let metrics_addr = settings.metrics.addr;
    let mut host = Host::mesh(settings, keys, shutdown.clone()).await?;
    let grpc_listener = server::bind(grpc_addr).await?;
    let metrics_listener = server::bind(metrics_addr).await?;
    host.start(module, part).await?;
    tracing::info!(
        service = name,
        grpc = %grpc_listener.local_addr()?,
        metrics = %metrics_listener.local_addr()?,
        "listening"
    );
    host.serve(grpc_listener, server::serve_metrics(metrics_listener, shutdown)).await
}

/// The REST edge of the mesh.
async fn serve_gateway(settings: Settings) -> anyhow::Result<()> {
    telemetry::init_tracing(&settings.log);
    telemetry::metrics_handle();
    let shutdown = shutdown::on_signal();
    let keys = TokenKeys::required(&settings.auth)?;
    let state = ewpm_gateway::AppState::connect(&settings.services, keys, &settings.limits)?
        .with_cors(&settings.http.cors_origins);
    let listener = server::bind(settings.http.addr).await?;
    tracing::info!(http = %listener.local_addr()?, services = ?settings.services, "REST edge listening");
    let grace = Duration::from_secs(settings.grpc.shutdown_grace_secs);
    bounded(ewpm_gateway::serve(listener, state, shutdown.clone()), &shutdown, grace).await
}

async fn migrate(settings: Settings) -> anyhow::Result<()> {
    telemetry::init_tracing(&settings.log);
    let url = settings.require_database_url()?;
    let db = db::connect(&url).await?;
    host::migrate(&db, MODULES).await?;
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
    let services: Vec<&str> = ewpm::MODULES.iter().map(|m| m.name()).collect();
    let services = services.join(", ");
    println!(
        "\
EWPM dev is running (embedded mode: {database})
  gRPC      {grpc}   ({services}, health, reflection)
  REST      http://{http}   (docs: http://{http}/docs)

Web app (the link signs you in; the token stays in the URL fragment, which browsers never send):
  employee  http://{http}/#token={employee}
  admin     http://{http}/#token={admin}

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
