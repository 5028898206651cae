//! One contract for both score stores: memory (embedded mode) and Redis sorted sets.

use std::sync::Arc;

use ewpm_leaderboard::scores::{Around, Entry, MemoryScores, RedisScores, ScoreStore};
use ewpm_testkit::{key_prefix, servers};

fn e(rank: u64, member: &str, score: f64) -> Entry {
    Entry { rank, member: member.to_string(), score }
}

async fn a_delta_applies_once_per_board(s: Arc<dyn ScoreStore>) {
    assert!(!s.exists("b1").await.unwrap());
    assert!(s.apply("b1", "alice", 5.0, "ev-1").await.unwrap());
    assert!(!s.apply("b1", "alice", 5.0, "ev-1").await.unwrap());
    assert!(s.apply("b1", "alice", 2.5, "ev-2").await.unwrap());
    // The same fact may count on another board.
    assert!(s.apply("b2", "alice", 1.0, "ev-1").await.unwrap());
    assert_eq!(s.top("b1", 0, 10).await.unwrap(), vec![e(1, "alice", 7.5)]);
    assert_eq!((s.len("b1").await.unwrap(), s.exists("b1").await.unwrap()), (1, true));
}

async fn concurrent_retries_of_one_delta_apply_it_once(s: Arc<dyn ScoreStore>) {
    let handles: Vec<_> = (0..50)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.apply("b", "bob", 3.0, "same").await.unwrap() })
        })
        .collect();
    let mut applied = 0;
    for h in handles {
        applied += usize::from(h.await.unwrap());
    }
    assert_eq!(applied, 1);
    assert_eq!(s.top("b", 0, 10).await.unwrap(), vec![e(1, "bob", 3.0)]);
}

async fn ties_share_a_rank_and_keep_a_stable_order(s: Arc<dyn ScoreStore>) {
    for (i, (member, score)) in
        [("a", 10.0), ("b", 20.0), ("c", 20.0), ("d", 5.0), ("e", 20.0)].into_iter().enumerate()
    {
        s.apply("b", member, score, &format!("ev{i}")).await.unwrap();
    }
    // Score descending; within a tie, member id descending.
    let all =
        vec![e(1, "e", 20.0), e(1, "c", 20.0), e(1, "b", 20.0), e(4, "a", 10.0), e(5, "d", 5.0)];
    assert_eq!(s.top("b", 0, 10).await.unwrap(), all);
    assert_eq!(s.top("b", 1, 2).await.unwrap(), all[1..3].to_vec());
    assert_eq!(s.top("b", 3, 5).await.unwrap(), all[3..].to_vec());
    assert_eq!(s.top("b", 5, 5).await.unwrap(), vec![]);
    assert_eq!(s.top("b", 0, 0).await.unwrap(), vec![]);
}

async fn around_a_member_clips_at_both_ends(s: Arc<dyn ScoreStore>) {
    for (i, (member, score)) in
        [("a", 50.0), ("b", 40.0), ("c", 40.0), ("d", 30.0), ("e", 10.0)].into_iter().enumerate()
    {
        s.apply("b", member, score, &format!("ev{i}")).await.unwrap();
    }
    let all = [e(1, "a", 50.0), e(2, "c", 40.0), e(2, "b", 40.0), e(4, "d", 30.0), e(5, "e", 10.0)];
    assert_eq!(
        s.around("b", "a", 2).await.unwrap(),
        Some(Around { me: all[0].clone(), window: all[..3].to_vec() })
    );
    assert_eq!(
        s.around("b", "b", 1).await.unwrap(),
        Some(Around { me: all[2].clone(), window: all[1..4].to_vec() })
    );
    assert_eq!(
        s.around("b", "e", 2).await.unwrap(),
        Some(Around { me: all[4].clone(), window: all[2..].to_vec() })
    );
    assert_eq!(
        s.around("b", "c", 0).await.unwrap(),
        Some(Around { me: all[1].clone(), window: all[1..2].to_vec() })
    );
    assert_eq!(s.around("b", "nobody", 2).await.unwrap(), None);
    assert_eq!(s.around("no-board", "a", 2).await.unwrap(), None);
}

macro_rules! contract {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;
            contract!(@tests $make;
                a_delta_applies_once_per_board,
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
