//! Board definitions: what a board is (its [`Shape`], reset [`Schedule`], audience and who
//! may submit), and where each kind's definition comes from.
//!
//! - `challenge:<id>` and `quiz:<id>` boards are defined by their owners: a sum, highest
//!   first, competition ranks, never reset (their facts live in the progress and quiz
//!   services); their audience comes from those owners too (see [`crate::access`]).
//! - `board:<id>` boards are defined here (CreateBoard) and kept in `lb_boards`. A
//!   definition never changes once made, so it is cached without expiry (bounded);
//!   unknown names are remembered briefly.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use ewpm_kit::{cache::TtlCache, error::FieldViolation};

use crate::{
    access::Audience,
    domain::Board,
    period::{ALL, Period, ResetKind, Schedule},
    ranking::{Operator, Order, RankStyle, Shape},
    store::{BoardRow, LeaderboardStore},
};

/// The board kind defined by this service.
pub const OWN_KIND: &str = "board";

/// What a board is.
#[derive(Debug, Clone)]
pub struct Definition {
    /// The board.
    pub board: Board,
    /// A title for people.
    pub title: String,
    /// Operator, orders, rank style.
    pub shape: Shape,
    /// When it resets.
    pub schedule: Schedule,
    /// Whose people may read it (`None`: everyone); only for `board:` boards, other kinds
    /// take their audience from their owner.
    pub employer_id: Option<String>,
    /// Whether members may submit their own scores.
    pub members_submit: bool,
    /// When it was defined (`board:` boards).
    pub created_at: Option<DateTime<Utc>>,
}

impl Definition {
    /// The built-in definition of an owner's board (challenge, quiz): sum, highest first,
    /// competition ranks, never reset.
    pub fn owned(board: Board) -> Self {
        Self {
            title: String::new(),
            shape: Shape::default(),
            schedule: Schedule::new(ResetKind::Never, "", "").expect("the never schedule is valid"),
            employer_id: None,
            members_submit: false,
            created_at: None,
            board,
        }
    }

    /// Whether the board is defined here (and its facts kept here).
    pub fn is_own(&self) -> bool {
        self.board.kind() == OWN_KIND
    }

    /// Which service holds the facts.
    pub fn owner(&self) -> &str {
        if self.is_own() { "leaderboard" } else { self.board.kind() }
    }

    /// The period open at `now`.
    pub fn current(&self, now: DateTime<Utc>) -> Period {
        self.schedule.period_at(now)
    }

    /// The audience of an own board.
    pub fn audience(&self) -> Audience {
        match &self.employer_id {
            Some(e) => Audience::Employer(e.clone()),
            None => Audience::Everyone,
        }
    }

    /// The row that stores it.
    pub fn to_row(&self, created_by: &str, created_at: DateTime<Utc>) -> BoardRow {
        BoardRow {
            board: self.board.to_string(),
            title: self.title.clone(),
            operator: match self.shape.op {
                Operator::Sum => "sum",
                Operator::Best => "best",
                Operator::Set => "set",
            }
            .to_string(),
            sort_order: order_name(self.shape.order).to_string(),
            subscore_order: self.shape.sub.map(|o| order_name(o).to_string()),
            rank_style: match self.shape.style {
                RankStyle::Competition => "competition",
                RankStyle::Dense => "dense",
            }
            .to_string(),
            reset_kind: reset_name(self.schedule.kind()).to_string(),
            reset_cron: self.schedule.cron().to_string(),
            time_zone: self.schedule.time_zone().to_string(),
            employer_id: self.employer_id.clone(),
            members_submit: self.members_submit,
            created_by: created_by.to_string(),
            created_at,
        }
    }

    /// The definition a stored row holds.
    pub fn from_row(row: &BoardRow) -> anyhow::Result<Self> {
        let board = Board::parse(&row.board, "board")
            .map_err(|v| anyhow::anyhow!("stored board name {:?}: {}", row.board, v.description))?;
        let order = |s: &str| match s {
            "asc" => Ok(Order::Ascending),
            "desc" => Ok(Order::Descending),
            other => Err(anyhow::anyhow!("stored sort order {other:?}")),
        };
        let op = match row.operator.as_str() {
            "sum" => Operator::Sum,
            "best" => Operator::Best,
            "set" => Operator::Set,
            other => anyhow::bail!("stored operator {other:?}"),
        };
        let style = match row.rank_style.as_str() {
            "competition" => RankStyle::Competition,
            "dense" => RankStyle::Dense,
            other => anyhow::bail!("stored rank style {other:?}"),
        };
        let kind = match row.reset_kind.as_str() {
            "never" => ResetKind::Never,
            "daily" => ResetKind::Daily,
            "weekly" => ResetKind::Weekly,
            "monthly" => ResetKind::Monthly,
            "cron" => ResetKind::Cron,
            other => anyhow::bail!("stored reset kind {other:?}"),
        };
        let schedule = Schedule::new(kind, &row.reset_cron, &row.time_zone)
            .map_err(|v| anyhow::anyhow!("stored schedule of {}: {v:?}", row.board))?;
        Ok(Self {
            board,
            title: row.title.clone(),
            shape: Shape {
                op,
                order: order(&row.sort_order)?,
                sub: row.subscore_order.as_deref().map(order).transpose()?,
                style,
            },
            schedule,
            employer_id: row.employer_id.clone(),
            members_submit: row.members_submit,
            created_at: Some(row.created_at),
        })
    }

    /// Whether two definitions define the same board (a CreateBoard retry).
    pub fn same_as(&self, other: &Definition) -> bool {
        self.board == other.board
            && self.title == other.title
            && self.shape == other.shape
            && self.schedule.kind() == other.schedule.kind()
            && self.schedule.cron() == other.schedule.cron()
            && self.schedule.time_zone() == other.schedule.time_zone()
            && self.employer_id == other.employer_id
            && self.members_submit == other.members_submit
    }
}

fn order_name(o: Order) -> &'static str {
    match o {
        Order::Descending => "desc",
        Order::Ascending => "asc",
    }
}

fn reset_name(k: ResetKind) -> &'static str {
    match k {
        ResetKind::Never => "never",
        ResetKind::Daily => "daily",
        ResetKind::Weekly => "weekly",
        ResetKind::Monthly => "monthly",
        ResetKind::Cron => "cron",
    }
}

/// A board and one of its periods: what the score store holds as one board, named
/// `<board>` for the period `all` and `<board>@<period>` otherwise.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The board.
    pub board: Board,
    /// The period.
    pub period: Period,
    /// The board's shape.
    pub shape: Shape,
}

impl Target {
    /// The board's period `period`.
    pub fn new(def: &Definition, period: Period) -> Self {
        Self { board: def.board.clone(), period, shape: def.shape }
    }

    /// An owner's board (one period, the default shape).
    pub fn owned(board: Board) -> Self {
        Self {
            board,
            period: Period { id: ALL.to_string(), start: None, end: None },
            shape: Shape::default(),
        }
    }

    /// The score store's name for it.
    pub fn key(&self) -> String {
        store_key(self.board.as_str(), &self.period.id)
    }
}

/// The score store's name of `board`'s period `period`.
pub fn store_key(board: &str, period: &str) -> String {
    if period == ALL { board.to_string() } else { format!("{board}@{period}") }
}

/// A board id for CreateBoard: `[a-z0-9_-]{1,64}`.
pub fn parse_board_id(raw: &str) -> Result<Board, FieldViolation> {
    let ok = (1..=64).contains(&raw.len())
        && raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !ok {
        return Err(FieldViolation::new(
            "board_id",
            "must be 1-64 lowercase letters, digits, '_' or '-'",
        ));
    }
    Board::parse(&format!("{OWN_KIND}:{raw}"), "board_id")
}

/// Definitions of every kind, cached.
#[derive(Clone)]
pub struct Definitions {
    store: LeaderboardStore,
    known: Arc<TtlCache<String, Arc<Definition>>>,
    unknown: Arc<TtlCache<String, ()>>,
}

/// How long an unknown `board:` name is remembered as unknown.
const UNKNOWN_TTL: Duration = Duration::from_secs(2);
/// Definitions kept in memory at most.
const CAPACITY: usize = 10_000;

impl Definitions {
    /// Definitions of `board:` boards from `store`.
    pub fn new(store: LeaderboardStore) -> Self {
        Self {
            store,
            // Definitions never change: the TTL only bounds memory of boards not read lately.
            known: Arc::new(TtlCache::with_capacity(Duration::from_secs(3600), CAPACITY)),
            unknown: Arc::new(TtlCache::with_capacity(UNKNOWN_TTL, CAPACITY)),
        }
    }

    /// The store behind them.
    pub fn store(&self) -> &LeaderboardStore {
        &self.store
    }

    /// `board`'s definition; `None` for a `board:` name nobody defined. Other kinds get their
    /// owner's built-in definition (whether the board exists is the audience check's
    /// business).
    pub async fn get(&self, board: &Board) -> anyhow::Result<Option<Arc<Definition>>> {
        if board.kind() != OWN_KIND {
            return Ok(Some(Arc::new(Definition::owned(board.clone()))));
        }
        let key = board.to_string();
        if let Some(def) = self.known.get(&key) {
            return Ok(Some(def));
        }
        if self.unknown.get(&key).is_some() {
            return Ok(None);
        }
        match self.store.board(board.as_str()).await? {
            Some(row) => {
                let def = Arc::new(Definition::from_row(&row)?);
                self.known.put(key, def.clone());
                Ok(Some(def))
            }
            None => {
                self.unknown.put(key, ());
                Ok(None)
            }
        }
    }

    /// Stores a new definition; the stored one and whether this call made it.
    pub async fn create(
        &self,
        def: &Definition,
        created_by: &str,
        now: DateTime<Utc>,
    ) -> anyhow::Result<(Arc<Definition>, bool)> {
        let (row, created) = self.store.create_board(&def.to_row(created_by, now)).await?;
        let stored = Arc::new(Definition::from_row(&row)?);
        self.unknown.remove(&row.board);
        self.known.put(row.board.clone(), stored.clone());
        Ok((stored, created))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn board_ids_are_narrow() {
        assert_eq!(parse_board_id("weekly-steps_2").unwrap().as_str(), "board:weekly-steps_2");
        for bad in ["", "Weekly", "a b", "a:b", &"x".repeat(65), "a.b"] {
            assert_eq!(parse_board_id(bad).unwrap_err().field, "board_id", "{bad:?}");
        }
    }

    #[test]
    fn a_period_has_its_own_store_key() {
        assert_eq!(store_key("challenge:x", ALL), "challenge:x");
        assert_eq!(store_key("board:w", "2026-W49"), "board:w@2026-W49");
    }

    #[test]
    fn a_definition_survives_its_row() {
        let def = Definition {
            board: parse_board_id("golf").unwrap(),
            title: "Golf".into(),
            shape: Shape {
                op: Operator::Best,
                order: Order::Ascending,
                sub: Some(Order::Descending),
                style: RankStyle::Dense,
            },
            schedule: Schedule::new(ResetKind::Weekly, "", "Europe/Paris").unwrap(),
            employer_id: Some("acme".into()),
            members_submit: true,
            created_at: None,
        };
        let back = Definition::from_row(&def.to_row("u1", Utc::now())).unwrap();
        assert!(def.same_as(&back));
    }
}
