//! The incentive service's operations, with their access rules: the catalog (admins), an
//! employer's links (its admins and admins; its employees may read them), the awards ledger
//! (the user, their employer's admins, admins).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use ewpm_kit::{
    auth::{Caller, Role},
    clock::SharedClock,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    domain::{
        Actions, ActiveWindow, Award, EmployerIncentive, Incentive, RepeatPolicy, Rule, Slug,
        TriggerKinds, Zone,
    },
    error::IncentiveError,
    notices::{ALL_EMPLOYERS, IncentiveNotices},
    store::{AwardsOf, IncentiveStore},
};

/// A new catalog incentive, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct NewIncentive {
    /// Unique name.
    pub slug: Slug,
    /// For people.
    pub description: String,
    /// When it is earned.
    pub rule: Rule,
    /// What triggers it.
    pub trigger_kinds: TriggerKinds,
}

/// A changed catalog incentive, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct IncentiveChange {
    /// Which.
    pub id: Uuid,
    /// New description.
    pub description: String,
    /// New rule.
    pub rule: Rule,
    /// New trigger kinds.
    pub trigger_kinds: TriggerKinds,
}

/// Which catalog incentive a link names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IncentiveRef {
    /// By id.
    Id(Uuid),
    /// By slug.
    Slug(Slug),
}

/// A new employer incentive, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct NewLink {
    /// The employer (`None`: the caller's).
    pub employer_id: Option<String>,
    /// The program.
    pub program_id: String,
    /// The catalog incentive.
    pub incentive: IncentiveRef,
    /// What the user gets.
    pub reward: String,
    /// Whose calendar days count.
    pub zone: Zone,
    /// From (`None`: now) and until.
    pub starts_at: Option<DateTime<Utc>>,
    /// Until.
    pub ends_at: Option<DateTime<Utc>>,
    /// How often.
    pub repeat: RepeatPolicy,
    /// What runs.
    pub actions: Actions,
}

/// A page of results and the cursor of the next.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T, C> {
    /// The items.
    pub items: Vec<T>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<C>,
}

/// Cursor of ListEmployerIncentives and ListAwards: the last id shown (newest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Before(pub Uuid);

/// The incentive service.
#[derive(Clone)]
pub struct Incentives {
    store: IncentiveStore,
    clock: SharedClock,
    notices: Arc<dyn IncentiveNotices>,
}

impl Incentives {
    /// Over `store`, announcing link changes on `notices`.
    pub fn new(
        store: IncentiveStore,
        clock: SharedClock,
        notices: Arc<dyn IncentiveNotices>,
    ) -> Self {
        Self { store, clock, notices }
    }

    /// Tells every processor's link cache that `employer_id`'s links changed. Best effort: a lost
    /// announcement costs at most one cache period.
    async fn announce(&self, employer_id: &str) {
        if let Err(err) = self.notices.links_changed(employer_id).await {
            tracing::warn!(
                employer = employer_id,
                error = format!("{err:#}"),
                "announce a link change"
            );
        }
    }

    /// The store.
    pub fn store(&self) -> &IncentiveStore {
        &self.store
    }

    /// Adds a catalog incentive (admins).
    pub async fn create_incentive(
        &self,
        caller: &Caller,
        new: NewIncentive,
    ) -> Result<Incentive, IncentiveError> {
        require_admin(caller)?;
        let now = self.clock.now();
        let incentive = Incentive {
            id: Uuid::now_v7(),
            slug: new.slug.as_str().to_string(),
            description: new.description,
            rule: new.rule,
            trigger_kinds: new.trigger_kinds,
            active: true,
            created_at: now,
            updated_at: now,
        };
        if !self.store.insert_incentive(&incentive).await? {
            return Err(IncentiveError::SlugTaken(incentive.slug));
        }
        Ok(incentive)
    }

    /// Changes a catalog incentive (admins).
    pub async fn update_incentive(
        &self,
        caller: &Caller,
        change: IncentiveChange,
    ) -> Result<Incentive, IncentiveError> {
        require_admin(caller)?;
        let mut incentive = self.incentive(change.id).await?;
        incentive.description = change.description;
        incentive.rule = change.rule;
        incentive.trigger_kinds = change.trigger_kinds;
        incentive.updated_at = self.clock.now();
        self.store.update_incentive(&incentive).await?;
        self.announce(ALL_EMPLOYERS).await;
        Ok(incentive)
    }

    /// Deactivates a catalog incentive (admins).
    pub async fn deactivate_incentive(
        &self,
        caller: &Caller,
        id: Uuid,
    ) -> Result<Incentive, IncentiveError> {
        require_admin(caller)?;
        let mut incentive = self.incentive(id).await?;
        if incentive.active {
            incentive.active = false;
            incentive.updated_at = self.clock.now();
            self.store.update_incentive(&incentive).await?;
            self.announce(ALL_EMPLOYERS).await;
        }
        Ok(incentive)
    }

    /// The catalog (everyone).
    pub async fn list_incentives(
        &self,
        after: Option<String>,
        limit: u32,
        include_inactive: bool,
    ) -> Result<Page<Incentive, String>, IncentiveError> {
        let items =
            self.store.list_incentives(after, u64::from(limit) + 1, include_inactive).await?;
        Ok(page(items, limit, |i| i.slug.clone()))
    }

    async fn incentive(&self, id: Uuid) -> Result<Incentive, IncentiveError> {
        self.store
            .incentive(id)
            .await?
            .ok_or_else(|| IncentiveError::IncentiveNotFound(id.to_string()))
    }

    /// Links a catalog incentive to an employer's program (that employer's admins, admins).
    pub async fn create_link(
        &self,
        caller: &Caller,
        new: NewLink,
    ) -> Result<EmployerIncentive, IncentiveError> {
        let employer_id = match new.employer_id.or_else(|| caller.employer_id.clone()) {
            Some(e) => e,
            None => {
                return Err(
                    ewpm_kit::error::FieldViolation::new("employer_id", "is required").into()
                );
            }
        };
        require_manager(caller, &employer_id)?;
        let incentive = match &new.incentive {
            IncentiveRef::Id(id) => self.store.incentive(*id).await?,
            IncentiveRef::Slug(slug) => self.store.incentive_by_slug(slug.as_str()).await?,
        };
        let incentive = incentive.ok_or_else(|| {
            IncentiveError::IncentiveNotFound(match &new.incentive {
                IncentiveRef::Id(id) => id.to_string(),
                IncentiveRef::Slug(s) => s.as_str().to_string(),
            })
        })?;
        if !incentive.active {
            return Err(IncentiveError::IncentiveInactive(incentive.id.to_string()));
        }
        let now = self.clock.now();
        let window = ActiveWindow::new(new.starts_at.unwrap_or(now), new.ends_at)?;
        let link = EmployerIncentive {
            id: Uuid::now_v7(),
            employer_id,
            program_id: new.program_id,
            incentive,
            reward: new.reward,
            zone: new.zone,
            window,
            repeat: new.repeat,
            actions: new.actions,
            active: true,
            created_at: now,
        };
        self.store.insert_employer_incentive(&link).await?;
        self.announce(&link.employer_id).await;
        Ok(link)
    }

    /// An employer's links, newest first (its admins and employees, admins).
    pub async fn list_links(
        &self,
        caller: &Caller,
        employer_id: Option<String>,
        before: Option<Before>,
        limit: u32,
        include_inactive: bool,
    ) -> Result<Page<EmployerIncentive, Before>, IncentiveError> {
        let employer_id = employer_id
            .or_else(|| caller.employer_id.clone())
            .ok_or_else(|| ewpm_kit::error::FieldViolation::new("employer_id", "is required"))?;
        if !caller.is_admin() && caller.employer_id.as_deref() != Some(employer_id.as_str()) {
            return Err(IncentiveError::Forbidden(
                "only that employer's people and admins see its incentives",
            ));
        }
        let items = self
            .store
            .list_employer_incentives(
                &employer_id,
                before.map(|b| b.0),
                u64::from(limit) + 1,
                include_inactive,
            )
            .await?;
        Ok(page(items, limit, |l| Before(l.id)))
    }

    /// Deactivates a link (its employer's admins, admins).
    pub async fn deactivate_link(
        &self,
        caller: &Caller,
        id: Uuid,
    ) -> Result<EmployerIncentive, IncentiveError> {
        let mut link = self
            .store
            .employer_incentives(&[id])
            .await?
            .pop()
            .ok_or_else(|| IncentiveError::LinkNotFound(id.to_string()))?;
        require_manager(caller, &link.employer_id)?;
        if link.active {
            self.store.deactivate_employer_incentive(id).await?;
            link.active = false;
            self.announce(&link.employer_id).await;
        }
        Ok(link)
    }

    /// A user's or an employer's awards, newest first.
    pub async fn list_awards(
        &self,
        caller: &Caller,
        of: AwardsRequest,
        before: Option<Before>,
        limit: u32,
    ) -> Result<Page<Award, Before>, IncentiveError> {
        let of = match of {
            AwardsRequest::User(user_id) => {
                let employer_id = if caller.is_admin() || caller.user_id == user_id {
                    None
                } else if caller.role == Role::EmployerAdmin && caller.employer_id.is_some() {
                    // An employer admin sees what the user earned under that employer only.
                    caller.employer_id.clone()
                } else {
                    return Err(IncentiveError::Forbidden(
                        "only the user, their employer's admins and admins see a user's awards",
                    ));
                };
                AwardsOf::User { user_id, employer_id }
            }
            AwardsRequest::Employer(employer_id) => {
                require_manager(caller, &employer_id)?;
                AwardsOf::Employer(employer_id)
            }
        };
        let items = self.store.list_awards(&of, before.map(|b| b.0), u64::from(limit) + 1).await?;
        Ok(page(items, limit, |a| Before(a.id)))
    }
}

/// Whose awards a caller asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AwardsRequest {
    /// A user's.
    User(String),
    /// An employer's.
    Employer(String),
}

/// `items` (fetched one beyond `limit`) as a page.
fn page<T, C>(mut items: Vec<T>, limit: u32, cursor: impl Fn(&T) -> C) -> Page<T, C> {
    let more = items.len() > limit as usize;
    items.truncate(limit as usize);
    let next = if more { items.last().map(cursor) } else { None };
    Page { items, next }
}

fn require_admin(caller: &Caller) -> Result<(), IncentiveError> {
    if caller.is_admin() {
        Ok(())
    } else {
        Err(IncentiveError::Forbidden("only admins manage the incentive catalog"))
    }
}

/// Admins, or an admin of `employer_id`.
fn require_manager(caller: &Caller, employer_id: &str) -> Result<(), IncentiveError> {
    let own =
        caller.role == Role::EmployerAdmin && caller.employer_id.as_deref() == Some(employer_id);
    if caller.is_admin() || own {
        Ok(())
    } else {
        Err(IncentiveError::Forbidden(
            "only that employer's admins and admins manage its incentives and see its awards",
        ))
    }
}
