//! Who may read a board, learned from the board's owner and cached.
//!
//! Every read door (GetLeaderboard, GetRank, WatchLeaderboard) asks [`Access::check`] before
//! it touches the score store, so a board the caller may not see, or one that does not exist,
//! is answered NOT_FOUND (the same answer for both: no existence leak) and leaves no key
//! behind: nothing is rebuilt or marked for a name its owner does not know.
//!
//! - Challenge boards (`challenge:<id>`): the challenge service decides, as it does for
//!   `GetChallenge` — admins see every board, everyone else the open challenges (no employer)
//!   and those of their own employer. [`ChallengeAudience`] asks it with the service's own
//!   token (`service:leaderboard`, admin) so one cached answer serves every caller.
//! - A kind with no registered audience (any made-up kind) is NOT_FOUND for every caller, admins included: nothing can say such a
//!   board exists, so reading it would create keys for any name. The applier still keeps
//!   such boards from their deltas; they become readable when their owner registers.
//! - Answers are cached for `audience_cache_secs`; unknown boards for at most
//!   [`NEGATIVE_TTL`], so a challenge created a moment ago is readable soon. Both caches are
//!   capped at `audience_cache_entries`, so random names cannot grow them. When the owner is
//!   unreachable, a known board's last answer is served (logged); an unknown one answers
//!   UNAVAILABLE.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use async_trait::async_trait;
use ewpm_kit::{
    auth::{Caller, ServiceToken, TokenKeys},
    cache::TtlCache,
};
use ewpm_proto::challenge::v1::{
    GetChallengeRequest, challenge_service_client::ChallengeServiceClient,
};
use tonic::{Code, Request, transport::Channel};

use crate::{domain::Board, error::LeaderboardError, rebuild::Owners};

/// Longest "no such board" is remembered.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(2);
/// How long one look-up at the owner may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Who may read a board.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    /// Every authenticated caller (an open challenge).
    Everyone,
    /// Admins and members of this employer.
    Employer(String),
}

impl Audience {
    /// Whether `caller` is in it.
    pub fn admits(&self, caller: &Caller) -> bool {
        match self {
            _ if caller.is_admin() => true,
            Audience::Everyone => true,
            Audience::Employer(e) => caller.employer_id.as_deref() == Some(e.as_str()),
        }
    }
}

/// The service that says who may read boards of one kind.
#[async_trait]
pub trait BoardAudience: Send + Sync + 'static {
    /// Who may read `board`; `None` when its owner knows no such board.
    async fn audience(&self, board: &Board) -> anyhow::Result<Option<Audience>>;
}

/// Challenge boards: the challenge's employer, from the challenge service's `GetChallenge`.
pub struct ChallengeAudience {
    client: ChallengeServiceClient<Channel>,
    token: ServiceToken,
}

impl ChallengeAudience {
    /// Asks the challenge service at `uri` (connected lazily, so it need not be up yet).
    pub fn new(uri: &str, keys: TokenKeys) -> anyhow::Result<Self> {
        let channel = ewpm_kit::client::channel(uri).context("challenge service")?;
        Ok(Self {
            client: ChallengeServiceClient::new(channel),
            token: ServiceToken::new(keys, "leaderboard"),
        })
    }
}

#[async_trait]
impl BoardAudience for ChallengeAudience {
    async fn audience(&self, board: &Board) -> anyhow::Result<Option<Audience>> {
        // Challenge boards are named by the canonical id (lowercase, hyphenated), as every
        // producer writes it; any other spelling (upper case, no hyphens) would be another key
        // for the same challenge, so it names no board (and costs no call).
        if uuid::Uuid::try_parse(board.id()).map(|id| id.to_string()).ok().as_deref()
            != Some(board.id())
        {
            return Ok(None);
        }
        let mut request =
            self.token.authorize(Request::new(GetChallengeRequest { id: board.id().to_string() }));
        request.set_timeout(LOOKUP_TIMEOUT);
        match self.client.clone().get_challenge(request).await {
            Ok(response) => {
                let c =
                    response.into_inner().challenge.context("GetChallenge without a challenge")?;
                Ok(Some(if c.employer_id.is_empty() {
                    Audience::Everyone
                } else {
                    Audience::Employer(c.employer_id)
                }))
            }
            Err(status) if matches!(status.code(), Code::NotFound | Code::InvalidArgument) => {
                Ok(None)
            }
            Err(status) => Err(anyhow::Error::new(status).context("GetChallenge")),
        }
    }
}

/// The read check of every door, with its caches.
#[derive(Clone)]
pub struct Access {
    owners: Owners,
    known: Arc<TtlCache<String, Audience>>,
    unknown: Arc<TtlCache<String, ()>>,
    /// The look-up in flight per board (see `audience`).
    lookup: Arc<Flights>,
}

/// Forgets a board's look-up when its first caller is done (the answer is cached by then).
struct Landed<'a> {
    flights: &'a Flights,
    key: String,
}

/// The look-up in flight per board.
type Flights = std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>;

impl Drop for Landed<'_> {
    fn drop(&mut self) {
        self.flights.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.key);
    }
}

impl Access {
    /// Checks against the audiences registered in `owners`, remembering answers for `ttl`
    /// (unknown boards for at most [`NEGATIVE_TTL`]), at most `capacity` of each.
    pub fn new(owners: Owners, ttl: Duration, capacity: usize) -> Self {
        Self {
            owners,
            known: Arc::new(TtlCache::with_capacity(ttl, capacity)),
            unknown: Arc::new(TtlCache::with_capacity(ttl.min(NEGATIVE_TTL), capacity)),
            lookup: Arc::default(),
        }
    }

    /// Boards remembered (known and unknown), for tests and metrics.
    pub fn cached(&self) -> usize {
        self.known.len() + self.unknown.len()
    }

    /// The board's audience when `board` exists and `caller` may read it; NOT_FOUND
    /// otherwise (both alike).
    pub async fn check(
        &self,
        caller: &Caller,
        board: &Board,
    ) -> Result<Audience, LeaderboardError> {
        let not_found = || LeaderboardError::BoardNotFound { board: board.to_string() };
        let audience = self.audience(board).await?.ok_or_else(not_found)?;
        if audience.admits(caller) { Ok(audience) } else { Err(not_found()) }
    }

    async fn audience(&self, board: &Board) -> Result<Option<Audience>, LeaderboardError> {
        let Some(source) = self.owners.audience(board.kind()) else { return Ok(None) };
        let key = board.to_string();
        if let Some(audience) = self.known.get(&key) {
            return Ok(Some(audience));
        }
        if self.unknown.get(&key).is_some() {
            return Ok(None);
        }
        // One look-up per board at a time: when many callers miss at once (ten thousand
        // watchers opening a board), the first asks the owner and the rest find its answer
        // cached.
        let turn = {
            let mut flights = self.lookup.lock().unwrap_or_else(|p| p.into_inner());
            flights.entry(key.clone()).or_default().clone()
        };
        let _turn = turn.lock().await;
        let _done = Landed { flights: &self.lookup, key: key.clone() };
        if let Some(audience) = self.known.get(&key) {
            return Ok(Some(audience));
        }
        if self.unknown.get(&key).is_some() {
            return Ok(None);
        }
        match source.audience(board).await {
            Ok(Some(audience)) => {
                self.known.put(key, audience.clone());
                Ok(Some(audience))
            }
            Ok(None) => {
                self.known.remove(&key);
                self.unknown.put(key, ());
                Ok(None)
            }
            Err(err) => match self.known.get_stale(&key) {
                Some(audience) => {
                    tracing::warn!(%board, error = format!("{err:#}"), "board owner unreachable; serving its last known audience");
                    Ok(Some(audience))
                }
                None => {
                    tracing::warn!(%board, error = format!("{err:#}"), "board owner unreachable");
                    Err(LeaderboardError::OwnerUnavailable { board: key })
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use ewpm_kit::auth::Role;

    use super::*;

    fn caller(role: Role, employer: Option<&str>) -> Caller {
        Caller { user_id: "u1".into(), employer_id: employer.map(str::to_string), role }
    }

    #[test]
    fn an_employer_board_admits_admins_and_that_employers_people_only() {
        let acme = Audience::Employer("acme".into());
        let admits = |c: &Caller| (acme.admits(c), Audience::Everyone.admits(c));
        assert_eq!(admits(&caller(Role::Admin, None)), (true, true));
        assert_eq!(admits(&caller(Role::Employee, Some("acme"))), (true, true));
        assert_eq!(admits(&caller(Role::EmployerAdmin, Some("acme"))), (true, true));
        assert_eq!(admits(&caller(Role::Employee, Some("globex"))), (false, true));
        assert_eq!(admits(&caller(Role::EmployerAdmin, Some("globex"))), (false, true));
        assert_eq!(admits(&caller(Role::Employee, None)), (false, true));
    }
}
