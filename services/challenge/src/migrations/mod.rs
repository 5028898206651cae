//! Migrations of the challenge service.

use sea_orm_migration::prelude::*;

mod m20261122_000001_create_challenges;
mod m20261129_000002_add_late_grace;

/// Migrator of the challenge service (history in `seaql_migrations_challenge`).
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_create_challenges::Migration),
            Box::new(m20261129_000002_add_late_grace::Migration),
        ]
    }

    fn migration_table_name() -> DynIden {
        Alias::new("seaql_migrations_challenge").into_iden()
    }
}
