//! Layered, typed settings.
//!
//! Precedence, lowest first: built-in defaults (the embedded mode) → an optional TOML file
//! (`EWPM_CONFIG`, else `ewpm.toml` in the working directory when present) → environment
//! variables with the `EWPM_` prefix and `__` for nesting (`EWPM_GRPC__ADDR`,
//! `EWPM_AUTH__SECRET`) → the conventional `DATABASE_URL` and `REDIS_URL`.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf};

use anyhow::{Context, bail};
use figment::{
    Figment,
    providers::{Format, Serialized, Toml},
    value::{Dict, Value},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// Most partitions a bus topic may have (each costs every consumer a read loop).
pub const MAX_BUS_PARTITIONS: u16 = 64;

/// The kit's own top-level keys (every field of [`Settings`] but `sections`).
const KIT_KEYS: &[&str] = &[
    "data_dir",
    "database_url",
    "redis_url",
    "redis_prefix",
    "bus_max_len",
    "bus_partitions",
    "log",
    "auth",
    "grpc",
    "http",
    "health",
    "limits",
    "metrics",
    "services",
];

/// A module's name and its settings section, as the loader needs them: the defaults and a
/// typed check of what was loaded. A module without settings still has a (settings-less)
/// section, so that its name is a known `services` key.
#[derive(Clone)]
pub struct Section {
    name: &'static str,
    defaults: Option<Value>,
    check: fn(&Value) -> Result<(), Box<figment::Error>>,
}

impl std::fmt::Debug for Section {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Section").field("name", &self.name).finish_non_exhaustive()
    }
}

impl Section {
    /// Module `name`, with no settings of its own.
    pub fn named(name: &'static str) -> Self {
        Self { name, defaults: None, check: |_| Ok(()) }
    }

    /// Module `name`, whose settings are a `T` (`T::default()` the defaults; give `T`
    /// `#[serde(deny_unknown_fields)]` so that a misspelt key fails the load).
    pub fn of<T: Serialize + DeserializeOwned + Default>(name: &'static str) -> Self {
        let defaults = Value::serialize(T::default()).expect("a settings struct serializes");
        Self { name, defaults: Some(defaults), check: |v| typed::<T>(v).map(drop) }
    }

    /// The module's name (its section's key, its `services` key).
    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// `value` as a `T`, converting strings from the environment where numbers or booleans are
/// expected.
fn typed<T: DeserializeOwned>(value: &Value) -> Result<T, Box<figment::Error>> {
    Figment::from(Serialized::defaults(value.clone())).extract_lossy().map_err(Box::new)
}

/// A figment error as `path (EWPM_PATH): what`, `prefix` before a section's relative path.
fn describe(errors: figment::Error, prefix: &[&str]) -> Vec<String> {
    errors
        .into_iter()
        .map(|e| {
            let mut path: Vec<String> = prefix.iter().map(|p| p.to_string()).collect();
            path.extend(e.path.iter().cloned());
            let path = path.join(".");
            let env = format!("EWPM_{}", path.to_ascii_uppercase().replace('.', "__"));
            format!("{path} ({env}): {}", e.kind)
        })
        .collect()
}

/// Every setting of an EWPM process the kit knows; each module's own section is in
/// [`Settings::sections`] (see [`Section`]).
///
/// Unknown keys are rejected by [`Settings::load_from`] (top level: neither a kit setting nor
/// a registered module's section) and by each nested struct (`deny_unknown_fields`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Directory for embedded-mode state: the SQLite file and the development signing key.
    pub data_dir: PathBuf,
    /// Database URL (`postgres://…` or `sqlite://…`). Unset means the embedded SQLite file
    /// `<data_dir>/ewpm.db`; `ewpm serve` and `ewpm migrate` require it.
    pub database_url: Option<String>,
    /// Redis URL for the mesh mode's bus and score store.
    pub redis_url: Option<String>,
    /// Prefix of every Redis key this process uses (to share one Redis between deployments);
    /// no `{` or `}` (hash tags are EWPM's own).
    pub redis_prefix: String,
    /// Entries a bus topic's Redis stream keeps at most (approximately), even when a consumer
    /// group lags behind: its oldest entries go first.
    pub bus_max_len: u64,
    /// Partitions of every bus topic in the mesh (each a stream of its own; on a Redis
    /// Cluster they spread over the nodes). 1 (the default) keeps one stream per topic; the
    /// embedded mode always has one. Every process of a mesh must use the same value.
    pub bus_partitions: u16,
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
    /// Where the services are, by module name (`EWPM_SERVICES__LEADERBOARD=http://leaderboard:50051`),
    /// for the REST edge and service-to-service calls. Only registered modules' names are
    /// accepted; each defaults to the embedded mode's listener (`http://127.0.0.1:50051`), and
    /// `ewpm dev` points every name at its own listener.
    pub services: BTreeMap<String, String>,
    /// Each registered module's own section (`[progress]`, `EWPM_PROGRESS__BATCH_SIZE`), kept
    /// as loaded (defaults, file, environment) and read typed by the module with
    /// [`Settings::section`]. Not settable as such.
    #[serde(skip)]
    pub sections: BTreeMap<String, Value>,
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
    /// Browser origins allowed to call the edge cross-origin (CORS), as
    /// `scheme://host[:port]`, or `*` for any. Empty (the default): no CORS headers at all, so
    /// browsers only call the edge from its own origin. From the environment a comma-separated
    /// list (`EWPM_HTTP__CORS_ORIGINS=https://app.example.com,http://localhost:3000`).
    #[serde(default, deserialize_with = "cors_origins")]
    pub cors_origins: Vec<String>,
}

/// `cors_origins` from a list or a comma-separated string (environment variables are
/// strings), each checked and normalized (lower case, no trailing `/`): a setting that is no
/// origin fails the load naming it, rather than silently never matching.
fn cors_origins<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        List(Vec<String>),
        Text(String),
    }
    let raw = match Raw::deserialize(d)? {
        Raw::List(list) => list,
        Raw::Text(text) => text.split(',').map(str::to_string).collect(),
    };
    raw.iter()
        .map(|o| o.trim())
        .filter(|o| !o.is_empty())
        .map(|o| cors_origin(o).map_err(serde::de::Error::custom))
        .collect()
}

/// One allowed origin, normalized: `*`, or `http(s)://host[:port]` without a path.
fn cors_origin(raw: &str) -> Result<String, String> {
    if raw == "*" {
        return Ok(raw.to_string());
    }
    let origin = raw.trim_end_matches('/').to_ascii_lowercase();
    let host = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://"));
    match host {
        Some(host)
            if !host.is_empty()
                && !host.contains(['/', '?', '#', '@', ' ', '*'])
                && host.is_ascii() =>
        {
            Ok(origin)
        }
        _ => Err(format!(
            "{raw:?} is not an origin: use scheme://host[:port] (e.g. https://app.example.com) or *"
        )),
    }
}

/// Metrics endpoint of a single service (`ewpm serve <service>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    /// Listen address of `GET /metrics`.
    pub addr: SocketAddr,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            database_url: None,
            redis_url: None,
            redis_prefix: String::new(),
            bus_max_len: 1_000_000,
            bus_partitions: 1,
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
            http: HttpSettings {
                addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
                cors_origins: Vec::new(),
            },
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
            services: BTreeMap::new(),
            sections: BTreeMap::new(),
        }
    }
}

impl Settings {
    /// Loads the settings from the process environment (see the module doc for the layers),
    /// with the registered modules' `sections`.
    pub fn load(sections: &[Section]) -> anyhow::Result<Self> {
        let vars: Vec<(String, String)> = std::env::vars().collect();
        Self::load_from(&vars, sections)
    }

    /// Loads the settings with `vars` standing in for the environment.
    pub fn load_from(vars: &[(String, String)], sections: &[Section]) -> anyhow::Result<Self> {
        let var = |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        // Every module's address defaults to the embedded mode's listener.
        let embedded = format!("http://{}", Settings::default().grpc.addr);
        for section in sections {
            figment = figment.merge(Serialized::default(
                &format!("services.{}", section.name),
                embedded.clone(),
            ));
            if let Some(defaults) = &section.defaults {
                figment = figment.merge(Serialized::default(section.name, defaults.clone()));
            }
        }
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
        let mut errors = Vec::new();
        let top: Dict = figment.extract().map_err(|e| anyhow::anyhow!("invalid settings: {e}"))?;
        let known = |key: &str| sections.iter().any(|s| s.name == key);
        for key in top.keys() {
            let section = sections.iter().find(|s| s.name == key);
            if !KIT_KEYS.contains(&key.as_str()) && section.is_none_or(|s| s.defaults.is_none()) {
                let env = format!("EWPM_{}", key.to_ascii_uppercase());
                errors.push(format!("{key} ({env}): unknown setting"));
            }
        }
        // Lossy: environment values are strings; numbers and booleans parse where expected.
        let settings = match figment.extract_lossy::<Settings>() {
            Ok(settings) => Some(settings),
            Err(e) => {
                errors.extend(describe(e, &[]));
                None
            }
        };
        if let Some(s) = &settings {
            if !(1..=MAX_BUS_PARTITIONS).contains(&s.bus_partitions) {
                errors.push(format!(
                    "bus_partitions (EWPM_BUS_PARTITIONS): {} is not between 1 and {MAX_BUS_PARTITIONS}",
                    s.bus_partitions
                ));
            }
            if s.redis_prefix.contains(['{', '}']) {
                // A hash tag in the prefix would put every key in one cluster slot, or (`{}`)
                // split a board's or a topic's keys over several.
                errors.push(format!(
                    "redis_prefix (EWPM_REDIS_PREFIX): {:?} may not contain '{{' or '}}' (Redis \
                     Cluster hash tags are EWPM's own)",
                    s.redis_prefix
                ));
            }
            for name in s.services.keys() {
                if !known(name) {
                    let env = format!("EWPM_SERVICES__{}", name.to_ascii_uppercase());
                    errors.push(format!("services.{name} ({env}): no module is named {name}"));
                }
            }
        }
        let mut loaded = BTreeMap::new();
        for section in sections.iter().filter(|s| s.defaults.is_some()) {
            let value = top.get(section.name).cloned().unwrap_or_else(|| Value::from(Dict::new()));
            match (section.check)(&value) {
                Ok(()) => {
                    loaded.insert(section.name.to_string(), value);
                }
                Err(e) => errors.extend(describe(*e, &[section.name])),
            }
        }
        match settings {
            Some(mut s) if errors.is_empty() => {
                s.sections = loaded;
                Ok(s)
            }
            _ => bail!("invalid settings: {}", errors.join("; ")),
        }
    }

    /// Module `name`'s settings section as a `T` (its defaults when it was not loaded with
    /// one, e.g. in tests).
    pub fn section<T: DeserializeOwned + Default>(&self, name: &str) -> anyhow::Result<T> {
        match self.sections.get(name) {
            Some(value) => typed(value).map_err(|e| {
                anyhow::anyhow!("invalid settings: {}", describe(*e, &[name]).join("; "))
            }),
            None => Ok(T::default()),
        }
    }

    /// The address of the service module `name` (`services.<name>`), or an error naming the
    /// variable that sets it.
    pub fn service_uri(&self, name: &str) -> anyhow::Result<&str> {
        self.services.get(name).map(String::as_str).with_context(|| {
            format!(
                "EWPM_SERVICES__{} is required here: the address of the {name} service, e.g. http://{name}:50051",
                name.to_ascii_uppercase()
            )
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
        let s = Settings::load_from(&[], &[]).unwrap();
        assert_eq!(s, Settings::default());
        assert_eq!(s.database_url_or_embedded(), "sqlite://data/ewpm.db?mode=rwc");
    }

    #[test]
    fn environment_overrides_nested_values_and_the_conventional_urls() {
        let s = Settings::load_from(
            &vars(&[
                ("EWPM_GRPC__ADDR", "0.0.0.0:6000"),
                ("EWPM_GRPC__MAX_MESSAGE_BYTES", "1024"),
                ("EWPM_AUTH__SECRET", "s3cret"),
                ("EWPM_LOG__FORMAT", "json"),
                ("DATABASE_URL", "postgres://localhost/x"),
                ("REDIS_URL", "redis://localhost:6379"),
            ]),
            &[],
        )
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
        let err = Settings::load_from(&vars(&[("EWPM_GRPC__ADDR", "nope")]), &[]).unwrap_err();
        assert!(format!("{err:#}").contains("grpc.addr (EWPM_GRPC__ADDR)"), "{err:#}");
        let err = Settings::load_from(&vars(&[("EWPM_GRPC__ADRR", "x")]), &[]).unwrap_err();
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
        let s = Settings::load_from(
            &vars(&[
                ("EWPM_CONFIG", path.to_str().unwrap()),
                ("EWPM_GRPC__SHUTDOWN_GRACE_SECS", "3"),
            ]),
            &[],
        )
        .unwrap();
        assert_eq!(s.http.addr, "127.0.0.1:9999".parse().unwrap());
        assert_eq!(s.grpc.shutdown_grace_secs, 3);
    }

    /// A module's settings, as a service crate defines them.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Writer {
        batch_size: usize,
        enabled: bool,
    }

    impl Default for Writer {
        fn default() -> Self {
            Self { batch_size: 50, enabled: true }
        }
    }

    fn sections() -> Vec<Section> {
        vec![Section::of::<Writer>("writer"), Section::named("plain")]
    }

    #[test]
    fn a_module_section_has_its_defaults_and_takes_the_environment() {
        let s = Settings::load_from(&[], &sections()).unwrap();
        assert_eq!(s.section::<Writer>("writer").unwrap(), Writer::default());
        let s = Settings::load_from(
            &vars(&[("EWPM_WRITER__BATCH_SIZE", "7"), ("EWPM_WRITER__ENABLED", "false")]),
            &sections(),
        )
        .unwrap();
        assert_eq!(
            s.section::<Writer>("writer").unwrap(),
            Writer { batch_size: 7, enabled: false }
        );
    }

    #[test]
    fn unknown_sections_keys_and_services_fail_with_their_names() {
        let cases = [
            ("EWPM_WRITER__BATCH_SIZ", "7", "writer.batch_siz"),
            ("EWPM_WRITER__BATCH_SIZE", "many", "writer.batch_size (EWPM_WRITER__BATCH_SIZE)"),
            ("EWPM_NOPE__X", "1", "nope (EWPM_NOPE)"),
            // A module without settings has no section to set.
            ("EWPM_PLAIN__X", "1", "plain (EWPM_PLAIN)"),
            ("EWPM_SERVICES__NOPE", "http://x:1", "services.nope (EWPM_SERVICES__NOPE)"),
            ("EWPM_BUS_PARTITIONS", "0", "bus_partitions (EWPM_BUS_PARTITIONS): 0 is not between"),
            ("EWPM_BUS_PARTITIONS", "65", "bus_partitions (EWPM_BUS_PARTITIONS): 65 is not"),
            (
                "EWPM_REDIS_PREFIX",
                "{acme}:",
                "redis_prefix (EWPM_REDIS_PREFIX): \"{acme}:\" may not",
            ),
            ("EWPM_REDIS_PREFIX", "a}", "redis_prefix (EWPM_REDIS_PREFIX): \"a}\" may not"),
        ];
        for (key, value, named) in cases {
            let err = Settings::load_from(&vars(&[(key, value)]), &sections()).unwrap_err();
            assert!(format!("{err:#}").contains(named), "{key}: {err:#}");
        }
    }

    #[test]
    fn service_addresses_are_keyed_by_module_name() {
        let s = Settings::load_from(
            &vars(&[("EWPM_SERVICES__PLAIN", "http://plain:50051")]),
            &sections(),
        )
        .unwrap();
        assert_eq!(s.service_uri("plain").unwrap(), "http://plain:50051");
        assert_eq!(s.service_uri("writer").unwrap(), "http://127.0.0.1:50051", "the default");
        let err = s.service_uri("other").unwrap_err();
        assert!(err.to_string().contains("EWPM_SERVICES__OTHER"), "{err}");
    }

    #[test]
    fn cors_origins_come_as_a_list_or_a_comma_separated_variable_and_are_normalized() {
        let s = Settings::load_from(
            &vars(&[(
                "EWPM_HTTP__CORS_ORIGINS",
                "https://App.example.com/, http://localhost:3000",
            )]),
            &[],
        )
        .unwrap();
        assert_eq!(s.http.cors_origins, ["https://app.example.com", "http://localhost:3000"]);
        let s = Settings::load_from(&vars(&[("EWPM_HTTP__CORS_ORIGINS", "*")]), &[]).unwrap();
        assert_eq!(s.http.cors_origins, ["*"]);
        let s = Settings::load_from(&vars(&[("EWPM_HTTP__CORS_ORIGINS", "")]), &[]).unwrap();
        assert_eq!(s.http.cors_origins, Vec::<String>::new());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ewpm.toml");
        std::fs::write(&path, "[http]\ncors_origins = [\"https://a.example\", \"*\"]\n").unwrap();
        let s =
            Settings::load_from(&vars(&[("EWPM_CONFIG", path.to_str().unwrap())]), &[]).unwrap();
        assert_eq!(s.http.cors_origins, ["https://a.example", "*"]);
    }

    #[test]
    fn a_cors_origin_that_is_no_origin_fails_the_load_naming_the_setting() {
        for bad in ["app.example.com", "https://app.example.com/path", "ftp://x", "https://"] {
            let err =
                Settings::load_from(&vars(&[("EWPM_HTTP__CORS_ORIGINS", bad)]), &[]).unwrap_err();
            let err = format!("{err:#}");
            assert!(err.contains("http.cors_origins (EWPM_HTTP__CORS_ORIGINS)"), "{bad}: {err}");
        }
    }

    #[test]
    fn serve_mode_names_the_missing_database_url() {
        let err = Settings::default().require_database_url().unwrap_err();
        assert!(err.to_string().contains("DATABASE_URL"));
    }
}
