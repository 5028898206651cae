//! The engagement service: fan engagement for live matches. Devices and match feeds send
//! events; each is checked, deduplicated by its client id, queued durably on the bus, written
//! to `match_events` in batches by the persisters, and counted into live per-match counters
//! (Redis in the mesh, in process embedded) that watchers see change. The counters are a
//! cache of SQL: lost ones are rebuilt from it, exactly.
//!
//! # Layout
//! - [`grpc`]: `EngagementService` — request → domain call → response.
//! - [`service`]: the rules: who may ingest and read, per-event outcomes, rate and backlog
//!   limits, reads and replay.
//! - [`domain`]: events (parsing, clock skew, late events, ids) and counts and snapshots
//!   (peaks, percentiles, minutes, corrections); no I/O.
//! - [`admission`]: client event id dedupe and the per-match type cap (Redis or memory).
//! - [`persister`]: the bus consumer that writes and counts events; the bus format.
//! - [`counters`]: live per-match counters (Redis or memory), exactly once per ingest call.
//! - [`rebuild`]: counters rebuilt from SQL (on a miss, or ReplayMatch).
//! - [`watch`]: WatchMatch rooms (latest-wins snapshots per match).
//! - [`store`]: the `match_events` table.
//! - [`error`]: `EngagementError` and its one mapping to `tonic::Status`.
//! - [`settings`]: the `[engagement]` settings section.
//! - [`migrations`]: the engagement table (history `seaql_migrations_engagement`).
//! - [`module`]: [`MODULE`], what the binary's registry runs.

pub mod admission;
pub mod counters;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod migrations;
pub mod module;
pub mod persister;
pub mod rebuild;
pub mod service;
pub mod settings;
pub mod store;
pub mod watch;

pub use module::MODULE;

/// The channel namespace of match change notices (`eng:changed:<match id>`).
pub const NOTICES_NAMESPACE: &str = "eng:changed:";
