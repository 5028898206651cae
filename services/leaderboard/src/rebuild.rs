//! Rebuilding a missing board from its owner.
//!
//! A board's facts live with its owner (challenge boards: the progress service's SQL); the
//! score store is a cache of their sums that can be lost. A rebuild takes the board's lease,
//! streams the owner's entries (each with its event id) into the aside copy, and swaps it in
//! (see [`crate::scores`]); deltas that arrive meanwhile land in the aside copy, deduped by
//! event id, so the result is exact.
//!
//! - One rebuild per board per process: concurrent callers share one spawned rebuild (a
//!   caller that goes away does not cancel it).
//! - Across processes the lease decides: a process that cannot take it polls until the board
//!   is ready, and gives up after [`RebuildConfig::wait`] ([`RebuildError::Timeout`]); if the
//!   holder dies, its lease expires and the next poll takes over.
//! - Owners are registered per board kind ([`Owners`]). A kind with no owner (a made-up
//!   kind) has no facts to reload: its rebuild loads nothing, so a
//!   missing board of that kind comes back empty. The applier re-applies the deltas that found
//!   such a board missing once it is ready (see [`crate::applier`]), so only a *loss* of an
//!   owner-less board loses scores.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use async_trait::async_trait;
use ewpm_kit::auth::{ServiceToken, TokenKeys};
use ewpm_proto::progress::v1::{
    GetChallengeTotalsRequest, progress_service_client::ProgressServiceClient,
};
use futures::{
    FutureExt, StreamExt,
    future::{BoxFuture, Shared},
    stream::BoxStream,
};
use tonic::{Code, transport::Channel};

use crate::{
    access::BoardAudience,
    definition::Target,
    domain::Board,
    scores::{OwnedEntry, ScoreStore},
};

/// Chunks of a board's facts, as its owner streams them.
pub type EntryStream = BoxStream<'static, anyhow::Result<Vec<OwnedEntry>>>;

/// The service that holds the facts of one kind of board.
#[async_trait]
pub trait BoardOwner: Send + Sync + 'static {
    /// Every fact of `board`'s `period` committed so far, in chunks (void ones may be
    /// included: the store skips them). Read after the rebuild took its lease, so every fact
    /// whose delta found the board missing is included.
    async fn entries(&self, board: &Board, period: &str) -> anyhow::Result<EntryStream>;
}

/// Where a board's voids are kept (see [`crate::scores::void_member`]).
#[async_trait]
pub trait VoidSource: Send + Sync + 'static {
    /// Every void of `board`, as the score store keeps them.
    async fn voids(&self, board: &Board) -> anyhow::Result<Vec<String>>;
}

/// The owners of each board kind: who holds its facts (for rebuilds) and who says who may
/// read it (see [`crate::access`]).
#[derive(Clone, Default)]
pub struct Owners {
    facts: HashMap<String, Arc<dyn BoardOwner>>,
    audiences: HashMap<String, Arc<dyn BoardAudience>>,
    voids: Option<Arc<dyn VoidSource>>,
}

impl Owners {
    /// No owners: every board rebuilds empty, and no board is readable.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `owner` for the facts of boards of `kind` (`challenge`).
    pub fn with(mut self, kind: &str, owner: Arc<dyn BoardOwner>) -> Self {
        self.facts.insert(kind.to_string(), owner);
        self
    }

    /// Registers `audience` as what decides who may read boards of `kind`.
    pub fn with_audience(mut self, kind: &str, audience: Arc<dyn BoardAudience>) -> Self {
        self.audiences.insert(kind.to_string(), audience);
        self
    }

    /// Registers where every board's voids are kept.
    pub fn with_voids(mut self, voids: Arc<dyn VoidSource>) -> Self {
        self.voids = Some(voids);
        self
    }

    /// The voids of `board` (none without a registered source).
    pub async fn voids(&self, board: &Board) -> anyhow::Result<Vec<String>> {
        match &self.voids {
            Some(source) => source.voids(board).await,
            None => Ok(Vec::new()),
        }
    }

    /// The owner of the facts of `kind`, if one is registered.
    pub fn get(&self, kind: &str) -> Option<&Arc<dyn BoardOwner>> {
        self.facts.get(kind)
    }

    /// What decides who may read boards of `kind`, if one is registered.
    pub fn audience(&self, kind: &str) -> Option<&Arc<dyn BoardAudience>> {
        self.audiences.get(kind)
    }
}

/// Challenge boards (`challenge:<uuid>`): the progress service's per-member entries, through
/// `GetChallengeTotals` with `include_entries`, as `service:leaderboard` with the admin role.
pub struct ChallengeOwner {
    client: ProgressServiceClient<Channel>,
    token: ServiceToken,
}

impl ChallengeOwner {
    /// An owner calling the progress service at `uri` (`http://host:port`); the connection is
    /// made on first use, so the progress service need not be up yet.
    pub fn new(uri: &str, keys: TokenKeys) -> anyhow::Result<Self> {
        let channel = ewpm_kit::client::channel(uri).context("progress service")?;
        Ok(Self {
            client: ProgressServiceClient::new(channel),
            token: ServiceToken::new(keys, "leaderboard"),
        })
    }
}

#[async_trait]
impl BoardOwner for ChallengeOwner {
    async fn entries(&self, board: &Board, _period: &str) -> anyhow::Result<EntryStream> {
        // Challenge ids are UUIDs; any other id names no challenge, so the board is empty.
        if uuid::Uuid::parse_str(board.id()).is_err() {
            return Ok(futures::stream::empty().boxed());
        }
        let request = self.token.authorize(tonic::Request::new(GetChallengeTotalsRequest {
            challenge_id: board.id().to_string(),
            include_entries: true,
        }));
        let stream = match self.client.clone().get_challenge_totals(request).await {
            Ok(response) => response.into_inner(),
            // No such challenge: nothing was ever committed for it.
            Err(status) if status.code() == Code::NotFound => {
                return Ok(futures::stream::empty().boxed());
            }
            Err(status) => return Err(anyhow::Error::new(status).context("GetChallengeTotals")),
        };
        Ok(stream
            .map(|chunk| {
                let chunk = chunk.context("GetChallengeTotals stream")?;
                let mut out = Vec::new();
                for total in chunk.totals {
                    // Without its entries a total cannot be deduped against deltas.
                    anyhow::ensure!(
                        i64::try_from(total.entries.len()) == Ok(total.entry_count),
                        "GetChallengeTotals listed {} of {} entries of {}",
                        total.entries.len(),
                        total.entry_count,
                        total.user_id
                    );
                    out.extend(total.entries.into_iter().map(|e| OwnedEntry {
                        member: total.user_id.clone(),
                        event_id: e.entry_id,
                        value: e.value,
                        ..OwnedEntry::default()
                    }));
                }
                Ok(out)
            })
            .boxed())
    }
}

/// Why a board could not be made ready.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RebuildError {
    /// Another process holds the rebuild lease and the board was not ready in time, or this
    /// process's rebuild is still running.
    #[error("board {0} is being rebuilt and was not ready in time")]
    Timeout(String),
    /// The store or the owner failed.
    #[error("rebuild of board {board} failed")]
    Failed {
        /// The board.
        board: String,
        /// The cause, with its chain.
        #[source]
        cause: Arc<anyhow::Error>,
    },
}

impl RebuildError {
    fn failed(board: &Board, cause: anyhow::Error) -> Self {
        Self::Failed { board: board.to_string(), cause: Arc::new(cause) }
    }
}

/// Timing of rebuilds.
#[derive(Debug, Clone, Copy)]
pub struct RebuildConfig {
    /// Lease of one rebuild, extended with each loaded chunk; a holder that dies frees the
    /// board after this long. Also the longest wait for the owner's next chunk.
    pub lease: Duration,
    /// Longest a caller waits for a board to become ready.
    pub wait: Duration,
    /// Gap between readiness checks while another process rebuilds.
    pub poll: Duration,
}

impl Default for RebuildConfig {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(30),
            wait: Duration::from_secs(10),
            poll: Duration::from_millis(100),
        }
    }
}

type Flight = Shared<BoxFuture<'static, Result<(), RebuildError>>>;

/// Makes boards ready, rebuilding missing ones (single-flight per board in this process).
#[derive(Clone)]
pub struct Rebuilder {
    inner: Arc<Inner>,
}

struct Inner {
    scores: Arc<dyn ScoreStore>,
    owners: Owners,
    config: RebuildConfig,
    inflight: Mutex<HashMap<String, Flight>>,
}

impl Rebuilder {
    /// A rebuilder of boards in `scores` from `owners`.
    pub fn new(scores: Arc<dyn ScoreStore>, owners: Owners, config: RebuildConfig) -> Self {
        Self { inner: Arc::new(Inner { scores, owners, config, inflight: Mutex::default() }) }
    }

    /// Whether boards of `kind` have an owner to rebuild from.
    pub fn has_owner(&self, kind: &str) -> bool {
        self.inner.owners.get(kind).is_some()
    }

    /// Returns once `target` is ready, rebuilding it first if it is missing.
    pub async fn ensure_ready(&self, target: &Target) -> Result<(), RebuildError> {
        let board = &target.board;
        let ready = self
            .inner
            .scores
            .exists(&target.key())
            .await
            .map_err(|e| RebuildError::failed(board, e))?;
        if ready {
            return Ok(());
        }
        let flight = self.flight(target);
        tokio::time::timeout(self.inner.config.wait, flight)
            .await
            .unwrap_or_else(|_| Err(RebuildError::Timeout(board.to_string())))
    }

    /// Starts making `target` ready in the background (the applier's path: it must not
    /// wait).
    pub fn spawn_ensure_ready(&self, target: Target) {
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(err) = this.ensure_ready(&target).await {
                let board = target.key();
                tracing::warn!(%board, error = format!("{:#}", anyhow::Error::new(err)), "board rebuild failed");
            }
        });
    }

    /// The rebuild of `target` in flight in this process, started if there is none.
    fn flight(&self, target: &Target) -> Flight {
        let key = target.key();
        let mut inflight = self.inner.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(flight) = inflight.get(&key) {
            return flight.clone();
        }
        let inner = self.inner.clone();
        let t = target.clone();
        // Spawned, so that callers giving up (a client hanging up) do not abandon a rebuild
        // that holds the lease.
        let handle = tokio::spawn(async move {
            let result = inner.rebuild(&t).await;
            inner.inflight.lock().unwrap_or_else(|p| p.into_inner()).remove(&t.key());
            result
        });
        let b = target.board.clone();
        let flight =
            async move { handle.await.unwrap_or_else(|e| Err(RebuildError::failed(&b, e.into()))) }
                .boxed()
                .shared();
        inflight.insert(key, flight.clone());
        flight
    }
}

impl Inner {
    async fn rebuild(&self, target: &Target) -> Result<(), RebuildError> {
        let board = &target.key();
        let deadline = Instant::now() + self.config.wait;
        let failed = |e| RebuildError::failed(&target.board, e);
        loop {
            let token = uuid::Uuid::new_v4().to_string();
            // Read before the lease: a void made after this read is followed by its own
            // rebuild (see VoidEntry).
            let voids = self.owners.voids(&target.board).await.map_err(failed)?;
            if self
                .scores
                .begin_rebuild(board, &token, self.config.lease, &voids)
                .await
                .map_err(failed)?
            {
                match self.load_and_finish(target, &token).await {
                    Ok(true) => {
                        tracing::info!(%board, "board rebuilt");
                        return Ok(());
                    }
                    // The lease expired under us (a stalled store); whoever holds it now
                    // finishes, or the next round does.
                    Ok(false) => tracing::warn!(%board, "rebuild lost its lease"),
                    Err(err) => {
                        if let Err(e) = self.scores.abort_rebuild(board, &token).await {
                            tracing::warn!(%board, error = format!("{e:#}"), "release rebuild lease");
                        }
                        return Err(failed(err));
                    }
                }
            }
            if self.scores.exists(board).await.map_err(failed)? {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(RebuildError::Timeout(board.clone()));
            }
            tokio::time::sleep(self.config.poll).await;
        }
    }

    /// Loads the owner's facts and swaps the board in; `false` when the lease was lost.
    async fn load_and_finish(&self, target: &Target, token: &str) -> anyhow::Result<bool> {
        let lease = self.config.lease;
        let board = &target.key();
        if let Some(owner) = self.owners.get(target.board.kind()) {
            let mut chunks = owner
                .entries(&target.board, &target.period.id)
                .await
                .context("read the owner's entries")?;
            loop {
                let next = tokio::time::timeout(lease, chunks.next())
                    .await
                    .context("the owner stalled longer than the rebuild lease")?;
                let Some(chunk) = next else { break };
                let chunk = chunk.context("read the owner's entries")?;
                if !self.scores.load(board, target.shape, token, &chunk, lease).await? {
                    return Ok(false);
                }
            }
        }
        self.scores.finish_rebuild(board, token).await
    }
}
