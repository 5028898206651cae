//! `ewpm bench bus`: the bus alone on a Redis (or a Redis Cluster: a `redis-cluster://` URL),
//! once per partition count: producers publish keyed batches (`publish_by_key`, as the
//! progress writers publish score deltas) while consumers (the kit's `Consumer`, one loop per
//! partition, acknowledging each batch) read them; the figure is messages consumed per
//! second. On a cluster, partitions put one topic's streams in different hash slots, so the
//! work spreads over the masters.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use clap::Args;
use ewpm_kit::{
    CancellationToken,
    batch::BatchRule,
    bus::{self, Bus, Partitioned, RedisBus},
    consumer::{Consumer, ConsumerConfig, Handler},
};
use serde_json::json;

/// `ewpm bench bus` options.
#[derive(Debug, Args)]
pub struct BusArgs {
    /// The Redis to measure (`redis://…`, or `redis-cluster://host:port?node=host:port…`).
    #[arg(long, default_value = "redis://127.0.0.1:6379/0")]
    redis: String,
    /// Partition counts to measure, one run each.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    partitions: Vec<usize>,
    /// Seconds each run publishes.
    #[arg(long, default_value_t = 8)]
    duration: u64,
    /// Concurrent producer tasks.
    #[arg(long, default_value_t = 16)]
    producers: usize,
    /// Messages per publish call (keys spread over the partitions).
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Consumer tasks (each reads every partition), as writer tasks of one or more pods.
    #[arg(long, default_value_t = 4)]
    consumers: usize,
    /// Bytes per message.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Counts what it handles.
#[derive(Clone)]
struct Count(Arc<AtomicU64>);

#[async_trait]
impl Handler for Count {
    type Item = ();

    fn decode(&self, _payload: &[u8]) -> anyhow::Result<()> {
        Ok(())
    }

    async fn handle(&self, items: &[()]) -> anyhow::Result<()> {
        self.0.fetch_add(items.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// Runs the bench (see the module doc); returns the report.
pub async fn bus(args: BusArgs) -> anyhow::Result<serde_json::Value> {
    let mut runs = Vec::new();
    for &partitions in &args.partitions {
        let run = one(&args, partitions.max(1)).await?;
        if !args.json {
            println!(
                "partitions {:>2}: published {:>9.0}/s, consumed {:>9.0}/s, drained {:.1} s after the producers stopped",
                run["partitions"],
                run["published_per_sec"].as_f64().unwrap_or(0.0),
                run["consumed_per_sec"].as_f64().unwrap_or(0.0),
                run["drain_secs"].as_f64().unwrap_or(0.0),
            );
        }
        runs.push(run);
    }
    let base = runs.first().and_then(|r| r["consumed_per_sec"].as_f64()).unwrap_or(0.0);
    Ok(json!({
        "bench": "bus",
        "redis": ewpm_kit::db::redact(&args.redis),
        "producers": args.producers,
        "batch": args.batch,
        "consumers": args.consumers,
        "duration_secs": args.duration,
        "runs": runs.iter().map(|r| {
            let mut r = r.clone();
            r["vs_first"] = json!(r["consumed_per_sec"].as_f64().unwrap_or(0.0) / base.max(1.0));
            r
        }).collect::<Vec<_>>(),
    }))
}

async fn one(args: &BusArgs, partitions: usize) -> anyhow::Result<serde_json::Value> {
    let prefix = format!("bench-bus-{}:", uuid::Uuid::new_v4().simple());
    let redis = Arc::new(RedisBus::connect(&args.redis, &prefix).await?);
    let bus: Arc<dyn Bus> = Arc::new(Partitioned::new(redis, partitions));
    let topic: &'static str = "bench";
    for t in bus::partition_topics(bus.as_ref(), topic) {
        bus.ensure_group(&t, "readers").await?;
    }
    let consumed = Arc::new(AtomicU64::new(0));
    let stop_consumers = CancellationToken::new();
    let consumers: Vec<_> = (0..args.consumers.max(1))
        .map(|i| {
            let consumer = Consumer::new(
                bus.clone(),
                Count(consumed.clone()),
                ConsumerConfig {
                    topic,
                    group: "readers",
                    consumer: format!("c{i}"),
                    rule: BatchRule { size: 100, max_wait: Duration::from_millis(20) },
                    take: 500,
                    reclaim_idle: Duration::from_secs(30),
                },
            );
            tokio::spawn(consumer.run(stop_consumers.clone()))
        })
        .collect();
    let published = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let payload = vec![b'x'; args.size];
    let started = Instant::now();
    let producers: Vec<_> = (0..args.producers.max(1))
        .map(|p| {
            let (bus, stop, published, payload) =
                (bus.clone(), stop.clone(), published.clone(), payload.clone());
            let batch = args.batch.max(1);
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.is_cancelled() {
                    let items = (0..batch).map(|i| {
                        n += 1;
                        (format!("user-{p}-{}", (n + i as u64) % 1000), payload.clone())
                    });
                    let items: Vec<_> = items.collect();
                    if bus::publish_by_key(bus.as_ref(), topic, items).await.is_ok() {
                        published.fetch_add(batch as u64, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(args.duration)).await;
    stop.cancel();
    for p in producers {
        p.await?;
    }
    let window = started.elapsed().as_secs_f64();
    let consumed_in_window = consumed.load(Ordering::Relaxed);
    let total = published.load(Ordering::Relaxed);
    let drain_started = Instant::now();
    while consumed.load(Ordering::Relaxed) < total
        && drain_started.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain = drain_started.elapsed().as_secs_f64();
    let all = consumed.load(Ordering::Relaxed);
    stop_consumers.cancel();
    for c in consumers {
        c.await?;
    }
    // Everything published, consumed: the rate over the whole time it took.
    let consumed_per_sec = all as f64 / (window + drain);
    let client = ewpm_kit::redis::connect(&args.redis).await?;
    for t in bus::partition_topics(bus.as_ref(), topic) {
        // One key per call: on a cluster the streams live in different slots.
        let _: i64 =
            fred::prelude::KeysInterface::del(&client, format!("{prefix}bus:{{{t}}}")).await?;
    }
    Ok(json!({
        "partitions": partitions,
        "published": total,
        "consumed": all,
        "published_per_sec": total as f64 / window,
        "consumed_in_window_per_sec": consumed_in_window as f64 / window,
        "consumed_per_sec": consumed_per_sec,
        "drain_secs": drain,
        "lost": total.saturating_sub(all),
    }))
}
