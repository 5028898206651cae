//! The writes behind the RPCs: defining boards, submitting scores to `board:` boards,
//! voiding entries, privacy and employer settings.
//!
//! **SubmitScore** stores the fact first (`lb_facts`, unique per board and event id, in the
//! period of its `occurred_at`), then applies it to the score store and marks it applied.
//! The facts table is its own outbox: a fact whose apply failed (Redis down, a crash between
//! the commit and the apply) stays unapplied, and the relay ([`crate::background`]) applies
//! it later; the store counts each fact id once, so a fact applied twice counts once. A
//! retry with the same event id and body answers the stored fact (`created: false`); another
//! body is ALREADY_EXISTS. A period takes facts until `close_grace_secs` after its end.
//!
//! **VoidEntry** records the void (`lb_voids`), then recounts each open period of the board
//! from its owner without it: the board is marked missing and rebuilt, twice, so that a
//! rebuild that began before the void was recorded cannot leave the voided fact counted.
//! Archived periods are never changed.

use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Utc};
use ewpm_kit::{
    auth::{Caller, Role, is_valid_employer_id},
    error::FieldViolation,
};

use crate::{
    definition::{Definition, OWN_KIND, Target, store_key},
    domain::Board,
    error::LeaderboardError,
    notices::Notices,
    own::owned_entry,
    period::{ALL, Period},
    privacy::Shown,
    scores::{Applied, Delta},
    service::Leaderboards,
    store::{FactRow, Inserted, NewFact, VoidTarget},
};

/// How far ahead of the server's clock a fact may say it happened.
pub const MAX_AHEAD: chrono::Duration = chrono::Duration::minutes(5);

/// A SubmitScore request, checked.
#[derive(Debug, Clone)]
pub struct Submit {
    /// The board.
    pub board: Board,
    /// Whose score (`None`: the caller's).
    pub member: Option<String>,
    /// The value.
    pub score: f64,
    /// The subscore.
    pub subscore: f64,
    /// The caller's id of the fact.
    pub event_id: String,
    /// When it happened (`None`: now).
    pub occurred_at: Option<DateTime<Utc>>,
}

/// What SubmitScore answers.
#[derive(Debug, Clone)]
pub struct Submitted {
    /// The period it counts in.
    pub period: String,
    /// Whether this call stored it.
    pub created: bool,
    /// The member's place after it, when it could be read.
    pub entry: Option<Shown>,
}

/// The writes.
#[derive(Clone)]
pub struct Writes {
    boards: Leaderboards,
    notices: Arc<dyn Notices>,
}

impl Writes {
    /// Writes beside the reads of `boards`, announcing changes on `notices`.
    pub fn new(boards: Leaderboards, notices: Arc<dyn Notices>) -> Self {
        Self { boards, notices }
    }

    /// The reads.
    pub fn boards(&self) -> &Leaderboards {
        &self.boards
    }

    fn now(&self) -> DateTime<Utc> {
        self.boards.reader().now()
    }

    /// Defines a `board:` board.
    pub async fn create(
        &self,
        caller: &Caller,
        mut def: Definition,
    ) -> Result<(Arc<Definition>, bool), LeaderboardError> {
        match caller.role {
            Role::Admin => {}
            Role::EmployerAdmin => {
                let own = caller.employer_id.clone();
                match (&def.employer_id, &own) {
                    (None, Some(_)) => def.employer_id = own,
                    (Some(e), Some(o)) if e == o => {}
                    _ => {
                        return Err(LeaderboardError::PermissionDenied {
                            reason: "NOT_YOUR_EMPLOYER",
                            message: "employer admins define boards of their own employer only"
                                .into(),
                        });
                    }
                }
            }
            _ => {
                return Err(LeaderboardError::PermissionDenied {
                    reason: "ADMIN_ONLY",
                    message: "only admins and employer admins define boards".into(),
                });
            }
        }
        let definitions = self.boards.reader().definitions();
        let (stored, created) = definitions
            .create(&def, &caller.user_id, self.now())
            .await
            .context("store the board")?;
        if !created && !stored.same_as(&def) {
            return Err(LeaderboardError::Conflict {
                reason: "BOARD_EXISTS",
                message: format!("{} is already defined differently", def.board),
            });
        }
        Ok((stored, created))
    }

    /// Records one score on a `board:` board.
    pub async fn submit(&self, caller: &Caller, s: Submit) -> Result<Submitted, LeaderboardError> {
        let def = self.boards.definition(caller, &s.board).await?;
        if !def.is_own() {
            return Err(LeaderboardError::NotSubmittable { board: s.board.to_string() });
        }
        let member = s.member.clone().unwrap_or_else(|| caller.user_id.clone());
        let allowed = caller.is_admin()
            || (caller.role == Role::EmployerAdmin
                && def.employer_id.is_some()
                && def.employer_id == caller.employer_id)
            || (member == caller.user_id && def.members_submit && caller.role != Role::Ingest);
        if !allowed {
            return Err(LeaderboardError::PermissionDenied {
                reason: "SUBMIT_NOT_ALLOWED",
                message: if member == caller.user_id {
                    format!("members do not submit their own scores to {}", s.board)
                } else {
                    format!(
                        "only admins and the board's employer admins submit for others on {}",
                        s.board
                    )
                },
            });
        }
        let now = self.now();
        let occurred = s.occurred_at.unwrap_or(now);
        if occurred > now + MAX_AHEAD {
            return Err(FieldViolation::new(
                "occurred_at",
                "must not be more than 5 minutes ahead",
            )
            .into());
        }
        let period = def.schedule.period_at(occurred);
        if self.boards.settled(&period, now) {
            return Err(LeaderboardError::PeriodClosed {
                board: s.board.to_string(),
                period: period.id,
            });
        }
        let fact = NewFact {
            board: s.board.to_string(),
            period: period.id.clone(),
            period_start: period.start,
            period_end: period.end,
            member: member.clone(),
            event_id: s.event_id.clone(),
            score: s.score,
            subscore: s.subscore,
            occurred_at: occurred,
        };
        let store = self.boards.reader().definitions().store();
        let (stored, created) = match store.insert_fact(&fact).await.context("store the fact")? {
            Inserted::Created(f) => (f, true),
            Inserted::Existing(f) => {
                let same = f.member == member
                    && f.score == s.score
                    && f.subscore == s.subscore
                    && s.occurred_at
                        .is_none_or(|t| t.timestamp_micros() == f.occurred_at.timestamp_micros());
                if !same {
                    return Err(LeaderboardError::Conflict {
                        reason: "EVENT_ID_CONFLICT",
                        message: format!(
                            "event_id {} was already used on {} for another score",
                            s.event_id, s.board
                        ),
                    });
                }
                (f, false)
            }
            Inserted::PeriodClosed => {
                return Err(LeaderboardError::PeriodClosed {
                    board: s.board.to_string(),
                    period: period.id,
                });
            }
        };
        let stored_period = def.schedule.period(&stored.period).unwrap_or_else(|| period.clone());
        let target = Target::new(&def, stored_period);
        let applied =
            apply_facts(&self.boards, &self.notices, &def, std::slice::from_ref(&stored)).await;
        // A store that failed the apply is not asked again: the fact is stored, the relay
        // applies it, and the caller is answered without waiting on the store twice.
        let read =
            if applied { self.boards.reader().around(&target, &member, 0).await } else { Ok(None) };
        let entry = match read {
            Ok(Some(around)) => {
                let shown = self
                    .boards
                    .privacy()
                    .show(caller, vec![around.me])
                    .await
                    .context("apply privacy")?;
                shown.into_iter().next()
            }
            Ok(None) => None,
            Err(err) => {
                tracing::warn!(
                    error = format!("{:#}", anyhow::Error::new(err)),
                    "read the member after a score"
                );
                None
            }
        };
        Ok(Submitted { period: stored.period, created, entry })
    }

    /// Voids a member's entry or one fact on `board`; whether this call made the void, and
    /// the periods recounted.
    pub async fn void(
        &self,
        caller: &Caller,
        board: &Board,
        member: Option<String>,
        event_id: Option<String>,
        reason: &str,
    ) -> Result<(bool, Vec<String>), LeaderboardError> {
        if !caller.is_admin() {
            return Err(LeaderboardError::PermissionDenied {
                reason: "ADMIN_ONLY",
                message: "only admins void entries".into(),
            });
        }
        let def = self.boards.definition(caller, board).await?;
        let store = self.boards.reader().definitions().store();
        let (target, periods) = match (member, event_id) {
            (Some(m), None) => {
                let periods = if def.is_own() {
                    store.open_periods_of(board.as_str()).await.context("read open periods")?
                } else {
                    vec![ALL.to_string()]
                };
                (VoidTarget::Member(m), periods)
            }
            (None, Some(e)) if def.is_own() => {
                let fact = store
                    .fact_by_event(board.as_str(), &e)
                    .await
                    .context("find the fact")?
                    .ok_or_else(|| LeaderboardError::EventNotOnBoard {
                        board: board.to_string(),
                        event_id: e.clone(),
                    })?;
                (VoidTarget::Event(fact.fact_id), vec![fact.period])
            }
            (None, Some(e)) => (VoidTarget::Event(e), vec![ALL.to_string()]),
            _ => {
                return Err(FieldViolation::new(
                    "member",
                    "give exactly one of member and event_id",
                )
                .into());
            }
        };
        let created = store
            .void(board.as_str(), &target, reason, &caller.user_id, self.now())
            .await
            .context("record the void")?;
        let mut recounted = Vec::new();
        for id in periods {
            let Some(period) = def.schedule.period(&id) else { continue };
            if def.is_own()
                && store.period_row(board.as_str(), &id).await.context("read the period")?.is_some()
            {
                continue;
            }
            self.recount(&Target::new(&def, period)).await?;
            recounted.push(id);
        }
        if let Err(err) = self.notices.publish(&[board.to_string()]).await {
            tracing::warn!(error = format!("{err:#}"), "publish board change notice");
        }
        Ok((created, recounted))
    }

    /// Rebuilds `target` from its owner (after a void).
    async fn recount(&self, target: &Target) -> Result<(), LeaderboardError> {
        let reader = self.boards.reader();
        for _ in 0..2 {
            reader.scores().forget(&target.key()).await.context("mark the board for recount")?;
            if target.board.kind() == OWN_KIND {
                reader.ready(target).await?;
            } else {
                reader.rebuilder().ensure_ready(target).await?;
            }
        }
        Ok(())
    }

    /// The caller's privacy: hidden or not, and their pseudonym.
    pub async fn privacy(&self, caller: &Caller) -> Result<(bool, String), LeaderboardError> {
        let privacy = self.boards.privacy();
        let hidden = privacy.is_hidden(&caller.user_id).await.context("read privacy")?;
        Ok((hidden, privacy.pseudonym(&caller.user_id)))
    }

    /// Sets the caller's privacy.
    pub async fn set_privacy(
        &self,
        caller: &Caller,
        hide: bool,
    ) -> Result<(bool, String), LeaderboardError> {
        let privacy = self.boards.privacy();
        privacy.set_hidden(&caller.user_id, hide, self.now()).await.context("store privacy")?;
        Ok((hide, privacy.pseudonym(&caller.user_id)))
    }

    /// Which employer `caller` may manage settings of: `requested`, or their own.
    fn employer_of(caller: &Caller, requested: &str) -> Result<String, LeaderboardError> {
        let employer = if requested.is_empty() {
            caller.employer_id.clone().ok_or_else(|| {
                LeaderboardError::from(FieldViolation::new(
                    "employer_id",
                    "is required for a caller without an employer",
                ))
            })?
        } else if is_valid_employer_id(requested) {
            requested.to_string()
        } else {
            return Err(FieldViolation::new(
                "employer_id",
                "must be 1-64 letters, digits, '-', '_' or '.'",
            )
            .into());
        };
        let allowed = caller.is_admin()
            || (caller.role == Role::EmployerAdmin
                && caller.employer_id.as_deref() == Some(&employer));
        if !allowed {
            return Err(LeaderboardError::PermissionDenied {
                reason: "NOT_YOUR_EMPLOYER",
                message: "only admins and the employer's admins manage its settings".into(),
            });
        }
        Ok(employer)
    }

    /// An employer's minimum members.
    pub async fn min_members(
        &self,
        caller: &Caller,
        employer: &str,
    ) -> Result<(String, u32), LeaderboardError> {
        let employer = Self::employer_of(caller, employer)?;
        let n = self.boards.privacy().min_members(&employer).await.context("read settings")?;
        Ok((employer, n))
    }

    /// Sets an employer's minimum members.
    pub async fn set_min_members(
        &self,
        caller: &Caller,
        employer: &str,
        n: u32,
    ) -> Result<(String, u32), LeaderboardError> {
        let employer = Self::employer_of(caller, employer)?;
        self.boards
            .privacy()
            .set_min_members(&employer, n, self.now())
            .await
            .context("store settings")?;
        Ok((employer, n))
    }
}

/// Applies stored facts of one `board:` board to the score store and marks them applied;
/// failures are logged and left to the relay. Facts whose period board is missing start its
/// rebuild (which reads them from SQL).
pub async fn apply_facts(
    boards: &Leaderboards,
    notices: &Arc<dyn Notices>,
    def: &Definition,
    facts: &[FactRow],
) -> bool {
    let reader = boards.reader();
    let deltas: Vec<Delta> = facts
        .iter()
        .map(|f| {
            let e = owned_entry(f);
            Delta {
                board: store_key(def.board.as_str(), &f.period),
                member: e.member,
                delta: e.value,
                event_id: e.event_id,
                subscore: e.subscore,
                version: e.version,
                shape: def.shape,
            }
        })
        .collect();
    let outcomes = match reader.scores().apply_many(&deltas).await {
        Ok(o) => o,
        Err(err) => {
            tracing::warn!(board = %def.board, error = format!("{err:#}"), "apply scores; the relay retries");
            return false;
        }
    };
    let mut missing: Vec<String> = Vec::new();
    for (f, outcome) in facts.iter().zip(&outcomes) {
        if matches!(outcome, Applied::Missing | Applied::Stale) && !missing.contains(&f.period) {
            missing.push(f.period.clone());
        }
    }
    let now = reader.now();
    for id in missing {
        let period = def.schedule.period(&id).unwrap_or(Period { id, start: None, end: None });
        // A period closed meanwhile is read from its archive: its board is not built again.
        if boards.settled(&period, now)
            && let Ok(Some(_)) =
                reader.definitions().store().period_row(def.board.as_str(), &period.id).await
        {
            continue;
        }
        let target = Target::new(def, period);
        if let Err(err) = reader.scores().forget(&target.key()).await {
            tracing::warn!(error = format!("{err:#}"), "mark board missing");
        }
        reader.rebuilder().spawn_ensure_ready(target);
    }
    let ids: Vec<String> = facts.iter().map(|f| f.fact_id.clone()).collect();
    if let Err(err) = reader.definitions().store().mark_applied(&ids).await {
        tracing::warn!(error = format!("{err:#}"), "mark facts applied; the relay re-applies them");
    }
    if let Err(err) = notices.publish(&[def.board.to_string()]).await {
        tracing::warn!(error = format!("{err:#}"), "publish board change notice");
    }
    true
}
