//! The challenge module: what the binary's registry runs.

use ewpm_kit::module::{Context, Module, async_trait};
use sea_orm::DatabaseConnection;
use sea_orm_migration::MigratorTrait;

use crate::standings::Standings;

/// The challenge service (its standings read from the `leaderboard` service).
pub struct ChallengeModule;

/// The challenge module, for the registry.
pub static MODULE: ChallengeModule = ChallengeModule;

#[async_trait]
impl Module for ChallengeModule {
    fn name(&self) -> &'static str {
        "challenge"
    }

    fn about(&self) -> &'static str {
        "Wellness challenges (gRPC ewpm.challenge.v1.ChallengeService)"
    }

    async fn migrate(&self, db: &DatabaseConnection) -> anyhow::Result<()> {
        Ok(crate::migrations::Migrator::up(db, None).await?)
    }

    async fn start(&self, ctx: &mut Context<'_>) -> anyhow::Result<()> {
        let db = ctx.db()?;
        let standings =
            Standings::from_leaderboard(&ctx.service_uri("leaderboard")?, ctx.service_token())?;
        let grpc = ctx.settings().grpc.clone();
        let clock = ctx.clock();
        ctx.mount().add(crate::app::build_with(db, clock, &grpc, standings));
        Ok(())
    }
}
