//! The scan module: what the binary's registry runs.

use std::time::Duration;

use ewpm_kit::module::{Context, Module, Part, async_trait};
use sea_orm::DatabaseConnection;
use sea_orm_migration::MigratorTrait;

use crate::{app, projector::Status, settings::ScanSettings};

/// The scan service and its projector of parcel states.
pub struct ScanModule;

/// The scan module, for the registry.
pub static MODULE: ScanModule = ScanModule;

#[async_trait]
impl Module for ScanModule {
    fn name(&self) -> &'static str {
        "scan"
    }

    fn about(&self) -> &'static str {
        "Parcel scans (gRPC ewpm.scan.v1.ScanService), with its projector unless EWPM_SCAN__PROJECTOR__ENABLED=false"
    }

    fn section(&self) -> ewpm_kit::settings::Section {
        ewpm_kit::settings::Section::of::<ScanSettings>("scan")
    }

    fn parts(&self) -> &'static [Part] {
        &[Part {
            name: "projector",
            about: "The scan projector alone (gRPC health and metrics only)",
        }]
    }

    async fn migrate(&self, db: &DatabaseConnection) -> anyhow::Result<()> {
        Ok(crate::migrations::Migrator::up(db, None).await?)
    }

    async fn start(&self, ctx: &mut Context<'_>) -> anyhow::Result<()> {
        let settings: ScanSettings = ctx.section()?;
        let db = ctx.db()?;
        let clock = ctx.clock();
        let status = Status::default();
        if ctx.whole() {
            let grpc = ctx.settings().grpc.clone();
            ctx.mount().add(app::build(db.clone(), clock.clone(), &grpc, status.clone()));
        }
        let projector_settings = &settings.projector;
        if projector_settings.enabled || !ctx.whole() {
            let url = ctx.database_url()?;
            let projector =
                app::projector(db, &url, clock.clone(), projector_settings, status.clone())?;
            let health = ctx.mount().health();
            let tasks = ctx.tasks();
            ctx.spawn(projector.run(tasks.clone()));
            ctx.spawn(app::report_health(
                health,
                status,
                clock,
                Duration::from_secs(projector_settings.stale_after_secs),
                tasks,
            ));
        }
        Ok(())
    }
}
