//! The scan projector as separate processes on PostgreSQL: killed with SIGKILL at random
//! points while it consumes 100,000 events, and two projectors on one source.

use std::{
    collections::HashMap,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use chrono::{DateTime, TimeZone, Utc};
use ewpm_scan::{
    domain::Scan,
    store::{ParcelState, ScanStore},
};
use ewpm_testkit::{Proc, TEST_SECRET, TestDb, free_port};

fn projector_process(url: &str, page_size: u32) -> Proc {
    Proc(
        Command::new(env!("CARGO_BIN_EXE_ewpm"))
            .args(["serve", "scan-projector"])
            .env("DATABASE_URL", url)
            .env("EWPM_AUTH__SECRET", TEST_SECRET)
            .env("EWPM_GRPC__ADDR", format!("127.0.0.1:{}", free_port()))
            .env("EWPM_METRICS__ADDR", format!("127.0.0.1:{}", free_port()))
            .env("EWPM_SCAN__PROJECTOR__PAGE_SIZE", page_size.to_string())
            .env("EWPM_SCAN__PROJECTOR__POLL_INTERVAL_MS", "50")
            .env("EWPM_LOG__LEVEL", "error")
            .env("EWPM_LOG__FORMAT", "json")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn sigkill(p: &mut Proc) {
    let status = Command::new("kill").args(["-KILL", &p.0.id().to_string()]).status().unwrap();
    assert!(status.success());
    p.0.wait().unwrap();
}

/// A small deterministic generator (no randomness crate needed).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 =
            self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

fn generate(count: usize, parcels: u64, seed: u64) -> Vec<Scan> {
    let mut rng = Lcg(seed);
    let kinds = ["PICKUP", "STATUS", "DELIVERY", "STATUS", "RETURNED"];
    (0..count)
        .map(|i| Scan {
            parcel_id: rng.next(parcels) as i64 + 1,
            kind: kinds[rng.next(kinds.len() as u64) as usize].to_string(),
            created_at: Utc.timestamp_opt(1_672_531_200 + rng.next(3_000_000) as i64, 0).unwrap(),
            status_code: if rng.next(4) == 0 { "DAMAGED".into() } else { String::new() },
            device_id: rng.next(50) as i64,
            device_transaction_id: 0,
            user_id: format!("NC{}", 1000 + rng.next(20)),
            carrier_id: ["NC", "PC", "BL"][rng.next(3) as usize].to_string(),
            run_id: (i / 100).to_string(),
        })
        .collect()
}

/// What applying `events` (ids 1..) in order must give; independent of the service's fold.
fn expected(events: &[Scan]) -> Vec<ParcelState> {
    let mut states: HashMap<i64, ParcelState> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        let s = states.entry(e.parcel_id).or_insert(ParcelState {
            parcel_id: e.parcel_id,
            last_event_id: 0,
            kind: String::new(),
            status_code: String::new(),
            run_id: String::new(),
            created_at: e.created_at,
            pickup_at: None,
            delivery_at: None,
            event_count: 0,
        });
        s.last_event_id = i as i64 + 1;
        s.kind = e.kind.clone();
        s.status_code = e.status_code.clone();
        s.run_id = e.run_id.clone();
        s.created_at = e.created_at;
        s.event_count += 1;
        let first = |t: &mut Option<DateTime<Utc>>| {
            if t.is_none() {
                *t = Some(e.created_at);
            }
        };
        match e.kind.as_str() {
            "PICKUP" => first(&mut s.pickup_at),
            "DELIVERY" => first(&mut s.delivery_at),
            _ => {}
        }
    }
    let mut v: Vec<_> = states.into_values().collect();
    v.sort_by_key(|s| s.parcel_id);
    v
}

async fn append(store: &ScanStore, events: &[Scan]) {
    for chunk in events.chunks(5_000) {
        store.append(chunk, Utc::now()).await.unwrap();
    }
}

async fn wait_for_checkpoint(store: &ScanStore, target: i64, limit: Duration) {
    let deadline = Instant::now() + limit;
    while store.checkpoint("own", Utc::now()).await.unwrap() < target {
        assert!(Instant::now() < deadline, "projector did not reach {target}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_never_loses_or_repeats_an_event() {
    let db = TestDb::postgres(ewpm::MODULES).await.unwrap();
    let store = ScanStore::new(db.db.clone());
    let events = generate(100_000, 5_000, 42);
    append(&store, &events).await;
    let total = events.len() as i64;

    let mut rng = Lcg(7);
    let mut interrupted = Vec::new();
    for _ in 0..30 {
        let mut p = projector_process(&db.url, 500);
        tokio::time::sleep(Duration::from_millis(150 + rng.next(500))).await;
        sigkill(&mut p);
        let at = store.checkpoint("own", Utc::now()).await.unwrap();
        assert!(interrupted.last().is_none_or(|last| at >= *last), "the checkpoint went backwards");
        if at >= total {
            break;
        }
        if at > 0 {
            interrupted.push(at);
        }
        if interrupted.len() >= 6 {
            break;
        }
    }
    assert!(interrupted.len() >= 2, "the projector was never killed mid-run: {interrupted:?}");

    let _last = projector_process(&db.url, 500);
    wait_for_checkpoint(&store, total, Duration::from_secs(300)).await;
    let states = store.all_parcels().await.unwrap();
    assert_eq!(
        states.iter().map(|s| s.event_count).sum::<i64>(),
        total,
        "an event was applied twice or lost"
    );
    assert_eq!(states, expected(&events));
    assert_eq!(store.dead_letters("own").await.unwrap(), vec![]);
    eprintln!("killed at checkpoints {interrupted:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_projectors_take_turns_and_the_standby_takes_over() {
    let db = TestDb::postgres(ewpm::MODULES).await.unwrap();
    let store = ScanStore::new(db.db.clone());
    let events = generate(40_000, 2_000, 99);
    append(&store, &events[..20_000]).await;

    let a = projector_process(&db.url, 100);
    let b = projector_process(&db.url, 100);
    let mut procs = HashMap::from([(a.0.id(), a), (b.0.id(), b)]);
    wait_for_checkpoint(&store, 1, Duration::from_secs(60)).await;
    let mut owners = std::collections::BTreeSet::new();
    for _ in 0..20 {
        owners.insert(store.checkpoint_owner("own").await.unwrap().unwrap());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(owners.len(), 1, "more than one projector applied pages: {owners:?}");
    let leader_owner = owners.into_iter().next().unwrap();
    let leader_pid: u32 = leader_owner.rsplit(':').next().unwrap().parse().unwrap();
    assert!(procs.contains_key(&leader_pid), "owner {leader_owner} is not one of ours");

    let mut leader = procs.remove(&leader_pid).unwrap();
    sigkill(&mut leader);
    append(&store, &events[20_000..]).await;
    wait_for_checkpoint(&store, 40_000, Duration::from_secs(120)).await;
    let standby_pid = *procs.keys().next().unwrap();
    let owner = store.checkpoint_owner("own").await.unwrap().unwrap();
    assert!(
        owner.ends_with(&format!(":{standby_pid}")),
        "{owner} is not the standby {standby_pid}"
    );
    let states = store.all_parcels().await.unwrap();
    assert_eq!(states.iter().map(|s| s.event_count).sum::<i64>(), 40_000);
    assert_eq!(states, expected(&events));
}
