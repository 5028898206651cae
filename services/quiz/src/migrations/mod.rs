//! Migrations of the quiz service.

use sea_orm_migration::prelude::*;

mod m20261130_000001_create_quiz_tables;

/// Migrator of the quiz service (history in `seaql_migrations_quiz`).
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(m20261130_000001_create_quiz_tables::Migration)]
    }

    fn migration_table_name() -> DynIden {
        Alias::new("seaql_migrations_quiz").into_iden()
    }
}
