//! The EWPM service kit: everything a service needs that is not its own domain.
//!
//! A service says what it mounts and which background tasks it runs; startup, shutdown,
//! health, reflection, metrics, authentication, error shapes and store connections live here
//! once.
//!
//! # Layout
//! - [`module`]: the module contract every service crate exports ([`module::Module`]).
//! - [`host`]: a process hosting modules (embedded or mesh): stores, mount, drain.
//! - [`settings`]: layered typed configuration (defaults → file → `EWPM_` environment); each
//!   module's own section is read typed by the module.
//! - [`telemetry`]: tracing setup (pretty or JSON) and the Prometheus recorder.
//! - [`auth`]: JWT claims, token minting, the gRPC interceptor and [`auth::Caller`].
//! - [`batch`]: batching by size or age (the batch writers' flush rule).
//! - [`bus`]: durable topics with consumer groups; one file per backend (`bus/memory.rs`,
//!   `bus/sqlite.rs`: the embedded mode's durable bus, `bus/redis.rs`: Redis Streams).
//! - [`consumer`]: a batch consumer of a topic (receive → batch → handle → acknowledge).
//! - [`retry`]: the backoff after a failure and the sleep that shutdown interrupts.
//! - [`health`]: readiness from the dependencies (database, Redis), liveness apart.
//! - [`error`]: `tonic::Status` builders with `ErrorInfo` reasons and `BadRequest` violations.
//! - [`server`]: the gRPC server bootstrap (health, reflection, per-RPC spans and metrics,
//!   message limits, graceful shutdown).
//! - [`streams`]: caps on live streams per caller and per process.
//! - [`shutdown`]: SIGTERM / SIGINT → a cancellation token.
//! - [`db`]: SeaORM connections (SQLite or PostgreSQL).
//! - [`cache`]: a time-to-live cache for look-ups from other services.
//! - [`client`]: lazily connecting channels to other services.
//! - [`clock`]: the time source services take, so tests can fix it.
//! - [`redis`]: Redis helpers (cached Lua scripts).
//! - [`paging`]: page sizes and opaque page tokens shared by every List RPC.
//! - [`json`]: `google.protobuf.Struct` ↔ JSON (free-form request fields, REST bodies).

pub mod auth;
pub mod batch;
pub mod bus;
pub mod cache;
pub mod client;
pub mod clock;
pub mod consumer;
pub mod db;
pub mod error;
pub mod health;
pub mod host;
pub mod idempotency;
pub mod json;
pub mod module;
pub mod notices;
pub mod paging;
pub mod redis;
pub mod retry;
pub mod server;
pub mod settings;
pub mod shutdown;
pub mod streams;
pub mod telemetry;
pub mod timestamp;

/// Installs rustls' ring crypto provider for HTTPS clients (the one the database driver
/// already links); needed once per process before any `reqwest` client is built.
/// Idempotent.
pub fn install_tls_provider() {
    // Fails only when a provider is installed already, which is as good.
    drop(rustls::crypto::ring::default_provider().install_default());
}

pub use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
