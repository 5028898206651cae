use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Incentives {
    Table,
    Id,
    Slug,
    Description,
    RuleKind,
    RuleDays,
    TriggerKinds,
    Active,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum EmployerIncentives {
    Table,
    Id,
    EmployerId,
    ProgramId,
    IncentiveId,
    Reward,
    TimeZone,
    StartsAt,
    EndsAt,
    RepeatPolicy,
    Period,
    Actions,
    Active,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Streaks {
    Table,
    EmployerIncentiveId,
    UserId,
    LastDay,
    Days,
    ConsumedThrough,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Awards {
    Table,
    Id,
    EmployerIncentiveId,
    UserId,
    EmployerId,
    ProgramId,
    IncentiveSlug,
    Reward,
    AwardDay,
    PeriodKey,
    ActivityId,
    AwardedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Incentives::Table)
                    .if_not_exists()
                    .col(uuid(Incentives::Id).primary_key())
                    .col(string_len_uniq(Incentives::Slug, 64))
                    .col(string_len(Incentives::Description, 500))
                    // `consecutive_days` (with `rule_days`) or `each_occurrence`.
                    .col(string_len(Incentives::RuleKind, 32))
                    .col(integer_null(Incentives::RuleDays))
                    // Activity kinds, comma-separated (`mood,symptom`).
                    .col(string_len(Incentives::TriggerKinds, 256))
                    .col(boolean(Incentives::Active))
                    .col(timestamp_with_time_zone(Incentives::CreatedAt))
                    .col(timestamp_with_time_zone(Incentives::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(EmployerIncentives::Table)
                    .if_not_exists()
                    .col(uuid(EmployerIncentives::Id).primary_key())
                    .col(string_len(EmployerIncentives::EmployerId, 64))
                    .col(string_len(EmployerIncentives::ProgramId, 64))
                    .col(uuid(EmployerIncentives::IncentiveId))
                    .col(string_len(EmployerIncentives::Reward, 200))
                    .col(string_len(EmployerIncentives::TimeZone, 64))
                    .col(timestamp_with_time_zone(EmployerIncentives::StartsAt))
                    .col(timestamp_with_time_zone_null(EmployerIncentives::EndsAt))
                    .col(string_len(EmployerIncentives::RepeatPolicy, 32))
                    .col(string_len_null(EmployerIncentives::Period, 16))
                    // Action kinds in order, comma-separated (`award,notify`).
                    .col(string_len(EmployerIncentives::Actions, 128))
                    .col(boolean(EmployerIncentives::Active))
                    .col(timestamp_with_time_zone(EmployerIncentives::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("employer_incentives_incentive")
                            .from(EmployerIncentives::Table, EmployerIncentives::IncentiveId)
                            .to(Incentives::Table, Incentives::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("employer_incentives_employer")
                    .table(EmployerIncentives::Table)
                    .col(EmployerIncentives::EmployerId)
                    .col(EmployerIncentives::Id)
                    .to_owned(),
            )
            .await?;
        // One streak per user and employer incentive: the latest counted day (days since
        // 1970-01-01 in the employer's time zone), a bit per day of the 64 days up to it, and
        // the last day an award consumed.
        manager
            .create_table(
                Table::create()
                    .table(Streaks::Table)
                    .if_not_exists()
                    .col(uuid(Streaks::EmployerIncentiveId))
                    .col(string_len(Streaks::UserId, 128))
                    .col(integer(Streaks::LastDay))
                    .col(big_integer(Streaks::Days))
                    .col(integer_null(Streaks::ConsumedThrough))
                    .col(timestamp_with_time_zone(Streaks::UpdatedAt))
                    .primary_key(
                        Index::create().col(Streaks::EmployerIncentiveId).col(Streaks::UserId),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Awards::Table)
                    .if_not_exists()
                    .col(uuid(Awards::Id).primary_key())
                    .col(uuid(Awards::EmployerIncentiveId))
                    .col(string_len(Awards::UserId, 128))
                    .col(string_len(Awards::EmployerId, 64))
                    .col(string_len(Awards::ProgramId, 64))
                    .col(string_len(Awards::IncentiveSlug, 64))
                    .col(string_len(Awards::Reward, 200))
                    .col(string_len(Awards::AwardDay, 10))
                    .col(string_len(Awards::PeriodKey, 16))
                    .col(uuid(Awards::ActivityId))
                    .col(timestamp_with_time_zone(Awards::AwardedAt))
                    .to_owned(),
            )
            .await?;
        // The exactly-once rule: one award per link, user and period, whatever processor
        // (or redelivery) records it.
        manager
            .create_index(
                Index::create()
                    .name("awards_once")
                    .table(Awards::Table)
                    .col(Awards::EmployerIncentiveId)
                    .col(Awards::UserId)
                    .col(Awards::PeriodKey)
                    .unique()
                    .to_owned(),
            )
            .await?;
        for (name, col) in
            [("awards_user", Awards::UserId), ("awards_employer", Awards::EmployerId)]
        {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(Awards::Table)
                        .col(col)
                        .col(Awards::Id)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Awards::Table.into_iden(),
            Streaks::Table.into_iden(),
            EmployerIncentives::Table.into_iden(),
            Incentives::Table.into_iden(),
        ] {
            manager.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}
