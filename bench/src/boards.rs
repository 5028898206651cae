//! `ewpm bench boards`: a `board:` board (issue #14) under load. An admin defines the board
//! (SUM, descending, daily reset, members submit their own scores); then, each phase against
//! the bare echo of the same run at the same concurrency over the same connections:
//!
//! - SubmitScore by the members themselves, every call a new event id;
//! - GetLeaderboard pages of 10 read by members who are not on the first page, so that every
//!   read also places the caller (`me`);
//! - GetRanks of 20 members (a team view).
//!
//! Last, the personal watch fan-out: `--watchers` members each watch their own place
//! (`with_me`, 2 neighbours, passed and within-reach notices) while members keep submitting
//! beside, and a probe every 250 ms brings a new member in at the top — which moves every
//! watcher down one place. Each probe is timed from its SubmitScore to the first view of each
//! watcher that shows it (as `bench leaderboard` times plain watchers), and the notices the
//! watchers receive are counted. Figures are printed (or emitted as JSON), never asserted.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::Args;
use ewpm_kit::{CancellationToken, auth::Role, module::Module};
use ewpm_proto::leaderboard::v1::{
    self as pb, leaderboard_service_client::LeaderboardServiceClient, rank_notice::Kind,
};
use futures::StreamExt;
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

/// `ewpm bench boards` options (`--users` is the number of members submitting).
#[derive(Debug, Args)]
pub struct BoardsArgs {
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// Members watching their own place on the board in the fan-out phase, each with its own
    /// stream (100 streams per connection).
    #[arg(long, default_value_t = 1_000)]
    watchers: usize,
}

type Token = MetadataValue<Ascii>;
type Client = LeaderboardServiceClient<Channel>;

/// Gap between two probes of the fan-out phase.
const PROBE_EVERY: Duration = Duration::from_millis(250);
/// Members submitting beside the probes in the fan-out phase.
const BACKGROUND_CLIENTS: usize = 8;
/// Members a GetRanks call asks about.
const TEAM: usize = 20;

fn member(n: usize) -> String {
    format!("bench-member-{n}")
}

/// Failed calls' first status: what a reader of the figures needs to reproduce a failure.
#[derive(Default)]
struct FirstError(Mutex<Option<String>>);

impl FirstError {
    fn note(&self, status: &tonic::Status) {
        let mut first = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if first.is_none() {
            *first = Some(format!("{:?}: {}", status.code(), status.message()));
        }
    }

    fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The board under test and its members.
struct BenchBoard<'a> {
    target: &'a Target,
    clients: Vec<Client>,
    board: Arc<str>,
    admin: Token,
    /// Members' tokens by member number.
    tokens: Arc<Vec<Token>>,
    /// Whether member n has a score on the board (one of its SubmitScores succeeded).
    on_board: Arc<Vec<AtomicBool>>,
}

fn authorized<T>(message: T, token: &Token) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", token.clone());
    request
}

impl<'a> BenchBoard<'a> {
    /// Defines a fresh board as an admin; `members` members may submit to it.
    async fn create(target: &'a Target, members: usize) -> anyhow::Result<Self> {
        let clients: Vec<Client> =
            target.leaderboard.iter().map(|c| LeaderboardServiceClient::new(c.clone())).collect();
        let admin = target.bearer("bench-admin", Role::Admin);
        let id = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let definition = pb::BoardDefinition {
            title: "bench board".into(),
            operator: pb::ScoreOperator::Sum as i32,
            order: pb::SortOrder::Descending as i32,
            rank_style: pb::RankStyle::Competition as i32,
            reset: Some(pb::Reset { kind: pb::ResetKind::Daily as i32, ..Default::default() }),
            members_submit: true,
            ..Default::default()
        };
        let created = clients[0]
            .clone()
            .create_board(authorized(
                pb::CreateBoardRequest { board_id: id, definition: Some(definition) },
                &admin,
            ))
            .await
            .context("create the bench board")?
            .into_inner()
            .board
            .context("CreateBoard answered no board")?;
        let tokens =
            (0..members).map(|n| target.bearer(&member(n), Role::Employee)).collect::<Vec<_>>();
        Ok(Self {
            target,
            clients,
            board: created.board.into(),
            admin,
            tokens: Arc::new(tokens),
            on_board: Arc::new((0..members).map(|_| AtomicBool::new(false)).collect()),
        })
    }

    /// One score of each of `members`, `concurrency` at a time (not measured).
    async fn seed(&self, members: &[usize], concurrency: usize) -> anyhow::Result<()> {
        let calls = members.iter().map(|&n| {
            let mut client = self.clients[n % self.clients.len()].clone();
            let request = authorized(
                pb::SubmitScoreRequest {
                    board: self.board.to_string(),
                    score: 1.0,
                    event_id: format!("seed-{n}"),
                    ..Default::default()
                },
                &self.tokens[n],
            );
            async move {
                client
                    .submit_score(request)
                    .await
                    .with_context(|| format!("seed {}", member(n)))?;
                self.on_board[n].store(true, Ordering::Relaxed);
                anyhow::Ok(())
            }
        });
        let mut calls = futures::stream::iter(calls).buffer_unordered(concurrency.max(1));
        while let Some(done) = calls.next().await {
            done?;
        }
        Ok(())
    }

    /// Members submit their own scores (1–100 points; event ids `<prefix>-<i>`) from
    /// `concurrency` clients for `duration`.
    async fn submit(
        &self,
        concurrency: usize,
        duration: Duration,
        prefix: &'static str,
    ) -> (Phase, Arc<FirstError>) {
        let failed = Arc::new(FirstError::default());
        let (clients, tokens, on_board, board) =
            (self.clients.clone(), self.tokens.clone(), self.on_board.clone(), self.board.clone());
        let first = failed.clone();
        let phase = closed_loop(concurrency, duration, move |w, i| {
            let mut client = clients[w % clients.len()].clone();
            // 7,919 is prime: consecutive calls cycle through every member.
            let n = (i as usize).wrapping_mul(7_919) % tokens.len();
            let request = authorized(
                pb::SubmitScoreRequest {
                    board: board.to_string(),
                    member: String::new(),
                    score: (i % 100 + 1) as f64,
                    subscore: 0.0,
                    event_id: format!("{prefix}-{i}"),
                    occurred_at: None,
                },
                &tokens[n],
            );
            let (on_board, failed) = (on_board.clone(), first.clone());
            async move {
                match client.submit_score(request).await {
                    Ok(_) => {
                        on_board[n].store(true, Ordering::Relaxed);
                        true
                    }
                    Err(s) => {
                        failed.note(&s);
                        if matches!(
                            s.code(),
                            tonic::Code::ResourceExhausted | tonic::Code::Unavailable
                        ) {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        false
                    }
                }
            }
        })
        .await;
        (phase, failed)
    }

    /// Member numbers with a score on the board.
    fn members_on_board(&self) -> Vec<usize> {
        (0..self.on_board.len()).filter(|&n| self.on_board[n].load(Ordering::Relaxed)).collect()
    }

    /// The first page of 10 and the board's member count, as an admin reads them.
    async fn first_page(&self) -> anyhow::Result<pb::GetLeaderboardResponse> {
        let request = authorized(
            pb::GetLeaderboardRequest {
                board: self.board.to_string(),
                page_size: 10,
                ..Default::default()
            },
            &self.admin,
        );
        Ok(self.clients[0]
            .clone()
            .get_leaderboard(request)
            .await
            .context("first page")?
            .into_inner())
    }

    /// First pages of 10 read by members not on them; each answer also places the caller.
    /// Also returns how many answers carried the caller's place off the first page.
    async fn reads(
        &self,
        readers: Vec<usize>,
        concurrency: usize,
        duration: Duration,
    ) -> (Phase, Arc<FirstError>, u64) {
        let failed = Arc::new(FirstError::default());
        let placed = Arc::new(AtomicU64::new(0));
        let (clients, tokens, board) =
            (self.clients.clone(), self.tokens.clone(), self.board.clone());
        let readers = Arc::new(readers);
        let (first, counted) = (failed.clone(), placed.clone());
        let phase = closed_loop(concurrency, duration, move |w, i| {
            let mut client = clients[w % clients.len()].clone();
            let n = readers[(i as usize).wrapping_mul(7_919) % readers.len()];
            let request = authorized(
                pb::GetLeaderboardRequest {
                    board: board.to_string(),
                    page_size: 10,
                    ..Default::default()
                },
                &tokens[n],
            );
            let (failed, placed) = (first.clone(), counted.clone());
            async move {
                match client.get_leaderboard(request).await {
                    Ok(page) => {
                        if page.into_inner().me.is_some_and(|me| me.page > 1) {
                            placed.fetch_add(1, Ordering::Relaxed);
                        }
                        true
                    }
                    Err(s) => {
                        failed.note(&s);
                        false
                    }
                }
            }
        })
        .await;
        let placed = placed.load(Ordering::Relaxed);
        (phase, failed, placed)
    }

    /// GetRanks of `TEAM` members on the board, asked by one of them. Also returns the
    /// entries answered in all.
    async fn ranks(
        &self,
        on_board: Vec<usize>,
        concurrency: usize,
        duration: Duration,
    ) -> (Phase, Arc<FirstError>, u64) {
        let failed = Arc::new(FirstError::default());
        let answered = Arc::new(AtomicU64::new(0));
        let (clients, tokens, board) =
            (self.clients.clone(), self.tokens.clone(), self.board.clone());
        let on_board = Arc::new(on_board);
        let (first, counted) = (failed.clone(), answered.clone());
        let phase = closed_loop(concurrency, duration, move |w, i| {
            let mut client = clients[w % clients.len()].clone();
            let team: Vec<usize> = (0..TEAM)
                .map(|j| on_board[(i as usize * TEAM + j).wrapping_mul(7_919) % on_board.len()])
                .collect();
            let request = authorized(
                pb::GetRanksRequest {
                    board: board.to_string(),
                    members: team.iter().map(|&n| member(n)).collect(),
                    period: String::new(),
                },
                &tokens[team[0]],
            );
            let (failed, answered) = (first.clone(), counted.clone());
            async move {
                match client.get_ranks(request).await {
                    Ok(ranks) => {
                        answered
                            .fetch_add(ranks.into_inner().entries.len() as u64, Ordering::Relaxed);
                        true
                    }
                    Err(s) => {
                        failed.note(&s);
                        false
                    }
                }
            }
        })
        .await;
        let answered = answered.load(Ordering::Relaxed);
        (phase, failed, answered)
    }
}

/// What the watchers of the fan-out phase saw.
#[derive(Default)]
struct Seen {
    /// Streams opened.
    connected: AtomicU64,
    /// Views received.
    views: AtomicU64,
    /// Views without the watcher's own place.
    views_without_me: AtomicU64,
    passed: AtomicU64,
    within_reach: AtomicU64,
    /// Lags from a probe's SubmitScore to a watcher's first view showing it.
    lags: Mutex<Vec<Duration>>,
    /// Streams refused, and the first refusal.
    refused_count: AtomicU64,
    refused: FirstError,
    /// Streams that ended or failed before the phase did.
    broken: AtomicU64,
    broke: FirstError,
}

/// The fan-out phase's figures.
struct Fanout {
    requested: usize,
    seen: Arc<Seen>,
    lags: Vec<Duration>,
    probes: u64,
    probe_errors: Arc<FirstError>,
    background: Phase,
    background_failed: Arc<FirstError>,
}

impl Fanout {
    fn json(&self) -> serde_json::Value {
        let s = &self.seen;
        json!({
            "requested": self.requested,
            "connected": s.connected.load(Ordering::Relaxed),
            "refused": s.refused_count.load(Ordering::Relaxed),
            "refused_first_error": s.refused.get(),
            "ended_early": s.broken.load(Ordering::Relaxed),
            "ended_early_first_error": s.broke.get(),
            "probes": self.probes,
            "probe_first_error": self.probe_errors.get(),
            "lag_samples": self.lags.len(),
            "probe_to_view_lag_ms": {
                "p50": percentile(&self.lags, 0.5),
                "p99": percentile(&self.lags, 0.99),
                "max": percentile(&self.lags, 1.0),
            },
            "views": s.views.load(Ordering::Relaxed),
            "views_without_me": s.views_without_me.load(Ordering::Relaxed),
            "notices": {
                "passed": s.passed.load(Ordering::Relaxed),
                "within_reach": s.within_reach.load(Ordering::Relaxed),
            },
            "background_submits_per_sec": self.background.rate().round(),
            "background_refused": self.background.errors,
            "background_first_error": self.background_failed.get(),
        })
    }
}

/// `watchers` members watching their own place while probes enter at the top.
async fn fanout(
    bench: &BenchBoard<'_>,
    watchers: &[usize],
    duration: Duration,
) -> anyhow::Result<Fanout> {
    let connections = watchers.len().div_ceil(100).max(1);
    let watch_channels = channels(&bench.target.leaderboard_uri, connections).await?;
    // sent[k] = when probe k's SubmitScore was sent.
    let sent: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let seen = Arc::new(Seen::default());
    let stop = CancellationToken::new();
    let mut tasks = Vec::with_capacity(watchers.len());
    for (w, &n) in watchers.iter().enumerate() {
        let mut client = LeaderboardServiceClient::new(watch_channels[w % connections].clone());
        let request = authorized(
            pb::WatchLeaderboardRequest {
                board: bench.board.to_string(),
                top_n: 10,
                neighbours: 2,
                with_me: true,
                notify_passed: true,
                notify_within: 5.0,
            },
            &bench.tokens[n],
        );
        let (sent, seen, stop) = (sent.clone(), seen.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut stream = match client.watch_leaderboard(request).await {
                Ok(response) => response.into_inner(),
                Err(s) => {
                    seen.refused_count.fetch_add(1, Ordering::Relaxed);
                    seen.refused.note(&s);
                    return;
                }
            };
            seen.connected.fetch_add(1, Ordering::Relaxed);
            let mut last = 0u64;
            loop {
                let message = tokio::select! {
                    m = stream.message() => m,
                    () = stop.cancelled() => return,
                };
                let view = match message {
                    Ok(Some(view)) => view,
                    Ok(None) => {
                        seen.broken.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    Err(s) => {
                        seen.broken.fetch_add(1, Ordering::Relaxed);
                        seen.broke.note(&s);
                        return;
                    }
                };
                seen.views.fetch_add(1, Ordering::Relaxed);
                if view.me.is_none() {
                    seen.views_without_me.fetch_add(1, Ordering::Relaxed);
                }
                for notice in &view.notices {
                    match notice.kind() {
                        Kind::Passed => seen.passed.fetch_add(1, Ordering::Relaxed),
                        Kind::WithinReach => seen.within_reach.fetch_add(1, Ordering::Relaxed),
                        Kind::Unspecified => 0,
                    };
                }
                let probe = view
                    .entries
                    .iter()
                    .filter_map(|e| e.member.strip_prefix("bench-probe-")?.parse::<u64>().ok())
                    .max()
                    .unwrap_or(0);
                if probe > last {
                    last = probe;
                    let at = sent.lock().unwrap_or_else(|p| p.into_inner()).get(&probe).copied();
                    if let Some(at) = at {
                        seen.lags.lock().unwrap_or_else(|p| p.into_inner()).push(at.elapsed());
                    }
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let answered = |s: &Seen| {
        (s.connected.load(Ordering::Relaxed) + s.refused_count.load(Ordering::Relaxed)) as usize
    };
    while answered(&seen) < watchers.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Probes: probe k, a new member, enters at the top with 1e9 + k points (above every
    // member and every earlier probe), moving every watcher down one place.
    let probe_errors = Arc::new(FirstError::default());
    let probes = async {
        let mut client = bench.clients[0].clone();
        let end = Instant::now() + duration;
        let mut k = 0u64;
        while Instant::now() < end {
            k += 1;
            sent.lock().unwrap_or_else(|p| p.into_inner()).insert(k, Instant::now());
            let request = authorized(
                pb::SubmitScoreRequest {
                    board: bench.board.to_string(),
                    member: format!("bench-probe-{k}"),
                    score: 1e9 + k as f64,
                    subscore: 0.0,
                    event_id: format!("probe-{k}"),
                    occurred_at: None,
                },
                &bench.admin,
            );
            if let Err(s) = client.submit_score(request).await {
                probe_errors.note(&s);
            }
            tokio::time::sleep(PROBE_EVERY).await;
        }
        k
    };
    let ((background, background_failed), probes) =
        tokio::join!(bench.submit(BACKGROUND_CLIENTS, duration, "beside"), probes);
    // Views of the last probes still on their way.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.cancel();
    for t in tasks {
        t.await.ok();
    }
    let mut lags = std::mem::take(&mut *seen.lags.lock().unwrap_or_else(|p| p.into_inner()));
    lags.sort();
    Ok(Fanout {
        requested: watchers.len(),
        seen,
        lags,
        probes,
        probe_errors,
        background,
        background_failed,
    })
}

/// `ewpm bench boards`.
pub async fn boards(
    args: BoardsArgs,
    modules: &'static [&'static dyn Module],
) -> anyhow::Result<()> {
    let target = Target::open(&args.pipeline, modules).await?;
    let result = boards_on(&target, &args).await;
    target.close().await;
    result
}

fn with_error(mut figures: serde_json::Value, failed: &FirstError) -> serde_json::Value {
    figures["first_error"] = json!(failed.get());
    figures
}

fn error_line(failed: &FirstError) -> String {
    failed.get().map(|e| format!("\n      first failure: {e}")).unwrap_or_default()
}

async fn boards_on(target: &Target, args: &BoardsArgs) -> anyhow::Result<()> {
    let p = &args.pipeline;
    let duration = Duration::from_secs(p.duration);
    // Watchers are distinct members spread over the member numbers.
    let members = p.users.max(args.watchers).max(TEAM);
    let bench = BenchBoard::create(target, members).await?;
    let watchers: Vec<usize> =
        (0..args.watchers).map(|w| w * members / args.watchers.max(1)).collect();
    bench.seed(&watchers, p.concurrency).await?;

    let echo = echo(&target.leaderboard, p.concurrency, duration).await;
    let (submits, submit_failed) = bench.submit(p.concurrency, duration, "load").await;

    let first = bench.first_page().await?;
    let top: HashSet<&str> = first.entries.iter().map(|e| e.member.as_str()).collect();
    let on_board = bench.members_on_board();
    let readers: Vec<usize> =
        on_board.iter().copied().filter(|&n| !top.contains(member(n).as_str())).collect();
    anyhow::ensure!(!readers.is_empty(), "no member off the first page to read it");
    let (reads, read_failed, placed) = bench.reads(readers, p.concurrency, duration).await;
    let (ranks, ranks_failed, answered) =
        bench.ranks(on_board.clone(), p.concurrency, duration).await;

    let fan = fanout(&bench, &watchers, duration).await?;

    let echo_rate = echo.rate();
    let mean_entries = answered as f64 / ranks.ops.max(1) as f64;
    if p.json {
        println!(
            "{}",
            json!({
                "bench": "boards",
                "backend": target.backend,
                "board": bench.board.as_ref(),
                "concurrency": p.concurrency,
                "members": members,
                "duration_secs": p.duration,
                "echo": echo.json(echo_rate),
                "submit_score": with_error(submits.json(echo_rate), &submit_failed),
                "members_on_board": first.total_members,
                "get_leaderboard_page10_with_me": {
                    "figures": with_error(reads.json(echo_rate), &read_failed),
                    "answers_placing_caller_off_first_page": placed,
                },
                "get_ranks_20": {
                    "figures": with_error(ranks.json(echo_rate), &ranks_failed),
                    "mean_entries_answered": mean_entries,
                },
                "personal_watchers": fan.json(),
            })
        );
        return Ok(());
    }
    println!(
        "boards bench on {} — {}, {} clients, {} members, {} s phases",
        target.backend, bench.board, p.concurrency, members, p.duration
    );
    println!("{}", echo.line("bare echo (health)", echo_rate));
    println!("{}{}", submits.line("SubmitScore", echo_rate), error_line(&submit_failed));
    println!(
        "{}{}\n      {} of {} answers placed the caller off the first page ({} members on the board)",
        reads.line("GetLeaderboard 10 + me", echo_rate),
        error_line(&read_failed),
        placed,
        reads.ops,
        first.total_members,
    );
    println!(
        "{}{}\n      {mean_entries:.1} entries per answer",
        ranks.line(&format!("GetRanks of {TEAM}"), echo_rate),
        error_line(&ranks_failed),
    );
    let s = &fan.seen;
    println!(
        "  {} of {} personal watchers (with_me, 2 neighbours, passed, within 5): probe-to-view lag p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms  ({} samples of {} probes)",
        s.connected.load(Ordering::Relaxed),
        fan.requested,
        percentile(&fan.lags, 0.5),
        percentile(&fan.lags, 0.99),
        percentile(&fan.lags, 1.0),
        fan.lags.len(),
        fan.probes,
    );
    println!(
        "      {} views ({} without me), notices: {} passed, {} within reach; {:.0} submits/s beside ({} refused)",
        s.views.load(Ordering::Relaxed),
        s.views_without_me.load(Ordering::Relaxed),
        s.passed.load(Ordering::Relaxed),
        s.within_reach.load(Ordering::Relaxed),
        fan.background.rate(),
        fan.background.errors,
    );
    for (what, failed) in [
        ("watch refused", &s.refused),
        ("watch ended early", &s.broke),
        ("probe failed", fan.probe_errors.as_ref()),
        ("beside failed", fan.background_failed.as_ref()),
    ] {
        if let Some(e) = failed.get() {
            println!("      {what}: {e}");
        }
    }
    let early = s.broken.load(Ordering::Relaxed);
    if early > 0 {
        println!("      {early} streams ended before the phase did");
    }
    Ok(())
}
