//! Finds or starts the throwaway PostgreSQL and Redis of a test run.

use std::{
    fs::File,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

/// The servers of this test run.
#[derive(Debug, Clone)]
pub struct Servers {
    /// Admin URL of the test PostgreSQL (its `postgres` database, superuser).
    pub postgres_url: String,
    /// URL of the test Redis.
    pub redis_url: String,
}

/// The servers of this test run, started on first use. Panics with the install command when
/// a server binary is missing: a test that needs a server never skips.
pub fn servers() -> &'static Servers {
    static SERVERS: OnceLock<Servers> = OnceLock::new();
    SERVERS.get_or_init(|| match start() {
        Ok(s) => s,
        Err(err) => panic!("cannot provide the test servers: {err:#}"),
    })
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn start() -> anyhow::Result<Servers> {
    let postgres_env = env("EWPM_TEST_DATABASE_URL");
    let redis_env = env("EWPM_TEST_REDIS_URL");
    if let (Some(postgres_url), Some(redis_url)) = (postgres_env.clone(), redis_env.clone()) {
        return Ok(Servers { postgres_url, redis_url });
    }
    let state = state_dir();
    std::fs::create_dir_all(&state).with_context(|| format!("create {}", state.display()))?;
    // One process starts the servers; the others of the run wait here, then reuse them.
    let lock = File::create(state.join("lock")).context("create lock file")?;
    lock.lock().context("lock the testkit state")?;
    let postgres_url = match postgres_env {
        Some(url) => url,
        None => ensure_postgres(&state)?,
    };
    let redis_url = match redis_env {
        Some(url) => url,
        None => ensure_redis(&state)?,
    };
    Ok(Servers { postgres_url, redis_url })
}

/// `EWPM_TESTKIT_DIR`, else `target/ewpm-testkit` of this workspace.
pub fn state_dir() -> PathBuf {
    env("EWPM_TESTKIT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/ewpm-testkit"))
}

/// Reads `KEY=value` lines.
fn read_record(path: &Path) -> Option<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(
        text.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn field<'a>(record: &'a [(String, String)], key: &str) -> Option<&'a str> {
    record.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// The URL of a server recorded earlier in this run, if it still answers.
fn recorded(
    path: &Path,
    url_key: &str,
    port_key: &str,
    alive: impl Fn(u16) -> bool,
) -> Option<String> {
    let record = read_record(path)?;
    let port = field(&record, port_key)?.parse::<u16>().ok()?;
    let url = field(&record, url_key)?;
    alive(port).then(|| url.to_string())
}

fn write_record(path: &Path, fields: &[(&str, String)]) -> anyhow::Result<()> {
    let mut f = File::create(path).with_context(|| format!("write {}", path.display()))?;
    for (k, v) in fields {
        writeln!(f, "{k}={v}")?;
    }
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0)).context("find a free port")?.local_addr()?.port())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs `program` (as the `postgres` user when we are root: initdb refuses root).
fn run_pg(bin: &Path, program: &str, args: &[&str], as_postgres: bool) -> anyhow::Result<()> {
    let exe = bin.join(program);
    let mut cmd = if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&exe);
        c
    } else {
        Command::new(&exe)
    };
    let out = cmd.args(args).output().with_context(|| format!("run {}", exe.display()))?;
    if !out.status.success() {
        bail!(
            "{program} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The directory with `initdb` and `pg_ctl`: Debian's newest `/usr/lib/postgresql/*/bin`,
/// else `PATH`.
fn postgres_bin() -> anyhow::Result<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
                return Ok(dir);
            }
        }
    }
    bail!(
        "PostgreSQL server binaries (initdb, pg_ctl) not found; install them with `apt-get install -y postgresql`"
    )
}

/// A new PostgreSQL cluster in a fresh temporary directory (`ewpm-testkit-<name>-…`), owned by
/// the `postgres` user when running as root (initdb refuses root); its directory and whether
/// its tools must run as `postgres`.
fn init_cluster(bin: &Path, name: &str) -> anyhow::Result<(PathBuf, bool)> {
    let data =
        std::env::temp_dir().join(format!("ewpm-testkit-{name}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&data).with_context(|| format!("create {}", data.display()))?;
    let as_postgres = is_root();
    if as_postgres {
        let status = Command::new("chown").arg("postgres:").arg(&data).status().context("chown")?;
        if !status.success() {
            bail!("chown postgres {} failed (is there a `postgres` user?)", data.display());
        }
    }
    let data_s = data.to_string_lossy().to_string();
    run_pg(
        bin,
        "initdb",
        &["-D", &data_s, "--auth=trust", "--no-sync", "-U", "postgres", "-E", "UTF8"],
        as_postgres,
    )?;
    Ok((data, as_postgres))
}

fn ensure_postgres(state: &Path) -> anyhow::Result<String> {
    let record_path = state.join("postgres.env");
    if let Some(url) = recorded(&record_path, "PG_URL", "PG_PORT", |port| {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    }) {
        return Ok(url);
    }
    let bin = postgres_bin()?;
    let port = free_port()?;
    let (data, as_postgres) = init_cluster(&bin, "pg")?;
    let data_s = data.to_string_lossy().to_string();
    let opts = format!(
        "-p {port} -k {data_s} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
         -c full_page_writes=off -c max_connections=500"
    );
    let log = data.join("server.log").to_string_lossy().to_string();
    run_pg(
        &bin,
        "pg_ctl",
        &["-D", &data_s, "-w", "-t", "60", "-l", &log, "-o", &opts, "start"],
        as_postgres,
    )?;
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    write_record(
        &record_path,
        &[
            ("PG_URL", url.clone()),
            ("PG_PORT", port.to_string()),
            ("PG_DATA", data_s),
            ("PG_BIN", bin.to_string_lossy().to_string()),
            ("PG_AS_POSTGRES", as_postgres.to_string()),
        ],
    )?;
    Ok(url)
}

/// Polls `ready` every 20 ms until it holds; after `within`, fails with `failed()`.
fn wait_until(
    within: Duration,
    ready: impl Fn() -> bool,
    failed: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while !ready() {
        if Instant::now() > deadline {
            bail!(failed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn redis_ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok();
    let mut buf = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut buf).is_ok()
        && &buf == b"+PONG\r\n"
}

fn ensure_redis(state: &Path) -> anyhow::Result<String> {
    let record_path = state.join("redis.env");
    if let Some(url) = recorded(&record_path, "REDIS_URL", "REDIS_PORT", redis_ping) {
        return Ok(url);
    }
    let port = free_port()?;
    let dir =
        std::env::temp_dir().join(format!("ewpm-testkit-redis-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    let dir_s = dir.to_string_lossy().to_string();
    let pid_file = dir.join("redis.pid").to_string_lossy().to_string();
    let out = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(["--dir", &dir_s, "--daemonize", "yes", "--pidfile", &pid_file])
        .args(["--logfile", &dir.join("redis.log").to_string_lossy()])
        .output()
        .map_err(|e| {
            anyhow::anyhow!(
                "redis-server not runnable ({e}); install it with `apt-get install -y redis-server`"
            )
        })?;
    if !out.status.success() {
        bail!("redis-server failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    wait_until(
        Duration::from_secs(10),
        || redis_ping(port),
        || format!("redis-server on port {port} did not answer PING within 10 s"),
    )?;
    let url = format!("redis://127.0.0.1:{port}");
    write_record(
        &record_path,
        &[
            ("REDIS_URL", url.clone()),
            ("REDIS_PORT", port.to_string()),
            ("REDIS_DIR", dir_s),
            ("REDIS_PID_FILE", pid_file),
        ],
    )?;
    Ok(url)
}

/// The URL of the run's shared Redis Cluster (three masters, no replicas), started on first
/// use like [`servers`] (`EWPM_TEST_REDIS_CLUSTER_URL` names an existing one instead):
/// `redis-cluster://127.0.0.1:<p1>?node=127.0.0.1:<p2>&node=127.0.0.1:<p3>`. Panics with the
/// install command when `redis-server` or `redis-cli` is missing.
pub fn redis_cluster_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Some(url) = env("EWPM_TEST_REDIS_CLUSTER_URL") {
            return url;
        }
        let start = || -> anyhow::Result<String> {
            let state = state_dir();
            std::fs::create_dir_all(&state)?;
            let lock = File::create(state.join("cluster.lock")).context("create lock file")?;
            lock.lock().context("lock the testkit state")?;
            ensure_redis_cluster(&state)
        };
        start().unwrap_or_else(|err| panic!("cannot provide the test Redis Cluster: {err:#}"))
    })
}

/// Arguments of one cluster node on `port` keeping its files in `dir`.
fn cluster_node_args(port: u16, dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().to_string();
    [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-node-timeout",
        "5000",
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--dir",
        &dir,
        "--logfile",
        "redis.log",
    ]
    .map(str::to_string)
    .to_vec()
}

/// Three ports whose cluster bus ports (+10,000) are free too.
fn cluster_ports() -> anyhow::Result<[u16; 3]> {
    let mut ports = Vec::new();
    while ports.len() < 3 {
        let port = crate::free_port();
        if !ports.contains(&port) && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            ports.push(port);
        }
    }
    Ok([ports[0], ports[1], ports[2]])
}

/// Joins the nodes on `ports` into one cluster (slots split evenly) and waits until it
/// serves.
fn create_cluster(ports: &[u16; 3]) -> anyhow::Result<String> {
    wait_until(
        Duration::from_secs(10),
        || ports.iter().all(|p| redis_ping(*p)),
        || format!("the cluster nodes on {ports:?} did not answer PING within 10 s"),
    )?;
    let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let out = Command::new("redis-cli")
        .arg("--cluster")
        .arg("create")
        .args(&nodes)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .map_err(|e| {
            anyhow::anyhow!(
                "redis-cli not runnable ({e}); install it with `apt-get install -y redis-tools`"
            )
        })?;
    if !out.status.success() {
        bail!("redis-cli --cluster create failed: {}", String::from_utf8_lossy(&out.stdout));
    }
    wait_until(
        Duration::from_secs(30),
        || ports.iter().all(|p| cluster_ok(*p)),
        || format!("the cluster on {ports:?} did not reach cluster_state:ok within 30 s"),
    )?;
    Ok(format!("redis-cluster://{}?node={}&node={}", nodes[0], nodes[1], nodes[2]))
}

/// Whether the node on `port` says the cluster serves every slot.
fn cluster_ok(port: u16) -> bool {
    Command::new("redis-cli")
        .args(["-p", &port.to_string(), "cluster", "info"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"))
}

fn ensure_redis_cluster(state: &Path) -> anyhow::Result<String> {
    let record_path = state.join("redis-cluster.env");
    if let Some(url) = recorded(&record_path, "REDIS_CLUSTER_URL", "REDIS_CLUSTER_PORT", cluster_ok)
    {
        return Ok(url);
    }
    let ports = cluster_ports()?;
    let dir = std::env::temp_dir()
        .join(format!("ewpm-testkit-redis-cluster-{}", uuid::Uuid::new_v4().simple()));
    let mut pid_files = Vec::new();
    for port in ports {
        let node_dir = dir.join(port.to_string());
        std::fs::create_dir_all(&node_dir)?;
        let pid_file = node_dir.join("redis.pid").to_string_lossy().to_string();
        let out = Command::new("redis-server")
            .args(cluster_node_args(port, &node_dir))
            .args(["--daemonize", "yes", "--pidfile", &pid_file])
            .output()
            .map_err(|e| {
                anyhow::anyhow!(
                    "redis-server not runnable ({e}); install it with `apt-get install -y redis-server`"
                )
            })?;
        if !out.status.success() {
            bail!("redis-server failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        pid_files.push(pid_file);
    }
    let url = create_cluster(&ports)?;
    write_record(
        &record_path,
        &[
            ("REDIS_CLUSTER_URL", url.clone()),
            ("REDIS_CLUSTER_PORT", ports[0].to_string()),
            ("REDIS_CLUSTER_DIR", dir.to_string_lossy().to_string()),
            ("REDIS_CLUSTER_PID_FILES", pid_files.join(" ")),
        ],
    )?;
    Ok(url)
}

/// A Redis Cluster of one test's own (three masters, no replicas), whose nodes the test may
/// stop and start again on the same ports: for fault tests. Append-only with `appendfsync
/// always`, so what a node acknowledged survives its restart. Stopped when dropped.
pub struct OwnRedisCluster {
    /// `redis-cluster://…` naming every node.
    pub url: String,
    /// The nodes' ports.
    pub ports: [u16; 3],
    dir: tempfile::TempDir,
    children: [Option<std::process::Child>; 3],
}

impl OwnRedisCluster {
    /// Starts three nodes on free ports and joins them.
    pub fn start() -> anyhow::Result<Self> {
        let ports = cluster_ports()?;
        let dir = tempfile::tempdir().context("Redis Cluster directory")?;
        let mut cluster = Self { url: String::new(), ports, dir, children: [None, None, None] };
        for node in 0..3 {
            cluster.up(node)?;
        }
        cluster.url = create_cluster(&ports)?;
        Ok(cluster)
    }

    /// Starts node `node` (0–2) again, with its data and its place in the cluster, and waits
    /// until the cluster serves every slot again.
    pub fn up(&mut self, node: usize) -> anyhow::Result<()> {
        let port = self.ports[node];
        let node_dir = self.dir.path().join(port.to_string());
        std::fs::create_dir_all(&node_dir)?;
        let child =
            Command::new("redis-server").args(cluster_node_args(port, &node_dir)).spawn().context(
                "redis-server not runnable; install it with `apt-get install -y redis-server`",
            )?;
        self.children[node] = Some(child);
        wait_until(
            Duration::from_secs(10),
            || redis_ping(port),
            || format!("cluster node on port {port} did not answer PING within 10 s"),
        )?;
        if !self.url.is_empty() {
            wait_until(
                Duration::from_secs(30),
                || self.ports.iter().all(|p| cluster_ok(*p)),
                || {
                    format!(
                        "the cluster did not serve every slot within 30 s of node {node} returning"
                    )
                },
            )?;
        }
        Ok(())
    }

    /// A graceful `SHUTDOWN` of node `node` (it flushes its append-only file and exits); its
    /// slots are unserved until [`OwnRedisCluster::up`].
    pub fn shutdown(&mut self, node: usize) {
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.ports[node])) {
            stream.write_all(b"SHUTDOWN\r\n").ok();
        }
        if let Some(mut child) = self.children[node].take() {
            child.wait().ok();
        }
    }
}

impl Drop for OwnRedisCluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            child.kill().ok();
            child.wait().ok();
        }
    }
}

/// A Redis of one test's own (not the shared one), which the test may stop, kill and start
/// again on the same port: for fault tests. Append-only with `appendfsync always`, so what
/// Redis acknowledged survives even a SIGKILL. Stopped when dropped.
pub struct OwnRedis {
    /// `redis://127.0.0.1:<port>`.
    pub url: String,
    /// Its port.
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl OwnRedis {
    /// Starts one on a free port.
    pub fn start() -> anyhow::Result<Self> {
        let port = crate::free_port();
        let dir = tempfile::tempdir().context("Redis directory")?;
        let mut redis = Self { url: format!("redis://127.0.0.1:{port}"), port, dir, child: None };
        redis.up()?;
        Ok(redis)
    }

    /// Starts it again (after [`OwnRedis::shutdown`] or [`OwnRedis::kill`]), with its data.
    pub fn up(&mut self) -> anyhow::Result<()> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.dir.path().join("redis.log"))
            .spawn()
            .context(
                "redis-server not runnable; install it with `apt-get install -y redis-server`",
            )?;
        self.child = Some(child);
        wait_until(
            Duration::from_secs(10),
            || redis_ping(self.port),
            || format!("redis-server on port {} did not answer PING within 10 s", self.port),
        )?;
        Ok(())
    }

    /// A graceful `SHUTDOWN` (Redis flushes its append-only file and exits).
    pub fn shutdown(&mut self) {
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) {
            stream.write_all(b"SHUTDOWN\r\n").ok();
        }
        if let Some(mut child) = self.child.take() {
            child.wait().ok();
        }
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A PostgreSQL cluster of one test's own, which the test may stop and start again on the
/// same port: for fault tests. Stopped and removed when dropped.
pub struct OwnPostgres {
    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub url: String,
    /// Its port.
    pub port: u16,
    bin: PathBuf,
    data: PathBuf,
    as_postgres: bool,
}

impl OwnPostgres {
    /// Creates and starts one on a free port.
    pub fn start() -> anyhow::Result<Self> {
        let bin = postgres_bin()?;
        let port = crate::free_port();
        let (data, as_postgres) = init_cluster(&bin, "ownpg")?;
        let pg = Self {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            port,
            bin,
            data,
            as_postgres,
        };
        pg.up()?;
        Ok(pg)
    }

    /// Starts it (again).
    pub fn up(&self) -> anyhow::Result<()> {
        let data_s = self.data.to_string_lossy().to_string();
        let opts = format!(
            "-p {} -k {data_s} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port
        );
        let log = self.data.join("server.log").to_string_lossy().to_string();
        run_pg(
            &self.bin,
            "pg_ctl",
            &["-D", &data_s, "-w", "-t", "60", "-l", &log, "-o", &opts, "start"],
            self.as_postgres,
        )
    }

    /// Stops it (`-m fast`: open connections are closed, committed data kept).
    pub fn down(&self) -> anyhow::Result<()> {
        let data_s = self.data.to_string_lossy().to_string();
        run_pg(&self.bin, "pg_ctl", &["-D", &data_s, "-w", "-m", "fast", "stop"], self.as_postgres)
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let data_s = self.data.to_string_lossy().to_string();
        run_pg(&self.bin, "pg_ctl", &["-D", &data_s, "-m", "immediate", "stop"], self.as_postgres)
            .ok();
        std::fs::remove_dir_all(&self.data).ok();
    }
}
