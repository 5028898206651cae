//! `ewpm bench edge`: the REST edge in front of the in-process stack (or a running one with
//! `--target` and `--edge`). Phases of `--duration` seconds at `--concurrency`: the edge's
//! own no-upstream route `/livez` (the edge's limit on this machine), `/health` (answered
//! from the edge's last look at its upstreams), `POST /api/challenges/{id}/progress` (many
//! users), `GET /api/challenges/{id}/leaderboard?limit=10`, and
//! `GET /api/users/{userId}/challenges/active`. Every rate comes with its ratio to `/livez`
//! of the same run. Figures are printed (or returned as JSON), never asserted.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context;
use clap::Args;
use ewpm_kit::{auth::Role, module::Module};
use serde_json::json;

use crate::{
    percentile,
    pipeline::{Phase, PipelineArgs, Target, closed_loop},
};

/// `ewpm bench edge` options.
#[derive(Debug, Args)]
pub struct EdgeArgs {
    #[command(flatten)]
    pub(crate) pipeline: PipelineArgs,
    /// The REST edge of a running target (`ewpm dev`'s HTTP address); needed with --target.
    /// The in-process stack gets an edge of its own.
    #[arg(long)]
    edge: Option<String>,
}

/// The goal of every upstream route as a share of `/livez`.
const GOAL_ROUTE_RATIO: f64 = 0.70;
/// The goal of `/health` as a share of `/livez`.
const GOAL_HEALTH_RATIO: f64 = 0.90;

/// `ewpm bench edge`.
pub async fn edge(
    args: EdgeArgs,
    modules: &'static [&'static dyn Module],
) -> anyhow::Result<serde_json::Value> {
    let target = Target::open(&args.pipeline, modules).await?;
    let local = target.local_edge().await?;
    let result = match (local.as_ref().map(|e| e.base.clone()), args.edge.clone()) {
        (Some(base), _) | (None, Some(base)) => run(&target, &args, &base).await,
        (None, None) => Err(anyhow::anyhow!("--edge is needed with --target: the edge's address")),
    };
    if let Some(edge) = local {
        edge.stop().await;
    }
    target.close().await;
    result
}

async fn run(target: &Target, args: &EdgeArgs, base: &str) -> anyhow::Result<serde_json::Value> {
    let p = &args.pipeline;
    let concurrency = p.concurrency.max(1);
    let duration = Duration::from_secs(p.duration);
    ewpm_kit::install_tls_provider();
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(concurrency)
        .build()
        .context("HTTP client")?;
    let challenges = target.challenges(p.challenges.max(1)).await?;
    // The edge answers /health from its last look at the upstreams (once a second).
    crate::engagement::wait_healthy(&http, base).await?;
    let users: Arc<Vec<String>> = Arc::new(
        (0..p.users.max(1))
            .map(|u| {
                format!("Bearer {}", target.keys.mint(&format!("user-{u}"), Role::Employee, None))
            })
            .collect(),
    );
    let unexpected: Arc<Mutex<Option<String>>> = Arc::default();
    let get = |url: String, authorization: Option<String>| {
        let (http, unexpected) = (http.clone(), unexpected.clone());
        move |_: usize, _: u64| {
            let mut request = http.get(&url);
            if let Some(a) = &authorization {
                request = request.header("authorization", a);
            }
            let unexpected = unexpected.clone();
            async move { crate::engagement::answered(request, 200, &unexpected).await }
        }
    };
    let livez = closed_loop(concurrency, duration, get(format!("{base}/livez"), None)).await;
    let health = closed_loop(concurrency, duration, get(format!("{base}/health"), None)).await;
    let submit = closed_loop(concurrency, duration, {
        let (http, unexpected, users) = (http.clone(), unexpected.clone(), users.clone());
        let urls: Arc<Vec<String>> = Arc::new(
            challenges.iter().map(|c| format!("{base}/api/challenges/{c}/progress")).collect(),
        );
        move |_, i| {
            let i = i as usize;
            let request = http
                .post(&urls[(i * 31) % urls.len()])
                .header("authorization", &users[(i * 7_919) % users.len()])
                .header("content-type", "application/json")
                .body(format!("{{\"value\":{}}}", i % 100 + 1));
            let unexpected = unexpected.clone();
            async move { crate::engagement::answered(request, 202, &unexpected).await }
        }
    })
    .await;
    let board = closed_loop(concurrency, duration, {
        let (http, unexpected) = (http.clone(), unexpected.clone());
        let urls: Arc<Vec<String>> = Arc::new(
            challenges
                .iter()
                .map(|c| format!("{base}/api/challenges/{c}/leaderboard?limit=10"))
                .collect(),
        );
        let reader = users[0].clone();
        move |_, i| {
            let request = http.get(&urls[i as usize % urls.len()]).header("authorization", &reader);
            let unexpected = unexpected.clone();
            async move { crate::engagement::answered(request, 200, &unexpected).await }
        }
    })
    .await;
    let active = closed_loop(concurrency, duration, {
        let (http, unexpected, users) = (http.clone(), unexpected.clone(), users.clone());
        let base = base.to_string();
        move |_, i| {
            let u = (i as usize * 7_919) % users.len();
            let request = http
                .get(format!("{base}/api/users/user-{u}/challenges/active"))
                .header("authorization", &users[u]);
            let unexpected = unexpected.clone();
            async move { crate::engagement::answered(request, 200, &unexpected).await }
        }
    })
    .await;
    let unexpected = unexpected.lock().unwrap_or_else(|p| p.into_inner()).take();
    let base_rate = livez.rate();
    let phase = |phase: &Phase, goal: Option<f64>| {
        let mut v = phase.json(base_rate);
        let figures = v.as_object_mut().expect("an object");
        let ratio = figures.remove("ratio_to_echo").unwrap_or_default();
        figures.insert("ratio_to_livez".into(), ratio);
        if let Some(goal) = goal {
            figures.insert("goal_ratio".into(), json!(goal));
        }
        v
    };
    let report = json!({
        "bench": "edge",
        "backend": target.backend,
        "edge": base,
        "concurrency": concurrency,
        "duration_secs": p.duration,
        "livez": phase(&livez, None),
        "health": phase(&health, Some(GOAL_HEALTH_RATIO)),
        "post_progress": phase(&submit, Some(GOAL_ROUTE_RATIO)),
        "get_leaderboard": phase(&board, Some(GOAL_ROUTE_RATIO)),
        "get_active": phase(&active, Some(GOAL_ROUTE_RATIO)),
        "unexpected_answer": unexpected,
    });
    if !p.json {
        println!(
            "edge bench on {} — REST edge {base}, {concurrency} clients, {} s phases",
            target.backend, p.duration
        );
        for (what, phase, goal) in [
            ("GET /livez (no call)", &livez, None),
            ("GET /health", &health, Some(GOAL_HEALTH_RATIO)),
            ("POST …/progress", &submit, Some(GOAL_ROUTE_RATIO)),
            ("GET …/leaderboard", &board, Some(GOAL_ROUTE_RATIO)),
            ("GET …/active", &active, Some(GOAL_ROUTE_RATIO)),
        ] {
            let ratio = phase.rate() / base_rate;
            println!(
                "  {what:<22} {:>8.0}/s  ({:>3.0} % of /livez{})  p50 {:.2} ms  p99 {:.2} ms  max {:.1} ms{}",
                phase.rate(),
                ratio * 100.0,
                goal.map_or(String::new(), |g| format!(
                    "; goal ≥ {:.0} %{}",
                    g * 100.0,
                    if ratio >= g { ", met" } else { ", NOT met" }
                )),
                percentile(&phase.latencies, 0.5),
                percentile(&phase.latencies, 0.99),
                percentile(&phase.latencies, 1.0),
                if phase.errors > 0 {
                    format!("  ({} refused or failed)", phase.errors)
                } else {
                    String::new()
                },
            );
        }
        if let Some(u) = report["unexpected_answer"].as_str() {
            println!("  !! first unexpected answer: {u}");
        }
    }
    Ok(report)
}
