//! Test support for EWPM: real PostgreSQL and Redis, fresh migrated databases, services on
//! port 0.
//!
//! PostgreSQL and Redis are started once per test run from the machine's own binaries on free
//! ports, shared by every test process of the run through a state directory and a file lock
//! (`target/ewpm-testkit`, or `EWPM_TESTKIT_DIR`), and stopped by `scripts/test` at the end.
//! `EWPM_TEST_DATABASE_URL` (an admin URL) and `EWPM_TEST_REDIS_URL` point the tests at
//! existing servers instead. A missing server binary fails the test with the command that
//! installs it: nothing is ever skipped.
//!
//! # Layout
//! - [`servers`]: find or start the throwaway servers.
//! - [`TestDb`]: a fresh database per test (PostgreSQL or SQLite), migrated with the real
//!   migrations.
//! - [`spawn_grpc`]: mount services on a port-0 gRPC server, with test tokens.
//! - [`browser`]: a headless Chromium driven over the DevTools Protocol, for UI tests.

pub mod browser;
mod servers;

use std::{collections::BTreeSet, net::SocketAddr, sync::Arc};

use anyhow::Context;
use ewpm_kit::{
    CancellationToken,
    auth::{Authenticator, Role, TokenKeys},
    module::Module,
    server::Mount,
    settings::{GrpcSettings, Settings},
};
use sea_orm::{ConnectionTrait, DatabaseConnection};

pub use servers::{OwnPostgres, OwnRedis, OwnRedisCluster, Servers, redis_cluster_url, servers};

/// The HS256 secret of test tokens.
pub const TEST_SECRET: &str = "ewpm-test-secret";

/// Token keys with [`TEST_SECRET`] and the default issuer and audience.
pub fn keys() -> TokenKeys {
    TokenKeys::new(TEST_SECRET, &Settings::default().auth)
}

/// `authorization` header value for a user with `role` (and `employer`).
pub fn bearer(sub: &str, role: Role, employer: Option<&str>) -> String {
    format!("Bearer {}", keys().mint(sub, role, employer))
}

/// A gRPC request carrying `authorization` (a full `Bearer …` value).
pub fn request<T>(message: T, authorization: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut().insert("authorization", authorization.parse().expect("header value"));
    r
}

/// The `ErrorInfo` reason of a status (empty when it has none).
pub fn reason(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    status.get_error_details().error_info().map(|i| i.reason.clone()).unwrap_or_default()
}

/// The fields a status's `BadRequest` names, in order.
pub fn violations(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

/// An HTTP client for tests (HTTPS-capable, with the process's TLS provider installed).
pub fn http_client() -> reqwest::Client {
    ewpm_kit::install_tls_provider();
    reqwest::Client::new()
}

/// `GET url` with `authorization` (a full `Bearer …` value), answered 200 with JSON.
pub async fn get_json(url: &str, authorization: &str) -> serde_json::Value {
    let r = http_client()
        .get(url)
        .header("authorization", authorization)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(r.status(), 200, "GET {url}");
    r.json().await.unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
}

/// A signed `authorization` value whose token expired an hour ago.
pub fn expired_bearer(sub: &str, role: Role) -> String {
    let now = chrono::Utc::now().timestamp();
    let token = keys().encode(&ewpm_kit::auth::Claims {
        sub: sub.to_string(),
        employer_id: None,
        role,
        iss: "ewpm".into(),
        aud: "ewpm".into(),
        iat: now - 7200,
        exp: now - 3600,
    });
    format!("Bearer {token}")
}

/// A child process that is killed and reaped when dropped, however the test ends.
pub struct Proc(pub std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

/// A port free right now on 127.0.0.1 (for processes a test starts, which cannot be handed
/// a listener).
///
/// Picked below the kernel's ephemeral range (32768 and up on Linux): a port from that range
/// that is free now can be taken as the source port of any outgoing connection (a database
/// pool opening, a Redis client) before the process it was meant for binds it, which failed
/// whole meshes with "address already in use".
///
/// A port is handed out once per test process: a port handed out stays unbound until its
/// process starts, so another draw could return it, and two tests running at once did (one
/// mesh's incentive service then found its port taken, and the other mesh's service answered
/// in its place).
pub fn free_port() -> u16 {
    const LOW: u128 = 20_000;
    const SPAN: u128 = 12_000;
    static GIVEN: std::sync::Mutex<BTreeSet<u16>> = std::sync::Mutex::new(BTreeSet::new());
    let mut given = GIVEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    for _ in 0..1000 {
        let port = (LOW + uuid::Uuid::new_v4().as_u128() % SPAN) as u16;
        if !given.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
    panic!("no free port between 20000 and 32000 on 127.0.0.1");
}

/// A fresh, migrated database for one test.
pub struct TestDb {
    /// The connection pool.
    pub db: DatabaseConnection,
    /// Its URL, for processes the test starts.
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// A new database on the test PostgreSQL server, created and migrated by `modules`.
    pub async fn postgres(modules: &[&'static dyn Module]) -> anyhow::Result<Self> {
        let test = Self::postgres_unmigrated().await?;
        ewpm_kit::host::migrate(&test.db, modules).await?;
        Ok(test)
    }

    /// A new, empty database on the test PostgreSQL server (for testing `ewpm migrate`).
    pub async fn postgres_unmigrated() -> anyhow::Result<Self> {
        Self::postgres_unmigrated_on(&servers().postgres_url).await
    }

    /// A new, empty database on the PostgreSQL server at `admin_url`.
    pub async fn postgres_unmigrated_on(admin_url: &str) -> anyhow::Result<Self> {
        let admin_url = admin_url.to_string();
        let name = format!("ewpm_test_{}", uuid::Uuid::new_v4().simple());
        let admin =
            ewpm_kit::db::connect(&admin_url).await.context("connect to test PostgreSQL")?;
        admin
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await
            .context("create test database")?;
        admin.close().await.ok();
        let url = ewpm_kit::db::with_database(&admin_url, &name);
        let db = ewpm_kit::db::connect(&url).await?;
        Ok(Self { db, url, _dir: None })
    }

    /// A new SQLite file in a temporary directory, migrated by `modules`.
    pub async fn sqlite(modules: &[&'static dyn Module]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("temp dir")?;
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("ewpm.db").display());
        let db = ewpm_kit::db::connect(&url).await?;
        ewpm_kit::host::migrate(&db, modules).await?;
        Ok(Self { db, url, _dir: Some(dir) })
    }
}

/// A key prefix unique to one test, for Redis keys.
pub fn key_prefix() -> String {
    format!("t{}:", uuid::Uuid::new_v4().simple())
}

/// A gRPC server the test started.
pub struct Spawned {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Cancel to stop it.
    pub shutdown: CancellationToken,
    /// Ends when the server has stopped.
    pub handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Spawned {
    /// `http://addr`, for tonic clients.
    pub fn uri(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Serves the services `add` mounts on 127.0.0.1:0 behind [`keys`]' authenticator.
pub async fn spawn_grpc(add: impl FnOnce(&mut Mount, &GrpcSettings)) -> anyhow::Result<Spawned> {
    let mut settings = Settings::default().grpc;
    settings.shutdown_grace_secs = 2;
    let mount = Mount::new(Authenticator::new(keys()));
    spawn_mount(mount, settings, add).await
}

/// As [`spawn_grpc`], with the health settings and limits (rate limit included) of
/// `settings`.
pub async fn spawn_grpc_with(
    settings: &Settings,
    add: impl FnOnce(&mut Mount, &GrpcSettings),
) -> anyhow::Result<Spawned> {
    let mount = Mount::configured(Authenticator::with_limits(keys(), &settings.limits), settings);
    spawn_mount(mount, settings.grpc.clone(), add).await
}

async fn spawn_mount(
    mut mount: Mount,
    settings: GrpcSettings,
    add: impl FnOnce(&mut Mount, &GrpcSettings),
) -> anyhow::Result<Spawned> {
    add(&mut mount, &settings);
    let listener = ewpm_kit::server::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let settings = Arc::new(settings);
    let handle =
        tokio::spawn(
            async move { ewpm_kit::server::serve(listener, mount, &settings, token).await },
        );
    Ok(Spawned { addr, shutdown, handle })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A module owning one table.
    struct Notes;

    #[ewpm_kit::module::async_trait]
    impl Module for Notes {
        fn name(&self) -> &'static str {
            "notes"
        }

        fn about(&self) -> &'static str {
            "notes"
        }

        async fn migrate(&self, db: &DatabaseConnection) -> anyhow::Result<()> {
            db.execute_unprepared("CREATE TABLE IF NOT EXISTS challenges (id TEXT PRIMARY KEY)")
                .await?;
            Ok(())
        }

        async fn start(&self, _: &mut ewpm_kit::module::Context<'_>) -> anyhow::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn the_test_postgres_gives_each_test_its_own_migrated_database() {
        let a = TestDb::postgres(&[&Notes]).await.unwrap();
        let b = TestDb::postgres(&[&Notes]).await.unwrap();
        assert_ne!(a.url, b.url);
        a.db.execute_unprepared("INSERT INTO challenges (id) VALUES ('x')").await.unwrap();
        let count = |db: DatabaseConnection| async move {
            db.query_one_raw(sea_orm::Statement::from_string(
                db.get_database_backend(),
                "SELECT COUNT(*) AS n FROM challenges",
            ))
            .await
            .unwrap()
            .unwrap()
            .try_get::<i64>("", "n")
            .unwrap()
        };
        assert_eq!((count(a.db.clone()).await, count(b.db.clone()).await), (1, 0));
    }

    #[tokio::test]
    async fn the_test_redis_answers_ping() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let url = &servers().redis_url;
        let hostport = url.trim_start_matches("redis://").trim_end_matches('/');
        let mut stream = tokio::net::TcpStream::connect(hostport).await.unwrap();
        stream.write_all(b"PING\r\n").await.unwrap();
        let mut buf = [0u8; 7];
        stream.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"+PONG\r\n");
    }
}
