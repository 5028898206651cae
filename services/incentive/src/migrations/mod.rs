//! Migrations of the incentive service.

use sea_orm_migration::prelude::*;

mod m20261122_000001_create_incentive_tables;

/// Migrator of the incentive service (history in `seaql_migrations_incentive`).
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(m20261122_000001_create_incentive_tables::Migration)]
    }

    fn migration_table_name() -> DynIden {
        Alias::new("seaql_migrations_incentive").into_iden()
    }
}
