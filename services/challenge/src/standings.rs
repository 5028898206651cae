//! A user's standing in each active challenge (total, percent of goal, rank), read from the
//! challenge's leaderboard (`challenge:<id>`) over gRPC with the service's own token.
//!
//! The leaderboard is the one place totals and ranks live together; a listing does not fail
//! when it is unreachable: the standings then say `available = false`.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use ewpm_kit::auth::ServiceToken;
use ewpm_proto::{
    challenge::v1 as pb,
    leaderboard::v1::{GetRankRequest, leaderboard_service_client::LeaderboardServiceClient},
};
use tonic::{Code, Request, transport::Channel};

use crate::domain::Challenge;

/// How long one rank look-up may take before the standing is reported unavailable.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// Where standings come from.
#[derive(Clone, Default)]
pub struct Standings {
    source: Option<(LeaderboardServiceClient<Channel>, Arc<ServiceToken>)>,
}

impl Standings {
    /// No leaderboard wired (every standing is unavailable).
    pub fn none() -> Self {
        Self::default()
    }

    /// Standings from the leaderboard service at `uri` (connected lazily).
    pub fn from_leaderboard(uri: &str, token: Arc<ServiceToken>) -> anyhow::Result<Self> {
        let channel = ewpm_kit::client::channel(uri).context("leaderboard service")?;
        Ok(Self { source: Some((LeaderboardServiceClient::new(channel), token)) })
    }

    /// `user`'s standing in each of `challenges`, in order (looked up concurrently).
    pub async fn of(&self, user: &str, challenges: &[Challenge]) -> Vec<pb::Standing> {
        futures::future::join_all(challenges.iter().map(|c| self.one(user, c))).await
    }

    async fn one(&self, user: &str, challenge: &Challenge) -> pb::Standing {
        let mut standing = pb::Standing {
            challenge_id: challenge.id.to_string(),
            total: 0.0,
            percent_of_goal: 0.0,
            rank: 0,
            available: false,
        };
        let Some((client, token)) = &self.source else { return standing };
        let mut request = token.authorize(Request::new(GetRankRequest {
            board: format!("challenge:{}", challenge.id),
            member: user.to_string(),
            neighbours: 0,
            ..Default::default()
        }));
        request.set_timeout(LOOKUP_TIMEOUT);
        match client.clone().get_rank(request).await {
            Ok(r) => {
                let entry = r.into_inner().entry.unwrap_or_default();
                standing.total = entry.score;
                standing.rank = entry.rank;
                standing.available = true;
            }
            // Not on the board yet: no progress so far.
            Err(status) if status.code() == Code::NotFound => standing.available = true,
            Err(status) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "leaderboard look-up failed");
            }
        }
        let target = challenge.goal.target();
        // Finite always (JSON has no infinity): a goal stored before the minimum target
        // existed could still divide by almost nothing.
        let percent = standing.total / target * 100.0;
        if standing.available && target > 0.0 && percent.is_finite() {
            standing.percent_of_goal = percent;
        }
        standing
    }
}
