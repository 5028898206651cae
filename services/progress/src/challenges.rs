//! Challenge windows, learned from the challenge service over gRPC and cached, so the submit
//! path does not call it per entry.
//!
//! The service calls with its own token (`service:progress`, role admin) so one cached answer
//! serves every user; visibility is then checked here against the caller. A challenge that
//! does not exist is remembered briefly too (a burst of bad ids must not become a burst of
//! calls), but for less time than a found one, so a challenge created a moment ago is seen
//! soon; at most [`NEGATIVE_CAP`] such ids are remembered (random ids must not grow memory).
//!
//! When the challenge service fails transiently (it is down, or PostgreSQL behind it is), the
//! last window fetched is served for up to `stale` past its cache time: intake goes on
//! through an outage of the challenge service's database, since the queue does not need it.
//! A window changes rarely, and what is served stale is logged (once per challenge a minute)
//! and counted (`ewpm_progress_stale_windows_total`). After a failure the service is taken as
//! down for [`DOWN_FOR`]: calls in that time do not wait for it (stale window, or Unavailable
//! at once), and a refresh that has a stale window to fall back on waits at most
//! [`STALE_REFRESH_TIMEOUT`]. NotFound and other answers about the request itself (permission,
//! argument) are not transient and never served stale.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use chrono::TimeDelta;
use ewpm_kit::{auth::ServiceToken, cache::TtlCache, timestamp};
use ewpm_proto::challenge::v1::{
    GetChallengeRequest, challenge_service_client::ChallengeServiceClient,
};
use tonic::{Code, Request, transport::Channel};
use uuid::Uuid;

use crate::{domain::ChallengeWindow, error::ProgressError};

/// How long one look-up may take when there is nothing to fall back on.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a refresh may take when a stale window could be served instead.
const STALE_REFRESH_TIMEOUT: Duration = Duration::from_millis(300);
/// After a transient failure, how long the challenge service is not asked again.
const DOWN_FOR: Duration = Duration::from_secs(1);
/// How long "no such challenge" is remembered.
const NEGATIVE_TTL: Duration = Duration::from_secs(1);
/// Most unknown challenge ids remembered at once.
pub const NEGATIVE_CAP: usize = 10_000;
/// Shortest gap between two warnings about serving one challenge's window stale.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// A window and when it was fetched.
#[derive(Debug, Clone)]
struct Fetched {
    window: ChallengeWindow,
    at: Instant,
}

/// Cached challenge windows.
#[derive(Clone)]
pub struct ChallengeWindows {
    client: ChallengeServiceClient<Channel>,
    token: Arc<ServiceToken>,
    ttl: Duration,
    stale: Duration,
    /// Challenge id → window (kept past its time to live, as a fallback).
    cache: Arc<TtlCache<Uuid, Fetched>>,
    /// Ids the challenge service said do not exist.
    unknown: Arc<Mutex<NegativeCache>>,
    /// Until when the challenge service is taken as down.
    down_until: Arc<Mutex<Option<Instant>>>,
    /// When serving each challenge stale was last logged.
    warned: Arc<Mutex<HashMap<Uuid, Instant>>>,
}

/// Why a fetch failed.
enum FetchError {
    /// Worth serving a stale window for: the service or its dependencies failed.
    Transient(String),
    /// Anything else.
    Other(ProgressError),
}

impl ChallengeWindows {
    /// Windows from the challenge service at `uri` (connected lazily), cached for `ttl`, then
    /// served for up to `stale` more while the challenge service fails.
    pub fn new(
        uri: &str,
        token: Arc<ServiceToken>,
        ttl: Duration,
        stale: Duration,
    ) -> anyhow::Result<Self> {
        let channel = ewpm_kit::client::channel(uri).context("challenge service")?;
        Ok(Self {
            client: ChallengeServiceClient::new(channel),
            token,
            ttl,
            stale,
            cache: Arc::new(TtlCache::new(ttl)),
            unknown: Arc::new(Mutex::new(NegativeCache::new(NEGATIVE_CAP, NEGATIVE_TTL))),
            down_until: Arc::default(),
            warned: Arc::default(),
        })
    }

    /// The window of challenge `id`, or `None` when it does not exist.
    pub async fn get(&self, id: Uuid) -> Result<Option<ChallengeWindow>, ProgressError> {
        if let Some(fetched) = self.cache.get(&id) {
            return Ok(Some(fetched.window));
        }
        let now = Instant::now();
        if lock(&self.unknown).contains(&id, now) {
            return Ok(None);
        }
        // What may still be served if the refresh fails.
        let fallback =
            self.cache.get_stale(&id).filter(|f| now.duration_since(f.at) <= self.ttl + self.stale);
        let down = lock(&self.down_until).is_some_and(|until| now < until);
        let result = if down {
            Err(FetchError::Transient("taken as down after a recent failure".into()))
        } else {
            let timeout = if fallback.is_some() { STALE_REFRESH_TIMEOUT } else { LOOKUP_TIMEOUT };
            self.fetch(id, timeout).await
        };
        match result {
            Ok(Some(window)) => {
                *lock(&self.down_until) = None;
                self.cache.put(id, Fetched { window: window.clone(), at: Instant::now() });
                Ok(Some(window))
            }
            Ok(None) => {
                *lock(&self.down_until) = None;
                self.cache.remove(&id);
                lock(&self.unknown).insert(id, Instant::now());
                Ok(None)
            }
            Err(FetchError::Transient(why)) => {
                if !down {
                    *lock(&self.down_until) = Some(Instant::now() + DOWN_FOR);
                }
                match fallback {
                    Some(fetched) => {
                        self.warn_stale(id, &fetched, &why);
                        metrics::counter!("ewpm_progress_stale_windows_total").increment(1);
                        Ok(Some(fetched.window))
                    }
                    None => Err(ProgressError::Unavailable("the challenge service")),
                }
            }
            Err(FetchError::Other(err)) => Err(err),
        }
    }

    /// Logs serving `fetched` stale, at most once per challenge per [`WARN_EVERY`].
    fn warn_stale(&self, id: Uuid, fetched: &Fetched, why: &str) {
        let now = Instant::now();
        let mut warned = lock(&self.warned);
        if warned.get(&id).is_some_and(|at| now.duration_since(*at) < WARN_EVERY) {
            return;
        }
        // Bounded by the cache's challenges; forget old warnings as it grows.
        if warned.len() >= NEGATIVE_CAP {
            warned.retain(|_, at| now.duration_since(*at) < WARN_EVERY);
        }
        warned.insert(id, now);
        tracing::warn!(
            challenge_id = %id,
            age_secs = now.duration_since(fetched.at).as_secs(),
            reason = why,
            "the challenge service is unavailable; serving the last known window"
        );
    }

    async fn fetch(
        &self,
        id: Uuid,
        timeout: Duration,
    ) -> Result<Option<ChallengeWindow>, FetchError> {
        let mut request =
            self.token.authorize(Request::new(GetChallengeRequest { id: id.to_string() }));
        request.set_timeout(timeout);
        // The client's own deadline too: a connect that hangs must not outlast it.
        let mut client = self.client.clone();
        match tokio::time::timeout(timeout, client.get_challenge(request)).await {
            Err(_elapsed) => Err(FetchError::Transient("timed out".into())),
            Ok(Ok(response)) => {
                let c = response
                    .into_inner()
                    .challenge
                    .context("GetChallenge without a challenge")
                    .map_err(|e| FetchError::Other(e.into()))?;
                window_of(id, c).map(Some).map_err(|e| FetchError::Other(e.into()))
            }
            Ok(Err(status)) if status.code() == Code::NotFound => Ok(None),
            Ok(Err(status)) if is_transient(status.code()) => {
                tracing::debug!(code = ?status.code(), message = status.message(), "challenge service call failed");
                Err(FetchError::Transient(format!("{:?}: {}", status.code(), status.message())))
            }
            Ok(Err(status)) => {
                tracing::error!(code = ?status.code(), message = status.message(), "challenge service refused the look-up");
                Err(FetchError::Other(ProgressError::Unexpected(anyhow::anyhow!(
                    "challenge service answered {:?} to GetChallenge {id}",
                    status.code()
                ))))
            }
        }
    }
}

/// The window of a challenge as the challenge service answered it.
fn window_of(id: Uuid, c: ewpm_proto::challenge::v1::Challenge) -> anyhow::Result<ChallengeWindow> {
    let time = |t: Option<prost_types::Timestamp>, what: &str| {
        t.as_ref()
            .and_then(timestamp::from_proto)
            .with_context(|| format!("challenge {id} without a valid {what}"))
    };
    Ok(ChallengeWindow {
        id,
        starts_at: time(c.start_time, "start_time")?,
        ends_at: time(c.end_time, "end_time")?,
        employer_id: Some(c.employer_id).filter(|e| !e.is_empty()),
        late_grace: TimeDelta::seconds(i64::from(c.late_grace_seconds.max(0))),
    })
}

/// Whether a failed call says something about the callee's state (down, overloaded, its
/// database failing: `Internal`) rather than about the request.
fn is_transient(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Cancelled
            | Code::Unknown
            | Code::Internal
    )
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Ids remembered as unknown, each for the same time to live, at most `cap` at once (the
/// oldest is forgotten first). Insertion order is expiry order, so expired ids are dropped
/// from the front in O(1).
#[derive(Debug)]
pub struct NegativeCache {
    cap: usize,
    ttl: Duration,
    expiry: HashMap<Uuid, Instant>,
    order: VecDeque<(Uuid, Instant)>,
}

impl NegativeCache {
    /// An empty cache of at most `cap` ids, each remembered for `ttl`.
    pub fn new(cap: usize, ttl: Duration) -> Self {
        Self { cap: cap.max(1), ttl, expiry: HashMap::new(), order: VecDeque::new() }
    }

    /// Whether `id` is remembered as unknown at `now`.
    pub fn contains(&self, id: &Uuid, now: Instant) -> bool {
        self.expiry.get(id).is_some_and(|until| *until > now)
    }

    /// Remembers `id` from `now`.
    pub fn insert(&mut self, id: Uuid, now: Instant) {
        let until = now + self.ttl;
        self.expiry.insert(id, until);
        self.order.push_back((id, until));
        while let Some(&(oldest, at)) = self.order.front() {
            if self.order.len() <= self.cap && at > now {
                break;
            }
            self.order.pop_front();
            // A later insert of the same id has a later expiry: keep that one.
            if self.expiry.get(&oldest) == Some(&at) {
                self.expiry.remove(&oldest);
            }
        }
    }

    /// How many ids are remembered (expired ones may still count until the next insert).
    pub fn len(&self) -> usize {
        self.expiry.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.expiry.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_ids_are_remembered_for_their_time_to_live() {
        let mut cache = NegativeCache::new(10, Duration::from_secs(1));
        let t0 = Instant::now();
        let id = Uuid::now_v7();
        cache.insert(id, t0);
        assert!(cache.contains(&id, t0 + Duration::from_millis(999)));
        assert!(!cache.contains(&id, t0 + Duration::from_secs(1)));
        assert!(!cache.contains(&Uuid::now_v7(), t0));
    }

    #[test]
    fn a_flood_of_random_ids_keeps_at_most_the_cap() {
        let mut cache = NegativeCache::new(100, Duration::from_secs(3600));
        let t0 = Instant::now();
        let ids: Vec<Uuid> = (0..10_000).map(|_| Uuid::new_v4()).collect();
        for id in &ids {
            cache.insert(*id, t0);
        }
        assert_eq!((cache.len(), cache.order.len()), (100, 100));
        // The newest are kept, the oldest forgotten.
        assert!(cache.contains(&ids[9_999], t0));
        assert!(!cache.contains(&ids[0], t0));
    }

    #[test]
    fn expired_ids_are_dropped_on_the_next_insert_and_a_renewed_id_survives_its_old_slot() {
        let mut cache = NegativeCache::new(100, Duration::from_secs(1));
        let t0 = Instant::now();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        cache.insert(a, t0);
        cache.insert(b, t0);
        cache.insert(a, t0 + Duration::from_millis(900));
        cache.insert(Uuid::new_v4(), t0 + Duration::from_millis(1500));
        assert_eq!(cache.len(), 2, "b expired and was dropped; a was renewed");
        assert!(cache.contains(&a, t0 + Duration::from_millis(1800)));
        assert!(!cache.contains(&b, t0 + Duration::from_millis(1500)));
    }
}
