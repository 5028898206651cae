//! `ewpm bench incentives`: recorded activity (`ActivityRecorded`s in `ActivityBatch`
//! messages of the progress writers' batch size, as the writers publish them; with
//! `--single-events`, one `ActivityRecorded` per message, as writers of the previous release
//! did) on the bus topic `activity`, through the incentive processors (each activity against
//! its employer's links from their own tables, cached) into streaks and awards; then a check
//! that every expected award exists exactly once.
//!
//! With `--postgres` and `--redis` the processors run as separate `ewpm serve
//! incentive-processor` processes (`--processes`, two by default), as in the mesh; without,
//! in this process on SQLite with the embedded bus.

use std::{
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use chrono::{Days, TimeDelta, Utc};
use clap::Args;
use ewpm_incentive::{PROCESSOR_GROUP, settings::IncentiveSettings, store::IncentiveStore};
use ewpm_kit::{
    auth::{Role, TokenKeys},
    bus,
    module::Module,
    timestamp,
};
use ewpm_progress::activity::{Activity, ActivityKind};
use ewpm_progress::settings::ProgressSettings;
use ewpm_proto::{
    activity::v1::ActivityKind as PbKind,
    incentive::v1::{self as pb, incentive_service_client::IncentiveServiceClient},
    progress::v1::{ACTIVITY_TOPIC, ActivityBatch},
};
use prost::Message as _;
use serde_json::json;
use tonic::Request;
use uuid::Uuid;

use crate::{BenchDb, Stack, Stores};

/// `ewpm bench incentives` options.
#[derive(Debug, Args)]
pub struct IncentiveArgs {
    /// Users; each logs a mood on `--days` consecutive days and reports a birth.
    #[arg(long, default_value_t = 20_000)]
    users: usize,
    /// Consecutive days each user logs (the streak incentive asks for 5).
    #[arg(long, default_value_t = 9)]
    days: u64,
    /// Processor processes (with --postgres and --redis).
    #[arg(long, default_value_t = 2)]
    processes: usize,
    /// Processor tasks per process.
    #[arg(long, default_value_t = 2)]
    processors: usize,
    /// Events a processor handles in one transaction at most (default: the setting,
    /// EWPM_INCENTIVE__BATCH_SIZE).
    #[arg(long)]
    batch_size: Option<usize>,
    /// PostgreSQL server (an admin URL; a throwaway database is created and dropped). Needs
    /// --redis.
    #[arg(long, requires = "redis")]
    postgres: Option<String>,
    /// Redis for the bus and award notices (under a throwaway key prefix).
    #[arg(long, requires = "postgres")]
    redis: Option<String>,
    /// Drive the client-facing path instead of publishing on the topic: LogActivity over gRPC
    /// from `--concurrency` clients → progress queue → batch writers → topic `activity` →
    /// processors.
    #[arg(long)]
    log_activity: bool,
    /// Publish one `ActivityRecorded` per message, as writers of the previous release did,
    /// instead of one `ActivityBatch` per writer batch (EWPM_PROGRESS__BATCH_SIZE activities).
    #[arg(long, conflicts_with = "log_activity")]
    single_events: bool,
    /// Concurrent LogActivity clients (with --log-activity), over 4 connections.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Runs the bench.
pub async fn incentives(
    args: IncentiveArgs,
    modules: &'static [&'static dyn Module],
) -> anyhow::Result<serde_json::Value> {
    // Embedded, the processors run in this process; with Redis, in processes of their own.
    let in_process = args.redis.is_none();
    let mut overrides = vec![
        ("EWPM_INCENTIVE__PROCESSORS", args.processors.max(1).to_string()),
        ("EWPM_INCENTIVE__PROCESSOR_ENABLED", in_process.to_string()),
    ];
    if let Some(size) = args.batch_size {
        overrides.push(("EWPM_INCENTIVE__BATCH_SIZE", size.max(1).to_string()));
    }
    let settings = crate::settings(modules, &overrides)?;
    let batch_size = settings.section::<IncentiveSettings>("incentive")?.batch_size;
    let secret = Uuid::new_v4().to_string();
    let keys = TokenKeys::new(&secret, &settings.auth);
    let prefix = format!("bench{}:", Uuid::new_v4().simple());
    let bench_db = BenchDb::create(args.postgres.as_deref()).await?;
    let progress_batch = settings.section::<ProgressSettings>("progress")?.batch_size.max(1);
    let events = if args.log_activity {
        String::new()
    } else if args.single_events {
        ", one event per message".to_string()
    } else {
        format!(", {progress_batch} events per message")
    };
    let dir = bench_db.sqlite_dir().map(std::path::Path::to_path_buf);
    let (stores, backend) = match (&args.redis, &dir) {
        (Some(redis), _) => (
            Stores::Redis(redis, &prefix),
            format!(
                "postgres+redis, {} processor processes × {} tasks, batches of {batch_size}{events}",
                args.processes, args.processors
            ),
        ),
        (None, Some(dir)) => (
            Stores::Embedded(dir),
            format!(
                "embedded (sqlite, events in a sqlite file), {} processor tasks, batches of {batch_size}{events}",
                args.processors
            ),
        ),
        (None, None) => anyhow::bail!("--postgres needs --redis"),
    };
    // The incentive service, for seeding the links (and, embedded, the processors); with
    // --log-activity the challenge service and the progress service with its writers too
    // (publishing on the topic `activity`).
    let start: &[&str] =
        if args.log_activity { &["incentive", "challenge", "progress"] } else { &["incentive"] };
    let stack = Stack::start(settings, keys.clone(), modules, start, &bench_db.url, stores).await?;
    let (uri, conn, bus) = (stack.uri.clone(), stack.db.clone(), stack.bus.clone());
    seed(&uri, &keys).await?;

    // Processor processes, started and idle before any event is published.
    let mut children = Vec::new();
    if let (Some(_), Some(redis)) = (&args.postgres, &args.redis) {
        for _ in 0..args.processes.max(1) {
            let child = Command::new(std::env::current_exe()?)
                .args(["serve", "incentive-processor"])
                .env("DATABASE_URL", &bench_db.url)
                .env("REDIS_URL", redis)
                .env("EWPM_REDIS_PREFIX", &prefix)
                .env("EWPM_AUTH__SECRET", &secret)
                .env("EWPM_GRPC__ADDR", "127.0.0.1:0")
                .env("EWPM_METRICS__ADDR", "127.0.0.1:0")
                .env("EWPM_LOG__LEVEL", "warn")
                .env("EWPM_INCENTIVE__PROCESSORS", args.processors.to_string())
                .env("EWPM_INCENTIVE__BATCH_SIZE", batch_size.to_string())
                .stdout(Stdio::null())
                .spawn()
                .context("start a processor process")?;
            children.push(ChildGuard(child));
        }
    }
    bus.ensure_group(ACTIVITY_TOPIC, PROCESSOR_GROUP).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Activity, day by day as it would arrive, as the progress writers publish it.
    let users: Vec<String> = (0..args.users).map(|u| format!("user-{u:06}")).collect();
    let today = Utc::now().date_naive();
    let noon =
        |days_ago: u64| (today - Days::new(days_ago)).and_hms_opt(12, 0, 0).unwrap().and_utc();
    let activity = |user: &String, kind, days_ago| Activity {
        id: Uuid::now_v7(),
        kind,
        user_id: user.clone(),
        employer_id: Some("acme".into()),
        value: None,
        occurred_at: noon(days_ago),
    };
    let mut activities = Vec::with_capacity(args.users * (args.days as usize + 1));
    for days_ago in (1..=args.days).rev() {
        activities.extend(users.iter().map(|u| activity(u, ActivityKind::Mood, days_ago)));
    }
    activities.extend(users.iter().map(|u| activity(u, ActivityKind::Birth, 1)));
    let total = activities.len() as u64;
    let started = Instant::now();
    if args.log_activity {
        log_activities(&uri, &keys, activities, args.concurrency).await?;
    } else if args.single_events {
        for chunk in activities.chunks(1000) {
            let events: Vec<Vec<u8>> = chunk.iter().map(|a| a.to_event().encode_to_vec()).collect();
            bus.publish(ACTIVITY_TOPIC, &events).await?;
        }
    } else {
        // A writer's batch per message, 20 messages per publish (1,000 activities by default).
        let per_message = progress_batch;
        let batches: Vec<Vec<u8>> = activities
            .chunks(per_message)
            .map(|chunk| {
                ActivityBatch { activities: chunk.iter().map(Activity::to_event).collect() }
                    .encode_to_vec()
            })
            .collect();
        for chunk in batches.chunks(20) {
            bus.publish(ACTIVITY_TOPIC, chunk).await?;
        }
    }
    let published = started.elapsed();
    let mut peak_backlog = 0;
    loop {
        let writes = if args.log_activity {
            bus::total_backlog(
                bus.as_ref(),
                ewpm_progress::PROGRESS_TOPIC,
                ewpm_progress::WRITER_GROUP,
            )
            .await?
        } else {
            0
        };
        let backlog =
            bus::total_backlog(bus.as_ref(), ACTIVITY_TOPIC, PROCESSOR_GROUP).await? + writes;
        peak_backlog = peak_backlog.max(backlog);
        if backlog == 0 {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "processors did not drain in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let processed = started.elapsed();

    // Exactly once: every user one streak award (once per user) and one birth award.
    let awards = IncentiveStore::new(conn.clone()).all_awards().await?;
    let mut keys_seen: Vec<(String, String)> =
        awards.iter().map(|a| (a.user_id.clone(), a.incentive_slug.clone())).collect();
    keys_seen.sort();
    keys_seen.dedup();
    let expected = if args.days >= 5 { 2 * args.users } else { args.users };
    let exact = awards.len() == expected && keys_seen.len() == expected;
    let rate = total as f64 / processed.as_secs_f64();
    let publish_rate = total as f64 / published.as_secs_f64();
    let report = json!({
                "bench": "incentives",
                "backend": backend,
                "events": total,
                "path": if args.log_activity { "LogActivity" } else { "activity topic" },
                "published_per_sec": publish_rate.round(),
                "processed_per_sec": rate.round(),
                "seconds": processed.as_secs_f64(),
                "peak_backlog": peak_backlog,
                "awards": awards.len(),
                "expected_awards": expected,
                "exactly_once": exact,
    });
    if !args.json {
        println!("ewpm bench incentives: {backend}");
        println!(
            "  {total} activity events ({} users × {} mood days + a birth)",
            args.users, args.days
        );
        let (from, to) =
            if args.log_activity { ("LogActivity", "accepted") } else { ("topic", "bus") };
        println!(
            "  {:<22} {publish_rate:>9.0} events/s  ({:.2} s)",
            format!("{from} → {to}"),
            published.as_secs_f64()
        );
        println!(
            "  {:<22} {rate:>9.0} events/s  ({:.2} s until everything drained)",
            format!("{from} → awards"),
            processed.as_secs_f64()
        );
        println!(
            "  awards                 {} of {expected} expected, each exactly once: {}",
            awards.len(),
            if exact { "yes" } else { "NO" }
        );
    }
    drop(children);
    stack.stop().await;
    bench_db.drop_database().await;
    anyhow::ensure!(
        exact,
        "awards were not exactly once: {} for {expected} expected",
        awards.len()
    );
    Ok(report)
}

/// Sends every activity with LogActivity as its user, from `concurrency` clients; fails on
/// any refusal but push-back (which is retried, as a client would).
async fn log_activities(
    uri: &str,
    keys: &TokenKeys,
    activities: Vec<Activity>,
    concurrency: usize,
) -> anyhow::Result<()> {
    use ewpm_proto::progress::v1::{
        LogActivityRequest, progress_service_client::ProgressServiceClient,
    };
    let mut channels = Vec::new();
    for _ in 0..4 {
        channels.push(tonic::transport::Channel::from_shared(uri.to_string())?.connect().await?);
    }
    let mut tokens = std::collections::HashMap::new();
    for a in &activities {
        tokens.entry(a.user_id.clone()).or_insert_with(|| {
            format!("Bearer {}", keys.mint(&a.user_id, Role::Employee, Some("acme")))
        });
    }
    let tokens = Arc::new(tokens);
    let queue = Arc::new(std::sync::Mutex::new(activities.into_iter()));
    let mut tasks = Vec::new();
    for i in 0..concurrency.max(1) {
        let mut client = ProgressServiceClient::new(channels[i % channels.len()].clone());
        let (queue, tokens) = (queue.clone(), tokens.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let next = queue.lock().expect("queue").next();
                let Some(a) = next else { return Ok::<(), anyhow::Error>(()) };
                loop {
                    let mut request = Request::new(LogActivityRequest {
                        kind: a.kind.to_proto(),
                        value: a.value,
                        note: String::new(),
                        occurred_at: Some(timestamp::to_proto(a.occurred_at)),
                        idempotency_key: String::new(),
                    });
                    request
                        .metadata_mut()
                        .insert("authorization", tokens[&a.user_id].parse().expect("header"));
                    match client.log_activity(request).await {
                        Ok(_) => break,
                        Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(s) => anyhow::bail!("LogActivity refused: {s:?}"),
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// A child process killed when dropped.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        drop(self.0.kill());
        drop(self.0.wait());
    }
}

/// The note's two incentives, linked by acme (days in Berlin, open-ended).
async fn seed(uri: &str, keys: &TokenKeys) -> anyhow::Result<()> {
    let channel = ewpm_kit::client::channel(uri)?;
    let mut client = IncentiveServiceClient::new(channel);
    let admin = format!("Bearer {}", keys.mint("bench-admin", Role::Admin, None));
    fn with<T>(auth: &str, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        r.metadata_mut().insert("authorization", auth.parse().expect("header"));
        r
    }
    let streak =
        pb::Rule { kind: Some(pb::rule::Kind::ConsecutiveDays(pb::ConsecutiveDays { days: 5 })) };
    let each = pb::Rule { kind: Some(pb::rule::Kind::EachOccurrence(pb::EachOccurrence {})) };
    for (slug, rule, kinds) in [
        (
            "data-logged-5-sequential-days",
            streak,
            vec![PbKind::Mood as i32, PbKind::Symptom as i32],
        ),
        ("user-birth", each, vec![PbKind::Birth as i32]),
    ] {
        client
            .create_incentive(with(
                &admin,
                pb::CreateIncentiveRequest {
                    slug: slug.into(),
                    description: slug.into(),
                    rule: Some(rule),
                    trigger_kinds: kinds,
                },
            ))
            .await
            .with_context(|| format!("create {slug}"))?;
        client
            .create_employer_incentive(with(
                &admin,
                pb::CreateEmployerIncentiveRequest {
                    employer_id: "acme".into(),
                    program_id: "bench".into(),
                    incentive_slug: slug.into(),
                    reward: "pregnancy pillow".into(),
                    time_zone: "Europe/Berlin".into(),
                    start_time: Some(timestamp::to_proto(Utc::now() - TimeDelta::days(400))),
                    ..Default::default()
                },
            ))
            .await
            .with_context(|| format!("link {slug}"))?;
    }
    Ok(())
}
