//! `ewpm bench all`: every bench behind the performance table, one after another in this
//! process, then one summary of each row against its goal. Each bench measures its own
//! baseline in its own run (the bare gRPC echo, or the edge's no-upstream `/livez`), so every
//! ratio compares figures taken minutes apart at most, on the same machine.

use std::time::Instant;

use clap::{Args, Parser};
use ewpm_kit::module::Module;
use serde_json::{Value, json};

/// `ewpm bench all` options.
#[derive(Debug, Args)]
pub struct AllArgs {
    /// PostgreSQL server for the PostgreSQL rows (an admin URL; each bench creates a
    /// throwaway database and drops it).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    postgres: String,
    /// Redis for the PostgreSQL + Redis rows (each bench under a throwaway key prefix,
    /// deleted at the end).
    #[arg(long, default_value = "redis://127.0.0.1:6379/0")]
    redis: String,
    /// Seconds of each measured phase.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Watchers of one board in the fan-out row.
    #[arg(long, default_value_t = 10_000)]
    watchers: usize,
    /// Print one JSON object (every bench's report and the summary) instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Parses one bench's options as its own command line would (so its defaults hold).
fn parse<A: Args>(argv: &[String]) -> anyhow::Result<A> {
    #[derive(Parser)]
    struct Command<A: Args> {
        #[command(flatten)]
        args: A,
    }
    let argv = std::iter::once("bench".to_string()).chain(argv.iter().cloned());
    Ok(Command::<A>::try_parse_from(argv)?.args)
}

/// `ewpm bench all`.
pub async fn all(args: AllArgs, modules: &'static [&'static dyn Module]) -> anyhow::Result<Value> {
    let started = Instant::now();
    let d = args.duration.to_string();
    let (pg, redis) = (args.postgres.clone(), args.redis.clone());
    let common = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = vec!["--json".into(), "--duration".into(), d.clone()];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let mesh = ["--postgres", pg.as_str(), "--redis", redis.as_str()];
    let watchers = args.watchers.to_string();
    let mut runs = serde_json::Map::new();
    // Each bench in turn; one that fails is reported as such and the rest still run.
    macro_rules! run {
        ($name:literal, $what:literal, $f:path, $argv:expr) => {{
            if !args.json {
                eprintln!("bench all: {} …", $what);
            }
            let t = Instant::now();
            let report = match parse($argv) {
                Ok(a) => $f(a, modules).await,
                Err(err) => Err(err),
            };
            let mut report = report.unwrap_or_else(|err| json!({"error": format!("{err:#}")}));
            if let Some(o) = report.as_object_mut() {
                o.insert("wall_secs".into(), json!(t.elapsed().as_secs()));
            }
            if !args.json {
                eprintln!("bench all: {} done in {} s", $what, t.elapsed().as_secs());
            }
            runs.insert($name.to_string(), report);
        }};
    }
    run!("progress_embedded", "progress, embedded", crate::pipeline::progress, &common(&[]));
    run!(
        "progress_mesh",
        "progress, PostgreSQL + Redis",
        crate::pipeline::progress,
        &common(&mesh)
    );
    run!(
        "leaderboard_embedded",
        "leaderboard watchers, embedded",
        crate::pipeline::leaderboard,
        &common(&["--watchers", &watchers])
    );
    run!("edge_embedded", "REST edge, embedded", crate::edge::edge, &common(&[]));
    run!("scan_postgres", "scan, PostgreSQL", crate::scan, &{
        vec!["--json".to_string(), "--postgres".into(), pg.clone()]
    });
    run!(
        "engagement_mesh",
        "engagement ingest, PostgreSQL + Redis",
        crate::engagement::engagement,
        &common(&mesh)
    );
    run!(
        "incentives_mesh",
        "incentive processors, PostgreSQL + Redis",
        crate::incentives::incentives,
        &{
            vec![
                "--json".to_string(),
                "--postgres".into(),
                pg.clone(),
                "--redis".into(),
                redis.clone(),
            ]
        }
    );
    let runs = Value::Object(runs);
    let summary = summary(&runs);
    let report = json!({
        "bench": "all",
        "cpus": std::thread::available_parallelism().map_or(0, usize::from),
        "duration_secs": args.duration,
        "wall_secs": started.elapsed().as_secs(),
        "summary": summary,
        "runs": runs,
    });
    if !args.json {
        print_summary(&report["summary"]);
    }
    Ok(report)
}

/// One row of the table: a figure, what it is measured against, and its goal.
struct Row {
    path: &'static str,
    figure: Option<f64>,
    unit: &'static str,
    /// The baseline's rate of the same run, where the figure is a ratio.
    baseline: Option<f64>,
    goal: f64,
    /// Whether the goal is a floor (≥) or a ceiling (≤).
    at_least: bool,
    note: Option<String>,
}

fn summary(runs: &Value) -> Value {
    let n = |v: &Value| v.as_f64();
    let r = |run: &str, path: &[&str]| -> Option<f64> {
        path.iter().try_fold(&runs[run], |v, k| v.get(k)).and_then(n)
    };
    let mut rows = vec![
        Row {
            path: "SubmitProgress, embedded: share of the bare echo",
            figure: r("progress_embedded", &["submit", "ratio_to_echo"]),
            unit: "ratio",
            baseline: r("progress_embedded", &["echo", "per_sec"]),
            goal: 0.70,
            at_least: true,
            note: r("progress_embedded", &["submit", "per_sec"]).map(|v| format!("{v:.0}/s")),
        },
        Row {
            path: "SubmitProgress, embedded: p99",
            figure: r("progress_embedded", &["submit", "latency_ms", "p99"]),
            unit: "ms",
            baseline: None,
            goal: 10.0,
            at_least: false,
            note: None,
        },
        Row {
            path: "SubmitProgress, PostgreSQL + Redis: share of the bare echo",
            figure: r("progress_mesh", &["submit", "ratio_to_echo"]),
            unit: "ratio",
            baseline: r("progress_mesh", &["echo", "per_sec"]),
            goal: 0.50,
            at_least: true,
            note: Some(format!(
                "{:.0}/s, {} pushed back",
                r("progress_mesh", &["submit", "per_sec"]).unwrap_or(0.0),
                r("progress_mesh", &["submit", "refused"]).unwrap_or(0.0)
            )),
        },
        Row {
            path: "visible in Watch, PostgreSQL + Redis: p99",
            figure: r("progress_mesh", &["visible_in_watch_ms", "p99"]),
            unit: "ms",
            baseline: None,
            goal: 250.0,
            at_least: false,
            note: None,
        },
        Row {
            path: "watchers of one board (embedded): update lag p99",
            figure: r("leaderboard_embedded", &["watchers", "update_lag_ms", "p99"]),
            unit: "ms",
            baseline: None,
            goal: 200.0,
            at_least: false,
            note: Some(format!(
                "{} connected",
                r("leaderboard_embedded", &["watchers", "connected"]).unwrap_or(0.0)
            )),
        },
    ];
    for (key, path) in [
        ("post_progress", "REST POST …/progress: share of /livez"),
        ("get_leaderboard", "REST GET …/leaderboard: share of /livez"),
        ("get_active", "REST GET …/challenges/active: share of /livez"),
        ("health", "REST GET /health: share of /livez"),
    ] {
        rows.push(Row {
            path,
            figure: r("edge_embedded", &[key, "ratio_to_livez"]),
            unit: "ratio",
            baseline: r("edge_embedded", &["livez", "per_sec"]),
            goal: if key == "health" { 0.90 } else { 0.70 },
            at_least: true,
            note: r("edge_embedded", &[key, "per_sec"]).map(|v| format!("{v:.0}/s")),
        });
    }
    rows.extend([
        Row {
            path: "scan projection, PostgreSQL",
            figure: r("scan_postgres", &["projection", "events_per_sec"]),
            unit: "events/s",
            baseline: None,
            goal: 85_000.0,
            at_least: true,
            note: None,
        },
        Row {
            path: "scan ingest (IngestScanEvents), PostgreSQL",
            figure: r("scan_postgres", &["ingest", "events_per_sec"]),
            unit: "events/s",
            baseline: None,
            goal: 85_000.0,
            at_least: true,
            note: None,
        },
        Row {
            path: "match events persisted, PostgreSQL + Redis",
            figure: r("engagement_mesh", &["ingest", "persisted_events_per_sec"]),
            unit: "events/s",
            baseline: None,
            goal: 85_000.0,
            at_least: true,
            note: None,
        },
        Row {
            path: "incentive processors, PostgreSQL + Redis",
            figure: r("incentives_mesh", &["processed_per_sec"]),
            unit: "events/s",
            baseline: None,
            goal: 50_000.0,
            at_least: true,
            note: runs["incentives_mesh"]["exactly_once"].as_bool().map(|e| {
                if e { "awards exactly once".to_string() } else { "awards NOT exactly once".into() }
            }),
        },
    ]);
    Value::Array(
        rows.into_iter()
            .map(|row| {
                let met =
                    row.figure.map(|f| if row.at_least { f >= row.goal } else { f <= row.goal });
                json!({
                    "path": row.path,
                    "figure": row.figure,
                    "unit": row.unit,
                    "baseline_per_sec": row.baseline,
                    "goal": format!("{} {}", if row.at_least { "≥" } else { "≤" }, row.goal),
                    "met": met,
                    "note": row.note,
                })
            })
            .collect(),
    )
}

fn print_summary(summary: &Value) {
    println!("ewpm bench all — every row against its goal");
    for row in summary.as_array().into_iter().flatten() {
        let figure = match (row["figure"].as_f64(), row["unit"].as_str()) {
            (Some(f), Some("ratio")) => format!("{:.0} %", f * 100.0),
            (Some(f), Some(unit)) => format!("{f:.0} {unit}"),
            _ => "not measured (see the run's error)".to_string(),
        };
        let goal = row["goal"].as_str().unwrap_or_default();
        let goal = match (row["unit"].as_str(), goal.split_once(' ')) {
            (Some("ratio"), Some((op, v))) => {
                format!("{op} {:.0} %", v.parse::<f64>().unwrap_or(0.0) * 100.0)
            }
            _ => goal.to_string(),
        };
        println!(
            "  {:<62} {:>14}  goal {:<12} {}{}",
            row["path"].as_str().unwrap_or_default(),
            figure,
            goal,
            match row["met"].as_bool() {
                Some(true) => "met",
                Some(false) => "NOT met",
                None => "-",
            },
            row["note"].as_str().map_or(String::new(), |n| format!("  ({n})")),
        );
    }
}
