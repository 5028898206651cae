//! The leaderboard module: what the binary's registry runs.

use std::{sync::Arc, time::Duration};

use ewpm_kit::module::{Context, Mode, Module, async_trait};
use sea_orm::DatabaseConnection;
use sea_orm_migration::MigratorTrait;

use crate::{
    access::ChallengeAudience,
    app,
    notices::{self, MemoryNotices, Notices},
    quiz::QuizBoards,
    rebuild::{ChallengeOwner, Owners},
    scores::{Dedupe, MemoryScores, RedisScores, ScoreStore},
    settings::LeaderboardSettings,
    store::LeaderboardStore,
};

/// The leaderboard service and its score delta applier. Challenge boards are rebuilt from the
/// `progress` service and readable by the audience the `challenge` service names; quiz boards
/// (`quiz:<session>`) both come from the `quiz` service.
pub struct LeaderboardModule;

/// The leaderboard module, for the registry.
pub static MODULE: LeaderboardModule = LeaderboardModule;

#[async_trait]
impl Module for LeaderboardModule {
    fn name(&self) -> &'static str {
        "leaderboard"
    }

    fn about(&self) -> &'static str {
        "Live leaderboards (gRPC ewpm.leaderboard.v1.LeaderboardService), with its delta applier unless EWPM_LEADERBOARD__APPLIER_ENABLED=false"
    }

    fn section(&self) -> ewpm_kit::settings::Section {
        ewpm_kit::settings::Section::of::<LeaderboardSettings>("leaderboard")
    }

    async fn migrate(&self, db: &DatabaseConnection) -> anyhow::Result<()> {
        Ok(crate::migrations::Migrator::up(db, None).await?)
    }

    async fn start(&self, ctx: &mut Context<'_>) -> anyhow::Result<()> {
        let settings: LeaderboardSettings = ctx.section()?;
        let dedupe = Dedupe {
            window: Duration::from_secs(settings.dedupe_window_secs),
            ..Dedupe::default()
        };
        let bus = ctx.bus().await?;
        let (scores, notices): (Arc<dyn ScoreStore>, Arc<dyn Notices>) = match ctx.mode() {
            Mode::Embedded => {
                (Arc::new(MemoryScores::new().with_dedupe(dedupe)), Arc::new(MemoryNotices::new()))
            }
            Mode::Mesh => {
                let (url, prefix) = ctx.redis().await?;
                (
                    Arc::new(RedisScores::connect(&url, &prefix).await?.with_dedupe(dedupe)),
                    Arc::new(notices::redis(&url, &prefix).await?),
                )
            }
        };
        let keys = ctx.keys().clone();
        let owner = ChallengeOwner::new(&ctx.service_uri("progress")?, keys.clone())?;
        let audience = ChallengeAudience::new(&ctx.service_uri("challenge")?, keys)?;
        let quiz = Arc::new(QuizBoards::new(&ctx.service_uri("quiz")?, ctx.service_token())?);
        let owners = Owners::new()
            .with("challenge", Arc::new(owner))
            .with_audience("challenge", Arc::new(audience))
            .with("quiz", quiz.clone())
            .with_audience("quiz", quiz);
        let grpc = ctx.settings().grpc.clone();
        let parts = app::Parts {
            scores,
            bus,
            notices,
            owners,
            store: LeaderboardStore::new(ctx.db()?),
            keys: ctx.keys().clone(),
            clock: ctx.clock(),
        };
        let built = app::build(parts, &settings, &grpc, ctx.streams());
        ctx.mount().add(built.service);
        let background = built.background;
        let tasks = ctx.tasks();
        ctx.spawn(async move { background.run(tasks).await });
        if settings.applier_enabled {
            let applier = built.applier;
            let tasks = ctx.tasks();
            ctx.spawn(async move {
                if let Err(err) = applier.run(tasks).await {
                    tracing::error!(error = format!("{err:#}"), "score delta applier stopped");
                }
            });
        }
        Ok(())
    }
}
