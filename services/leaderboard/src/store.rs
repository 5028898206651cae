//! The SQL of `board:` boards (tables `lb_*`, see the migration): definitions, score facts,
//! periods open and closed, the standings archived when a period closes, voids, privacy and
//! employer settings. Every statement is parameterised and runs on SQLite and PostgreSQL
//! alike (`$n` placeholders, rewritten to `?n` for SQLite).
//!
//! Facts are their own outbox: each is stored unapplied, and the service marks it applied once
//! its Redis board has it ([`LeaderboardStore::unapplied`], [`LeaderboardStore::mark_applied`]).
//!
//! A fact and the close of its period never cross: on PostgreSQL [`LeaderboardStore::insert_fact`]
//! holds the board's advisory lock shared and [`LeaderboardStore::close_period`] exclusive, so a
//! close waits for the inserts in flight and the inserts after it find the period closed; on
//! SQLite both are `BEGIN IMMEDIATE` transactions, which writers take one at a time.

use std::collections::HashSet;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, QueryResult,
    SqliteTransactionMode, Statement, TransactionOptions, TransactionTrait, Value,
};
use uuid::Uuid;

/// Values per list statement (`IN (…)`), well under SQLite's 32,766 parameters.
const IDS_PER_STATEMENT: usize = 1000;
/// Standings per insert statement (5 parameters each).
const STANDINGS_PER_INSERT: usize = 500;

const FACT_COLUMNS: &str =
    "fact_id, board, period, member, event_id, score, subscore, occurred_us, applied";
const BOARD_COLUMNS: &str = "board, title, operator, sort_order, subscore_order, rank_style, \
     reset_kind, reset_cron, time_zone, employer_id, members_submit, created_by, created_us";
const PERIOD_COLUMNS: &str = "board, period, start_us, end_us, closed_us, members";
const STANDING_COLUMNS: &str = "position, rank, member, score, subscore";

/// The facts of a board that no void covers (`f` is `lb_facts`).
const NOT_VOIDED: &str = "NOT EXISTS (SELECT 1 FROM lb_voids v \
       WHERE v.board = f.board AND v.target = 'm:' || f.member) \
     AND NOT EXISTS (SELECT 1 FROM lb_voids v \
       WHERE v.board = f.board AND v.target = 'e:' || f.fact_id)";

/// A board's definition as stored (`lb_boards`). The enums are stored by name: operator
/// `sum`|`best`|`set`, orders `desc`|`asc`, rank style `competition`|`dense`, reset kind as
/// [`crate::period::ResetKind::as_str`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoardRow {
    /// `board:<id>`.
    pub board: String,
    /// A title for people.
    pub title: String,
    /// `sum`, `best` or `set`.
    pub operator: String,
    /// `desc` or `asc`.
    pub sort_order: String,
    /// `desc` or `asc`; `None` when ties are not broken by a subscore.
    pub subscore_order: Option<String>,
    /// `competition` or `dense`.
    pub rank_style: String,
    /// `never`, `daily`, `weekly`, `monthly` or `cron`.
    pub reset_kind: String,
    /// The cron expression of a `cron` reset, else empty.
    pub reset_cron: String,
    /// The schedule's IANA time zone.
    pub time_zone: String,
    /// Whose people may read the board; `None` for everyone.
    pub employer_id: Option<String>,
    /// Whether members may submit their own scores.
    pub members_submit: bool,
    /// Who defined it.
    pub created_by: String,
    /// When (stored to the microsecond).
    pub created_at: DateTime<Utc>,
}

/// A score fact to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewFact {
    /// The board.
    pub board: String,
    /// The period it counts in.
    pub period: String,
    /// The period's start (`None` for `all`), kept while the period is open.
    pub period_start: Option<DateTime<Utc>>,
    /// The period's end (`None` for `all`): when it is due to close.
    pub period_end: Option<DateTime<Utc>>,
    /// The member it scores for.
    pub member: String,
    /// The client's id of the fact, unique per board.
    pub event_id: String,
    /// The score.
    pub score: f64,
    /// The tie-break subscore.
    pub subscore: f64,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
}

/// A stored score fact.
#[derive(Debug, Clone, PartialEq)]
pub struct FactRow {
    /// The board.
    pub board: String,
    /// The period it counts in.
    pub period: String,
    /// The member it scores for.
    pub member: String,
    /// The client's id of the fact.
    pub event_id: String,
    /// The store's id of the fact, a UUIDv7 minted at insert (so ids sort by insert time).
    pub fact_id: String,
    /// The score.
    pub score: f64,
    /// The tie-break subscore.
    pub subscore: f64,
    /// When it happened (to the microsecond).
    pub occurred_at: DateTime<Utc>,
    /// Whether the service applied it to its Redis board.
    pub applied: bool,
}

/// What [`LeaderboardStore::insert_fact`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Inserted {
    /// Stored now.
    Created(FactRow),
    /// The board had a fact with this event id already (whatever its body): that fact.
    Existing(FactRow),
    /// The fact's period is closed; nothing was stored.
    PeriodClosed,
}

/// A closed, archived period (`lb_periods`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeriodRow {
    /// The board.
    pub board: String,
    /// The period's id.
    pub period: String,
    /// Its start; `None` for `all`.
    pub start: Option<DateTime<Utc>>,
    /// Its end; `None` for `all`.
    pub end: Option<DateTime<Utc>>,
    /// When it was closed.
    pub closed_at: DateTime<Utc>,
    /// Members in its standings.
    pub members: u64,
}

/// One row of a closed period's standings.
#[derive(Debug, Clone, PartialEq)]
pub struct StandingRow {
    /// 0-based position in board order; a period's positions are 0, 1, 2, …
    pub position: u64,
    /// The rank (ties share one).
    pub rank: u64,
    /// The member.
    pub member: String,
    /// The member's score.
    pub score: f64,
    /// The member's subscore.
    pub subscore: f64,
}

/// What a void covers: every fact of a member on the board, or one fact by its event id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum VoidTarget {
    /// Every fact of this member.
    Member(String),
    /// One fact, by the id its board counts it by: the fact id on `board:` boards (see
    /// [`FactRow::fact_id`]), the progress entry or quiz answer id on theirs.
    Event(String),
}

impl VoidTarget {
    /// As stored: `m:<member>` or `e:<event id>`.
    pub fn stored(&self) -> String {
        match self {
            Self::Member(m) => format!("m:{m}"),
            Self::Event(e) => format!("e:{e}"),
        }
    }

    /// The target a stored value names.
    pub fn parse(stored: &str) -> Option<Self> {
        if let Some(m) = stored.strip_prefix("m:") {
            Some(Self::Member(m.to_string()))
        } else {
            stored.strip_prefix("e:").map(|e| Self::Event(e.to_string()))
        }
    }
}

/// The leaderboard tables.
#[derive(Clone)]
pub struct LeaderboardStore {
    db: DatabaseConnection,
    backend: DbBackend,
    /// SQLite: this process's write transactions, one at a time (see `begin_write`).
    sqlite_writer: std::sync::Arc<tokio::sync::Mutex<()>>,
}

/// A write transaction and, on SQLite, this process's turn to write.
struct WriteTx {
    tx: DatabaseTransaction,
    _guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl std::ops::Deref for WriteTx {
    type Target = DatabaseTransaction;

    fn deref(&self) -> &DatabaseTransaction {
        &self.tx
    }
}

impl WriteTx {
    async fn commit(self) -> Result<(), sea_orm::DbErr> {
        self.tx.commit().await
    }
}

impl LeaderboardStore {
    /// The tables on `db` (migrated by the module's `migrate`).
    pub fn new(db: DatabaseConnection) -> Self {
        let backend = db.get_database_backend();
        Self { db, backend, sqlite_writer: std::sync::Arc::default() }
    }

    fn pg(&self) -> bool {
        self.backend == DbBackend::Postgres
    }

    fn stmt(&self, sql: &str, values: Vec<Value>) -> Statement {
        ewpm_kit::db::statement(self.backend, sql, values)
    }

    async fn all(
        &self,
        conn: &impl ConnectionTrait,
        sql: &str,
        values: Vec<Value>,
    ) -> Result<Vec<QueryResult>, sea_orm::DbErr> {
        conn.query_all_raw(self.stmt(sql, values)).await
    }

    async fn one(
        &self,
        conn: &impl ConnectionTrait,
        sql: &str,
        values: Vec<Value>,
    ) -> Result<Option<QueryResult>, sea_orm::DbErr> {
        conn.query_one_raw(self.stmt(sql, values)).await
    }

    async fn exec(
        &self,
        conn: &impl ConnectionTrait,
        sql: &str,
        values: Vec<Value>,
    ) -> Result<u64, sea_orm::DbErr> {
        Ok(conn.execute_raw(self.stmt(sql, values)).await?.rows_affected())
    }

    /// A transaction that writes: on SQLite it takes the write lock at `BEGIN` (a deferred
    /// transaction that read first could not write after another writer committed).
    /// On SQLite, this process's write transactions also queue on one in-process lock first:
    /// SQLite's own busy handler waits by sleeping (up to 100 ms a try), which made concurrent
    /// writers wait far longer than the writes take.
    async fn begin_write(&self) -> anyhow::Result<WriteTx> {
        let guard = match self.pg() {
            true => None,
            false => Some(self.sqlite_writer.clone().lock_owned().await),
        };
        let tx = self
            .db
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..TransactionOptions::default()
            })
            .await
            .context("begin a write transaction")?;
        Ok(WriteTx { tx, _guard: guard })
    }

    /// Locks the board's row for the rest of `tx` (`FOR SHARE` or `FOR UPDATE`, PostgreSQL
    /// only; SQLite's write transactions run one at a time). Fails for an unknown board.
    async fn lock_board(
        &self,
        tx: &DatabaseTransaction,
        board: &str,
        lock: &str,
    ) -> anyhow::Result<()> {
        // A transaction-scoped advisory lock keyed by the board: shared for inserts, exclusive
        // for a close. (Row locks did the same, but every concurrent `FOR SHARE` of one row
        // rewrites its header: submitters of one board queued on it.)
        let lock = match (self.pg(), lock) {
            (false, _) => "",
            (true, "FOR SHARE") => ", pg_advisory_xact_lock_shared(hashtextextended(board, 0))",
            (true, _) => ", pg_advisory_xact_lock(hashtextextended(board, 0))",
        };
        let sql = format!("SELECT board{lock} FROM lb_boards WHERE board = $1");
        if self.one(tx, &sql, vec![board.into()]).await.context("lock the board")?.is_none() {
            bail!("no board {board}");
        }
        Ok(())
    }

    /// Defines a board; when `row.board` exists, the stored row and `false` instead.
    pub async fn create_board(&self, row: &BoardRow) -> anyhow::Result<(BoardRow, bool)> {
        let sql = format!(
            "INSERT INTO lb_boards ({BOARD_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
             ON CONFLICT (board) DO NOTHING RETURNING board"
        );
        let values = vec![
            row.board.clone().into(),
            row.title.clone().into(),
            row.operator.clone().into(),
            row.sort_order.clone().into(),
            row.subscore_order.clone().into(),
            row.rank_style.clone().into(),
            row.reset_kind.clone().into(),
            row.reset_cron.clone().into(),
            row.time_zone.clone().into(),
            row.employer_id.clone().into(),
            row.members_submit.into(),
            row.created_by.clone().into(),
            us(row.created_at).into(),
        ];
        if self.one(&self.db, &sql, values).await.context("insert a board")?.is_some() {
            let created_at = at(us(row.created_at))?;
            return Ok((BoardRow { created_at, ..row.clone() }, true));
        }
        let existing = self.board(&row.board).await?.context("a conflicting board is stored")?;
        Ok((existing, false))
    }

    /// A board's definition.
    pub async fn board(&self, board: &str) -> anyhow::Result<Option<BoardRow>> {
        let sql = format!("SELECT {BOARD_COLUMNS} FROM lb_boards WHERE board = $1");
        self.one(&self.db, &sql, vec![board.into()])
            .await
            .context("read a board")?
            .as_ref()
            .map(board_row)
            .transpose()
    }

    /// Stores a fact, in one transaction: the board's stored fact of the same event id if
    /// there is one ([`Inserted::Existing`], whatever its body and even once its period has
    /// closed, so a retry gets the answer its first try got), else [`Inserted::PeriodClosed`]
    /// when the period is archived, else the new fact, unapplied, with its period's row in
    /// `lb_open_periods`. Fails for an unknown board.
    pub async fn insert_fact(&self, f: &NewFact) -> anyhow::Result<Inserted> {
        let tx = self.begin_write().await?;
        self.lock_board(&tx, &f.board, "FOR SHARE").await?;
        if let Some(existing) = self.fact_by_event_on(&*tx, &f.board, &f.event_id).await? {
            tx.commit().await.context("commit the fact lookup")?;
            return Ok(Inserted::Existing(existing));
        }
        if self.closed_on(&*tx, &f.board, &f.period).await? {
            return Ok(Inserted::PeriodClosed);
        }
        let id = Uuid::now_v7();
        // When the fact was stored: its id's time (no second clock reading).
        let created_us = id
            .get_timestamp()
            .and_then(|ts| {
                let (secs, nanos) = ts.to_unix();
                let secs = i64::try_from(secs).ok()?.checked_mul(1_000_000)?;
                Some(secs + i64::from(nanos / 1000))
            })
            .unwrap_or_default();
        let row = FactRow {
            board: f.board.clone(),
            period: f.period.clone(),
            member: f.member.clone(),
            event_id: f.event_id.clone(),
            fact_id: id.to_string(),
            score: f.score,
            subscore: f.subscore,
            occurred_at: at(us(f.occurred_at))?,
            applied: false,
        };
        let inserted = self
            .one(
                &*tx,
                "INSERT INTO lb_facts (fact_id, board, period, member, event_id, score, \
                   subscore, occurred_us, applied, created_us) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, FALSE, $9) \
                 ON CONFLICT (board, event_id) DO NOTHING RETURNING fact_id",
                vec![
                    row.fact_id.clone().into(),
                    row.board.clone().into(),
                    row.period.clone().into(),
                    row.member.clone().into(),
                    row.event_id.clone().into(),
                    row.score.into(),
                    row.subscore.into(),
                    us(row.occurred_at).into(),
                    created_us.into(),
                ],
            )
            .await
            .context("insert a fact")?;
        if inserted.is_none() {
            // A concurrent insert of the same event id committed first.
            let existing = self
                .fact_by_event_on(&*tx, &f.board, &f.event_id)
                .await?
                .context("a conflicting fact is stored")?;
            tx.commit().await.context("commit the fact lookup")?;
            return Ok(Inserted::Existing(existing));
        }
        self.exec(
            &*tx,
            "INSERT INTO lb_open_periods (board, period, start_us, end_us) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (board, period) DO NOTHING",
            vec![
                f.board.clone().into(),
                f.period.clone().into(),
                f.period_start.map(us).into(),
                f.period_end.map(us).into(),
            ],
        )
        .await
        .context("open the fact's period")?;
        tx.commit().await.context("commit the fact")?;
        Ok(Inserted::Created(row))
    }

    async fn closed_on(
        &self,
        conn: &impl ConnectionTrait,
        board: &str,
        period: &str,
    ) -> anyhow::Result<bool> {
        Ok(self
            .one(
                conn,
                "SELECT period FROM lb_periods WHERE board = $1 AND period = $2",
                vec![board.into(), period.into()],
            )
            .await
            .context("look up a closed period")?
            .is_some())
    }

    async fn fact_by_event_on(
        &self,
        conn: &impl ConnectionTrait,
        board: &str,
        event_id: &str,
    ) -> anyhow::Result<Option<FactRow>> {
        let sql = format!("SELECT {FACT_COLUMNS} FROM lb_facts WHERE board = $1 AND event_id = $2");
        self.one(conn, &sql, vec![board.into(), event_id.into()])
            .await
            .context("look up a fact by event id")?
            .as_ref()
            .map(fact_row)
            .transpose()
    }

    /// The board's fact with this event id (voided or not).
    pub async fn fact_by_event(
        &self,
        board: &str,
        event_id: &str,
    ) -> anyhow::Result<Option<FactRow>> {
        self.fact_by_event_on(&self.db, board, event_id).await
    }

    /// Facts not yet applied to Redis, oldest first, voided ones included (the outbox).
    pub async fn unapplied(&self, limit: u32) -> anyhow::Result<Vec<FactRow>> {
        let sql = format!(
            "SELECT {FACT_COLUMNS} FROM lb_facts WHERE applied = FALSE ORDER BY fact_id LIMIT $1"
        );
        self.all(&self.db, &sql, vec![i64::from(limit).into()])
            .await
            .context("read unapplied facts")?
            .iter()
            .map(fact_row)
            .collect()
    }

    /// Marks facts applied (unknown ids are ignored).
    pub async fn mark_applied(&self, fact_ids: &[String]) -> anyhow::Result<()> {
        for chunk in fact_ids.chunks(IDS_PER_STATEMENT) {
            let sql = format!(
                "UPDATE lb_facts SET applied = TRUE WHERE fact_id IN ({})",
                marks(1, chunk.len())
            );
            let values = chunk.iter().map(|id| id.clone().into()).collect();
            self.exec(&self.db, &sql, values).await.context("mark facts applied")?;
        }
        Ok(())
    }

    /// A page of the period's facts that no void covers, by fact id, after `after_fact_id`.
    pub async fn facts(
        &self,
        board: &str,
        period: &str,
        after_fact_id: Option<&str>,
        limit: u32,
    ) -> anyhow::Result<Vec<FactRow>> {
        let mut values: Vec<Value> = vec![board.into(), period.into()];
        let mut sql = format!(
            "SELECT {FACT_COLUMNS} FROM lb_facts f WHERE f.board = $1 AND f.period = $2 \
             AND {NOT_VOIDED}"
        );
        if let Some(after) = after_fact_id {
            values.push(after.into());
            sql.push_str(&format!(" AND f.fact_id > ${}", values.len()));
        }
        values.push(i64::from(limit).into());
        sql.push_str(&format!(" ORDER BY f.fact_id LIMIT ${}", values.len()));
        self.all(&self.db, &sql, values).await.context("read facts")?.iter().map(fact_row).collect()
    }

    /// Open periods that end at or before `cutoff`, soonest end first: `(board, period)`.
    pub async fn due_periods(
        &self,
        cutoff: DateTime<Utc>,
        limit: u32,
    ) -> anyhow::Result<Vec<(String, String)>> {
        self.all(
            &self.db,
            "SELECT board, period FROM lb_open_periods WHERE end_us <= $1 \
             ORDER BY end_us, board, period LIMIT $2",
            vec![us(cutoff).into(), i64::from(limit).into()],
        )
        .await
        .context("read due periods")?
        .iter()
        .map(|r| Ok((r.try_get("", "board")?, r.try_get("", "period")?)))
        .collect()
    }

    /// Closes a period, in one transaction, unless it is closed already: reads every fact of
    /// the period that no void covers (by fact id), archives what `rank` makes of them as its
    /// standings (positions must be 0, 1, 2, …) and the period's row (members: the standings'
    /// length, closed at `closed_at`), and deletes its open row. True when this call closed
    /// it; concurrent calls close it once. Fails for an unknown board.
    pub async fn close_period(
        &self,
        board: &str,
        period: &str,
        start: Option<DateTime<Utc>>,
        end: Option<DateTime<Utc>>,
        closed_at: DateTime<Utc>,
        rank: &(dyn Fn(Vec<FactRow>) -> Vec<StandingRow> + Send + Sync),
    ) -> anyhow::Result<bool> {
        let tx = self.begin_write().await?;
        self.lock_board(&tx, board, "FOR UPDATE").await?;
        if self.closed_on(&*tx, board, period).await? {
            return Ok(false);
        }
        let sql = format!(
            "SELECT {FACT_COLUMNS} FROM lb_facts f WHERE f.board = $1 AND f.period = $2 \
             AND {NOT_VOIDED} ORDER BY f.fact_id"
        );
        let facts = self
            .all(&*tx, &sql, vec![board.into(), period.into()])
            .await
            .context("read the period's facts")?
            .iter()
            .map(fact_row)
            .collect::<anyhow::Result<Vec<_>>>()?;
        let standings = rank(facts);
        if let Some((i, s)) = standings.iter().enumerate().find(|(i, s)| s.position != *i as u64) {
            bail!("standing {i} of {board} {period} has position {}", s.position);
        }
        self.exec(
            &*tx,
            &format!("INSERT INTO lb_periods ({PERIOD_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"),
            vec![
                board.into(),
                period.into(),
                start.map(us).into(),
                end.map(us).into(),
                us(closed_at).into(),
                count(standings.len()).into(),
            ],
        )
        .await
        .context("archive the period")?;
        for chunk in standings.chunks(STANDINGS_PER_INSERT) {
            let rows: Vec<String> = (0..chunk.len())
                .map(|i| {
                    let p = 3 + i * 5;
                    format!("($1, $2, ${}, ${}, ${}, ${}, ${})", p, p + 1, p + 2, p + 3, p + 4)
                })
                .collect();
            let mut values: Vec<Value> = Vec::with_capacity(2 + chunk.len() * 5);
            values.extend([board.into(), period.into()]);
            for s in chunk {
                values.extend([
                    count64(s.position).into(),
                    count64(s.rank).into(),
                    s.member.clone().into(),
                    s.score.into(),
                    s.subscore.into(),
                ]);
            }
            let sql = format!(
                "INSERT INTO lb_standings (board, period, {STANDING_COLUMNS}) VALUES {}",
                rows.join(", ")
            );
            self.exec(&*tx, &sql, values).await.context("archive standings")?;
        }
        self.exec(
            &*tx,
            "DELETE FROM lb_open_periods WHERE board = $1 AND period = $2",
            vec![board.into(), period.into()],
        )
        .await
        .context("delete the open period")?;
        tx.commit().await.context("commit the close")?;
        Ok(true)
    }

    /// A closed period's row.
    pub async fn period_row(&self, board: &str, period: &str) -> anyhow::Result<Option<PeriodRow>> {
        let sql =
            format!("SELECT {PERIOD_COLUMNS} FROM lb_periods WHERE board = $1 AND period = $2");
        self.one(&self.db, &sql, vec![board.into(), period.into()])
            .await
            .context("read a closed period")?
            .as_ref()
            .map(period_row)
            .transpose()
    }

    /// Closed periods of a board, newest start first, those starting strictly before
    /// `before_start` when given (`all` last, and only without `before_start`).
    pub async fn closed_periods(
        &self,
        board: &str,
        before_start: Option<DateTime<Utc>>,
        limit: u32,
    ) -> anyhow::Result<Vec<PeriodRow>> {
        let mut values: Vec<Value> = vec![board.into()];
        let mut sql = format!("SELECT {PERIOD_COLUMNS} FROM lb_periods WHERE board = $1");
        if let Some(before) = before_start {
            values.push(us(before).into());
            sql.push_str(" AND start_us < $2");
        }
        values.push(i64::from(limit).into());
        sql.push_str(&format!(
            " ORDER BY start_us IS NULL, start_us DESC, period DESC LIMIT ${}",
            values.len()
        ));
        self.all(&self.db, &sql, values)
            .await
            .context("read closed periods")?
            .iter()
            .map(period_row)
            .collect()
    }

    /// Standings of a closed period from position `offset` on, by position.
    pub async fn standings(
        &self,
        board: &str,
        period: &str,
        offset: u64,
        limit: u32,
    ) -> anyhow::Result<Vec<StandingRow>> {
        let sql = format!(
            "SELECT {STANDING_COLUMNS} FROM lb_standings \
             WHERE board = $1 AND period = $2 AND position >= $3 ORDER BY position LIMIT $4"
        );
        self.all(
            &self.db,
            &sql,
            vec![board.into(), period.into(), count64(offset).into(), i64::from(limit).into()],
        )
        .await
        .context("read standings")?
        .iter()
        .map(standing_row)
        .collect()
    }

    /// A member's standing in a closed period.
    pub async fn standing_of(
        &self,
        board: &str,
        period: &str,
        member: &str,
    ) -> anyhow::Result<Option<StandingRow>> {
        let sql = format!(
            "SELECT {STANDING_COLUMNS} FROM lb_standings \
             WHERE board = $1 AND period = $2 AND member = $3 ORDER BY position LIMIT 1"
        );
        self.one(&self.db, &sql, vec![board.into(), period.into(), member.into()])
            .await
            .context("read a standing")?
            .as_ref()
            .map(standing_row)
            .transpose()
    }

    /// The standings of those of `members` in a closed period, by position.
    pub async fn standings_of(
        &self,
        board: &str,
        period: &str,
        members: &[String],
    ) -> anyhow::Result<Vec<StandingRow>> {
        let mut out = Vec::new();
        for chunk in members.chunks(IDS_PER_STATEMENT) {
            let sql = format!(
                "SELECT {STANDING_COLUMNS} FROM lb_standings \
                 WHERE board = $1 AND period = $2 AND member IN ({})",
                marks(3, chunk.len())
            );
            let mut values: Vec<Value> = vec![board.into(), period.into()];
            values.extend(chunk.iter().map(|m| Value::from(m.clone())));
            for r in self.all(&self.db, &sql, values).await.context("read standings")? {
                out.push(standing_row(&r)?);
            }
        }
        out.sort_by_key(|s| s.position);
        out.dedup_by_key(|s| s.position);
        Ok(out)
    }

    /// The smallest position whose rank is `rank` or more (ranks grow with positions).
    pub async fn first_position_at_rank(
        &self,
        board: &str,
        period: &str,
        rank: u64,
    ) -> anyhow::Result<Option<u64>> {
        let row = self
            .one(
                &self.db,
                "SELECT position FROM lb_standings WHERE board = $1 AND period = $2 \
                 AND rank >= $3 ORDER BY rank, position LIMIT 1",
                vec![board.into(), period.into(), count64(rank).into()],
            )
            .await
            .context("find a rank")?;
        row.map(|r| Ok(unsigned(r.try_get("", "position")?))).transpose()
    }

    /// Voids `target` on the board; false if it was void already.
    pub async fn void(
        &self,
        board: &str,
        target: &VoidTarget,
        reason: &str,
        by: &str,
        at: DateTime<Utc>,
    ) -> anyhow::Result<bool> {
        Ok(self
            .one(
                &self.db,
                "INSERT INTO lb_voids (board, target, reason, voided_by, voided_us) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (board, target) DO NOTHING \
                 RETURNING target",
                vec![board.into(), target.stored().into(), reason.into(), by.into(), us(at).into()],
            )
            .await
            .context("insert a void")?
            .is_some())
    }

    /// The board's voids, oldest first.
    pub async fn voids(&self, board: &str) -> anyhow::Result<Vec<VoidTarget>> {
        self.all(
            &self.db,
            "SELECT target FROM lb_voids WHERE board = $1 ORDER BY voided_us, target",
            vec![board.into()],
        )
        .await
        .context("read voids")?
        .iter()
        .map(|r| {
            let stored: String = r.try_get("", "target")?;
            VoidTarget::parse(&stored).with_context(|| format!("stored void target {stored}"))
        })
        .collect()
    }

    /// The board's open periods (those with facts, not yet closed), by id.
    pub async fn open_periods_of(&self, board: &str) -> anyhow::Result<Vec<String>> {
        self.all(
            &self.db,
            "SELECT period FROM lb_open_periods WHERE board = $1 ORDER BY period",
            vec![board.into()],
        )
        .await
        .context("read open periods")?
        .iter()
        .map(|r| Ok(r.try_get("", "period")?))
        .collect()
    }

    /// Whether the member hides their name on boards (false when never set).
    pub async fn hidden(&self, member: &str) -> anyhow::Result<bool> {
        let row = self
            .one(
                &self.db,
                "SELECT hide_name FROM lb_privacy WHERE member = $1",
                vec![member.into()],
            )
            .await
            .context("read privacy")?;
        Ok(row.map(|r| r.try_get::<bool>("", "hide_name")).transpose()?.unwrap_or(false))
    }

    /// Sets whether the member hides their name.
    pub async fn set_hidden(
        &self,
        member: &str,
        hide: bool,
        at: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        self.exec(
            &self.db,
            "INSERT INTO lb_privacy (member, hide_name, updated_us) VALUES ($1, $2, $3) \
             ON CONFLICT (member) DO UPDATE SET hide_name = excluded.hide_name, \
               updated_us = excluded.updated_us",
            vec![member.into(), hide.into(), us(at).into()],
        )
        .await
        .context("write privacy")?;
        Ok(())
    }

    /// Those of `members` who hide their names.
    pub async fn hidden_among(&self, members: &[String]) -> anyhow::Result<HashSet<String>> {
        let mut out = HashSet::new();
        for chunk in members.chunks(IDS_PER_STATEMENT) {
            let sql = format!(
                "SELECT member FROM lb_privacy WHERE hide_name = TRUE AND member IN ({})",
                marks(1, chunk.len())
            );
            let values = chunk.iter().map(|m| m.clone().into()).collect();
            for r in self.all(&self.db, &sql, values).await.context("read privacy")? {
                out.insert(r.try_get("", "member")?);
            }
        }
        Ok(out)
    }

    /// The fewest members an employer's boards need before they are shown (0 when unset).
    pub async fn min_members(&self, employer_id: &str) -> anyhow::Result<u32> {
        let row = self
            .one(
                &self.db,
                "SELECT min_members FROM lb_employer_settings WHERE employer_id = $1",
                vec![employer_id.into()],
            )
            .await
            .context("read employer settings")?;
        Ok(match row {
            Some(r) => u32::try_from(r.try_get::<i64>("", "min_members")?).unwrap_or(u32::MAX),
            None => 0,
        })
    }

    /// Sets an employer's minimum members.
    pub async fn set_min_members(
        &self,
        employer_id: &str,
        n: u32,
        at: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        self.exec(
            &self.db,
            "INSERT INTO lb_employer_settings (employer_id, min_members, updated_us) \
             VALUES ($1, $2, $3) ON CONFLICT (employer_id) DO UPDATE SET \
               min_members = excluded.min_members, updated_us = excluded.updated_us",
            vec![employer_id.into(), i64::from(n).into(), us(at).into()],
        )
        .await
        .context("write employer settings")?;
        Ok(())
    }
}

/// `$from, $from+1, …` for `n` values.
fn marks(from: usize, n: usize) -> String {
    (from..from + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

fn us(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn at(us: i64) -> anyhow::Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(us).with_context(|| format!("time {us} µs out of range"))
}

fn at_opt(us: Option<i64>) -> anyhow::Result<Option<DateTime<Utc>>> {
    us.map(at).transpose()
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn count64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn unsigned(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn board_row(r: &QueryResult) -> anyhow::Result<BoardRow> {
    Ok(BoardRow {
        board: r.try_get("", "board")?,
        title: r.try_get("", "title")?,
        operator: r.try_get("", "operator")?,
        sort_order: r.try_get("", "sort_order")?,
        subscore_order: r.try_get("", "subscore_order")?,
        rank_style: r.try_get("", "rank_style")?,
        reset_kind: r.try_get("", "reset_kind")?,
        reset_cron: r.try_get("", "reset_cron")?,
        time_zone: r.try_get("", "time_zone")?,
        employer_id: r.try_get("", "employer_id")?,
        members_submit: r.try_get("", "members_submit")?,
        created_by: r.try_get("", "created_by")?,
        created_at: at(r.try_get("", "created_us")?)?,
    })
}

fn fact_row(r: &QueryResult) -> anyhow::Result<FactRow> {
    Ok(FactRow {
        board: r.try_get("", "board")?,
        period: r.try_get("", "period")?,
        member: r.try_get("", "member")?,
        event_id: r.try_get("", "event_id")?,
        fact_id: r.try_get("", "fact_id")?,
        score: r.try_get("", "score")?,
        subscore: r.try_get("", "subscore")?,
        occurred_at: at(r.try_get("", "occurred_us")?)?,
        applied: r.try_get("", "applied")?,
    })
}

fn period_row(r: &QueryResult) -> anyhow::Result<PeriodRow> {
    Ok(PeriodRow {
        board: r.try_get("", "board")?,
        period: r.try_get("", "period")?,
        start: at_opt(r.try_get("", "start_us")?)?,
        end: at_opt(r.try_get("", "end_us")?)?,
        closed_at: at(r.try_get("", "closed_us")?)?,
        members: unsigned(r.try_get("", "members")?),
    })
}

fn standing_row(r: &QueryResult) -> anyhow::Result<StandingRow> {
    Ok(StandingRow {
        position: unsigned(r.try_get("", "position")?),
        rank: unsigned(r.try_get("", "rank")?),
        member: r.try_get("", "member")?,
        score: r.try_get("", "score")?,
        subscore: r.try_get("", "subscore")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn void_targets_are_stored_with_their_kind() {
        for target in [
            VoidTarget::Member("alice".into()),
            VoidTarget::Event("e:1".into()),
            VoidTarget::Member(String::new()),
        ] {
            assert_eq!(VoidTarget::parse(&target.stored()), Some(target));
        }
        assert_eq!(VoidTarget::stored(&VoidTarget::Event("x".into())), "e:x");
        assert_eq!(VoidTarget::parse("x:1"), None);
    }

    #[test]
    fn list_placeholders_number_on() {
        assert_eq!(marks(3, 3), "$3, $4, $5");
        assert_eq!(marks(1, 0), "");
    }
}
