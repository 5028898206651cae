//! The incentive service's tables: `incentives`, `employer_incentives`, `streaks`, `awards`
//! (SeaORM entities and queries; SQLite and PostgreSQL).

use std::collections::{HashMap, HashSet};

use anyhow::Context;
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr,
    EntityTrait, QueryFilter, QueryOrder, QuerySelect, SqlErr, Statement, sea_query::OnConflict,
};
use uuid::Uuid;

use crate::{
    domain::{
        Actions, ActiveWindow, Award, EmployerIncentive, Incentive, RepeatPolicy, Rule,
        TriggerKinds, Zone,
    },
    streak::Streak,
};

/// SeaORM entity of `incentives`.
pub mod incentives {
    use sea_orm::entity::prelude::*;

    /// One catalog incentive.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "incentives")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub slug: String,
        pub description: String,
        pub rule_kind: String,
        pub rule_days: Option<i32>,
        pub trigger_kinds: String,
        pub active: bool,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// SeaORM entity of `employer_incentives`.
pub mod employer_incentives {
    use sea_orm::entity::prelude::*;

    /// One link of a catalog incentive to an employer's program.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "employer_incentives")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub employer_id: String,
        pub program_id: String,
        pub incentive_id: Uuid,
        pub reward: String,
        pub time_zone: String,
        pub starts_at: DateTimeUtc,
        pub ends_at: Option<DateTimeUtc>,
        pub repeat_policy: String,
        pub period: Option<String>,
        pub actions: String,
        pub active: bool,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// SeaORM entity of `streaks`.
pub mod streaks {
    use sea_orm::entity::prelude::*;

    /// One user's streak for one employer incentive.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "streaks")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub employer_incentive_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: String,
        pub last_day: i32,
        pub days: i64,
        pub consumed_through: Option<i32>,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// SeaORM entity of `awards`.
pub mod awards {
    use sea_orm::entity::prelude::*;

    /// One recorded award.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "awards")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub employer_incentive_id: Uuid,
        pub user_id: String,
        pub employer_id: String,
        pub program_id: String,
        pub incentive_slug: String,
        pub reward: String,
        pub award_day: String,
        pub period_key: String,
        pub activity_id: Uuid,
        pub awarded_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Rows per multi-row statement: within SQLite's 32,766 bound values at 11 columns.
const SQLITE_ROWS: usize = 2_000;

/// A streak's key: employer incentive and user.
pub type StreakKey = (Uuid, String);

/// Whose awards to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AwardsOf {
    /// One user's, optionally only those under one employer.
    User {
        /// The user.
        user_id: String,
        /// Only this employer's awards.
        employer_id: Option<String>,
    },
    /// One employer's.
    Employer(String),
}

/// Whether `err` is a unique-constraint violation.
pub fn is_unique_violation(err: &DbErr) -> bool {
    matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}

/// The incentive service's store.
#[derive(Debug, Clone)]
pub struct IncentiveStore {
    db: DatabaseConnection,
}

impl IncentiveStore {
    /// The store over `db` (migrated).
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    /// The connection (the processor runs its transactions on it).
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Adds a catalog incentive; `Ok(false)` when the slug is taken.
    pub async fn insert_incentive(&self, i: &Incentive) -> anyhow::Result<bool> {
        let (rule_kind, rule_days) = i.rule.to_columns();
        let row = incentives::ActiveModel {
            id: Set(i.id),
            slug: Set(i.slug.clone()),
            description: Set(i.description.clone()),
            rule_kind: Set(rule_kind.to_string()),
            rule_days: Set(rule_days),
            trigger_kinds: Set(i.trigger_kinds.to_column()),
            active: Set(i.active),
            created_at: Set(i.created_at),
            updated_at: Set(i.updated_at),
        };
        match incentives::Entity::insert(row).exec_without_returning(&self.db).await {
            Ok(_) => Ok(true),
            Err(e) if is_unique_violation(&e) => Ok(false),
            Err(e) => Err(anyhow::Error::new(e).context("insert incentive")),
        }
    }

    /// Saves a changed catalog incentive (everything but id, slug and created_at).
    pub async fn update_incentive(&self, i: &Incentive) -> anyhow::Result<()> {
        let (rule_kind, rule_days) = i.rule.to_columns();
        incentives::Entity::update(incentives::ActiveModel {
            id: Set(i.id),
            description: Set(i.description.clone()),
            rule_kind: Set(rule_kind.to_string()),
            rule_days: Set(rule_days),
            trigger_kinds: Set(i.trigger_kinds.to_column()),
            active: Set(i.active),
            updated_at: Set(i.updated_at),
            ..Default::default()
        })
        .exec(&self.db)
        .await
        .context("update incentive")?;
        Ok(())
    }

    /// A catalog incentive by id.
    pub async fn incentive(&self, id: Uuid) -> anyhow::Result<Option<Incentive>> {
        let row =
            incentives::Entity::find_by_id(id).one(&self.db).await.context("read incentive")?;
        row.map(incentive_of).transpose()
    }

    /// A catalog incentive by slug.
    pub async fn incentive_by_slug(&self, slug: &str) -> anyhow::Result<Option<Incentive>> {
        let row = incentives::Entity::find()
            .filter(incentives::Column::Slug.eq(slug))
            .one(&self.db)
            .await
            .context("read incentive by slug")?;
        row.map(incentive_of).transpose()
    }

    /// The catalog by slug, after `after`, at most `limit`.
    pub async fn list_incentives(
        &self,
        after: Option<String>,
        limit: u64,
        include_inactive: bool,
    ) -> anyhow::Result<Vec<Incentive>> {
        let mut q = incentives::Entity::find();
        if let Some(after) = after {
            q = q.filter(incentives::Column::Slug.gt(after));
        }
        if !include_inactive {
            q = q.filter(incentives::Column::Active.eq(true));
        }
        let rows = q
            .order_by_asc(incentives::Column::Slug)
            .limit(limit)
            .all(&self.db)
            .await
            .context("list incentives")?;
        rows.into_iter().map(incentive_of).collect()
    }

    /// Adds an employer incentive.
    pub async fn insert_employer_incentive(&self, e: &EmployerIncentive) -> anyhow::Result<()> {
        let (policy, period) = e.repeat.to_columns();
        employer_incentives::Entity::insert(employer_incentives::ActiveModel {
            id: Set(e.id),
            employer_id: Set(e.employer_id.clone()),
            program_id: Set(e.program_id.clone()),
            incentive_id: Set(e.incentive.id),
            reward: Set(e.reward.clone()),
            time_zone: Set(e.zone.name().to_string()),
            starts_at: Set(e.window.starts_at),
            ends_at: Set(e.window.ends_at),
            repeat_policy: Set(policy.to_string()),
            period: Set(period.map(str::to_string)),
            actions: Set(e.actions.to_column()),
            active: Set(e.active),
            created_at: Set(e.created_at),
        })
        .exec_without_returning(&self.db)
        .await
        .context("insert employer incentive")?;
        Ok(())
    }

    /// Marks an employer incentive inactive.
    pub async fn deactivate_employer_incentive(&self, id: Uuid) -> anyhow::Result<()> {
        employer_incentives::Entity::update(employer_incentives::ActiveModel {
            id: Set(id),
            active: Set(false),
            ..Default::default()
        })
        .exec(&self.db)
        .await
        .context("deactivate employer incentive")?;
        Ok(())
    }

    /// Employer incentives by id (with their catalog incentives); unknown ids are left out.
    pub async fn employer_incentives(
        &self,
        ids: &[Uuid],
    ) -> anyhow::Result<Vec<EmployerIncentive>> {
        let rows = employer_incentives::Entity::find()
            .filter(employer_incentives::Column::Id.is_in(ids.iter().copied()))
            .all(&self.db)
            .await
            .context("read employer incentives")?;
        self.with_incentives(rows).await
    }

    /// An employer's incentives, newest first, before `before`, at most `limit`.
    pub async fn list_employer_incentives(
        &self,
        employer_id: &str,
        before: Option<Uuid>,
        limit: u64,
        include_inactive: bool,
    ) -> anyhow::Result<Vec<EmployerIncentive>> {
        let mut q = employer_incentives::Entity::find()
            .filter(employer_incentives::Column::EmployerId.eq(employer_id));
        if let Some(before) = before {
            q = q.filter(employer_incentives::Column::Id.lt(before));
        }
        if !include_inactive {
            q = q.filter(employer_incentives::Column::Active.eq(true));
        }
        let rows = q
            .order_by_desc(employer_incentives::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await
            .context("list employer incentives")?;
        self.with_incentives(rows).await
    }

    async fn with_incentives(
        &self,
        rows: Vec<employer_incentives::Model>,
    ) -> anyhow::Result<Vec<EmployerIncentive>> {
        let ids: Vec<Uuid> = rows.iter().map(|r| r.incentive_id).collect();
        let catalog: HashMap<Uuid, Incentive> = incentives::Entity::find()
            .filter(incentives::Column::Id.is_in(ids))
            .all(&self.db)
            .await
            .context("read incentives of links")?
            .into_iter()
            .map(|r| incentive_of(r).map(|i| (i.id, i)))
            .collect::<anyhow::Result<_>>()?;
        rows.into_iter()
            .map(|r| {
                let incentive = catalog
                    .get(&r.incentive_id)
                    .cloned()
                    .with_context(|| format!("incentive {} of link {}", r.incentive_id, r.id))?;
                employer_incentive_of(r, incentive)
            })
            .collect()
    }

    /// Locks the streaks of `keys` for the rest of `tx`, creating empty ones, and reads them.
    /// Keys are locked in sorted order, so concurrent processors cannot deadlock on them.
    pub async fn lock_streaks<C: ConnectionTrait>(
        tx: &C,
        keys: &[StreakKey],
        now: DateTime<Utc>,
    ) -> anyhow::Result<HashMap<StreakKey, Streak>> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let mut sorted = keys.to_vec();
        sorted.sort();
        sorted.dedup();
        if tx.get_database_backend() == DbBackend::Postgres {
            return lock_streaks_pg(tx, &sorted, now).await;
        }
        // SQLite: the first insert makes this transaction the one writer, so the rows read
        // below cannot change under it. Statements in chunks: SQLite binds at most 32,766
        // values.
        let mut rows = Vec::with_capacity(sorted.len());
        for chunk in sorted.chunks(SQLITE_ROWS) {
            let new = chunk.iter().map(|(ei, user)| streaks::ActiveModel {
                employer_incentive_id: Set(*ei),
                user_id: Set(user.clone()),
                last_day: Set(0),
                days: Set(0),
                consumed_through: Set(None),
                updated_at: Set(now),
            });
            streaks::Entity::insert_many(new)
                .on_conflict(
                    OnConflict::columns([
                        streaks::Column::EmployerIncentiveId,
                        streaks::Column::UserId,
                    ])
                    .do_nothing()
                    .to_owned(),
                )
                .exec_without_returning(tx)
                .await
                .context("create streaks")?;
            let eis: Vec<Uuid> = chunk.iter().map(|(e, _)| *e).collect();
            let users: Vec<String> = chunk.iter().map(|(_, u)| u.clone()).collect();
            rows.extend(
                streaks::Entity::find()
                    .filter(streaks::Column::EmployerIncentiveId.is_in(eis))
                    .filter(streaks::Column::UserId.is_in(users))
                    .all(tx)
                    .await
                    .context("read streaks")?,
            );
        }
        Ok(rows
            .into_iter()
            .map(|r| {
                let streak = Streak {
                    last_day: r.last_day,
                    days: r.days as u64,
                    consumed_through: r.consumed_through,
                };
                ((r.employer_incentive_id, r.user_id), streak)
            })
            .filter(|(k, _)| sorted.binary_search(k).is_ok())
            .collect())
    }

    /// Saves streaks (locked in `tx` by [`IncentiveStore::lock_streaks`]).
    pub async fn save_streaks<C: ConnectionTrait>(
        tx: &C,
        streaks: &[(StreakKey, Streak)],
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        if streaks.is_empty() {
            return Ok(());
        }
        if tx.get_database_backend() == DbBackend::Postgres {
            return save_streaks_pg(tx, streaks, now).await;
        }
        for chunk in streaks.chunks(SQLITE_ROWS) {
            let rows = chunk.iter().map(|((ei, user), s)| streaks::ActiveModel {
                employer_incentive_id: Set(*ei),
                user_id: Set(user.clone()),
                last_day: Set(s.last_day),
                days: Set(s.days as i64),
                consumed_through: Set(s.consumed_through),
                updated_at: Set(now),
            });
            streaks::Entity::insert_many(rows)
                .on_conflict(
                    OnConflict::columns([
                        streaks::Column::EmployerIncentiveId,
                        streaks::Column::UserId,
                    ])
                    .update_columns([
                        streaks::Column::LastDay,
                        streaks::Column::Days,
                        streaks::Column::ConsumedThrough,
                        streaks::Column::UpdatedAt,
                    ])
                    .to_owned(),
                )
                .exec_without_returning(tx)
                .await
                .context("save streaks")?;
        }
        Ok(())
    }

    /// Records `awards`, each unless the user has that link's award for its period already
    /// (within `awards` too: the first wins); the ids of those recorded now.
    pub async fn insert_awards<C: ConnectionTrait>(
        tx: &C,
        awards: &[Award],
    ) -> anyhow::Result<HashSet<Uuid>> {
        if awards.is_empty() {
            return Ok(HashSet::new());
        }
        let mut new = HashSet::new();
        // In chunks: SQLite binds at most 32,766 values (11 an award).
        for chunk in awards.chunks(SQLITE_ROWS) {
            let rows = chunk.iter().map(|award| awards::ActiveModel {
                id: Set(award.id),
                employer_incentive_id: Set(award.employer_incentive_id),
                user_id: Set(award.user_id.clone()),
                employer_id: Set(award.employer_id.clone()),
                program_id: Set(award.program_id.clone()),
                incentive_slug: Set(award.incentive_slug.clone()),
                reward: Set(award.reward.clone()),
                award_day: Set(award.award_day.to_string()),
                period_key: Set(award.period_key.clone()),
                activity_id: Set(award.activity_id),
                awarded_at: Set(award.awarded_at),
            });
            let inserted = awards::Entity::insert_many(rows)
                .on_conflict(
                    OnConflict::columns([
                        awards::Column::EmployerIncentiveId,
                        awards::Column::UserId,
                        awards::Column::PeriodKey,
                    ])
                    .do_nothing()
                    .to_owned(),
                )
                .exec_with_returning_keys(tx)
                .await;
            match inserted {
                Ok(ids) => new.extend(ids),
                // Every row conflicted: nothing new.
                Err(DbErr::RecordNotInserted) => {}
                Err(e) => return Err(anyhow::Error::new(e).context("insert awards")),
            }
        }
        Ok(new)
    }

    /// Awards, newest first, before `before`, at most `limit`.
    pub async fn list_awards(
        &self,
        of: &AwardsOf,
        before: Option<Uuid>,
        limit: u64,
    ) -> anyhow::Result<Vec<Award>> {
        let mut q = awards::Entity::find();
        q = match of {
            AwardsOf::User { user_id, employer_id } => {
                let q = q.filter(awards::Column::UserId.eq(user_id.as_str()));
                match employer_id {
                    Some(e) => q.filter(awards::Column::EmployerId.eq(e.as_str())),
                    None => q,
                }
            }
            AwardsOf::Employer(e) => q.filter(awards::Column::EmployerId.eq(e.as_str())),
        };
        if let Some(before) = before {
            q = q.filter(awards::Column::Id.lt(before));
        }
        let rows = q
            .order_by_desc(awards::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await
            .context("list awards")?;
        rows.into_iter().map(award_of).collect()
    }

    /// Every award (for checks, tests and the bench), oldest first.
    pub async fn all_awards(&self) -> anyhow::Result<Vec<Award>> {
        let rows = awards::Entity::find()
            .order_by_asc(awards::Column::Id)
            .all(&self.db)
            .await
            .context("read awards")?;
        rows.into_iter().map(award_of).collect()
    }
}

// PostgreSQL: the same statements over arrays (`UNNEST`), so their text does not depend on
// the batch and each is parsed and planned once per connection; with one bind parameter per
// value a 500-row batch spent most of its time being planned.

/// The day number that stands for "no day" in an array of nullable days.
const NO_DAY: i32 = i32::MIN;

async fn lock_streaks_pg<C: ConnectionTrait>(
    tx: &C,
    sorted: &[StreakKey],
    now: DateTime<Utc>,
) -> anyhow::Result<HashMap<StreakKey, Streak>> {
    let eis: Vec<Uuid> = sorted.iter().map(|(e, _)| *e).collect();
    let users: Vec<String> = sorted.iter().map(|(_, u)| u.clone()).collect();
    tx.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "INSERT INTO streaks (employer_incentive_id, user_id, last_day, days, consumed_through, updated_at) \
         SELECT k.e, k.u, 0, 0, NULL, $3 FROM UNNEST($1::uuid[], $2::text[]) AS k(e, u) \
         ON CONFLICT DO NOTHING",
        [eis.clone().into(), users.clone().into(), now.into()],
    ))
    .await
    .context("create streaks")?;
    let rows = tx
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT s.employer_incentive_id, s.user_id, s.last_day, s.days, s.consumed_through \
             FROM streaks s JOIN UNNEST($1::uuid[], $2::text[]) AS k(e, u) \
               ON s.employer_incentive_id = k.e AND s.user_id = k.u \
             ORDER BY s.employer_incentive_id, s.user_id FOR UPDATE OF s",
            [eis.into(), users.into()],
        ))
        .await
        .context("lock streaks")?;
    rows.into_iter()
        .map(|r| {
            let key = (r.try_get("", "employer_incentive_id")?, r.try_get("", "user_id")?);
            let days: i64 = r.try_get("", "days")?;
            let streak = Streak {
                last_day: r.try_get("", "last_day")?,
                days: days as u64,
                consumed_through: r.try_get("", "consumed_through")?,
            };
            Ok((key, streak))
        })
        .collect::<Result<_, DbErr>>()
        .context("read streaks")
}

async fn save_streaks_pg<C: ConnectionTrait>(
    tx: &C,
    streaks: &[(StreakKey, Streak)],
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    let eis: Vec<Uuid> = streaks.iter().map(|((e, _), _)| *e).collect();
    let users: Vec<String> = streaks.iter().map(|((_, u), _)| u.clone()).collect();
    let last: Vec<i32> = streaks.iter().map(|(_, s)| s.last_day).collect();
    let days: Vec<i64> = streaks.iter().map(|(_, s)| s.days as i64).collect();
    let consumed: Vec<i32> =
        streaks.iter().map(|(_, s)| s.consumed_through.unwrap_or(NO_DAY)).collect();
    tx.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "UPDATE streaks AS s SET last_day = v.l, days = v.d, \
           consumed_through = NULLIF(v.c, $6), updated_at = $7 \
         FROM UNNEST($1::uuid[], $2::text[], $3::int[], $4::bigint[], $5::int[]) AS v(e, u, l, d, c) \
         WHERE s.employer_incentive_id = v.e AND s.user_id = v.u",
        [
            eis.into(),
            users.into(),
            last.into(),
            days.into(),
            consumed.into(),
            NO_DAY.into(),
            now.into(),
        ],
    ))
    .await
    .context("save streaks")?;
    Ok(())
}

fn incentive_of(r: incentives::Model) -> anyhow::Result<Incentive> {
    Ok(Incentive {
        id: r.id,
        rule: Rule::from_columns(&r.rule_kind, r.rule_days)?,
        trigger_kinds: TriggerKinds::from_column(&r.trigger_kinds),
        slug: r.slug,
        description: r.description,
        active: r.active,
        created_at: r.created_at,
        updated_at: r.updated_at,
    })
}

fn employer_incentive_of(
    r: employer_incentives::Model,
    incentive: Incentive,
) -> anyhow::Result<EmployerIncentive> {
    Ok(EmployerIncentive {
        id: r.id,
        zone: Zone::parse(&r.time_zone)
            .map_err(|v| anyhow::anyhow!("stored time zone {:?}: {v}", r.time_zone))?,
        window: ActiveWindow { starts_at: r.starts_at, ends_at: r.ends_at },
        repeat: RepeatPolicy::from_columns(&r.repeat_policy, r.period.as_deref())?,
        actions: Actions::from_column(&r.actions),
        employer_id: r.employer_id,
        program_id: r.program_id,
        incentive,
        reward: r.reward,
        active: r.active,
        created_at: r.created_at,
    })
}

fn award_of(r: awards::Model) -> anyhow::Result<Award> {
    let award_day = r.award_day.parse().with_context(|| format!("stored day {}", r.award_day))?;
    Ok(Award {
        id: r.id,
        user_id: r.user_id,
        employer_id: r.employer_id,
        employer_incentive_id: r.employer_incentive_id,
        program_id: r.program_id,
        incentive_slug: r.incentive_slug,
        reward: r.reward,
        award_day,
        period_key: r.period_key,
        activity_id: r.activity_id,
        awarded_at: r.awarded_at,
    })
}
