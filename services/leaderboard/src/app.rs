//! Builds the leaderboard service and its applier, ready to mount and run.
//!
//! Embedded mode passes [`MemoryScores`](crate::scores::MemoryScores),
//! [`MemoryBus`](ewpm_kit::bus::MemoryBus) and [`MemoryNotices`](crate::notices::MemoryNotices);
//! mesh mode [`RedisScores`](crate::scores::RedisScores), [`RedisBus`](ewpm_kit::bus::RedisBus)
//! and [`RedisNotices`](crate::notices::RedisNotices). Owners: challenge boards' facts from
//! the progress service and their audience from the challenge service, e.g.
//! `Owners::new().with("challenge", Arc::new(ChallengeOwner::new(progress_uri, keys)?))
//! .with_audience("challenge", Arc::new(ChallengeAudience::new(challenge_uri, keys)?))`.

use std::{sync::Arc, time::Duration};

use ewpm_kit::{CancellationToken, bus::Bus, settings::GrpcSettings, streams::StreamSlots};
use ewpm_proto::leaderboard::v1::leaderboard_service_server::LeaderboardServiceServer;

use crate::{
    access::Access,
    applier::Applier,
    grpc::LeaderboardGrpc,
    notices::Notices,
    rebuild::{Owners, RebuildConfig, Rebuilder},
    scores::ScoreStore,
    service::Leaderboards,
    settings::LeaderboardSettings,
    watch::{WatchConfig, WatchHub},
};

/// The leaderboard service, built.
pub struct Leaderboard {
    /// The tonic service to mount.
    pub service: LeaderboardServiceServer<LeaderboardGrpc>,
    /// The delta applier; run it (`applier.run(shutdown)`) when
    /// `settings.applier_enabled`.
    pub applier: Applier,
    /// The hub of watch streams (e.g. to count watched boards).
    pub hub: WatchHub,
    /// The rebuilder, shared by reads, watches and the applier.
    pub rebuilder: Rebuilder,
    /// The read check (e.g. to count cached audiences).
    pub access: Access,
    /// The watch stream caps (e.g. to count open streams).
    pub streams: Arc<StreamSlots>,
}

/// Builds the service over `scores`, `bus` and `notices`, rebuilding missing boards from
/// `owners`; watch streams end when `shutdown` is cancelled (pass the server's token).
pub fn build(
    scores: Arc<dyn ScoreStore>,
    bus: Arc<dyn Bus>,
    notices: Arc<dyn Notices>,
    owners: Owners,
    settings: &LeaderboardSettings,
    grpc: &GrpcSettings,
    shutdown: CancellationToken,
) -> Leaderboard {
    let access = Access::new(
        owners.clone(),
        Duration::from_secs(settings.audience_cache_secs),
        settings.audience_cache_entries,
    );
    let streams = StreamSlots::with_caps(
        "leaderboard",
        settings.max_streams_per_caller,
        settings.max_streams,
    );
    let rebuilder = Rebuilder::new(scores.clone(), owners, RebuildConfig::default());
    let watch = WatchConfig {
        interval: Duration::from_millis(settings.watch_interval_ms.max(1)),
        ..WatchConfig::default()
    };
    let hub = WatchHub::new(scores.clone(), notices.clone(), rebuilder.clone(), watch, shutdown);
    let boards = Leaderboards::new(
        scores.clone(),
        rebuilder.clone(),
        hub.clone(),
        Duration::from_millis(settings.read_cache_ms),
        access.clone(),
        streams.clone(),
    );
    let service = LeaderboardServiceServer::new(LeaderboardGrpc::new(boards))
        .max_decoding_message_size(grpc.max_message_bytes);
    let applier = Applier::new(bus, scores, notices, rebuilder.clone(), settings);
    Leaderboard { service, applier, hub, rebuilder, access, streams }
}
