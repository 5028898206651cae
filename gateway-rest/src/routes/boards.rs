//! REST routes of named leaderboards (issue #14): define a `board:<id>` board, read its
//! definition and periods, submit and void scores, read pages (both ways, with the caller's
//! own place), ranks of one or several members, a live Server-Sent Events stream with
//! rank-change notices, the caller's privacy and an employer's board settings.
//!
//! A board is named by its full `<kind>:<id>` as one path segment (`board:weekly-steps`,
//! `challenge:0194d3c2-…`, `quiz:…`), so every kind is read through the same routes. Every
//! route forwards the caller's token to the leaderboard service, which decides who may read
//! or write what (a board's audience is its owner's to say, on every door); the edge reads
//! shapes and maps them: JSON ↔ proto, the service's field paths into the body's camelCase
//! names, and a write's outcome into an HTTP status (201 stored, 200 a retry).
//!
//! # Layout
//! - this file: the handlers and their OpenAPI documentation.
//! - [`input`]: request bodies and query strings → requests (enum names, times, numbers).
//! - [`shapes`]: the JSON shapes and their mapping from proto.

use axum::{
    Extension, Json,
    body::Bytes,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode, header},
    response::IntoResponse,
};
use ewpm_kit::auth::Caller;
use ewpm_proto::leaderboard::v1 as lpb;

use crate::{
    AppState,
    challenges::{parse_body, parse_page_size},
    engagement::segment,
    problem::{ApiError, ApiResult, Problem},
    upstream,
};

pub mod input;
pub mod shapes;

pub use input::*;
pub use shapes::*;

/// `/api/boards/<board>`: the board's kind and id each percent-encoded, the `:` between
/// them kept (`board:weekly-steps` stays as it is).
pub fn board_location(board: &str) -> String {
    match board.split_once(':') {
        Some((kind, id)) => format!("/api/boards/{}:{}", segment(kind), segment(id)),
        None => format!("/api/boards/{}", segment(board)),
    }
}

/// Defines a new `board:<id>` board (admins; employer admins for their own employer).
#[utoipa::path(
    post, path = "/api/boards", tag = "boards",
    request_body = CreateBoardBody,
    responses(
        (status = 201, description = "Defined; `Location` is the board", body = BoardDto,
            headers(("Location" = String, description = "/api/boards/board:{boardId}"))),
        (status = 200, description = "A retry with the same definition: the existing board", body = BoardDto,
            headers(("Location" = String, description = "/api/boards/board:{boardId}"))),
        (status = 400, description = "A body that is not the shape (`body`), an unknown enum name (`operator`, `order`, `subscoreOrder`, `rankStyle`, `reset.kind`), or a value the service refuses (`boardId`, `reset.cron`, `reset.timeZone`, …), every bad field named", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin, or an employer admin defining a board of another employer", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The id is taken by another definition (`ALREADY_EXISTS`)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn create(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let request = create_board_request(parse_body(&body)?)?;
    let r = state
        .leaderboard
        .clone()
        .create_board(upstream::request(&headers, request))
        .await
        .map_err(|s| ApiError::from_status(&s, "definition."))?;
    let r = r.into_inner();
    let dto = board_dto(r.board.unwrap_or_default());
    let location = board_location(&dto.board);
    let status = if r.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, [(header::LOCATION, location)], Json(dto)).into_response())
}

/// A board's definition, with its current period and next reset time.
#[utoipa::path(
    get, path = "/api/boards/{board}", tag = "boards",
    params(("board" = String, Path, description = "Board name, `<kind>:<id>`, e.g. `board:weekly-steps`")),
    responses(
        (status = 200, description = "The definition", body = BoardDto),
        (status = 400, description = "A malformed board name", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such board visible to the caller (`BOARD_NOT_FOUND`)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(board): Path<String>,
) -> ApiResult<Json<BoardDto>> {
    let request = lpb::GetBoardRequest { board };
    let r = state.leaderboard.clone().get_board(upstream::request(&headers, request)).await?;
    Ok(Json(board_dto(r.into_inner().board.unwrap_or_default())))
}

/// The periods of a board, newest first: the open one, then the closed, archived ones.
#[utoipa::path(
    get, path = "/api/boards/{board}/periods", tag = "boards",
    params(("board" = String, Path, description = "Board name, `<kind>:<id>`"), PeriodsQuery),
    responses(
        (status = 200, description = "One page", body = PeriodPage),
        (status = 400, description = "A bad page size or token, or a malformed board name", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such board visible to the caller", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn periods(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(board): Path<String>,
    Query(q): Query<PeriodsQuery>,
) -> ApiResult<Json<PeriodPage>> {
    let PeriodsQuery { page_size, page_token } = q;
    let request = lpb::ListPeriodsRequest {
        board,
        page_size: parse_page_size(page_size.as_deref(), "pageSize")?,
        page_token: page_token.unwrap_or_default(),
    };
    let r = state.leaderboard.clone().list_periods(upstream::request(&headers, request)).await?;
    Ok(Json(period_page(r.into_inner())))
}

/// Records one score on a `board:` board, in the period of `occurredAt`.
#[utoipa::path(
    post, path = "/api/boards/{board}/scores", tag = "boards",
    params(
        ("board" = String, Path, description = "Board name, `board:<id>`"),
        ("Idempotency-Key" = Option<String>, Header, description = "The event id when the body has no `eventId`"),
    ),
    request_body = ScoreBody,
    responses(
        (status = 201, description = "Stored (`created: true`), with the member's place when the board could be read at once", body = ScoreAnswerDto),
        (status = 200, description = "A retry of a stored fact (same `eventId`, same body): the first outcome, `created: false`", body = ScoreAnswerDto),
        (status = 400, description = "A missing `score`, a bad `occurredAt`, or a value the service refuses (`eventId`, `score`, `subscore`, `occurredAt` too far ahead), every bad field named", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The board takes no scores from members, or a member submitting for someone else", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such board visible to the caller", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The `eventId` was used before with another body (`ALREADY_EXISTS`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The period of `occurredAt` is closed (`PERIOD_CLOSED`; FAILED_PRECONDITION)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(board): Path<String>,
    body: Bytes,
) -> ApiResult {
    let request =
        submit_score_request(board, parse_body(&body)?, upstream::idempotency_key(&headers))?;
    let r = state.leaderboard.clone().submit_score(upstream::request(&headers, request)).await?;
    let dto = score_dto(r.into_inner());
    let status = if dto.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(dto)).into_response())
}

/// One page of a board (or of one of its periods), best first, with the caller's own place.
#[utoipa::path(
    get, path = "/api/boards/{board}/entries", tag = "boards",
    params(("board" = String, Path, description = "Board name, `<kind>:<id>`"), EntriesQuery),
    responses(
        (status = 200, description = "One page; `me` is the caller's place (`null` off the board); `withheld` boards show no entries", body = BoardPageDto),
        (status = 400, description = "A bad page size, token, start rank or period", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such board (or period) visible to the caller", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn entries(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(board): Path<String>,
    Query(q): Query<EntriesQuery>,
) -> ApiResult<Json<BoardPageDto>> {
    let request = leaderboard_request(board.clone(), q)?;
    let r = state.leaderboard.clone().get_leaderboard(upstream::request(&headers, request)).await?;
    Ok(Json(page_dto(board, r.into_inner())))
}

/// A member's place (the caller's by default) and up to `neighbours` entries each side.
#[utoipa::path(
    get, path = "/api/boards/{board}/rank", tag = "boards",
    params(("board" = String, Path, description = "Board name, `<kind>:<id>`"), RankQuery),
    responses(
        (status = 200, description = "The member's entry, window, percentile and page", body = RankDto),
        (status = 400, description = "A bad number of neighbours, page size or period", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such board visible to the caller, or the member has no score on it", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn rank(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(board): Path<String>,
    Query(q): Query<RankQuery>,
) -> ApiResult<Json<RankDto>> {
    let request = rank_request(board, q)?;
    let r = state.leaderboard.clone().get_rank(upstream::request(&headers, request)).await?;
    Ok(Json(rank_dto(r.into_inner())))
}

/// The places of up to 100 members at once (a team view).
#[utoipa::path(
    get, path = "/api/boards/{board}/ranks", tag = "boards",
    params(("board" = String, Path, description = "Board name, `<kind>:<id>`"), RanksQuery),
    responses(
        (status = 200, description = "The members on the board, best first; members not on it are left out", body = RanksDto),
        (status = 400, description = "No member or more than 100 (`members`), or a bad period", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such board visible to the caller", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn ranks(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(board): Path<String>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> ApiResult<Json<RanksDto>> {
    let request = ranks_request(board, pairs);
    let r = state.leaderboard.clone().get_ranks(upstream::request(&headers, request)).await?;
    Ok(Json(ranks_dto(r.into_inner())))
}

/// A live stream of a board as Server-Sent Events: an `event: snapshot` whose data is a
/// [`SnapshotDto`] at once, then whenever the board changes (at most ~10 a second,
/// latest-wins), with the caller's place and rank-change notices when asked for. A failure
/// after the stream opened is an `event: error` with problem+json; comments keep idle
/// connections alive; the stream ends cleanly when the service shuts down.
#[utoipa::path(
    get, path = "/api/boards/{board}/stream", tag = "boards",
    params(("board" = String, Path, description = "Board name, `<kind>:<id>`"), StreamQuery),
    responses(
        (status = 200, description = "text/event-stream of `snapshot` events (SnapshotDto JSON)", content_type = "text/event-stream", body = SnapshotDto),
        (status = 400, description = "A bad `topN`, `neighbours`, flag or `notifyWithin`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such board visible to the caller", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn stream(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Path(board): Path<String>,
    Query(q): Query<StreamQuery>,
) -> ApiResult {
    let request = watch_request(board, q)?;
    let slot = state.streams.acquire(&caller)?;
    let request = upstream::stream_request(&headers, request);
    let snapshots = state.leaderboard.clone().watch_leaderboard(request).await?.into_inner();
    Ok(upstream::sse(slot, snapshots, "snapshot", |s| Some(snapshot_dto(s))))
}

/// Voids a member's entry on a board, or one fact (admins). The board is recounted without
/// it; archived periods never change.
#[utoipa::path(
    post, path = "/api/boards/{board}/voids", tag = "boards",
    params(("board" = String, Path, description = "Board name, `<kind>:<id>`")),
    request_body = VoidBody,
    responses(
        (status = 201, description = "Voided; the periods recounted", body = VoidAnswerDto),
        (status = 200, description = "It was void already (`created: false`)", body = VoidAnswerDto),
        (status = 400, description = "Neither or both of `member` and `eventId`, or a missing or too long `reason`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such board, member or fact", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn void(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(board): Path<String>,
    body: Bytes,
) -> ApiResult {
    let request = void_request(board, parse_body(&body)?);
    let r = state.leaderboard.clone().void_entry(upstream::request(&headers, request)).await?;
    let dto = void_dto(r.into_inner());
    let status = if dto.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(dto)).into_response())
}

/// The caller's privacy on boards.
#[utoipa::path(
    get, path = "/api/me/privacy", tag = "boards",
    responses((status = 200, description = "The caller's privacy", body = PrivacyDto)),
    security(("bearer" = []))
)]
pub async fn privacy(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Json<PrivacyDto>> {
    let request = lpb::GetPrivacyRequest {};
    let r = state.leaderboard.clone().get_privacy(upstream::request(&headers, request)).await?;
    Ok(Json(privacy_dto(r.into_inner().privacy.unwrap_or_default())))
}

/// Sets the caller's privacy: a hidden name shows as a stable pseudonym to everyone else
/// (the caller still sees their own id; admins see ids).
#[utoipa::path(
    put, path = "/api/me/privacy", tag = "boards",
    request_body = PrivacyBody,
    responses(
        (status = 200, description = "The caller's privacy now", body = PrivacyDto),
        (status = 400, description = "A missing `hideName`, or a body that is not the shape", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn set_privacy(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<PrivacyDto>> {
    let request = privacy_request(parse_body(&body)?)?;
    let r = state.leaderboard.clone().set_privacy(upstream::request(&headers, request)).await?;
    Ok(Json(privacy_dto(r.into_inner().privacy.unwrap_or_default())))
}

/// An employer's board settings (that employer's admins, admins).
#[utoipa::path(
    get, path = "/api/employers/{employerId}/board-settings", tag = "boards",
    params(("employerId" = String, Path, description = "The employer")),
    responses(
        (status = 200, description = "The settings", body = EmployerSettingsDto),
        (status = 403, description = "Not an admin of this employer", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn employer_settings(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(employer_id): Path<String>,
) -> ApiResult<Json<EmployerSettingsDto>> {
    let request = lpb::GetEmployerSettingsRequest { employer_id };
    let r = state
        .leaderboard
        .clone()
        .get_employer_settings(upstream::request(&headers, request))
        .await?;
    Ok(Json(employer_settings_dto(r.into_inner().settings.unwrap_or_default())))
}

/// Sets an employer's board settings: the fewest members a board must have before anyone but
/// admins sees its entries.
#[utoipa::path(
    put, path = "/api/employers/{employerId}/board-settings", tag = "boards",
    params(("employerId" = String, Path, description = "The employer")),
    request_body = EmployerSettingsBody,
    responses(
        (status = 200, description = "The settings now", body = EmployerSettingsDto),
        (status = 400, description = "A missing `minMembers`, or one outside 0–10,000", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin of this employer", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn set_employer_settings(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(employer_id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<EmployerSettingsDto>> {
    let request = employer_settings_request(employer_id, parse_body(&body)?)?;
    let r = state
        .leaderboard
        .clone()
        .set_employer_settings(upstream::request(&headers, request))
        .await?;
    Ok(Json(employer_settings_dto(r.into_inner().settings.unwrap_or_default())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_board_location_keeps_the_colon_and_encodes_the_rest() {
        assert_eq!(board_location("board:weekly-steps"), "/api/boards/board:weekly-steps");
        assert_eq!(
            board_location("challenge:0194d3c2-5b1e-7c4f-9a51-2d3e4f5a6b7c"),
            "/api/boards/challenge:0194d3c2-5b1e-7c4f-9a51-2d3e4f5a6b7c"
        );
        assert_eq!(board_location("board:a b/c:d"), "/api/boards/board:a%20b%2Fc%3Ad");
    }
}
