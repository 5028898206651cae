//! The incentive module: what the binary's registry runs.

use std::sync::Arc;

use ewpm_kit::module::{Context, Mode, Module, Part, async_trait};
use sea_orm::DatabaseConnection;
use sea_orm_migration::MigratorTrait;

use crate::{
    app,
    notices::{IncentiveNotices, MemoryNotices, RedisNotices},
    settings::IncentiveSettings,
};

/// The incentive service and its processors of the `activity` topic.
pub struct IncentiveModule;

/// The incentive module, for the registry.
pub static MODULE: IncentiveModule = IncentiveModule;

#[async_trait]
impl Module for IncentiveModule {
    fn name(&self) -> &'static str {
        "incentive"
    }

    fn about(&self) -> &'static str {
        "Employer incentives and awards (gRPC ewpm.incentive.v1.IncentiveService), with its processors unless EWPM_INCENTIVE__PROCESSOR_ENABLED=false"
    }

    fn section(&self) -> ewpm_kit::settings::Section {
        ewpm_kit::settings::Section::of::<IncentiveSettings>("incentive")
    }

    fn parts(&self) -> &'static [Part] {
        &[Part {
            name: "processor",
            about: "The incentive processors alone (metrics and health only)",
        }]
    }

    async fn migrate(&self, db: &DatabaseConnection) -> anyhow::Result<()> {
        Ok(crate::migrations::Migrator::up(db, None).await?)
    }

    async fn start(&self, ctx: &mut Context<'_>) -> anyhow::Result<()> {
        let settings: IncentiveSettings = ctx.section()?;
        let db = ctx.db()?;
        let awards: Arc<dyn IncentiveNotices> = match ctx.mode() {
            Mode::Embedded => Arc::new(MemoryNotices::new()),
            Mode::Mesh => {
                let (url, prefix) = ctx.redis().await?;
                Arc::new(RedisNotices::connect(&url, &prefix).await?)
            }
        };
        let clock = ctx.clock();
        if ctx.whole() {
            let service = app::build(
                db.clone(),
                clock.clone(),
                awards.clone(),
                &ctx.settings().grpc,
                &ctx.settings().limits,
                ctx.streams(),
            );
            ctx.mount().add(service);
        }
        if settings.processor_enabled || !ctx.whole() {
            let bus = ctx.bus().await?;
            let processors = app::processors(db, bus, awards, clock, &settings, ctx.process_name());
            for processor in processors {
                let tasks = ctx.tasks();
                ctx.spawn(processor.run(tasks));
            }
        }
        Ok(())
    }
}
