//! Migrations of the leaderboard service.

use sea_orm_migration::prelude::*;

mod m20261215_000001_create_leaderboard_tables;

/// Migrator of the leaderboard service (history in `seaql_migrations_leaderboard`).
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(m20261215_000001_create_leaderboard_tables::Migration)]
    }

    fn migration_table_name() -> DynIden {
        Alias::new("seaql_migrations_leaderboard").into_iden()
    }
}
