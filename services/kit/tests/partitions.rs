//! Partitioned topics on every bus the mesh or the embedded mode can run on (memory, Redis,
//! and a three-master Redis Cluster, where the partitions live in different hash slots):
//! keyed publishes keep one key on one partition and in order, keys spread over the
//! partitions, a consumer reads every partition and handles each message once, backlogs sum
//! over partitions, and a keyed publish-once is remembered on its partition.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use ewpm_kit::{
    batch::BatchRule,
    bus::{self, Bus, MemoryBus, Once, Partitioned, RedisBus},
    consumer::{Consumer, ConsumerConfig, Handler},
};
use ewpm_testkit::{key_prefix, redis_cluster_url, servers};
use tokio_util::sync::CancellationToken;

const PARTITIONS: usize = 4;

/// Collects what it handles, in order.
#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<String>>>);

#[async_trait]
impl Handler for Collect {
    type Item = String;

    fn decode(&self, payload: &[u8]) -> anyhow::Result<String> {
        Ok(String::from_utf8(payload.to_vec())?)
    }

    async fn handle(&self, items: &[String]) -> anyhow::Result<()> {
        self.0.lock().unwrap().extend(items.iter().cloned());
        Ok(())
    }
}

async fn keyed_messages_keep_their_partition_and_order(bus: Arc<dyn Bus>, topic: String) {
    let bus = Partitioned::new(bus, PARTITIONS);
    assert_eq!(bus.partitions(&topic), PARTITIONS);
    let topics = bus::partition_topics(&bus, &topic);
    for t in &topics {
        bus.ensure_group(t, "g").await.unwrap();
    }
    for round in 0..5 {
        for user in 0..20 {
            let key = format!("user-{user}");
            bus.publish_keyed(&topic, &key, &[format!("{key}:{round}").into_bytes()])
                .await
                .unwrap();
        }
    }
    assert_eq!(bus::total_backlog(&bus, &topic, "g").await.unwrap(), 100);
    let mut seen: BTreeMap<String, (usize, Vec<u32>)> = BTreeMap::new();
    for (i, t) in topics.iter().enumerate() {
        let got = bus.receive(t, "g", "c", 1000, Duration::ZERO).await.unwrap();
        for m in &got {
            let text = String::from_utf8(m.payload.clone()).unwrap();
            let (key, round) = text.split_once(':').unwrap();
            let entry = seen.entry(key.to_string()).or_insert((i, Vec::new()));
            assert_eq!(entry.0, i, "{key} on two partitions");
            assert_eq!(bus::partition_of(key, PARTITIONS), i);
            entry.1.push(round.parse().unwrap());
        }
        let ids: Vec<String> = got.iter().map(|m| m.id.clone()).collect();
        bus.ack(t, "g", &ids).await.unwrap();
    }
    assert_eq!(seen.len(), 20);
    for (key, (_, rounds)) in &seen {
        assert_eq!(rounds, &[0, 1, 2, 3, 4], "{key} in order");
    }
    let used: BTreeSet<usize> = seen.values().map(|(p, _)| *p).collect();
    assert_eq!(used.len(), PARTITIONS, "20 keys use every partition");
    assert_eq!(bus::total_backlog(&bus, &topic, "g").await.unwrap(), 0);
}

async fn a_consumer_reads_every_partition_once(bus: Arc<dyn Bus>, topic: String) {
    let bus: Arc<dyn Bus> = Arc::new(Partitioned::new(bus, PARTITIONS));
    let collect = Collect::default();
    let topic: &'static str = Box::leak(topic.into_boxed_str());
    let consumer = Consumer::new(
        bus.clone(),
        collect.clone(),
        ConsumerConfig {
            topic,
            group: "readers",
            consumer: "c1".into(),
            rule: BatchRule { size: 10, max_wait: Duration::from_millis(20) },
            take: 0,
            reclaim_idle: Duration::from_secs(30),
        },
    );
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(consumer.run(shutdown.clone()));
    // Groups exist once the loops started; publish after that (a new group starts at the
    // oldest retained message anyway).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let items = (0..400).map(|i| (format!("k{}", i % 37), format!("k{}:{i}", i % 37).into_bytes()));
    bus::publish_by_key(bus.as_ref(), topic, items).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while collect.0.lock().unwrap().len() < 400 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of 400 handled",
            collect.0.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    running.await.unwrap();
    let handled = collect.0.lock().unwrap().clone();
    assert_eq!(handled.len(), 400, "each once");
    let distinct: BTreeSet<&String> = handled.iter().collect();
    assert_eq!(distinct.len(), 400);
    // Per key, in the order published.
    let mut last: BTreeMap<&str, u32> = BTreeMap::new();
    for h in &handled {
        let (key, i) = h.split_once(':').unwrap();
        let i: u32 = i.parse().unwrap();
        if let Some(prev) = last.insert(key, i) {
            assert!(prev < i, "{key}: {i} after {prev}");
        }
    }
    assert_eq!(bus::total_backlog(bus.as_ref(), topic, "readers").await.unwrap(), 0);
}

async fn publish_once_is_remembered_on_its_partition(bus: Arc<dyn Bus>, topic: String) {
    let bus = Partitioned::new(bus, PARTITIONS);
    let ttl = Duration::from_secs(60);
    let first = bus.publish_once_keyed(&topic, "ann", "k1", b"r1", b"p1", ttl).await.unwrap();
    assert!(matches!(first, Once::Published(_)));
    let again = bus.publish_once_keyed(&topic, "ann", "k1", b"r2", b"p2", ttl).await.unwrap();
    assert_eq!(again, Once::Existing(b"r1".to_vec()));
    let t = bus::partition_topic(&topic, bus::partition_of("ann", PARTITIONS), PARTITIONS);
    bus.ensure_group(&t, "g").await.unwrap();
    let got = bus.receive(&t, "g", "c", 10, Duration::ZERO).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].payload, b"p1");
}

macro_rules! backends {
    ($($backend:ident => $make:expr),+ $(,)?) => {
        $(
            mod $backend {
                use super::*;

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn keyed_messages_keep_their_partition_and_order() {
                    super::keyed_messages_keep_their_partition_and_order($make.await, format!("{}t", key_prefix())).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn a_consumer_reads_every_partition_once() {
                    super::a_consumer_reads_every_partition_once($make.await, format!("{}t", key_prefix())).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn publish_once_is_remembered_on_its_partition() {
                    super::publish_once_is_remembered_on_its_partition($make.await, format!("{}t", key_prefix())).await;
                }
            }
        )+
    };
}

backends!(
    memory => async { MemoryBus::new() as Arc<dyn Bus> },
    redis => async { Arc::new(RedisBus::connect(&servers().redis_url, "").await.unwrap()) as Arc<dyn Bus> },
    redis_cluster => async { Arc::new(RedisBus::connect(redis_cluster_url(), "").await.unwrap()) as Arc<dyn Bus> },
);

/// Fails every batch: what it receives stays pending.
struct Refuse;

#[async_trait]
impl Handler for Refuse {
    type Item = ();

    fn decode(&self, _: &[u8]) -> anyhow::Result<()> {
        Ok(())
    }

    async fn handle(&self, _: &[()]) -> anyhow::Result<()> {
        anyhow::bail!("not now")
    }
}

/// The backlog gauge has a series per partition, set by the consumer whether or not its
/// batches succeed (here none does), and on Redis for every group of a trimmed stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backlog_gauge_shows_every_partition_and_every_group() {
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .expect("the only recorder of this test binary");
    let bus: Arc<dyn Bus> = Arc::new(Partitioned::new(MemoryBus::new(), PARTITIONS));
    const TOPIC: &str = "gauged";
    for p in 0..PARTITIONS {
        bus.ensure_group(&bus::partition_topic(TOPIC, p, PARTITIONS), "stuck").await.unwrap();
    }
    let items = (0..40).map(|i| (format!("k{i}"), b"x".to_vec()));
    bus::publish_by_key(bus.as_ref(), TOPIC, items).await.unwrap();
    let mut expected = BTreeMap::new();
    for p in 0..PARTITIONS {
        let n = bus.backlog(&bus::partition_topic(TOPIC, p, PARTITIONS), "stuck").await.unwrap();
        expected.insert(p.to_string(), n);
    }
    assert_eq!(expected.values().sum::<u64>(), 40);
    assert!(expected.values().filter(|n| **n > 0).count() > 1, "keys spread: {expected:?}");
    let consumer = Consumer::new(
        bus.clone(),
        Refuse,
        ConsumerConfig {
            topic: TOPIC,
            group: "stuck",
            consumer: "c1".into(),
            rule: BatchRule { size: 100, max_wait: Duration::from_millis(10) },
            take: 0,
            reclaim_idle: Duration::from_secs(30),
        },
    );
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(consumer.run(shutdown.clone()));
    let expected = expected.into_iter().map(|(p, n)| ((p, "stuck".to_string()), n)).collect();
    wait_for_backlog_gauge(&metrics, TOPIC, &expected).await;
    shutdown.cancel();
    running.await.unwrap();

    // On Redis, a trim after an ack reports every group of the stream: also one nobody
    // consumes any more.
    let redis = RedisBus::connect(&servers().redis_url, &key_prefix()).await.unwrap();
    const ABANDONED: &str = "gauged-redis";
    redis.ensure_group(ABANDONED, "live").await.unwrap();
    redis.ensure_group(ABANDONED, "abandoned").await.unwrap();
    redis.publish(ABANDONED, &[b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]).await.unwrap();
    let got = redis.receive(ABANDONED, "live", "c1", 10, Duration::ZERO).await.unwrap();
    assert_eq!(got.len(), 3);
    let ids: Vec<String> = got.into_iter().map(|m| m.id).collect();
    redis.ack(ABANDONED, "live", &ids).await.unwrap();
    let expected = BTreeMap::from([
        (("0".to_string(), "abandoned".to_string()), 3),
        (("0".to_string(), "live".to_string()), 0),
    ]);
    wait_for_backlog_gauge(&metrics, ABANDONED, &expected).await;
}

/// Waits up to 10 s until the `ewpm_bus_group_backlog` series of `topic`, by partition and
/// group, are `expected`.
async fn wait_for_backlog_gauge(
    metrics: &metrics_exporter_prometheus::PrometheusHandle,
    topic: &str,
    expected: &BTreeMap<(String, String), u64>,
) {
    let label = |line: &str, name: &str| -> String {
        let value = line.split(&format!("{name}=\"")).nth(1).unwrap();
        value.split('"').next().unwrap().to_string()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let seen: BTreeMap<(String, String), u64> = metrics
            .render()
            .lines()
            .filter(|l| l.starts_with("ewpm_bus_group_backlog{"))
            .filter(|l| label(l, "topic") == topic)
            .map(|l| {
                let value = l.rsplit(' ').next().unwrap().parse::<f64>().unwrap();
                ((label(l, "partition"), label(l, "group")), value as u64)
            })
            .collect();
        if &seen == expected {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "gauge {seen:?}, expected {expected:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Processes that count partitions differently would strand messages: the first count a
/// Redis bus runs with is recorded, and another is refused until an operator removes it.
async fn a_redis_bus_refuses_another_partition_count(url: &str) {
    let prefix = key_prefix();
    let first = RedisBus::connect(url, &prefix).await.unwrap();
    first.claim_partitions(4).await.unwrap();
    first.claim_partitions(4).await.unwrap();
    let other = RedisBus::connect(url, &prefix).await.unwrap();
    for n in [1, 2, 8] {
        let err = format!("{:#}", other.claim_partitions(n).await.unwrap_err());
        assert!(err.contains(&format!("is {n}, but the bus under the prefix {prefix:?}")), "{err}");
        assert!(err.contains("on this Redis runs with 4"), "{err}");
        assert!(err.contains(&format!("redis-cli -c DEL {prefix}bus:partitions")), "{err}");
    }
    // Another deployment (prefix) keeps its own count.
    RedisBus::connect(url, &key_prefix()).await.unwrap().claim_partitions(2).await.unwrap();
    let client = ewpm_kit::redis::connect(url).await.unwrap();
    let _: i64 = fred::prelude::KeysInterface::del(&client, format!("{prefix}bus:partitions"))
        .await
        .unwrap();
    other.claim_partitions(2).await.unwrap();
    let err = format!("{:#}", first.claim_partitions(4).await.unwrap_err());
    assert!(err.contains("runs with 2"), "{err}");
}

#[tokio::test]
async fn a_redis_bus_refuses_another_partition_count_than_it_runs_with() {
    a_redis_bus_refuses_another_partition_count(&servers().redis_url).await;
}

#[tokio::test]
async fn a_redis_cluster_bus_refuses_another_partition_count_than_it_runs_with() {
    a_redis_bus_refuses_another_partition_count(redis_cluster_url()).await;
}
