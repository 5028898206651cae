//! Incentive actions: the strategies an employer incentive stacks, run in order each time its
//! rule fires (the note's `IEmployerIncentiveAction`).
//!
//! An action runs inside the processor's transaction and may leave work for after the commit
//! (a notification must not announce an award that then rolls back). Each is a small struct
//! behind [`IncentiveAction`], testable alone and swappable per link. Actions run over a
//! batch's firings at once ([`run_stacks`]), so a batch that completes a thousand streaks
//! records its awards with one statement, not a thousand.
//!
//! - [`RecordAward`]: writes the award to the ledger, at most once per user, link and period
//!   (a unique key, so concurrent processors and redelivered events cannot award twice).
//! - [`Notify`]: pushes a newly recorded award to the user's WatchAwards streams. At most
//!   once: a crash between commit and push loses the push, never the award (ListAwards has it).

use std::sync::Arc;

use anyhow::Context;
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

/// One firing at one step of its link's action stack, and what its earlier steps produced.
#[derive(Debug)]
pub struct Step<'a> {
    /// The firing.
    pub fired: &'a Fired,
    /// What the stack produced so far.
    pub outcome: Outcome,
}

/// One step run when a rule fires. A processor batch runs each action once over all the
/// firings at the same step of their stacks (one statement for many awards), in stack order.
#[async_trait]
pub trait IncentiveAction: Send + Sync + 'static {
    /// Which action this is.
    fn kind(&self) -> ActionKind;

    /// Runs for every step inside `tx`, adding to each step's outcome.
    async fn run(&self, steps: &mut [Step<'_>], tx: &DatabaseTransaction) -> anyhow::Result<()>;
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

    async fn run(&self, steps: &mut [Step<'_>], tx: &DatabaseTransaction) -> anyhow::Result<()> {
        let awards: Vec<Award> = steps.iter().map(|s| Self::award_of(s.fired)).collect();
        let new = IncentiveStore::insert_awards(tx, &awards).await?;
        metrics::counter!("ewpm_incentive_awards_total").increment(new.len() as u64);
        for (step, award) in steps.iter_mut().zip(awards) {
            if new.contains(&award.id) {
                step.outcome.award = Some(award);
            }
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

    async fn run(&self, steps: &mut [Step<'_>], _tx: &DatabaseTransaction) -> anyhow::Result<()> {
        for step in steps {
            if let Some(award) = &step.outcome.award {
                let award = award.clone();
                step.outcome.notify.push(award);
            }
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

/// Runs every firing's action stack in order inside `tx`; the outcomes, by firing.
pub async fn run_stacks(fired: &[Fired], tx: &DatabaseTransaction) -> anyhow::Result<Vec<Outcome>> {
    let mut outcomes: Vec<Outcome> = fired.iter().map(|_| Outcome::default()).collect();
    let depth = fired.iter().map(|f| f.link.actions.kinds().len()).max().unwrap_or(0);
    for at in 0..depth {
        for kind in [ActionKind::Award, ActionKind::Notify] {
            let here: Vec<usize> = (0..fired.len())
                .filter(|&i| fired[i].link.actions.kinds().get(at) == Some(&kind))
                .collect();
            if here.is_empty() {
                continue;
            }
            let mut steps: Vec<Step<'_>> = here
                .iter()
                .map(|&i| Step { fired: &fired[i], outcome: std::mem::take(&mut outcomes[i]) })
                .collect();
            action(kind)
                .run(&mut steps, tx)
                .await
                .with_context(|| format!("action {}", kind.as_str()))?;
            for (step, &i) in steps.into_iter().zip(&here) {
                outcomes[i] = step.outcome;
            }
        }
    }
    Ok(outcomes)
}
