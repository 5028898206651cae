use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ProgressEntries {
    Table,
    Id,
    ChallengeId,
    UserId,
    EmployerId,
    Value,
    OccurredAt,
    AcceptedAt,
    WrittenAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ProgressEntries::Table)
                    .if_not_exists()
                    // Minted (UUID v7) when the entry is accepted; also the score delta's event
                    // id, so a batch written twice inserts nothing the second time.
                    .col(uuid(ProgressEntries::Id).primary_key())
                    .col(uuid(ProgressEntries::ChallengeId))
                    .col(string_len(ProgressEntries::UserId, 128))
                    .col(string_len_null(ProgressEntries::EmployerId, 64))
                    .col(double(ProgressEntries::Value))
                    .col(timestamp_with_time_zone(ProgressEntries::OccurredAt))
                    .col(timestamp_with_time_zone(ProgressEntries::AcceptedAt))
                    .col(timestamp_with_time_zone(ProgressEntries::WrittenAt))
                    .to_owned(),
            )
            .await?;
        // Totals per challenge and user (leaderboard rebuild, a user's own total).
        manager
            .create_index(
                Index::create()
                    .name("progress_entries_challenge_user")
                    .table(ProgressEntries::Table)
                    .col(ProgressEntries::ChallengeId)
                    .col(ProgressEntries::UserId)
                    .col(ProgressEntries::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(ProgressEntries::Table).to_owned()).await
    }
}
