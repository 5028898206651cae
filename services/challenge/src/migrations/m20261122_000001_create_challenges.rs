use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Challenges {
    Table,
    Id,
    Name,
    Description,
    StartsAt,
    EndsAt,
    GoalTarget,
    GoalUnit,
    EmployerId,
    CreatedBy,
    CreatedAt,
    UpdatedBy,
    UpdatedAt,
    IdempotencyKey,
    RequestHash,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Challenges::Table)
                    .if_not_exists()
                    .col(pk_uuid(Challenges::Id))
                    .col(string_len(Challenges::Name, 200))
                    .col(text(Challenges::Description))
                    .col(timestamp_with_time_zone(Challenges::StartsAt))
                    .col(timestamp_with_time_zone(Challenges::EndsAt))
                    .col(double(Challenges::GoalTarget))
                    .col(string_len(Challenges::GoalUnit, 32))
                    .col(string_len_null(Challenges::EmployerId, 64))
                    .col(string_len(Challenges::CreatedBy, 128))
                    .col(timestamp_with_time_zone(Challenges::CreatedAt))
                    .col(string_len(Challenges::UpdatedBy, 128))
                    .col(timestamp_with_time_zone(Challenges::UpdatedAt))
                    .col(string_len_null(Challenges::IdempotencyKey, 128))
                    .col(string_len_null(Challenges::RequestHash, 64))
                    .to_owned(),
            )
            .await?;
        // Listing by employer and window is the hot read.
        manager
            .create_index(
                Index::create()
                    .name("challenges_employer_window")
                    .table(Challenges::Table)
                    .col(Challenges::EmployerId)
                    .col(Challenges::EndsAt)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        // A retried create finds the first result by (creator, key).
        manager
            .create_index(
                Index::create()
                    .name("challenges_idempotency")
                    .table(Challenges::Table)
                    .col(Challenges::CreatedBy)
                    .col(Challenges::IdempotencyKey)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(Challenges::Table).to_owned()).await
    }
}
