//! Property tests of ranking, on both score stores: random boards of every shape (operator,
//! order, subscore order, rank style) fed random facts (with ties, duplicates, any arrival
//! order, a rebuild racing live deltas, voids) read back equal to the plain recomputation of
//! [`ewpm_leaderboard::ranking`]: whole pages, pages at any offset, around-me windows and
//! team ranks.

use std::{collections::HashSet, sync::Arc, time::Duration};

use ewpm_leaderboard::{
    ranking::{Operator, Order, RankStyle, Record, Shape, rank_all, records, version},
    scores::{
        Applied, Delta, Entry, MemoryScores, OwnedEntry, RedisScores, ScoreStore, void_event,
        void_member,
    },
};
use ewpm_testkit::{key_prefix, servers};

const LEASE: Duration = Duration::from_secs(30);

/// A small deterministic generator (xorshift64*), so a failing case can be replayed by seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// Every shape a board can have.
fn shapes() -> Vec<Shape> {
    let mut out = Vec::new();
    for op in [Operator::Sum, Operator::Best, Operator::Set] {
        for order in [Order::Descending, Order::Ascending] {
            for sub in [None, Some(Order::Descending), Some(Order::Ascending)] {
                for style in [RankStyle::Competition, RankStyle::Dense] {
                    out.push(Shape { op, order, sub, style });
                }
            }
        }
    }
    out
}

#[derive(Debug, Clone)]
struct Fact {
    member: String,
    id: String,
    score: f64,
    sub: f64,
    version: String,
}

/// Facts with few distinct values, so ties are common; scores may be negative or zero.
fn facts(rng: &mut Rng, members: u64, n: usize) -> Vec<Fact> {
    (0..n)
        .map(|i| Fact {
            member: format!("m{:02}", rng.below(members)),
            id: format!("ev-{i}"),
            score: rng.pick(&[-2.0, 0.0, 1.0, 1.0, 2.5, 3.0, 3.0, 7.0]),
            sub: rng.pick(&[0.0, 1.0, 1.0, 2.0, -1.0]),
            version: version(i64::try_from(rng.below(50)).unwrap(), &format!("ev-{i}")),
        })
        .collect()
}

fn delta(board: &str, shape: Shape, f: &Fact) -> Delta {
    Delta {
        board: board.to_string(),
        member: f.member.clone(),
        delta: f.score,
        event_id: f.id.clone(),
        subscore: f.sub,
        version: f.version.clone(),
        shape,
    }
}

fn owned(f: &Fact) -> OwnedEntry {
    OwnedEntry {
        member: f.member.clone(),
        event_id: f.id.clone(),
        value: f.score,
        subscore: f.sub,
        version: f.version.clone(),
    }
}

/// The plain recomputation: every fact once, in any order.
fn expected(shape: Shape, facts: &[Fact]) -> Vec<Entry> {
    let recs: Vec<(String, Record)> = facts
        .iter()
        .map(|f| {
            (f.member.clone(), Record { score: f.score, sub: f.sub, version: f.version.clone() })
        })
        .collect();
    let by_member = records(shape, recs.iter().map(|(m, r)| (m.as_str(), r)));
    rank_all(shape, &by_member)
        .into_iter()
        .map(|r| Entry {
            rank: r.rank,
            member: r.member,
            score: r.score,
            subscore: r.sub,
            position: r.position,
        })
        .collect()
}

async fn make_ready(s: &dyn ScoreStore, board: &str, voids: &[String]) {
    assert!(s.begin_rebuild(board, "t", LEASE, voids).await.unwrap());
    assert!(s.finish_rebuild(board, "t").await.unwrap());
}

/// Reads `board` every way and compares with `want`.
async fn check(
    s: &dyn ScoreStore,
    board: &str,
    shape: Shape,
    want: &[Entry],
    rng: &mut Rng,
    case: &str,
) {
    let (all, n) = s.page(board, shape, 0, 1_000).await.unwrap().expect("ready");
    assert_eq!((n, all.as_slice()), (want.len() as u64, want), "whole board, {case}");
    for _ in 0..3 {
        let (offset, limit) = (rng.below(want.len() as u64 + 2), 1 + rng.below(6));
        let (page, _) = s.page(board, shape, offset, limit).await.unwrap().expect("ready");
        let from = (offset as usize).min(want.len());
        let to = (from + limit as usize).min(want.len());
        assert_eq!(page, want[from..to], "page {offset}+{limit}, {case}");
    }
    for _ in 0..4 {
        let Some(me) = want.get(rng.below(want.len() as u64 + 1) as usize) else { continue };
        let k = rng.below(3) as usize;
        let around = s.around(board, shape, &me.member, k as u64).await.unwrap().expect("on board");
        let p = me.position as usize;
        let window = &want[p.saturating_sub(k)..(p + k + 1).min(want.len())];
        assert_eq!(
            (&around.me, around.window.as_slice()),
            (me, window),
            "around {}, {case}",
            me.member
        );
    }
    let team: Vec<String> = (0..4).map(|_| format!("m{:02}", rng.below(20))).collect();
    let wanted: HashSet<&String> = team.iter().collect();
    let (ranks, n) = s.ranks(board, shape, &team).await.unwrap().expect("ready");
    let team_want: Vec<Entry> =
        want.iter().filter(|e| wanted.contains(&e.member)).cloned().collect();
    assert_eq!((n, ranks), (want.len() as u64, team_want), "team {team:?}, {case}");
    assert!(s.around(board, shape, "nobody", 1).await.unwrap().is_none(), "{case}");
}

/// Facts delivered in random batches, each fact also re-sent at random: the board equals
/// the recomputation, whatever the shape.
async fn deliveries_in_any_order_rank_like_the_recomputation(s: Arc<dyn ScoreStore>) {
    let prefix = key_prefix();
    for (i, shape) in shapes().into_iter().enumerate() {
        for round in 0..2u64 {
            let seed = (i as u64) * 100 + round;
            let mut rng = Rng::new(seed);
            let board = format!("{prefix}p{seed}");
            make_ready(s.as_ref(), &board, &[]).await;
            let facts = facts(&mut rng, 12, 60);
            let mut order: Vec<usize> = (0..facts.len()).collect();
            for k in (1..order.len()).rev() {
                order.swap(k, rng.below(k as u64 + 1) as usize);
            }
            let mut sent = 0;
            while sent < order.len() {
                let take = (1 + rng.below(8) as usize).min(order.len() - sent);
                let mut batch: Vec<Delta> = order[sent..sent + take]
                    .iter()
                    .map(|&k| delta(&board, shape, &facts[k]))
                    .collect();
                if rng.below(3) == 0 {
                    // A redelivery of something already sent.
                    batch.push(delta(
                        &board,
                        shape,
                        &facts[order[rng.below(sent as u64 + 1) as usize]],
                    ));
                }
                let outcomes = s.apply_many(&batch).await.unwrap();
                assert!(
                    outcomes.iter().all(|o| matches!(o, Applied::Applied | Applied::Duplicate))
                );
                sent += take;
            }
            let case = format!("seed {seed}, {shape:?}");
            check(s.as_ref(), &board, shape, &expected(shape, &facts), &mut rng, &case).await;
        }
    }
}

/// A rebuild loading the owner's facts while half of them also arrive live, with voids of
/// one member and some facts: the board equals the recomputation without the void facts.
async fn a_rebuild_with_voids_racing_live_deltas_ranks_like_the_recomputation(
    s: Arc<dyn ScoreStore>,
) {
    let prefix = key_prefix();
    for (i, shape) in shapes().into_iter().enumerate() {
        let seed = 10_000 + i as u64;
        let mut rng = Rng::new(seed);
        let board = format!("{prefix}r{seed}");
        let facts = facts(&mut rng, 10, 50);
        let void_m = format!("m{:02}", rng.below(10));
        let void_ids: Vec<String> =
            (0..3).map(|_| facts[rng.below(50) as usize].id.clone()).collect();
        let mut voids = vec![void_member(&void_m)];
        voids.extend(void_ids.iter().map(|id| void_event(id)));
        assert!(s.begin_rebuild(&board, "t", LEASE, &voids).await.unwrap());
        for (k, f) in facts.iter().enumerate() {
            if k % 2 == 0 {
                s.apply_many(&[delta(&board, shape, f)]).await.unwrap();
            }
            if k % 10 == 9 {
                let chunk: Vec<OwnedEntry> = facts[k - 9..=k].iter().map(owned).collect();
                assert!(s.load(&board, shape, "t", &chunk, LEASE).await.unwrap());
            }
        }
        assert!(s.finish_rebuild(&board, "t").await.unwrap());
        // After the rebuild, voided facts stay uncounted even when delivered again.
        let again: Vec<Delta> = facts.iter().take(20).map(|f| delta(&board, shape, f)).collect();
        s.apply_many(&again).await.unwrap();
        let live: Vec<Fact> = facts
            .iter()
            .filter(|f| f.member != void_m && !void_ids.contains(&f.id))
            .cloned()
            .collect();
        let case = format!("seed {seed}, {shape:?}");
        check(s.as_ref(), &board, shape, &expected(shape, &live), &mut rng, &case).await;
    }
}

macro_rules! properties {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn deliveries_in_any_order_rank_like_the_recomputation() {
                super::deliveries_in_any_order_rank_like_the_recomputation($make.await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_rebuild_with_voids_racing_live_deltas_ranks_like_the_recomputation() {
                super::a_rebuild_with_voids_racing_live_deltas_ranks_like_the_recomputation(
                    $make.await,
                )
                .await;
            }
        }
    };
}

properties!(memory, async { Arc::new(MemoryScores::new()) as Arc<dyn ScoreStore> });
properties!(redis, async {
    Arc::new(RedisScores::connect(&servers().redis_url, &key_prefix()).await.unwrap())
        as Arc<dyn ScoreStore>
});
