//! The leaderboard service: named boards of member scores, fed by facts that count at most
//! once each, rebuilt from their owner when lost, and streamed live to watchers. Owners'
//! boards (`challenge:<id>`, `quiz:<id>`) are sums fed by score deltas from the bus; boards
//! defined here (`board:<id>`) have their own score operator, orders, tie-break, rank style
//! and reset schedule, and take scores through SubmitScore.
//!
//! # Layout
//! - [`grpc`]: `LeaderboardService`: every RPC's request checks and conversions; thin.
//! - [`service`]: the reads (definition, access, period, then the score store or the
//!   archive), the caller's place, team ranks, and per-watcher views with rank notices.
//! - [`writes`]: CreateBoard, SubmitScore (facts table first, then the score store), voids,
//!   privacy and employer settings.
//! - [`background`]: the fact relay (facts whose apply failed) and the period closer.
//! - [`definition`]: board definitions ([`definition::Definition`]) and where each kind's
//!   comes from; [`definition::Target`], one period of one board in the score store.
//! - [`ranking`]: the rules (operators, orders, rank styles) and their plain recomputation.
//! - [`period`]: reset schedules (daily, weekly, monthly, cron, in a time zone) and periods.
//! - [`store`]: this service's tables (definitions, facts, open and closed periods, archived
//!   standings, voids, privacy, employer settings) on SQLite or PostgreSQL.
//! - [`reader`]: reads of live boards, made ready first (rebuilt from their owner).
//! - [`privacy`]: pseudonyms for hidden members and the employer's minimum members.
//! - [`access`]: who may read a board, from its owner, cached and bounded; unknown boards
//!   are NOT_FOUND before any key is written.
//! - [`own`]: `board:` boards as their own owner (facts, audience, voids from [`store`]).
//! - [`domain`]: board names, member ids, page / neighbour / top N limits.
//! - [`scores`]: the score store — Redis sorted sets in mesh mode, memory in embedded mode —
//!   with exactly-once facts, every shape's ranking and the board lifecycle (ready,
//!   building, missing) with an atomic rebuild.
//! - [`rebuild`]: board owners (challenge boards: the progress service) and the
//!   single-flight, leased rebuild of missing boards.
//! - [`applier`]: applies score deltas from the bus (a handler of the kit's consumer) and
//!   publishes change notices.
//! - [`notices`]: per-board change notices (Redis pub/sub, or in-process).
//! - [`watch`]: the watch hub — one subscription and one snapshot task per board per process.
//! - [`quiz`]: quiz boards' owner, the quiz service.
//! - [`error`]: [`error::LeaderboardError`] and its one mapping to `tonic::Status`.
//! - [`app`]: [`app::build`] wires it all into a mountable service, an applier and the
//!   background work.
//! - [`settings`]: the `[leaderboard]` settings section.
//! - [`module`]: [`MODULE`], what the binary's registry runs (memory stores embedded, Redis in
//!   the mesh; this service's tables in the process's database either way).

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
