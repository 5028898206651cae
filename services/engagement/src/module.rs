//! The engagement module: what the binary's registry runs.

use std::{sync::Arc, time::Duration};

use ewpm_kit::{
    batch::BatchRule,
    consumer::{Consumer, ConsumerConfig},
    module::{Context, Mode, Module, Part, async_trait},
    notices::{MemoryNotices, Notices, RedisNotices},
    streams::StreamSlots,
};
use ewpm_proto::engagement::v1::{
    MATCH_EVENTS_TOPIC, engagement_service_server::EngagementServiceServer,
};
use sea_orm::DatabaseConnection;
use sea_orm_migration::MigratorTrait;

use crate::{
    NOTICES_NAMESPACE,
    admission::{Admission, MemoryAdmission, RedisAdmission},
    counters::{Counters, MemoryCounters, RedisCounters},
    grpc::EngagementGrpc,
    persister::{GROUP, Persister},
    rebuild::Rebuilder,
    service::Engagement,
    settings::EngagementSettings,
    store::EventStore,
    watch::Hub,
};

/// The engagement service and its persisters.
pub struct EngagementModule;

/// The engagement module, for the registry.
pub static MODULE: EngagementModule = EngagementModule;

#[async_trait]
impl Module for EngagementModule {
    fn name(&self) -> &'static str {
        "engagement"
    }

    fn about(&self) -> &'static str {
        "Fan engagement: match event ingest and live match metrics (gRPC ewpm.engagement.v1.EngagementService), with its persisters unless EWPM_ENGAGEMENT__PERSISTER_ENABLED=false"
    }

    fn section(&self) -> ewpm_kit::settings::Section {
        ewpm_kit::settings::Section::of::<EngagementSettings>("engagement")
    }

    fn parts(&self) -> &'static [Part] {
        &[Part {
            name: "persister",
            about: "The engagement persisters alone (gRPC health and metrics only); run as many as you like",
        }]
    }

    /// Accepted events wait here for the persisters.
    fn durable_topics(&self) -> &'static [&'static str] {
        &[MATCH_EVENTS_TOPIC]
    }

    async fn migrate(&self, db: &DatabaseConnection) -> anyhow::Result<()> {
        Ok(crate::migrations::Migrator::up(db, None).await?)
    }

    async fn start(&self, ctx: &mut Context<'_>) -> anyhow::Result<()> {
        let settings: EngagementSettings = ctx.section()?;
        let store = EventStore::new(ctx.db()?);
        let clock = ctx.clock();
        let retention = Duration::from_secs(settings.minute_retention_hours.max(1) * 3600);
        let (counters, admission, notices): (
            Arc<dyn Counters>,
            Arc<dyn Admission>,
            Arc<dyn Notices>,
        ) = match ctx.mode() {
            Mode::Embedded => (
                Arc::new(MemoryCounters::new().with_retention(retention)),
                Arc::new(MemoryAdmission::new()),
                Arc::new(MemoryNotices::new()),
            ),
            Mode::Mesh => {
                let (url, prefix) = ctx.redis().await?;
                let client = ewpm_kit::redis::connect(&url).await?;
                (
                    Arc::new(RedisCounters::new(client.clone(), &prefix).with_retention(retention)),
                    Arc::new(RedisAdmission::new(client, &prefix)),
                    Arc::new(RedisNotices::connect(&url, &prefix, NOTICES_NAMESPACE).await?),
                )
            }
        };
        let rebuilder = Rebuilder::new(store.clone(), counters, clock.clone());
        let bus = ctx.bus().await?;
        if ctx.whole() {
            let engagement = Engagement::new(
                store.clone(),
                bus.clone(),
                admission,
                rebuilder.clone(),
                clock.clone(),
                settings.clone(),
            );
            let hub = Hub::new(
                rebuilder.clone(),
                notices.clone(),
                clock.clone(),
                Duration::from_secs(settings.lateness_secs),
                ctx.streams(),
            );
            let slots = StreamSlots::new("engagement", &ctx.settings().limits);
            let grpc = ctx.settings().grpc.clone();
            ctx.mount().add_admitting_ingest(
                EngagementServiceServer::new(EngagementGrpc::new(engagement, hub, slots))
                    .max_decoding_message_size(grpc.max_message_bytes),
            );
        }
        if settings.persister_enabled || !ctx.whole() {
            for i in 0..settings.persisters.max(1) {
                let persister = Persister {
                    store: store.clone(),
                    rebuilder: rebuilder.clone(),
                    notices: notices.clone(),
                    clock: clock.clone(),
                };
                let consumer = Consumer::new(
                    bus.clone(),
                    persister,
                    ConsumerConfig {
                        topic: MATCH_EVENTS_TOPIC,
                        group: GROUP,
                        consumer: format!("{}-engagement-p{i}", ctx.process_name()),
                        rule: BatchRule {
                            size: settings.persister_batch.max(1),
                            max_wait: Duration::from_millis(settings.persister_max_wait_ms),
                        },
                        reclaim_idle: Duration::from_millis(settings.reclaim_idle_ms.max(100)),
                        take: 0,
                    },
                );
                let tasks = ctx.tasks();
                ctx.spawn(consumer.run(tasks));
            }
        }
        Ok(())
    }
}
