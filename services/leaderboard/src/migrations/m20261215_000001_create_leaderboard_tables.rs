//! The tables of `board:` boards: definitions, score facts (their own outbox to the Redis
//! boards), open and closed periods, the standings of closed periods, voids, and the privacy
//! and employer settings.
//!
//! One script for both backends: SQLite takes the PostgreSQL type names by affinity (BIGINT
//! integer, DOUBLE PRECISION real, BOOLEAN numeric). Times are microseconds since the epoch
//! (`*_us`); a period's start and end are NULL only for `all`, the period of a board that
//! never resets. Facts are keyed by their UUIDv7 id, minted in time order, so they append.

use sea_orm::ConnectionTrait;
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = "
CREATE TABLE IF NOT EXISTS lb_boards (
  board TEXT PRIMARY KEY,
  title TEXT NOT NULL,
  operator TEXT NOT NULL,
  sort_order TEXT NOT NULL,
  subscore_order TEXT,
  rank_style TEXT NOT NULL,
  reset_kind TEXT NOT NULL,
  reset_cron TEXT NOT NULL,
  time_zone TEXT NOT NULL,
  employer_id TEXT,
  members_submit BOOLEAN NOT NULL,
  created_by TEXT NOT NULL,
  created_us BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS lb_facts (
  fact_id TEXT PRIMARY KEY,
  board TEXT NOT NULL,
  period TEXT NOT NULL,
  member TEXT NOT NULL,
  event_id TEXT NOT NULL,
  score DOUBLE PRECISION NOT NULL,
  subscore DOUBLE PRECISION NOT NULL,
  occurred_us BIGINT NOT NULL,
  applied BOOLEAN NOT NULL,
  created_us BIGINT NOT NULL,
  UNIQUE (board, event_id)
);
CREATE INDEX IF NOT EXISTS lb_facts_by_period ON lb_facts (board, period, fact_id);
CREATE INDEX IF NOT EXISTS lb_facts_unapplied ON lb_facts (fact_id) WHERE applied = FALSE;
CREATE TABLE IF NOT EXISTS lb_open_periods (
  board TEXT NOT NULL,
  period TEXT NOT NULL,
  start_us BIGINT,
  end_us BIGINT,
  PRIMARY KEY (board, period)
);
CREATE INDEX IF NOT EXISTS lb_open_periods_by_end ON lb_open_periods (end_us, board, period);
CREATE TABLE IF NOT EXISTS lb_periods (
  board TEXT NOT NULL,
  period TEXT NOT NULL,
  start_us BIGINT,
  end_us BIGINT,
  closed_us BIGINT NOT NULL,
  members BIGINT NOT NULL,
  PRIMARY KEY (board, period)
);
CREATE INDEX IF NOT EXISTS lb_periods_by_start ON lb_periods (board, start_us);
CREATE TABLE IF NOT EXISTS lb_standings (
  board TEXT NOT NULL,
  period TEXT NOT NULL,
  position BIGINT NOT NULL,
  rank BIGINT NOT NULL,
  member TEXT NOT NULL,
  score DOUBLE PRECISION NOT NULL,
  subscore DOUBLE PRECISION NOT NULL,
  PRIMARY KEY (board, period, position)
);
CREATE INDEX IF NOT EXISTS lb_standings_by_member ON lb_standings (board, period, member);
CREATE INDEX IF NOT EXISTS lb_standings_by_rank ON lb_standings (board, period, rank, position);
CREATE TABLE IF NOT EXISTS lb_voids (
  board TEXT NOT NULL,
  target TEXT NOT NULL,
  reason TEXT NOT NULL,
  voided_by TEXT NOT NULL,
  voided_us BIGINT NOT NULL,
  PRIMARY KEY (board, target)
);
CREATE TABLE IF NOT EXISTS lb_privacy (
  member TEXT PRIMARY KEY,
  hide_name BOOLEAN NOT NULL,
  updated_us BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS lb_employer_settings (
  employer_id TEXT PRIMARY KEY,
  min_members BIGINT NOT NULL,
  updated_us BIGINT NOT NULL
);
";

const DOWN: &str = "
DROP TABLE IF EXISTS lb_employer_settings;
DROP TABLE IF EXISTS lb_privacy;
DROP TABLE IF EXISTS lb_voids;
DROP TABLE IF EXISTS lb_standings;
DROP TABLE IF EXISTS lb_periods;
DROP TABLE IF EXISTS lb_open_periods;
DROP TABLE IF EXISTS lb_facts;
DROP TABLE IF EXISTS lb_boards;
";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(UP).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(DOWN).await?;
        Ok(())
    }
}
