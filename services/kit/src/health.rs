//! Readiness that tells the truth.
//!
//! A process names the stores it depends on ([`Dependency`]: its database, its Redis); a
//! [`watch`] task checks each one every `check_interval_ms` with a short timeout. While any
//! has failed for longer than `unready_after_secs`, every service the server mounts (and the
//! whole-server status `""`) reports NOT_SERVING; once all answer again, SERVING. The status
//! [`LIVENESS`] never depends on other systems: it is SERVING from start to shutdown, so a
//! Kubernetes liveness probe on it never restarts pods for a Redis or PostgreSQL outage
//! (restarts would not fix it), while the readiness probe takes the pod out of rotation.
//!
//! Each dependency's state is also a metric, `ewpm_dependency_up{dependency}` (1 or 0).

use std::time::{Duration, Instant};

use fred::prelude::{Client, ClientLike};
use sea_orm::DatabaseConnection;
use tokio_util::sync::CancellationToken;
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{retry::sleep_or_shutdown, settings::HealthSettings};

/// The health service name of liveness: SERVING while the process runs, whatever its
/// dependencies do (probe it with `grpc: {port, service: liveness}`).
pub const LIVENESS: &str = "liveness";

/// Longest one check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// A store a process cannot serve without.
#[derive(Clone)]
pub enum Dependency {
    /// The service's SQL database (`SELECT 1`).
    Database(DatabaseConnection),
    /// Redis (`PING`), on a client of its own so that a backlog of other commands cannot
    /// make a live Redis look dead.
    Redis(Client),
}

impl Dependency {
    /// The metric label and log name.
    pub fn name(&self) -> &'static str {
        match self {
            Dependency::Database(_) => "database",
            Dependency::Redis(_) => "redis",
        }
    }

    /// Whether it answers now.
    pub async fn check(&self) -> Result<(), String> {
        let checked = match self {
            Dependency::Database(db) => tokio::time::timeout(CHECK_TIMEOUT, db.ping())
                .await
                .map(|r| r.map_err(|e| e.to_string())),
            Dependency::Redis(client) => {
                tokio::time::timeout(CHECK_TIMEOUT, client.ping::<String>(None))
                    .await
                    .map(|r| r.map(drop).map_err(|e| e.to_string()))
            }
        };
        checked.unwrap_or_else(|_| Err(format!("no answer within {CHECK_TIMEOUT:?}")))
    }
}

/// Where one dependency stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct State {
    /// When it started failing, while it fails.
    failing_since: Option<Instant>,
}

/// Whether the process is ready, given each dependency's state at `now`.
fn ready(states: &[State], now: Instant, unready_after: Duration) -> bool {
    states
        .iter()
        .all(|s| s.failing_since.is_none_or(|since| now.duration_since(since) <= unready_after))
}

/// Checks `dependencies` until `shutdown` and sets `services` (and `""`) SERVING or
/// NOT_SERVING on `reporter` as they come and go (see the module doc). Logs each change.
pub async fn watch(
    reporter: HealthReporter,
    services: Vec<&'static str>,
    dependencies: Vec<Dependency>,
    settings: HealthSettings,
    shutdown: CancellationToken,
) {
    if dependencies.is_empty() {
        return;
    }
    let interval = Duration::from_millis(settings.check_interval_ms.max(50));
    let unready_after = Duration::from_secs(settings.unready_after_secs);
    let mut states = vec![State { failing_since: None }; dependencies.len()];
    let mut serving = true;
    loop {
        let results = futures::future::join_all(dependencies.iter().map(Dependency::check)).await;
        let now = Instant::now();
        for ((dependency, state), result) in dependencies.iter().zip(&mut states).zip(results) {
            let up = result.is_ok();
            metrics::gauge!("ewpm_dependency_up", "dependency" => dependency.name()).set(if up {
                1.0
            } else {
                0.0
            });
            match (result, state.failing_since) {
                (Ok(()), Some(since)) => {
                    tracing::info!(
                        dependency = dependency.name(),
                        down_secs = now.duration_since(since).as_secs_f64(),
                        "dependency answers again"
                    );
                    state.failing_since = None;
                }
                (Err(error), None) => {
                    tracing::warn!(dependency = dependency.name(), error, "dependency unreachable");
                    state.failing_since = Some(now);
                }
                _ => {}
            }
        }
        let now_ready = ready(&states, now, unready_after);
        if shutdown.is_cancelled() {
            return;
        }
        if now_ready != serving {
            serving = now_ready;
            let status = if serving { ServingStatus::Serving } else { ServingStatus::NotServing };
            if serving {
                tracing::info!("ready again: every dependency answers");
            } else {
                tracing::warn!("not ready: a dependency has been unreachable too long");
            }
            reporter.set_service_status("", status).await;
            for name in &services {
                reporter.set_service_status(*name, status).await;
            }
        }
        if sleep_or_shutdown(interval, &shutdown).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dependency_failing_briefly_keeps_the_process_ready() {
        let now = Instant::now();
        let states = [
            State { failing_since: None },
            State { failing_since: Some(now - Duration::from_secs(3)) },
        ];
        assert!(ready(&states, now, Duration::from_secs(5)));
    }

    #[test]
    fn a_dependency_failing_longer_than_the_limit_makes_the_process_unready() {
        let now = Instant::now();
        let states = [State { failing_since: Some(now - Duration::from_secs(6)) }];
        assert!(!ready(&states, now, Duration::from_secs(5)));
        assert!(ready(&[State { failing_since: None }], now, Duration::from_secs(5)));
    }
}
