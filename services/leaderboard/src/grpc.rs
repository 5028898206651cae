//! `ewpm.leaderboard.v1.LeaderboardService`: converts requests to domain values (every bad
//! field reported at once), calls [`Leaderboards`] / [`Writes`], converts the result back.
//! Proto types stop here.
//!
//! A caller reads a board only if its owner lets them see it (see [`crate::access`]): a
//! board of another employer, or of no known owner, is NOT_FOUND.

use std::pin::Pin;

use chrono::{DateTime, Utc};
use ewpm_kit::{
    auth::{Caller, is_valid_employer_id},
    error::{FieldViolation, Violations},
    paging, timestamp,
};
use ewpm_proto::leaderboard::v1::{self as pb, leaderboard_service_server::LeaderboardService};
use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::{
    definition::{Definition, parse_board_id},
    domain::{self, Board},
    error::LeaderboardError,
    period::{ResetKind, Schedule},
    privacy::Shown,
    ranking::{Operator, Order, RankStyle, Shape},
    service::{Leaderboards, MyPlace, Notice, Personal, View},
    writes::{Submit, Writes},
};

/// The gRPC face of the leaderboard service.
#[derive(Clone)]
pub struct LeaderboardGrpc {
    writes: Writes,
}

impl LeaderboardGrpc {
    /// Serves `writes` and the reads beside them.
    pub fn new(writes: Writes) -> Self {
        Self { writes }
    }

    fn boards(&self) -> &Leaderboards {
        self.writes.boards()
    }
}

/// The stream of WatchLeaderboard.
pub type WatchStream =
    Pin<Box<dyn Stream<Item = Result<pb::WatchLeaderboardResponse, Status>> + Send>>;

/// Longest title of a board.
const MAX_TITLE: usize = 200;
/// Longest event id of a submitted fact.
const MAX_EVENT_ID: usize = 64;
/// Longest void reason.
const MAX_REASON: usize = 500;
/// Most members in one GetRanks.
const MAX_MEMBERS: usize = 100;
/// Largest employer minimum.
const MAX_MIN_MEMBERS: i32 = 10_000;

fn invalid(v: Violations) -> Result<(), Status> {
    v.finish().map_err(|v| Status::from(LeaderboardError::from(v)))
}

fn text(raw: &str, field: &str, min: usize, max: usize) -> Result<String, FieldViolation> {
    let n = raw.chars().count();
    if n < min || n > max || raw.chars().any(char::is_control) {
        return Err(FieldViolation::new(
            field,
            format!("must be {min} to {max} printable characters"),
        ));
    }
    Ok(raw.to_string())
}

/// Largest magnitude of a submitted score or subscore: sums of any number of them stay
/// exact integers up to 2^53 / 10^12 facts and never overflow.
const MAX_SCORE: f64 = 1e12;

fn finite(v: f64, field: &str) -> Result<f64, FieldViolation> {
    if v.is_finite() && v.abs() <= MAX_SCORE {
        Ok(v)
    } else {
        Err(FieldViolation::new(field, "must be a number from -1e12 to 1e12"))
    }
}

fn period(raw: &str) -> Result<String, FieldViolation> {
    if raw.len() > 32 || !raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(FieldViolation::new(
            "period",
            "must be a period id, e.g. 2026-11-30 or 2026-W49",
        ));
    }
    Ok(raw.to_string())
}

fn time(
    ts: &Option<prost_types::Timestamp>,
    field: &str,
) -> Result<Option<DateTime<Utc>>, FieldViolation> {
    match ts {
        None => Ok(None),
        Some(ts) => timestamp::from_proto(ts)
            .filter(|t| t.timestamp() >= 0)
            .map(Some)
            .ok_or_else(|| FieldViolation::new(field, "must be a valid time after 1970")),
    }
}

fn order(raw: i32, field: &str, default: Option<Order>) -> Result<Option<Order>, FieldViolation> {
    match pb::SortOrder::try_from(raw) {
        Ok(pb::SortOrder::Unspecified) => Ok(default),
        Ok(pb::SortOrder::Descending) => Ok(Some(Order::Descending)),
        Ok(pb::SortOrder::Ascending) => Ok(Some(Order::Ascending)),
        Err(_) => Err(FieldViolation::new(field, "must be DESCENDING or ASCENDING")),
    }
}

/// The definition a CreateBoard request asks for.
fn definition(board_id: &str, d: &pb::BoardDefinition) -> Result<Definition, Vec<FieldViolation>> {
    let mut v = Violations::new();
    let board = v.check(parse_board_id(board_id));
    let title = v.check(text(&d.title, "definition.title", 0, MAX_TITLE));
    let op = v.check(match pb::ScoreOperator::try_from(d.operator) {
        Ok(pb::ScoreOperator::Unspecified | pb::ScoreOperator::Sum) => Ok(Operator::Sum),
        Ok(pb::ScoreOperator::Best) => Ok(Operator::Best),
        Ok(pb::ScoreOperator::Set) => Ok(Operator::Set),
        Err(_) => Err(FieldViolation::new("definition.operator", "must be SUM, BEST or SET")),
    });
    let ord = v.check(order(d.order, "definition.order", Some(Order::Descending)));
    let sub = v.check(order(d.subscore_order, "definition.subscore_order", None));
    let style = v.check(match pb::RankStyle::try_from(d.rank_style) {
        Ok(pb::RankStyle::Unspecified | pb::RankStyle::Competition) => Ok(RankStyle::Competition),
        Ok(pb::RankStyle::Dense) => Ok(RankStyle::Dense),
        Err(_) => Err(FieldViolation::new("definition.rank_style", "must be COMPETITION or DENSE")),
    });
    let reset = d.reset.clone().unwrap_or_default();
    let kind = v.check(match pb::ResetKind::try_from(reset.kind) {
        Ok(pb::ResetKind::Unspecified | pb::ResetKind::Never) => Ok(ResetKind::Never),
        Ok(pb::ResetKind::Daily) => Ok(ResetKind::Daily),
        Ok(pb::ResetKind::Weekly) => Ok(ResetKind::Weekly),
        Ok(pb::ResetKind::Monthly) => Ok(ResetKind::Monthly),
        Ok(pb::ResetKind::Cron) => Ok(ResetKind::Cron),
        Err(_) => Err(FieldViolation::new(
            "definition.reset.kind",
            "must be NEVER, DAILY, WEEKLY, MONTHLY or CRON",
        )),
    });
    let schedule = match kind.map(|k| Schedule::new(k, &reset.cron, &reset.time_zone)) {
        Some(Ok(s)) => Some(s),
        Some(Err(violations)) => {
            for x in violations {
                v.push(x);
            }
            None
        }
        None => None,
    };
    let employer_id = if d.employer_id.is_empty() {
        Some(None)
    } else if is_valid_employer_id(&d.employer_id) {
        Some(Some(d.employer_id.clone()))
    } else {
        v.push(FieldViolation::new(
            "definition.employer_id",
            "must be 1-64 letters, digits, '-', '_' or '.'",
        ));
        None
    };
    v.finish()?;
    let (Some(board), Some(title), Some(op), Some(Some(order)), Some(sub), Some(style)) =
        (board, title, op, ord, sub, style)
    else {
        unreachable!("violations were reported above");
    };
    let (Some(schedule), Some(employer_id)) = (schedule, employer_id) else {
        unreachable!("violations were reported above");
    };
    Ok(Definition {
        board,
        title,
        shape: Shape { op, order, sub, style },
        schedule,
        employer_id,
        members_submit: d.members_submit,
        created_at: None,
    })
}

fn proto_order(o: Order) -> i32 {
    match o {
        Order::Descending => pb::SortOrder::Descending as i32,
        Order::Ascending => pb::SortOrder::Ascending as i32,
    }
}

fn proto_definition(def: &Definition, now: DateTime<Utc>) -> pb::BoardDefinition {
    let current = def.current(now);
    pb::BoardDefinition {
        board: def.board.to_string(),
        title: def.title.clone(),
        operator: match def.shape.op {
            Operator::Sum => pb::ScoreOperator::Sum,
            Operator::Best => pb::ScoreOperator::Best,
            Operator::Set => pb::ScoreOperator::Set,
        } as i32,
        order: proto_order(def.shape.order),
        subscore_order: def.shape.sub.map_or(pb::SortOrder::Unspecified as i32, proto_order),
        rank_style: match def.shape.style {
            RankStyle::Competition => pb::RankStyle::Competition,
            RankStyle::Dense => pb::RankStyle::Dense,
        } as i32,
        reset: Some(pb::Reset {
            kind: match def.schedule.kind() {
                ResetKind::Never => pb::ResetKind::Never,
                ResetKind::Daily => pb::ResetKind::Daily,
                ResetKind::Weekly => pb::ResetKind::Weekly,
                ResetKind::Monthly => pb::ResetKind::Monthly,
                ResetKind::Cron => pb::ResetKind::Cron,
            } as i32,
            cron: def.schedule.cron().to_string(),
            time_zone: def.schedule.time_zone().to_string(),
        }),
        employer_id: def.employer_id.clone().unwrap_or_default(),
        members_submit: def.members_submit,
        owner: def.owner().to_string(),
        create_time: def.created_at.map(timestamp::to_proto),
        current_period: current.id,
        next_reset_time: current.end.map(timestamp::to_proto),
    }
}

#[tonic::async_trait]
impl LeaderboardService for LeaderboardGrpc {
    async fn create_board(
        &self,
        request: Request<pb::CreateBoardRequest>,
    ) -> Result<Response<pb::CreateBoardResponse>, Status> {
        let caller = Caller::of(&request)?;
        let pb::CreateBoardRequest { board_id, definition: def } = request.into_inner();
        let def =
            definition(&board_id, &def.unwrap_or_default()).map_err(LeaderboardError::from)?;
        let (stored, created) = self.writes.create(&caller, def).await?;
        let board = Some(proto_definition(&stored, self.boards().reader().now()));
        Ok(Response::new(pb::CreateBoardResponse { board, created }))
    }

    async fn get_board(
        &self,
        request: Request<pb::GetBoardRequest>,
    ) -> Result<Response<pb::GetBoardResponse>, Status> {
        let caller = Caller::of(&request)?;
        let board =
            Board::parse(&request.into_inner().board, "board").map_err(LeaderboardError::from)?;
        let def = self.boards().definition(&caller, &board).await?;
        let board = Some(proto_definition(&def, self.boards().reader().now()));
        Ok(Response::new(pb::GetBoardResponse { board }))
    }

    async fn list_periods(
        &self,
        request: Request<pb::ListPeriodsRequest>,
    ) -> Result<Response<pb::ListPeriodsResponse>, Status> {
        let caller = Caller::of(&request)?;
        let pb::ListPeriodsRequest { board, page_size, page_token } = request.into_inner();
        let mut v = Violations::new();
        let board = v.check(Board::parse(&board, "board"));
        let size = v.check(domain::limit(page_size, "page_size"));
        let before = v.check(paging::decode_token::<i64>(&page_token));
        invalid(v)?;
        let (Some(board), Some(size), Some(before)) = (board, size, before) else {
            unreachable!("violations were reported above");
        };
        let before = before.and_then(DateTime::from_timestamp_micros);
        let (periods, next) = self.boards().periods(&caller, &board, before, size).await?;
        Ok(Response::new(pb::ListPeriodsResponse {
            periods: periods
                .into_iter()
                .map(|(p, row)| pb::Period {
                    period: p.id,
                    start_time: p.start.map(timestamp::to_proto),
                    end_time: p.end.map(timestamp::to_proto),
                    closed: row.is_some(),
                    members: row.map_or(0, |r| count(r.members)),
                })
                .collect(),
            next_page_token: next
                .map(|t| paging::encode_token(&t.timestamp_micros()))
                .unwrap_or_default(),
        }))
    }

    async fn submit_score(
        &self,
        request: Request<pb::SubmitScoreRequest>,
    ) -> Result<Response<pb::SubmitScoreResponse>, Status> {
        let caller = Caller::of(&request)?;
        let pb::SubmitScoreRequest { board, member, score, subscore, event_id, occurred_at } =
            request.into_inner();
        let mut v = Violations::new();
        let board = v.check(Board::parse(&board, "board"));
        let member = if member.is_empty() {
            Some(None)
        } else {
            v.check(domain::parse_member(&member, "member")).map(Some)
        };
        let score = v.check(finite(score, "score"));
        let subscore = v.check(finite(subscore, "subscore"));
        let event_id = v.check(text(&event_id, "event_id", 1, MAX_EVENT_ID));
        let occurred_at = v.check(time(&occurred_at, "occurred_at"));
        invalid(v)?;
        let (
            Some(board),
            Some(member),
            Some(score),
            Some(subscore),
            Some(event_id),
            Some(occurred_at),
        ) = (board, member, score, subscore, event_id, occurred_at)
        else {
            unreachable!("violations were reported above");
        };
        let submitted = self
            .writes
            .submit(&caller, Submit { board, member, score, subscore, event_id, occurred_at })
            .await?;
        Ok(Response::new(pb::SubmitScoreResponse {
            period: submitted.period,
            created: submitted.created,
            entry: submitted.entry.as_ref().map(entry),
        }))
    }

    async fn get_leaderboard(
        &self,
        request: Request<pb::GetLeaderboardRequest>,
    ) -> Result<Response<pb::GetLeaderboardResponse>, Status> {
        let caller = Caller::of(&request)?;
        let pb::GetLeaderboardRequest { board, page_size, page_token, start_rank, period: p } =
            request.into_inner();
        let mut v = Violations::new();
        let board = v.check(Board::parse(&board, "board"));
        let size = v.check(domain::limit(page_size, "page_size"));
        // The token is a position: ties need no cursor because the order is total.
        let offset = v.check(paging::decode_token::<u64>(&page_token));
        let start = v.check(
            u64::try_from(start_rank)
                .map_err(|_| FieldViolation::new("start_rank", "must not be negative")),
        );
        let p = v.check(period(&p));
        invalid(v)?;
        let (Some(board), Some(size), Some(offset), Some(start), Some(p)) =
            (board, size, offset, start, p)
        else {
            unreachable!("violations were reported above");
        };
        let page = self.boards().page(&caller, &board, &p, offset, start, size).await?;
        Ok(Response::new(pb::GetLeaderboardResponse {
            entries: page.entries.iter().map(entry).collect(),
            next_page_token: page.next_offset.map(|o| paging::encode_token(&o)).unwrap_or_default(),
            total_members: count(page.total_members),
            prev_page_token: page.prev_offset.map(|o| paging::encode_token(&o)).unwrap_or_default(),
            me: page.me.as_ref().map(my_place),
            period: page.period,
            withheld: page.withheld,
        }))
    }

    async fn get_rank(
        &self,
        request: Request<pb::GetRankRequest>,
    ) -> Result<Response<pb::GetRankResponse>, Status> {
        let caller = Caller::of(&request)?;
        let pb::GetRankRequest { board, member, neighbours, period: p, page_size } =
            request.into_inner();
        let mut v = Violations::new();
        let board = v.check(Board::parse(&board, "board"));
        let member = if member.is_empty() {
            Some(caller.user_id.clone())
        } else {
            v.check(domain::parse_member(&member, "member"))
        };
        let neighbours = v.check(domain::neighbours(neighbours));
        let p = v.check(period(&p));
        let size = v.check(domain::limit(page_size, "page_size"));
        invalid(v)?;
        let (Some(board), Some(member), Some(neighbours), Some(p), Some(size)) =
            (board, member, neighbours, p, size)
        else {
            unreachable!("violations were reported above");
        };
        let rank = self.boards().rank(&caller, &board, &p, &member, neighbours, size).await?;
        Ok(Response::new(pb::GetRankResponse {
            entry: Some(entry(&rank.me)),
            window: rank.window.iter().map(entry).collect(),
            total_members: count(rank.total_members),
            top_percent: i32::try_from(rank.top_percent).unwrap_or(100),
            page: count(rank.page),
            period: rank.period,
        }))
    }

    async fn get_ranks(
        &self,
        request: Request<pb::GetRanksRequest>,
    ) -> Result<Response<pb::GetRanksResponse>, Status> {
        let caller = Caller::of(&request)?;
        let pb::GetRanksRequest { board, members, period: p } = request.into_inner();
        let mut v = Violations::new();
        let board = v.check(Board::parse(&board, "board"));
        if members.is_empty() || members.len() > MAX_MEMBERS {
            v.push(FieldViolation::new("members", "must list 1 to 100 members"));
        }
        let mut wanted = Vec::with_capacity(members.len().min(MAX_MEMBERS));
        for (i, m) in members.iter().take(MAX_MEMBERS).enumerate() {
            if let Some(m) = v.check(domain::parse_member(m, &format!("members[{i}]"))) {
                wanted.push(m);
            }
        }
        wanted.sort();
        wanted.dedup();
        let p = v.check(period(&p));
        invalid(v)?;
        let (Some(board), Some(p)) = (board, p) else {
            unreachable!("violations were reported above");
        };
        let ranks = self.boards().ranks(&caller, &board, &p, &wanted).await?;
        Ok(Response::new(pb::GetRanksResponse {
            entries: ranks.entries.iter().map(entry).collect(),
            total_members: count(ranks.total_members),
            period: ranks.period,
        }))
    }

    async fn get_places(
        &self,
        request: Request<pb::GetPlacesRequest>,
    ) -> Result<Response<pb::GetPlacesResponse>, Status> {
        let caller = Caller::of(&request)?;
        let pb::GetPlacesRequest { member, boards } = request.into_inner();
        let mut v = Violations::new();
        let member = if member.is_empty() {
            Some(caller.user_id.clone())
        } else {
            v.check(domain::parse_member(&member, "member"))
        };
        if boards.is_empty() || boards.len() > MAX_MEMBERS {
            v.push(FieldViolation::new("boards", "must list 1 to 100 boards"));
        }
        let mut wanted: Vec<Board> = Vec::with_capacity(boards.len().min(MAX_MEMBERS));
        for (i, b) in boards.iter().take(MAX_MEMBERS).enumerate() {
            if let Some(b) = v.check(Board::parse(b, &format!("boards[{i}]")))
                && !wanted.contains(&b)
            {
                wanted.push(b);
            }
        }
        invalid(v)?;
        let Some(member) = member else { unreachable!("violations were reported above") };
        let leaderboards = self.boards();
        let places = futures::future::join_all(wanted.iter().map(|board| {
            let (caller, member) = (&caller, &member);
            async move {
                let result = leaderboards.rank(caller, board, "", member, 0, 1).await;
                place(board, result)
            }
        }))
        .await;
        Ok(Response::new(pb::GetPlacesResponse { places }))
    }

    type WatchLeaderboardStream = WatchStream;

    async fn watch_leaderboard(
        &self,
        request: Request<pb::WatchLeaderboardRequest>,
    ) -> Result<Response<Self::WatchLeaderboardStream>, Status> {
        let caller = Caller::of(&request)?;
        let pb::WatchLeaderboardRequest {
            board,
            top_n,
            neighbours,
            with_me,
            notify_passed,
            notify_within,
        } = request.into_inner();
        let mut v = Violations::new();
        let board = v.check(Board::parse(&board, "board"));
        let top_n = v.check(domain::limit(top_n, "top_n"));
        let neighbours = v.check(domain::neighbours(neighbours));
        let within =
            v.check(Some(notify_within).filter(|w| w.is_finite() && *w >= 0.0).ok_or_else(|| {
                FieldViolation::new("notify_within", "must be a finite number, 0 or more")
            }));
        invalid(v)?;
        let (Some(board), Some(top_n), Some(neighbours), Some(notify_within)) =
            (board, top_n, neighbours, within)
        else {
            unreachable!("violations were reported above");
        };
        let personal = Personal { with_me, neighbours, notify_passed, notify_within };
        let views = self.boards().watch(&caller, board, top_n, personal).await?;
        Ok(Response::new(views.map(|s| Ok(view(s))).boxed()))
    }

    async fn void_entry(
        &self,
        request: Request<pb::VoidEntryRequest>,
    ) -> Result<Response<pb::VoidEntryResponse>, Status> {
        let caller = Caller::of(&request)?;
        let pb::VoidEntryRequest { board, member, event_id, reason } = request.into_inner();
        let mut v = Violations::new();
        let board = v.check(Board::parse(&board, "board"));
        let member = if member.is_empty() {
            Some(None)
        } else {
            v.check(domain::parse_member(&member, "member")).map(Some)
        };
        let event_id = if event_id.is_empty() {
            Some(None)
        } else {
            v.check(text(&event_id, "event_id", 1, 128)).map(Some)
        };
        if matches!((&member, &event_id), (Some(None), Some(None)) | (Some(Some(_)), Some(Some(_))))
        {
            v.push(FieldViolation::new("member", "give exactly one of member and event_id"));
        }
        let reason = v.check(text(&reason, "reason", 1, MAX_REASON));
        invalid(v)?;
        let (Some(board), Some(member), Some(event_id), Some(reason)) =
            (board, member, event_id, reason)
        else {
            unreachable!("violations were reported above");
        };
        let (created, periods) =
            self.writes.void(&caller, &board, member, event_id, &reason).await?;
        Ok(Response::new(pb::VoidEntryResponse { created, periods }))
    }

    async fn get_privacy(
        &self,
        request: Request<pb::GetPrivacyRequest>,
    ) -> Result<Response<pb::GetPrivacyResponse>, Status> {
        let caller = Caller::of(&request)?;
        let (hide_name, pseudonym) = self.writes.privacy(&caller).await?;
        let privacy = Some(pb::Privacy { member: caller.user_id, hide_name, pseudonym });
        Ok(Response::new(pb::GetPrivacyResponse { privacy }))
    }

    async fn set_privacy(
        &self,
        request: Request<pb::SetPrivacyRequest>,
    ) -> Result<Response<pb::SetPrivacyResponse>, Status> {
        let caller = Caller::of(&request)?;
        let hide = request.into_inner().hide_name;
        let (hide_name, pseudonym) = self.writes.set_privacy(&caller, hide).await?;
        let privacy = Some(pb::Privacy { member: caller.user_id, hide_name, pseudonym });
        Ok(Response::new(pb::SetPrivacyResponse { privacy }))
    }

    async fn get_employer_settings(
        &self,
        request: Request<pb::GetEmployerSettingsRequest>,
    ) -> Result<Response<pb::GetEmployerSettingsResponse>, Status> {
        let caller = Caller::of(&request)?;
        let employer = request.into_inner().employer_id;
        let (employer_id, n) = self.writes.min_members(&caller, &employer).await?;
        let settings = Some(settings(employer_id, n));
        Ok(Response::new(pb::GetEmployerSettingsResponse { settings }))
    }

    async fn set_employer_settings(
        &self,
        request: Request<pb::SetEmployerSettingsRequest>,
    ) -> Result<Response<pb::SetEmployerSettingsResponse>, Status> {
        let caller = Caller::of(&request)?;
        let pb::SetEmployerSettingsRequest { employer_id, min_members } = request.into_inner();
        let n =
            u32::try_from(min_members).ok().filter(|n| *n <= MAX_MIN_MEMBERS as u32).ok_or_else(
                || LeaderboardError::from(FieldViolation::new("min_members", "must be 0 to 10000")),
            )?;
        let (employer_id, n) = self.writes.set_min_members(&caller, &employer_id, n).await?;
        let settings = Some(settings(employer_id, n));
        Ok(Response::new(pb::SetEmployerSettingsResponse { settings }))
    }
}

fn settings(employer_id: String, n: u32) -> pb::EmployerSettings {
    pb::EmployerSettings { employer_id, min_members: i32::try_from(n).unwrap_or(i32::MAX) }
}

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn entry(s: &Shown) -> pb::LeaderboardEntry {
    pb::LeaderboardEntry {
        rank: count(s.entry.rank),
        member: s.entry.member.clone(),
        score: s.entry.score,
        subscore: s.entry.subscore,
        position: count(s.entry.position),
        pseudonymous: s.pseudonymous,
    }
}

/// As [`entry`], taking the member id along instead of copying it.
fn owned_entry(s: Shown) -> pb::LeaderboardEntry {
    pb::LeaderboardEntry {
        rank: count(s.entry.rank),
        member: s.entry.member,
        score: s.entry.score,
        subscore: s.entry.subscore,
        position: count(s.entry.position),
        pseudonymous: s.pseudonymous,
    }
}

fn my_place(m: &MyPlace) -> pb::MyPlace {
    pb::MyPlace {
        entry: Some(entry(&Shown { entry: m.entry.clone(), pseudonymous: false })),
        top_percent: i32::try_from(m.top_percent).unwrap_or(100),
        page: count(m.page),
        page_token: paging::encode_token(&m.page_offset),
    }
}

fn view(s: View) -> pb::WatchLeaderboardResponse {
    pb::WatchLeaderboardResponse {
        board: s.board,
        entries: s.entries.into_iter().map(owned_entry).collect(),
        total_members: count(s.total_members),
        snapshot_time: Some(timestamp::to_proto(s.taken_at)),
        me: s.me.map(owned_entry),
        window: s.window.into_iter().map(owned_entry).collect(),
        notices: s
            .notices
            .into_iter()
            .map(|n| match n {
                Notice::Passed { old_rank, new_rank, other } => pb::RankNotice {
                    kind: pb::rank_notice::Kind::Passed as i32,
                    old_rank: count(old_rank),
                    new_rank: count(new_rank),
                    other,
                    gap: 0.0,
                },
                Notice::WithinReach { old_rank, new_rank, other, gap } => pb::RankNotice {
                    kind: pb::rank_notice::Kind::WithinReach as i32,
                    old_rank: count(old_rank),
                    new_rank: count(new_rank),
                    other,
                    gap,
                },
            })
            .collect(),
        period: s.period,
        withheld: s.withheld,
    }
}

/// One board's answer to GetPlaces.
fn place(board: &Board, result: Result<crate::service::Rank, LeaderboardError>) -> pb::Place {
    let status = |status: pb::PlaceStatus| pb::Place {
        board: board.to_string(),
        status: status as i32,
        ..Default::default()
    };
    match result {
        Ok(rank) => pb::Place {
            board: board.to_string(),
            status: pb::PlaceStatus::Ranked as i32,
            entry: Some(entry(&rank.me)),
            total_members: count(rank.total_members),
            period: rank.period,
        },
        Err(LeaderboardError::MemberNotOnBoard { .. }) => status(pb::PlaceStatus::NotOnBoard),
        Err(LeaderboardError::BoardNotFound { .. }) => status(pb::PlaceStatus::BoardNotFound),
        Err(LeaderboardError::Withheld { .. }) => status(pb::PlaceStatus::Withheld),
        Err(err) => {
            tracing::warn!(%board, error = format!("{:#}", anyhow::Error::new(err)), "a place could not be read");
            status(pb::PlaceStatus::Unavailable)
        }
    }
}
