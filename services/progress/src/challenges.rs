//! Challenge windows, learned from the challenge service over gRPC and cached, so the submit
//! path does not call it per entry.
//!
//! The service calls with its own token (`service:progress`, role admin) so one cached answer
//! serves every user; visibility is then checked here against the caller. A challenge that
//! does not exist is remembered briefly too (a burst of bad ids must not become a burst of
//! calls), but for less time than a found one, so a challenge created a moment ago is seen
//! soon.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use ewpm_kit::{auth::ServiceToken, timestamp};
use ewpm_proto::challenge::v1::{
    GetChallengeRequest, challenge_service_client::ChallengeServiceClient,
};
use tonic::{Code, Request, transport::Channel};
use uuid::Uuid;

use crate::{domain::ChallengeWindow, error::ProgressError};

/// How long one look-up may take before the submit answers Unavailable.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long "no such challenge" is remembered.
const NEGATIVE_TTL: Duration = Duration::from_secs(1);
/// Cache entries beyond which expired ones are swept.
const SWEEP_ABOVE: usize = 50_000;

/// Challenge id → (window or "no such challenge", expiry).
type Cache = HashMap<Uuid, (Option<ChallengeWindow>, Instant)>;

/// Cached challenge windows.
#[derive(Clone)]
pub struct ChallengeWindows {
    client: ChallengeServiceClient<Channel>,
    token: Arc<ServiceToken>,
    ttl: Duration,
    cache: Arc<Mutex<Cache>>,
}

impl ChallengeWindows {
    /// Windows from the challenge service at `uri` (connected lazily), cached for `ttl`.
    pub fn new(uri: &str, token: Arc<ServiceToken>, ttl: Duration) -> anyhow::Result<Self> {
        let channel = ewpm_kit::client::channel(uri).context("challenge service")?;
        Ok(Self {
            client: ChallengeServiceClient::new(channel),
            token,
            ttl,
            cache: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// The window of challenge `id`, or `None` when it does not exist.
    pub async fn get(&self, id: Uuid) -> Result<Option<ChallengeWindow>, ProgressError> {
        let now = Instant::now();
        if let Some((window, expires)) = self.lock().get(&id)
            && *expires > now
        {
            return Ok(window.clone());
        }
        let window = self.fetch(id).await?;
        let ttl = if window.is_some() { self.ttl } else { NEGATIVE_TTL };
        let mut cache = self.lock();
        if cache.len() > SWEEP_ABOVE {
            cache.retain(|_, (_, expires)| *expires > now);
        }
        cache.insert(id, (window.clone(), now + ttl));
        Ok(window)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn fetch(&self, id: Uuid) -> Result<Option<ChallengeWindow>, ProgressError> {
        let mut request =
            self.token.authorize(Request::new(GetChallengeRequest { id: id.to_string() }));
        request.set_timeout(LOOKUP_TIMEOUT);
        match self.client.clone().get_challenge(request).await {
            Ok(response) => {
                let c =
                    response.into_inner().challenge.context("GetChallenge without a challenge")?;
                let time = |t: Option<prost_types::Timestamp>, what: &str| {
                    t.as_ref()
                        .and_then(timestamp::from_proto)
                        .with_context(|| format!("challenge {id} without a valid {what}"))
                };
                Ok(Some(ChallengeWindow {
                    id,
                    starts_at: time(c.start_time, "start_time")?,
                    ends_at: time(c.end_time, "end_time")?,
                    employer_id: Some(c.employer_id).filter(|e| !e.is_empty()),
                }))
            }
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "challenge service call failed");
                Err(ProgressError::Unavailable("the challenge service"))
            }
        }
    }
}
