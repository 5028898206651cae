//! Faults of the stores the mesh depends on, with the mesh as separate processes: Redis
//! restarted (gracefully, then by SIGKILL) and PostgreSQL stopped for a minute, under a steady
//! stream of submissions. No EWPM process is restarted. Each test counts what was offered,
//! acknowledged, lost and doubled, and how long intake took to come back.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use ewpm_kit::auth::Role;
use ewpm_proto::progress::v1::{
    SubmitProgressRequest, progress_service_client::ProgressServiceClient,
};
use ewpm_testkit::{OwnPostgres, OwnRedis, OwnRedisCluster, TestDb, bearer, servers};
use tonic::Request;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

mod common;
use common::Mesh;

/// What a steady submitter saw.
#[derive(Debug, Default)]
struct Tally {
    offered: AtomicU64,
    acked: AtomicU64,
    acked_sum: AtomicU64,
    /// When each acknowledgement came, for recovery times.
    ack_times: Mutex<Vec<Instant>>,
}

impl Tally {
    /// The first acknowledgement at or after `t`.
    fn first_ack_after(&self, t: Instant) -> Option<Instant> {
        self.ack_times.lock().unwrap().iter().copied().find(|a| *a >= t)
    }

    fn acks_between(&self, from: Instant, to: Instant) -> usize {
        self.ack_times.lock().unwrap().iter().filter(|a| **a >= from && **a <= to).count()
    }

    /// Stops the `submitters` and waits for them; (offered, acknowledged, acknowledged sum).
    async fn stop(
        &self,
        stop: &AtomicBool,
        submitters: Vec<tokio::task::JoinHandle<()>>,
    ) -> (u64, u64, u64) {
        stop.store(true, Ordering::Relaxed);
        for s in submitters {
            s.await.unwrap();
        }
        (
            self.offered.load(Ordering::Relaxed),
            self.acked.load(Ordering::Relaxed),
            self.acked_sum.load(Ordering::Relaxed),
        )
    }
}

/// Submits progress over 8 concurrent callers (20 users) until `stop`, each pausing `pace`
/// after an acknowledgement and each call with a 3 s deadline; a failed call is retried with
/// its idempotency key until answered, and an entry counts once acknowledged. Integer values,
/// so sums are exact.
fn submit_steadily(
    port: u16,
    challenge: String,
    pace: Duration,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..8)
        .map(|t| {
            let (challenge, stop, tally) = (challenge.clone(), stop.clone(), tally.clone());
            tokio::spawn(async move {
                let channel =
                    tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
                        .unwrap()
                        .connect_lazy();
                let mut client = ProgressServiceClient::new(channel);
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let value = (i % 13 + 1) as f64;
                    let user = format!("user-{}", (t * 1000 + i) % 20);
                    tally.offered.fetch_add(1, Ordering::Relaxed);
                    // As a careful client does: the same idempotency key until it is answered,
                    // so a call that timed out but was queued is not queued twice.
                    let key = format!("fault-{t}-{i}");
                    loop {
                        let mut request = Request::new(SubmitProgressRequest {
                            challenge_id: challenge.clone(),
                            value,
                            occurred_at: None,
                            idempotency_key: key.clone(),
                        });
                        request.set_timeout(Duration::from_secs(3));
                        request.metadata_mut().insert(
                            "authorization",
                            bearer(&user, Role::Employee, None).parse().unwrap(),
                        );
                        match client.submit_progress(request).await {
                            Ok(_) => {
                                tally.acked.fetch_add(1, Ordering::Relaxed);
                                tally.acked_sum.fetch_add(value as u64, Ordering::Relaxed);
                                tally.ack_times.lock().unwrap().push(Instant::now());
                                tokio::time::sleep(pace).await;
                                break;
                            }
                            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                        }
                    }
                }
            })
        })
        .collect()
}

/// Polls the gRPC health of `service` on `port` every 200 ms until `stop`; returns every
/// status seen, in order, without repeats.
fn watch_health(
    port: u16,
    service: &'static str,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<ServingStatus>> {
    tokio::spawn(async move {
        let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect_lazy();
        let mut client = HealthClient::new(channel);
        let mut seen: Vec<ServingStatus> = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let mut request = Request::new(HealthCheckRequest { service: service.to_string() });
            request.set_timeout(Duration::from_secs(1));
            if let Ok(r) = client.check(request).await {
                let status = ServingStatus::try_from(r.into_inner().status).unwrap();
                if seen.last() != Some(&status) {
                    seen.push(status);
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        seen
    })
}

/// A challenge on `mesh` and steady submitters to it (see [`submit_steadily`]).
async fn steady_load(
    mesh: &Mesh,
    pace: Duration,
) -> (String, Arc<AtomicBool>, Arc<Tally>, Vec<tokio::task::JoinHandle<()>>) {
    let challenge = mesh.challenge().await;
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let submitters =
        submit_steadily(mesh.progress, challenge.clone(), pace, stop.clone(), tally.clone());
    (challenge, stop, tally, submitters)
}

/// How long after now intake acknowledged again (at most 30 s, else the test fails):
/// `what` just came back.
async fn resumed(tally: &Tally, what: &str) -> Duration {
    let back = Instant::now();
    let deadline = back + Duration::from_secs(30);
    loop {
        if let Some(at) = tally.first_ack_after(back) {
            return at.duration_since(back);
        }
        assert!(Instant::now() < deadline, "intake did not resume within 30 s of {what} returning");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn fast_health() -> Vec<(String, String)> {
    vec![
        ("EWPM_HEALTH__CHECK_INTERVAL_MS".into(), "250".into()),
        ("EWPM_HEALTH__UNREADY_AFTER_SECS".into(), "1".into()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_restart_and_a_redis_sigkill_need_no_process_restart() {
    let mut redis = OwnRedis::start().unwrap();
    let db = TestDb::postgres_unmigrated().await.unwrap();
    let mesh = Mesh::start_on(db, redis.url.clone(), fast_health(), true, false).await;
    let (challenge, stop, tally, submitters) = steady_load(&mesh, Duration::from_millis(20)).await;
    let progress_health =
        watch_health(mesh.progress, "ewpm.progress.v1.ProgressService", stop.clone());
    let board_health =
        watch_health(mesh.leaderboard, "ewpm.leaderboard.v1.LeaderboardService", stop.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut recoveries = Vec::new();
    for graceful in [true, false] {
        if graceful {
            redis.shutdown()
        } else {
            redis.kill()
        }
        tokio::time::sleep(Duration::from_secs(4)).await;
        redis.up().unwrap();
        recoveries.push(resumed(&tally, "Redis").await);
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let (offered, acked, sum) = tally.stop(&stop, submitters).await;
    let progress_seen = progress_health.await.unwrap();
    let board_seen = board_health.await.unwrap();
    eprintln!(
        "redis faults: offered {offered}, acknowledged {acked}, recovery after graceful restart {:?}, after SIGKILL {:?}",
        recoveries[0], recoveries[1]
    );
    assert_eq!(offered, acked, "every entry offered was eventually acknowledged");
    for r in &recoveries {
        assert!(*r < Duration::from_secs(10), "intake resumed {r:?} after Redis returned");
    }
    use ServingStatus::{NotServing, Serving};
    // Twice down, twice back: readiness told the truth each time.
    assert_eq!(progress_seen, vec![Serving, NotServing, Serving, NotServing, Serving]);
    assert_eq!(board_seen, vec![Serving, NotServing, Serving, NotServing, Serving]);
    // Every acknowledged entry is in SQL exactly once (count and sum), nothing is pending,
    // and the board equals SQL.
    mesh.drained(&[challenge], acked, sum as f64).await;
}

/// The mesh on a three-master Redis Cluster with four partitions per topic (the bus's streams,
/// the boards and their scripts, pub/sub), each master restarted in turn under steady load:
/// intake resumes by itself after each, and every acknowledged entry is in SQL once and on
/// the board.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_a_redis_cluster_each_master_restarts_under_load_and_nothing_acknowledged_is_lost() {
    let mut cluster = OwnRedisCluster::start().unwrap();
    let db = TestDb::postgres_unmigrated().await.unwrap();
    // Four partitions per topic: the progress queue and the score deltas spread over the
    // three masters, so each restart hits some partitions of each.
    let mut env = fast_health();
    env.push(("EWPM_BUS_PARTITIONS".into(), "4".into()));
    let mesh = Mesh::start_on(db, cluster.url.clone(), env, true, false).await;
    let (challenge, stop, tally, submitters) = steady_load(&mesh, Duration::from_millis(20)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut recoveries = Vec::new();
    for node in 0..3 {
        // Down for less than the cluster's node timeout (5 s): no failover, only this
        // master's slots go unserved meanwhile.
        cluster.shutdown(node);
        tokio::time::sleep(Duration::from_secs(2)).await;
        cluster.up(node).unwrap();
        recoveries.push(resumed(&tally, &format!("master {node}")).await);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let (offered, acked, sum) = tally.stop(&stop, submitters).await;
    eprintln!(
        "redis cluster restarts: offered {offered}, acknowledged {acked}, intake back after {recoveries:?}"
    );
    assert_eq!(offered, acked, "every entry offered was eventually acknowledged");
    assert!(acked > 100, "the load ran: {acked} acknowledged");
    mesh.drained(&[challenge], acked, sum as f64).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn intake_continues_through_a_minute_of_postgres_outage() {
    let pg = OwnPostgres::start().unwrap();
    let db = TestDb::postgres_unmigrated_on(&pg.url).await.unwrap();
    let mesh = Mesh::start_on(db, servers().redis_url.clone(), fast_health(), true, false).await;
    // Slow enough that a minute's backlog stays under the queue's push-back limit.
    let (challenge, stop, tally, submitters) = steady_load(&mesh, Duration::from_millis(100)).await;
    // The challenge window is cached by the first submissions.
    tokio::time::sleep(Duration::from_secs(2)).await;

    pg.down().unwrap();
    let down = Instant::now();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let up = Instant::now();
    pg.up().unwrap();
    let during = tally.acks_between(down, up);
    // Acknowledgements kept coming in every 10 s slice of the outage.
    let slices: Vec<usize> = (0..6)
        .map(|k| {
            let from = down + Duration::from_secs(10 * k);
            tally.acks_between(from, from + Duration::from_secs(10))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (offered, acked, sum) = tally.stop(&stop, submitters).await;
    eprintln!(
        "postgres outage: offered {offered}, acknowledged {acked}, of which {during} during the 60 s outage, per 10 s {slices:?}"
    );
    assert!(slices.iter().all(|n| *n > 0), "intake stalled during the outage: {slices:?}");
    assert_eq!(offered, acked, "every entry offered was eventually acknowledged");
    // Everything acknowledged during the outage is written once PostgreSQL is back.
    mesh.drained(&[challenge], acked, sum as f64).await;
}
