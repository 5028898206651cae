//! `match_events`: every accepted match event, once (the event id is the key; ids of client
//! events derive from their source and client id, so a re-sent event finds its row).
//!
//! Times are microseconds since the epoch (BIGINT), so both backends bucket them alike
//! (`occurred_us / 60000000` is the minute). `ingest_id` is the IngestEvents call whose write
//! stored the row: the persister counts a row for that call only (exactly once across
//! redeliveries). `latency_bucket` is the row's ingest latency histogram bucket, so a rebuild
//! of the counters groups by it rather than by every distinct latency.
//!
//! On SQLite the table keeps its rowid (rows append in arrival order; only the small key index
//! takes random inserts): as a `WITHOUT ROWID` table keyed by random client-derived ids, every
//! batch rewrote pages all over the file and wrote several KB of WAL per event.

use sea_orm::{ConnectionTrait, DbBackend};
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const POSTGRES: &str = "
CREATE TABLE IF NOT EXISTS match_events (
  event_id UUID PRIMARY KEY,
  client_event_id TEXT,
  match_id TEXT NOT NULL,
  event_type TEXT NOT NULL,
  team_id TEXT,
  player_id TEXT,
  metadata TEXT,
  occurred_us BIGINT NOT NULL,
  client_occurred_us BIGINT NOT NULL,
  received_us BIGINT NOT NULL,
  stored_us BIGINT NOT NULL,
  latency_bucket BIGINT NOT NULL,
  source TEXT NOT NULL,
  match_minute INTEGER,
  late SMALLINT NOT NULL,
  backfill SMALLINT NOT NULL,
  ingest_id UUID NOT NULL,
  fingerprint TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS match_events_by_match ON match_events (match_id, occurred_us, event_id);
";

const SQLITE: &str = "
CREATE TABLE IF NOT EXISTS match_events (
  event_id TEXT PRIMARY KEY,
  client_event_id TEXT,
  match_id TEXT NOT NULL,
  event_type TEXT NOT NULL,
  team_id TEXT,
  player_id TEXT,
  metadata TEXT,
  occurred_us INTEGER NOT NULL,
  client_occurred_us INTEGER NOT NULL,
  received_us INTEGER NOT NULL,
  stored_us INTEGER NOT NULL,
  latency_bucket INTEGER NOT NULL,
  source TEXT NOT NULL,
  match_minute INTEGER,
  late INTEGER NOT NULL,
  backfill INTEGER NOT NULL,
  ingest_id TEXT NOT NULL,
  fingerprint TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS match_events_by_match ON match_events (match_id, occurred_us, event_id);
";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let sql = match db.get_database_backend() {
            DbBackend::Postgres => POSTGRES,
            _ => SQLITE,
        };
        db.execute_unprepared(sql).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared("DROP TABLE IF EXISTS match_events").await?;
        Ok(())
    }
}
