//! The challenge use cases: access rules, then the store. Inputs and outputs are domain types;
//! `grpc.rs` converts from and to the wire.

use ewpm_kit::{auth::Caller, clock::SharedClock, paging};
use serde::{Deserialize, Serialize};

use crate::{
    domain::{self, Challenge, ChallengeId, ChallengePatch, EmployerId, NewChallenge, State},
    error::ChallengeError,
    store::{ChallengeStore, Idempotency, Inserted},
};

/// One page of a listing and the token of the next.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The challenges of this page.
    pub items: Vec<Challenge>,
    /// Token of the next page; empty on the last.
    pub next_page_token: String,
}

#[derive(Serialize, Deserialize)]
struct ListCursor {
    after: uuid::Uuid,
}

#[derive(Serialize, Deserialize)]
struct ActiveCursor {
    end: chrono::DateTime<chrono::Utc>,
    after: uuid::Uuid,
}

/// The challenge service's operations.
#[derive(Clone)]
pub struct Challenges {
    store: ChallengeStore,
    clock: SharedClock,
}

impl Challenges {
    /// Operations over `store`, telling time by `clock`.
    pub fn new(store: ChallengeStore, clock: SharedClock) -> Self {
        Self { store, clock }
    }

    /// The current time by this service's clock.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }

    /// Creates a challenge for `caller`.
    pub async fn create(
        &self,
        caller: &Caller,
        mut new: NewChallenge,
        idempotency: Option<Idempotency>,
    ) -> Result<Challenge, ChallengeError> {
        new.employer = domain::scope_for_create(caller, new.employer.take())?;
        let inserted = self
            .store
            .insert(ChallengeId::mint(), new, &caller.user_id, self.clock.now(), idempotency)
            .await?;
        match inserted {
            Inserted::Created(c) => {
                tracing::info!(challenge_id = %c.id, employer = ?c.employer.as_ref().map(EmployerId::as_str), "challenge created");
                Ok(c)
            }
            Inserted::Replayed(c) => Ok(c),
            Inserted::KeyReused => Err(ChallengeError::IdempotencyKeyReused),
        }
    }

    /// One challenge the caller may read.
    pub async fn get(&self, caller: &Caller, id: ChallengeId) -> Result<Challenge, ChallengeError> {
        match self.store.get(id).await? {
            Some(c) if domain::can_read(caller, c.employer.as_ref()) => Ok(c),
            _ => Err(ChallengeError::NotFound { id: id.to_string() }),
        }
    }

    /// Applies `patch` to a challenge the caller manages.
    pub async fn update(
        &self,
        caller: &Caller,
        id: ChallengeId,
        patch: ChallengePatch,
    ) -> Result<Challenge, ChallengeError> {
        let current = self.get(caller, id).await?;
        domain::can_manage(caller, current.employer.as_ref())?;
        if patch.employer.is_some() && !caller.is_admin() {
            return Err(ChallengeError::Forbidden(
                "only admins move a challenge to another employer",
            ));
        }
        let updated = current.patched(patch, &caller.user_id, self.clock.now())?;
        self.store.update(&updated).await?;
        Ok(updated)
    }

    /// Challenges the caller may see, filtered, one page.
    pub async fn list(
        &self,
        caller: &Caller,
        state: Option<State>,
        employer: Option<EmployerId>,
        page_size: u32,
        page_token: &str,
    ) -> Result<Page, ChallengeError> {
        let scope = domain::scope_for_list(caller, employer)?;
        let cursor = paging::decode_token::<ListCursor>(page_token)?.map(|c| c.after);
        let mut items =
            self.store.list(&scope, state, self.clock.now(), cursor, page_size + 1).await?;
        let next_page_token = next_token(&mut items, page_size, |last| {
            paging::encode_token(&ListCursor { after: last.id.0 })
        });
        Ok(Page { items, next_page_token })
    }

    /// Challenges active now for `user_id` (empty: the caller), soonest ending first.
    pub async fn list_active(
        &self,
        caller: &Caller,
        user_id: &str,
        employer: Option<EmployerId>,
        page_size: u32,
        page_token: &str,
    ) -> Result<Page, ChallengeError> {
        let scope = domain::scope_for_user(caller, user_id, employer)?;
        let cursor = paging::decode_token::<ActiveCursor>(page_token)?.map(|c| (c.end, c.after));
        let mut items =
            self.store.list_active(&scope, self.clock.now(), cursor, page_size + 1).await?;
        let next_page_token = next_token(&mut items, page_size, |last| {
            paging::encode_token(&ActiveCursor { end: last.window.end(), after: last.id.0 })
        });
        Ok(Page { items, next_page_token })
    }
}

/// Trims a page fetched with one extra row and returns the next token (empty on the last page).
fn next_token(
    items: &mut Vec<Challenge>,
    page_size: u32,
    token: impl Fn(&Challenge) -> String,
) -> String {
    if items.len() > page_size as usize {
        items.truncate(page_size as usize);
        items.last().map(token).unwrap_or_default()
    } else {
        String::new()
    }
}
