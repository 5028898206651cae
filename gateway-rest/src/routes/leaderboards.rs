//! REST routes of progress and leaderboards: submit progress (202), read a challenge's board,
//! the caller's place on it, and a live Server-Sent Events stream of its top N.
//!
//! Board reads first ask the challenge service for the challenge with the caller's token, so
//! a challenge the caller may not see answers 404 here exactly as `GET /api/challenges/{id}`
//! does, and an unknown id is a 404 rather than an empty board. A yes is remembered for
//! [`crate::VISIBLE_FOR`] per challenge and audience (admin, or the caller's employer), which
//! is all a challenge's visibility depends on; a no is never remembered.

use axum::{
    Extension, Json,
    body::Bytes,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode, header},
    response::IntoResponse,
};
use base64::Engine;
use ewpm_kit::auth::Caller;
use ewpm_proto::{challenge::v1 as cpb, leaderboard::v1 as lpb, progress::v1 as ppb};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::{
    AppState,
    boards::parse_whole,
    challenges::{parse_body, parse_time},
    problem::{ApiError, ApiResult, Problem},
    upstream,
};

/// Body of `POST /api/challenges/{id}/progress`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProgressBody {
    /// Amount of progress in the goal's unit: > 0, at most 1,000,000.
    pub value: f64,
    /// When it happened (RFC 3339); default now.
    pub occurred_at: Option<String>,
    /// Makes a retry safe (also accepted as the `Idempotency-Key` header).
    pub idempotency_key: Option<String>,
}

/// Submits progress for the caller; answered once it is durably queued.
#[utoipa::path(
    post, path = "/api/challenges/{id}/progress", tag = "progress",
    params(("id" = String, Path, description = "Challenge id")),
    request_body = ProgressBody,
    responses(
        (status = 202, description = "Queued; it reaches the leaderboard within the flush interval", body = ppb::SubmitProgressResponse),
        (status = 400, description = "Bad field, or an idempotency key reused with another body", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such challenge visible to the caller", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The challenge is not active at that time", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let ProgressBody { value, occurred_at, idempotency_key } = parse_body(&body)?;
    let occurred_at = parse_time(occurred_at.as_deref(), "occurredAt")?;
    let header_key = upstream::idempotency_key(&headers);
    let request = ppb::SubmitProgressRequest {
        challenge_id: id,
        value,
        occurred_at,
        idempotency_key: idempotency_key.or(header_key).unwrap_or_default(),
    };
    let r = state.progress.clone().submit_progress(upstream::request(&headers, request)).await?;
    // The answer is SubmitProgressResponse as proto JSON (derived: see ewpm_proto::rest).
    Ok((StatusCode::ACCEPTED, Json(r.into_inner())).into_response())
}

/// One place on a board.
///
/// The fields the leaderboard contract gained later (issue #14) appear only when they say
/// something: a board without a subscore and a member who shows their id answer exactly the
/// JSON they always did. `GET /api/boards/{board}/entries` has every field, always.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EntryDto {
    /// Competition rank (ties share a rank: 1, 2, 2, 4).
    pub rank: i64,
    /// The user; a hidden user's stable pseudonym (`anon-…`) to other callers.
    pub user_id: String,
    /// Their total.
    pub score: f64,
    /// The tie-break subscore; left out when 0 (boards without one).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub subscore: f64,
    /// `true` when `userId` is a pseudonym; left out otherwise.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pseudonymous: bool,
}

fn is_zero(n: &f64) -> bool {
    *n == 0.0
}

/// The REST shape of an entry on the challenge and quiz routes.
pub fn entry_dto(e: lpb::LeaderboardEntry) -> EntryDto {
    let lpb::LeaderboardEntry { rank, member, score, subscore, position: _, pseudonymous } = e;
    EntryDto { rank, user_id: member, score, subscore, pseudonymous }
}

/// A period worth naming in the challenge and quiz routes: `None` for `all` (a board that
/// never resets, which every challenge and quiz board is) and for none.
pub fn named_period(period: String) -> Option<String> {
    (!period.is_empty() && period != "all").then_some(period)
}

/// A page of a challenge's leaderboard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeaderboardDto {
    /// The challenge.
    pub challenge_id: String,
    /// Best first; within a tie, by user id descending.
    pub entries: Vec<EntryDto>,
    /// Users on the board.
    pub total_members: i64,
    /// Pass as `pageToken` for the next page; empty on the last page.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub next_page_token: String,
    /// Pass as `pageToken` for the page before; left out on the first page.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub prev_page_token: String,
    /// The period read; left out for `all` (challenge boards never reset).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub period: Option<String>,
    /// `true` when the board has fewer members than its employer's minimum (no entries are
    /// shown but to admins); left out otherwise.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub withheld: bool,
}

/// Query of `GET /api/challenges/{id}/leaderboard` (and the quiz session's).
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct BoardQuery {
    /// Entries: default 10, at most 100.
    pub limit: Option<String>,
    /// `nextPageToken` (or `prevPageToken`) of an earlier page.
    pub page_token: Option<String>,
    /// Start the page at the N-th entry in board order (ignored with a `pageToken`).
    pub start_rank: Option<String>,
    /// A period id; omit for the current one.
    pub period: Option<String>,
}

/// Query of `GET /api/challenges/{id}/leaderboard/stream`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct StreamLimitQuery {
    /// Entries in each snapshot: default 10, at most 100.
    pub limit: Option<String>,
}

/// The request of a leaderboard page route (`limit`, `pageToken`, `startRank`, `period`),
/// its board left for the route to name once the caller may see it.
pub(crate) fn page_request(q: BoardQuery) -> ApiResult<lpb::GetLeaderboardRequest> {
    let BoardQuery { limit, page_token, start_rank, period } = q;
    Ok(lpb::GetLeaderboardRequest {
        board: String::new(),
        page_size: parse_limit(limit.as_deref(), "limit")?,
        page_token: page_token.unwrap_or_default(),
        start_rank: parse_whole(start_rank.as_deref(), "startRank")?,
        period: period.unwrap_or_default(),
    })
}

fn entries(list: Vec<lpb::LeaderboardEntry>) -> Vec<EntryDto> {
    list.into_iter().map(entry_dto).collect()
}

pub(crate) fn parse_limit(raw: Option<&str>, field: &str) -> ApiResult<i32> {
    match raw {
        None | Some("") => Ok(0),
        Some(raw) => match raw.parse::<i32>() {
            Ok(n) if (1..=100).contains(&n) => Ok(n),
            _ => Err(Problem::bad_request(field, "must be a whole number from 1 to 100").into()),
        },
    }
}

/// Checks that the caller may see challenge `id`; answers its board name.
async fn board_of(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    id: &str,
) -> ApiResult<String> {
    let key = crate::Audience::of(caller, id);
    if let Some(board) = state.visible.get(&key) {
        return Ok(board);
    }
    let request = cpb::GetChallengeRequest { id: id.to_string() };
    let c = state.challenge.clone().get_challenge(upstream::request(headers, request)).await?;
    let id = c.into_inner().challenge.map(|c| c.id).unwrap_or_default();
    let board = format!("challenge:{id}");
    state.visible.put(key, board.clone());
    Ok(board)
}

/// The top of a challenge's leaderboard.
#[utoipa::path(
    get, path = "/api/challenges/{id}/leaderboard", tag = "progress",
    params(("id" = String, Path, description = "Challenge id"), BoardQuery),
    responses(
        (status = 200, description = "Best first", body = LeaderboardDto),
        (status = 404, description = "No such challenge visible to the caller", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn leaderboard(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<BoardQuery>,
) -> ApiResult<Json<LeaderboardDto>> {
    let mut request = page_request(q)?;
    request.board = board_of(&state, &caller, &headers, &id).await?;
    let r = state.leaderboard.clone().get_leaderboard(upstream::request(&headers, request)).await?;
    // The caller's own place (`me`) is left out: `/leaderboard/me` answers it, and this
    // route's JSON stays as it was for a caller on the board.
    let lpb::GetLeaderboardResponse {
        entries: list,
        next_page_token,
        total_members,
        prev_page_token,
        me: _,
        period,
        withheld,
    } = r.into_inner();
    Ok(Json(LeaderboardDto {
        challenge_id: id,
        entries: entries(list),
        total_members,
        next_page_token,
        prev_page_token,
        period: named_period(period),
        withheld,
    }))
}

/// The caller's place on a board.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeDto {
    /// The challenge.
    pub challenge_id: String,
    /// The caller's entry; absent while they have no score on the board.
    pub me: Option<EntryDto>,
    /// The caller and up to `neighbours` entries above and below, best first.
    pub window: Vec<EntryDto>,
    /// Users on the board.
    pub total_members: i64,
    /// "Top N %" of the caller, `ceil(100 * rank / totalMembers)`; left out while `me` is
    /// `null`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub top_percent: Option<i32>,
    /// The period read; left out for `all` (challenge boards never reset).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub period: Option<String>,
}

/// Query of `GET /api/challenges/{id}/leaderboard/me`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct MeQuery {
    /// Entries above and below the caller: default 2, at most 50.
    pub neighbours: Option<String>,
    /// A period id; omit for the current one.
    pub period: Option<String>,
}

/// The `sub` of the bearer token, read (not verified: the service verifies it) to name the
/// caller in the request.
fn subject(headers: &HeaderMap) -> ApiResult<String> {
    let unauthenticated = || -> ApiError {
        Problem::new(StatusCode::UNAUTHORIZED, "MISSING_TOKEN", "a bearer token is required").into()
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(unauthenticated)?;
    let payload = token.split('.').nth(1).ok_or_else(unauthenticated)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| unauthenticated())?;
    #[derive(Deserialize)]
    struct Sub {
        sub: String,
    }
    serde_json::from_slice::<Sub>(&bytes).map(|s| s.sub).map_err(|_| unauthenticated())
}

/// The caller's rank and neighbours on a challenge's leaderboard.
#[utoipa::path(
    get, path = "/api/challenges/{id}/leaderboard/me", tag = "progress",
    params(("id" = String, Path, description = "Challenge id"), MeQuery),
    responses(
        (status = 200, description = "The caller's place (`me` absent before their first points)", body = MeDto),
        (status = 404, description = "No such challenge visible to the caller", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn me(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<MeQuery>,
) -> ApiResult<Json<MeDto>> {
    let neighbours = match q.neighbours.as_deref() {
        None | Some("") => 2,
        Some(raw) => raw.parse::<i32>().ok().filter(|n| (0..=50).contains(n)).ok_or_else(|| {
            Problem::bad_request("neighbours", "must be a whole number from 0 to 50")
        })?,
    };
    let period = q.period.unwrap_or_default();
    let member = subject(&headers)?;
    let board = board_of(&state, &caller, &headers, &id).await?;
    let request = lpb::GetRankRequest {
        board: board.clone(),
        member,
        neighbours,
        period: period.clone(),
        page_size: 0,
    };
    match state.leaderboard.clone().get_rank(upstream::request(&headers, request)).await {
        Ok(r) => {
            let lpb::GetRankResponse { entry, window, total_members, top_percent, page: _, period } =
                r.into_inner();
            Ok(Json(MeDto {
                challenge_id: id,
                top_percent: entry.is_some().then_some(top_percent),
                me: entry.map(entry_dto),
                window: entries(window),
                total_members,
                period: named_period(period),
            }))
        }
        Err(status) if status.code() == tonic::Code::NotFound => {
            let request = lpb::GetLeaderboardRequest {
                board,
                page_size: 1,
                page_token: String::new(),
                start_rank: 0,
                period,
            };
            let r = state
                .leaderboard
                .clone()
                .get_leaderboard(upstream::request(&headers, request))
                .await?
                .into_inner();
            Ok(Json(MeDto {
                challenge_id: id,
                me: None,
                window: Vec::new(),
                total_members: r.total_members,
                top_percent: None,
                period: named_period(r.period),
            }))
        }
        Err(status) => Err(status.into()),
    }
}

/// A live stream of a challenge's top N as Server-Sent Events: an `event: snapshot` whose
/// data is a [`LeaderboardDto`] at once, then whenever the top N changes (at most ~10 a
/// second). Comments keep idle connections alive.
#[utoipa::path(
    get, path = "/api/challenges/{id}/leaderboard/stream", tag = "progress",
    params(("id" = String, Path, description = "Challenge id"), StreamLimitQuery),
    responses(
        (status = 200, description = "text/event-stream of `snapshot` events (LeaderboardDto JSON)", content_type = "text/event-stream"),
        (status = 404, description = "No such challenge visible to the caller", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn stream(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<StreamLimitQuery>,
) -> ApiResult {
    let top_n = parse_limit(q.limit.as_deref(), "limit")?;
    let slot = state.streams.acquire(&caller)?;
    let board = board_of(&state, &caller, &headers, &id).await?;
    // The caller's place and notices are `GET /api/boards/challenge:{id}/stream`'s.
    let request = lpb::WatchLeaderboardRequest {
        board,
        top_n,
        neighbours: 0,
        with_me: false,
        notify_passed: false,
        notify_within: 0.0,
    };
    let request = upstream::stream_request(&headers, request);
    let snapshots = state.leaderboard.clone().watch_leaderboard(request).await?.into_inner();
    Ok(upstream::sse(slot, snapshots, "snapshot", move |s: lpb::WatchLeaderboardResponse| {
        let lpb::WatchLeaderboardResponse {
            board: _,
            entries: list,
            total_members,
            snapshot_time: _,
            me: _,
            window: _,
            notices: _,
            period,
            withheld,
        } = s;
        Some(LeaderboardDto {
            challenge_id: id.clone(),
            entries: entries(list),
            total_members,
            next_page_token: String::new(),
            prev_page_token: String::new(),
            period: named_period(period),
            withheld,
        })
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64, nanos: i32) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds, nanos })
    }

    #[test]
    fn an_accepted_entry_answers_exactly_this_json() {
        let r = ppb::SubmitProgressResponse {
            entry_id: "e-1".into(),
            challenge_id: "c-1".into(),
            user_id: "u-1".into(),
            value: 12.0,
            occurred_at: at(1_767_225_600, 0),
            accept_time: at(1_767_225_601, 250_000_000),
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            concat!(
                r#"{"entryId":"e-1","challengeId":"c-1","userId":"u-1","value":12.0,"#,
                r#""occurredAt":"2026-01-01T00:00:00Z","acceptTime":"2026-01-01T00:00:01.250Z"}"#
            )
        );
    }

    #[test]
    fn a_challenge_board_entry_answers_the_json_it_always_did() {
        let e = lpb::LeaderboardEntry {
            rank: 1,
            member: "bob".into(),
            score: 55.0,
            subscore: 0.0,
            position: 0,
            pseudonymous: false,
        };
        assert_eq!(
            serde_json::to_string(&entry_dto(e.clone())).unwrap(),
            r#"{"rank":1,"userId":"bob","score":55.0}"#
        );
        let hidden = lpb::LeaderboardEntry {
            member: "anon-7f3a".into(),
            subscore: 2.0,
            pseudonymous: true,
            ..e
        };
        assert_eq!(
            serde_json::to_string(&entry_dto(hidden)).unwrap(),
            r#"{"rank":1,"userId":"anon-7f3a","score":55.0,"subscore":2.0,"pseudonymous":true}"#
        );
    }

    #[test]
    fn a_challenge_board_page_leaves_out_what_it_did_not_have_before() {
        let page = LeaderboardDto {
            challenge_id: "c-1".into(),
            entries: Vec::new(),
            total_members: 0,
            next_page_token: String::new(),
            prev_page_token: String::new(),
            period: named_period("all".into()),
            withheld: false,
        };
        assert_eq!(
            serde_json::to_string(&page).unwrap(),
            r#"{"challengeId":"c-1","entries":[],"totalMembers":0}"#
        );
        let page = LeaderboardDto {
            prev_page_token: "p".into(),
            period: named_period("2026-W49".into()),
            withheld: true,
            ..page
        };
        assert_eq!(
            serde_json::to_string(&page).unwrap(),
            r#"{"challengeId":"c-1","entries":[],"totalMembers":0,"prevPageToken":"p","period":"2026-W49","withheld":true}"#
        );
    }

    #[test]
    fn a_page_query_passes_start_rank_and_period_through() {
        let q = BoardQuery {
            limit: Some("5".into()),
            page_token: None,
            start_rank: Some("11".into()),
            period: Some("2026-11".into()),
        };
        assert_eq!(
            page_request(q).unwrap(),
            lpb::GetLeaderboardRequest {
                board: String::new(),
                page_size: 5,
                page_token: String::new(),
                start_rank: 11,
                period: "2026-11".into(),
            }
        );
        let q = BoardQuery { start_rank: Some("first".into()), ..BoardQuery::default() };
        let ApiError(problem) = page_request(q).unwrap_err();
        assert_eq!(problem.errors[0].field, "startRank");
    }

    #[test]
    fn an_accepted_entry_without_times_answers_empty_strings_for_them() {
        let r = ppb::SubmitProgressResponse { value: 0.5, ..Default::default() };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"entryId":"","challengeId":"","userId":"","value":0.5,"occurredAt":"","acceptTime":""}"#
        );
    }
}
