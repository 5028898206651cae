//! A challenge's late grace: how long after its end late entries are still accepted.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Challenges {
    Table,
    LateGraceSecs,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Existing challenges keep the old rule's end (grace 0: final at `ends_at`).
        manager
            .alter_table(
                Table::alter()
                    .table(Challenges::Table)
                    .add_column(integer(Challenges::LateGraceSecs).default(0))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Challenges::Table)
                    .drop_column(Challenges::LateGraceSecs)
                    .to_owned(),
            )
            .await
    }
}
