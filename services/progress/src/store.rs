//! The `progress_entries` and `activity_log` tables: SeaORM entities and queries. Works on SQLite and PostgreSQL.

use anyhow::Context;
use chrono::Utc;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, DatabaseConnection, EntityTrait, FromQueryResult,
    QueryFilter, QueryOrder, QuerySelect, TransactionTrait, sea_query::OnConflict,
};
use uuid::Uuid;

use crate::domain::{Entry, LoggedActivity};

/// SeaORM entity of `progress_entries`.
pub mod progress_entries {
    use sea_orm::entity::prelude::*;

    /// One row.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "progress_entries")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub challenge_id: Uuid,
        pub user_id: String,
        pub employer_id: Option<String>,
        pub value: f64,
        pub occurred_at: DateTimeUtc,
        pub accepted_at: DateTimeUtc,
        pub written_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// SeaORM entity of `activity_log`.
pub mod activity_log {
    use sea_orm::entity::prelude::*;

    /// One logged activity.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "activity_log")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub kind: String,
        pub user_id: String,
        pub employer_id: Option<String>,
        pub value: Option<f64>,
        pub note: String,
        pub occurred_at: DateTimeUtc,
        pub accepted_at: DateTimeUtc,
        pub written_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

use progress_entries::{Column, Entity};

/// One entry's contribution to a total.
#[derive(Debug, Clone, PartialEq, FromQueryResult)]
pub struct EntryRow {
    /// The user.
    pub user_id: String,
    /// The entry.
    pub id: Uuid,
    /// Its value.
    pub value: f64,
}

/// A user's total of one challenge.
#[derive(Debug, Clone, PartialEq, FromQueryResult)]
pub struct TotalRow {
    /// The user.
    pub user_id: String,
    /// Sum of values.
    pub total: f64,
    /// Number of entries.
    pub entries: i64,
}

/// Count and sum over every entry (for checks and tests).
#[derive(Debug, Clone, PartialEq, FromQueryResult)]
pub struct Summary {
    /// Number of entries.
    pub entries: i64,
    /// Sum of values.
    pub total: Option<f64>,
}

/// The progress service's store.
#[derive(Debug, Clone)]
pub struct ProgressStore {
    db: DatabaseConnection,
}

impl ProgressStore {
    /// The store over `db` (migrated).
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    /// Writes a batch of entries and logged activities in one transaction; rows already
    /// written are skipped. Returns how many rows were new.
    pub async fn write_batch(
        &self,
        entries: &[&Entry],
        activities: &[&LoggedActivity],
    ) -> anyhow::Result<u64> {
        if entries.is_empty() && activities.is_empty() {
            return Ok(0);
        }
        let now = Utc::now();
        let tx = self.db.begin().await.context("begin progress batch")?;
        let mut inserted = 0;
        if !entries.is_empty() {
            let rows = entries.iter().map(|e| progress_entries::ActiveModel {
                id: Set(e.id),
                challenge_id: Set(e.challenge_id),
                user_id: Set(e.user_id.clone()),
                employer_id: Set(e.employer_id.clone()),
                value: Set(e.value),
                occurred_at: Set(e.occurred_at),
                accepted_at: Set(e.accepted_at),
                written_at: Set(now),
            });
            inserted += Entity::insert_many(rows)
                .on_conflict(OnConflict::column(Column::Id).do_nothing().to_owned())
                .exec_without_returning(&tx)
                .await
                .context("insert progress batch")?;
        }
        if !activities.is_empty() {
            let rows = activities.iter().map(|a| activity_log::ActiveModel {
                id: Set(a.id),
                kind: Set(a.kind.as_str().to_string()),
                user_id: Set(a.user_id.clone()),
                employer_id: Set(a.employer_id.clone()),
                value: Set(a.value),
                note: Set(a.note.clone()),
                occurred_at: Set(a.occurred_at),
                accepted_at: Set(a.accepted_at),
                written_at: Set(now),
            });
            inserted += activity_log::Entity::insert_many(rows)
                .on_conflict(OnConflict::column(activity_log::Column::Id).do_nothing().to_owned())
                .exec_without_returning(&tx)
                .await
                .context("insert activity batch")?;
        }
        tx.commit().await.context("commit progress batch")?;
        Ok(inserted)
    }

    /// A user's logged activities, newest first, at most `limit` (for checks and tests).
    pub async fn activities_of(
        &self,
        user_id: &str,
        limit: u64,
    ) -> anyhow::Result<Vec<activity_log::Model>> {
        activity_log::Entity::find()
            .filter(activity_log::Column::UserId.eq(user_id))
            .order_by_desc(activity_log::Column::OccurredAt)
            .limit(limit)
            .all(&self.db)
            .await
            .context("read activity log")
    }

    /// Entries of `challenge_id` by (user, id), after `after`, at most `limit`.
    pub async fn entries(
        &self,
        challenge_id: Uuid,
        after: Option<(String, Uuid)>,
        limit: u64,
    ) -> anyhow::Result<Vec<EntryRow>> {
        let mut query = Entity::find()
            .select_only()
            .column(Column::UserId)
            .column(Column::Id)
            .column(Column::Value)
            .filter(Column::ChallengeId.eq(challenge_id));
        if let Some((user, id)) = after {
            query = query.filter(
                Condition::any()
                    .add(Column::UserId.gt(user.clone()))
                    .add(Condition::all().add(Column::UserId.eq(user)).add(Column::Id.gt(id))),
            );
        }
        query
            .order_by_asc(Column::UserId)
            .order_by_asc(Column::Id)
            .limit(limit)
            .into_model::<EntryRow>()
            .all(&self.db)
            .await
            .context("read progress entries")
    }

    /// Totals of `challenge_id` by user, after user `after`, at most `limit`.
    pub async fn totals(
        &self,
        challenge_id: Uuid,
        after: Option<String>,
        limit: u64,
    ) -> anyhow::Result<Vec<TotalRow>> {
        let mut query = Entity::find()
            .select_only()
            .column(Column::UserId)
            .column_as(Column::Value.sum(), "total")
            .column_as(Column::Id.count(), "entries")
            .filter(Column::ChallengeId.eq(challenge_id));
        if let Some(user) = after {
            query = query.filter(Column::UserId.gt(user));
        }
        query
            .group_by(Column::UserId)
            .order_by_asc(Column::UserId)
            .limit(limit)
            .into_model::<TotalRow>()
            .all(&self.db)
            .await
            .context("read progress totals")
    }

    /// Count and sum of every entry.
    pub async fn summary(&self) -> anyhow::Result<Summary> {
        Entity::find()
            .select_only()
            .column_as(Column::Id.count(), "entries")
            .column_as(Column::Value.sum(), "total")
            .into_model::<Summary>()
            .one(&self.db)
            .await
            .context("summarize progress entries")?
            .context("an aggregate returns one row")
    }
}
