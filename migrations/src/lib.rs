//! EWPM schema migrations.
//!
//! Each service owns its tables and has its own `Migrator` with its own history table
//! (`seaql_migrations_<service>`), so services migrate independently on one shared database
//! server and nothing joins across services.
//!
//! # Layout
//! - [`challenge`]: the challenge service's `challenges` table.
//! - [`progress`]: the progress service's `progress_entries`, `activity_log`
//!   and `progress_dead_letters`.
//! - [`incentive`]: the incentive service's `incentives`, `employer_incentives`, `streaks`,
//!   `awards`.
//! - [`scan`]: the scan service's `scan_events`, `parcel_states`, `scan_checkpoints`,
//!   `scan_dead_letters`.

pub mod challenge;
pub mod incentive;
pub mod progress;
pub mod scan;

pub use sea_orm_migration::MigratorTrait;
