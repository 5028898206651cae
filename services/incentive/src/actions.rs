//! Incentive actions: the strategies an employer incentive stacks, run in order each time its
//! rule fires (the note's `IEmployerIncentiveAction`).
//!
//! An action runs inside the processor's transaction and may leave work for after the commit
//! (a notification must not announce an award that then rolls back). Each is a small struct
//! behind [`IncentiveAction`], testable alone and swappable per link.
//!
//! - [`RecordAward`]: writes the award to the ledger, at most once per user, link and period
//!   (a unique key, so concurrent processors and redelivered events cannot award twice).
//! - [`Notify`]: pushes a newly recorded award to the user's WatchAwards streams. At most
//!   once: a crash between commit and push loses the push, never the award (ListAwards has it).

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use sea_orm::DatabaseTransaction;
use uuid::Uuid;

use crate::{
    domain::{ActionKind, Award, EmployerIncentive},
    store::IncentiveStore,
};

/// The rule fired for one user on one day.
#[derive(Debug, Clone, PartialEq)]
pub struct Fired {
    /// The link.
    pub link: Arc<EmployerIncentive>,
    /// The user.
    pub user_id: String,
    /// The day it fired on (employer's calendar).
    pub day: NaiveDate,
    /// The activity that completed it.
    pub activity_id: Uuid,
    /// Now.
    pub at: DateTime<Utc>,
}

/// What the actions of one firing produced.
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    /// The award, when one was recorded now (not when the period had one already).
    pub award: Option<Award>,
    /// Awards to push to watchers once the transaction committed.
    pub notify: Vec<Award>,
}

/// One step run when a rule fires.
#[async_trait]
pub trait IncentiveAction: Send + Sync + 'static {
    /// Which action this is.
    fn kind(&self) -> ActionKind;

    /// Runs for `fired` inside `tx`, adding to `outcome`.
    async fn run(
        &self,
        fired: &Fired,
        tx: &DatabaseTransaction,
        outcome: &mut Outcome,
    ) -> anyhow::Result<()>;
}

/// Records the award in the ledger.
#[derive(Debug, Default)]
pub struct RecordAward;

impl RecordAward {
    /// The award `fired` earns.
    pub fn award_of(fired: &Fired) -> Award {
        let link = &fired.link;
        Award {
            id: Uuid::now_v7(),
            user_id: fired.user_id.clone(),
            employer_id: link.employer_id.clone(),
            employer_incentive_id: link.id,
            program_id: link.program_id.clone(),
            incentive_slug: link.incentive.slug.clone(),
            reward: link.reward.clone(),
            award_day: fired.day,
            period_key: link.repeat.key(fired.day),
            activity_id: fired.activity_id,
            awarded_at: fired.at,
        }
    }
}

#[async_trait]
impl IncentiveAction for RecordAward {
    fn kind(&self) -> ActionKind {
        ActionKind::Award
    }

    async fn run(
        &self,
        fired: &Fired,
        tx: &DatabaseTransaction,
        outcome: &mut Outcome,
    ) -> anyhow::Result<()> {
        let award = Self::award_of(fired);
        if IncentiveStore::insert_award(tx, &award).await? {
            metrics::counter!("ewpm_incentive_awards_total").increment(1);
            outcome.award = Some(award);
        }
        Ok(())
    }
}

/// Pushes a newly recorded award to the user's live streams after the commit.
#[derive(Debug, Default)]
pub struct Notify;

#[async_trait]
impl IncentiveAction for Notify {
    fn kind(&self) -> ActionKind {
        ActionKind::Notify
    }

    async fn run(
        &self,
        _fired: &Fired,
        _tx: &DatabaseTransaction,
        outcome: &mut Outcome,
    ) -> anyhow::Result<()> {
        if let Some(award) = &outcome.award {
            outcome.notify.push(award.clone());
        }
        Ok(())
    }
}

/// The action of each kind.
pub fn action(kind: ActionKind) -> Arc<dyn IncentiveAction> {
    match kind {
        ActionKind::Award => Arc::new(RecordAward),
        ActionKind::Notify => Arc::new(Notify),
    }
}
