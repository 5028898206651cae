//! The challenge service: wellness challenges with a time window, a goal and an optional
//! employer scope. Owns the `challenges` table.
//!
//! # Layout
//! - [`grpc`]: `ChallengeService` — request → domain call → response.
//! - [`service`]: the use cases (access rules, then the store).
//! - [`domain`]: parsed types (`ChallengeName`, `Goal`, `Window`…) and access rules; no I/O.
//! - [`store`]: the SeaORM entity and queries.
//! - [`standings`]: a user's total, percent of goal and rank, from the leaderboard service.
//! - [`error`]: `ChallengeError` and its one mapping to `tonic::Status`.
//! - [`app`]: `build(..)` → the tonic service, ready to mount.
//! - [`migrations`]: the `challenges` table's migrations (history `seaql_migrations_challenge`).
//! - [`module`]: [`MODULE`], what the binary's registry runs.

pub mod app;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod migrations;
pub mod module;
pub mod service;
pub mod standings;
pub mod store;

pub use module::MODULE;
