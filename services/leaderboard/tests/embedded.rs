//! The embedded wiring (memory scores, bus and notices): the applier, a dead applier's
//! deltas reclaimed, and a watch following a delta.

mod common;

use ewpm_leaderboard::settings::LeaderboardSettings;
use std::{sync::Arc, time::Duration};

use common::{FixedOwner, PATIENCE, e, np, owned};
use ewpm_kit::{
    CancellationToken,
    bus::{Bus, MemoryBus},
    settings::Settings,
};
use ewpm_leaderboard::{
    app,
    applier::{GROUP, TOPIC},
    definition::Target,
    domain::Board,
    notices::{MemoryNotices, Notices},
    rebuild::Owners,
    scores::{Dedupe, MemoryScores, ScoreStore},
};
use ewpm_proto::leaderboard::v1::ScoreDelta;
use futures::StreamExt;
use prost::Message;

const BOARD: &str = "challenge:0194d3c2-5b1e-7c4f-9a51-2d3e4f5a6b7c";

fn delta(member: &str, value: f64, event_id: &str) -> Vec<u8> {
    ScoreDelta {
        board: BOARD.into(),
        member: member.into(),
        delta: value,
        event_id: event_id.into(),
        committed_unix_ms: 0,
    }
    .encode_to_vec()
}

async fn eventually<F: Future<Output = bool>>(mut check: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "condition not reached in time");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deltas_a_dead_applier_left_pending_are_reclaimed_and_watched() {
    let scores: Arc<dyn ScoreStore> = Arc::new(MemoryScores::new());
    let bus: Arc<dyn Bus> = MemoryBus::new();
    let notices: Arc<dyn Notices> = Arc::new(MemoryNotices::new());
    let owners = Owners::new().with("challenge", FixedOwner::new(vec![owned("a", "ev-0", 1.0)]));
    let settings = LeaderboardSettings {
        watch_interval_ms: 10,
        reclaim_idle_ms: 50,
        ..LeaderboardSettings::default()
    };
    let shutdown = CancellationToken::new();
    let built = app::build(
        common::parts(scores.clone(), bus.clone(), notices.clone(), owners).await,
        &settings,
        &Settings::default().grpc,
        shutdown.clone(),
    );

    // A consumer that takes two deltas and dies without acknowledging them.
    bus.ensure_group(TOPIC, GROUP).await.unwrap();
    bus.publish(TOPIC, &[delta("a", 2.0, "ev-1"), delta("b", 5.0, "ev-2")]).await.unwrap();
    let taken = bus.receive(TOPIC, GROUP, "dead", 10, Duration::ZERO).await.unwrap();
    assert_eq!(taken.len(), 2);

    let board = Board::parse(BOARD, "board").unwrap();
    let mut watch = built.hub.watch(board, 10, false).await.unwrap();
    let first = tokio::time::timeout(PATIENCE, watch.next()).await.unwrap().unwrap();
    assert_eq!(np(first.entries), vec![e(1, "a", 1.0)]);

    let applier = tokio::spawn(built.applier.run(shutdown.clone()));
    let s = scores.clone();
    eventually(|| {
        let s = s.clone();
        async move { np(s.top(BOARD, 0, 10).await.unwrap()) == vec![e(1, "b", 5.0), e(2, "a", 3.0)] }
    })
    .await;
    let b = bus.clone();
    eventually(|| {
        let b = b.clone();
        async move { b.pending(TOPIC, GROUP).await.unwrap() == 0 }
    })
    .await;
    let latest = loop {
        let s = tokio::time::timeout(PATIENCE, watch.next()).await.unwrap().unwrap();
        if s.total_members == 2 {
            break s;
        }
    };
    assert_eq!(np(latest.entries), vec![e(1, "b", 5.0), e(2, "a", 3.0)]);

    shutdown.cancel();
    assert_eq!(tokio::time::timeout(PATIENCE, watch.next()).await.unwrap(), None);
    tokio::time::timeout(PATIENCE, applier).await.unwrap().unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deltas_of_a_board_without_an_owner_are_kept_when_it_first_appears() {
    let scores: Arc<dyn ScoreStore> = Arc::new(MemoryScores::new());
    let bus: Arc<dyn Bus> = MemoryBus::new();
    let shutdown = CancellationToken::new();
    let settings = Settings::default();
    let built = app::build(
        common::parts(scores.clone(), bus.clone(), Arc::new(MemoryNotices::new()), Owners::new())
            .await,
        &LeaderboardSettings::default(),
        &settings.grpc,
        shutdown.clone(),
    );
    let quiz = |member: &str, event_id: &str| {
        ScoreDelta {
            board: "quiz:s1".into(),
            member: member.into(),
            delta: 1.0,
            event_id: event_id.into(),
            committed_unix_ms: 0,
        }
        .encode_to_vec()
    };
    bus.publish(TOPIC, &[quiz("a", "ans-1"), quiz("a", "ans-2"), quiz("b", "ans-3")])
        .await
        .unwrap();
    let applier = tokio::spawn(built.applier.run(shutdown.clone()));
    let s = scores.clone();
    eventually(|| {
        let s = s.clone();
        async move { np(s.top("quiz:s1", 0, 10).await.unwrap()) == vec![e(1, "a", 2.0), e(2, "b", 1.0)] }
    })
    .await;
    shutdown.cancel();
    tokio::time::timeout(PATIENCE, applier).await.unwrap().unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_older_than_the_dedupe_window_is_counted_once_through_a_rebuild() {
    use chrono::TimeZone;
    let now = chrono::Utc.with_ymd_and_hms(2026, 3, 10, 12, 0, 0).unwrap();
    let clock = ewpm_kit::clock::FixedClock::new(now);
    let dedupe = Dedupe { window: Duration::from_secs(3600), clock };
    let scores: Arc<dyn ScoreStore> = Arc::new(MemoryScores::new().with_dedupe(dedupe));
    let bus: Arc<dyn Bus> = MemoryBus::new();
    let owner = FixedOwner::new(vec![]);
    let shutdown = CancellationToken::new();
    let settings = Settings::default();
    let built = app::build(
        common::parts(
            scores.clone(),
            bus.clone(),
            Arc::new(MemoryNotices::new()),
            Owners::new().with("challenge", owner.clone()),
        )
        .await,
        &LeaderboardSettings::default(),
        &settings.grpc,
        shutdown.clone(),
    );
    let board = Board::parse(BOARD, "board").unwrap();
    built.rebuilder.ensure_ready(&Target::owned(board.clone())).await.unwrap();
    let applier = tokio::spawn(built.applier.run(shutdown.clone()));
    // A fact accepted three hours ago (past the 1 h window) whose delta arrives only now:
    // the board cannot tell whether it counted it, so it is rebuilt from the owner.
    let ms = u64::try_from((now - chrono::Duration::hours(3)).timestamp_millis()).unwrap();
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    (b[6], b[8]) = (0x70, 0x80);
    let old = uuid::Uuid::from_bytes(b).to_string();
    owner.facts.lock().unwrap().push(owned("bob", &old, 7.0));
    for delivery in 1..=2 {
        bus.publish(TOPIC, &[delta("bob", 7.0, &old)]).await.unwrap();
        let s = scores.clone();
        eventually(|| {
            let s = s.clone();
            async move { np(s.top(BOARD, 0, 10).await.unwrap()) == vec![e(1, "bob", 7.0)] }
        })
        .await;
        // Each delivery made one rebuild (after the first, empty one); none counted twice.
        let o = owner.clone();
        eventually(|| {
            let o = o.clone();
            async move { o.calls() == 1 + delivery }
        })
        .await;
        let s = scores.clone();
        eventually(|| {
            let s = s.clone();
            async move { s.exists(BOARD).await.unwrap() }
        })
        .await;
    }
    assert_eq!(np(scores.top(BOARD, 0, 10).await.unwrap()), vec![e(1, "bob", 7.0)]);
    shutdown.cancel();
    tokio::time::timeout(PATIENCE, applier).await.unwrap().unwrap().unwrap();
}
