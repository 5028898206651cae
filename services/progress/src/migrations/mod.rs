//! Migrations of the progress service.

use sea_orm_migration::prelude::*;

mod m20261122_000001_create_progress_entries;
mod m20261122_000002_create_activity_log;
mod m20261129_000003_create_progress_dead_letters;

/// Migrator of the progress service (history in `seaql_migrations_progress`).
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_create_progress_entries::Migration),
            Box::new(m20261122_000002_create_activity_log::Migration),
            Box::new(m20261129_000003_create_progress_dead_letters::Migration),
        ]
    }

    fn migration_table_name() -> DynIden {
        Alias::new("seaql_migrations_progress").into_iden()
    }
}
