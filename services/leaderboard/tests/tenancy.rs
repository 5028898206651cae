//! Tenancy and bounded growth on every door of the leaderboard, on both backends (memory
//! scores with a SQLite challenge service; Redis scores with a PostgreSQL one): hostile
//! callers are refused and create nothing, made-up board names leave no key, and watch
//! streams are capped.

mod common;

use ewpm_leaderboard::settings::LeaderboardSettings;
use std::{sync::Arc, time::Duration};

use common::{Challenges, FixedOwner, PATIENCE, owned, redis};
use ewpm_kit::{
    CancellationToken,
    auth::{Role, TokenKeys},
    bus::{Bus, MemoryBus, RedisBus},
    settings::Settings,
};
use ewpm_leaderboard::{
    access::Access,
    app,
    notices::{MemoryNotices, Notices},
    scores::{MemoryScores, RedisScores, ScoreStore},
};
use ewpm_proto::leaderboard::v1::{
    self as pb, leaderboard_service_client::LeaderboardServiceClient,
};
use ewpm_testkit::{
    Spawned, TestDb, bearer, expired_bearer, key_prefix, reason, request, servers, spawn_grpc,
};
use futures::{StreamExt, TryStreamExt};
use tonic::{Code, Status, transport::Channel};
use tonic_types::StatusExt;

#[derive(Clone, Copy, Debug)]
enum Backend {
    Embedded,
    Mesh,
}

enum Store {
    Memory(Arc<MemoryScores>),
    Redis { prefix: String },
}

struct Harness {
    client: LeaderboardServiceClient<Channel>,
    challenges: Challenges,
    store: Store,
    access: Access,
    streams: Arc<ewpm_kit::streams::StreamSlots>,
    shutdown: CancellationToken,
    _server: Spawned,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A backend's database, store handle, score store, bus and notices.
type Parts = (TestDb, Store, Arc<dyn ScoreStore>, Arc<dyn Bus>, Arc<dyn Notices>);

async fn harness(backend: Backend, settings: LeaderboardSettings) -> Harness {
    let (db, store, scores, bus, notices): Parts = match backend {
        Backend::Embedded => {
            let scores = Arc::new(MemoryScores::new());
            (
                TestDb::sqlite(&[&ewpm_challenge::MODULE]).await.unwrap(),
                Store::Memory(scores.clone()),
                scores,
                MemoryBus::new(),
                Arc::new(MemoryNotices::new()),
            )
        }
        Backend::Mesh => {
            let (url, prefix) = (&servers().redis_url, key_prefix());
            (
                TestDb::postgres(&[&ewpm_challenge::MODULE]).await.unwrap(),
                Store::Redis { prefix: prefix.clone() },
                Arc::new(RedisScores::connect(url, &prefix).await.unwrap()),
                Arc::new(RedisBus::connect(url, &prefix).await.unwrap()),
                Arc::new(ewpm_leaderboard::notices::redis(url, &prefix).await.unwrap()),
            )
        }
    };
    let challenges = Challenges::start(db).await;
    let owners = challenges
        .owners(FixedOwner::new(vec![owned("alice", "ev-1", 5.0), owned("bob", "ev-2", 3.0)]));
    let shutdown = CancellationToken::new();
    let mut parts = None;
    let token = shutdown.clone();
    let parts_of = common::parts(scores, bus, notices, owners).await;
    let server = spawn_grpc(|mount, grpc| {
        let built = app::build(parts_of, &settings, grpc, token);
        mount.add(built.service);
        parts = Some((built.access, built.streams));
    })
    .await
    .unwrap();
    let (access, streams) = parts.unwrap();
    let client = LeaderboardServiceClient::connect(server.uri()).await.unwrap();
    Harness { client, challenges, store, access, streams, shutdown, _server: server }
}

impl Harness {
    /// Score-store state this harness created: boards in memory, or keys of boards in Redis.
    async fn board_keys(&self) -> usize {
        match &self.store {
            Store::Memory(scores) => scores.boards(),
            Store::Redis { prefix } => {
                let keys: Vec<_> = redis()
                    .await
                    .scan_buffered(format!("{prefix}lb:*"), Some(1000), None)
                    .try_collect()
                    .await
                    .unwrap();
                keys.len()
            }
        }
    }
}

fn settings() -> LeaderboardSettings {
    LeaderboardSettings {
        read_cache_ms: 0,
        watch_interval_ms: 20,
        ..LeaderboardSettings::default()
    }
}

/// What one door answered: `Ok` or the status code and reason.
type Answer = Result<(), (Code, String)>;

fn answer<T>(r: Result<T, Status>) -> Answer {
    r.map(|_| ()).map_err(|s| (s.code(), reason(&s)))
}

/// The three read doors, called on `board` with `authorization`.
async fn doors(h: &Harness, board: &str, authorization: &str) -> [Answer; 3] {
    let mut c = h.client.clone();
    let page = pb::GetLeaderboardRequest {
        board: board.into(),
        page_size: 10,
        page_token: "".into(),
        ..Default::default()
    };
    let rank = pb::GetRankRequest {
        board: board.into(),
        member: "alice".into(),
        neighbours: 1,
        ..Default::default()
    };
    let watch =
        pb::WatchLeaderboardRequest { board: board.into(), top_n: 10, ..Default::default() };
    [
        answer(c.get_leaderboard(request(page, authorization)).await),
        answer(c.get_rank(request(rank, authorization)).await),
        answer(c.watch_leaderboard(request(watch, authorization)).await),
    ]
}

fn all(a: Answer) -> [Answer; 3] {
    [a.clone(), a.clone(), a]
}

fn not_found() -> Answer {
    Err((Code::NotFound, "BOARD_NOT_FOUND".into()))
}

async fn hostile_callers_are_refused_on_every_door_and_nothing_is_created(backend: Backend) {
    let h = harness(backend, settings()).await;
    let acme = h.challenges.create(Some("acme")).await;
    let other_key = TokenKeys::new("not-the-mesh-secret", &Settings::default().auth);
    let hostile = [
        (
            "employee of another employer",
            bearer("bob", Role::Employee, Some("globex")),
            not_found(),
        ),
        ("employee with no employer", bearer("carol", Role::Employee, None), not_found()),
        (
            "employer admin of another employer",
            bearer("gina", Role::EmployerAdmin, Some("globex")),
            not_found(),
        ),
        (
            "expired token",
            expired_bearer("alice", Role::Admin),
            Err((Code::Unauthenticated, "INVALID_TOKEN".into())),
        ),
        (
            "token signed with another key",
            format!("Bearer {}", other_key.mint("alice", Role::Admin, Some("acme"))),
            Err((Code::Unauthenticated, "INVALID_TOKEN".into())),
        ),
    ];
    for (who, token, expected) in hostile {
        assert_eq!(doors(&h, &acme, &token).await, all(expected), "{who}");
    }
    // Refused before anything was read: no board, no rebuild marker, no key.
    assert_eq!(h.board_keys().await, 0);

    for (who, token) in [
        ("admin", bearer("root", Role::Admin, None)),
        ("employee of the employer", bearer("alice", Role::Employee, Some("acme"))),
        ("employer admin of the employer", bearer("ann", Role::EmployerAdmin, Some("acme"))),
    ] {
        assert_eq!(doors(&h, &acme, &token).await, all(Ok(())), "{who}");
    }
    // An open challenge's board is everyone's, with or without an employer.
    let open = h.challenges.create(None).await;
    for token in
        [bearer("carol", Role::Employee, None), bearer("bob", Role::Employee, Some("globex"))]
    {
        assert_eq!(doors(&h, &open, &token).await, all(Ok(())));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_hostile_callers_are_refused_on_every_door_and_nothing_is_created() {
    hostile_callers_are_refused_on_every_door_and_nothing_is_created(Backend::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_hostile_callers_are_refused_on_every_door_and_nothing_is_created() {
    hostile_callers_are_refused_on_every_door_and_nothing_is_created(Backend::Mesh).await;
}

async fn made_up_board_names_leave_no_key_and_a_bounded_cache(backend: Backend) {
    let cap = 100;
    let h =
        harness(backend, LeaderboardSettings { audience_cache_entries: cap, ..settings() }).await;
    let admin = bearer("root", Role::Admin, None);
    // Another spelling of a real challenge's id would be another key for the same board.
    let real = h.challenges.create(None).await;
    let id = real.trim_start_matches("challenge:").to_string();
    let simple = uuid::Uuid::try_parse(&id).unwrap().simple().to_string();
    for other in [id.to_uppercase(), simple] {
        assert_eq!(doors(&h, &format!("challenge:{other}"), &admin).await, all(not_found()));
    }
    // Unknown challenges (asked of the challenge service), ids that are no challenge id,
    // kinds without an owner, made-up kinds: 2,000 names, through all three doors.
    let names: Vec<String> = (0..2000)
        .map(|i| {
            let id = uuid::Uuid::now_v7();
            match i % 4 {
                0 | 1 => format!("challenge:{id}"),
                2 => format!("challenge:x{}", id.simple()),
                _ if i % 8 == 3 => format!("quiz:{id}"),
                _ => format!("made{}:{id}", char::from(b'a' + (i % 26) as u8)),
            }
        })
        .collect();
    let answers: Vec<[Answer; 3]> =
        futures::stream::iter(names.iter().map(|n| doors(&h, n, &admin)))
            .buffer_unordered(16)
            .collect()
            .await;
    assert_eq!(answers, vec![all(not_found()); 2000]);
    assert_eq!((h.board_keys().await, h.access.cached() <= cap), (0, true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_made_up_board_names_leave_no_key_and_a_bounded_cache() {
    made_up_board_names_leave_no_key_and_a_bounded_cache(Backend::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_made_up_board_names_leave_no_key_and_a_bounded_cache() {
    made_up_board_names_leave_no_key_and_a_bounded_cache(Backend::Mesh).await;
}

fn too_many(status: Status) -> (Code, String, Option<Duration>) {
    let retry = status.get_error_details().retry_info().and_then(|r| r.retry_delay);
    (status.code(), reason(&status), retry)
}

async fn watch_streams_are_capped_per_caller_and_in_all(backend: Backend) {
    let settings = LeaderboardSettings { max_streams_per_caller: 2, max_streams: 3, ..settings() };
    let h = harness(backend, settings).await;
    let board = h.challenges.create(None).await;
    let watch = |who: &str| {
        let mut c = h.client.clone();
        let r = request(
            pb::WatchLeaderboardRequest { board: board.clone(), top_n: 5, ..Default::default() },
            &bearer(who, Role::Employee, None),
        );
        async move { c.watch_leaderboard(r).await.map(tonic::Response::into_inner) }
    };
    let refused =
        (Code::ResourceExhausted, "TOO_MANY_STREAMS".to_string(), Some(Duration::from_secs(5)));
    let alice1 = watch("alice").await.unwrap();
    let _alice2 = watch("alice").await.unwrap();
    assert_eq!(too_many(watch("alice").await.unwrap_err()), refused);
    let _bob = watch("bob").await.unwrap();
    // Three open: the process cap refuses a caller who has none.
    assert_eq!(too_many(watch("carol").await.unwrap_err()), refused);
    assert_eq!(h.streams.open(), 3);
    // A stream the client drops gives its slot back.
    drop(alice1);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while h.streams.open() != 2 {
        assert!(tokio::time::Instant::now() < deadline, "the dropped stream kept its slot");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut again = watch("alice").await.unwrap();
    let first = tokio::time::timeout(PATIENCE, again.message()).await.unwrap().unwrap().unwrap();
    assert_eq!((first.board, first.total_members), (board.clone(), 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_watch_streams_are_capped_per_caller_and_in_all() {
    watch_streams_are_capped_per_caller_and_in_all(Backend::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_watch_streams_are_capped_per_caller_and_in_all() {
    watch_streams_are_capped_per_caller_and_in_all(Backend::Mesh).await;
}

async fn without_the_challenge_service_known_boards_keep_their_audience(backend: Backend) {
    // Nothing is fresh for long: every read asks the challenge service again.
    let settings = LeaderboardSettings { audience_cache_secs: 0, ..settings() };
    let mut h = harness(backend, settings).await;
    let acme = h.challenges.create(Some("acme")).await;
    let (alice, bob) = (
        bearer("alice", Role::Employee, Some("acme")),
        bearer("bob", Role::Employee, Some("globex")),
    );
    assert_eq!(doors(&h, &acme, &alice).await, all(Ok(())));
    h.challenges.stop().await;
    // The last known audience still decides, both ways; a board never seen cannot be checked.
    assert_eq!(doors(&h, &acme, &alice).await, all(Ok(())));
    assert_eq!(doors(&h, &acme, &bob).await, all(not_found()));
    let never_seen = format!("challenge:{}", uuid::Uuid::now_v7());
    assert_eq!(
        doors(&h, &never_seen, &alice).await,
        all(Err((Code::Unavailable, "BOARD_OWNER_UNAVAILABLE".into())))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_without_the_challenge_service_known_boards_keep_their_audience() {
    without_the_challenge_service_known_boards_keep_their_audience(Backend::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_without_the_challenge_service_known_boards_keep_their_audience() {
    without_the_challenge_service_known_boards_keep_their_audience(Backend::Mesh).await;
}
