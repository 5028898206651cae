use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ProgressDeadLetters {
    Table,
    Id,
    Payload,
    Error,
    FailedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ProgressDeadLetters::Table)
                    .if_not_exists()
                    // The queued item's id when it decoded (so an item set aside twice, after
                    // a crash before the acknowledgement, keeps one row); else minted (UUID v7).
                    .col(uuid(ProgressDeadLetters::Id).primary_key())
                    // The payload exactly as it was queued.
                    .col(blob(ProgressDeadLetters::Payload))
                    // Why it could not be written.
                    .col(text(ProgressDeadLetters::Error))
                    .col(timestamp_with_time_zone(ProgressDeadLetters::FailedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(ProgressDeadLetters::Table).to_owned()).await
    }
}
