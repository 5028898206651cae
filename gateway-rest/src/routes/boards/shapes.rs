//! The JSON shapes of the board routes and their mapping from proto.
//!
//! Enums are lower-case words (`SCORE_OPERATOR_BEST` ↔ `best`, `SORT_ORDER_ASCENDING` ↔ `asc`,
//! `KIND_WITHIN_REACH` ↔ `within_reach`); int64 counts and ranks are JSON numbers; unset times,
//! and empty optional ids, are `null`. Page tokens are always present (empty at either end).

use ewpm_proto::leaderboard::v1::{self as lpb, rank_notice};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{incentives::name_of, rfc3339 as time};

/// REST names of score operators.
pub const OPERATORS: &[(&str, lpb::ScoreOperator)] = &[
    ("sum", lpb::ScoreOperator::Sum),
    ("best", lpb::ScoreOperator::Best),
    ("set", lpb::ScoreOperator::Set),
];

/// REST names of sort orders (the board's and the subscore's).
pub const ORDERS: &[(&str, lpb::SortOrder)] =
    &[("desc", lpb::SortOrder::Descending), ("asc", lpb::SortOrder::Ascending)];

/// REST names of rank styles.
pub const RANK_STYLES: &[(&str, lpb::RankStyle)] =
    &[("competition", lpb::RankStyle::Competition), ("dense", lpb::RankStyle::Dense)];

/// REST names of reset kinds.
pub const RESET_KINDS: &[(&str, lpb::ResetKind)] = &[
    ("never", lpb::ResetKind::Never),
    ("daily", lpb::ResetKind::Daily),
    ("weekly", lpb::ResetKind::Weekly),
    ("monthly", lpb::ResetKind::Monthly),
    ("cron", lpb::ResetKind::Cron),
];

/// REST names of rank-change notice kinds.
pub const NOTICE_KINDS: &[(&str, rank_notice::Kind)] =
    &[("passed", rank_notice::Kind::Passed), ("within_reach", rank_notice::Kind::WithinReach)];

/// `s`, or `null` when empty.
fn some(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// A set time as RFC 3339, an unset one as `null`.
fn maybe_time(ts: Option<prost_types::Timestamp>) -> Option<String> {
    ts.map(|t| time(Some(t)))
}

// ---------------------------------------------------------------------------------------
// Definitions and periods

/// What a board is.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BoardDto {
    /// Board name, `<kind>:<id>` (`board:weekly-steps`, `challenge:<uuid>`, `quiz:<uuid>`).
    pub board: String,
    /// A title for people.
    pub title: String,
    /// How facts make a score: `sum`, `best` or `set` (the latest fact).
    #[schema(example = "sum")]
    pub operator: String,
    /// Which scores come first: `desc` (highest) or `asc` (lowest: times, golf).
    #[schema(example = "desc")]
    pub order: String,
    /// The tie-break subscore's order, `desc` or `asc`; `null` when ties are not broken by
    /// a subscore.
    #[schema(example = "asc")]
    pub subscore_order: Option<String>,
    /// How ties are ranked: `competition` (1, 2, 2, 4) or `dense` (1, 2, 2, 3).
    #[schema(example = "competition")]
    pub rank_style: String,
    /// When the board starts a new period.
    pub reset: ResetDto,
    /// Whose people may read the board; `null` for everyone.
    pub employer_id: Option<String>,
    /// Whether members may submit their own scores.
    pub members_submit: bool,
    /// Which service holds the board's facts: `leaderboard`, `challenge` or `quiz`.
    pub owner: String,
    /// When the board was defined, RFC 3339; `null` for boards defined elsewhere.
    pub create_time: Option<String>,
    /// The period now open (`all` for a board that never resets).
    #[schema(example = "2026-W49")]
    pub current_period: String,
    /// When the current period ends, RFC 3339; `null` for a board that never resets.
    pub next_reset_time: Option<String>,
}

/// A board's reset schedule.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResetDto {
    /// `never`, `daily`, `weekly` (Monday midnight), `monthly` (the 1st) or `cron`.
    #[schema(example = "weekly")]
    pub kind: String,
    /// For `cron`: `minute hour day-of-month month day-of-week`; `null` otherwise.
    #[schema(example = "0 9 * * MON")]
    pub cron: Option<String>,
    /// IANA time zone of the schedule; `null` for UTC.
    #[schema(example = "Europe/Paris")]
    pub time_zone: Option<String>,
}

/// The REST shape of a board definition.
pub fn board_dto(d: lpb::BoardDefinition) -> BoardDto {
    let lpb::BoardDefinition {
        board,
        title,
        operator,
        order,
        subscore_order,
        rank_style,
        reset,
        employer_id,
        members_submit,
        owner,
        create_time,
        current_period,
        next_reset_time,
    } = d;
    let lpb::Reset { kind, cron, time_zone } = reset.unwrap_or_default();
    BoardDto {
        board,
        title,
        operator: name_of(OPERATORS, operator).to_string(),
        order: name_of(ORDERS, order).to_string(),
        subscore_order: ORDERS
            .iter()
            .find(|(_, o)| *o as i32 == subscore_order)
            .map(|(name, _)| name.to_string()),
        rank_style: name_of(RANK_STYLES, rank_style).to_string(),
        reset: ResetDto {
            // An unspecified kind is NEVER (the contract's default).
            kind: if kind == lpb::ResetKind::Unspecified as i32 {
                "never".to_string()
            } else {
                name_of(RESET_KINDS, kind).to_string()
            },
            cron: some(cron),
            time_zone: some(time_zone),
        },
        employer_id: some(employer_id),
        members_submit,
        owner,
        create_time: maybe_time(create_time),
        current_period,
        next_reset_time: maybe_time(next_reset_time),
    }
}

/// One period of a board.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PeriodDto {
    /// The period's id: `all`, `2026-11-30` (daily), `2026-W49` (weekly), `2026-11`
    /// (monthly) or its UTC start `20261130T090000Z` (cron).
    pub period: String,
    /// When it began, RFC 3339; `null` for `all`.
    pub start_time: Option<String>,
    /// When it ends or ended, RFC 3339; `null` for `all`.
    pub end_time: Option<String>,
    /// Whether it is closed and archived.
    pub closed: bool,
    /// Members in the archive (closed periods).
    pub members: i64,
}

/// A page of a board's periods, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PeriodPage {
    /// Newest first; the first page starts with the current period.
    pub periods: Vec<PeriodDto>,
    /// Pass as `pageToken` for the next page; empty on the last page.
    pub next_page_token: String,
}

/// The REST shape of a page of periods.
pub fn period_page(r: lpb::ListPeriodsResponse) -> PeriodPage {
    let lpb::ListPeriodsResponse { periods, next_page_token } = r;
    PeriodPage {
        periods: periods
            .into_iter()
            .map(|p| {
                let lpb::Period { period, start_time, end_time, closed, members } = p;
                PeriodDto {
                    period,
                    start_time: maybe_time(start_time),
                    end_time: maybe_time(end_time),
                    closed,
                    members,
                }
            })
            .collect(),
        next_page_token,
    }
}

// ---------------------------------------------------------------------------------------
// Entries, pages, ranks

/// One member's place on a board.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BoardEntryDto {
    /// Rank in the board's style: 1 is first; tied members share a rank.
    pub rank: i64,
    /// Member id; a hidden member's stable pseudonym (`anon-…`) to other callers.
    pub member: String,
    /// The member's score.
    pub score: f64,
    /// The member's subscore (0 on boards without one).
    pub subscore: f64,
    /// 0-based position in board order (ties broken by subscore, then member id descending).
    pub position: i64,
    /// Whether `member` is a pseudonym.
    pub pseudonymous: bool,
}

/// The REST shape of an entry.
pub fn entry_dto(e: lpb::LeaderboardEntry) -> BoardEntryDto {
    let lpb::LeaderboardEntry { rank, member, score, subscore, position, pseudonymous } = e;
    BoardEntryDto { rank, member, score, subscore, position, pseudonymous }
}

fn entry_dtos(list: Vec<lpb::LeaderboardEntry>) -> Vec<BoardEntryDto> {
    list.into_iter().map(entry_dto).collect()
}

/// The caller's own place beside a page.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MyPlaceDto {
    /// The caller's entry.
    pub entry: Option<BoardEntryDto>,
    /// "Top N %": `ceil(100 * rank / totalMembers)`.
    pub top_percent: i32,
    /// The 1-based page (of the request's page size) the caller's entry is on.
    pub page: i64,
    /// `pageToken` that reads that page.
    pub page_token: String,
}

/// The REST shape of the caller's place; `None` when the service sent none.
pub fn my_place_dto(m: Option<lpb::MyPlace>) -> Option<MyPlaceDto> {
    let lpb::MyPlace { entry, top_percent, page, page_token } = m?;
    Some(MyPlaceDto { entry: entry.map(entry_dto), top_percent, page, page_token })
}

/// One page of a board (or of one of its periods), best first.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BoardPageDto {
    /// The board read.
    pub board: String,
    /// The page, best first.
    pub entries: Vec<BoardEntryDto>,
    /// Pass as `pageToken` for the next page; empty on the last page.
    pub next_page_token: String,
    /// Pass as `pageToken` for the page before; empty on the first page.
    pub prev_page_token: String,
    /// Members on the board.
    pub total_members: i64,
    /// The caller's own place; `null` when the caller is not on the board.
    pub me: Option<MyPlaceDto>,
    /// The period read.
    pub period: String,
    /// True when the board has fewer members than its employer's minimum: no entries are
    /// shown (to anyone but admins) until it has enough.
    pub withheld: bool,
}

/// The REST shape of a page of `board`.
pub fn page_dto(board: String, r: lpb::GetLeaderboardResponse) -> BoardPageDto {
    let lpb::GetLeaderboardResponse {
        entries,
        next_page_token,
        total_members,
        prev_page_token,
        me,
        period,
        withheld,
    } = r;
    BoardPageDto {
        board,
        entries: entry_dtos(entries),
        next_page_token,
        prev_page_token,
        total_members,
        me: my_place_dto(me),
        period,
        withheld,
    }
}

/// A member's place and neighbourhood.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RankDto {
    /// The member's entry.
    pub entry: Option<BoardEntryDto>,
    /// Up to `neighbours` entries above, the member, and up to `neighbours` below, best
    /// first; clipped at the top and bottom of the board.
    pub window: Vec<BoardEntryDto>,
    /// Members on the board.
    pub total_members: i64,
    /// `ceil(100 * rank / totalMembers)`: the member is in the top this many percent.
    pub top_percent: i32,
    /// The 1-based page (of `pageSize`) the member is on.
    pub page: i64,
    /// The period read.
    pub period: String,
}

/// The REST shape of a rank.
pub fn rank_dto(r: lpb::GetRankResponse) -> RankDto {
    let lpb::GetRankResponse { entry, window, total_members, top_percent, page, period } = r;
    RankDto {
        entry: entry.map(entry_dto),
        window: entry_dtos(window),
        total_members,
        top_percent,
        page,
        period,
    }
}

/// The places of several members (a team view).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RanksDto {
    /// The members on the board, best first (members not on it are left out).
    pub entries: Vec<BoardEntryDto>,
    /// Members on the board.
    pub total_members: i64,
    /// The period read.
    pub period: String,
}

/// The REST shape of several ranks.
pub fn ranks_dto(r: lpb::GetRanksResponse) -> RanksDto {
    let lpb::GetRanksResponse { entries, total_members, period } = r;
    RanksDto { entries: entry_dtos(entries), total_members, period }
}

// ---------------------------------------------------------------------------------------
// The live stream

/// A change in the caller's place worth telling them.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NoticeDto {
    /// `passed` (someone passed the caller) or `within_reach` (the caller came within
    /// `notifyWithin` points of the entry above).
    #[schema(example = "passed")]
    pub kind: String,
    /// The caller's rank before.
    pub old_rank: i64,
    /// The caller's rank now.
    pub new_rank: i64,
    /// `passed`: who passed them (now directly above); `within_reach`: the entry above.
    pub other: String,
    /// `within_reach`: points between the caller and the entry above.
    pub gap: f64,
}

/// Data of an `event: snapshot` of `GET /api/boards/{board}/stream`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotDto {
    /// The board.
    pub board: String,
    /// The top N, best first.
    pub entries: Vec<BoardEntryDto>,
    /// Members on the board.
    pub total_members: i64,
    /// When the snapshot was read, RFC 3339.
    pub snapshot_time: String,
    /// The caller's entry (with `withMe`); `null` when not on the board.
    pub me: Option<BoardEntryDto>,
    /// The caller's window (with `withMe` and `neighbours`), best first.
    pub window: Vec<BoardEntryDto>,
    /// Rank changes since the previous snapshot (with `notifyPassed` or `notifyWithin`).
    pub notices: Vec<NoticeDto>,
    /// The period shown.
    pub period: String,
    /// True when the board is below its employer's minimum members (no entries shown).
    pub withheld: bool,
}

/// The REST shape of one snapshot.
pub fn snapshot_dto(s: lpb::WatchLeaderboardResponse) -> SnapshotDto {
    let lpb::WatchLeaderboardResponse {
        board,
        entries,
        total_members,
        snapshot_time,
        me,
        window,
        notices,
        period,
        withheld,
    } = s;
    SnapshotDto {
        board,
        entries: entry_dtos(entries),
        total_members,
        snapshot_time: time(snapshot_time),
        me: me.map(entry_dto),
        window: entry_dtos(window),
        notices: notices
            .into_iter()
            .map(|n| {
                let lpb::RankNotice { kind, old_rank, new_rank, other, gap } = n;
                NoticeDto {
                    kind: name_of(NOTICE_KINDS, kind).to_string(),
                    old_rank,
                    new_rank,
                    other,
                    gap,
                }
            })
            .collect(),
        period,
        withheld,
    }
}

// ---------------------------------------------------------------------------------------
// Writes, privacy, employer settings

/// Answer of `POST /api/boards/{board}/scores`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScoreAnswerDto {
    /// The period the fact counts in.
    pub period: String,
    /// Whether this call stored it (false: a retry of a stored fact).
    pub created: bool,
    /// The member's place after it; `null` when the board could not be read at once.
    pub entry: Option<BoardEntryDto>,
}

/// The REST shape of a submission's answer.
pub fn score_dto(r: lpb::SubmitScoreResponse) -> ScoreAnswerDto {
    let lpb::SubmitScoreResponse { period, created, entry } = r;
    ScoreAnswerDto { period, created, entry: entry.map(entry_dto) }
}

/// Answer of `POST /api/boards/{board}/voids`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VoidAnswerDto {
    /// False when it was already void.
    pub created: bool,
    /// Periods recounted.
    pub periods: Vec<String>,
}

/// The REST shape of a void's answer.
pub fn void_dto(r: lpb::VoidEntryResponse) -> VoidAnswerDto {
    let lpb::VoidEntryResponse { created, periods } = r;
    VoidAnswerDto { created, periods }
}

/// A member's privacy on boards.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrivacyDto {
    /// The member.
    pub member: String,
    /// Whether others see a stable pseudonym instead of the member's id.
    pub hide_name: bool,
    /// The pseudonym others see when the name is hidden.
    pub pseudonym: String,
}

/// The REST shape of a member's privacy.
pub fn privacy_dto(p: lpb::Privacy) -> PrivacyDto {
    let lpb::Privacy { member, hide_name, pseudonym } = p;
    PrivacyDto { member, hide_name, pseudonym }
}

/// An employer's board settings.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmployerSettingsDto {
    /// The employer.
    pub employer_id: String,
    /// Boards of this employer with fewer members are shown to nobody but admins (0: always
    /// shown).
    pub min_members: i32,
}

/// The REST shape of an employer's settings.
pub fn employer_settings_dto(s: lpb::EmployerSettings) -> EmployerSettingsDto {
    let lpb::EmployerSettings { employer_id, min_members } = s;
    EmployerSettingsDto { employer_id, min_members }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn at(seconds: i64, nanos: i32) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds, nanos })
    }

    fn entry(rank: i64, member: &str, score: f64, position: i64) -> lpb::LeaderboardEntry {
        lpb::LeaderboardEntry {
            rank,
            member: member.into(),
            score,
            subscore: 0.0,
            position,
            pseudonymous: false,
        }
    }

    #[test]
    fn a_weekly_board_answers_exactly_this_json() {
        let d = lpb::BoardDefinition {
            board: "board:fastest-5k".into(),
            title: "Fastest 5k".into(),
            operator: lpb::ScoreOperator::Best as i32,
            order: lpb::SortOrder::Ascending as i32,
            subscore_order: lpb::SortOrder::Descending as i32,
            rank_style: lpb::RankStyle::Dense as i32,
            reset: Some(lpb::Reset {
                kind: lpb::ResetKind::Weekly as i32,
                cron: String::new(),
                time_zone: "Europe/Paris".into(),
            }),
            employer_id: "acme".into(),
            members_submit: true,
            owner: "leaderboard".into(),
            create_time: at(1_796_025_600, 250_000_000),
            current_period: "2026-W49".into(),
            next_reset_time: at(1_796_598_000, 0),
        };
        assert_eq!(
            serde_json::to_value(board_dto(d)).unwrap(),
            json!({
                "board": "board:fastest-5k", "title": "Fastest 5k", "operator": "best",
                "order": "asc", "subscoreOrder": "desc", "rankStyle": "dense",
                "reset": {"kind": "weekly", "cron": null, "timeZone": "Europe/Paris"},
                "employerId": "acme", "membersSubmit": true, "owner": "leaderboard",
                "createTime": "2026-11-30T08:00:00.250Z", "currentPeriod": "2026-W49",
                "nextResetTime": "2026-12-06T23:00:00Z"
            })
        );
    }

    #[test]
    fn a_challenge_board_without_times_subscore_or_reset_answers_nulls_and_never() {
        let d = lpb::BoardDefinition {
            board: "challenge:c-1".into(),
            operator: lpb::ScoreOperator::Sum as i32,
            order: lpb::SortOrder::Descending as i32,
            rank_style: lpb::RankStyle::Competition as i32,
            owner: "challenge".into(),
            current_period: "all".into(),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(board_dto(d)).unwrap(),
            json!({
                "board": "challenge:c-1", "title": "", "operator": "sum", "order": "desc",
                "subscoreOrder": null, "rankStyle": "competition",
                "reset": {"kind": "never", "cron": null, "timeZone": null},
                "employerId": null, "membersSubmit": false, "owner": "challenge",
                "createTime": null, "currentPeriod": "all", "nextResetTime": null
            })
        );
    }

    #[test]
    fn enum_numbers_this_edge_does_not_know_answer_unspecified() {
        let d = lpb::BoardDefinition {
            operator: 42,
            order: 0,
            subscore_order: 9,
            rank_style: 7,
            reset: Some(lpb::Reset { kind: 99, ..Default::default() }),
            ..Default::default()
        };
        let dto = board_dto(d);
        assert_eq!(
            (
                dto.operator.as_str(),
                dto.order.as_str(),
                dto.subscore_order,
                dto.rank_style.as_str(),
                dto.reset.kind.as_str()
            ),
            ("unspecified", "unspecified", None, "unspecified", "unspecified")
        );
    }

    #[test]
    fn periods_answer_their_times_or_null() {
        let r = lpb::ListPeriodsResponse {
            periods: vec![
                lpb::Period {
                    period: "2026-11-30".into(),
                    start_time: at(1_796_000_400, 0),
                    end_time: at(1_796_086_800, 0),
                    closed: false,
                    members: 0,
                },
                lpb::Period {
                    period: "all".into(),
                    start_time: None,
                    end_time: None,
                    closed: true,
                    members: 12,
                },
            ],
            next_page_token: "p-2".into(),
        };
        assert_eq!(
            serde_json::to_value(period_page(r)).unwrap(),
            json!({"periods": [
                {"period": "2026-11-30", "startTime": "2026-11-30T01:00:00Z",
                 "endTime": "2026-12-01T01:00:00Z", "closed": false, "members": 0},
                {"period": "all", "startTime": null, "endTime": null, "closed": true, "members": 12}
            ], "nextPageToken": "p-2"})
        );
    }

    #[test]
    fn a_page_answers_every_field_with_numbers_and_the_callers_place() {
        let mut hidden = entry(2, "anon-7f3a", 40.0, 1);
        hidden.pseudonymous = true;
        hidden.subscore = 3.5;
        let r = lpb::GetLeaderboardResponse {
            entries: vec![entry(1, "bob", 55.0, 0), hidden],
            next_page_token: "n".into(),
            total_members: 3,
            prev_page_token: String::new(),
            me: Some(lpb::MyPlace {
                entry: Some(entry(3, "cid", 10.0, 2)),
                top_percent: 100,
                page: 2,
                page_token: "me".into(),
            }),
            period: "2026-W49".into(),
            withheld: false,
        };
        assert_eq!(
            serde_json::to_value(page_dto("board:b".into(), r)).unwrap(),
            json!({
                "board": "board:b",
                "entries": [
                    {"rank": 1, "member": "bob", "score": 55.0, "subscore": 0.0, "position": 0, "pseudonymous": false},
                    {"rank": 2, "member": "anon-7f3a", "score": 40.0, "subscore": 3.5, "position": 1, "pseudonymous": true}
                ],
                "nextPageToken": "n", "prevPageToken": "", "totalMembers": 3,
                "me": {
                    "entry": {"rank": 3, "member": "cid", "score": 10.0, "subscore": 0.0, "position": 2, "pseudonymous": false},
                    "topPercent": 100, "page": 2, "pageToken": "me"
                },
                "period": "2026-W49", "withheld": false
            })
        );
    }

    #[test]
    fn a_withheld_page_off_the_board_answers_me_null() {
        let r = lpb::GetLeaderboardResponse {
            total_members: 2,
            period: "all".into(),
            withheld: true,
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(page_dto("board:b".into(), r)).unwrap(),
            json!({
                "board": "board:b", "entries": [], "nextPageToken": "", "prevPageToken": "",
                "totalMembers": 2, "me": null, "period": "all", "withheld": true
            })
        );
    }

    #[test]
    fn a_snapshot_answers_its_time_window_and_notices_by_name() {
        let s = lpb::WatchLeaderboardResponse {
            board: "board:b".into(),
            entries: vec![entry(1, "bob", 55.0, 0)],
            total_members: 2,
            snapshot_time: at(1_796_025_600, 1_000),
            me: Some(entry(2, "ann", 50.0, 1)),
            window: vec![entry(1, "bob", 55.0, 0), entry(2, "ann", 50.0, 1)],
            notices: vec![
                lpb::RankNotice {
                    kind: rank_notice::Kind::Passed as i32,
                    old_rank: 1,
                    new_rank: 2,
                    other: "bob".into(),
                    gap: 0.0,
                },
                lpb::RankNotice {
                    kind: rank_notice::Kind::WithinReach as i32,
                    old_rank: 2,
                    new_rank: 2,
                    other: "bob".into(),
                    gap: 5.0,
                },
            ],
            period: "all".into(),
            withheld: false,
        };
        let json = serde_json::to_value(snapshot_dto(s)).unwrap();
        assert_eq!(json["snapshotTime"], "2026-11-30T08:00:00.000001Z");
        assert_eq!(json["me"]["member"], "ann");
        assert_eq!(json["window"].as_array().unwrap().len(), 2);
        assert_eq!(
            json["notices"],
            json!([
                {"kind": "passed", "oldRank": 1, "newRank": 2, "other": "bob", "gap": 0.0},
                {"kind": "within_reach", "oldRank": 2, "newRank": 2, "other": "bob", "gap": 5.0}
            ])
        );
        let empty =
            serde_json::to_value(snapshot_dto(lpb::WatchLeaderboardResponse::default())).unwrap();
        assert_eq!(
            empty,
            json!({
                "board": "", "entries": [], "totalMembers": 0, "snapshotTime": "", "me": null,
                "window": [], "notices": [], "period": "", "withheld": false
            })
        );
    }

    #[test]
    fn writes_privacy_and_settings_answer_exactly_this_json() {
        let score = lpb::SubmitScoreResponse {
            period: "2026-11".into(),
            created: true,
            entry: Some(entry(1, "ann", 12.5, 0)),
        };
        assert_eq!(
            serde_json::to_value(score_dto(score)).unwrap(),
            json!({"period": "2026-11", "created": true, "entry":
                {"rank": 1, "member": "ann", "score": 12.5, "subscore": 0.0, "position": 0, "pseudonymous": false}})
        );
        assert_eq!(
            serde_json::to_value(score_dto(lpb::SubmitScoreResponse::default())).unwrap(),
            json!({"period": "", "created": false, "entry": null})
        );
        let void = lpb::VoidEntryResponse { created: true, periods: vec!["2026-11".into()] };
        assert_eq!(
            serde_json::to_value(void_dto(void)).unwrap(),
            json!({"created": true, "periods": ["2026-11"]})
        );
        let privacy =
            lpb::Privacy { member: "ann".into(), hide_name: true, pseudonym: "anon-7f3a".into() };
        assert_eq!(
            serde_json::to_value(privacy_dto(privacy)).unwrap(),
            json!({"member": "ann", "hideName": true, "pseudonym": "anon-7f3a"})
        );
        let settings = lpb::EmployerSettings { employer_id: "acme".into(), min_members: 5 };
        assert_eq!(
            serde_json::to_value(employer_settings_dto(settings)).unwrap(),
            json!({"employerId": "acme", "minMembers": 5})
        );
    }

    #[test]
    fn a_rank_and_ranks_answer_numbers() {
        let r = lpb::GetRankResponse {
            entry: Some(entry(2, "ann", 50.0, 1)),
            window: vec![entry(1, "bob", 55.0, 0), entry(2, "ann", 50.0, 1)],
            total_members: 4,
            top_percent: 50,
            page: 1,
            period: "all".into(),
        };
        let json = serde_json::to_value(rank_dto(r)).unwrap();
        assert_eq!(
            (&json["entry"]["rank"], &json["totalMembers"], &json["topPercent"], &json["page"]),
            (&json!(2), &json!(4), &json!(50), &json!(1))
        );
        let r = lpb::GetRanksResponse {
            entries: vec![entry(1, "bob", 55.0, 0)],
            total_members: 4,
            period: "2026-W49".into(),
        };
        assert_eq!(
            serde_json::to_value(ranks_dto(r)).unwrap(),
            json!({"entries": [{"rank": 1, "member": "bob", "score": 55.0, "subscore": 0.0,
                "position": 0, "pseudonymous": false}], "totalMembers": 4, "period": "2026-W49"})
        );
    }
}
