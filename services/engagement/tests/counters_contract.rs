//! One contract for both counter stores and both admission stores: the in-process ones of the
//! embedded mode and the Redis ones of the mesh (against the test run's real Redis, and its
//! Redis Cluster: every script's keys share one hash slot).

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use ewpm_engagement::{
    admission::{Admission, MemoryAdmission, RedisAdmission, Taken},
    counters::{Applied, Counters, MemoryCounters, RedisCounters},
    domain::Counts,
};
use ewpm_testkit::{key_prefix, redis_cluster_url, servers};
use uuid::Uuid;

async fn redis() -> fred::prelude::Client {
    ewpm_kit::redis::connect(&servers().redis_url).await.unwrap()
}

async fn cluster() -> fred::prelude::Client {
    ewpm_kit::redis::connect(redis_cluster_url()).await.unwrap()
}

async fn counter_stores() -> Vec<(&'static str, Arc<dyn Counters>)> {
    vec![
        ("memory", Arc::new(MemoryCounters::new())),
        ("redis", Arc::new(RedisCounters::new(redis().await, &key_prefix()))),
        ("redis cluster", Arc::new(RedisCounters::new(cluster().await, &key_prefix()))),
    ]
}

async fn admission_stores() -> Vec<(&'static str, Arc<dyn Admission>)> {
    vec![
        ("memory", Arc::new(MemoryAdmission::new())),
        ("redis", Arc::new(RedisAdmission::new(redis().await, &key_prefix()))),
        ("redis cluster", Arc::new(RedisAdmission::new(cluster().await, &key_prefix()))),
    ]
}

fn counts(total: i64, goal: i64, minute: i64) -> Counts {
    Counts {
        total,
        by_type: BTreeMap::from([("goal".into(), goal), ("cheer".into(), total - goal)]),
        minutes: BTreeMap::from([(minute, total)]),
        late: BTreeMap::from([(minute, 1)]),
        clock: BTreeMap::from([(34, total)]),
        clock_first: BTreeMap::from([(34, minute * 60_000_000 + 5)]),
        latency: BTreeMap::from([(1500, total)]),
        max_event_us: minute * 60_000_000 + 30,
        newest_received_us: minute * 60_000_000 + 40,
        newest_lag_us: 1500,
    }
}

const NOW: i64 = 1_900_000_000_000;

async fn built(store: &dyn Counters, m: &str, c: &Counts, ingests: &[String]) {
    assert!(store.begin_rebuild(m, "t0", Duration::from_secs(5)).await.unwrap());
    assert!(store.finish_rebuild(m, "t0", c, ingests, NOW).await.unwrap());
}

#[tokio::test]
async fn missing_counters_take_no_increments() {
    for (name, store) in counter_stores().await {
        let delta = counts(3, 1, 100);
        assert_eq!(store.apply("m1", "i1", &delta, NOW).await.unwrap(), Applied::Missing, "{name}");
        assert_eq!(store.read("m1").await.unwrap(), None, "{name}");
    }
}

#[tokio::test]
async fn an_ingest_call_counts_once_and_counts_add_up() {
    for (name, store) in counter_stores().await {
        built(store.as_ref(), "m1", &counts(2, 1, 100), &[]).await;
        let delta = counts(3, 2, 101);
        assert_eq!(store.apply("m1", "i1", &delta, NOW).await.unwrap(), Applied::Applied, "{name}");
        assert_eq!(store.apply("m1", "i1", &delta, NOW).await.unwrap(), Applied::Already, "{name}");
        let mut want = counts(2, 1, 100);
        want.add(&delta);
        assert_eq!(store.read("m1").await.unwrap(), Some(want), "{name}");
    }
}

#[tokio::test]
async fn a_rebuild_remembers_the_ingest_calls_it_read() {
    for (name, store) in counter_stores().await {
        built(store.as_ref(), "m1", &counts(5, 2, 100), &["i1".into(), "i2".into()]).await;
        let delta = counts(1, 1, 100);
        assert_eq!(store.apply("m1", "i2", &delta, NOW).await.unwrap(), Applied::Already, "{name}");
        assert_eq!(store.apply("m1", "i3", &delta, NOW).await.unwrap(), Applied::Applied, "{name}");
        assert_eq!(store.read("m1").await.unwrap().map(|c| c.total), Some(6), "{name}");
    }
}

#[tokio::test]
async fn increments_wait_while_a_rebuild_holds_the_match() {
    for (name, store) in counter_stores().await {
        built(store.as_ref(), "m1", &counts(2, 1, 100), &[]).await;
        assert!(store.begin_rebuild("m1", "r1", Duration::from_secs(5)).await.unwrap(), "{name}");
        assert!(!store.begin_rebuild("m1", "r2", Duration::from_secs(5)).await.unwrap(), "{name}");
        let delta = counts(1, 1, 100);
        assert_eq!(store.apply("m1", "i1", &delta, NOW).await.unwrap(), Applied::Busy, "{name}");
        // A rebuild whose lease is not its own changes nothing.
        assert!(!store.finish_rebuild("m1", "r2", &counts(9, 9, 100), &[], NOW).await.unwrap());
        store.abort_rebuild("m1", "r1").await.unwrap();
        assert_eq!(store.apply("m1", "i1", &delta, NOW).await.unwrap(), Applied::Applied, "{name}");
        assert_eq!(store.read("m1").await.unwrap().map(|c| c.total), Some(3), "{name}");
    }
}

#[tokio::test]
async fn an_expired_lease_no_longer_counts() {
    for (name, store) in counter_stores().await {
        assert!(store.begin_rebuild("m1", "r1", Duration::from_millis(50)).await.unwrap());
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(
            !store.finish_rebuild("m1", "r1", &counts(1, 1, 1), &[], NOW).await.unwrap(),
            "{name}"
        );
        assert!(store.begin_rebuild("m1", "r2", Duration::from_secs(5)).await.unwrap(), "{name}");
    }
}

#[tokio::test]
async fn forgotten_counters_are_missing_until_rebuilt() {
    for (name, store) in counter_stores().await {
        built(store.as_ref(), "m1", &counts(2, 1, 100), &[]).await;
        store.forget("m1").await.unwrap();
        assert_eq!(store.read("m1").await.unwrap(), None, "{name}");
        assert_eq!(
            store.apply("m1", "i9", &counts(1, 1, 100), NOW).await.unwrap(),
            Applied::Missing,
            "{name}"
        );
    }
}

#[tokio::test]
async fn matches_are_apart() {
    for (name, store) in counter_stores().await {
        built(store.as_ref(), "m1", &counts(2, 1, 100), &[]).await;
        assert_eq!(store.read("m2").await.unwrap(), None, "{name}");
    }
}

fn ids(n: usize) -> Vec<(Uuid, String)> {
    (0..n).map(|i| (Uuid::new_v4(), format!("fp{i}"))).collect()
}

#[tokio::test]
async fn an_id_is_reserved_once_and_a_second_reservation_sees_the_first() {
    for (name, store) in admission_stores().await {
        let batch = ids(3);
        let first = store.reserve("feed", &batch, Duration::from_secs(30)).await.unwrap();
        assert_eq!(first, vec![None, None, None], "{name}");
        let again = store.reserve("feed", &batch[..1], Duration::from_secs(30)).await.unwrap();
        assert_eq!(
            again,
            vec![Some(Taken { fingerprint: "fp0".into(), settled: false })],
            "{name}"
        );
        store.settle("feed", &batch[..1], Duration::from_secs(60)).await.unwrap();
        let settled = store.reserve("feed", &batch[..1], Duration::from_secs(30)).await.unwrap();
        assert_eq!(
            settled,
            vec![Some(Taken { fingerprint: "fp0".into(), settled: true })],
            "{name}"
        );
        // Another source's ids are its own.
        assert_eq!(
            store.reserve("other", &batch[..1], Duration::from_secs(30)).await.unwrap(),
            vec![None]
        );
    }
}

#[tokio::test]
async fn a_released_reservation_is_free_again_and_a_settled_one_stays() {
    for (name, store) in admission_stores().await {
        let batch = ids(2);
        store.reserve("feed", &batch, Duration::from_secs(30)).await.unwrap();
        store.settle("feed", &batch[1..], Duration::from_secs(60)).await.unwrap();
        store.release("feed", &batch).await.unwrap();
        let after = store.reserve("feed", &batch, Duration::from_secs(30)).await.unwrap();
        assert_eq!(
            after,
            vec![None, Some(Taken { fingerprint: "fp1".into(), settled: true })],
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_pending_reservation_expires() {
    for (name, store) in admission_stores().await {
        let batch = ids(1);
        store.reserve("feed", &batch, Duration::from_millis(50)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(
            store.reserve("feed", &batch, Duration::from_secs(30)).await.unwrap(),
            vec![None],
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_match_takes_new_types_up_to_its_cap_once_loaded() {
    for (name, store) in admission_stores().await {
        let t = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(store.admit_types("m1", &t(&["goal"]), 2).await.unwrap(), None, "{name}");
        store.load_types("m1", &t(&["goal"])).await.unwrap();
        assert_eq!(
            store.admit_types("m1", &t(&["goal", "card", "cheer"]), 2).await.unwrap(),
            Some(vec![true, true, false]),
            "{name}"
        );
        assert_eq!(
            store.admit_types("m1", &t(&["cheer", "card"]), 2).await.unwrap(),
            Some(vec![false, true]),
            "{name}"
        );
        // A match with no types yet is loaded with none.
        store.load_types("m2", &[]).await.unwrap();
        assert_eq!(
            store.admit_types("m2", &t(&["goal"]), 2).await.unwrap(),
            Some(vec![true]),
            "{name}"
        );
    }
}
