//! Builds the incentive service and its processors from settings.

use std::{sync::Arc, time::Duration};

use ewpm_kit::{
    CancellationToken,
    batch::BatchRule,
    bus::Bus,
    clock::SharedClock,
    consumer::{Consumer, ConsumerConfig},
    settings::{GrpcSettings, LimitSettings},
    streams::StreamSlots,
};
use ewpm_proto::{
    incentive::v1::incentive_service_server::IncentiveServiceServer, progress::v1::ACTIVITY_TOPIC,
};
use sea_orm::DatabaseConnection;

use crate::{
    PROCESSOR_GROUP,
    domain::MAX_BACKFILL_DAYS,
    grpc::IncentiveGrpc,
    notices::IncentiveNotices,
    processor::{Links, Processor},
    service::Incentives,
    settings::IncentiveSettings,
    store::IncentiveStore,
};

/// The tonic service over `db`; WatchAwards streams from `notices` and end with `streams`.
pub fn build(
    db: DatabaseConnection,
    clock: SharedClock,
    notices: Arc<dyn IncentiveNotices>,
    grpc: &GrpcSettings,
    limits: &LimitSettings,
    streams: CancellationToken,
) -> IncentiveServiceServer<IncentiveGrpc> {
    let incentives = Incentives::new(IncentiveStore::new(db), clock, notices.clone());
    let slots = StreamSlots::new("awards", limits);
    IncentiveServiceServer::new(IncentiveGrpc::new(incentives, notices, streams, slots))
        .max_decoding_message_size(grpc.max_message_bytes)
}

/// `settings.processors` processors of the recorded activity on `bus` (topic `activity`),
/// consumers named after `process`.
pub fn processors(
    db: DatabaseConnection,
    bus: Arc<dyn Bus>,
    notices: Arc<dyn IncentiveNotices>,
    clock: SharedClock,
    settings: &IncentiveSettings,
    process: &str,
) -> Vec<Consumer<Processor>> {
    let store = IncentiveStore::new(db);
    let ttl = Duration::from_secs(settings.lookup_cache_secs);
    let links = Arc::new(Links::new(store.clone(), ttl, notices.subscribe_links()));
    (0..settings.processors.max(1))
        .map(|i| {
            Consumer::new(
                bus.clone(),
                Processor::new(
                    store.clone(),
                    links.clone(),
                    notices.clone(),
                    clock.clone(),
                    settings.backfill_days.min(MAX_BACKFILL_DAYS),
                ),
                ConsumerConfig {
                    topic: ACTIVITY_TOPIC,
                    group: PROCESSOR_GROUP,
                    consumer: format!("{process}-p{i}"),
                    rule: BatchRule {
                        size: settings.batch_size.max(1),
                        max_wait: Duration::from_millis(settings.flush_interval_ms),
                    },
                    reclaim_idle: Duration::from_millis(settings.reclaim_idle_ms),
                    take: 0,
                },
            )
        })
        .collect()
}
