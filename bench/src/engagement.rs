//! `ewpm bench engagement`: fan-engagement match event ingest against the target's own
//! limits, in four phases of `--duration` seconds each (the lag phase runs its probes):
//!
//! 1. the bare echo (`grpc.health.v1.Health/Check`) at the same concurrency over the same
//!    connections, for the ratio;
//! 2. batched `IngestEvents` (`--batch` events per call over `--matches` matches from
//!    `--sources` ingest tokens, every event with its own client id and a match minute):
//!    events/s accepted as the service acknowledged them, and events/s persisted — the
//!    accepted events over the time from the phase's start until the metrics of every match
//!    counted all of them (`GetMatchMetrics.total_events`, summed);
//! 3. the metrics-visible lag: single `probe` events sent to a watched match (beside a paced
//!    load of `--probe-load` events/s), from the send to the `WatchMatch` push counting it;
//! 4. single events over REST through the edge (`POST /api/events` with the seed note's
//!    body) against the edge's `/health` (answered from memory, no upstream call) at the same
//!    concurrency; the in-process stack gets an in-process edge, a running target the one
//!    given with `--edge`.
//!
//! A call pushed back (RESOURCE_EXHAUSTED: `QUEUE_FULL` when the persisters' backlog is
//! full, `RATE_LIMITED` when a source is over its rate) is counted by its reason and retried
//! after its RetryInfo delay, as a client should. Figures are printed (or emitted as JSON),
//! never asserted.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::Args;
use ewpm_kit::{CancellationToken, auth::Role, module::Module};
use ewpm_proto::engagement::v1::{self as pb, engagement_service_client::EngagementServiceClient};
use prost_types::{Struct, Value, value::Kind};
use serde_json::json;
use tonic::{
    Request,
    metadata::{Ascii, MetadataValue},
    transport::Channel,
};

use crate::{
    percentile,
    pipeline::{Phase, PipelineArgs, Target, channels, closed_loop, echo},
};

/// `ewpm bench engagement` options.
#[derive(Debug, Args)]
pub struct EngagementArgs {
    #[command(flatten)]
    pub(crate) pipeline: PipelineArgs,
    /// Events per IngestEvents call of the ingest phase.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Matches the ingest load spreads over.
    #[arg(long, default_value_t = 10)]
    matches: usize,
    /// Event sources: ingest tokens with subjects of their own, the clients taking turns. The
    /// service limits each source's event rate (EWPM_ENGAGEMENT__SOURCE_RATE_PER_SEC), so
    /// several measure the service rather than its limiter.
    #[arg(long, default_value_t = 8)]
    sources: usize,
    /// Probes of the metrics-visible lag (one event each, sent one after another).
    #[arg(long, default_value_t = 200)]
    probes: usize,
    /// Events per second ingested (in batches of --batch, paced) beside the lag probes; 0:
    /// the probes alone. Paced rather than as fast as possible: a load beyond what the
    /// persisters write would only grow their backlog, and the probes would time the queue.
    #[arg(long, default_value_t = 10_000)]
    probe_load: u64,
    /// The REST edge of a running target (`ewpm dev`'s HTTP address); with --target and
    /// without it the REST phase is skipped. The in-process stack gets an edge of its own.
    #[arg(long)]
    edge: Option<String>,
    /// Longest wait for the metrics to count every accepted event after the ingest phase,
    /// in seconds.
    #[arg(long, default_value_t = 120)]
    settle_secs: u64,
}

/// The issue's goal for persisted events per second.
const GOAL_EVENTS_PER_SEC: f64 = 100_000.0;
/// The issue's goal for single-event REST ingest as a share of the edge's `/health`.
const GOAL_REST_RATIO: f64 = 0.70;
/// The seed note's claim for `POST /api/events`.
const SEED_CLAIM: &str = "5,000 req/s, p99 < 50 ms";
/// The seed note's body for `POST /api/events`.
const SEED_BODY: &str = r#"{"matchId":"match_001","eventType":"goal","teamId":"al-hilal"}"#;
/// Event types of the load.
const TYPES: [&str; 5] = ["cheer", "tap", "goal", "shot", "yellow_card"];
/// The event type of the lag probes.
const PROBE: &str = "probe";

type Token = MetadataValue<Ascii>;

/// What ingesting clients saw.
#[derive(Default)]
struct Tally {
    accepted: u64,
    duplicates: u64,
    rejected: u64,
    /// Calls answered RESOURCE_EXHAUSTED, by reason (each retried after its delay).
    pushed_back: BTreeMap<String, u64>,
    /// Calls that failed otherwise (their batch is not retried).
    failed: u64,
    first_failure: Option<String>,
    /// Of the calls answered OK.
    latencies: Vec<Duration>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.accepted += other.accepted;
        self.duplicates += other.duplicates;
        self.rejected += other.rejected;
        for (reason, n) in other.pushed_back {
            *self.pushed_back.entry(reason).or_default() += n;
        }
        self.failed += other.failed;
        if self.first_failure.is_none() {
            self.first_failure = other.first_failure;
        }
        self.latencies.extend(other.latencies);
    }

    fn pushed(&self, reason: &str) -> u64 {
        self.pushed_back.get(reason).copied().unwrap_or(0)
    }

    /// The calls as a phase (refused: pushed back or failed).
    fn calls(mut self, secs: f64) -> (Phase, Self) {
        let mut latencies = std::mem::take(&mut self.latencies);
        latencies.sort();
        let refused = self.pushed_back.values().sum::<u64>() + self.failed;
        (Phase { ops: latencies.len() as u64, errors: refused, secs, latencies }, self)
    }
}

/// The reason of an error answer (its ErrorInfo), or its code.
fn reason(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .error_info()
        .map(|i| i.reason.clone())
        .unwrap_or_else(|| format!("{:?}", status.code()))
}

fn number(n: f64) -> Value {
    Value { kind: Some(Kind::NumberValue(n)) }
}

/// `{"minute": minute}`.
fn minute(minute: u64) -> Struct {
    Struct { fields: [("minute".to_string(), number(minute as f64))].into_iter().collect() }
}

fn req<T>(message: T, token: &Token) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut().insert("authorization", token.clone());
    r
}

/// The ingest load: who sends what where.
struct Load {
    clients: Vec<EngagementServiceClient<Channel>>,
    sources: Vec<Token>,
    matches: Vec<String>,
    /// Prefixes every client event id of this run.
    run: String,
    batch: usize,
}

impl Load {
    /// Events `first..first + batch` of client `w` of the load `tag`: each with its own
    /// client id, spread over the matches, a few types and both teams, the match minute
    /// advancing as the client sends.
    fn batch(&self, tag: &str, w: usize, first: u64) -> pb::IngestEventsRequest {
        let events = (first..first + self.batch as u64)
            .map(|i| {
                let spread = w as u64 + i;
                pb::EventInput {
                    event_id: format!("{}-{tag}{w}-{i}", self.run),
                    match_id: self.matches[(spread % self.matches.len() as u64) as usize].clone(),
                    event_type: TYPES
                        [((i / self.matches.len() as u64) % TYPES.len() as u64) as usize]
                        .to_string(),
                    team_id: if i % 2 == 0 { "home" } else { "away" }.to_string(),
                    player_id: String::new(),
                    metadata: Some(minute((i / 1_000) % 91)),
                    occurred_at: None,
                }
            })
            .collect();
        pb::IngestEventsRequest { events, sent_at: None, backfill: false }
    }

    /// `concurrency` clients send batches until `stop`, each as fast as it can or, with
    /// `pace`, one call per `pace` at most; the time until the last returned.
    async fn run(
        self: &Arc<Self>,
        tag: &'static str,
        concurrency: usize,
        pace: Option<Duration>,
        stop: CancellationToken,
    ) -> (Tally, f64) {
        let started = Instant::now();
        let workers = (0..concurrency.max(1)).map(|w| {
            let mut client = self.clients[w % self.clients.len()].clone();
            let token = self.sources[w % self.sources.len()].clone();
            let stop = stop.clone();
            let load = self.clone();
            tokio::spawn(async move {
                let mut tally = Tally::default();
                let mut next = 0u64;
                let mut due = tokio::time::Instant::now();
                'calls: while !stop.is_cancelled() {
                    if let Some(pace) = pace {
                        // Behind by more than a call: no catching up in a burst.
                        due = (due + pace).max(tokio::time::Instant::now());
                    }
                    let first = next;
                    next += load.batch as u64;
                    // A pushed-back call is sent again, the same events under the same ids.
                    loop {
                        let request = req(load.batch(tag, w, first), &token);
                        let t = Instant::now();
                        match client.ingest_events(request).await {
                            Ok(r) => {
                                tally.latencies.push(t.elapsed());
                                if pace.is_some() {
                                    tokio::select! {
                                        () = tokio::time::sleep_until(due) => {}
                                        () = stop.cancelled() => {}
                                    }
                                }
                                let r = r.into_inner();
                                tally.accepted += u64::try_from(r.accepted).unwrap_or(0);
                                tally.duplicates += u64::try_from(r.duplicates).unwrap_or(0);
                                tally.rejected += u64::try_from(r.rejected).unwrap_or(0);
                                if r.rejected > 0 && tally.first_failure.is_none() {
                                    tally.first_failure = r
                                        .results
                                        .iter()
                                        .find(|e| !e.reason.is_empty())
                                        .map(|e| format!("rejected: {} {}", e.reason, e.field));
                                }
                                break;
                            }
                            Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                                *tally.pushed_back.entry(reason(&s)).or_default() += 1;
                                let wait = ewpm_kit::error::retry_delay(&s)
                                    .unwrap_or(Duration::from_millis(100));
                                tokio::select! {
                                    () = tokio::time::sleep(wait) => {}
                                    () = stop.cancelled() => break 'calls,
                                }
                            }
                            Err(s) => {
                                tally.failed += 1;
                                tally.first_failure.get_or_insert_with(|| {
                                    format!("{:?} {}: {}", s.code(), reason(&s), s.message())
                                });
                                tokio::time::sleep(Duration::from_millis(10)).await;
                                break;
                            }
                        }
                    }
                }
                tally
            })
        });
        let tallies = futures::future::join_all(workers).await;
        let secs = started.elapsed().as_secs_f64();
        let mut all = Tally::default();
        for t in tallies {
            match t {
                Ok(t) => all.merge(t),
                Err(err) => {
                    all.failed += 1;
                    all.first_failure.get_or_insert_with(|| format!("a client panicked: {err}"));
                }
            }
        }
        (all, secs)
    }
}

/// Reads match metrics with a reader's token.
struct Reader {
    client: EngagementServiceClient<Channel>,
    token: Token,
}

impl Reader {
    /// `total_events` of every match in `matches`, summed.
    async fn counted(&self, matches: &[String]) -> anyhow::Result<i64> {
        let reads = matches.iter().map(|m| {
            let mut client = self.client.clone();
            let request = req(pb::GetMatchMetricsRequest { match_id: m.clone() }, &self.token);
            async move {
                let r = client.get_match_metrics(request).await.context("GetMatchMetrics")?;
                Ok::<_, anyhow::Error>(r.into_inner().metrics.map_or(0, |m| m.total_events))
            }
        });
        let mut sum = 0;
        for n in futures::future::join_all(reads).await {
            sum += n?;
        }
        Ok(sum)
    }
}

/// How the ingest phase's accepted events became visible in the metrics.
struct Settled {
    /// From the phase's start until every accepted event was counted, if they all were.
    after: Option<Duration>,
    /// Counted when they all were (or at the timeout).
    counted: i64,
    /// Counted again a moment later (more than accepted: counted twice, or a failed call's
    /// events were stored after all).
    recounted: i64,
}

/// Polls the metrics of `matches` every 25 ms until they count `want` events or `timeout`.
async fn settle(
    reader: &Reader,
    matches: &[String],
    want: u64,
    started: Instant,
    timeout: Duration,
) -> anyhow::Result<Settled> {
    let want = i64::try_from(want).unwrap_or(i64::MAX);
    let give_up = Instant::now() + timeout;
    let mut told = Instant::now();
    let (after, counted) = loop {
        let n = reader.counted(matches).await?;
        if n >= want {
            break (Some(started.elapsed()), n);
        }
        if Instant::now() >= give_up {
            break (None, n);
        }
        if told.elapsed() >= Duration::from_secs(5) {
            told = Instant::now();
            eprintln!("  (counted {n} of {want} after {:.0} s)", started.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let recounted = reader.counted(matches).await?;
    Ok(Settled { after, counted, recounted })
}

/// The lag probes' figures.
struct Lag {
    lags: Vec<Duration>,
    /// The probes' IngestEvents calls alone (part of each lag).
    calls: Vec<Duration>,
    /// Probes whose push did not come within 10 s (the probing stops at the first).
    stalled: usize,
    /// Probes pushed back or failed (not sent again).
    refused: usize,
    /// The background load beside them.
    load: Tally,
    load_secs: f64,
}

/// `probes` single `probe` events to `match_id`, one after another, each timed from its send
/// to the first WatchMatch push whose `events_by_type["probe"]` counts it.
async fn probe_lag(
    load: &Arc<Load>,
    reader: &Reader,
    probe_source: &Token,
    match_id: &str,
    probes: usize,
    background: u64,
) -> anyhow::Result<Lag> {
    let mut watcher = reader.client.clone();
    let mut stream = watcher
        .watch_match(req(pb::WatchMatchRequest { match_id: match_id.to_string() }, &reader.token))
        .await
        .context("WatchMatch")?
        .into_inner();
    let probes_of = |push: &pb::WatchMatchResponse| {
        push.metrics.as_ref().and_then(|m| m.events_by_type.get(PROBE).copied()).unwrap_or(0)
    };
    let first = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .context("no first WatchMatch push within 10 s")??
        .context("the WatchMatch stream ended")?;
    let mut expected = probes_of(&first);

    let stop = CancellationToken::new();
    let beside = async {
        if background == 0 {
            return (Tally::default(), 0.0);
        }
        // Two clients, each sending one batch per 2 × batch / rate seconds.
        let pace = Duration::from_secs_f64(2.0 * load.batch as f64 / background as f64);
        load.run("lag", 2, Some(pace), stop.clone()).await
    };
    let probing = async {
        // However probing ends, the load beside it ends with it.
        let _stop = stop.clone().drop_guard();
        let mut client = load.clients[0].clone();
        let (mut lags, mut stalled, mut refused) = (Vec::with_capacity(probes), 0, 0);
        let mut calls = Vec::with_capacity(probes);
        for i in 0..probes {
            let event = pb::EventInput {
                event_id: format!("{}-probe-{i}", load.run),
                match_id: match_id.to_string(),
                event_type: PROBE.to_string(),
                team_id: String::new(),
                player_id: String::new(),
                metadata: Some(minute((i / 10) as u64 % 91)),
                occurred_at: None,
            };
            let request = req(
                pb::IngestEventsRequest { events: vec![event], sent_at: None, backfill: false },
                probe_source,
            );
            let sent = Instant::now();
            match client.ingest_events(request).await {
                Ok(r) if r.get_ref().accepted == 1 => {
                    calls.push(sent.elapsed());
                    expected += 1;
                }
                _ => {
                    refused += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            }
            let seen = loop {
                match tokio::time::timeout(Duration::from_secs(10), stream.message()).await {
                    Ok(Ok(Some(push))) if probes_of(&push) >= expected => break true,
                    Ok(Ok(Some(_))) => {}
                    Ok(Ok(None)) | Ok(Err(_)) => {
                        anyhow::bail!("the WatchMatch stream ended after {i} probes")
                    }
                    Err(_) => break false,
                }
            };
            if seen {
                lags.push(sent.elapsed());
            } else {
                // Not pushed within 10 s: the rest would wait as long.
                stalled += 1;
                break;
            }
            // Spaced out unevenly, so the probes do not keep step with the room's reads.
            tokio::time::sleep(Duration::from_millis(10 + (i as u64 * 37) % 50)).await;
        }
        lags.sort();
        calls.sort();
        Ok((lags, calls, stalled, refused))
    };
    let ((load_tally, load_secs), probed) = tokio::join!(beside, probing);
    let (lags, calls, stalled, refused) = probed?;
    Ok(Lag { lags, calls, stalled, refused, load: load_tally, load_secs })
}

/// The REST phase's figures.
struct Rest {
    base: String,
    health: Phase,
    events: Phase,
    /// The first answer that was not the one expected.
    unexpected: Option<String>,
}

/// `GET /health` at `concurrency`, then `POST /api/events` with the seed note's body.
async fn rest(
    base: &str,
    authorization: &str,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Rest> {
    ewpm_kit::install_tls_provider();
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(concurrency.max(1))
        .build()
        .context("HTTP client")?;
    let health = format!("{base}/health");
    wait_healthy(&http, base).await?;
    let unexpected: Arc<Mutex<Option<String>>> = Arc::default();
    let health_phase = closed_loop(concurrency, duration, {
        let (http, url, unexpected) = (http.clone(), health.clone(), unexpected.clone());
        move |_, _| {
            let (http, url, unexpected) = (http.clone(), url.clone(), unexpected.clone());
            async move { answered(http.get(url), 200, &unexpected).await }
        }
    })
    .await;
    let events_phase = closed_loop(concurrency, duration, {
        let (http, url, unexpected) =
            (http.clone(), format!("{base}/api/events"), unexpected.clone());
        let authorization = authorization.to_string();
        move |_, _| {
            let request = http
                .post(&url)
                .header("authorization", &authorization)
                .header("content-type", "application/json")
                .body(SEED_BODY);
            let unexpected = unexpected.clone();
            async move { answered(request, 202, &unexpected).await }
        }
    })
    .await;
    let unexpected = unexpected.lock().unwrap_or_else(|p| p.into_inner()).take();
    Ok(Rest { base: base.to_string(), health: health_phase, events: events_phase, unexpected })
}

/// Waits up to 10 s for the edge at `base` to answer `/health` 200 (it answers from its
/// last look at the upstreams, once a second).
pub(crate) async fn wait_healthy(http: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let health = format!("{base}/health");
    let ready = Instant::now() + Duration::from_secs(10);
    loop {
        let ok = http.get(&health).send().await.is_ok_and(|r| r.status().is_success());
        if ok {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < ready, "the edge at {base} did not answer /health 200");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends `request` and reads the answer; whether it is `want`. A 429 or 503 is waited out
/// (its Retry-After, at most a second), as a client should.
pub(crate) async fn answered(
    request: reqwest::RequestBuilder,
    want: u16,
    unexpected: &Mutex<Option<String>>,
) -> bool {
    let response = match request.send().await {
        Ok(r) => r,
        Err(err) => {
            unexpected.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(format!("{err}"));
            return false;
        }
    };
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let body = response.bytes().await;
    if status == want && body.is_ok() {
        return true;
    }
    let text = body.map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    unexpected
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_or_insert(format!("{status} {}", text.chars().take(300).collect::<String>()));
    if matches!(status, 429 | 503) {
        let wait = Duration::from_secs(retry_after.unwrap_or(1)).min(Duration::from_secs(1));
        tokio::time::sleep(wait).await;
    }
    false
}

/// `ewpm bench engagement`.
pub async fn engagement(
    args: EngagementArgs,
    modules: &'static [&'static dyn Module],
) -> anyhow::Result<serde_json::Value> {
    let target = Target::open(&args.pipeline, modules).await?;
    let result = run(&target, &args).await;
    target.close().await;
    result
}

async fn run(target: &Target, args: &EngagementArgs) -> anyhow::Result<serde_json::Value> {
    let p = &args.pipeline;
    let concurrency = p.concurrency.max(1);
    let duration = Duration::from_secs(p.duration);
    let uri = target.engagement_uri.clone();
    let conns = channels(&uri, 4).await?;
    let clients: Vec<_> = conns
        .iter()
        .map(|c| {
            EngagementServiceClient::new(c.clone())
                .max_encoding_message_size(64 << 20)
                .max_decoding_message_size(64 << 20)
        })
        .collect();
    let run_id = format!("b{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let load = Arc::new(Load {
        clients: clients.clone(),
        sources: (0..args.sources.max(1))
            .map(|s| target.bearer(&format!("bench-feed-{s}"), Role::Ingest))
            .collect(),
        matches: (0..args.matches.max(1)).map(|m| format!("{run_id}-m{m}")).collect(),
        run: run_id.clone(),
        batch: args.batch.clamp(1, 1_000),
    });
    let reader =
        Reader { client: clients[0].clone(), token: target.bearer("bench-reader", Role::Employee) };

    // 1. The bare echo.
    let echo = echo(&conns, concurrency, duration).await;
    let echo_rate = echo.rate();

    // 2. Batched ingest, then the wait until the metrics count every accepted event.
    let stop = CancellationToken::new();
    let started = Instant::now();
    let timer = tokio::spawn({
        let stop = stop.clone();
        async move {
            tokio::time::sleep(duration).await;
            stop.cancel();
        }
    });
    let (tally, ingest_secs) = load.run("i", concurrency, None, stop).await;
    timer.abort();
    eprintln!(
        "  (ingest: {} events accepted in {ingest_secs:.1} s; waiting for the metrics to count them)",
        tally.accepted
    );
    let settled = settle(
        &reader,
        &load.matches,
        tally.accepted,
        started,
        Duration::from_secs(args.settle_secs.max(1)),
    )
    .await?;
    let (calls, tally) = tally.calls(ingest_secs);
    let accepted_rate = tally.accepted as f64 / ingest_secs;
    let persisted_rate = settled.after.map(|d| tally.accepted as f64 / d.as_secs_f64());

    // 3. The metrics-visible lag, on the first match of the load.
    let probe_source = target.bearer("bench-probe", Role::Ingest);
    let lag = probe_lag(
        &load,
        &reader,
        &probe_source,
        &load.matches[0],
        args.probes.max(1),
        args.probe_load,
    )
    .await?;
    let background_rate =
        if lag.load_secs > 0.0 { lag.load.accepted as f64 / lag.load_secs } else { 0.0 };
    eprintln!("  (lag: {} probes timed; now REST)", lag.lags.len());

    // 4. Single events over REST through the edge, against its /health.
    let local_edge = target.local_edge().await?;
    let base = local_edge.as_ref().map(|e| e.base.clone()).or_else(|| args.edge.clone());
    let rest = match &base {
        Some(base) => {
            let token = target.bearer("bench-rest-feed", Role::Ingest);
            let authorization = token.to_str().context("a token is ASCII")?.to_string();
            Some(rest(base, &authorization, concurrency, duration).await)
        }
        None => None,
    };
    if let Some(edge) = local_edge {
        edge.stop().await;
    }
    let rest = rest.transpose()?;

    let lag_ms = |q| percentile(&lag.lags, q);
    if p.json {
        let pushed: serde_json::Map<String, serde_json::Value> =
            tally.pushed_back.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        let rest_json = rest.as_ref().map(|r| {
            let health = r.health.rate();
            // Rates here are against /health, not the gRPC echo.
            let phase = |p: &Phase| {
                let mut j = p.json(health);
                if let Some(o) = j.as_object_mut() {
                    o.remove("ratio_to_echo");
                }
                j
            };
            json!({
                "edge": r.base,
                "health": phase(&r.health),
                "post_events": phase(&r.events),
                "ratio_to_health": (r.events.rate() / health * 100.0).round() / 100.0,
                "goal_ratio": GOAL_REST_RATIO,
                "seed_claim": {"per_sec": 5000, "p99_ms": 50},
                "unexpected_answer": r.unexpected,
            })
        });
        return Ok(json!({
                "bench": "engagement",
                "backend": target.backend,
                "concurrency": concurrency,
                "duration_secs": p.duration,
                "batch": load.batch,
                "matches": load.matches.len(),
                "sources": load.sources.len(),
                "echo": echo.json(echo_rate),
                "ingest": {
                    "calls": calls.json(echo_rate),
                    "accepted": tally.accepted,
                    "duplicates": tally.duplicates,
                    "rejected": tally.rejected,
                    "pushed_back": pushed,
                    "failed": tally.failed,
                    "first_failure": tally.first_failure,
                    "accepted_events_per_sec": accepted_rate.round(),
                    "persisted_events_per_sec": persisted_rate.map(f64::round),
                    "all_counted_after_secs": settled.after.map(|d| d.as_secs_f64()),
                    "counted": settled.counted,
                    "recounted": settled.recounted,
                    "goal_events_per_sec": GOAL_EVENTS_PER_SEC,
                },
                "visible_in_watch_ms": {
                    "samples": lag.lags.len(),
                    "stalled": lag.stalled,
                    "refused": lag.refused,
                    "p50": lag_ms(0.5),
                    "p99": lag_ms(0.99),
                    "max": lag_ms(1.0),
                    "ingest_call_ms": {"p50": percentile(&lag.calls, 0.5), "p99": percentile(&lag.calls, 0.99)},
                    "background_events_per_sec_asked": args.probe_load,
                    "background_accepted_events_per_sec": background_rate.round(),
                },
                "rest": rest_json,
        }));
    }

    println!(
        "engagement bench on {} — {} clients, batches of {} over {} matches from {} sources, {} s phases",
        target.backend,
        concurrency,
        load.batch,
        load.matches.len(),
        load.sources.len(),
        p.duration
    );
    println!("{}", echo.line("bare echo (health)", echo_rate));
    println!("{}", calls.line("IngestEvents calls", echo_rate));
    let others: Vec<String> = tally
        .pushed_back
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "QUEUE_FULL" | "RATE_LIMITED"))
        .map(|(k, v)| format!(", {v} {k}"))
        .collect();
    println!(
        "  {:<22} {:>8.0} events/s  ({} accepted, {} duplicates, {} rejected; calls pushed back and retried: {} QUEUE_FULL, {} RATE_LIMITED{})",
        "accepted events",
        accepted_rate,
        tally.accepted,
        tally.duplicates,
        tally.rejected,
        tally.pushed("QUEUE_FULL"),
        tally.pushed("RATE_LIMITED"),
        others.concat(),
    );
    match (persisted_rate, settled.after) {
        (Some(rate), Some(after)) => println!(
            "  {:<22} {:>8.0} events/s  (all counted in the metrics {:.2} s after the phase started; goal ≥ {:.0}/s{})",
            "persisted events",
            rate,
            after.as_secs_f64(),
            GOAL_EVENTS_PER_SEC,
            if rate >= GOAL_EVENTS_PER_SEC { ", met" } else { ", NOT met" },
        ),
        _ => println!(
            "  {:<22} NOT CONVERGED: the metrics counted {} of {} accepted events after {} s",
            "persisted events", settled.counted, tally.accepted, args.settle_secs
        ),
    }
    if settled.recounted != settled.counted
        || settled.counted > i64::try_from(tally.accepted).unwrap_or(i64::MAX)
    {
        println!(
            "  !! counted {} when all were in, {} half a second later, for {} accepted",
            settled.counted, settled.recounted, tally.accepted
        );
    }
    if let Some(f) = &tally.first_failure {
        println!(
            "  !! {} calls failed, {} events rejected; first: {f}",
            tally.failed, tally.rejected
        );
    }
    println!(
        "  {:<22} p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms  (its IngestEvents call p50 {:.1} ms  p99 {:.1} ms; {} probes{}{}; {})",
        "visible in WatchMatch",
        lag_ms(0.5),
        lag_ms(0.99),
        lag_ms(1.0),
        percentile(&lag.calls, 0.5),
        percentile(&lag.calls, 0.99),
        lag.lags.len(),
        if lag.stalled > 0 {
            ", then one not pushed within 10 s: probing stopped".to_string()
        } else {
            String::new()
        },
        if lag.refused > 0 { format!(", {} refused", lag.refused) } else { String::new() },
        if args.probe_load > 0 {
            format!(
                "beside an ingest load of {background_rate:.0} events/s ({} asked)",
                args.probe_load
            )
        } else {
            "alone".to_string()
        },
    );
    match &rest {
        Some(r) => {
            let health = r.health.rate();
            let ratio = r.events.rate() / health;
            println!("  REST edge {}:", r.base);
            println!(
                "  {:<22} {:>8.0}/s  p50 {:.2} ms  p99 {:.2} ms  max {:.1} ms{}",
                "GET /health (no call)",
                health,
                percentile(&r.health.latencies, 0.5),
                percentile(&r.health.latencies, 0.99),
                percentile(&r.health.latencies, 1.0),
                refused(&r.health),
            );
            println!(
                "  {:<22} {:>8.0}/s  ({:.0} % of /health; goal ≥ {:.0} %{})  p50 {:.2} ms  p99 {:.2} ms  max {:.1} ms{}",
                "POST /api/events",
                r.events.rate(),
                ratio * 100.0,
                GOAL_REST_RATIO * 100.0,
                if ratio >= GOAL_REST_RATIO { ", met" } else { ", NOT met" },
                percentile(&r.events.latencies, 0.5),
                percentile(&r.events.latencies, 0.99),
                percentile(&r.events.latencies, 1.0),
                refused(&r.events),
            );
            println!("  {:<22} {SEED_CLAIM}", "seed note's claim");
            if let Some(u) = &r.unexpected {
                println!("  !! first unexpected answer: {u}");
            }
        }
        None => println!(
            "  REST: skipped (a running target's edge is given with --edge http://HOST:PORT)"
        ),
    }
    Ok(serde_json::Value::Null)
}

fn refused(phase: &Phase) -> String {
    if phase.errors > 0 { format!("  ({} refused or failed)", phase.errors) } else { String::new() }
}
