//! The scan service's tables: `scan_events` (the feed), `parcel_states` (the projection),
//! `scan_checkpoints` and `scan_dead_letters`. Plain SQL built with sea-query, so the same
//! code runs on SQLite and PostgreSQL.

use std::collections::HashMap;

use anyhow::Context;
use chrono::{DateTime, Utc};
use sea_orm::{
    ConnectionTrait, DatabaseBackend, DatabaseConnection, QueryResult, Statement, TransactionTrait,
    sea_query::{Alias, Expr, ExprTrait, OnConflict, Order, Query},
};

use crate::domain::{ParcelDelta, Scan, ScanEvent, fold};

/// Rows per multi-row statement: keeps every statement under SQLite's 32,766 bound
/// parameters (11 columns a row).
const ROWS_PER_STATEMENT: usize = 2_000;

/// The columns of a feed event, in [`event_from_row`]'s order.
const EVENT_COLUMNS: [&str; 10] = [
    "event_id",
    "parcel_id",
    "type",
    "created_at",
    "status_code",
    "device_id",
    "device_transaction_id",
    "user_id",
    "carrier_id",
    "run_id",
];

/// The columns of a parcel state, in [`parcel_from_row`]'s order.
const PARCEL_COLUMNS: [&str; 9] = [
    "parcel_id",
    "last_event_id",
    "type",
    "status_code",
    "run_id",
    "created_at",
    "pickup_at",
    "delivery_at",
    "event_count",
];

/// A parcel's stored state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParcelState {
    /// Parcel id.
    pub parcel_id: i64,
    /// Latest applied event.
    pub last_event_id: i64,
    /// Its type.
    pub kind: String,
    /// Its status code.
    pub status_code: String,
    /// Its run id.
    pub run_id: String,
    /// Its scan time.
    pub created_at: DateTime<Utc>,
    /// First PICKUP time.
    pub pickup_at: Option<DateTime<Utc>>,
    /// First DELIVERY time.
    pub delivery_at: Option<DateTime<Utc>>,
    /// Events applied.
    pub event_count: i64,
}

/// An event the projector could not read, kept with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Its event id, if readable.
    pub event_id: Option<i64>,
    /// Why.
    pub reason: String,
    /// The raw element.
    pub payload: String,
}

/// One page for [`ScanStore::apply_page`].
#[derive(Debug, Clone, Copy)]
pub struct PageApply<'a> {
    /// The source's checkpoint key.
    pub source: &'a str,
    /// Who applies (recorded on the checkpoint).
    pub owner: &'a str,
    /// The checkpoint the page was read from.
    pub expected: i64,
    /// The checkpoint after the page (its highest event id).
    pub new_checkpoint: i64,
    /// The page's valid events, in event id order.
    pub events: &'a [ScanEvent],
    /// The page's malformed events.
    pub dead: &'a [DeadLetter],
    /// Now.
    pub now: DateTime<Utc>,
}

/// Why a page was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The checkpoint moved: another projector applied first. Nothing was written.
    #[error("checkpoint of {source_name} is no longer {expected}; another projector advanced it")]
    Fenced {
        /// The source.
        source_name: String,
        /// What this projector expected.
        expected: i64,
    },
    /// Anything else; nothing was written.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

fn t(name: &str) -> Alias {
    Alias::new(name)
}

/// Queries over the scan tables.
#[derive(Debug, Clone)]
pub struct ScanStore {
    db: DatabaseConnection,
}

impl ScanStore {
    /// A store over `db` (migrated).
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    /// The connection (for the projector's lease).
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    fn backend(&self) -> DatabaseBackend {
        self.db.get_database_backend()
    }

    /// Appends `scans` to the feed in one transaction and returns each one's event id. A scan
    /// whose (device, device transaction) is stored already gets its first id back and is not
    /// stored again. Ingests are serialized (an advisory lock on PostgreSQL; SQLite has one
    /// writer), so ids are committed in increasing order and a feed reader never sees id N+1
    /// before N.
    pub async fn append(&self, scans: &[Scan], now: DateTime<Utc>) -> anyhow::Result<Vec<i64>> {
        if scans.is_empty() {
            return Ok(Vec::new());
        }
        let txn = self.db.begin().await.context("begin ingest")?;
        if self.backend() == DatabaseBackend::Postgres {
            txn.execute_unprepared("SELECT pg_advisory_xact_lock(7165736361)")
                .await
                .context("lock feed")?;
        }
        let max = feed_head(&txn).await?;
        let mut ids = Vec::with_capacity(scans.len());
        let mut stored: HashMap<(i64, i64), i64> = HashMap::new();
        for (chunk_index, chunk) in scans.chunks(ROWS_PER_STATEMENT).enumerate() {
            let first_id = max + (chunk_index * ROWS_PER_STATEMENT) as i64 + 1;
            ids.extend((0..chunk.len() as i64).map(|i| first_id + i));
            let insert = insert_events(self.backend(), first_id, chunk, now);
            let rows = txn.query_all_raw(insert).await.context("insert scan events")?;
            if rows.len() < chunk.len() {
                // Some were retries: their ids are the ones stored first.
                let inserted: std::collections::HashSet<i64> =
                    rows.iter().filter_map(|r| r.try_get::<i64>("", "event_id").ok()).collect();
                let first = chunk_index * ROWS_PER_STATEMENT;
                for (i, s) in chunk.iter().enumerate() {
                    let id = ids[first + i];
                    if inserted.contains(&id) {
                        stored.insert((s.device_id, s.device_transaction_id), id);
                        continue;
                    }
                    let key = (s.device_id, s.device_transaction_id);
                    let existing = match stored.get(&key) {
                        Some(id) => *id,
                        None => txn
                            .query_one(
                                Query::select()
                                    .column(t("event_id"))
                                    .from(t("scan_events"))
                                    .and_where(Expr::col(t("device_id")).eq(s.device_id))
                                    .and_where(
                                        Expr::col(t("device_transaction_id"))
                                            .eq(s.device_transaction_id),
                                    ),
                            )
                            .await
                            .context("find retried scan")?
                            .and_then(|r| r.try_get::<i64>("", "event_id").ok())
                            .context("a skipped scan has no stored twin")?,
                    };
                    ids[first + i] = existing;
                }
            } else {
                for (i, s) in chunk.iter().enumerate() {
                    if s.device_transaction_id != 0 {
                        stored.insert(
                            (s.device_id, s.device_transaction_id),
                            ids[chunk_index * ROWS_PER_STATEMENT + i],
                        );
                    }
                }
            }
        }
        txn.commit().await.context("commit ingest")?;
        Ok(ids)
    }

    /// Feed page: events with id ≥ `from`, in id order, at most `limit`.
    pub async fn events_from(&self, from: i64, limit: u32) -> anyhow::Result<Vec<ScanEvent>> {
        let rows = self
            .db
            .query_all(
                Query::select()
                    .columns(EVENT_COLUMNS.map(t))
                    .from(t("scan_events"))
                    .and_where(Expr::col(t("event_id")).gte(from))
                    .order_by(t("event_id"), Order::Asc)
                    .limit(u64::from(limit)),
            )
            .await
            .context("read feed")?;
        rows.iter().map(event_from_row).collect()
    }

    /// The highest event id in the feed (0 when empty).
    pub async fn head(&self) -> anyhow::Result<i64> {
        feed_head(&self.db).await
    }

    /// One parcel's state.
    pub async fn parcel(&self, parcel_id: i64) -> anyhow::Result<Option<ParcelState>> {
        let row = self
            .db
            .query_one(parcel_query().and_where(Expr::col(t("parcel_id")).eq(parcel_id)))
            .await
            .context("read parcel")?;
        row.as_ref().map(parcel_from_row).transpose()
    }

    /// Parcel states by id after `after`, optionally only those whose latest type is `kind`.
    pub async fn parcels(
        &self,
        kind: Option<&str>,
        after: i64,
        limit: u32,
    ) -> anyhow::Result<Vec<ParcelState>> {
        let mut q = parcel_query();
        q.and_where(Expr::col(t("parcel_id")).gt(after));
        if let Some(kind) = kind {
            q.and_where(Expr::col(t("type")).eq(kind));
        }
        let rows = self
            .db
            .query_all(q.order_by(t("parcel_id"), Order::Asc).limit(u64::from(limit)))
            .await
            .context("list parcels")?;
        rows.iter().map(parcel_from_row).collect()
    }

    /// Every parcel state (tests and tools; small tables only).
    pub async fn all_parcels(&self) -> anyhow::Result<Vec<ParcelState>> {
        let rows = self.db.query_all(parcel_query().order_by(t("parcel_id"), Order::Asc)).await?;
        rows.iter().map(parcel_from_row).collect()
    }

    /// The checkpoint of `source`, creating it at 0.
    pub async fn checkpoint(&self, source: &str, now: DateTime<Utc>) -> anyhow::Result<i64> {
        self.db
            .execute(
                Query::insert()
                    .into_table(t("scan_checkpoints"))
                    .columns(["source", "last_event_id", "owner", "updated_at"].map(t))
                    .values_panic([source.into(), 0i64.into(), "".into(), now.into()])
                    .on_conflict(OnConflict::new().do_nothing().to_owned()),
            )
            .await
            .context("create checkpoint")?;
        let row = self
            .db
            .query_one(
                Query::select()
                    .columns(["last_event_id", "owner"].map(t))
                    .from(t("scan_checkpoints"))
                    .and_where(Expr::col(t("source")).eq(source)),
            )
            .await
            .context("read checkpoint")?
            .context("checkpoint row vanished")?;
        Ok(row.try_get::<i64>("", "last_event_id")?)
    }

    /// Who applied the last page of `source` (tests and status).
    pub async fn checkpoint_owner(&self, source: &str) -> anyhow::Result<Option<String>> {
        let row = self
            .db
            .query_one(
                Query::select()
                    .column(t("owner"))
                    .from(t("scan_checkpoints"))
                    .and_where(Expr::col(t("source")).eq(source)),
            )
            .await?;
        Ok(row.and_then(|r| r.try_get::<String>("", "owner").ok()))
    }

    /// Dead letters of `source`, oldest first.
    pub async fn dead_letters(&self, source: &str) -> anyhow::Result<Vec<DeadLetter>> {
        let rows = self
            .db
            .query_all(
                Query::select()
                    .columns(["event_id", "reason", "payload"].map(t))
                    .from(t("scan_dead_letters"))
                    .and_where(Expr::col(t("source")).eq(source))
                    .order_by(t("id"), Order::Asc),
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(DeadLetter {
                    event_id: r.try_get::<Option<i64>>("", "event_id")?,
                    reason: r.try_get("", "reason")?,
                    payload: r.try_get("", "payload")?,
                })
            })
            .collect()
    }

    /// Applies one page in one transaction: the parcel states, the dead letters, and the
    /// checkpoint moved from `expected` to `new_checkpoint` — or nothing at all. The
    /// checkpoint update is a compare-and-set taken first, so two projectors can never both
    /// apply the same page (the loser gets [`ApplyError::Fenced`]).
    pub async fn apply_page(&self, page: PageApply<'_>) -> Result<usize, ApplyError> {
        let PageApply { source, owner, expected, new_checkpoint, events, dead, now } = page;
        let txn = self.db.begin().await.context("begin apply")?;
        let moved = txn
            .execute(
                Query::update()
                    .table(t("scan_checkpoints"))
                    .values([
                        (t("last_event_id"), new_checkpoint.into()),
                        (t("owner"), owner.into()),
                        (t("updated_at"), now.into()),
                    ])
                    .and_where(Expr::col(t("source")).eq(source))
                    .and_where(Expr::col(t("last_event_id")).eq(expected)),
            )
            .await
            .context("advance checkpoint")?;
        if moved.rows_affected() != 1 {
            return Err(ApplyError::Fenced { source_name: source.to_string(), expected });
        }

        // Every applied event id is at most the checkpoint (it is the highest id of the pages
        // applied), so an event above `expected` is newer than any parcel's last event: the
        // fold needs no per-parcel lookup. The upsert's WHERE still guards each row.
        let newer: std::borrow::Cow<'_, [ScanEvent]> =
            if events.iter().all(|e| e.event_id > expected) {
                events.into()
            } else {
                events.iter().filter(|e| e.event_id > expected).cloned().collect::<Vec<_>>().into()
            };
        let deltas = fold(&newer, &HashMap::new());
        if txn.get_database_backend() == DatabaseBackend::Postgres {
            txn.execute_raw(upsert_unnest(&deltas, now)).await.context("upsert parcel states")?;
        } else {
            for chunk in deltas.chunks(ROWS_PER_STATEMENT) {
                txn.execute_raw(upsert(DatabaseBackend::Sqlite, chunk, now))
                    .await
                    .context("upsert parcel states")?;
            }
        }
        if !dead.is_empty() {
            let mut insert = Query::insert();
            insert
                .into_table(t("scan_dead_letters"))
                .columns(["source", "event_id", "reason", "payload", "created_at"].map(t));
            for d in dead {
                insert.values_panic([
                    source.into(),
                    d.event_id.into(),
                    d.reason.clone().into(),
                    d.payload.clone().into(),
                    now.into(),
                ]);
            }
            txn.execute(&insert).await.context("insert dead letters")?;
        }
        txn.commit().await.context("commit page")?;
        Ok(deltas.len())
    }
}

/// The highest event id in the feed (0 when empty), as `conn` sees it.
async fn feed_head(conn: &impl ConnectionTrait) -> anyhow::Result<i64> {
    Ok(conn
        .query_one(
            Query::select().expr_as(Expr::col(t("event_id")).max(), t("m")).from(t("scan_events")),
        )
        .await
        .context("read feed head")?
        .and_then(|r| r.try_get::<Option<i64>>("", "m").ok().flatten())
        .unwrap_or(0))
}

/// `INSERT … ON CONFLICT DO NOTHING RETURNING event_id` of `scans` with ids from `first_id`:
/// on PostgreSQL one `UNNEST` of arrays (prepared once, 11 parameters), elsewhere `VALUES`.
fn insert_events(
    backend: DatabaseBackend,
    first_id: i64,
    scans: &[Scan],
    now: DateTime<Utc>,
) -> Statement {
    if backend == DatabaseBackend::Postgres {
        let ids: Vec<i64> = (0..scans.len() as i64).map(|i| first_id + i).collect();
        let col = |f: fn(&Scan) -> sea_orm::Value| -> Vec<sea_orm::Value> {
            scans.iter().map(f).collect()
        };
        let array = |ty: sea_orm::sea_query::ArrayType, values: Vec<sea_orm::Value>| {
            sea_orm::Value::Array(ty, Some(Box::new(values)))
        };
        use sea_orm::sea_query::ArrayType as A;
        return Statement::from_sql_and_values(
            DatabaseBackend::Postgres,
            "INSERT INTO scan_events (event_id, parcel_id, type, created_at, status_code, device_id, \
             device_transaction_id, user_id, carrier_id, run_id, received_at) \
             SELECT u.*, $11 FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::timestamptz[], \
             $5::text[], $6::bigint[], $7::bigint[], $8::text[], $9::text[], $10::text[]) AS u \
             ON CONFLICT DO NOTHING RETURNING event_id",
            [
                ids.into(),
                array(A::BigInt, col(|s| s.parcel_id.into())),
                array(A::String, col(|s| s.kind.clone().into())),
                array(A::ChronoDateTimeUtc, col(|s| s.created_at.into())),
                array(A::String, col(|s| s.status_code.clone().into())),
                array(A::BigInt, col(|s| s.device_id.into())),
                array(A::BigInt, col(|s| s.device_transaction_id.into())),
                array(A::String, col(|s| s.user_id.clone().into())),
                array(A::String, col(|s| s.carrier_id.clone().into())),
                array(A::String, col(|s| s.run_id.clone().into())),
                now.into(),
            ],
        );
    }
    let mut insert = Query::insert();
    insert
        .into_table(t("scan_events"))
        .columns(EVENT_COLUMNS.iter().copied().chain(["received_at"]).map(t));
    for (i, s) in scans.iter().enumerate() {
        insert.values_panic([
            (first_id + i as i64).into(),
            s.parcel_id.into(),
            s.kind.clone().into(),
            s.created_at.into(),
            s.status_code.clone().into(),
            s.device_id.into(),
            s.device_transaction_id.into(),
            s.user_id.clone().into(),
            s.carrier_id.clone().into(),
            s.run_id.clone().into(),
            now.into(),
        ]);
    }
    insert.on_conflict(OnConflict::new().do_nothing().to_owned());
    insert.returning(Query::returning().columns(["event_id"].map(t)));
    backend.build(&insert)
}

/// The rules of a parcel state upsert, shared by both statement forms.
const UPSERT_RULES: &str = "ON CONFLICT (parcel_id) DO UPDATE SET \
    last_event_id = excluded.last_event_id, type = excluded.type, status_code = excluded.status_code, \
    run_id = excluded.run_id, created_at = excluded.created_at, updated_at = excluded.updated_at, \
    pickup_at = COALESCE(parcel_states.pickup_at, excluded.pickup_at), \
    delivery_at = COALESCE(parcel_states.delivery_at, excluded.delivery_at), \
    event_count = parcel_states.event_count + excluded.event_count \
    WHERE parcel_states.last_event_id < excluded.last_event_id";

/// PostgreSQL: the whole page as one `INSERT … SELECT FROM UNNEST(arrays)`, a statement that
/// is prepared once and binds 12 parameters instead of 10 a row.
fn upsert_unnest(deltas: &[ParcelDelta], now: DateTime<Utc>) -> Statement {
    let n = deltas.len();
    let (mut ids, mut last, mut kind, mut status, mut run) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut created, mut pickup, mut has_pickup, mut delivery, mut has_delivery, mut count) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for d in deltas {
        ids.push(d.parcel_id);
        last.push(d.last_event_id);
        kind.push(d.kind.clone());
        status.push(d.status_code.clone());
        run.push(d.run_id.clone());
        created.push(d.created_at);
        pickup.push(d.pickup_at.unwrap_or(d.created_at));
        has_pickup.push(d.pickup_at.is_some());
        delivery.push(d.delivery_at.unwrap_or(d.created_at));
        has_delivery.push(d.delivery_at.is_some());
        count.push(d.event_count);
    }
    let sql = format!(
        "INSERT INTO parcel_states (parcel_id, last_event_id, type, status_code, run_id, created_at, \
         pickup_at, delivery_at, event_count, updated_at) \
         SELECT u.parcel_id, u.last_event_id, u.type, u.status_code, u.run_id, u.created_at, \
         CASE WHEN u.has_pickup THEN u.pickup_at END, CASE WHEN u.has_delivery THEN u.delivery_at END, \
         u.event_count, $12 \
         FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::timestamptz[], \
         $7::timestamptz[], $8::bool[], $9::timestamptz[], $10::bool[], $11::bigint[]) \
         AS u(parcel_id, last_event_id, type, status_code, run_id, created_at, pickup_at, has_pickup, \
         delivery_at, has_delivery, event_count) {UPSERT_RULES}"
    );
    Statement::from_sql_and_values(
        DatabaseBackend::Postgres,
        sql,
        [
            ids.into(),
            last.into(),
            kind.into(),
            status.into(),
            run.into(),
            created.into(),
            pickup.into(),
            has_pickup.into(),
            delivery.into(),
            has_delivery.into(),
            count.into(),
            now.into(),
        ],
    )
}

/// SQLite: a multi-row `VALUES` upsert with the same rules.
fn upsert(backend: DatabaseBackend, deltas: &[ParcelDelta], now: DateTime<Utc>) -> Statement {
    let mut statement = backend.build(&upsert_values(deltas, now));
    statement.sql = format!("{} {UPSERT_RULES}", statement.sql);
    statement
}

fn upsert_values(
    deltas: &[ParcelDelta],
    now: DateTime<Utc>,
) -> sea_orm::sea_query::InsertStatement {
    let mut insert = Query::insert();
    insert
        .into_table(t("parcel_states"))
        .columns(PARCEL_COLUMNS.iter().copied().chain(["updated_at"]).map(t));
    for d in deltas {
        insert.values_panic([
            d.parcel_id.into(),
            d.last_event_id.into(),
            d.kind.clone().into(),
            d.status_code.clone().into(),
            d.run_id.clone().into(),
            d.created_at.into(),
            d.pickup_at.into(),
            d.delivery_at.into(),
            d.event_count.into(),
            now.into(),
        ]);
    }
    insert
}

fn parcel_query() -> sea_orm::sea_query::SelectStatement {
    Query::select().columns(PARCEL_COLUMNS.map(t)).from(t("parcel_states")).to_owned()
}

fn parcel_from_row(r: &QueryResult) -> anyhow::Result<ParcelState> {
    Ok(ParcelState {
        parcel_id: r.try_get("", "parcel_id")?,
        last_event_id: r.try_get("", "last_event_id")?,
        kind: r.try_get("", "type")?,
        status_code: r.try_get("", "status_code")?,
        run_id: r.try_get("", "run_id")?,
        created_at: r.try_get("", "created_at")?,
        pickup_at: r.try_get("", "pickup_at")?,
        delivery_at: r.try_get("", "delivery_at")?,
        event_count: r.try_get("", "event_count")?,
    })
}

fn event_from_row(r: &QueryResult) -> anyhow::Result<ScanEvent> {
    Ok(ScanEvent {
        event_id: r.try_get("", "event_id")?,
        scan: Scan {
            parcel_id: r.try_get("", "parcel_id")?,
            kind: r.try_get("", "type")?,
            created_at: r.try_get("", "created_at")?,
            status_code: r.try_get("", "status_code")?,
            device_id: r.try_get("", "device_id")?,
            device_transaction_id: r.try_get("", "device_transaction_id")?,
            user_id: r.try_get("", "user_id")?,
            carrier_id: r.try_get("", "carrier_id")?,
            run_id: r.try_get("", "run_id")?,
        },
    })
}
