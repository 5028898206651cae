//! Request bodies and query strings of the board routes → leaderboard requests.
//!
//! The edge reads shapes only: JSON types (serde, a 400 on `body`), enum names (a 400 naming
//! the field, every bad one at once), RFC 3339 times and whole numbers. Every rule of the
//! values (id alphabets, ranges, cron syntax, time zones) is the leaderboard service's, whose
//! violations come back under the body's camelCase names.

use ewpm_proto::leaderboard::v1 as lpb;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::shapes::{OPERATORS, ORDERS, RANK_STYLES, RESET_KINDS};
use crate::{
    challenges::{parse_page_size, parse_time},
    incentives::{parse_flag, parse_optional},
    problem::{ApiError, ApiResult, FieldError, Problem},
};

/// Body of `POST /api/boards`: every field but `boardId` is optional.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateBoardBody {
    /// The new board's id, `[a-z0-9_-]{1,64}`; the board is named `board:<boardId>`.
    #[schema(example = "weekly-steps")]
    #[serde(default)]
    pub board_id: String,
    /// A title for people.
    #[serde(default)]
    pub title: String,
    /// `sum` (default), `best` or `set` (the latest fact).
    #[schema(example = "sum")]
    pub operator: Option<String>,
    /// `desc` (default: highest first) or `asc` (lowest first).
    #[schema(example = "desc")]
    pub order: Option<String>,
    /// The tie-break subscore's order, `desc` or `asc`; `null` (default) for no subscore.
    #[schema(example = "asc")]
    pub subscore_order: Option<String>,
    /// `competition` (default: 1, 2, 2, 4) or `dense` (1, 2, 2, 3).
    #[schema(example = "competition")]
    pub rank_style: Option<String>,
    /// When the board resets; never by default.
    pub reset: Option<ResetBody>,
    /// Whose people may read the board; omit for everyone (admins) or your own employer
    /// (employer admins).
    pub employer_id: Option<String>,
    /// Whether members may submit their own scores (default false).
    #[serde(default)]
    pub members_submit: bool,
}

/// A reset schedule in a request.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResetBody {
    /// `never` (default), `daily`, `weekly`, `monthly` or `cron`.
    #[schema(example = "weekly")]
    pub kind: Option<String>,
    /// For `cron`: five fields, `minute hour day-of-month month day-of-week`.
    #[schema(example = "0 9 * * MON")]
    pub cron: Option<String>,
    /// IANA time zone of the schedule; UTC when omitted.
    #[schema(example = "Europe/Paris")]
    pub time_zone: Option<String>,
}

/// Body of `POST /api/boards/{board}/scores`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScoreBody {
    /// Whose score; omit for the caller's own.
    pub member: Option<String>,
    /// The fact's value.
    pub score: Option<f64>,
    /// Tie-break subscore; ignored by boards without one.
    pub subscore: Option<f64>,
    /// The caller's id of this fact, 1–64 characters, unique per board: retries reuse it
    /// (the `Idempotency-Key` header works too).
    #[schema(example = "watch-7731")]
    pub event_id: Option<String>,
    /// When it happened, RFC 3339 (default now; at most 5 minutes ahead). Decides the
    /// period.
    pub occurred_at: Option<String>,
}

/// Body of `POST /api/boards/{board}/voids`: a `member` (everything of theirs) or an
/// `eventId` (one fact).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VoidBody {
    /// Void everything of this member on the board.
    pub member: Option<String>,
    /// Void this one fact (a progress entry id, a quiz answer id, a score's event id).
    pub event_id: Option<String>,
    /// Why, for the audit trail (1–500 characters).
    #[serde(default)]
    pub reason: String,
}

/// Body of `PUT /api/me/privacy`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrivacyBody {
    /// Show a stable pseudonym instead of your id to others.
    pub hide_name: Option<bool>,
}

/// Body of `PUT /api/employers/{employerId}/board-settings`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EmployerSettingsBody {
    /// The fewest members a board of this employer must have before anyone but admins sees
    /// its entries: 0 (always shown) to 10,000.
    pub min_members: Option<i32>,
}

/// Query of `GET /api/boards/{board}/periods`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct PeriodsQuery {
    /// Periods per page: default 10, at most 100.
    pub page_size: Option<String>,
    /// `nextPageToken` of the previous page.
    pub page_token: Option<String>,
}

/// Query of `GET /api/boards/{board}/entries`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct EntriesQuery {
    /// Entries per page: default 10, at most 100.
    pub page_size: Option<String>,
    /// A `nextPageToken` or `prevPageToken` of an earlier page.
    pub page_token: Option<String>,
    /// Start the page at the N-th entry in board order (ignored with a `pageToken`); 0 or 1
    /// for the top.
    pub start_rank: Option<String>,
    /// A period id (see `/periods`); omit for the current one.
    pub period: Option<String>,
}

/// Query of `GET /api/boards/{board}/rank`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct RankQuery {
    /// The member to place; omit for the caller.
    pub member: Option<String>,
    /// Entries above and below the member: 0 (default) to 50.
    pub neighbours: Option<String>,
    /// A period id; omit for the current one.
    pub period: Option<String>,
    /// The page size `page` in the answer counts in: default 10, at most 100.
    pub page_size: Option<String>,
}

/// Query of `GET /api/boards/{board}/ranks` (documentation only: the query is read as
/// pairs, since `member` repeats).
#[derive(Debug, Clone, Default, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RanksQuery {
    /// A member id; repeat it for more (`member=a&member=b`); 1 to 100 members in all with
    /// `members`.
    pub member: Option<Vec<String>>,
    /// Member ids, comma-separated (`members=a,b`); adds to `member`.
    pub members: Option<String>,
    /// A period id; omit for the current one.
    pub period: Option<String>,
}

/// Query of `GET /api/boards/{board}/stream`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// How many of the best entries each snapshot holds: default 10, at most 100.
    pub top_n: Option<String>,
    /// With `withMe`: entries above and below the caller in `window` (0–50).
    pub neighbours: Option<String>,
    /// Send the caller's own place (`me`, `window`) with each snapshot.
    pub with_me: Option<String>,
    /// Tell the caller when someone passes them (a `passed` notice).
    pub notify_passed: Option<String>,
    /// Tell the caller when they come within this many points of the entry above (a
    /// `within_reach` notice); 0 or omitted: off.
    pub notify_within: Option<String>,
}

/// The value of `result`, or `None` with its field errors added to `bad`.
fn collect<T>(result: ApiResult<T>, bad: &mut Vec<FieldError>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(ApiError(problem)) => {
            bad.extend(problem.errors);
            None
        }
    }
}

/// An optional enum field as its proto number (0, unspecified, when absent).
fn enum_field<E: Copy + Into<i32>>(
    table: &[(&str, E)],
    raw: Option<&str>,
    field: &str,
    bad: &mut Vec<FieldError>,
) -> i32 {
    collect(parse_optional(table, raw, field), bad).flatten().map_or(0, Into::into)
}

/// The request of `POST /api/boards`: every bad enum name named at once.
pub fn create_board_request(body: CreateBoardBody) -> ApiResult<lpb::CreateBoardRequest> {
    let CreateBoardBody {
        board_id,
        title,
        operator,
        order,
        subscore_order,
        rank_style,
        reset,
        employer_id,
        members_submit,
    } = body;
    let mut bad = Vec::new();
    let operator = enum_field(OPERATORS, operator.as_deref(), "operator", &mut bad);
    let order = enum_field(ORDERS, order.as_deref(), "order", &mut bad);
    let subscore_order = enum_field(ORDERS, subscore_order.as_deref(), "subscoreOrder", &mut bad);
    let rank_style = enum_field(RANK_STYLES, rank_style.as_deref(), "rankStyle", &mut bad);
    let reset = reset.map(|r| {
        let ResetBody { kind, cron, time_zone } = r;
        lpb::Reset {
            kind: enum_field(RESET_KINDS, kind.as_deref(), "reset.kind", &mut bad),
            cron: cron.unwrap_or_default(),
            time_zone: time_zone.unwrap_or_default(),
        }
    });
    if !bad.is_empty() {
        return Err(Problem::invalid(bad).into());
    }
    Ok(lpb::CreateBoardRequest {
        board_id,
        definition: Some(lpb::BoardDefinition {
            board: String::new(),
            title,
            operator,
            order,
            subscore_order,
            rank_style,
            reset,
            employer_id: employer_id.unwrap_or_default(),
            members_submit,
            owner: String::new(),
            create_time: None,
            current_period: String::new(),
            next_reset_time: None,
        }),
    })
}

/// The request of `POST /api/boards/{board}/scores`; `header_key` (the `Idempotency-Key`
/// header) is the event id when the body names none.
pub fn submit_score_request(
    board: String,
    body: ScoreBody,
    header_key: Option<String>,
) -> ApiResult<lpb::SubmitScoreRequest> {
    let ScoreBody { member, score, subscore, event_id, occurred_at } = body;
    let mut bad = Vec::new();
    if score.is_none() {
        bad.push(FieldError { field: "score".into(), description: "is required".into() });
    }
    let occurred_at = collect(parse_time(occurred_at.as_deref(), "occurredAt"), &mut bad);
    if !bad.is_empty() {
        return Err(Problem::invalid(bad).into());
    }
    Ok(lpb::SubmitScoreRequest {
        board,
        member: member.unwrap_or_default(),
        score: score.unwrap_or_default(),
        subscore: subscore.unwrap_or_default(),
        event_id: event_id.or(header_key).unwrap_or_default(),
        occurred_at: occurred_at.flatten(),
    })
}

/// The request of `GET /api/boards/{board}/entries`.
pub fn leaderboard_request(
    board: String,
    q: EntriesQuery,
) -> ApiResult<lpb::GetLeaderboardRequest> {
    let EntriesQuery { page_size, page_token, start_rank, period } = q;
    let mut bad = Vec::new();
    let page_size = collect(parse_page_size(page_size.as_deref(), "pageSize"), &mut bad);
    let start_rank = collect(parse_whole(start_rank.as_deref(), "startRank"), &mut bad);
    match (page_size, start_rank) {
        (Some(page_size), Some(start_rank)) => Ok(lpb::GetLeaderboardRequest {
            board,
            page_size,
            page_token: page_token.unwrap_or_default(),
            start_rank,
            period: period.unwrap_or_default(),
        }),
        _ => Err(Problem::invalid(bad).into()),
    }
}

/// The request of `GET /api/boards/{board}/rank`.
pub fn rank_request(board: String, q: RankQuery) -> ApiResult<lpb::GetRankRequest> {
    let RankQuery { member, neighbours, period, page_size } = q;
    let mut bad = Vec::new();
    let neighbours = collect(parse_page_size(neighbours.as_deref(), "neighbours"), &mut bad);
    let page_size = collect(parse_page_size(page_size.as_deref(), "pageSize"), &mut bad);
    match (neighbours, page_size) {
        (Some(neighbours), Some(page_size)) => Ok(lpb::GetRankRequest {
            board,
            member: member.unwrap_or_default(),
            neighbours,
            period: period.unwrap_or_default(),
            page_size,
        }),
        _ => Err(Problem::invalid(bad).into()),
    }
}

/// The request of `GET /api/boards/{board}/ranks` from the query's pairs: every `member`,
/// then every id of every comma-separated `members`, in order; the last `period`. Other
/// parameters are ignored, as on every route.
pub fn ranks_request(board: String, pairs: Vec<(String, String)>) -> lpb::GetRanksRequest {
    let mut members = Vec::new();
    let mut period = String::new();
    for (name, value) in pairs {
        match name.as_str() {
            "member" => members.push(value),
            "members" => members.extend(
                value.split(',').map(str::trim).filter(|m| !m.is_empty()).map(str::to_string),
            ),
            "period" => period = value,
            _ => {}
        }
    }
    lpb::GetRanksRequest { board, members, period }
}

/// The request of `GET /api/boards/{board}/stream`.
pub fn watch_request(board: String, q: StreamQuery) -> ApiResult<lpb::WatchLeaderboardRequest> {
    let StreamQuery { top_n, neighbours, with_me, notify_passed, notify_within } = q;
    let mut bad = Vec::new();
    let top_n = collect(parse_page_size(top_n.as_deref(), "topN"), &mut bad);
    let neighbours = collect(parse_page_size(neighbours.as_deref(), "neighbours"), &mut bad);
    let with_me = collect(parse_flag(with_me.as_deref(), "withMe"), &mut bad);
    let notify_passed = collect(parse_flag(notify_passed.as_deref(), "notifyPassed"), &mut bad);
    let notify_within = collect(parse_points(notify_within.as_deref(), "notifyWithin"), &mut bad);
    match (top_n, neighbours, with_me, notify_passed, notify_within) {
        (
            Some(top_n),
            Some(neighbours),
            Some(with_me),
            Some(notify_passed),
            Some(notify_within),
        ) => Ok(lpb::WatchLeaderboardRequest {
            board,
            top_n,
            neighbours,
            with_me,
            notify_passed,
            notify_within,
        }),
        _ => Err(Problem::invalid(bad).into()),
    }
}

/// The request of `POST /api/boards/{board}/voids`.
pub fn void_request(board: String, body: VoidBody) -> lpb::VoidEntryRequest {
    let VoidBody { member, event_id, reason } = body;
    lpb::VoidEntryRequest {
        board,
        member: member.unwrap_or_default(),
        event_id: event_id.unwrap_or_default(),
        reason,
    }
}

/// The request of `PUT /api/me/privacy`.
pub fn privacy_request(body: PrivacyBody) -> ApiResult<lpb::SetPrivacyRequest> {
    let PrivacyBody { hide_name } = body;
    let hide_name = hide_name.ok_or_else(|| Problem::bad_request("hideName", "is required"))?;
    Ok(lpb::SetPrivacyRequest { hide_name })
}

/// The request of `PUT /api/employers/{employerId}/board-settings`.
pub fn employer_settings_request(
    employer_id: String,
    body: EmployerSettingsBody,
) -> ApiResult<lpb::SetEmployerSettingsRequest> {
    let EmployerSettingsBody { min_members } = body;
    let min_members =
        min_members.ok_or_else(|| Problem::bad_request("minMembers", "is required"))?;
    Ok(lpb::SetEmployerSettingsRequest { employer_id, min_members })
}

/// A whole-number query parameter named `field` (int64); absent is 0. The service checks
/// the range.
pub(crate) fn parse_whole(raw: Option<&str>, field: &str) -> ApiResult<i64> {
    match raw {
        None | Some("") => Ok(0),
        Some(raw) => {
            raw.parse().map_err(|_| Problem::bad_request(field, "must be a whole number").into())
        }
    }
}

/// A finite number of points named `field`; absent is 0.
fn parse_points(raw: Option<&str>, field: &str) -> ApiResult<f64> {
    match raw {
        None | Some("") => Ok(0.0),
        Some(raw) => raw
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite())
            .ok_or_else(|| Problem::bad_request(field, "must be a number").into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(result: ApiResult<impl std::fmt::Debug>) -> Vec<(String, String)> {
        let Err(ApiError(problem)) = result else { panic!("accepted: {result:?}") };
        assert_eq!((problem.status, problem.reason.as_str()), (400, "INVALID_ARGUMENT"));
        problem.errors.into_iter().map(|e| (e.field, e.description)).collect()
    }

    fn body<T: serde::de::DeserializeOwned>(json: serde_json::Value) -> T {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_board_body_with_every_field_becomes_this_definition() {
        let request = create_board_request(body(serde_json::json!({
            "boardId": "fastest-5k", "title": "Fastest 5k", "operator": "best", "order": "asc",
            "subscoreOrder": "desc", "rankStyle": "dense",
            "reset": {"kind": "cron", "cron": "0 9 * * MON", "timeZone": "Europe/Paris"},
            "employerId": "acme", "membersSubmit": true
        })))
        .unwrap();
        assert_eq!(
            request,
            lpb::CreateBoardRequest {
                board_id: "fastest-5k".into(),
                definition: Some(lpb::BoardDefinition {
                    board: String::new(),
                    title: "Fastest 5k".into(),
                    operator: lpb::ScoreOperator::Best as i32,
                    order: lpb::SortOrder::Ascending as i32,
                    subscore_order: lpb::SortOrder::Descending as i32,
                    rank_style: lpb::RankStyle::Dense as i32,
                    reset: Some(lpb::Reset {
                        kind: lpb::ResetKind::Cron as i32,
                        cron: "0 9 * * MON".into(),
                        time_zone: "Europe/Paris".into(),
                    }),
                    employer_id: "acme".into(),
                    members_submit: true,
                    owner: String::new(),
                    create_time: None,
                    current_period: String::new(),
                    next_reset_time: None,
                }),
            }
        );
    }

    #[test]
    fn a_board_body_with_only_an_id_leaves_every_enum_to_the_service_default() {
        let request = create_board_request(body(serde_json::json!({"boardId": "steps"}))).unwrap();
        let definition = request.definition.unwrap();
        assert_eq!(
            (
                definition.operator,
                definition.order,
                definition.subscore_order,
                definition.rank_style,
                definition.reset
            ),
            (0, 0, 0, 0, None)
        );
        let request = create_board_request(body(
            serde_json::json!({"boardId": "steps", "subscoreOrder": null, "reset": {}}),
        ))
        .unwrap();
        let definition = request.definition.unwrap();
        assert_eq!(definition.subscore_order, 0);
        assert_eq!(definition.reset, Some(lpb::Reset::default()));
    }

    #[test]
    fn every_unknown_enum_name_of_a_board_body_is_named_at_once() {
        let got = fields(create_board_request(body(serde_json::json!({
            "boardId": "b", "operator": "max", "order": "descending", "subscoreOrder": "up",
            "rankStyle": "olympic", "reset": {"kind": "hourly"}
        }))));
        assert_eq!(
            got,
            vec![
                ("operator".into(), "has unknown value \"max\"; must be sum, best or set".into()),
                ("order".into(), "has unknown value \"descending\"; must be desc or asc".into()),
                ("subscoreOrder".into(), "has unknown value \"up\"; must be desc or asc".into()),
                (
                    "rankStyle".into(),
                    "has unknown value \"olympic\"; must be competition or dense".into()
                ),
                (
                    "reset.kind".into(),
                    "has unknown value \"hourly\"; must be never, daily, weekly, monthly or cron"
                        .into()
                ),
            ]
        );
    }

    #[test]
    fn enum_names_are_read_without_regard_to_case() {
        let request = create_board_request(body(
            serde_json::json!({"boardId": "b", "operator": "SET", "reset": {"kind": "Weekly"}}),
        ))
        .unwrap();
        let definition = request.definition.unwrap();
        assert_eq!(definition.operator, lpb::ScoreOperator::Set as i32);
        assert_eq!(definition.reset.unwrap().kind, lpb::ResetKind::Weekly as i32);
    }

    #[test]
    fn a_board_body_with_an_unknown_key_is_refused_by_serde() {
        let parsed = serde_json::from_value::<CreateBoardBody>(
            serde_json::json!({"boardId": "b", "resetKind": "daily"}),
        );
        assert!(parsed.unwrap_err().to_string().contains("unknown field `resetKind`"));
    }

    #[test]
    fn a_score_becomes_the_request_with_its_time_and_the_header_key_as_fallback() {
        let request = submit_score_request(
            "board:steps".into(),
            body(serde_json::json!({"score": 12.5, "occurredAt": "2026-11-30T09:00:00.250+01:00"})),
            Some("key-1".into()),
        )
        .unwrap();
        assert_eq!(
            request,
            lpb::SubmitScoreRequest {
                board: "board:steps".into(),
                member: String::new(),
                score: 12.5,
                subscore: 0.0,
                event_id: "key-1".into(),
                occurred_at: Some(prost_types::Timestamp {
                    seconds: 1_796_025_600,
                    nanos: 250_000_000
                }),
            }
        );
        let request = submit_score_request(
            "board:steps".into(),
            body(serde_json::json!({"score": 1, "subscore": 2, "eventId": "e-1", "member": "ann"})),
            Some("key-1".into()),
        )
        .unwrap();
        assert_eq!(
            (
                request.event_id.as_str(),
                request.member.as_str(),
                request.subscore,
                request.occurred_at
            ),
            ("e-1", "ann", 2.0, None)
        );
    }

    #[test]
    fn a_score_without_a_value_and_with_a_bad_time_names_both_fields() {
        let got = fields(submit_score_request(
            "board:steps".into(),
            body(serde_json::json!({"eventId": "e-1", "occurredAt": "yesterday"})),
            None,
        ));
        assert_eq!(
            got,
            vec![
                ("score".into(), "is required".into()),
                (
                    "occurredAt".into(),
                    "must be an RFC 3339 timestamp, e.g. 2026-01-31T00:00:00Z".into()
                ),
            ]
        );
    }

    #[test]
    fn page_queries_pass_through_and_bad_numbers_are_named() {
        let q = EntriesQuery {
            page_size: Some("25".into()),
            page_token: Some("t-2".into()),
            start_rank: Some("101".into()),
            period: Some("2026-W49".into()),
        };
        assert_eq!(
            leaderboard_request("board:b".into(), q).unwrap(),
            lpb::GetLeaderboardRequest {
                board: "board:b".into(),
                page_size: 25,
                page_token: "t-2".into(),
                start_rank: 101,
                period: "2026-W49".into(),
            }
        );
        let q = EntriesQuery {
            page_size: Some("ten".into()),
            start_rank: Some("1.5".into()),
            ..EntriesQuery::default()
        };
        assert_eq!(
            fields(leaderboard_request("board:b".into(), q)),
            vec![
                ("pageSize".into(), "must be a whole number".into()),
                ("startRank".into(), "must be a whole number".into()),
            ]
        );
    }

    #[test]
    fn a_rank_query_for_the_caller_leaves_the_member_empty() {
        let q = RankQuery { neighbours: Some("2".into()), ..RankQuery::default() };
        assert_eq!(
            rank_request("challenge:c".into(), q).unwrap(),
            lpb::GetRankRequest {
                board: "challenge:c".into(),
                member: String::new(),
                neighbours: 2,
                period: String::new(),
                page_size: 0,
            }
        );
        let q = RankQuery { neighbours: Some("-".into()), ..RankQuery::default() };
        assert_eq!(
            fields(rank_request("b".into(), q)),
            vec![("neighbours".into(), "must be a whole number".into())]
        );
    }

    #[test]
    fn members_come_repeated_and_comma_separated_in_order() {
        let pairs = [
            ("member", "ann"),
            ("members", "ben, cid,,"),
            ("top", "5"),
            ("member", "dan"),
            ("period", "2026-11"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .to_vec();
        assert_eq!(
            ranks_request("board:b".into(), pairs),
            lpb::GetRanksRequest {
                board: "board:b".into(),
                members: vec!["ann".into(), "ben".into(), "cid".into(), "dan".into()],
                period: "2026-11".into(),
            }
        );
    }

    #[test]
    fn a_stream_query_reads_flags_and_points_and_names_every_bad_one() {
        let q = StreamQuery {
            top_n: Some("5".into()),
            neighbours: Some("1".into()),
            with_me: Some("true".into()),
            notify_passed: Some("1".into()),
            notify_within: Some("2.5".into()),
        };
        assert_eq!(
            watch_request("board:b".into(), q).unwrap(),
            lpb::WatchLeaderboardRequest {
                board: "board:b".into(),
                top_n: 5,
                neighbours: 1,
                with_me: true,
                notify_passed: true,
                notify_within: 2.5,
            }
        );
        let q = StreamQuery {
            top_n: Some("x".into()),
            with_me: Some("yes".into()),
            notify_within: Some("inf".into()),
            ..StreamQuery::default()
        };
        assert_eq!(
            fields(watch_request("board:b".into(), q)),
            vec![
                ("topN".into(), "must be a whole number".into()),
                ("withMe".into(), "must be true or false".into()),
                ("notifyWithin".into(), "must be a number".into()),
            ]
        );
    }

    #[test]
    fn privacy_and_employer_settings_need_their_one_field() {
        assert_eq!(
            privacy_request(PrivacyBody { hide_name: Some(true) }).unwrap(),
            lpb::SetPrivacyRequest { hide_name: true }
        );
        assert_eq!(
            fields(privacy_request(PrivacyBody::default())),
            vec![("hideName".into(), "is required".into())]
        );
        assert_eq!(
            employer_settings_request("acme".into(), EmployerSettingsBody { min_members: Some(5) })
                .unwrap(),
            lpb::SetEmployerSettingsRequest { employer_id: "acme".into(), min_members: 5 }
        );
        assert_eq!(
            fields(employer_settings_request("acme".into(), EmployerSettingsBody::default())),
            vec![("minMembers".into(), "is required".into())]
        );
    }
}
