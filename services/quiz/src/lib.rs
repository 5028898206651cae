//! The quiz service: live quizzes. Authors write quizzes; hosts run sessions of them (open,
//! start, reveal question after question, close, finish); participants join and answer; each
//! answer's points reach the live leaderboard `quiz:<session>` through an outbox.
//!
//! # Layout
//! - [`grpc`]: `QuizService` — request → domain call → response.
//! - [`service`]: the rules: who may do what, the host flow, joining, answering, exports.
//! - [`domain`]: questions, answers, and the scoring rule; no I/O.
//! - [`store`]: the tables, the answers' transaction with their outbox rows, and the relay
//!   claim.
//! - [`writer`]: group commit of concurrent answers.
//! - [`relay`]: the outbox relay and the question closer.
//! - [`watch`]: WatchSession rooms: session events, leaderboard snapshots, presence, and
//!   delivery times for fair speed scoring.
//! - [`error`]: `QuizError` and its one mapping to `tonic::Status`.
//! - [`settings`]: the `[quiz]` settings section.
//! - [`migrations`]: the quiz tables (history `seaql_migrations_quiz`).
//! - [`module`]: [`MODULE`], what the binary's registry runs.

pub mod domain;
pub mod error;
pub mod grpc;
pub mod migrations;
pub mod module;
pub mod relay;
pub mod service;
pub mod settings;
pub mod store;
pub mod watch;
pub mod writer;

pub use module::MODULE;

/// The channel namespace of session notices (`quiz:changed:<session id>`).
pub const NOTICES_NAMESPACE: &str = "quiz:changed:";
