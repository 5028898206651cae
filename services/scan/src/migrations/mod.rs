//! Migrations of the scan service.

use sea_orm_migration::prelude::*;

mod m20261122_000001_create_scan_tables;

/// Migrator of the scan service (history in `seaql_migrations_scan`).
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(m20261122_000001_create_scan_tables::Migration)]
    }

    fn migration_table_name() -> DynIden {
        Alias::new("seaql_migrations_scan").into_iden()
    }
}
