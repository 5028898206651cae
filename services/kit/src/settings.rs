//! Layered, typed settings.
//!
//! Precedence, lowest first: built-in defaults (the embedded mode) → an optional TOML file
//! (`EWPM_CONFIG`, else `ewpm.toml` in the working directory when present) → environment
//! variables with the `EWPM_` prefix and `__` for nesting (`EWPM_GRPC__ADDR`,
//! `EWPM_AUTH__SECRET`) → the conventional `DATABASE_URL` and `REDIS_URL`.

use std::{net::SocketAddr, path::PathBuf};

use anyhow::{Context, bail};
use figment::{
    Figment,
    providers::{Format, Serialized, Toml},
};
use serde::{Deserialize, Serialize};

/// Every setting of an EWPM process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Directory for embedded-mode state: the SQLite file and the development signing key.
    pub data_dir: PathBuf,
    /// Database URL (`postgres://…` or `sqlite://…`). Unset means the embedded SQLite file
    /// `<data_dir>/ewpm.db`; `ewpm serve` and `ewpm migrate` require it.
    pub database_url: Option<String>,
    /// Redis URL for the mesh mode's bus and score store.
    pub redis_url: Option<String>,
    /// Prefix of every Redis key this process uses (to share one Redis between deployments).
    pub redis_prefix: String,
    /// Entries a bus topic's Redis stream keeps at most (approximately), even when a consumer
    /// group lags behind: its oldest entries go first.
    pub bus_max_len: u64,
    /// Logging.
    pub log: LogSettings,
    /// Token verification and minting.
    pub auth: AuthSettings,
    /// The gRPC listener.
    pub grpc: GrpcSettings,
    /// The REST edge's listener.
    pub http: HttpSettings,
    /// Readiness: how long a dependency may be unreachable before health says NOT_SERVING.
    pub health: HealthSettings,
    /// Per-caller limits every service and the edge enforce.
    pub limits: LimitSettings,
    /// The Prometheus endpoint of a single service in mesh mode.
    pub metrics: MetricsSettings,
    /// Where the other services are, for the REST edge and service-to-service calls.
    pub services: ServiceAddrs,
    /// The scan service.
    pub scan: ScanSettings,
    /// The progress service and its batch writer.
    pub progress: ProgressSettings,
    /// The leaderboard service and its delta applier.
    pub leaderboard: LeaderboardSettings,
    /// The incentive service and its processors (consumers of the `activity` topic).
    pub incentive: IncentiveSettings,
}

/// Incentive service settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncentiveSettings {
    /// Run the processors inside `ewpm serve incentive` / `ewpm dev` (they also run alone as
    /// `ewpm serve incentive-processor`).
    pub processor_enabled: bool,
    /// Processor tasks per process (each a consumer of the `activity` topic).
    pub processors: usize,
    /// Activities a processor handles in one transaction at most. Large batches pay: a batch
    /// costs a handful of statements whatever its size.
    pub batch_size: usize,
    /// Longest the oldest received activity waits for its batch, in milliseconds.
    pub flush_interval_ms: u64,
    /// Activities a processor received but has not acknowledged for this long are taken over by
    /// another processor, in milliseconds.
    pub reclaim_idle_ms: u64,
    /// How long a processor caches an employer's active incentive links and a link's
    /// definition, in seconds (an announced link change empties the cache at once).
    pub lookup_cache_secs: u64,
    /// How many calendar days before a user's latest counted day a late activity still
    /// lands on its own day of a streak (older ones are ignored): 0 to 31.
    pub backfill_days: u32,
}

/// Progress service settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgressSettings {
    /// Run the batch writer inside `ewpm serve progress` / `ewpm dev` (it also runs alone as
    /// `ewpm serve progress-writer`).
    pub writer_enabled: bool,
    /// Writer tasks per process (each a consumer of the queue).
    pub writers: usize,
    /// Entries that make a batch due at once.
    pub batch_size: usize,
    /// Longest the oldest queued entry waits for its batch, in milliseconds.
    pub flush_interval_ms: u64,
    /// Entries a writer received but has not acknowledged for this long are taken over by
    /// another writer (the first is presumed dead), in milliseconds.
    pub reclaim_idle_ms: u64,
    /// How long a challenge's window is cached by the submit path, in seconds.
    pub challenge_cache_secs: u64,
    /// How long past its cache time a challenge's window is still served while the challenge
    /// service fails (it is down, or its database is), in seconds; 0 serves nothing stale.
    pub challenge_stale_secs: u64,
    /// Failed attempts of a writer batch before it is split to isolate the entries that
    /// cannot be written (they go to `progress_dead_letters`, the rest is written).
    pub split_after_failures: u32,
    /// Entries queued but not yet written beyond which SubmitProgress pushes back with
    /// RESOURCE_EXHAUSTED (HTTP 429) instead of letting the leaderboards fall behind.
    pub max_backlog: u64,
}

/// Leaderboard service settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaderboardSettings {
    /// Run the score delta applier inside `ewpm serve leaderboard` / `ewpm dev`.
    pub applier_enabled: bool,
    /// Shortest gap between two snapshots of one board to its watchers, in milliseconds.
    pub watch_interval_ms: u64,
    /// Deltas a dead applier left unacknowledged for this long are taken over, in
    /// milliseconds.
    pub reclaim_idle_ms: u64,
    /// How long a page read is served from this process's memory before the score store is
    /// read again, in milliseconds (0: always read the store). Boards change by batches
    /// anyway; this keeps hot top-10 reads off Redis.
    pub read_cache_ms: u64,
    /// How long who may read a board (its challenge's employer) is remembered, in seconds.
    /// A challenge moved to another employer is seen by reads after at most this long.
    pub audience_cache_secs: u64,
    /// Most boards whose audience is remembered (and, separately, most unknown boards
    /// remembered as unknown); the entry expiring first makes room.
    pub audience_cache_entries: usize,
    /// Most concurrent WatchLeaderboard streams of one caller (token `sub`) in one process.
    pub max_streams_per_caller: usize,
    /// Most concurrent WatchLeaderboard streams in one process.
    pub max_streams: usize,
    /// How long an applied delta's event id is remembered, in seconds, counted from the time
    /// in its UUIDv7 id. A delta older than this is not applied (it makes its board rebuild
    /// from the owner instead); keep it far beyond any redelivery delay of the bus.
    pub dedupe_window_secs: u64,
}

/// Scan service settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanSettings {
    /// The projector of parcel states.
    pub projector: ProjectorSettings,
}

/// The scan projector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectorSettings {
    /// Run the projector inside `ewpm serve scan` / `ewpm dev` (it also runs alone as
    /// `ewpm serve scan-projector`).
    pub enabled: bool,
    /// `own` (this service's feed) or the URL of an external Scan Event API, e.g.
    /// `https://feed.example/v1/scans/scanevents`.
    pub source: String,
    /// Bearer token sent to an external source.
    pub source_token: Option<String>,
    /// Events per page.
    pub page_size: u32,
    /// Wait between polls once caught up, in milliseconds.
    pub poll_interval_ms: u64,
    /// Health reports NOT_SERVING when the leading projector has not succeeded for this long.
    pub stale_after_secs: u64,
}

/// Log output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `pretty` (local) or `json` (production).
    pub format: LogFormat,
    /// An `EnvFilter` directive, e.g. `info` or `info,ewpm_challenge=debug`. `RUST_LOG` wins.
    pub level: String,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable, coloured when on a terminal.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// JWT settings (HS256).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// The HS256 signing secret. Unset in the embedded mode means a key generated once and
    /// kept in `<data_dir>/dev-jwt-secret`; `ewpm serve` requires it.
    pub secret: Option<String>,
    /// Required `iss` claim.
    pub issuer: String,
    /// Required `aud` claim.
    pub audience: String,
    /// Lifetime of tokens minted by `ewpm token` and `ewpm dev`, in seconds.
    pub token_ttl_secs: u64,
}

/// gRPC server settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcSettings {
    /// Listen address.
    pub addr: SocketAddr,
    /// Largest request message accepted, in bytes.
    pub max_message_bytes: usize,
    /// How long shutdown waits for open calls and streams before dropping them, in seconds.
    pub shutdown_grace_secs: u64,
}

/// Readiness settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSettings {
    /// How often each dependency (database, Redis) is checked, in milliseconds.
    pub check_interval_ms: u64,
    /// A dependency unreachable for longer than this turns readiness NOT_SERVING (and back to
    /// SERVING once it answers again), in seconds. Liveness never depends on it.
    pub unready_after_secs: u64,
}

/// Limits on what one caller may hold or send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    /// Sustained requests per second one caller (token subject) may send to one process;
    /// beyond it (and the burst) calls answer RESOURCE_EXHAUSTED / 429 with a retry delay.
    /// 0 turns the limit off (benchmarks). Service-to-service calls are not limited.
    pub rate_per_sec: u32,
    /// Requests a caller may send at once above the sustained rate.
    pub burst: u32,
    /// Calls one process serves at once (unary calls and stream set-ups); beyond it calls
    /// answer RESOURCE_EXHAUSTED / 429 at once instead of queueing.
    pub max_in_flight: usize,
    /// Longest a unary call may run before it answers DEADLINE_EXCEEDED, in seconds.
    pub request_timeout_secs: u64,
    /// Live streams (gRPC watch streams, SSE) one caller may hold open on one process.
    pub max_streams_per_caller: usize,
    /// Live streams one process holds open at most.
    pub max_streams: usize,
}

/// REST edge settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// Listen address.
    pub addr: SocketAddr,
}

/// Metrics endpoint of a single service (`ewpm serve <service>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    /// Listen address of `GET /metrics`.
    pub addr: SocketAddr,
}

/// Addresses (URIs) of the services.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceAddrs {
    /// The challenge service, e.g. `http://challenge:50051`.
    pub challenge: String,
    /// The scan service, e.g. `http://scan:50051`.
    pub scan: String,
    /// The progress service, e.g. `http://progress:50051`.
    pub progress: String,
    /// The leaderboard service, e.g. `http://leaderboard:50051`.
    pub leaderboard: String,
    /// The incentive service, e.g. `http://incentive:50051`.
    pub incentive: String,
}

impl Default for ProgressSettings {
    fn default() -> Self {
        Settings::default().progress
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            database_url: None,
            redis_url: None,
            redis_prefix: String::new(),
            bus_max_len: 1_000_000,
            log: LogSettings { format: LogFormat::Pretty, level: "info".into() },
            auth: AuthSettings {
                secret: None,
                issuer: "ewpm".into(),
                audience: "ewpm".into(),
                token_ttl_secs: 24 * 3600,
            },
            grpc: GrpcSettings {
                addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
                max_message_bytes: 4 * 1024 * 1024,
                shutdown_grace_secs: 5,
            },
            http: HttpSettings { addr: SocketAddr::from(([127, 0, 0, 1], 8080)) },
            health: HealthSettings { check_interval_ms: 1000, unready_after_secs: 5 },
            limits: LimitSettings {
                rate_per_sec: 1000,
                burst: 2000,
                max_in_flight: 4096,
                request_timeout_secs: 30,
                max_streams_per_caller: 16,
                max_streams: 10_000,
            },
            metrics: MetricsSettings { addr: SocketAddr::from(([0, 0, 0, 0], 9464)) },
            services: ServiceAddrs {
                challenge: "http://127.0.0.1:50051".into(),
                scan: "http://127.0.0.1:50051".into(),
                progress: "http://127.0.0.1:50051".into(),
                leaderboard: "http://127.0.0.1:50051".into(),
                incentive: "http://127.0.0.1:50051".into(),
            },
            scan: ScanSettings {
                projector: ProjectorSettings {
                    enabled: true,
                    source: "own".into(),
                    source_token: None,
                    page_size: 1000,
                    poll_interval_ms: 500,
                    stale_after_secs: 60,
                },
            },
            progress: ProgressSettings {
                writer_enabled: true,
                writers: 2,
                batch_size: 50,
                flush_interval_ms: 2000,
                reclaim_idle_ms: 30_000,
                challenge_cache_secs: 30,
                challenge_stale_secs: 600,
                split_after_failures: 3,
                max_backlog: 10_000,
            },
            leaderboard: LeaderboardSettings {
                applier_enabled: true,
                watch_interval_ms: 100,
                reclaim_idle_ms: 30_000,
                read_cache_ms: 100,
                audience_cache_secs: 30,
                audience_cache_entries: 10_000,
                max_streams_per_caller: 16,
                max_streams: 10_000,
                dedupe_window_secs: 7 * 24 * 3600,
            },
            incentive: IncentiveSettings {
                processor_enabled: true,
                processors: 2,
                batch_size: 2000,
                flush_interval_ms: 100,
                reclaim_idle_ms: 30_000,
                lookup_cache_secs: 10,
                backfill_days: 7,
            },
        }
    }
}

impl Settings {
    /// Loads the settings from the process environment (see the module doc for the layers).
    pub fn load() -> anyhow::Result<Self> {
        let vars: Vec<(String, String)> = std::env::vars().collect();
        Self::load_from(&vars)
    }

    /// Loads the settings with `vars` standing in for the environment.
    pub fn load_from(vars: &[(String, String)]) -> anyhow::Result<Self> {
        let var = |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        match var("EWPM_CONFIG") {
            Some(path) => {
                if !std::path::Path::new(&path).is_file() {
                    bail!("EWPM_CONFIG names {path}, which is not a readable file");
                }
                figment = figment.merge(Toml::file_exact(path));
            }
            None if std::path::Path::new("ewpm.toml").is_file() => {
                figment = figment.merge(Toml::file_exact("ewpm.toml"));
            }
            None => {}
        }
        let env: Vec<(String, String)> = vars
            .iter()
            .filter(|(k, _)| k.starts_with("EWPM_") && k != "EWPM_CONFIG")
            // EWPM_TEST_* and EWPM_TESTKIT_* belong to the test kit, not to a process.
            .filter(|(k, _)| !k.starts_with("EWPM_TEST"))
            .cloned()
            .collect();
        for (key, value) in &env {
            let path = key["EWPM_".len()..].to_ascii_lowercase().replace("__", ".");
            figment = figment.merge(Serialized::default(&path, value));
        }
        if let Some(url) = var("DATABASE_URL").filter(|v| !v.is_empty()) {
            figment = figment.merge(Serialized::default("database_url", url));
        }
        if let Some(url) = var("REDIS_URL").filter(|v| !v.is_empty()) {
            figment = figment.merge(Serialized::default("redis_url", url));
        }
        // Lossy: environment values are strings; numbers and booleans parse where expected.
        figment.extract_lossy().map_err(|errors| {
            let lines: Vec<String> = errors
                .into_iter()
                .map(|e| {
                    let path = e.path.join(".");
                    let env = format!("EWPM_{}", path.to_ascii_uppercase().replace('.', "__"));
                    format!("{path} ({env}): {}", e.kind)
                })
                .collect();
            anyhow::anyhow!("invalid settings: {}", lines.join("; "))
        })
    }

    /// The database URL, defaulting to the embedded SQLite file.
    pub fn database_url_or_embedded(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}?mode=rwc", self.data_dir.join("ewpm.db").display()),
        }
    }

    /// The Redis URL, or an error naming the variable that sets it.
    pub fn require_redis_url(&self) -> anyhow::Result<String> {
        self.redis_url
            .clone()
            .context("REDIS_URL is required here (e.g. REDIS_URL=redis://redis:6379/0)")
    }

    /// The database URL, or an error naming the variable that sets it.
    pub fn require_database_url(&self) -> anyhow::Result<String> {
        self.database_url.clone().context(
            "DATABASE_URL is required here (e.g. DATABASE_URL=postgres://user:pass@host/ewpm)",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_defaults_are_the_embedded_mode() {
        let s = Settings::load_from(&[]).unwrap();
        assert_eq!(s, Settings::default());
        assert_eq!(s.database_url_or_embedded(), "sqlite://data/ewpm.db?mode=rwc");
    }

    #[test]
    fn environment_overrides_nested_values_and_the_conventional_urls() {
        let s = Settings::load_from(&vars(&[
            ("EWPM_GRPC__ADDR", "0.0.0.0:6000"),
            ("EWPM_GRPC__MAX_MESSAGE_BYTES", "1024"),
            ("EWPM_AUTH__SECRET", "s3cret"),
            ("EWPM_LOG__FORMAT", "json"),
            ("DATABASE_URL", "postgres://localhost/x"),
            ("REDIS_URL", "redis://localhost:6379"),
        ]))
        .unwrap();
        assert_eq!(s.grpc.addr, "0.0.0.0:6000".parse().unwrap());
        assert_eq!(s.grpc.max_message_bytes, 1024);
        assert_eq!(s.auth.secret.as_deref(), Some("s3cret"));
        assert_eq!(s.log.format, LogFormat::Json);
        assert_eq!(s.database_url.as_deref(), Some("postgres://localhost/x"));
        assert_eq!(s.redis_url.as_deref(), Some("redis://localhost:6379"));
    }

    #[test]
    fn an_unknown_or_malformed_setting_fails_with_its_name() {
        let err = Settings::load_from(&vars(&[("EWPM_GRPC__ADDR", "nope")])).unwrap_err();
        assert!(format!("{err:#}").contains("grpc.addr (EWPM_GRPC__ADDR)"), "{err:#}");
        let err = Settings::load_from(&vars(&[("EWPM_GRPC__ADRR", "x")])).unwrap_err();
        assert!(format!("{err:#}").contains("adrr"), "{err:#}");
    }

    #[test]
    fn a_config_file_sits_between_defaults_and_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ewpm.toml");
        std::fs::write(
            &path,
            "[http]\naddr = \"127.0.0.1:9999\"\n[grpc]\nshutdown_grace_secs = 2\n",
        )
        .unwrap();
        let s = Settings::load_from(&vars(&[
            ("EWPM_CONFIG", path.to_str().unwrap()),
            ("EWPM_GRPC__SHUTDOWN_GRACE_SECS", "3"),
        ]))
        .unwrap();
        assert_eq!(s.http.addr, "127.0.0.1:9999".parse().unwrap());
        assert_eq!(s.grpc.shutdown_grace_secs, 3);
    }

    #[test]
    fn serve_mode_names_the_missing_database_url() {
        let err = Settings::default().require_database_url().unwrap_err();
        assert!(err.to_string().contains("DATABASE_URL"));
    }
}
