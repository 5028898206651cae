//! Migrations of the engagement service.

use sea_orm_migration::prelude::*;

mod m20261201_000001_create_match_events;

/// Migrator of the engagement service (history in `seaql_migrations_engagement`).
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(m20261201_000001_create_match_events::Migration)]
    }

    fn migration_table_name() -> DynIden {
        Alias::new("seaql_migrations_engagement").into_iden()
    }
}
