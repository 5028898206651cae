//! How a board turns facts into ranked entries: the score operator, the orders, the rank
//! style. Pure; the score stores implement the same rules incrementally, and this module's
//! [`rank_all`] is the plain recomputation they are checked against (and what closes a
//! period from SQL).
//!
//! - **Operator**: `sum` adds every fact (score and subscore alike); `best` keeps the best
//!   single fact (by the board's order, then the subscore's; an equal fact keeps the one
//!   already there); `set` keeps the latest fact by its version (`occurred_at`, then the
//!   fact id).
//! - **Order**: the board's order on the score, then (when the board has one) the subscore's
//!   order, then member id descending. This order is total, so pages are stable.
//! - **Rank style**: `competition` (1, 2, 2, 4) or `dense` (1, 2, 2, 3). Two entries tie when
//!   their score and (on boards with a subscore) subscore are equal.

use std::{cmp::Ordering, collections::HashMap};

/// How facts of one member combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Operator {
    /// Every fact adds up.
    #[default]
    Sum,
    /// The best single fact.
    Best,
    /// The latest fact.
    Set,
}

/// Which values come first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Order {
    /// Highest first.
    #[default]
    Descending,
    /// Lowest first.
    Ascending,
}

/// How ties are ranked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RankStyle {
    /// 1, 2, 2, 4.
    #[default]
    Competition,
    /// 1, 2, 2, 3.
    Dense,
}

/// Everything about a board that decides its scores and ranks; fixed when the board is
/// defined. The default (sum, descending, no subscore, competition) is every challenge and
/// quiz board.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Shape {
    /// How facts combine.
    pub op: Operator,
    /// The order of scores.
    pub order: Order,
    /// The order of the tie-break subscore; `None` when the board has none.
    pub sub: Option<Order>,
    /// How ties are ranked.
    pub style: RankStyle,
}

impl Shape {
    /// Whether the store needs nothing beyond a member's score (a sum without a subscore):
    /// today's challenge and quiz boards.
    pub fn is_plain_sum(self) -> bool {
        self.op == Operator::Sum && self.sub.is_none()
    }

    /// `score` as it sorts, bigger first.
    pub fn key_score(self, score: f64) -> f64 {
        signed(self.order, score)
    }

    /// `subscore` as it sorts, bigger first (0 when the board has no subscore).
    pub fn key_sub(self, subscore: f64) -> f64 {
        self.sub.map_or(0.0, |o| signed(o, subscore))
    }

    /// Compares two (score, subscore) pairs: `Less` when `a` comes first.
    pub fn compare(self, a: (f64, f64), b: (f64, f64)) -> Ordering {
        self.key_score(b.0)
            .total_cmp(&self.key_score(a.0))
            .then_with(|| self.key_sub(b.1).total_cmp(&self.key_sub(a.1)))
    }

    /// Whether two (score, subscore) pairs tie.
    pub fn ties(self, a: (f64, f64), b: (f64, f64)) -> bool {
        self.compare(a, b) == Ordering::Equal
    }

    /// The member's record after `fact`, from `old` (`None`: no change).
    pub fn combine(self, old: Option<&Record>, fact: &Record) -> Option<Record> {
        let sub = |s: f64| if self.sub.is_some() { s } else { 0.0 };
        let Some(old) = old else {
            return Some(Record { sub: sub(fact.sub), ..fact.clone() });
        };
        match self.op {
            Operator::Sum => Some(Record {
                score: old.score + fact.score,
                sub: sub(old.sub + fact.sub),
                version: fact.version.clone(),
            }),
            Operator::Best => (self.compare((fact.score, fact.sub), (old.score, old.sub))
                == Ordering::Less)
                .then(|| Record { sub: sub(fact.sub), ..fact.clone() }),
            Operator::Set => {
                (fact.version > old.version).then(|| Record { sub: sub(fact.sub), ..fact.clone() })
            }
        }
    }
}

fn signed(order: Order, v: f64) -> f64 {
    // `-0.0` and `0.0` are one value on a board.
    let v = if v == 0.0 { 0.0 } else { v };
    match order {
        Order::Descending => v,
        Order::Ascending => -v,
    }
}

/// A member's standing value, or one fact of theirs.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Score.
    pub score: f64,
    /// Subscore (0 on boards without one).
    pub sub: f64,
    /// For `set`: which fact is later (`occurred_at` then fact id, see [`version`]).
    pub version: String,
}

/// The version of a fact for `set`: later facts have greater versions. `occurred_us` is
/// microseconds since the epoch (not negative), `fact_id` breaks ties.
pub fn version(occurred_us: i64, fact_id: &str) -> String {
    format!("{:016x}{fact_id}", occurred_us.max(0))
}

/// One ranked entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked {
    /// Rank in the board's style.
    pub rank: u64,
    /// 0-based position in board order.
    pub position: u64,
    /// Member id.
    pub member: String,
    /// Score.
    pub score: f64,
    /// Subscore.
    pub sub: f64,
}

/// Every member's record from `facts` (member, fact) in the order given.
pub fn records<'a>(
    shape: Shape,
    facts: impl IntoIterator<Item = (&'a str, &'a Record)>,
) -> HashMap<String, Record> {
    let mut out: HashMap<String, Record> = HashMap::new();
    for (member, fact) in facts {
        if let Some(new) = shape.combine(out.get(member), fact) {
            out.insert(member.to_string(), new);
        }
    }
    out
}

/// The whole board, ranked: the plain recomputation.
pub fn rank_all(shape: Shape, records: &HashMap<String, Record>) -> Vec<Ranked> {
    let mut rows: Vec<(&String, &Record)> = records.iter().collect();
    rows.sort_by(|(ma, a), (mb, b)| {
        shape.compare((a.score, a.sub), (b.score, b.sub)).then_with(|| mb.cmp(ma))
    });
    let mut out: Vec<Ranked> = Vec::with_capacity(rows.len());
    for (i, (member, r)) in rows.into_iter().enumerate() {
        let rank = match out.last() {
            Some(prev) if shape.ties((prev.score, prev.sub), (r.score, r.sub)) => prev.rank,
            Some(prev) => match shape.style {
                RankStyle::Competition => i as u64 + 1,
                RankStyle::Dense => prev.rank + 1,
            },
            None => 1,
        };
        out.push(Ranked {
            rank,
            position: i as u64,
            member: member.clone(),
            score: r.score,
            sub: if shape.sub.is_some() { r.sub } else { 0.0 },
        });
    }
    out
}

/// `ceil(100 * rank / total)`, at least 1: "top N %".
pub fn top_percent(rank: u64, total: u64) -> u32 {
    if total == 0 {
        return 100;
    }
    let p = (u128::from(rank) * 100).div_ceil(u128::from(total));
    u32::try_from(p.clamp(1, 100)).unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fact(score: f64, sub: f64, v: &str) -> Record {
        Record { score, sub, version: v.to_string() }
    }

    fn ranks(shape: Shape, facts: &[(&str, Record)]) -> Vec<(u64, String, f64, f64)> {
        let recs = records(shape, facts.iter().map(|(m, f)| (*m, f)));
        rank_all(shape, &recs).into_iter().map(|r| (r.rank, r.member, r.score, r.sub)).collect()
    }

    #[test]
    fn sums_rank_competition_style_with_member_descending_within_ties() {
        let got = ranks(
            Shape::default(),
            &[("a", fact(5.0, 0.0, "")), ("b", fact(7.0, 0.0, "")), ("a", fact(2.0, 0.0, ""))],
        );
        assert_eq!(got, vec![(1, "b".into(), 7.0, 0.0), (1, "a".into(), 7.0, 0.0)]);
        let got = ranks(
            Shape::default(),
            &[("a", fact(1.0, 0.0, "")), ("b", fact(1.0, 0.0, "")), ("c", fact(0.0, 0.0, ""))],
        );
        assert_eq!(got.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1, 1, 3]);
    }

    #[test]
    fn dense_ranks_follow_on_after_a_tie() {
        let shape = Shape { style: RankStyle::Dense, ..Shape::default() };
        let got = ranks(
            shape,
            &[("a", fact(1.0, 0.0, "")), ("b", fact(1.0, 0.0, "")), ("c", fact(0.0, 0.0, ""))],
        );
        assert_eq!(got.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1, 1, 2]);
    }

    #[test]
    fn best_keeps_the_best_fact_in_the_boards_order() {
        let asc = Shape { op: Operator::Best, order: Order::Ascending, ..Shape::default() };
        let got = ranks(
            asc,
            &[("a", fact(30.0, 0.0, "")), ("a", fact(25.0, 0.0, "")), ("a", fact(40.0, 0.0, ""))],
        );
        assert_eq!(got, vec![(1, "a".into(), 25.0, 0.0)]);
    }

    #[test]
    fn set_keeps_the_latest_fact_whatever_order_they_arrive_in() {
        let set = Shape { op: Operator::Set, ..Shape::default() };
        let late = fact(1.0, 0.0, &version(2_000, "x"));
        let early = fact(9.0, 0.0, &version(1_000, "y"));
        assert_eq!(ranks(set, &[("a", late.clone()), ("a", early.clone())])[0].2, 1.0);
        assert_eq!(ranks(set, &[("a", early), ("a", late)])[0].2, 1.0);
    }

    #[test]
    fn a_subscore_breaks_ties_in_its_own_order() {
        let shape = Shape { sub: Some(Order::Ascending), ..Shape::default() };
        let got = ranks(
            shape,
            &[("a", fact(10.0, 5.0, "")), ("b", fact(10.0, 3.0, "")), ("c", fact(10.0, 3.0, ""))],
        );
        assert_eq!(
            got.iter().map(|r| (r.0, r.1.as_str())).collect::<Vec<_>>(),
            vec![(1, "c"), (1, "b"), (3, "a")]
        );
    }

    #[test]
    fn top_percent_rounds_up() {
        assert_eq!(top_percent(1, 1000), 1);
        assert_eq!(top_percent(12, 100), 12);
        assert_eq!(top_percent(121, 1000), 13);
        assert_eq!(top_percent(5, 5), 100);
    }
}
