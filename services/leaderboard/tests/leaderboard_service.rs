//! The leaderboard service over real gRPC and real Redis: reads, ranks, paging, the delta
//! applier end to end, watch streams and rebuild of a lost board.

mod common;

use ewpm_leaderboard::settings::LeaderboardSettings;
use std::{collections::BTreeMap, sync::Arc, time::Duration};

use common::{Challenges, FixedOwner, PATIENCE, lose_redis_board, owned, redis};
use ewpm_kit::{
    CancellationToken,
    auth::Role,
    bus::{Bus, RedisBus},
};
use ewpm_leaderboard::{
    app,
    applier::{GROUP, TOPIC},
    domain::Board,
    notices::Notices,
    scores::{RedisScores, ScoreStore},
    watch::WatchHub,
};
use ewpm_proto::leaderboard::v1::{
    self as pb, ScoreDelta, leaderboard_service_client::LeaderboardServiceClient,
};
use ewpm_testkit::{
    Spawned, TestDb, bearer, key_prefix, reason, request, servers, spawn_grpc, violations,
};
use fred::prelude::PubsubInterface;
use futures::StreamExt;
use prost::Message;
use tonic::{Code, Request, transport::Channel};

struct Harness {
    /// An open challenge's board.
    board: String,
    client: LeaderboardServiceClient<Channel>,
    scores: Arc<dyn ScoreStore>,
    bus: Arc<dyn Bus>,
    prefix: String,
    owner: Arc<FixedOwner>,
    hub: WatchHub,
    /// The service's shutdown token (watch streams end when it is cancelled).
    shutdown: CancellationToken,
    _server: Spawned,
    _challenges: Challenges,
}

fn settings() -> LeaderboardSettings {
    // Reads straight from the store: these tests read right after each write.
    LeaderboardSettings {
        watch_interval_ms: 20,
        read_cache_ms: 0,
        ..LeaderboardSettings::default()
    }
}

async fn harness(facts: Vec<ewpm_leaderboard::scores::OwnedEntry>) -> Harness {
    let prefix = key_prefix();
    let url = &servers().redis_url;
    let scores: Arc<dyn ScoreStore> = Arc::new(RedisScores::connect(url, &prefix).await.unwrap());
    let bus: Arc<dyn Bus> = Arc::new(RedisBus::connect(url, &prefix).await.unwrap());
    let notices: Arc<dyn Notices> =
        Arc::new(ewpm_leaderboard::notices::redis(url, &prefix).await.unwrap());
    let owner = FixedOwner::new(facts);
    let challenges =
        Challenges::start(TestDb::postgres(&[&ewpm_challenge::MODULE]).await.unwrap()).await;
    let board = challenges.create(None).await;
    let owners = challenges.owners(owner.clone());
    let shutdown = CancellationToken::new();
    let mut parts = None;
    let (s, b, n, t) = (scores.clone(), bus.clone(), notices.clone(), shutdown.clone());
    let parts_of = common::parts(s, b, n, owners).await;
    let server = spawn_grpc(|mount, grpc| {
        let built = app::build(parts_of, &settings(), grpc, t);
        mount.add(built.service);
        parts = Some((built.applier, built.hub));
    })
    .await
    .unwrap();
    let (applier, hub) = parts.unwrap();
    tokio::spawn(applier.run(shutdown.clone()));
    let client = LeaderboardServiceClient::connect(server.uri()).await.unwrap();
    Harness {
        board,
        client,
        scores,
        bus,
        prefix,
        owner,
        hub,
        shutdown,
        _server: server,
        _challenges: challenges,
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn req<T>(message: T) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut()
        .insert("authorization", bearer("alice", Role::Employee, None).parse().unwrap());
    r
}

/// Entries with positions zeroed, to compare with [`entry`].
fn strip(entries: Vec<pb::LeaderboardEntry>) -> Vec<pb::LeaderboardEntry> {
    entries.into_iter().map(|e| pb::LeaderboardEntry { position: 0, ..e }).collect()
}

fn entry(rank: i64, member: &str, score: f64) -> pb::LeaderboardEntry {
    pb::LeaderboardEntry { rank, member: member.into(), score, ..Default::default() }
}

fn page(board: &str, page_size: i32, page_token: &str) -> pb::GetLeaderboardRequest {
    pb::GetLeaderboardRequest {
        board: board.into(),
        page_size,
        page_token: page_token.into(),
        ..Default::default()
    }
}

fn rank(board: &str, member: &str, neighbours: i32) -> pb::GetRankRequest {
    pb::GetRankRequest {
        board: board.into(),
        member: member.into(),
        neighbours,
        ..Default::default()
    }
}

/// a 50, b 40, c 40, d 30, e 10 — as the owner has them.
fn five() -> Vec<ewpm_leaderboard::scores::OwnedEntry> {
    vec![
        owned("a", "ev-a1", 30.0),
        owned("a", "ev-a2", 20.0),
        owned("b", "ev-b", 40.0),
        owned("c", "ev-c", 40.0),
        owned("d", "ev-d", 30.0),
        owned("e", "ev-e", 10.0),
    ]
}

fn delta(board: &str, member: &str, value: f64, event_id: &str) -> Vec<u8> {
    ScoreDelta {
        board: board.into(),
        member: member.into(),
        delta: value,
        event_id: event_id.into(),
        committed_unix_ms: chrono::Utc::now().timestamp_millis(),
    }
    .encode_to_vec()
}

async fn totals(
    client: &mut LeaderboardServiceClient<Channel>,
    board: &str,
) -> BTreeMap<String, f64> {
    let r = client.get_leaderboard(req(page(board, 100, ""))).await.unwrap().into_inner();
    r.entries.into_iter().map(|e| (e.member, e.score)).collect()
}

/// Polls until the board's totals are `expected`; fails after [`PATIENCE`].
async fn eventually_totals(
    client: &mut LeaderboardServiceClient<Channel>,
    board: &str,
    expected: &BTreeMap<String, f64>,
) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let got = totals(client, board).await;
        if &got == expected {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "totals stayed {got:?}, want {expected:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_board_is_rebuilt_from_its_owner_on_first_read_once() {
    let mut h = harness(five()).await;
    let reads: Vec<_> = (0..20)
        .map(|_| {
            let (mut c, board) = (h.client.clone(), h.board.clone());
            tokio::spawn(async move {
                c.get_leaderboard(req(page(&board, 1, "")))
                    .await
                    .map(|r| r.into_inner().total_members)
            })
        })
        .collect();
    for r in reads {
        assert_eq!(r.await.unwrap().unwrap(), 5);
    }
    // One rebuild per board per process, however many readers raced for it.
    assert_eq!(h.owner.calls(), 1);
    assert_eq!(totals(&mut h.client, &h.board).await.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_carry_competition_ranks_and_cross_a_tie() {
    let mut h = harness(five()).await;
    let first = h.client.get_leaderboard(req(page(&h.board, 2, ""))).await.unwrap().into_inner();
    assert_eq!(strip(first.entries), vec![entry(1, "a", 50.0), entry(2, "c", 40.0)]);
    assert_eq!(first.total_members, 5);
    assert!(!first.next_page_token.is_empty());
    // The page starts inside the tie: b keeps the tied rank, d skips to 4.
    let second = h
        .client
        .get_leaderboard(req(page(&h.board, 2, &first.next_page_token)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(strip(second.entries), vec![entry(2, "b", 40.0), entry(4, "d", 30.0)]);
    let last = h
        .client
        .get_leaderboard(req(page(&h.board, 2, &second.next_page_token)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (strip(last.entries), last.next_page_token),
        (vec![entry(5, "e", 10.0)], String::new())
    );
    // An exact fit has no next page either.
    let all = h.client.get_leaderboard(req(page(&h.board, 5, ""))).await.unwrap().into_inner();
    assert_eq!((all.entries.len(), all.next_page_token), (5, String::new()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_size_defaults_to_ten_and_is_clamped_to_a_hundred() {
    let facts =
        (0..120).map(|i| owned(&format!("m{i:03}"), &format!("ev{i}"), f64::from(i))).collect();
    let mut h = harness(facts).await;
    let default = h.client.get_leaderboard(req(page(&h.board, 0, ""))).await.unwrap().into_inner();
    assert_eq!((default.entries.len(), default.total_members), (10, 120));
    assert_eq!(strip(default.entries)[0], entry(1, "m119", 119.0));
    let clamped =
        h.client.get_leaderboard(req(page(&h.board, 1000, ""))).await.unwrap().into_inner();
    assert_eq!(clamped.entries.len(), 100);
    // A board of a kind no owner answers for is not found (no empty board is made up).
    let err = h.client.get_leaderboard(req(page("quiz:nobody-yet", 10, ""))).await.unwrap_err();
    assert_eq!((err.code(), reason(&err)), (Code::NotFound, "BOARD_NOT_FOUND".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_name_every_bad_field() {
    let mut h = harness(five()).await;
    let err = h.client.get_leaderboard(req(page("no-kind", -1, "%%%"))).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violations(&err), vec!["board", "page_size", "page_token"]);
    let err = h
        .client
        .get_rank(req(pb::GetRankRequest {
            board: "challenge:a}b".into(),
            member: "a\nb".into(),
            neighbours: 51,
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["board", "member", "neighbours"]);
    let err = h.client.get_rank(req(rank(&h.board, "a", -1))).await.unwrap_err();
    assert_eq!(violations(&err), vec!["neighbours"]);
    let err = h
        .client
        .watch_leaderboard(req(pb::WatchLeaderboardRequest {
            board: "x".into(),
            top_n: -3,
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["board", "top_n"]);
    // No token, no answer.
    let err = h.client.get_leaderboard(Request::new(page(&h.board, 1, ""))).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rank_shows_its_neighbours_clipped_at_both_ends() {
    let mut h = harness(five()).await;
    let top = h.client.get_rank(req(rank(&h.board, "a", 2))).await.unwrap().into_inner();
    assert_eq!(
        (strip(top.entry.into_iter().collect()), strip(top.window), top.total_members),
        (
            vec![entry(1, "a", 50.0)],
            vec![entry(1, "a", 50.0), entry(2, "c", 40.0), entry(2, "b", 40.0)],
            5
        )
    );
    // a is in the top 20 % (rank 1 of 5), on the first page of 10.
    assert_eq!((top.top_percent, top.page, top.period.as_str()), (20, 1, "all"));
    let tied = h.client.get_rank(req(rank(&h.board, "b", 1))).await.unwrap().into_inner();
    assert_eq!(strip(tied.entry.into_iter().collect()), vec![entry(2, "b", 40.0)]);
    assert_eq!(
        strip(tied.window),
        vec![entry(2, "c", 40.0), entry(2, "b", 40.0), entry(4, "d", 30.0)]
    );
    let bottom = h.client.get_rank(req(rank(&h.board, "e", 50))).await.unwrap().into_inner();
    assert_eq!(strip(bottom.entry.into_iter().collect()), vec![entry(5, "e", 10.0)]);
    assert_eq!((bottom.window.len(), bottom.top_percent), (5, 100));
    let alone = h.client.get_rank(req(rank(&h.board, "d", 0))).await.unwrap().into_inner();
    assert_eq!(strip(alone.window), vec![entry(4, "d", 30.0)]);
    let err = h.client.get_rank(req(rank(&h.board, "zed", 2))).await.unwrap_err();
    assert_eq!((err.code(), reason(&err)), (Code::NotFound, "MEMBER_NOT_ON_BOARD".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_applier_applies_each_delta_once_and_skips_poison() {
    let mut h = harness(vec![]).await;
    // Make the board ready (empty) first, so every delta lands.
    assert_eq!(totals(&mut h.client, &h.board).await, BTreeMap::new());
    let payloads = vec![
        delta(&h.board, "alice", 5.0, "ev-1"),
        b"not a protobuf \xff\xff".to_vec(),
        delta(&h.board, "alice", 5.0, "ev-1"),
        delta(&h.board, "bob", 3.0, "ev-2"),
        ScoreDelta { board: "bad board".into(), ..ScoreDelta::default() }.encode_to_vec(),
        delta(&h.board, "alice", -1.5, "ev-3"),
    ];
    h.bus.publish(TOPIC, &payloads).await.unwrap();
    h.bus.publish(TOPIC, &[delta(&h.board, "bob", 3.0, "ev-2")]).await.unwrap();
    let expected = BTreeMap::from([("alice".to_string(), 3.5), ("bob".to_string(), 3.0)]);
    eventually_totals(&mut h.client, &h.board, &expected).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while h.bus.pending(TOPIC, GROUP).await.unwrap() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "deltas stayed pending");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(totals(&mut h.client, &h.board).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_board_is_rebuilt_exactly_while_deltas_keep_arriving() {
    let mut h = harness(vec![]).await;
    let owner = h.owner.clone();
    let bus = h.bus.clone();
    let board = h.board.clone();
    // The producer: commits each fact to the owner, then emits its delta (some twice).
    let producer = tokio::spawn(async move {
        for i in 0..400u32 {
            let (member, event_id, value) =
                (format!("m{}", i % 9), format!("ev-{i}"), f64::from(i % 7) + 1.0);
            owner.facts.lock().unwrap().push(owned(&member, &event_id, value));
            let mut payloads = vec![delta(&board, &member, value, &event_id)];
            if i % 5 == 0 {
                payloads.push(delta(&board, &member, value, &event_id));
            }
            bus.publish(TOPIC, &payloads).await.unwrap();
            if i % 20 == 0 {
                tokio::task::yield_now().await;
            }
        }
    });
    // Lose the board a few times while the producer runs; reads bring it back.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(30)).await;
        lose_redis_board(&h.prefix, &h.board).await;
        let _ = totals(&mut h.client, &h.board).await;
    }
    producer.await.unwrap();
    let mut expected: BTreeMap<String, f64> = BTreeMap::new();
    for f in h.owner.facts.lock().unwrap().iter() {
        *expected.entry(f.member.clone()).or_default() += f.value;
    }
    eventually_totals(&mut h.client, &h.board, &expected).await;
    assert!(h.scores.exists(&h.board).await.unwrap());
}

async fn next(
    stream: &mut tonic::Streaming<pb::WatchLeaderboardResponse>,
) -> Option<pb::WatchLeaderboardResponse> {
    tokio::time::timeout(PATIENCE, stream.message()).await.expect("a message in time").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_starts_with_the_board_then_follows_changes_and_ends_at_shutdown() {
    let mut h = harness(five()).await;
    let watch =
        pb::WatchLeaderboardRequest { board: h.board.clone(), top_n: 2, ..Default::default() };
    let mut stream = h.client.watch_leaderboard(req(watch)).await.unwrap().into_inner();
    // At once, and the missing board was rebuilt for it.
    let first = next(&mut stream).await.unwrap();
    assert_eq!((first.board.as_str(), first.total_members), (h.board.as_str(), 5));
    assert_eq!(strip(first.entries), vec![entry(1, "a", 50.0), entry(2, "c", 40.0)]);
    assert!(first.snapshot_time.is_some());
    h.bus.publish(TOPIC, &[delta(&h.board, "e", 100.0, "ev-e2")]).await.unwrap();
    let second = next(&mut stream).await.unwrap();
    assert_eq!(strip(second.entries.clone()), vec![entry(1, "e", 110.0), entry(2, "a", 50.0)]);
    // A change below the top N (and no new member) sends nothing; the next visible one does.
    h.bus
        .publish(
            TOPIC,
            &[delta(&h.board, "d", 1.0, "ev-d2"), delta(&h.board, "newcomer", 1.0, "ev-n")],
        )
        .await
        .unwrap();
    let third = next(&mut stream).await.unwrap();
    assert_eq!((third.entries, third.total_members), (second.entries, 6));
    h.shutdown.cancel();
    assert_eq!(next(&mut stream).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_that_cannot_be_served_is_refused_before_it_starts() {
    let mut h = harness(five()).await;
    h.shutdown.cancel();
    let watch =
        pb::WatchLeaderboardRequest { board: h.board.clone(), top_n: 0, ..Default::default() };
    let mut stream = h.client.watch_leaderboard(req(watch)).await.unwrap().into_inner();
    // Shutting down: a finished stream, not an error.
    assert_eq!(next(&mut stream).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_watchers_of_a_board_share_one_subscription() {
    let h = harness(five()).await;
    let channel = format!("{}lb:changed:{}", h.prefix, h.board);
    let raw = redis().await;
    let numsub = || async {
        let reply: Vec<fred::types::Value> = raw.pubsub_numsub(channel.clone()).await.unwrap();
        reply[1].as_u64().unwrap()
    };
    // Several connections: one HTTP/2 connection may cap concurrent streams.
    let mut clients = Vec::new();
    for _ in 0..10 {
        clients.push(LeaderboardServiceClient::connect(h._server.uri()).await.unwrap());
    }
    let mut streams = Vec::new();
    for i in 0..1000 {
        let mut c = clients[i % 10].clone();
        let watch = pb::WatchLeaderboardRequest {
            board: h.board.clone(),
            top_n: (i % 3 + 1) as i32,
            ..Default::default()
        };
        // A fan each: one caller may hold only `max_streams_per_caller` streams.
        let fan = bearer(&format!("fan-{i}"), Role::Employee, None);
        streams.push(tokio::spawn(async move {
            let mut s = c.watch_leaderboard(request(watch, &fan)).await.unwrap().into_inner();
            let first = next(&mut s).await.unwrap();
            (s, first)
        }));
    }
    let mut opened = Vec::new();
    for s in streams {
        let (stream, first) = s.await.unwrap();
        assert_eq!(first.total_members, 5);
        opened.push(stream);
    }
    assert_eq!(numsub().await, 1);
    // Every one of them sees the next change.
    h.bus.publish(TOPIC, &[delta(&h.board, "e", 100.0, "ev-e2")]).await.unwrap();
    for s in &mut opened {
        assert_eq!(strip(next(s).await.unwrap().entries)[0], entry(1, "e", 110.0));
    }
    drop(opened);
    // The last watcher gone, the subscription goes too.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while numsub().await != 0 {
        assert!(tokio::time::Instant::now() < deadline, "subscription outlived its watchers");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_watcher_gets_the_latest_snapshot_not_a_backlog() {
    // At the hub, where "slow" means "not polled" (over gRPC, HTTP/2 flow control buffers a
    // window's worth first, then the server stops polling and the same rule applies).
    let h = harness(vec![]).await;
    let board = Board::parse(&h.board, "board").unwrap();
    let mut slow = h.hub.watch(board.clone(), 1, false).await.unwrap();
    let mut fast = h.hub.watch(board, 1, false).await.unwrap();
    assert_eq!(snap(&mut slow).await.total_members, 0);
    assert_eq!(snap(&mut fast).await.total_members, 0);
    // 30 changes, each visible in the top 1; the slow watcher reads none of them meanwhile.
    for i in 1..=30 {
        h.bus.publish(TOPIC, &[delta(&h.board, "alice", 1.0, &format!("ev-{i}"))]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Once the fast watcher has seen the final state, it is what the slow one gets next.
    loop {
        if snap(&mut fast).await.entries[0].score == 30.0 {
            break;
        }
    }
    let caught_up = snap(&mut slow).await;
    assert_eq!((caught_up.entries[0].score, caught_up.total_members), (30.0, 1));
    drop((slow, fast));
    assert_eq!(h.hub.watched_boards(), 0);
}

async fn snap(s: &mut ewpm_leaderboard::watch::WatchStream) -> ewpm_leaderboard::watch::Snapshot {
    tokio::time::timeout(PATIENCE, s.next()).await.expect("a snapshot in time").unwrap()
}

/// A void on a challenge board: the board is recounted from the progress service's facts
/// without it, a redelivered delta of the void fact stays uncounted, and so does a later
/// delta of a voided member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_void_on_a_challenge_board_recounts_it_from_its_owner() {
    let mut h = harness(five()).await;
    let before = h.client.get_leaderboard(req(page(&h.board, 10, ""))).await.unwrap().into_inner();
    assert_eq!(before.entries[0], entry(1, "a", 50.0));
    let void = |member: &str, event: &str| {
        request(
            pb::VoidEntryRequest {
                board: h.board.clone(),
                member: member.into(),
                event_id: event.into(),
                reason: "revoked device data".into(),
            },
            &bearer("root", Role::Admin, None),
        )
    };
    let done = h.client.void_entry(void("", "ev-a1")).await.unwrap().into_inner();
    assert_eq!((done.created, done.periods), (true, vec!["all".to_string()]));
    h.client.void_entry(void("d", "")).await.unwrap();
    let after = h.client.get_leaderboard(req(page(&h.board, 10, ""))).await.unwrap().into_inner();
    assert_eq!(
        strip(after.entries),
        vec![entry(1, "c", 40.0), entry(1, "b", 40.0), entry(3, "a", 20.0), entry(4, "e", 10.0)]
    );
    // The void fact delivered again, and a new fact of the voided member: neither counts.
    h.bus
        .publish(TOPIC, &[delta(&h.board, "a", 30.0, "ev-a1"), delta(&h.board, "d", 99.0, "ev-d2")])
        .await
        .unwrap();
    h.bus.publish(TOPIC, &[delta(&h.board, "e", 1.0, "ev-e2")]).await.unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let now = h.client.get_leaderboard(req(page(&h.board, 10, ""))).await.unwrap().into_inner();
        if now.entries.iter().any(|e| e.member == "e" && e.score == 11.0) {
            assert_eq!(
                strip(now.entries),
                vec![
                    entry(1, "c", 40.0),
                    entry(1, "b", 40.0),
                    entry(3, "a", 20.0),
                    entry(4, "e", 11.0)
                ]
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the applier did not apply ev-e2");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
