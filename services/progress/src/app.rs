//! Builds the progress service and its batch writers from settings.

use std::{sync::Arc, time::Duration};

use ewpm_kit::{
    auth::ServiceToken,
    batch::BatchRule,
    bus::Bus,
    clock::SharedClock,
    consumer::{Consumer, ConsumerConfig},
    settings::GrpcSettings,
};
use ewpm_proto::progress::v1::progress_service_server::ProgressServiceServer;
use sea_orm::DatabaseConnection;

use crate::{
    PROGRESS_TOPIC, WRITER_GROUP, challenges::ChallengeWindows, grpc::ProgressGrpc,
    service::Progress, settings::ProgressSettings, store::ProgressStore, writer::Writer,
};

/// The tonic service: accepts onto `bus`, learns challenge windows from the challenge service
/// at `challenge_uri` with `token`, reads totals from `db`.
pub fn build(
    db: DatabaseConnection,
    bus: Arc<dyn Bus>,
    challenge_uri: &str,
    token: Arc<ServiceToken>,
    clock: SharedClock,
    settings: &ProgressSettings,
    grpc: &GrpcSettings,
) -> anyhow::Result<ProgressServiceServer<ProgressGrpc>> {
    let windows = ChallengeWindows::new(
        challenge_uri,
        token,
        Duration::from_secs(settings.challenge_cache_secs),
        Duration::from_secs(settings.challenge_stale_secs),
    )?;
    let progress = Progress::new(bus, windows, clock, settings.max_backlog);
    Ok(ProgressServiceServer::new(ProgressGrpc::new(progress, ProgressStore::new(db)))
        .max_decoding_message_size(grpc.max_message_bytes))
}

/// `settings.writers` batch writers from `bus` into `db` (publishing score deltas and recorded
/// activity back on `bus`), consumers named after `process`.
pub fn writers(
    db: DatabaseConnection,
    bus: Arc<dyn Bus>,
    settings: &ProgressSettings,
    process: &str,
) -> Vec<Consumer<Writer>> {
    let store = ProgressStore::new(db);
    (0..settings.writers.max(1))
        .map(|i| {
            Consumer::new(
                bus.clone(),
                Writer::new(bus.clone(), store.clone())
                    .split_after_failures(settings.split_after_failures),
                ConsumerConfig {
                    topic: PROGRESS_TOPIC,
                    group: WRITER_GROUP,
                    consumer: format!("{process}-w{i}"),
                    rule: BatchRule {
                        size: settings.batch_size.max(1),
                        max_wait: Duration::from_millis(settings.flush_interval_ms),
                    },
                    reclaim_idle: Duration::from_millis(settings.reclaim_idle_ms),
                    take: settings.batch_max,
                },
            )
        })
        .collect()
}
