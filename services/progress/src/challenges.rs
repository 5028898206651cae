//! Challenge windows, learned from the challenge service over gRPC and cached, so the submit
//! path does not call it per entry.
//!
//! The service calls with its own token (`service:progress`, role admin) so one cached answer
//! serves every user; visibility is then checked here against the caller. A challenge that
//! does not exist is remembered briefly too (a burst of bad ids must not become a burst of
//! calls), but for less time than a found one, so a challenge created a moment ago is seen
//! soon.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use ewpm_kit::{auth::ServiceToken, cache::TtlCache, timestamp};
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

/// Cached challenge windows.
#[derive(Clone)]
pub struct ChallengeWindows {
    client: ChallengeServiceClient<Channel>,
    token: Arc<ServiceToken>,
    /// Challenge id → window, or `None`: no such challenge.
    cache: Arc<TtlCache<Uuid, Option<ChallengeWindow>>>,
}

impl ChallengeWindows {
    /// Windows from the challenge service at `uri` (connected lazily), cached for `ttl`.
    pub fn new(uri: &str, token: Arc<ServiceToken>, ttl: Duration) -> anyhow::Result<Self> {
        let channel = ewpm_kit::client::channel(uri).context("challenge service")?;
        Ok(Self {
            client: ChallengeServiceClient::new(channel),
            token,
            cache: Arc::new(TtlCache::new(ttl)),
        })
    }

    /// The window of challenge `id`, or `None` when it does not exist.
    pub async fn get(&self, id: Uuid) -> Result<Option<ChallengeWindow>, ProgressError> {
        if let Some(window) = self.cache.get(&id) {
            return Ok(window);
        }
        let window = self.fetch(id).await?;
        match &window {
            Some(_) => self.cache.put(id, window.clone()),
            None => self.cache.put_for(id, None, NEGATIVE_TTL),
        }
        Ok(window)
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
