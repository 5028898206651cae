//! `ewpm.leaderboard.v1.LeaderboardService`: converts requests to domain values, calls
//! [`Leaderboards`], converts the result back. Proto types stop here.
//!
//! A caller reads a board only if its owner lets them see it (see [`crate::access`]): a
//! board of another employer's challenge, or of no known challenge, is NOT_FOUND.

use std::pin::Pin;

use ewpm_kit::{auth::Caller, error::Violations, paging, timestamp};
use ewpm_proto::leaderboard::v1::{self as pb, leaderboard_service_server::LeaderboardService};
use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::{
    domain::{self, Board},
    error::LeaderboardError,
    scores::Entry,
    service::Leaderboards,
    watch::Snapshot,
};

/// The gRPC face of the leaderboard service.
#[derive(Clone)]
pub struct LeaderboardGrpc {
    boards: Leaderboards,
}

impl LeaderboardGrpc {
    /// Serves `boards`.
    pub fn new(boards: Leaderboards) -> Self {
        Self { boards }
    }
}

/// The stream of WatchLeaderboard.
pub type WatchStream =
    Pin<Box<dyn Stream<Item = Result<pb::WatchLeaderboardResponse, Status>> + Send>>;

#[tonic::async_trait]
impl LeaderboardService for LeaderboardGrpc {
    async fn get_leaderboard(
        &self,
        request: Request<pb::GetLeaderboardRequest>,
    ) -> Result<Response<pb::GetLeaderboardResponse>, Status> {
        let caller = Caller::of(&request)?;
        let pb::GetLeaderboardRequest { board, page_size, page_token } = request.into_inner();
        let mut v = Violations::new();
        let board = v.check(Board::parse(&board, "board"));
        let size = v.check(domain::limit(page_size, "page_size"));
        // The token is the position of the next page; ties need no cursor because the order
        // is total (member id breaks ties).
        let offset = v.check(paging::decode_token::<u64>(&page_token));
        v.finish().map_err(LeaderboardError::from)?;
        let (Some(board), Some(size), Some(offset)) = (board, size, offset) else {
            unreachable!("violations were reported above");
        };
        let page = self.boards.page(&caller, &board, offset.unwrap_or(0), size).await?;
        Ok(Response::new(pb::GetLeaderboardResponse {
            entries: page.entries.iter().map(entry).collect(),
            next_page_token: page.next_offset.map(|o| paging::encode_token(&o)).unwrap_or_default(),
            total_members: count(page.total_members),
        }))
    }

    async fn get_rank(
        &self,
        request: Request<pb::GetRankRequest>,
    ) -> Result<Response<pb::GetRankResponse>, Status> {
        let caller = Caller::of(&request)?;
        let pb::GetRankRequest { board, member, neighbours } = request.into_inner();
        let mut v = Violations::new();
        let board = v.check(Board::parse(&board, "board"));
        let member = v.check(domain::parse_member(&member, "member"));
        let neighbours = v.check(domain::neighbours(neighbours));
        v.finish().map_err(LeaderboardError::from)?;
        let (Some(board), Some(member), Some(neighbours)) = (board, member, neighbours) else {
            unreachable!("violations were reported above");
        };
        let rank = self.boards.rank(&caller, &board, &member, neighbours).await?;
        Ok(Response::new(pb::GetRankResponse {
            entry: Some(entry(&rank.around.me)),
            window: rank.around.window.iter().map(entry).collect(),
            total_members: count(rank.total_members),
        }))
    }

    type WatchLeaderboardStream = WatchStream;

    async fn watch_leaderboard(
        &self,
        request: Request<pb::WatchLeaderboardRequest>,
    ) -> Result<Response<Self::WatchLeaderboardStream>, Status> {
        let caller = Caller::of(&request)?;
        let pb::WatchLeaderboardRequest { board, top_n } = request.into_inner();
        let mut v = Violations::new();
        let board = v.check(Board::parse(&board, "board"));
        let top_n = v.check(domain::limit(top_n, "top_n"));
        v.finish().map_err(LeaderboardError::from)?;
        let (Some(board), Some(top_n)) = (board, top_n) else {
            unreachable!("violations were reported above");
        };
        let snapshots = self.boards.watch(&caller, board, top_n).await?;
        Ok(Response::new(snapshots.map(|s| Ok(snapshot(s))).boxed()))
    }
}

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn entry(e: &Entry) -> pb::LeaderboardEntry {
    pb::LeaderboardEntry { rank: count(e.rank), member: e.member.clone(), score: e.score }
}

fn snapshot(s: Snapshot) -> pb::WatchLeaderboardResponse {
    pb::WatchLeaderboardResponse {
        board: s.board,
        entries: s.entries.iter().map(entry).collect(),
        total_members: count(s.total_members),
        snapshot_time: Some(timestamp::to_proto(s.taken_at)),
    }
}
