//! EWPM schema migrations.
//!
//! Each service owns its tables and has its own `Migrator` with its own history table
//! (`seaql_migrations_<service>`), so services migrate independently on one shared database
//! server and nothing joins across services.
//!
//! # Layout
//! - [`challenge`]: the challenge service's `challenges` table.

pub mod challenge;

pub use sea_orm_migration::MigratorTrait;
