//! The `progress_entries`, `activity_log` and `progress_dead_letters` tables: SeaORM entities
//! and queries. Works on SQLite and PostgreSQL.

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

/// SeaORM entity of `progress_dead_letters`.
pub mod dead_letters {
    use sea_orm::entity::prelude::*;

    /// One queued item the writers could not write.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "progress_dead_letters")]
    pub struct Model {
        /// The item's id when it decoded (so setting it aside twice keeps one row), else minted.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        /// The queued payload, as it was on the queue.
        pub payload: Vec<u8>,
        /// Why it could not be written.
        pub error: String,
        /// When it was set aside.
        pub failed_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

use progress_entries::{Column, Entity};

/// Rows per insert statement: SQLite binds at most 32,766 values (8 a progress entry, 9 a
/// logged activity), PostgreSQL 65,535.
pub const INSERT_CHUNK_ROWS: usize = 2000;

/// A queued item set aside because it cannot be written.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// The item's id, or a minted one for a payload that did not decode.
    pub id: Uuid,
    /// The payload as queued.
    pub payload: Vec<u8>,
    /// Why it was set aside.
    pub error: String,
    /// When.
    pub failed_at: chrono::DateTime<Utc>,
}

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
        for entries in entries.chunks(INSERT_CHUNK_ROWS) {
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
        for activities in activities.chunks(INSERT_CHUNK_ROWS) {
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

    /// Sets `letters` aside in `progress_dead_letters` (one already there is kept as it is).
    pub async fn dead_letter(&self, letters: &[DeadLetter]) -> anyhow::Result<()> {
        for chunk in letters.chunks(INSERT_CHUNK_ROWS) {
            let rows = chunk.iter().map(|l| dead_letters::ActiveModel {
                id: Set(l.id),
                payload: Set(l.payload.clone()),
                error: Set(l.error.clone()),
                failed_at: Set(l.failed_at),
            });
            dead_letters::Entity::insert_many(rows)
                .on_conflict(OnConflict::column(dead_letters::Column::Id).do_nothing().to_owned())
                .exec_without_returning(&self.db)
                .await
                .context("insert dead letters")?;
        }
        Ok(())
    }

    /// Dead letters by id, after `after`, at most `limit`.
    pub async fn dead_letters(
        &self,
        after: Option<Uuid>,
        limit: u64,
    ) -> anyhow::Result<Vec<DeadLetter>> {
        let mut query = dead_letters::Entity::find();
        if let Some(after) = after {
            query = query.filter(dead_letters::Column::Id.gt(after));
        }
        let rows = query
            .order_by_asc(dead_letters::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await
            .context("read dead letters")?;
        Ok(rows
            .into_iter()
            .map(|r| DeadLetter {
                id: r.id,
                payload: r.payload,
                error: r.error,
                failed_at: r.failed_at,
            })
            .collect())
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
