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

use ewpm_kit::{
    CancellationToken, auth::TokenKeys, bus::Bus, clock::SharedClock, settings::GrpcSettings,
    streams::StreamSlots,
};
use ewpm_proto::leaderboard::v1::leaderboard_service_server::LeaderboardServiceServer;

use crate::{
    access::Access,
    applier::Applier,
    background::Background,
    definition::{Definitions, OWN_KIND},
    grpc::LeaderboardGrpc,
    notices::Notices,
    own::OwnBoards,
    privacy::Privacy,
    reader::Reader,
    rebuild::{Owners, RebuildConfig, Rebuilder},
    scores::ScoreStore,
    service::Leaderboards,
    settings::LeaderboardSettings,
    store::LeaderboardStore,
    watch::{WatchConfig, WatchHub},
    writes::Writes,
};

/// What the service is built from.
pub struct Parts {
    /// Board scores (Redis or memory).
    pub scores: Arc<dyn ScoreStore>,
    /// Where score deltas arrive.
    pub bus: Arc<dyn Bus>,
    /// Per-board change notices.
    pub notices: Arc<dyn Notices>,
    /// Owners of challenge and quiz boards (`board:` boards are added here).
    pub owners: Owners,
    /// This service's tables.
    pub store: LeaderboardStore,
    /// Token keys (pseudonyms are keyed by the secret).
    pub keys: TokenKeys,
    /// The clock.
    pub clock: SharedClock,
}

/// The leaderboard service, built.
pub struct Leaderboard {
    /// The tonic service to mount.
    pub service: LeaderboardServiceServer<LeaderboardGrpc>,
    /// The delta applier; run it (`applier.run(shutdown)`) when
    /// `settings.applier_enabled`.
    pub applier: Applier,
    /// The fact relay and period closer of `board:` boards; run it (`background.run(shutdown)`).
    pub background: Background,
    /// The hub of watch streams (e.g. to count watched boards).
    pub hub: WatchHub,
    /// The rebuilder, shared by reads, watches and the applier.
    pub rebuilder: Rebuilder,
    /// The read check (e.g. to count cached audiences).
    pub access: Access,
    /// The watch stream caps (e.g. to count open streams).
    pub streams: Arc<StreamSlots>,
    /// The reads.
    pub boards: Leaderboards,
}

/// Builds the service from `parts`; watch streams end when `shutdown` is cancelled (pass
/// the server's token).
pub fn build(
    parts: Parts,
    settings: &LeaderboardSettings,
    grpc: &GrpcSettings,
    shutdown: CancellationToken,
) -> Leaderboard {
    let Parts { scores, bus, notices, owners, store, keys, clock } = parts;
    let definitions = Definitions::new(store.clone());
    let own = Arc::new(OwnBoards::new(definitions.clone()));
    let owners =
        owners.with(OWN_KIND, own.clone()).with_audience(OWN_KIND, own.clone()).with_voids(own);
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
    let reader = Reader::new(scores.clone(), rebuilder.clone(), definitions, clock);
    let watch = WatchConfig {
        interval: Duration::from_millis(settings.watch_interval_ms.max(1)),
        ..WatchConfig::default()
    };
    let privacy = Privacy::new(store, keys);
    let hub = WatchHub::new(reader.clone(), privacy.clone(), notices.clone(), watch, shutdown);
    let boards = Leaderboards::new(
        reader,
        hub.clone(),
        Duration::from_millis(settings.read_cache_ms),
        access.clone(),
        streams.clone(),
        privacy,
        Duration::from_secs(settings.close_grace_secs),
    );
    let writes = Writes::new(boards.clone(), notices.clone());
    let service = LeaderboardServiceServer::new(LeaderboardGrpc::new(writes))
        .max_decoding_message_size(grpc.max_message_bytes);
    let background = Background {
        boards: boards.clone(),
        notices: notices.clone(),
        relay_interval: Duration::from_millis(settings.relay_interval_ms.max(10)),
        close_interval: Duration::from_millis(settings.close_interval_ms.max(10)),
    };
    let applier = Applier::new(bus, scores, notices, rebuilder.clone(), settings);
    Leaderboard { service, applier, background, hub, rebuilder, access, streams, boards }
}
