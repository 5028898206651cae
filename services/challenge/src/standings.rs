//! A user's standing in each active challenge (total, percent of goal, rank), read from the
//! challenge's leaderboard (`challenge:<id>`) over gRPC with the service's own token.
//!
//! The leaderboard is the one place totals and ranks live together; a listing does not fail
//! when it is unreachable: the standings then say `available = false`.

use std::{collections::HashMap, sync::Arc, time::Duration};

use anyhow::Context;
use ewpm_kit::auth::ServiceToken;
use ewpm_proto::{
    challenge::v1 as pb,
    leaderboard::v1::{
        GetPlacesRequest, Place, PlaceStatus, leaderboard_service_client::LeaderboardServiceClient,
    },
};
use tonic::{Request, transport::Channel};

use crate::domain::Challenge;

/// How long one rank look-up may take before the standing is reported unavailable.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// Boards one GetPlaces call takes at most.
const MAX_BOARDS: usize = 100;

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

    /// `user`'s standing in each of `challenges`, in order: one GetPlaces call per hundred
    /// challenges.
    pub async fn of(&self, user: &str, challenges: &[Challenge]) -> Vec<pb::Standing> {
        let blank = |c: &Challenge| pb::Standing {
            challenge_id: c.id.to_string(),
            total: 0.0,
            percent_of_goal: 0.0,
            rank: 0,
            available: false,
        };
        let Some((client, token)) = &self.source else {
            return challenges.iter().map(blank).collect();
        };
        if challenges.is_empty() {
            return Vec::new();
        }
        let calls = challenges.chunks(MAX_BOARDS).map(|chunk| {
            let mut request = token.authorize(Request::new(GetPlacesRequest {
                member: user.to_string(),
                boards: chunk.iter().map(|c| format!("challenge:{}", c.id)).collect(),
            }));
            request.set_timeout(LOOKUP_TIMEOUT);
            let mut client = client.clone();
            async move {
                match client.get_places(request).await {
                    Ok(r) => r.into_inner().places,
                    Err(status) => {
                        tracing::warn!(code = ?status.code(), message = status.message(), "leaderboard look-up failed");
                        Vec::new()
                    }
                }
            }
        });
        let places = futures::future::join_all(calls).await.into_iter().flatten();
        let places: HashMap<String, Place> = places.map(|p| (p.board.clone(), p)).collect();
        challenges
            .iter()
            .map(|c| {
                let mut standing = blank(c);
                let Some(place) = places.get(&format!("challenge:{}", c.id)) else {
                    return standing;
                };
                match place.status() {
                    PlaceStatus::Ranked => {
                        let entry = place.entry.clone().unwrap_or_default();
                        standing.total = entry.score;
                        standing.rank = entry.rank;
                        standing.available = true;
                    }
                    // No points yet (or no board yet): a standing of zero.
                    PlaceStatus::NotOnBoard | PlaceStatus::BoardNotFound => {
                        standing.available = true;
                    }
                    // Not to be shown, or not readable now: unavailable.
                    PlaceStatus::Withheld | PlaceStatus::Unavailable | PlaceStatus::Unspecified => {
                    }
                }
                let target = c.goal.target();
                // Finite always (JSON has no infinity): a goal stored before the minimum
                // target existed could still divide by almost nothing.
                let percent = standing.total / target * 100.0;
                if standing.available && target > 0.0 && percent.is_finite() {
                    standing.percent_of_goal = percent;
                }
                standing
            })
            .collect()
    }
}
