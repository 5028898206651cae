//! The quiz module: what the binary's registry runs.

use std::{sync::Arc, time::Duration};

use ewpm_kit::{
    module::{Context, Mode, Module, Part, async_trait},
    notices::{MemoryNotices, Notices, RedisNotices},
    streams::StreamSlots,
};
use ewpm_proto::quiz::v1::quiz_service_server::QuizServiceServer;
use sea_orm::DatabaseConnection;
use sea_orm_migration::MigratorTrait;
use tokio::sync::Notify;

use crate::{
    NOTICES_NAMESPACE,
    grpc::QuizGrpc,
    relay::{Relay, run_closer},
    service::Quizzes,
    settings::QuizSettings,
    store::QuizStore,
    watch::{Hub, Leaderboard},
};

/// The quiz service, its question closer, and its outbox relay.
pub struct QuizModule;

/// The quiz module, for the registry.
pub static MODULE: QuizModule = QuizModule;

#[async_trait]
impl Module for QuizModule {
    fn name(&self) -> &'static str {
        "quiz"
    }

    fn about(&self) -> &'static str {
        "Live quizzes (gRPC ewpm.quiz.v1.QuizService) with the question closer, and the outbox relay unless EWPM_QUIZ__RELAY_ENABLED=false"
    }

    fn section(&self) -> ewpm_kit::settings::Section {
        ewpm_kit::settings::Section::of::<QuizSettings>("quiz")
    }

    fn parts(&self) -> &'static [Part] {
        &[Part {
            name: "relay",
            about: "The quiz outbox relay alone (gRPC health and metrics only); run as many as you like",
        }]
    }

    async fn migrate(&self, db: &DatabaseConnection) -> anyhow::Result<()> {
        Ok(crate::migrations::Migrator::up(db, None).await?)
    }

    async fn start(&self, ctx: &mut Context<'_>) -> anyhow::Result<()> {
        let settings: QuizSettings = ctx.section()?;
        let store = QuizStore::new(ctx.db()?);
        let clock = ctx.clock();
        let answered = Arc::new(Notify::new());
        if ctx.whole() {
            let notices: Arc<dyn Notices> = match ctx.mode() {
                Mode::Embedded => Arc::new(MemoryNotices::new()),
                Mode::Mesh => {
                    let (url, prefix) = ctx.redis().await?;
                    Arc::new(RedisNotices::connect(&url, &prefix, NOTICES_NAMESPACE).await?)
                }
            };
            let quizzes =
                Quizzes::new(store.clone(), clock.clone(), notices.clone(), answered.clone());
            let leaderboard =
                Leaderboard::new(&ctx.service_uri("leaderboard")?, ctx.service_token())?;
            let slots = StreamSlots::new("quiz", &ctx.settings().limits);
            let hub = Hub::new(
                quizzes.clone(),
                notices.clone(),
                clock.clone(),
                Some(leaderboard),
                slots,
                ctx.streams(),
                Duration::from_secs(settings.presence_ttl_secs.max(3)),
            );
            let grpc = ctx.settings().grpc.clone();
            ctx.mount().add(
                QuizServiceServer::new(QuizGrpc::new(quizzes, hub.clone()))
                    .max_decoding_message_size(grpc.max_message_bytes),
            );
            let tasks = ctx.tasks();
            ctx.spawn(hub.clone().run_deliveries(tasks.clone()));
            ctx.spawn(hub.run_presence(tasks.clone()));
            ctx.spawn(run_closer(
                store.clone(),
                notices,
                clock.clone(),
                Duration::from_millis(settings.closer_interval_ms.max(10)),
                tasks,
            ));
        }
        if settings.relay_enabled || !ctx.whole() {
            let relay = Relay {
                store,
                bus: ctx.bus().await?,
                clock,
                batch: settings.relay_batch.clamp(1, 10_000),
                poll: Duration::from_millis(settings.relay_poll_ms.max(1)),
                retention: Duration::from_secs(settings.outbox_retention_hours * 3600),
                answered,
            };
            let tasks = ctx.tasks();
            ctx.spawn(relay.run(tasks));
        }
        Ok(())
    }
}
