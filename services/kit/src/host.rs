//! A process hosting modules: its stores, its gRPC mount, its background tasks, its drain.
//!
//! [`Host::embedded`] is `ewpm dev`'s process (every module over SQLite and in-process
//! stores); [`Host::mesh`] is `ewpm serve`'s (PostgreSQL when DATABASE_URL is set, Redis
//! when a module asks for the bus or Redis). Modules are started with [`Host::start`], then
//! [`Host::serve`] serves until shutdown and drains: servers first, background tasks after,
//! so what the last calls queued is still handled.

use std::{future::Future, path::Path, sync::Arc, time::Duration};

use anyhow::Context as _;
use sea_orm::DatabaseConnection;
use tokio::net::TcpListener;

use crate::{
    CancellationToken,
    auth::{Authenticator, TokenKeys},
    bus::{Bus, MemoryBus, Partitioned, RedisBus, Routed, SqliteBus},
    clock::{SharedClock, SystemClock},
    db,
    health::Dependency,
    module::{Context, Mode, Module},
    server::{self, Mount},
    settings::Settings,
};

/// Why a module that needs the database cannot start.
const NO_DATABASE: &str =
    "DATABASE_URL is required here (e.g. DATABASE_URL=postgres://user:pass@host/ewpm)";

/// One process's modules and what they share.
pub struct Host {
    pub(crate) settings: Settings,
    pub(crate) keys: TokenKeys,
    pub(crate) mode: Mode,
    pub(crate) mount: Mount,
    pub(crate) clock: SharedClock,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tasks: CancellationToken,
    pub(crate) background: Vec<tokio::task::JoinHandle<()>>,
    pub(crate) process: String,
    db: Option<(DatabaseConnection, String)>,
    bus: Option<Arc<dyn Bus>>,
    redis_checked: bool,
}

impl Host {
    /// The embedded process: the database at `settings.database_url` or the SQLite file under
    /// `data_dir`, migrated by every module in `modules`; the in-process bus with each
    /// module's durable topics in SQLite files of their own. Servers stop taking calls when
    /// `shutdown` is cancelled.
    pub async fn embedded(
        settings: Settings,
        keys: TokenKeys,
        modules: &[&'static dyn Module],
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let url = settings.database_url_or_embedded();
        let db = db::connect(&url).await?;
        migrate(&db, modules).await?;
        let bus = embedded_bus(&settings.data_dir, modules).await?;
        let mut host = Self::new(settings, keys, Mode::Embedded, shutdown);
        host.mount.depend_on(Dependency::Database(db.clone()));
        host.db = Some((db, url));
        host.bus = Some(bus);
        Ok(host)
    }

    /// A mesh process: PostgreSQL (or any database) when `settings.database_url` is set,
    /// Redis when a module asks for it.
    pub async fn mesh(
        settings: Settings,
        keys: TokenKeys,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let db = match &settings.database_url {
            Some(url) => Some((db::connect(url).await?, url.clone())),
            None => None,
        };
        let mut host = Self::new(settings, keys, Mode::Mesh, shutdown);
        if let Some((db, _)) = &db {
            host.mount.depend_on(Dependency::Database(db.clone()));
        }
        host.db = db;
        Ok(host)
    }

    fn new(settings: Settings, keys: TokenKeys, mode: Mode, shutdown: CancellationToken) -> Self {
        let mount = Mount::configured(
            Authenticator::with_limits(keys.clone(), &settings.limits),
            &settings,
        );
        Self {
            settings,
            keys,
            mode,
            mount,
            clock: Arc::new(SystemClock),
            shutdown,
            tasks: CancellationToken::new(),
            background: Vec::new(),
            process: process_name(),
            db: None,
            bus: None,
            redis_checked: false,
        }
    }

    /// Uses `clock` instead of the system clock for the modules started after this.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Starts `module` (the whole of it, or `part` alone).
    pub async fn start(
        &mut self,
        module: &'static dyn Module,
        part: Option<&'static str>,
    ) -> anyhow::Result<()> {
        let name = module.name();
        let mut ctx = Context { host: self, module: name, part };
        module.start(&mut ctx).await.with_context(|| match part {
            Some(part) => format!("start {name}-{part}"),
            None => format!("start {name}"),
        })
    }

    /// The gRPC services mounted so far, callable in this process (see [`Mount::local`]).
    pub fn local(&self) -> crate::client::Upstream {
        self.mount.local()
    }

    /// The gRPC services mounted so far.
    pub fn mount(&mut self) -> &mut Mount {
        &mut self.mount
    }

    /// The process's settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The database, if the process has one.
    pub fn database(&self) -> Option<&DatabaseConnection> {
        self.db.as_ref().map(|(db, _)| db)
    }

    /// Serves the mounted services on `listener`, and `beside` (e.g. the metrics endpoint or
    /// the REST edge), until shutdown; then stops the background tasks and waits for them up
    /// to the grace period.
    pub async fn serve(
        self,
        listener: TcpListener,
        beside: impl Future<Output = anyhow::Result<()>>,
    ) -> anyhow::Result<()> {
        let Host { settings, mount, shutdown, tasks, background, .. } = self;
        let served =
            tokio::try_join!(server::serve(listener, mount, &settings.grpc, shutdown), beside);
        tasks.cancel();
        let grace = Duration::from_secs(settings.grpc.shutdown_grace_secs);
        if tokio::time::timeout(grace, futures::future::join_all(background)).await.is_err() {
            tracing::warn!("background tasks outlived the grace period");
        }
        served.map(drop)
    }

    pub(crate) fn db(&self) -> anyhow::Result<DatabaseConnection> {
        self.db.as_ref().map(|(db, _)| db.clone()).context(NO_DATABASE)
    }

    pub(crate) fn database_url(&self) -> anyhow::Result<String> {
        self.db.as_ref().map(|(_, url)| url.clone()).context(NO_DATABASE)
    }

    /// The bus the modules share (in the mesh: connected to Redis on first use).
    pub async fn bus(&mut self) -> anyhow::Result<Arc<dyn Bus>> {
        if let Some(bus) = &self.bus {
            return Ok(bus.clone());
        }
        let (url, prefix) = self.redis().await?;
        let redis = RedisBus::connect(&url, &prefix).await?.with_max_len(self.settings.bus_max_len);
        redis.claim_partitions(self.settings.bus_partitions).await?;
        let mut bus: Arc<dyn Bus> = Arc::new(redis);
        if self.settings.bus_partitions > 1 {
            bus = Arc::new(Partitioned::new(bus, usize::from(self.settings.bus_partitions)));
        }
        self.bus = Some(bus.clone());
        Ok(bus)
    }

    pub(crate) async fn redis(&mut self) -> anyhow::Result<(String, String)> {
        if self.mode == Mode::Embedded {
            anyhow::bail!("the embedded mode has no Redis: use the in-process stores");
        }
        let url = self.settings.require_redis_url()?;
        if !self.redis_checked {
            self.mount.depend_on(Dependency::Redis(crate::redis::connect(&url).await?));
            self.redis_checked = true;
        }
        Ok((url, self.settings.redis_prefix.clone()))
    }
}

/// Applies every module's pending migrations to `db`, in registry order.
pub async fn migrate(
    db: &DatabaseConnection,
    modules: &[&'static dyn Module],
) -> anyhow::Result<()> {
    for module in modules {
        module.migrate(db).await.with_context(|| format!("migrate {}", module.name()))?;
    }
    Ok(())
}

/// The embedded mode's bus: every module's durable topics (what a client was answered for
/// and must survive a crash) in SQLite files of their own (`<topic>-bus.db`: one queue does
/// not wait behind another's writes), the rest (e.g. score deltas, which feed a store rebuilt
/// from SQL after a restart anyway) in memory.
pub async fn embedded_bus(
    data_dir: &Path,
    modules: &[&'static dyn Module],
) -> anyhow::Result<Arc<dyn Bus>> {
    let mut bus = Routed::new(MemoryBus::new());
    let topics: std::collections::BTreeSet<&str> =
        modules.iter().flat_map(|m| m.durable_topics()).copied().collect();
    for topic in topics {
        bus = bus.route(topic, SqliteBus::open(&data_dir.join(format!("{topic}-bus.db"))).await?);
    }
    Ok(Arc::new(bus))
}

/// A consumer name unique to this process: host, pid and a random suffix.
fn process_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "ewpm".into());
    format!("{host}-{}-{}", std::process::id(), &uuid::Uuid::new_v4().simple().to_string()[..8])
}
