//! The module contract: what a service crate exports so that one binary can run it.
//!
//! Each service crate exports one value implementing [`Module`]: its name, its settings
//! section, its migrator, and how it mounts its gRPC services and starts its background tasks
//! from a [`Context`]. The binary names its modules in one list (the registry) and hands them
//! to a [`Host`](crate::host::Host): `ewpm dev` starts every module in one process on
//! embedded stores, `ewpm serve <name>` one module (or one of its parts) on PostgreSQL and
//! Redis, `ewpm migrate` runs every module's migrator. The kit knows no module by name.

use std::{future::Future, sync::Arc};

pub use async_trait::async_trait;
use sea_orm::DatabaseConnection;
use serde::de::DeserializeOwned;

use crate::{
    CancellationToken,
    auth::{ServiceToken, TokenKeys},
    bus::Bus,
    clock::SharedClock,
    host::Host,
    server::Mount,
    settings::{Section, Settings},
};

/// One service of the mesh, as its crate exports it.
#[async_trait]
pub trait Module: Send + Sync + 'static {
    /// The module's name: `ewpm serve <name>`, its settings section (`[name]`,
    /// `EWPM_<NAME>__…`) and its key in `services` (`EWPM_SERVICES__<NAME>`).
    fn name(&self) -> &'static str;

    /// One line for `ewpm serve --help`.
    fn about(&self) -> &'static str;

    /// Its settings section (`Section::of::<MySettings>(name)`), or none.
    fn section(&self) -> Section {
        Section::named(self.name())
    }

    /// Parts that also run alone, as `ewpm serve <name>-<part>` (e.g. a batch writer without
    /// the gRPC service), each with one line for `--help`.
    fn parts(&self) -> &'static [Part] {
        &[]
    }

    /// Bus topics this module consumes that must survive a crash in the embedded mode (each
    /// gets a SQLite file of its own, `<data_dir>/<topic>-bus.db`); other topics are in
    /// memory there. In the mesh every topic is a Redis stream.
    fn durable_topics(&self) -> &'static [&'static str] {
        &[]
    }

    /// Applies the module's pending migrations (its own tables, its own history table).
    async fn migrate(&self, _db: &DatabaseConnection) -> anyhow::Result<()> {
        Ok(())
    }

    /// Mounts its services and starts its background tasks on `ctx` ([`Context::part`] says
    /// whether the whole module runs or one of its parts alone).
    async fn start(&self, ctx: &mut Context<'_>) -> anyhow::Result<()>;
}

/// A part of a module that runs alone (`ewpm serve <module>-<part>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    /// `writer` in `progress-writer`.
    pub name: &'static str,
    /// One line for `--help`.
    pub about: &'static str,
}

/// Where a process keeps what its modules share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One process runs every module: SQLite, the in-process bus (durable topics in SQLite
    /// files) and in-process score stores and notices.
    Embedded,
    /// One process per module (or part): PostgreSQL and Redis.
    Mesh,
}

/// What a module's [`Module::start`] gets: the process's stores, settings, mount and task
/// set, scoped to the module.
pub struct Context<'a> {
    pub(crate) host: &'a mut Host,
    pub(crate) module: &'static str,
    pub(crate) part: Option<&'static str>,
}

impl Context<'_> {
    /// `None` when the whole module runs (its service, and its background parts as its
    /// settings enable them); `Some(part)` when only that part runs (always enabled).
    pub fn part(&self) -> Option<&'static str> {
        self.part
    }

    /// Whether the whole module runs (not one part alone).
    pub fn whole(&self) -> bool {
        self.part.is_none()
    }

    /// Embedded or mesh.
    pub fn mode(&self) -> Mode {
        self.host.mode
    }

    /// The process's settings.
    pub fn settings(&self) -> &Settings {
        &self.host.settings
    }

    /// This module's settings section as a `T`.
    pub fn section<T: DeserializeOwned + Default>(&self) -> anyhow::Result<T> {
        self.host.settings.section(self.module)
    }

    /// The gRPC services this process serves.
    pub fn mount(&mut self) -> &mut Mount {
        &mut self.host.mount
    }

    /// The process's token keys.
    pub fn keys(&self) -> &TokenKeys {
        &self.host.keys
    }

    /// A token for calls this module makes to other services (`sub` = `service:<name>`).
    pub fn service_token(&self) -> Arc<ServiceToken> {
        Arc::new(ServiceToken::new(self.host.keys.clone(), self.module))
    }

    /// The clock.
    pub fn clock(&self) -> SharedClock {
        self.host.clock.clone()
    }

    /// The database (required: an error naming DATABASE_URL when the process has none).
    pub fn db(&self) -> anyhow::Result<DatabaseConnection> {
        self.host.db()
    }

    /// The database's URL (e.g. for a lease on its own connection).
    pub fn database_url(&self) -> anyhow::Result<String> {
        self.host.database_url()
    }

    /// The bus: in the mesh a Redis connection shared by the process (readiness then depends
    /// on Redis); embedded, the process's in-process bus.
    pub async fn bus(&mut self) -> anyhow::Result<Arc<dyn Bus>> {
        self.host.bus().await
    }

    /// The Redis URL (mesh mode only; readiness then depends on Redis) and the key prefix.
    pub async fn redis(&mut self) -> anyhow::Result<(String, String)> {
        self.host.redis().await
    }

    /// The address of the service module `name` (`EWPM_SERVICES__<NAME>`).
    pub fn service_uri(&self, name: &str) -> anyhow::Result<String> {
        self.host.settings.service_uri(name).map(str::to_string)
    }

    /// Cancelled when the servers stop taking calls (SIGTERM): live streams end with it.
    pub fn streams(&self) -> CancellationToken {
        self.host.shutdown.clone()
    }

    /// Cancelled once the servers have drained: background tasks end with it.
    pub fn tasks(&self) -> CancellationToken {
        self.host.tasks.clone()
    }

    /// A name unique to this process (host, pid, a random suffix) for consumers of the bus:
    /// a restarted process must not inherit its previous life's pending entries by name.
    pub fn process_name(&self) -> &str {
        &self.host.process
    }

    /// Runs `task` in the background until it ends; shutdown waits for it (up to the grace
    /// period) after the servers drained. Make it end when [`Context::tasks`] is cancelled.
    pub fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.host.background.push(tokio::spawn(task));
    }
}
