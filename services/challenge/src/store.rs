//! The `challenges` table: SeaORM entity and queries. Works on SQLite and PostgreSQL alike.

use anyhow::Context;
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, DatabaseConnection, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, SqlErr,
};
use uuid::Uuid;

use crate::domain::{
    Challenge, ChallengeId, ChallengeName, Description, EmployerId, Goal, LateGrace, NewChallenge,
    Scope, State, Window,
};

/// SeaORM entity of `challenges`.
pub mod challenges {
    use sea_orm::entity::prelude::*;

    /// One row.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "challenges")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub name: String,
        pub description: String,
        pub starts_at: DateTimeUtc,
        pub ends_at: DateTimeUtc,
        pub goal_target: f64,
        pub goal_unit: String,
        pub employer_id: Option<String>,
        pub late_grace_secs: i32,
        pub created_by: String,
        pub created_at: DateTimeUtc,
        pub updated_by: String,
        pub updated_at: DateTimeUtc,
        pub idempotency_key: Option<String>,
        pub request_hash: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

use challenges::{Column, Entity};

/// A create request's idempotency key and a fingerprint of its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    /// The client's key.
    pub key: String,
    /// Fingerprint of the request body, to tell a retry from a different request.
    pub fingerprint: String,
}

/// What an insert did.
#[derive(Debug, Clone, PartialEq)]
pub enum Inserted {
    /// A new row.
    Created(Challenge),
    /// A retry: the row created first with this key and the same body.
    Replayed(Challenge),
    /// The key was used before for a different body.
    KeyReused,
}

/// Keyset cursor of [`ChallengeStore::list`]: the last id returned.
pub type ListCursor = Uuid;
/// Keyset cursor of [`ChallengeStore::list_active`]: the last (end, id) returned.
pub type ActiveCursor = (DateTime<Utc>, Uuid);

/// Queries over `challenges`.
#[derive(Debug, Clone)]
pub struct ChallengeStore {
    db: DatabaseConnection,
}

impl ChallengeStore {
    /// A store over `db` (already migrated).
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    /// Inserts a new challenge; with an idempotency key, a retry returns the first row.
    pub async fn insert(
        &self,
        id: ChallengeId,
        new: NewChallenge,
        creator: &str,
        now: DateTime<Utc>,
        idempotency: Option<Idempotency>,
    ) -> anyhow::Result<Inserted> {
        let now = crate::domain::micros(now);
        let NewChallenge { name, description, window, goal, employer, late_grace } = new;
        let row = challenges::ActiveModel {
            id: Set(id.0),
            name: Set(name.as_str().to_string()),
            description: Set(description.as_str().to_string()),
            starts_at: Set(window.start()),
            ends_at: Set(window.end()),
            goal_target: Set(goal.target()),
            goal_unit: Set(goal.unit().to_string()),
            employer_id: Set(employer.as_ref().map(|e| e.as_str().to_string())),
            late_grace_secs: Set(grace_column(late_grace)),
            created_by: Set(creator.to_string()),
            created_at: Set(now),
            updated_by: Set(creator.to_string()),
            updated_at: Set(now),
            idempotency_key: Set(idempotency.as_ref().map(|i| i.key.clone())),
            request_hash: Set(idempotency.as_ref().map(|i| i.fingerprint.clone())),
        };
        match Entity::insert(row).exec_with_returning(&self.db).await {
            Ok(model) => Ok(Inserted::Created(from_row(model)?)),
            Err(err) => match (err.sql_err(), idempotency) {
                (Some(SqlErr::UniqueConstraintViolation(_)), Some(idem)) => {
                    let first = Entity::find()
                        .filter(Column::CreatedBy.eq(creator))
                        .filter(Column::IdempotencyKey.eq(idem.key.as_str()))
                        .one(&self.db)
                        .await
                        .context("find challenge by idempotency key")?
                        .context("idempotency conflict without a row")?;
                    if first.request_hash.as_deref() == Some(idem.fingerprint.as_str()) {
                        Ok(Inserted::Replayed(from_row(first)?))
                    } else {
                        Ok(Inserted::KeyReused)
                    }
                }
                (_, _) => Err(anyhow::Error::new(err).context("insert challenge")),
            },
        }
    }

    /// One challenge by id.
    pub async fn get(&self, id: ChallengeId) -> anyhow::Result<Option<Challenge>> {
        let row = Entity::find_by_id(id.0).one(&self.db).await.context("get challenge")?;
        row.map(from_row).transpose()
    }

    /// Saves every mutable field of `challenge`.
    pub async fn update(&self, challenge: &Challenge) -> anyhow::Result<()> {
        let row = challenges::ActiveModel {
            id: Set(challenge.id.0),
            name: Set(challenge.name.as_str().to_string()),
            description: Set(challenge.description.as_str().to_string()),
            starts_at: Set(challenge.window.start()),
            ends_at: Set(challenge.window.end()),
            goal_target: Set(challenge.goal.target()),
            goal_unit: Set(challenge.goal.unit().to_string()),
            employer_id: Set(challenge.employer.as_ref().map(|e| e.as_str().to_string())),
            late_grace_secs: Set(grace_column(challenge.late_grace)),
            updated_by: Set(challenge.updated_by.clone()),
            updated_at: Set(challenge.updated_at),
            ..Default::default()
        };
        Entity::update(row).exec(&self.db).await.context("update challenge")?;
        Ok(())
    }

    /// Challenges in `scope` (and `state` at `now`, if given), by id, after `cursor`.
    pub async fn list(
        &self,
        scope: &Scope,
        state: Option<State>,
        now: DateTime<Utc>,
        cursor: Option<ListCursor>,
        limit: u32,
    ) -> anyhow::Result<Vec<Challenge>> {
        let mut query = Entity::find().filter(scope_condition(scope));
        if let Some(state) = state {
            query = query.filter(state_condition(state, now));
        }
        if let Some(after) = cursor {
            query = query.filter(Column::Id.gt(after));
        }
        let rows = query
            .order_by_asc(Column::Id)
            .limit(u64::from(limit))
            .all(&self.db)
            .await
            .context("list challenges")?;
        rows.into_iter().map(from_row).collect()
    }

    /// Challenges in `scope` active at `now`, soonest ending first, after `cursor`.
    pub async fn list_active(
        &self,
        scope: &Scope,
        now: DateTime<Utc>,
        cursor: Option<ActiveCursor>,
        limit: u32,
    ) -> anyhow::Result<Vec<Challenge>> {
        let mut query = Entity::find()
            .filter(scope_condition(scope))
            .filter(state_condition(State::Active, now));
        if let Some((end, id)) = cursor {
            query = query.filter(
                Condition::any()
                    .add(Column::EndsAt.gt(end))
                    .add(Condition::all().add(Column::EndsAt.eq(end)).add(Column::Id.gt(id))),
            );
        }
        let rows = query
            .order_by_asc(Column::EndsAt)
            .order_by_asc(Column::Id)
            .limit(u64::from(limit))
            .all(&self.db)
            .await
            .context("list active challenges")?;
        rows.into_iter().map(from_row).collect()
    }
}

/// The column value of a grace (at most 7 days, so it always fits).
fn grace_column(grace: LateGrace) -> i32 {
    i32::try_from(grace.seconds()).unwrap_or(i32::MAX)
}

fn scope_condition(scope: &Scope) -> Condition {
    match scope {
        Scope::All => Condition::all(),
        Scope::Employer(e) => Condition::all().add(Column::EmployerId.eq(e.as_str())),
        Scope::OpenAnd(None) => Condition::all().add(Column::EmployerId.is_null()),
        Scope::OpenAnd(Some(e)) => Condition::any()
            .add(Column::EmployerId.is_null())
            .add(Column::EmployerId.eq(e.as_str())),
    }
}

fn state_condition(state: State, now: DateTime<Utc>) -> Condition {
    match state {
        State::Upcoming => Condition::all().add(Column::StartsAt.gt(now)),
        State::Active => {
            Condition::all().add(Column::StartsAt.lte(now)).add(Column::EndsAt.gte(now))
        }
        State::Ended => Condition::all().add(Column::EndsAt.lt(now)),
    }
}

/// A row as a domain value; a row that no longer parses is a data error, not a client one.
fn from_row(row: challenges::Model) -> anyhow::Result<Challenge> {
    let challenges::Model {
        id,
        name,
        description,
        starts_at,
        ends_at,
        goal_target,
        goal_unit,
        employer_id,
        late_grace_secs,
        created_by,
        created_at,
        updated_by,
        updated_at,
        idempotency_key: _,
        request_hash: _,
    } = row;
    let bad = |what: &str| anyhow::anyhow!("stored challenge {id} has an invalid {what}");
    Ok(Challenge {
        id: ChallengeId(id),
        name: ChallengeName::parse(&name).map_err(|_| bad("name"))?,
        description: Description::parse(&description).map_err(|_| bad("description"))?,
        window: Window::parse(Some(starts_at), Some(ends_at)).map_err(|_| bad("window"))?,
        goal: Goal::stored(goal_target, &goal_unit).map_err(|_| bad("goal"))?,
        employer: employer_id.map(EmployerId::trusted),
        late_grace: LateGrace::parse(late_grace_secs, "late_grace_secs")
            .map_err(|_| bad("late grace"))?,
        created_by,
        created_at,
        updated_by,
        updated_at,
    })
}
