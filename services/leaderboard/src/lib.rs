//! The leaderboard service: named boards (`challenge:<id>`, `quiz:<id>`) of member scores,
//! fed by score deltas that apply at most once each, rebuilt from their owner when lost, and
//! streamed live to watchers.
//!
//! # Layout
//! - [`grpc`]: `LeaderboardService` — GetLeaderboard, GetRank, WatchLeaderboard; thin.
//! - [`service`]: the reads behind the RPCs (check access, make the board ready, then read).
//! - [`access`]: who may read a board, from its owner (challenge boards: the challenge
//!   service), cached and bounded; unknown boards are NOT_FOUND before any key is written.
//! - [`domain`]: board names, member ids, page / neighbour / top N limits.
//! - [`scores`]: the score store — Redis sorted sets in mesh mode, memory in embedded mode —
//!   with exactly-once deltas, competition ranking and the board lifecycle (ready, building,
//!   missing) with an atomic rebuild.
//! - [`rebuild`]: board owners (challenge boards: the progress service) and the
//!   single-flight, leased rebuild of missing boards.
//! - [`applier`]: applies score deltas from the bus (a handler of the kit's consumer) and
//!   publishes change notices.
//! - [`notices`]: per-board change notices (Redis pub/sub, or in-process).
//! - [`watch`]: the watch hub — one subscription and one snapshot task per board per process.
//! - [`error`]: [`error::LeaderboardError`] and its one mapping to `tonic::Status`.
//! - [`app`]: [`app::build`] wires it all into a mountable service and an applier.
//! - [`settings`]: the `[leaderboard]` settings section.
//! - [`module`]: [`MODULE`], what the binary's registry runs (memory stores embedded, Redis in
//!   the mesh).

pub mod access;
pub mod app;
pub mod applier;
pub mod background;
pub mod definition;
pub mod domain;
pub mod error;
pub mod grpc;
mod migrations;
pub mod module;
pub mod notices;
pub mod own;
pub mod period;
pub mod privacy;
pub mod quiz;
pub mod ranking;
pub mod reader;
pub mod rebuild;
pub mod scores;
pub mod service;
pub mod settings;
pub mod store;
pub mod watch;
pub mod writes;

pub use module::MODULE;
