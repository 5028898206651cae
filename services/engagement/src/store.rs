//! `match_events`: the persister's batch insert, the ownership check that makes counting
//! exact, the aggregates a counter rebuild reads, and the event reads. PostgreSQL inserts a
//! batch as one `INSERT … SELECT FROM UNNEST(arrays)` statement; SQLite as multi-row inserts.

use std::collections::{BTreeMap, HashMap};

use anyhow::Context;
use sea_orm::{
    AccessMode, ConnectionTrait, DatabaseConnection, DbBackend, IsolationLevel, QueryResult,
    Statement, TransactionTrait, Value, sea_query::ArrayType,
};
use uuid::Uuid;

use crate::domain::{Counts, Event, MINUTE_US};

/// An event as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// The event.
    pub event: Event,
    /// When it was written, µs.
    pub stored_us: i64,
    /// Its ingest latency bucket.
    pub latency_bucket: i64,
}

/// Who wrote an existing row: its ingest call, when, and its latency bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// The ingest call whose write stored it.
    pub ingest_id: Uuid,
    /// When.
    pub stored_us: i64,
    /// Its latency bucket.
    pub latency_bucket: i64,
}

/// Rows per SQLite insert statement (18 parameters each, under SQLite's 32,766).
const SQLITE_ROWS: usize = 500;
/// Ids per lookup statement.
const IDS_PER_LOOKUP: usize = 1000;

const COLUMNS: &str = "event_id, client_event_id, match_id, event_type, team_id, player_id, \
     metadata, occurred_us, client_occurred_us, received_us, stored_us, latency_bucket, source, \
     match_minute, late, backfill, ingest_id, fingerprint";

/// The events table.
#[derive(Clone)]
pub struct EventStore {
    db: DatabaseConnection,
    backend: DbBackend,
}

fn text_array(values: impl Iterator<Item = Option<String>>) -> Value {
    Value::Array(ArrayType::String, Some(Box::new(values.map(Value::String).collect())))
}

fn bigint_array(values: impl Iterator<Item = i64>) -> Value {
    Value::Array(
        ArrayType::BigInt,
        Some(Box::new(values.map(|v| Value::BigInt(Some(v))).collect())),
    )
}

impl EventStore {
    /// The table on `db`.
    pub fn new(db: DatabaseConnection) -> Self {
        let backend = db.get_database_backend();
        Self { db, backend }
    }

    fn pg(&self) -> bool {
        self.backend == DbBackend::Postgres
    }

    fn stmt(&self, sql: &str, values: Vec<Value>) -> Statement {
        ewpm_kit::db::statement(self.backend, sql, values)
    }

    /// `event_id` as text in a select list.
    fn id(&self, column: &str) -> String {
        if self.pg() { format!("{column}::text") } else { column.to_string() }
    }

    /// Writes `rows`, skipping ids stored before; returns the ids this call stored.
    pub async fn insert(&self, rows: &[Stored]) -> anyhow::Result<Vec<Uuid>> {
        let mut inserted = Vec::with_capacity(rows.len());
        if rows.is_empty() {
            return Ok(inserted);
        }
        let results = if self.pg() {
            // Array binds carry no NULL elements: optional text travels as '' and the match
            // minute as -1, and NULLIF turns them back.
            let ev = |f: fn(&Stored) -> String| text_array(rows.iter().map(|r| Some(f(r))));
            let values = vec![
                ev(|r| r.event.event_id.to_string()),
                ev(|r| r.event.client_event_id.clone().unwrap_or_default()),
                ev(|r| r.event.match_id.clone()),
                ev(|r| r.event.event_type.clone()),
                ev(|r| r.event.team_id.clone().unwrap_or_default()),
                ev(|r| r.event.player_id.clone().unwrap_or_default()),
                ev(|r| r.event.metadata_json.clone().unwrap_or_default()),
                bigint_array(rows.iter().map(|r| r.event.occurred_us)),
                bigint_array(rows.iter().map(|r| r.event.client_occurred_us)),
                bigint_array(rows.iter().map(|r| r.event.received_us)),
                bigint_array(rows.iter().map(|r| r.stored_us)),
                bigint_array(rows.iter().map(|r| r.latency_bucket)),
                ev(|r| r.event.source.clone()),
                Value::Array(
                    ArrayType::Int,
                    Some(Box::new(
                        rows.iter()
                            .map(|r| Value::Int(Some(r.event.match_minute.unwrap_or(-1))))
                            .collect(),
                    )),
                ),
                Value::Array(
                    ArrayType::SmallInt,
                    Some(Box::new(
                        rows.iter()
                            .map(|r| Value::SmallInt(Some(i16::from(r.event.late))))
                            .collect(),
                    )),
                ),
                Value::Array(
                    ArrayType::SmallInt,
                    Some(Box::new(
                        rows.iter()
                            .map(|r| Value::SmallInt(Some(i16::from(r.event.backfill))))
                            .collect(),
                    )),
                ),
                ev(|r| r.event.ingest_id.to_string()),
                ev(|r| r.event.fingerprint.clone()),
            ];
            let sql = format!(
                "INSERT INTO match_events ({COLUMNS}) \
                 SELECT id, NULLIF(cid, ''), mid, typ, NULLIF(team, ''), NULLIF(player, ''), \
                   NULLIF(meta, ''), occ, cocc, rcv, sto, lat, src, NULLIF(mm, -1), late, bf, ing, fp \
                 FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], \
                   $6::text[], $7::text[], $8::int8[], $9::int8[], $10::int8[], $11::int8[], \
                   $12::int8[], $13::text[], $14::int4[], $15::int2[], $16::int2[], $17::uuid[], \
                   $18::text[]) \
                   AS t(id, cid, mid, typ, team, player, meta, occ, cocc, rcv, sto, lat, src, mm, \
                        late, bf, ing, fp) \
                 ON CONFLICT (event_id) DO NOTHING RETURNING event_id::text"
            );
            self.db.query_all_raw(self.stmt(&sql, values)).await.context("insert match events")?
        } else {
            // One transaction: a rebuild must never see part of an ingest call's rows.
            let tx = self.db.begin().await.context("begin the insert")?;
            let mut all = Vec::new();
            for chunk in rows.chunks(SQLITE_ROWS) {
                let marks = vec!["(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"; chunk.len()].join(",");
                let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * 18);
                for r in chunk {
                    let e = &r.event;
                    values.extend([
                        e.event_id.to_string().into(),
                        e.client_event_id.clone().into(),
                        e.match_id.clone().into(),
                        e.event_type.clone().into(),
                        e.team_id.clone().into(),
                        e.player_id.clone().into(),
                        e.metadata_json.clone().into(),
                        e.occurred_us.into(),
                        e.client_occurred_us.into(),
                        e.received_us.into(),
                        r.stored_us.into(),
                        r.latency_bucket.into(),
                        e.source.clone().into(),
                        e.match_minute.into(),
                        i32::from(e.late).into(),
                        i32::from(e.backfill).into(),
                        e.ingest_id.to_string().into(),
                        e.fingerprint.clone().into(),
                    ]);
                }
                let sql = format!(
                    "INSERT INTO match_events ({COLUMNS}) VALUES {marks} \
                     ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
                );
                all.extend(
                    tx.query_all_raw(Statement::from_sql_and_values(self.backend, sql, values))
                        .await
                        .context("insert match events")?,
                );
            }
            tx.commit().await.context("commit the insert")?;
            all
        };
        for r in results {
            let id: String = r.try_get("", "event_id")?;
            inserted.push(Uuid::parse_str(&id).context("stored event id")?);
        }
        Ok(inserted)
    }

    /// A lookup of `ids` (`event_id IN …`) selecting `select`: one statement per chunk.
    async fn by_ids(&self, select: &str, ids: &[Uuid]) -> anyhow::Result<Vec<QueryResult>> {
        let mut out = Vec::new();
        for chunk in ids.chunks(IDS_PER_LOOKUP) {
            let (sql, values) = if self.pg() {
                (
                    format!("SELECT {select} FROM match_events WHERE event_id = ANY($1::uuid[])"),
                    vec![text_array(chunk.iter().map(|id| Some(id.to_string())))],
                )
            } else {
                let marks = vec!["?"; chunk.len()].join(",");
                (
                    format!("SELECT {select} FROM match_events WHERE event_id IN ({marks})"),
                    chunk.iter().map(|id| Value::from(id.to_string())).collect(),
                )
            };
            out.extend(
                self.db
                    .query_all_raw(Statement::from_sql_and_values(self.backend, sql, values))
                    .await
                    .context("look up match events")?,
            );
        }
        Ok(out)
    }

    /// Who wrote each of `ids` that is stored.
    pub async fn owners(&self, ids: &[Uuid]) -> anyhow::Result<HashMap<Uuid, Owner>> {
        let select = format!(
            "{} AS event_id, {} AS ingest_id, stored_us, latency_bucket",
            self.id("event_id"),
            self.id("ingest_id")
        );
        let mut out = HashMap::new();
        for r in self.by_ids(&select, ids).await? {
            let id: String = r.try_get("", "event_id")?;
            let ingest: String = r.try_get("", "ingest_id")?;
            out.insert(
                Uuid::parse_str(&id)?,
                Owner {
                    ingest_id: Uuid::parse_str(&ingest)?,
                    stored_us: r.try_get("", "stored_us")?,
                    latency_bucket: r.try_get("", "latency_bucket")?,
                },
            );
        }
        Ok(out)
    }

    /// The body fingerprint of each of `ids` that is stored.
    pub async fn fingerprints(&self, ids: &[Uuid]) -> anyhow::Result<HashMap<Uuid, String>> {
        let select = format!("{} AS event_id, fingerprint", self.id("event_id"));
        let mut out = HashMap::new();
        for r in self.by_ids(&select, ids).await? {
            let id: String = r.try_get("", "event_id")?;
            out.insert(Uuid::parse_str(&id)?, r.try_get("", "fingerprint")?);
        }
        Ok(out)
    }

    /// A match's counts recomputed from its rows, and the ingest calls that stored rows of it
    /// since `recent_since_us` (the counters remember those as applied).
    pub async fn aggregate(
        &self,
        match_id: &str,
        recent_since_us: i64,
    ) -> anyhow::Result<(Counts, Vec<String>)> {
        // One snapshot for every aggregate: rows committed meanwhile are in none of them.
        let tx = if self.pg() {
            self.db
                .begin_with_config(Some(IsolationLevel::RepeatableRead), Some(AccessMode::ReadOnly))
                .await
        } else {
            self.db.begin().await
        }
        .context("begin the rebuild read")?;
        let m = || Value::from(match_id.to_string());
        let tx = &tx;
        let all = |sql: String, values: Vec<Value>| {
            let stmt = self.stmt(&sql, values);
            async move { tx.query_all_raw(stmt).await }
        };
        let mut c = Counts::default();
        for r in all(
            "SELECT event_type, COUNT(*) AS n FROM match_events WHERE match_id = $1 GROUP BY event_type"
                .into(),
            vec![m()],
        )
        .await
        .context("count by type")?
        {
            let n: i64 = r.try_get("", "n")?;
            c.total += n;
            c.by_type.insert(r.try_get("", "event_type")?, n);
        }
        if c.total == 0 {
            return Ok((c, Vec::new()));
        }
        for r in all(
            format!(
                "SELECT occurred_us / {MINUTE_US} AS minute, COUNT(*) AS n, CAST(SUM(late) AS BIGINT) AS late \
                 FROM match_events WHERE match_id = $1 GROUP BY occurred_us / {MINUTE_US}"
            ),
            vec![m()],
        )
        .await
        .context("count by minute")?
        {
            let minute: i64 = r.try_get("", "minute")?;
            c.minutes.insert(minute, r.try_get("", "n")?);
            let late: i64 = r.try_get("", "late")?;
            if late > 0 {
                c.late.insert(minute, late);
            }
        }
        for r in all(
            "SELECT match_minute, COUNT(*) AS n, MIN(occurred_us) AS first FROM match_events \
             WHERE match_id = $1 AND match_minute IS NOT NULL GROUP BY match_minute"
                .into(),
            vec![m()],
        )
        .await
        .context("count by match minute")?
        {
            let minute: i32 = r.try_get("", "match_minute")?;
            c.clock.insert(minute, r.try_get("", "n")?);
            c.clock_first.insert(minute, r.try_get("", "first")?);
        }
        let mut latency = BTreeMap::new();
        for r in all(
            "SELECT latency_bucket, COUNT(*) AS n FROM match_events WHERE match_id = $1 \
             GROUP BY latency_bucket"
                .into(),
            vec![m()],
        )
        .await
        .context("count by latency")?
        {
            latency.insert(r.try_get("", "latency_bucket")?, r.try_get("", "n")?);
        }
        c.latency = latency;
        if let Some(r) = all(
            "SELECT MAX(occurred_us) AS max_event FROM match_events WHERE match_id = $1".into(),
            vec![m()],
        )
        .await
        .context("newest event")?
        .first()
        {
            c.max_event_us = r.try_get("", "max_event")?;
        }
        if let Some(r) = all(
            "SELECT received_us, stored_us FROM match_events WHERE match_id = $1 \
             ORDER BY received_us DESC, stored_us ASC LIMIT 1"
                .into(),
            vec![m()],
        )
        .await
        .context("newest acceptance")?
        .first()
        {
            c.newest_received_us = r.try_get("", "received_us")?;
            c.newest_lag_us = r.try_get::<i64>("", "stored_us")? - c.newest_received_us;
        }
        let mut ingests = Vec::new();
        for r in all(
            format!(
                "SELECT DISTINCT {} AS ingest_id FROM match_events WHERE match_id = $1 AND stored_us >= $2",
                self.id("ingest_id")
            ),
            vec![m(), recent_since_us.into()],
        )
        .await
        .context("recent ingest calls")?
        {
            ingests.push(r.try_get("", "ingest_id")?);
        }
        Ok((c, ingests))
    }

    /// A match's events in event-time order after `after` (time, id), at most `limit`.
    pub async fn list(
        &self,
        match_id: &str,
        event_type: Option<&str>,
        after: Option<(i64, Uuid)>,
        limit: u32,
    ) -> anyhow::Result<Vec<Stored>> {
        let mut values: Vec<Value> = vec![match_id.to_string().into()];
        let mut sql = format!("SELECT {} FROM match_events WHERE match_id = $1", self.select());
        if let Some(t) = event_type {
            values.push(t.to_string().into());
            sql.push_str(&format!(" AND event_type = ${}", values.len()));
        }
        if let Some((at, id)) = after {
            values.push(at.into());
            let t = values.len();
            values.push(id.to_string().into());
            let i = values.len();
            let cast = if self.pg() { "::uuid" } else { "" };
            sql.push_str(&format!(
                " AND (occurred_us > ${t} OR (occurred_us = ${t} AND event_id > ${i}{cast}))"
            ));
        }
        values.push(i64::from(limit).into());
        sql.push_str(&format!(" ORDER BY occurred_us, event_id LIMIT ${}", values.len()));
        self.db
            .query_all_raw(self.stmt(&sql, values))
            .await
            .context("list match events")?
            .iter()
            .map(stored)
            .collect()
    }

    /// One event of a match.
    pub async fn get(&self, match_id: &str, event_id: Uuid) -> anyhow::Result<Option<Stored>> {
        let cast = if self.pg() { "::uuid" } else { "" };
        let sql = format!(
            "SELECT {} FROM match_events WHERE event_id = $1{cast} AND match_id = $2",
            self.select()
        );
        self.db
            .query_one_raw(
                self.stmt(&sql, vec![event_id.to_string().into(), match_id.to_string().into()]),
            )
            .await
            .context("get match event")?
            .as_ref()
            .map(stored)
            .transpose()
    }

    /// How many events of `match_id` are stored (tests and replay figures).
    pub async fn count(&self, match_id: &str) -> anyhow::Result<i64> {
        let r = self
            .db
            .query_one_raw(self.stmt(
                "SELECT COUNT(*) AS n FROM match_events WHERE match_id = $1",
                vec![match_id.to_string().into()],
            ))
            .await
            .context("count match events")?
            .context("a count has a row")?;
        Ok(r.try_get("", "n")?)
    }

    fn select(&self) -> String {
        COLUMNS
            .replace("event_id, client", &format!("{} AS event_id, client", self.id("event_id")))
            .replace("ingest_id,", &format!("{} AS ingest_id,", self.id("ingest_id")))
    }
}

fn stored(r: &QueryResult) -> anyhow::Result<Stored> {
    let id: String = r.try_get("", "event_id")?;
    let ingest: String = r.try_get("", "ingest_id")?;
    let flag = |column: &str| -> anyhow::Result<bool> {
        Ok(r.try_get::<i16>("", column).map(i32::from).or_else(|_| r.try_get::<i32>("", column))?
            != 0)
    };
    Ok(Stored {
        event: Event {
            event_id: Uuid::parse_str(&id)?,
            client_event_id: r.try_get("", "client_event_id")?,
            match_id: r.try_get("", "match_id")?,
            event_type: r.try_get("", "event_type")?,
            team_id: r.try_get("", "team_id")?,
            player_id: r.try_get("", "player_id")?,
            metadata_json: r.try_get("", "metadata")?,
            occurred_us: r.try_get("", "occurred_us")?,
            client_occurred_us: r.try_get("", "client_occurred_us")?,
            received_us: r.try_get("", "received_us")?,
            source: r.try_get("", "source")?,
            match_minute: r.try_get("", "match_minute")?,
            late: flag("late")?,
            backfill: flag("backfill")?,
            ingest_id: Uuid::parse_str(&ingest)?,
            fingerprint: r.try_get("", "fingerprint")?,
        },
        stored_us: r.try_get("", "stored_us")?,
        latency_bucket: r.try_get("", "latency_bucket")?,
    })
}
