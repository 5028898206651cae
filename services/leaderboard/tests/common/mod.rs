//! Helpers shared by the leaderboard's tests.
#![allow(dead_code)]

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use ewpm_kit::{auth::Role, clock::SystemClock, timestamp::to_proto};
use ewpm_leaderboard::{
    access::ChallengeAudience,
    domain::Board,
    rebuild::{BoardOwner, EntryStream, Owners},
    scores::{Around, Entry, OwnedEntry, ScoreStore},
};
use ewpm_proto::challenge::v1::{self as cpb, challenge_service_client::ChallengeServiceClient};
use ewpm_testkit::{Spawned, TestDb, bearer, keys, request, spawn_grpc};
use fred::prelude::{Client, ClientLike, Config, KeysInterface};
use futures::StreamExt;

/// Generous bound that turns a hang into a failure; never a timing assertion.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// An entry of a plain sum board; compare with [`np`]-normalised reads (position 0).
pub fn e(rank: u64, member: &str, score: f64) -> Entry {
    Entry { rank, member: member.to_string(), score, subscore: 0.0, position: 0 }
}

/// Entries with their positions zeroed (for comparisons with [`e`]).
pub fn np(entries: Vec<Entry>) -> Vec<Entry> {
    entries.into_iter().map(|e| Entry { position: 0, ..e }).collect()
}

/// [`np`] of an around read.
pub fn npa(a: Option<Around>) -> Option<Around> {
    a.map(|a| Around { me: Entry { position: 0, ..a.me }, window: np(a.window) })
}

/// [`np`] of a page read.
pub fn npp(p: Option<(Vec<Entry>, u64)>) -> Option<(Vec<Entry>, u64)> {
    p.map(|(entries, n)| (np(entries), n))
}

pub fn owned(member: &str, event_id: &str, value: f64) -> OwnedEntry {
    OwnedEntry {
        member: member.to_string(),
        event_id: event_id.to_string(),
        value,
        ..OwnedEntry::default()
    }
}

/// The service's parts over `scores`, `bus`, `notices` and `owners`, with its tables in a
/// fresh SQLite database (kept for the rest of the test process).
pub async fn parts(
    scores: Arc<dyn ScoreStore>,
    bus: Arc<dyn ewpm_kit::bus::Bus>,
    notices: Arc<dyn ewpm_leaderboard::notices::Notices>,
    owners: Owners,
) -> ewpm_leaderboard::app::Parts {
    let db = TestDb::sqlite(&[&ewpm_leaderboard::MODULE]).await.unwrap();
    let store = ewpm_leaderboard::store::LeaderboardStore::new(db.db.clone());
    Box::leak(Box::new(db));
    ewpm_leaderboard::app::Parts {
        scores,
        bus,
        notices,
        owners,
        store,
        keys: keys(),
        clock: Arc::new(SystemClock),
    }
}

/// Makes `board` ready and empty, as a rebuild from an owner with no facts does.
pub async fn make_ready(s: &dyn ScoreStore, board: &str) {
    let token = uuid::Uuid::new_v4().to_string();
    assert!(s.begin_rebuild(board, &token, Duration::from_secs(30), &[]).await.unwrap());
    assert!(s.finish_rebuild(board, &token).await.unwrap());
}

/// A Redis client for the test server.
pub async fn redis() -> Client {
    let client = fred::types::Builder::from_config(
        Config::from_url(&ewpm_testkit::servers().redis_url).unwrap(),
    )
    .build()
    .unwrap();
    client.init().await.unwrap();
    client
}

/// Deletes every key of `board` under `prefix`: a cache loss of that one board.
pub async fn lose_redis_board(prefix: &str, board: &str) {
    let base = format!("{prefix}lb:{{{board}}}");
    let keys: Vec<String> = [
        "",
        ":seen",
        ":r",
        ":d",
        ":dn",
        ":void",
        ":ready",
        ":building",
        ":next",
        ":next:seen",
        ":next:r",
        ":next:d",
        ":next:dn",
        ":next:void",
    ]
    .iter()
    .map(|s| format!("{base}{s}"))
    .collect();
    let client = redis().await;
    let _: u64 = client.del(keys).await.unwrap();
}

/// An owner whose facts the test sets: the stand-in for the progress service.
#[derive(Default)]
pub struct FixedOwner {
    pub facts: Mutex<Vec<OwnedEntry>>,
    pub calls: Mutex<usize>,
}

impl FixedOwner {
    pub fn new(facts: Vec<OwnedEntry>) -> Arc<Self> {
        Arc::new(Self { facts: Mutex::new(facts), calls: Mutex::new(0) })
    }

    pub fn calls(&self) -> usize {
        *self.calls.lock().unwrap()
    }
}

#[async_trait]
impl BoardOwner for FixedOwner {
    async fn entries(&self, _board: &Board, _period: &str) -> anyhow::Result<EntryStream> {
        *self.calls.lock().unwrap() += 1;
        let facts = self.facts.lock().unwrap().clone();
        // Small chunks, so deltas can interleave with the load.
        let chunks: Vec<anyhow::Result<Vec<OwnedEntry>>> =
            facts.chunks(7).map(|c| Ok(c.to_vec())).collect();
        Ok(futures::stream::iter(chunks)
            .then(|c| async move {
                tokio::task::yield_now().await;
                c
            })
            .boxed())
    }
}

/// The real challenge service, in process, on its own database: what decides who may read a
/// challenge board.
pub struct Challenges {
    server: Spawned,
    _db: TestDb,
}

impl Challenges {
    /// On a fresh SQLite file (embedded) or PostgreSQL database (mesh).
    pub async fn start(db: TestDb) -> Self {
        let conn = db.db.clone();
        let server = spawn_grpc(|mount, grpc| {
            mount.add(ewpm_challenge::app::build(conn, Arc::new(SystemClock), grpc));
        })
        .await
        .unwrap();
        Self { server, _db: db }
    }

    /// Owners with `facts` for challenge boards' rebuilds and this service for their
    /// audience.
    pub fn owners(&self, facts: Arc<dyn BoardOwner>) -> Owners {
        let audience = ChallengeAudience::new(&self.server.uri(), keys()).unwrap();
        Owners::new().with("challenge", facts).with_audience("challenge", Arc::new(audience))
    }

    /// Stops the service (its port then refuses connections).
    pub async fn stop(&mut self) {
        self.server.shutdown.cancel();
        (&mut self.server.handle).await.unwrap().unwrap();
    }

    /// Creates a challenge (open when `employer` is `None`) as an admin; its board's name.
    pub async fn create(&self, employer: Option<&str>) -> String {
        let mut client = ChallengeServiceClient::connect(self.server.uri()).await.unwrap();
        let now = chrono::Utc::now();
        let c = client
            .create_challenge(request(
                cpb::CreateChallengeRequest {
                    name: "walk".into(),
                    description: String::new(),
                    start_time: Some(to_proto(now - chrono::Duration::days(1))),
                    end_time: Some(to_proto(now + chrono::Duration::days(30))),
                    goal: Some(cpb::Goal { target: 100.0, unit: "km".into() }),
                    employer_id: employer.unwrap_or_default().into(),
                    idempotency_key: String::new(),
                    late_grace_seconds: 0,
                },
                &bearer("root", Role::Admin, None),
            ))
            .await
            .unwrap()
            .into_inner()
            .challenge
            .unwrap();
        format!("challenge:{}", c.id)
    }
}
