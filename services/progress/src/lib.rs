//! The progress service: challenge progress and logged health activity (mood, symptom,
//! steps, sleep, weight, birth). A user's challenge progress travels client → [`service`] (checked
//! against the challenge's window, learned over gRPC and cached) → the durable queue (bus
//! topic `progress`) → the [`writer`] (batches of `batch_size` or `flush_interval`, one
//! transaction each) → SQL → score deltas (bus topic `score-deltas`) → the leaderboard. Logged
//! activity takes the same queue into `activity_log`; both are then shown to the activity
//! published on the bus topic `activity` (the incentive service's processors consume it).
//!
//! Exactly once in effect: an entry's id is minted when it is accepted and is both its
//! primary key and its score delta's event id, so a batch written again inserts nothing and
//! a delta emitted again applies nothing.
//!
//! # Layout
//! - [`domain`]: progress values, idempotency keys, challenge windows, entries (no I/O).
//! - [`challenges`]: challenge windows from the challenge service, cached.
//! - [`service`]: accept an entry or a logged activity: check, queue (idempotently).
//! - [`activity`]: activity kinds and the recorded activity the writer publishes.
//! - [`queue`]: the queue's wire format: an item as an `ewpm.progress.v1.QueuedEntry`, the
//!   idempotency record (protobuf; the previous release's JSON still decodes).
//! - [`writer`]: the batch writer: queue → SQL → score deltas and activity → acknowledge;
//!   what cannot be written is set aside as a dead letter.
//! - [`poison`]: isolating the items of a batch that can never be written (generic).
//! - [`store`]: the `progress_entries`, `activity_log` and `progress_dead_letters` tables.
//! - [`grpc`]: the gRPC service `ewpm.progress.v1.ProgressService`.
//! - [`error`]: [`error::ProgressError`] and its one mapping to `tonic::Status`.
//! - [`app`]: builds the service and the writer from settings.
//! - [`settings`]: the `[progress]` settings section.
//! - [`migrations`]: the progress tables' migrations (history `seaql_migrations_progress`).
//! - [`module`]: [`MODULE`], what the binary's registry runs.

pub mod activity;
pub mod app;
pub mod challenges;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod migrations;
pub mod module;
pub mod poison;
pub mod queue;
pub mod service;
pub mod settings;
pub mod store;
pub mod writer;

pub use module::MODULE;

/// Bus topic of accepted entries (defined beside its `QueuedEntry` message in `ewpm-proto`).
pub use ewpm_proto::progress::v1::PROGRESS_TOPIC;
/// Consumer group of the batch writers.
pub const WRITER_GROUP: &str = "progress-writer";
/// Bus topic of score deltas (defined beside its `ScoreDelta` message in `ewpm-proto`).
pub use ewpm_proto::leaderboard::v1::SCORE_DELTAS_TOPIC;
