//! The progress module: what the binary's registry runs.

use ewpm_kit::module::{Context, Module, Part, async_trait};
use ewpm_proto::progress::v1::ACTIVITY_TOPIC;
use sea_orm::DatabaseConnection;
use sea_orm_migration::MigratorTrait;

use crate::{PROGRESS_TOPIC, app, settings::ProgressSettings};

/// The progress service (challenge windows from the `challenge` service) and its batch
/// writers.
pub struct ProgressModule;

/// The progress module, for the registry.
pub static MODULE: ProgressModule = ProgressModule;

#[async_trait]
impl Module for ProgressModule {
    fn name(&self) -> &'static str {
        "progress"
    }

    fn about(&self) -> &'static str {
        "Challenge progress and logged activity (gRPC ewpm.progress.v1.ProgressService), with its batch writers unless EWPM_PROGRESS__WRITER_ENABLED=false"
    }

    fn section(&self) -> ewpm_kit::settings::Section {
        ewpm_kit::settings::Section::of::<ProgressSettings>("progress")
    }

    fn parts(&self) -> &'static [Part] {
        &[Part {
            name: "writer",
            about: "The progress batch writers alone (metrics and health only)",
        }]
    }

    /// The queue SubmitProgress answers from, and the recorded activity its writers publish
    /// (consumed by other modules, which may be down for a while).
    fn durable_topics(&self) -> &'static [&'static str] {
        &[PROGRESS_TOPIC, ACTIVITY_TOPIC]
    }

    async fn migrate(&self, db: &DatabaseConnection) -> anyhow::Result<()> {
        Ok(crate::migrations::Migrator::up(db, None).await?)
    }

    async fn start(&self, ctx: &mut Context<'_>) -> anyhow::Result<()> {
        let settings: ProgressSettings = ctx.section()?;
        let db = ctx.db()?;
        let bus = ctx.bus().await?;
        if ctx.whole() {
            let service = app::build(
                db.clone(),
                bus.clone(),
                &ctx.service_uri("challenge")?,
                ctx.service_token(),
                ctx.clock(),
                &settings,
                &ctx.settings().grpc,
            )?;
            ctx.mount().add(service);
        }
        if settings.writer_enabled || !ctx.whole() {
            let writers = app::writers(db, bus, &settings, ctx.process_name());
            for writer in writers {
                let tasks = ctx.tasks();
                ctx.spawn(writer.run(tasks));
            }
        }
        Ok(())
    }
}
