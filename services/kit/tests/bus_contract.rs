//! One contract for both buses: the in-process one of the embedded mode and Redis Streams.

use std::{sync::Arc, time::Duration};

use ewpm_kit::bus::{Bus, MemoryBus, Message, Once, RedisBus, SqliteBus};
use ewpm_testkit::{key_prefix, servers};

fn payloads(range: std::ops::Range<u32>) -> Vec<Vec<u8>> {
    range.map(|i| format!("m{i}").into_bytes()).collect()
}

fn bodies(messages: &[Message]) -> Vec<String> {
    messages.iter().map(|m| String::from_utf8(m.payload.clone()).unwrap()).collect()
}

const NO_WAIT: Duration = Duration::from_millis(10);

async fn a_group_receives_every_message_once_in_order(bus: Arc<dyn Bus>, topic: String) {
    bus.ensure_group(&topic, "g").await.unwrap();
    bus.ensure_group(&topic, "g").await.unwrap();
    let ids = bus.publish(&topic, &payloads(0..5)).await.unwrap();
    assert_eq!(ids.len(), 5);
    let first = bus.receive(&topic, "g", "c1", 3, NO_WAIT).await.unwrap();
    assert_eq!(bodies(&first), ["m0", "m1", "m2"]);
    let rest = bus.receive(&topic, "g", "c2", 10, NO_WAIT).await.unwrap();
    assert_eq!(bodies(&rest), ["m3", "m4"]);
    assert_eq!(bus.receive(&topic, "g", "c1", 10, NO_WAIT).await.unwrap(), vec![]);
    assert_eq!(first.iter().chain(&rest).map(|m| m.id.clone()).collect::<Vec<_>>(), ids);
}

async fn every_group_sees_every_message(bus: Arc<dyn Bus>, topic: String) {
    bus.ensure_group(&topic, "a").await.unwrap();
    bus.ensure_group(&topic, "b").await.unwrap();
    bus.publish(&topic, &payloads(0..3)).await.unwrap();
    let a = bus.receive(&topic, "a", "x", 10, NO_WAIT).await.unwrap();
    let b = bus.receive(&topic, "b", "y", 10, NO_WAIT).await.unwrap();
    assert_eq!(bodies(&a), ["m0", "m1", "m2"]);
    assert_eq!(bodies(&b), ["m0", "m1", "m2"]);
}

async fn unacknowledged_messages_are_reclaimed_by_another_consumer(
    bus: Arc<dyn Bus>,
    topic: String,
) {
    bus.ensure_group(&topic, "g").await.unwrap();
    bus.publish(&topic, &payloads(0..4)).await.unwrap();
    let got = bus.receive(&topic, "g", "dead", 4, NO_WAIT).await.unwrap();
    bus.ack(&topic, "g", &[got[0].id.clone(), got[2].id.clone()]).await.unwrap();
    assert_eq!(bus.pending(&topic, "g").await.unwrap(), 2);
    // Not idle long enough yet: nothing to take over.
    assert_eq!(
        bus.reclaim(&topic, "g", "alive", Duration::from_secs(60), 10).await.unwrap(),
        vec![]
    );
    tokio::time::sleep(Duration::from_millis(60)).await;
    let taken = bus.reclaim(&topic, "g", "alive", Duration::from_millis(50), 10).await.unwrap();
    assert_eq!(bodies(&taken), ["m1", "m3"]);
    bus.ack(&topic, "g", &taken.iter().map(|m| m.id.clone()).collect::<Vec<_>>()).await.unwrap();
    assert_eq!(bus.pending(&topic, "g").await.unwrap(), 0);
    assert_eq!(bus.reclaim(&topic, "g", "alive", Duration::ZERO, 10).await.unwrap(), vec![]);
}

async fn a_blocked_receive_wakes_on_publish(bus: Arc<dyn Bus>, topic: String) {
    bus.ensure_group(&topic, "g").await.unwrap();
    let publisher = {
        let (bus, topic) = (bus.clone(), topic.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            bus.publish(&topic, &payloads(7..8)).await.unwrap();
        })
    };
    let got = bus.receive(&topic, "g", "c", 10, Duration::from_secs(20)).await.unwrap();
    assert_eq!(bodies(&got), ["m7"]);
    publisher.await.unwrap();
}

async fn publish_once_queues_a_key_once_and_returns_the_first_record(
    bus: Arc<dyn Bus>,
    topic: String,
) {
    bus.ensure_group(&topic, "g").await.unwrap();
    let ttl = Duration::from_secs(60);
    let tries = (0..50).map(|i| {
        let (bus, topic) = (bus.clone(), topic.clone());
        tokio::spawn(async move {
            let record = format!("record{i}").into_bytes();
            bus.publish_once(&topic, "user1:key1", &record, b"m-once", ttl).await.unwrap()
        })
    });
    let outcomes = futures::future::join_all(tries).await;
    let published: Vec<_> =
        outcomes.iter().filter(|o| matches!(o.as_ref().unwrap(), Once::Published(_))).collect();
    assert_eq!(published.len(), 1, "{outcomes:?}");
    let existing: std::collections::HashSet<_> = outcomes
        .iter()
        .filter_map(|o| match o.as_ref().unwrap() {
            Once::Existing(record) => Some(record.clone()),
            Once::Published(_) => None,
        })
        .collect();
    assert_eq!(existing.len(), 1, "every retry sees the same first record");
    // Another key publishes; exactly two messages are queued.
    let other = bus.publish_once(&topic, "user1:key2", b"r", b"m-other", ttl).await.unwrap();
    assert!(matches!(other, Once::Published(_)));
    let got = bus.receive(&topic, "g", "c", 10, Duration::from_millis(10)).await.unwrap();
    assert_eq!(bodies(&got), ["m-once", "m-other"]);
}

async fn a_publish_once_key_expires_after_its_ttl(bus: Arc<dyn Bus>, topic: String) {
    let ttl = Duration::from_millis(50);
    let first = bus.publish_once(&topic, "k", b"r1", b"m", ttl).await.unwrap();
    assert!(matches!(first, Once::Published(_)));
    assert_eq!(
        bus.publish_once(&topic, "k", b"r2", b"m", ttl).await.unwrap(),
        Once::Existing(b"r1".to_vec())
    );
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert!(matches!(
        bus.publish_once(&topic, "k", b"r3", b"m", ttl).await.unwrap(),
        Once::Published(_)
    ));
}

async fn a_receive_with_no_wait_returns_at_once_when_empty(bus: Arc<dyn Bus>, topic: String) {
    bus.ensure_group(&topic, "g").await.unwrap();
    for wait in [Duration::ZERO, Duration::from_micros(300)] {
        // Bounded only to fail instead of hanging: a zero wait must not block.
        let got =
            tokio::time::timeout(Duration::from_secs(10), bus.receive(&topic, "g", "c", 10, wait))
                .await
                .expect("a receive with no wait returned");
        assert_eq!(got.unwrap(), vec![]);
    }
}

async fn the_backlog_counts_undelivered_and_pending_messages(bus: Arc<dyn Bus>, topic: String) {
    bus.ensure_group(&topic, "g").await.unwrap();
    assert_eq!(bus.backlog(&topic, "g").await.unwrap(), 0);
    bus.publish(&topic, &payloads(0..5)).await.unwrap();
    assert_eq!(bus.backlog(&topic, "g").await.unwrap(), 5);
    let got = bus.receive(&topic, "g", "c", 2, Duration::from_millis(10)).await.unwrap();
    assert_eq!(bus.backlog(&topic, "g").await.unwrap(), 5, "received but pending still counts");
    bus.ack(&topic, "g", &got.iter().map(|m| m.id.clone()).collect::<Vec<_>>()).await.unwrap();
    assert_eq!(bus.backlog(&topic, "g").await.unwrap(), 3);
}

async fn a_consumer_idling_on_an_empty_topic_does_not_stall_another(
    bus: Arc<dyn Bus>,
    topic: String,
) {
    let idle_topic = format!("{topic}-idle");
    bus.ensure_group(&idle_topic, "g").await.unwrap();
    bus.ensure_group(&topic, "g").await.unwrap();
    let idle = {
        let bus = bus.clone();
        tokio::spawn(async move {
            bus.receive(&idle_topic, "g", "idler", 10, Duration::from_secs(20)).await.unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    bus.publish(&topic, &payloads(0..1)).await.unwrap();
    let got = bus.receive(&topic, "g", "worker", 10, Duration::from_secs(20)).await.unwrap();
    assert_eq!(bodies(&got), ["m0"]);
    assert!(!idle.is_finished(), "the worker's read waited for the idler's");
    idle.abort();
}

/// Two modules in one process may name their consumers alike (`<process>-p0`): a consumer
/// idling on one topic never stalls its namesake on another.
async fn namesakes_on_two_topics_do_not_stall_each_other(bus: Arc<dyn Bus>, topic: String) {
    let idle_topic = format!("{topic}-idle");
    bus.ensure_group(&idle_topic, "processors").await.unwrap();
    bus.ensure_group(&topic, "persisters").await.unwrap();
    let idle = {
        let bus = bus.clone();
        tokio::spawn(async move {
            bus.receive(&idle_topic, "processors", "p0", 10, Duration::from_secs(20)).await.unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    bus.publish(&topic, &payloads(0..1)).await.unwrap();
    let started = std::time::Instant::now();
    let got = bus.receive(&topic, "persisters", "p0", 10, Duration::from_secs(20)).await.unwrap();
    assert_eq!(bodies(&got), ["m0"]);
    assert!(started.elapsed() < Duration::from_secs(10), "the namesake's read waited");
    assert!(!idle.is_finished(), "the read waited for its namesake's");
    idle.abort();
}

async fn consumers_of_one_group_racing_on_publishes_receive_every_message_once(
    bus: Arc<dyn Bus>,
    topic: String,
) {
    bus.ensure_group(&topic, "g").await.unwrap();
    bus.ensure_group(&topic, "other").await.unwrap();
    let consumers: Vec<_> = (0..4)
        .map(|c| {
            let (bus, topic) = (bus.clone(), topic.clone());
            tokio::spawn(async move {
                let mut got = Vec::new();
                while got.len() < 200 {
                    let batch = bus
                        .receive(&topic, "g", &format!("c{c}"), 7, Duration::from_secs(2))
                        .await
                        .unwrap();
                    if batch.is_empty() {
                        break;
                    }
                    got.extend(bodies(&batch));
                }
                got
            })
        })
        .collect();
    // Forty publishes, each waking every consumer; most wake-ups find nothing left.
    for i in 0..40 {
        bus.publish(&topic, &payloads(i * 5..i * 5 + 5)).await.unwrap();
        if i % 8 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let mut all = Vec::new();
    for c in consumers {
        all.extend(c.await.unwrap());
    }
    all.sort();
    let mut expected: Vec<String> = (0..200).map(|i| format!("m{i}")).collect();
    expected.sort();
    assert_eq!(all, expected);
    // Another group still has every message, and this one nothing more.
    let other = bus.receive(&topic, "other", "o", 500, NO_WAIT).await.unwrap();
    assert_eq!(other.len(), 200);
    assert_eq!(bus.receive(&topic, "g", "c0", 500, NO_WAIT).await.unwrap(), vec![]);
}

macro_rules! contract {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;
            contract!(@tests $make;
                a_group_receives_every_message_once_in_order,
                every_group_sees_every_message,
                unacknowledged_messages_are_reclaimed_by_another_consumer,
                a_blocked_receive_wakes_on_publish,
                publish_once_queues_a_key_once_and_returns_the_first_record,
                a_publish_once_key_expires_after_its_ttl,
                a_receive_with_no_wait_returns_at_once_when_empty,
                the_backlog_counts_undelivered_and_pending_messages,
                a_consumer_idling_on_an_empty_topic_does_not_stall_another,
                namesakes_on_two_topics_do_not_stall_each_other,
                consumers_of_one_group_racing_on_publishes_receive_every_message_once,
            );
        }
    };
    (@tests $make:expr; $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let bus: Arc<dyn Bus> = $make.await;
                super::$name(bus, format!("{}topic", key_prefix())).await;
            }
        )+
    };
}

contract!(memory, async { MemoryBus::new() as Arc<dyn Bus> });
contract!(sqlite, async {
    let dir = tempfile::tempdir().unwrap().keep();
    SqliteBus::open(&dir.join("bus.db")).await.unwrap() as Arc<dyn Bus>
});
contract!(redis, async {
    Arc::new(RedisBus::connect(&servers().redis_url, "").await.unwrap()) as Arc<dyn Bus>
});
contract!(redis_cluster, async {
    Arc::new(RedisBus::connect(ewpm_testkit::redis_cluster_url(), "").await.unwrap())
        as Arc<dyn Bus>
});

#[tokio::test]
async fn the_sqlite_bus_keeps_queued_and_pending_messages_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bus.db");
    {
        let bus = SqliteBus::open(&path).await.unwrap();
        bus.ensure_group("t", "g").await.unwrap();
        bus.publish("t", &payloads(0..3)).await.unwrap();
        // m0 is received and never acknowledged: its consumer "dies" with the process.
        let got = bus.receive("t", "g", "dead", 1, Duration::ZERO).await.unwrap();
        assert_eq!(bodies(&got), ["m0"]);
    }
    let bus = SqliteBus::open(&path).await.unwrap();
    bus.ensure_group("t", "g").await.unwrap();
    assert_eq!(bus.backlog("t", "g").await.unwrap(), 3);
    let reclaimed = bus.reclaim("t", "g", "next", Duration::ZERO, 10).await.unwrap();
    assert_eq!(bodies(&reclaimed), ["m0"]);
    let rest = bus.receive("t", "g", "next", 10, Duration::ZERO).await.unwrap();
    assert_eq!(bodies(&rest), ["m1", "m2"]);
    let ids: Vec<String> = rest.iter().chain(&reclaimed).map(|m| m.id.clone()).collect();
    bus.ack("t", "g", &ids).await.unwrap();
    assert_eq!(bus.backlog("t", "g").await.unwrap(), 0);
    // Numbering goes on where it stopped, and what every group acknowledged is gone (a new
    // group starts after it).
    assert_eq!(bus.publish("t", &payloads(3..4)).await.unwrap(), ["4"]);
    bus.ensure_group("t", "late").await.unwrap();
    let late = bus.receive("t", "late", "l", 10, Duration::ZERO).await.unwrap();
    assert_eq!((bodies(&late), late[0].id.as_str()), (vec!["m3".to_string()], "4"));
    drop(bus);
    // Once more, after a restart that follows only publishes.
    let bus = SqliteBus::open(&path).await.unwrap();
    assert_eq!(bus.publish("t", &payloads(4..6)).await.unwrap(), ["5", "6"]);
    let got = bus.receive("t", "g", "next", 10, Duration::ZERO).await.unwrap();
    assert_eq!(bodies(&got), ["m3", "m4", "m5"]);
    // m3 (received by "late", not acknowledged), m4 and m5.
    assert_eq!(bus.backlog("t", "late").await.unwrap(), 3);
}

/// Entries in the Redis stream of `topic` under `prefix`.
async fn stream_len(prefix: &str, topic: &str) -> u64 {
    use fred::prelude::{ClientLike, StreamsInterface};
    let config = fred::prelude::Config::from_url(&servers().redis_url).unwrap();
    let client = fred::types::Builder::from_config(config).build().unwrap();
    client.init().await.unwrap();
    client.xlen(format!("{prefix}bus:{{{topic}}}")).await.unwrap()
}

#[tokio::test]
async fn redis_streams_are_trimmed_of_what_every_group_acknowledged() {
    let prefix = key_prefix();
    let bus = RedisBus::connect(&servers().redis_url, &prefix).await.unwrap();
    bus.ensure_group("t", "fast").await.unwrap();
    bus.ensure_group("t", "slow").await.unwrap();
    bus.publish("t", &payloads(0..100)).await.unwrap();
    let all = |group: &'static str| {
        let bus = &bus;
        async move {
            let got = bus.receive("t", group, "c", 1000, Duration::from_millis(10)).await.unwrap();
            let ids: Vec<String> = got.iter().map(|m| m.id.clone()).collect();
            bus.ack("t", group, &ids).await.unwrap();
        }
    };
    // One group done, the other has not read: nothing may go.
    all("fast").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(stream_len(&prefix, "t").await, 100);
    // Both done: the stream shrinks to at most the last delivered entry (trims run at most
    // once a second, after an ack).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    all("slow").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while stream_len(&prefix, "t").await > 1 {
        assert!(std::time::Instant::now() < deadline, "the stream was not trimmed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_redis_stream_stays_capped_while_a_group_lags_and_its_backlog_is_known() {
    let prefix = key_prefix();
    let bus = RedisBus::connect(&servers().redis_url, &prefix).await.unwrap().with_max_len(1000);
    bus.ensure_group("t", "abandoned").await.unwrap();
    for chunk in 0..10 {
        bus.publish("t", &payloads(chunk * 500..(chunk + 1) * 500)).await.unwrap();
    }
    bus.publish_once("t", "k", b"r", b"once", Duration::from_secs(60)).await.unwrap();
    // `MAXLEN ~` trims whole radix-tree nodes (100 entries each by default): about 1000.
    let len = stream_len(&prefix, "t").await;
    assert!((1000..=1100).contains(&len), "5,001 published, {len} kept with a cap of 1000");
    // The group never read: what it can still read is what the stream kept.
    assert_eq!(bus.backlog("t", "abandoned").await.unwrap(), len);
}

#[tokio::test]
async fn a_group_redis_lost_with_its_data_is_created_again_by_its_consumers() {
    use fred::prelude::{ClientLike, KeysInterface};
    let prefix = key_prefix();
    let bus = RedisBus::connect(&servers().redis_url, &prefix).await.unwrap();
    bus.ensure_group("t", "g").await.unwrap();
    bus.publish("t", &payloads(0..3)).await.unwrap();
    // Redis restarts without persistence: the stream and its groups are gone.
    let config = fred::prelude::Config::from_url(&servers().redis_url).unwrap();
    let client = fred::types::Builder::from_config(config).build().unwrap();
    client.init().await.unwrap();
    let _: i64 = client.del(format!("{prefix}bus:{{t}}")).await.unwrap();
    assert_eq!(bus.reclaim("t", "g", "c", Duration::ZERO, 10).await.unwrap(), Vec::new());
    bus.publish("t", &payloads(3..4)).await.unwrap();
    let got = bus.receive("t", "g", "c", 10, Duration::from_millis(10)).await.unwrap();
    assert_eq!(got.into_iter().map(|m| m.payload).collect::<Vec<_>>(), payloads(3..4));
    // The same when the first call after the loss is a read.
    let _: i64 = client.del(format!("{prefix}bus:{{t}}")).await.unwrap();
    assert_eq!(
        bus.receive("t", "g", "c", 10, Duration::from_millis(10)).await.unwrap(),
        Vec::new()
    );
    bus.publish("t", &payloads(4..5)).await.unwrap();
    let got = bus.receive("t", "g", "c", 10, Duration::from_millis(10)).await.unwrap();
    assert_eq!(got.into_iter().map(|m| m.payload).collect::<Vec<_>>(), payloads(4..5));
}
