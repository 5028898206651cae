use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ActivityLog {
    Table,
    Id,
    Kind,
    UserId,
    EmployerId,
    Value,
    Note,
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
                    .table(ActivityLog::Table)
                    .if_not_exists()
                    // Minted (UUID v7) when the activity is accepted; a batch written twice
                    // inserts nothing the second time.
                    .col(uuid(ActivityLog::Id).primary_key())
                    .col(string_len(ActivityLog::Kind, 32))
                    .col(string_len(ActivityLog::UserId, 128))
                    .col(string_len_null(ActivityLog::EmployerId, 64))
                    .col(double_null(ActivityLog::Value))
                    .col(text(ActivityLog::Note))
                    .col(timestamp_with_time_zone(ActivityLog::OccurredAt))
                    .col(timestamp_with_time_zone(ActivityLog::AcceptedAt))
                    .col(timestamp_with_time_zone(ActivityLog::WrittenAt))
                    .to_owned(),
            )
            .await?;
        // A user's history, by time.
        manager
            .create_index(
                Index::create()
                    .name("activity_log_user_occurred")
                    .table(ActivityLog::Table)
                    .col(ActivityLog::UserId)
                    .col(ActivityLog::OccurredAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(ActivityLog::Table).to_owned()).await
    }
}
