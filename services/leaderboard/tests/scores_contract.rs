//! One contract for both score stores: memory (embedded mode) and Redis sorted sets.

mod common;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use chrono::{DateTime, TimeZone, Utc};
use common::{e, make_ready, np, npa, npp, owned, redis};
use ewpm_kit::clock::FixedClock;
use ewpm_leaderboard::scores::{
    Applied, Around, CLOCK_SKEW, Dedupe, Delta, MemoryScores, RedisScores, ScoreStore, Shape,
};
use ewpm_testkit::{key_prefix, servers};

const LEASE: Duration = Duration::from_secs(30);

async fn a_delta_applies_once_per_board(s: Arc<dyn ScoreStore>) {
    assert!(!s.exists("b1").await.unwrap());
    make_ready(s.as_ref(), "b1").await;
    make_ready(s.as_ref(), "b2").await;
    assert_eq!(s.apply("b1", "alice", 5.0, "ev-1").await.unwrap(), Applied::Applied);
    assert_eq!(s.apply("b1", "alice", 5.0, "ev-1").await.unwrap(), Applied::Duplicate);
    assert_eq!(s.apply("b1", "alice", 2.5, "ev-2").await.unwrap(), Applied::Applied);
    // The same fact may count on another board.
    assert_eq!(s.apply("b2", "alice", 1.0, "ev-1").await.unwrap(), Applied::Applied);
    assert_eq!(np(s.top("b1", 0, 10).await.unwrap()), vec![e(1, "alice", 7.5)]);
    assert_eq!((s.len("b1").await.unwrap(), s.exists("b1").await.unwrap()), (1, true));
}

async fn a_batch_reports_each_delta_in_order(s: Arc<dyn ScoreStore>) {
    make_ready(s.as_ref(), "b1").await;
    let d = |board: &str, member: &str, delta: f64, event_id: &str| Delta {
        subscore: 0.0,
        version: String::new(),
        shape: Shape::default(),
        board: board.into(),
        member: member.into(),
        delta,
        event_id: event_id.into(),
    };
    let outcomes = s
        .apply_many(&[
            d("b1", "alice", 1.0, "ev-1"),
            d("gone", "alice", 1.0, "ev-1"),
            d("b1", "bob", 2.0, "ev-1"),
            d("b1", "bob", 2.0, "ev-2"),
        ])
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        vec![Applied::Applied, Applied::Missing, Applied::Duplicate, Applied::Applied]
    );
    assert_eq!(np(s.top("b1", 0, 10).await.unwrap()), vec![e(1, "bob", 2.0), e(2, "alice", 1.0)]);
}

async fn a_delta_for_a_missing_board_is_dropped_as_missing(s: Arc<dyn ScoreStore>) {
    assert_eq!(s.apply("b", "alice", 5.0, "ev-1").await.unwrap(), Applied::Missing);
    assert!(!s.exists("b").await.unwrap());
    assert_eq!((np(s.top("b", 0, 10).await.unwrap()), s.len("b").await.unwrap()), (vec![], 0));
    // The rebuild that follows counts the fact once, even if the delta comes again.
    assert!(s.begin_rebuild("b", "t1", LEASE, &[]).await.unwrap());
    assert_eq!(s.apply("b", "alice", 5.0, "ev-1").await.unwrap(), Applied::Applied);
    assert!(
        s.load("b", Shape::default(), "t1", &[owned("alice", "ev-1", 5.0)], LEASE).await.unwrap()
    );
    assert!(s.finish_rebuild("b", "t1").await.unwrap());
    assert_eq!(np(s.top("b", 0, 10).await.unwrap()), vec![e(1, "alice", 5.0)]);
    assert_eq!(s.apply("b", "alice", 5.0, "ev-1").await.unwrap(), Applied::Duplicate);
}

async fn a_second_rebuild_cannot_begin_while_one_holds_the_lease(s: Arc<dyn ScoreStore>) {
    assert!(s.begin_rebuild("b", "t1", LEASE, &[]).await.unwrap());
    assert!(!s.begin_rebuild("b", "t2", LEASE, &[]).await.unwrap());
    assert!(s.finish_rebuild("b", "t1").await.unwrap());
    // A ready board is not rebuilt over.
    assert!(!s.begin_rebuild("b", "t3", LEASE, &[]).await.unwrap());
}

async fn a_stale_token_changes_nothing(s: Arc<dyn ScoreStore>) {
    assert!(s.begin_rebuild("b", "t1", LEASE, &[]).await.unwrap());
    assert!(
        !s.load("b", Shape::default(), "stale", &[owned("mallory", "ev-9", 100.0)], LEASE)
            .await
            .unwrap()
    );
    assert!(!s.finish_rebuild("b", "stale").await.unwrap());
    s.abort_rebuild("b", "stale").await.unwrap();
    assert!(!s.exists("b").await.unwrap());
    assert!(
        s.load("b", Shape::default(), "t1", &[owned("alice", "ev-1", 1.0)], LEASE).await.unwrap()
    );
    assert!(s.finish_rebuild("b", "t1").await.unwrap());
    assert_eq!(np(s.top("b", 0, 10).await.unwrap()), vec![e(1, "alice", 1.0)]);
    // Finishing again with the used token does nothing either.
    assert!(!s.finish_rebuild("b", "t1").await.unwrap());
}

async fn an_expired_lease_can_be_taken_over(s: Arc<dyn ScoreStore>) {
    assert!(s.begin_rebuild("b", "dead", Duration::from_millis(50), &[]).await.unwrap());
    assert!(
        s.load(
            "b",
            Shape::default(),
            "dead",
            &[owned("ghost", "ev-0", 9.0)],
            Duration::from_millis(50)
        )
        .await
        .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(s.apply("b", "alice", 1.0, "ev-1").await.unwrap(), Applied::Missing);
    assert!(s.begin_rebuild("b", "t2", LEASE, &[]).await.unwrap());
    assert!(!s.finish_rebuild("b", "dead").await.unwrap());
    // The aside copy starts empty: nothing of the dead rebuild survives.
    assert!(
        s.load("b", Shape::default(), "t2", &[owned("alice", "ev-1", 1.0)], LEASE).await.unwrap()
    );
    assert!(s.finish_rebuild("b", "t2").await.unwrap());
    assert_eq!(np(s.top("b", 0, 10).await.unwrap()), vec![e(1, "alice", 1.0)]);
}

async fn an_aborted_rebuild_frees_the_lease(s: Arc<dyn ScoreStore>) {
    assert!(s.begin_rebuild("b", "t1", LEASE, &[]).await.unwrap());
    s.abort_rebuild("b", "t1").await.unwrap();
    assert_eq!(s.apply("b", "alice", 1.0, "ev-1").await.unwrap(), Applied::Missing);
    assert!(s.begin_rebuild("b", "t2", LEASE, &[]).await.unwrap());
    assert!(s.finish_rebuild("b", "t2").await.unwrap());
    assert_eq!((s.exists("b").await.unwrap(), s.len("b").await.unwrap()), (true, 0));
}

async fn a_rebuild_while_deltas_keep_arriving_ends_exact(s: Arc<dyn ScoreStore>) {
    // 300 facts over 7 members; the owner's snapshot holds the first 200 (those committed
    // when it was read); every delta is also delivered twice, concurrently with the load.
    let facts: Vec<(String, String, f64)> = (0..300)
        .map(|i| (format!("m{}", i % 7), format!("ev-{i}"), f64::from(i % 13) + 0.5))
        .collect();
    let mut expected: BTreeMap<String, f64> = BTreeMap::new();
    for (m, _, v) in &facts {
        *expected.entry(m.clone()).or_default() += v;
    }
    assert!(s.begin_rebuild("b", "t", LEASE, &[]).await.unwrap());
    let deliveries: Vec<_> = (0..2)
        .map(|round| {
            let s = s.clone();
            let facts = facts.clone();
            tokio::spawn(async move {
                for chunk in facts.chunks(9).skip(round) {
                    let deltas: Vec<Delta> = chunk
                        .iter()
                        .map(|(m, id, v)| Delta {
                            subscore: 0.0,
                            version: String::new(),
                            shape: Shape::default(),
                            board: "b".into(),
                            member: m.clone(),
                            delta: *v,
                            event_id: id.clone(),
                        })
                        .collect();
                    let outcomes = s.apply_many(&deltas).await.unwrap();
                    assert!(!outcomes.contains(&Applied::Missing), "{outcomes:?}");
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    let snapshot: Vec<_> = facts[..200].iter().map(|(m, id, v)| owned(m, id, *v)).collect();
    for chunk in snapshot.chunks(11) {
        assert!(s.load("b", Shape::default(), "t", chunk, LEASE).await.unwrap());
        tokio::task::yield_now().await;
    }
    assert!(s.finish_rebuild("b", "t").await.unwrap());
    for d in deliveries {
        d.await.unwrap();
    }
    // The chunks the second round skipped (the first 9 facts) are in the snapshot anyway.
    let mut got: BTreeMap<String, f64> = BTreeMap::new();
    for entry in np(s.top("b", 0, 100).await.unwrap()) {
        got.insert(entry.member, entry.score);
    }
    assert_eq!(got, expected);
    assert_eq!(s.len("b").await.unwrap(), 7);
}

async fn concurrent_retries_of_one_delta_apply_it_once(s: Arc<dyn ScoreStore>) {
    make_ready(s.as_ref(), "b").await;
    let handles: Vec<_> = (0..50)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.apply("b", "bob", 3.0, "same").await.unwrap() })
        })
        .collect();
    let mut applied = 0;
    for h in handles {
        applied += usize::from(h.await.unwrap() == Applied::Applied);
    }
    assert_eq!(applied, 1);
    assert_eq!(np(s.top("b", 0, 10).await.unwrap()), vec![e(1, "bob", 3.0)]);
}

async fn ties_share_a_rank_and_keep_a_stable_order(s: Arc<dyn ScoreStore>) {
    make_ready(s.as_ref(), "b").await;
    for (i, (member, score)) in
        [("a", 10.0), ("b", 20.0), ("c", 20.0), ("d", 5.0), ("e", 20.0)].into_iter().enumerate()
    {
        s.apply("b", member, score, &format!("ev{i}")).await.unwrap();
    }
    // Score descending; within a tie, member id descending.
    let all =
        vec![e(1, "e", 20.0), e(1, "c", 20.0), e(1, "b", 20.0), e(4, "a", 10.0), e(5, "d", 5.0)];
    assert_eq!(np(s.top("b", 0, 10).await.unwrap()), all);
    assert_eq!(np(s.top("b", 1, 2).await.unwrap()), all[1..3].to_vec());
    assert_eq!(np(s.top("b", 3, 5).await.unwrap()), all[3..].to_vec());
    assert_eq!(np(s.top("b", 5, 5).await.unwrap()), vec![]);
    assert_eq!(np(s.top("b", 0, 0).await.unwrap()), vec![]);
    assert_eq!(np(s.top("b", u64::MAX, u64::MAX).await.unwrap()), vec![]);
}

async fn around_a_member_clips_at_both_ends(s: Arc<dyn ScoreStore>) {
    make_ready(s.as_ref(), "b").await;
    for (i, (member, score)) in
        [("a", 50.0), ("b", 40.0), ("c", 40.0), ("d", 30.0), ("e", 10.0)].into_iter().enumerate()
    {
        s.apply("b", member, score, &format!("ev{i}")).await.unwrap();
    }
    let all = [e(1, "a", 50.0), e(2, "c", 40.0), e(2, "b", 40.0), e(4, "d", 30.0), e(5, "e", 10.0)];
    assert_eq!(
        npa(s.around("b", Shape::default(), "a", 2).await.unwrap()),
        Some(Around { me: all[0].clone(), window: all[..3].to_vec() })
    );
    assert_eq!(
        npa(s.around("b", Shape::default(), "b", 1).await.unwrap()),
        Some(Around { me: all[2].clone(), window: all[1..4].to_vec() })
    );
    assert_eq!(
        npa(s.around("b", Shape::default(), "e", 2).await.unwrap()),
        Some(Around { me: all[4].clone(), window: all[2..].to_vec() })
    );
    assert_eq!(
        npa(s.around("b", Shape::default(), "c", 0).await.unwrap()),
        Some(Around { me: all[1].clone(), window: all[1..2].to_vec() })
    );
    assert_eq!(npa(s.around("b", Shape::default(), "nobody", 2).await.unwrap()), None);
    assert_eq!(npa(s.around("no-board", Shape::default(), "a", 2).await.unwrap()), None);
}

async fn a_page_is_one_read_of_entries_and_count_or_none_when_not_ready(s: Arc<dyn ScoreStore>) {
    assert_eq!(npp(s.page("b", Shape::default(), 0, 10).await.unwrap()), None);
    make_ready(s.as_ref(), "b").await;
    assert_eq!(npp(s.page("b", Shape::default(), 0, 10).await.unwrap()), Some((vec![], 0)));
    for (member, score, id) in
        [("a", 50.0, "1"), ("b", 40.0, "2"), ("c", 40.0, "3"), ("d", 10.0, "4")]
    {
        s.apply("b", member, score, id).await.unwrap();
    }
    // A page starting inside a tie keeps the tie's rank; an empty page still counts.
    assert_eq!(
        npp(s.page("b", Shape::default(), 2, 2).await.unwrap()),
        Some((vec![e(2, "b", 40.0), e(4, "d", 10.0)], 4))
    );
    assert_eq!(npp(s.page("b", Shape::default(), 0, 0).await.unwrap()), Some((vec![], 4)));
    assert_eq!(npp(s.page("b", Shape::default(), 9, 5).await.unwrap()), Some((vec![], 4)));
}

// ---- The dedupe window: stores made with a 1 h window on a clock the test moves. ----

const WINDOW: Duration = Duration::from_secs(3600);

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 10, 12, 0, 0).unwrap()
}

fn minutes(n: i64) -> chrono::Duration {
    chrono::Duration::minutes(n)
}

/// A UUIDv7 event id whose time is `at` (distinct per `n`).
fn id_at(at: DateTime<Utc>, n: u16) -> String {
    let ms = u64::try_from(at.timestamp_millis()).unwrap();
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    b[6] = 0x70;
    b[8] = 0x80;
    b[14..].copy_from_slice(&n.to_be_bytes());
    let id = uuid::Uuid::from_bytes(b);
    assert_eq!(id.get_version_num(), 7);
    id.to_string()
}

async fn ids_outside_the_window_are_forgotten_and_their_deltas_refused(
    s: Arc<dyn ScoreStore>,
    clock: Arc<FixedClock>,
) {
    make_ready(s.as_ref(), "b").await;
    let old = id_at(t0() - minutes(30), 1);
    assert_eq!(s.apply("b", "alice", 5.0, &old).await.unwrap(), Applied::Applied);
    // Redelivered within the window: skipped.
    clock.set(t0() + minutes(20));
    assert_eq!(s.apply("b", "alice", 5.0, &old).await.unwrap(), Applied::Duplicate);
    // Redelivered after the window: refused as stale, still not counted twice.
    clock.set(t0() + minutes(40));
    assert_eq!(s.apply("b", "alice", 5.0, &old).await.unwrap(), Applied::Stale);
    // An id without a time (not v7) is remembered for good.
    assert_eq!(s.apply("b", "bob", 1.0, "no-time").await.unwrap(), Applied::Applied);
    assert_eq!(s.remembered("b").await.unwrap(), 2);
    // Once past the window and the clock-skew allowance, the old id is dropped.
    clock.set(t0() + minutes(120));
    let new = id_at(t0() + minutes(119), 2);
    assert_eq!(s.apply("b", "alice", 1.0, &new).await.unwrap(), Applied::Applied);
    assert_eq!(s.remembered("b").await.unwrap(), 2);
    assert_eq!(
        (
            s.apply("b", "alice", 5.0, &old).await.unwrap(),
            s.apply("b", "alice", 1.0, &new).await.unwrap(),
            s.apply("b", "bob", 1.0, "no-time").await.unwrap(),
        ),
        (Applied::Stale, Applied::Duplicate, Applied::Duplicate)
    );
    assert_eq!(np(s.top("b", 0, 10).await.unwrap()), vec![e(1, "alice", 6.0), e(2, "bob", 1.0)]);
}

async fn remembered_ids_stay_bounded_and_redeliveries_in_the_window_are_skipped(
    s: Arc<dyn ScoreStore>,
    clock: Arc<FixedClock>,
) {
    make_ready(s.as_ref(), "b").await;
    // 600 facts, one every 30 s, each applied 5 s after it happened, with the previous ten
    // delivered again alongside (a redelivery storm well within the window).
    let at = |i: i64| t0() + chrono::Duration::seconds(30 * i);
    let fact = |i: i64| Delta {
        subscore: 0.0,
        version: String::new(),
        shape: Shape::default(),
        board: "b".into(),
        member: format!("m{}", i % 7),
        delta: (i % 5) as f64 + 1.0,
        event_id: id_at(at(i), u16::try_from(i).unwrap()),
    };
    let mut expected: BTreeMap<String, f64> = BTreeMap::new();
    for i in 0..600 {
        clock.set(at(i) + chrono::Duration::seconds(5));
        let mut batch: Vec<Delta> = ((i - 10).max(0)..i).map(fact).collect();
        batch.push(fact(i));
        let mut want = vec![Applied::Duplicate; batch.len() - 1];
        want.push(Applied::Applied);
        assert_eq!(s.apply_many(&batch).await.unwrap(), want, "fact {i}");
        *expected.entry(format!("m{}", i % 7)).or_default() += (i % 5) as f64 + 1.0;
    }
    // Exactly the facts younger than window + skew at the last apply are remembered.
    let now = at(599) + chrono::Duration::seconds(5);
    let horizon = now - chrono::Duration::from_std(WINDOW + CLOCK_SKEW).unwrap();
    let young = (0..600).filter(|i| at(*i) >= horizon).count() as u64;
    assert_eq!((s.remembered("b").await.unwrap(), young), (140, 140));
    let mut got: BTreeMap<String, f64> = BTreeMap::new();
    for entry in np(s.top("b", 0, 100).await.unwrap()) {
        got.insert(entry.member, entry.score);
    }
    assert_eq!(got, expected);
}

async fn a_rebuild_counts_old_facts_once_and_remembers_only_the_window(
    s: Arc<dyn ScoreStore>,
    _clock: Arc<FixedClock>,
) {
    let (ancient, recent, fresh) =
        (id_at(t0() - minutes(180), 1), id_at(t0() - minutes(5), 2), id_at(t0(), 3));
    assert!(s.begin_rebuild("b", "t", LEASE, &[]).await.unwrap());
    // A delta lands in the aside copy before the owner's entries are loaded.
    assert_eq!(s.apply("b", "alice", 2.0, &recent).await.unwrap(), Applied::Applied);
    let entries =
        [owned("bob", &ancient, 7.0), owned("alice", &recent, 2.0), owned("carol", &fresh, 1.0)];
    assert!(s.load("b", Shape::default(), "t", &entries, LEASE).await.unwrap());
    assert!(s.finish_rebuild("b", "t").await.unwrap());
    assert_eq!(
        np(s.top("b", 0, 10).await.unwrap()),
        vec![e(1, "bob", 7.0), e(2, "alice", 2.0), e(3, "carol", 1.0)]
    );
    // The ancient fact is counted but not remembered: its delta is stale anyway.
    assert_eq!(s.remembered("b").await.unwrap(), 2);
    assert_eq!(
        (
            s.apply("b", "bob", 7.0, &ancient).await.unwrap(),
            s.apply("b", "alice", 2.0, &recent).await.unwrap(),
            s.apply("b", "carol", 1.0, &fresh).await.unwrap(),
        ),
        (Applied::Stale, Applied::Duplicate, Applied::Duplicate)
    );
}

async fn a_forgotten_board_must_be_rebuilt(s: Arc<dyn ScoreStore>, _clock: Arc<FixedClock>) {
    make_ready(s.as_ref(), "b").await;
    assert_eq!(s.apply("b", "alice", 1.0, &id_at(t0(), 1)).await.unwrap(), Applied::Applied);
    s.forget("b").await.unwrap();
    assert_eq!(
        (s.exists("b").await.unwrap(), s.apply("b", "alice", 1.0, &id_at(t0(), 2)).await.unwrap()),
        (false, Applied::Missing)
    );
}

macro_rules! window_contract {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;
            window_contract!(@tests $make;
                ids_outside_the_window_are_forgotten_and_their_deltas_refused,
                remembered_ids_stay_bounded_and_redeliveries_in_the_window_are_skipped,
                a_rebuild_counts_old_facts_once_and_remembers_only_the_window,
                a_forgotten_board_must_be_rebuilt,
            );
        }
    };
    (@tests $make:expr; $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let clock = FixedClock::new(t0());
                let dedupe = Dedupe { window: WINDOW, clock: clock.clone() };
                let make = $make;
                let store: Arc<dyn ScoreStore> = make(dedupe).await;
                super::$name(store, clock).await;
            }
        )+
    };
}

window_contract!(memory_window, |d| async move {
    Arc::new(MemoryScores::new().with_dedupe(d)) as Arc<dyn ScoreStore>
});
window_contract!(redis_window, |d| async move {
    let store = RedisScores::connect(&servers().redis_url, &key_prefix()).await.unwrap();
    Arc::new(store.with_dedupe(d)) as Arc<dyn ScoreStore>
});
window_contract!(redis_cluster_window, |d| async move {
    let store =
        RedisScores::connect(ewpm_testkit::redis_cluster_url(), &key_prefix()).await.unwrap();
    Arc::new(store.with_dedupe(d)) as Arc<dyn ScoreStore>
});

/// A board written before the window existed kept its ids in a plain set: the first delta
/// converts it, and every id in it still counts as seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_an_old_plain_seen_set_is_converted_and_still_dedupes() {
    let prefix = key_prefix();
    let clock = FixedClock::new(t0());
    let s = RedisScores::connect(&servers().redis_url, &prefix)
        .await
        .unwrap()
        .with_dedupe(Dedupe { window: WINDOW, clock: clock.clone() });
    let raw = redis().await;
    let (v7, old_v7) = (id_at(t0() - minutes(1), 1), id_at(t0() - minutes(300), 2));
    let (seen, ready) = (format!("{prefix}lb:{{b}}:seen"), format!("{prefix}lb:{{b}}:ready"));
    let _: i64 = ewpm_kit::redis::eval(
        &raw,
        "redis.call('SADD', KEYS[1], unpack(ARGV)); redis.call('SET', KEYS[2], '1'); return 1",
        vec![seen.clone(), ready],
        vec![v7.clone(), old_v7.clone(), "ev-1".to_string()],
    )
    .await
    .unwrap();
    assert_eq!(
        (
            s.apply("b", "alice", 1.0, &v7).await.unwrap(),
            s.apply("b", "alice", 1.0, "ev-1").await.unwrap(),
            s.apply("b", "alice", 1.0, &old_v7).await.unwrap(),
        ),
        (Applied::Duplicate, Applied::Duplicate, Applied::Stale)
    );
    // Converted with each v7 id's time: the old one was past the window and was dropped.
    let kind: String = ewpm_kit::redis::eval(
        &raw,
        "return redis.call('TYPE', KEYS[1]).ok",
        vec![seen],
        Vec::<String>::new(),
    )
    .await
    .unwrap();
    assert_eq!((kind.as_str(), s.remembered("b").await.unwrap()), ("zset", 2));
}

macro_rules! contract {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;
            contract!(@tests $make;
                a_page_is_one_read_of_entries_and_count_or_none_when_not_ready,
                a_delta_applies_once_per_board,
                a_batch_reports_each_delta_in_order,
                a_delta_for_a_missing_board_is_dropped_as_missing,
                a_second_rebuild_cannot_begin_while_one_holds_the_lease,
                a_stale_token_changes_nothing,
                an_expired_lease_can_be_taken_over,
                an_aborted_rebuild_frees_the_lease,
                a_rebuild_while_deltas_keep_arriving_ends_exact,
                concurrent_retries_of_one_delta_apply_it_once,
                ties_share_a_rank_and_keep_a_stable_order,
                around_a_member_clips_at_both_ends,
            );
        }
    };
    (@tests $make:expr; $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let store: Arc<dyn ScoreStore> = $make.await;
                super::$name(store).await;
            }
        )+
    };
}

contract!(memory, async { Arc::new(MemoryScores::new()) as Arc<dyn ScoreStore> });
contract!(redis, async {
    Arc::new(RedisScores::connect(&servers().redis_url, &key_prefix()).await.unwrap())
        as Arc<dyn ScoreStore>
});
contract!(redis_cluster, async {
    Arc::new(RedisScores::connect(ewpm_testkit::redis_cluster_url(), &key_prefix()).await.unwrap())
        as Arc<dyn ScoreStore>
});
