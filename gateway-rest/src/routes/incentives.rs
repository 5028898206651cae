//! REST routes of health activity and incentives: logging an activity (or a birth) through
//! the progress service, the incentive catalog, employers' incentive links, the awards ledger
//! and a live Server-Sent Events stream of the caller's new awards.
//!
//! The edge only parses shapes: proto enums travel as lower-case names without their prefix
//! (`ACTIVITY_KIND_MOOD` ↔ `mood`, `REPEAT_POLICY_ONCE_PER_USER` ↔ `once_per_user`), and a
//! rule is `{"consecutiveDays": {"days": 5}}` or `{"eachOccurrence": {}}`. A name the edge
//! does not know is a 400 naming the field; everything else is the services' to judge.

use axum::{
    Extension, Json,
    body::Bytes,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
};
use ewpm_kit::auth::Caller;
use ewpm_proto::{
    activity::v1::ActivityKind,
    incentive::v1::{self as ipb, rule},
    progress::v1::{self as ppb},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::{
    AppState,
    challenges::{parse_body, parse_page_size, parse_time},
    problem::{ApiError, ApiResult, Problem},
    rfc3339 as time, upstream,
};

/// REST names of activity kinds. `challenge_progress` is logged by submitting challenge
/// progress, never through `POST /api/activities`, but incentives may be triggered by it.
const ACTIVITY_KINDS: &[(&str, ActivityKind)] = &[
    ("mood", ActivityKind::Mood),
    ("symptom", ActivityKind::Symptom),
    ("steps", ActivityKind::Steps),
    ("sleep", ActivityKind::Sleep),
    ("weight", ActivityKind::Weight),
    ("birth", ActivityKind::Birth),
    ("challenge_progress", ActivityKind::ChallengeProgress),
];

/// REST names of repeat policies.
const REPEAT_POLICIES: &[(&str, ipb::RepeatPolicy)] = &[
    ("once_per_user", ipb::RepeatPolicy::OncePerUser),
    ("once_per_period", ipb::RepeatPolicy::OncePerPeriod),
];

/// REST names of periods.
const PERIODS: &[(&str, ipb::Period)] =
    &[("week", ipb::Period::Week), ("month", ipb::Period::Month), ("year", ipb::Period::Year)];

/// REST names of actions.
const ACTIONS: &[(&str, ipb::ActionKind)] =
    &[("award", ipb::ActionKind::Award), ("notify", ipb::ActionKind::Notify)];

/// The value named `raw` (ASCII case ignored).
fn parse_name<E: Copy>(table: &[(&str, E)], raw: &str) -> Option<E> {
    table.iter().find(|(name, _)| name.eq_ignore_ascii_case(raw)).map(|(_, value)| *value)
}

/// The REST name of the proto enum number `raw`; `unspecified` for 0 and numbers this edge
/// does not know (a newer service).
pub(crate) fn name_of<E: Copy + PartialEq + TryFrom<i32>>(
    table: &[(&'static str, E)],
    raw: i32,
) -> &'static str {
    E::try_from(raw)
        .ok()
        .and_then(|value| table.iter().find(|(_, v)| *v == value))
        .map_or("unspecified", |(name, _)| name)
}

/// `a, b or c`, for error descriptions.
fn one_of<E>(table: &[(&str, E)]) -> String {
    let names: Vec<&str> = table.iter().map(|(name, _)| *name).collect();
    match names.split_last() {
        Some((last, [])) => format!("must be {last}"),
        Some((last, rest)) => format!("must be {} or {last}", rest.join(", ")),
        None => "must be empty".to_string(),
    }
}

/// A required enum field.
fn parse_required<E: Copy>(table: &[(&str, E)], raw: Option<&str>, field: &str) -> ApiResult<E> {
    parse_optional(table, raw, field)?
        .ok_or_else(|| bad(field, format!("is required; {}", one_of(table))))
}

/// An optional enum field; absent (or `null`) leaves the proto default to the service.
pub(crate) fn parse_optional<E: Copy>(
    table: &[(&str, E)],
    raw: Option<&str>,
    field: &str,
) -> ApiResult<Option<E>> {
    raw.map(|raw| {
        parse_name(table, raw)
            .ok_or_else(|| bad(field, format!("has unknown value \"{raw}\"; {}", one_of(table))))
    })
    .transpose()
}

/// A list of enum names as proto numbers.
fn parse_list<E: Copy + Into<i32>>(
    table: &[(&str, E)],
    raw: &[String],
    field: &str,
) -> ApiResult<Vec<i32>> {
    raw.iter()
        .map(|name| {
            parse_name(table, name).map(Into::into).ok_or_else(|| {
                bad(field, format!("has unknown value \"{name}\"; each {}", one_of(table)))
            })
        })
        .collect()
}

/// Proto numbers as REST names.
fn names<E: Copy + PartialEq + TryFrom<i32>>(
    table: &[(&'static str, E)],
    raw: &[i32],
) -> Vec<String> {
    raw.iter().map(|&n| name_of(table, n).to_string()).collect()
}

/// The kind of an activity to log: any kind but `challenge_progress`.
fn loggable_kind(raw: Option<&str>) -> ApiResult<ActivityKind> {
    // All but the last entry, `challenge_progress`.
    let loggable = &ACTIVITY_KINDS[..ACTIVITY_KINDS.len() - 1];
    if raw.is_some_and(|raw| raw.eq_ignore_ascii_case("challenge_progress")) {
        return Err(bad(
            "kind",
            format!(
                "challenge_progress is logged by submitting challenge progress; {}",
                one_of(loggable)
            ),
        ));
    }
    parse_required(loggable, raw, "kind")
}

/// When an incentive is earned: exactly one of the two keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum RuleDto {
    /// Activity on `days` (2 to 32) consecutive calendar days in the employer's time zone.
    ConsecutiveDays {
        /// Length of the streak.
        days: i32,
    },
    /// Every qualifying activity; the repeat policy limits awards.
    EachOccurrence {},
}

/// A rule from its JSON; anything but exactly one known key is a 400 on `rule`.
fn parse_rule(raw: Option<serde_json::Value>) -> ApiResult<Option<ipb::Rule>> {
    let Some(raw) = raw else { return Ok(None) };
    let dto: RuleDto = serde_json::from_value(raw).map_err(|e| {
        bad(
            "rule",
            format!(
                "must be {{\"consecutiveDays\": {{\"days\": N}}}} or {{\"eachOccurrence\": {{}}}} ({e})"
            ),
        )
    })?;
    let kind = match dto {
        RuleDto::ConsecutiveDays { days } => {
            rule::Kind::ConsecutiveDays(ipb::ConsecutiveDays { days })
        }
        RuleDto::EachOccurrence {} => rule::Kind::EachOccurrence(ipb::EachOccurrence {}),
    };
    Ok(Some(ipb::Rule { kind: Some(kind) }))
}

/// The REST shape of a rule; `None` when the service sent none.
fn rule_dto(rule: Option<ipb::Rule>) -> Option<RuleDto> {
    match rule?.kind? {
        rule::Kind::ConsecutiveDays(ipb::ConsecutiveDays { days }) => {
            Some(RuleDto::ConsecutiveDays { days })
        }
        rule::Kind::EachOccurrence(ipb::EachOccurrence {}) => Some(RuleDto::EachOccurrence {}),
    }
}

/// An optional boolean query parameter (`true`/`false`, `1`/`0`); absent is false.
pub(crate) fn parse_flag(raw: Option<&str>, field: &str) -> ApiResult<bool> {
    match raw.map(str::to_ascii_lowercase).as_deref() {
        None | Some("") | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(_) => Err(bad(field, "must be true or false")),
    }
}

/// A 400 naming `field`.
fn bad(field: &str, description: impl Into<String>) -> ApiError {
    Problem::bad_request(field, description).into()
}

// ---------------------------------------------------------------------------------------
// Activity

/// Body of `POST /api/activities`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ActivityBody {
    /// `mood`, `symptom`, `steps`, `sleep`, `weight` or `birth`.
    pub kind: Option<String>,
    /// A measurement where the kind has one (steps, hours of sleep, kg, a mood score):
    /// 0 to 1,000,000.
    pub value: Option<f64>,
    /// Free text, at most 1,000 characters.
    pub note: Option<String>,
    /// When it happened (RFC 3339); default now. Not in the future, at most 366 days ago.
    pub occurred_at: Option<String>,
    /// Makes a retry safe (also accepted as the `Idempotency-Key` header).
    pub idempotency_key: Option<String>,
}

/// Body of `POST /api/births` (may be empty).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BirthBody {
    /// When it happened (RFC 3339); default now.
    pub occurred_at: Option<String>,
    /// Free text, at most 1,000 characters.
    pub note: Option<String>,
    /// Makes a retry safe (also accepted as the `Idempotency-Key` header).
    pub idempotency_key: Option<String>,
}

/// A logged activity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActivityDto {
    /// The activity id (UUID v7).
    pub activity_id: String,
    /// What was logged, e.g. `mood`.
    pub kind: String,
    /// The user (the token's subject).
    pub user_id: String,
    /// The measurement; `null` when none was given.
    pub value: Option<f64>,
    /// The note.
    pub note: String,
    /// When it happened, RFC 3339 UTC.
    pub occurred_at: String,
    /// When it was accepted, RFC 3339 UTC.
    pub accept_time: String,
}

fn activity_dto(r: ppb::LogActivityResponse) -> ActivityDto {
    let ppb::LogActivityResponse {
        activity_id,
        kind,
        user_id,
        value,
        note,
        occurred_at,
        accept_time,
    } = r;
    ActivityDto {
        activity_id,
        kind: name_of(ACTIVITY_KINDS, kind).to_string(),
        user_id,
        value,
        note,
        occurred_at: time(occurred_at),
        accept_time: time(accept_time),
    }
}

async fn send_activity(
    state: &AppState,
    headers: &HeaderMap,
    request: ppb::LogActivityRequest,
) -> ApiResult {
    let r = state.progress.clone().log_activity(upstream::request(headers, request)).await?;
    Ok((StatusCode::ACCEPTED, Json(activity_dto(r.into_inner()))).into_response())
}

/// Logs a health activity of the caller; answered once it is durably queued. Incentives it
/// completes are awarded shortly after.
#[utoipa::path(
    post, path = "/api/activities", tag = "incentives",
    request_body = ActivityBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "Retry key: a retry returns the first result")),
    responses(
        (status = 202, description = "Queued", body = ActivityDto),
        (status = 400, description = "Bad field, or an idempotency key reused with another body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or bad token", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn log_activity(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let ActivityBody { kind, value, note, occurred_at, idempotency_key } = parse_body(&body)?;
    let kind = loggable_kind(kind.as_deref())?;
    let request = ppb::LogActivityRequest {
        kind: kind.into(),
        value,
        note: note.unwrap_or_default(),
        occurred_at: parse_time(occurred_at.as_deref(), "occurredAt")?,
        idempotency_key: idempotency_key
            .or_else(|| upstream::idempotency_key(&headers))
            .unwrap_or_default(),
    };
    send_activity(&state, &headers, request).await
}

/// Reports a birth for the caller: an activity of kind `birth`.
#[utoipa::path(
    post, path = "/api/births", tag = "incentives",
    request_body(content = Option<BirthBody>, description = "May be omitted"),
    params(("Idempotency-Key" = Option<String>, Header, description = "Retry key: a retry returns the first result")),
    responses(
        (status = 202, description = "Queued", body = ActivityDto),
        (status = 400, description = "Bad field, or an idempotency key reused with another body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or bad token", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn report_birth(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    // Every field is optional, so a bodiless POST is a birth reported now.
    let BirthBody { occurred_at, note, idempotency_key } =
        if body.iter().all(u8::is_ascii_whitespace) {
            BirthBody::default()
        } else {
            parse_body(&body)?
        };
    let request = ppb::LogActivityRequest {
        kind: ActivityKind::Birth.into(),
        value: None,
        note: note.unwrap_or_default(),
        occurred_at: parse_time(occurred_at.as_deref(), "occurredAt")?,
        idempotency_key: idempotency_key
            .or_else(|| upstream::idempotency_key(&headers))
            .unwrap_or_default(),
    };
    send_activity(&state, &headers, request).await
}

// ---------------------------------------------------------------------------------------
// Awards

/// Query of the award lists.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page size (1 to 100, default 20).
    #[serde(alias = "page_size")]
    pub page_size: Option<String>,
    /// `nextPageToken` of the previous page.
    #[serde(alias = "page_token")]
    pub page_token: Option<String>,
}

async fn list_awards(
    state: &AppState,
    headers: &HeaderMap,
    user_id: String,
    employer_id: String,
    q: PageQuery,
) -> ApiResult<Json<ipb::ListAwardsResponse>> {
    let PageQuery { page_size, page_token } = q;
    let request = ipb::ListAwardsRequest {
        user_id,
        employer_id,
        page_size: parse_page_size(page_size.as_deref(), "pageSize")?,
        page_token: page_token.unwrap_or_default(),
    };
    let r = state.incentive.clone().list_awards(upstream::request(headers, request)).await?;
    Ok(Json(r.into_inner()))
}

/// A user's awards, newest first.
#[utoipa::path(
    get, path = "/api/users/{userId}/awards", tag = "incentives",
    params(("userId" = String, Path, description = "The user: the caller, or anyone for their employer's admins and admins"), PageQuery),
    responses(
        (status = 200, description = "One page", body = ipb::ListAwardsResponse),
        (status = 403, description = "Another user's awards, asked by someone who may not see them", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn user_awards(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(user_id): Path<String>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<ipb::ListAwardsResponse>> {
    list_awards(&state, &headers, user_id, String::new(), q).await
}

/// An employer's awards, newest first.
#[utoipa::path(
    get, path = "/api/employers/{employerId}/awards", tag = "incentives",
    params(("employerId" = String, Path, description = "The employer: the caller's own for employer admins"), PageQuery),
    responses(
        (status = 200, description = "One page", body = ipb::ListAwardsResponse),
        (status = 403, description = "Not the employer's admin", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn employer_awards(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(employer_id): Path<String>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<ipb::ListAwardsResponse>> {
    list_awards(&state, &headers, String::new(), employer_id, q).await
}

/// The caller's new awards as Server-Sent Events, as they are recorded (by incentives with
/// the `notify` action): an `event: award` whose data is an `Award` each. Comments keep
/// idle connections alive.
#[utoipa::path(
    get, path = "/api/me/awards/stream", tag = "incentives",
    responses(
        (status = 200, description = "text/event-stream of `award` events (Award JSON)", content_type = "text/event-stream"),
        (status = 401, description = "No or bad token", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn award_stream(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
) -> ApiResult {
    let slot = state.streams.acquire(&caller)?;
    let request = upstream::stream_request(&headers, ipb::WatchAwardsRequest {});
    let awards = state.incentive.clone().watch_awards(request).await?.into_inner();
    Ok(upstream::sse(slot, awards, "award", |m: ipb::WatchAwardsResponse| m.award))
}

// ---------------------------------------------------------------------------------------
// Catalog

/// A catalog incentive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IncentiveDto {
    /// Id (UUID v7).
    pub id: String,
    /// Unique name, e.g. `data-logged-5-sequential-days`.
    pub slug: String,
    /// What it rewards, for people.
    pub description: String,
    /// When it is earned.
    pub rule: Option<RuleDto>,
    /// Activity kinds that count towards it, e.g. `mood`.
    pub trigger_kinds: Vec<String>,
    /// False once deactivated.
    pub active: bool,
    /// Created at, RFC 3339 UTC.
    pub create_time: String,
    /// Last changed at, RFC 3339 UTC.
    pub update_time: String,
}

/// The REST shape of a catalog incentive.
pub fn incentive_dto(i: ipb::Incentive) -> IncentiveDto {
    let ipb::Incentive {
        id,
        slug,
        description,
        rule,
        trigger_kinds,
        active,
        create_time,
        update_time,
    } = i;
    IncentiveDto {
        id,
        slug,
        description,
        rule: rule_dto(rule),
        trigger_kinds: names(ACTIVITY_KINDS, &trigger_kinds),
        active,
        create_time: time(create_time),
        update_time: time(update_time),
    }
}

/// Body of `POST /api/incentives`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateIncentiveBody {
    /// Unique name: 3–64 characters of a–z, 0–9 and '-'.
    #[serde(default)]
    pub slug: String,
    /// What it rewards, for people.
    #[serde(default)]
    pub description: String,
    /// When it is earned.
    #[schema(value_type = Option<RuleDto>)]
    pub rule: Option<serde_json::Value>,
    /// Activity kinds that count towards it (at least one): `mood`, `symptom`, `steps`,
    /// `sleep`, `weight`, `birth`, `challenge_progress`.
    #[serde(default)]
    pub trigger_kinds: Vec<String>,
}

/// Body of `PATCH /api/incentives/{id}`: the three fields are replaced together, so each
/// is required (the slug never changes).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateIncentiveBody {
    /// New description.
    pub description: Option<String>,
    /// New rule.
    #[schema(value_type = Option<RuleDto>)]
    pub rule: Option<serde_json::Value>,
    /// New trigger kinds.
    pub trigger_kinds: Option<Vec<String>>,
}

/// One page of the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IncentivePage {
    /// By slug.
    pub incentives: Vec<IncentiveDto>,
    /// Pass as `pageToken` for the next page; empty on the last page.
    pub next_page_token: String,
}

/// Query of the incentive lists.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct IncentiveQuery {
    /// Page size (1 to 100, default 20).
    #[serde(alias = "page_size")]
    pub page_size: Option<String>,
    /// `nextPageToken` of the previous page.
    #[serde(alias = "page_token")]
    pub page_token: Option<String>,
    /// `true` to list deactivated ones too.
    #[serde(alias = "include_inactive")]
    pub include_inactive: Option<String>,
}

/// Adds an incentive to the catalog (admins).
#[utoipa::path(
    post, path = "/api/incentives", tag = "incentives",
    request_body = CreateIncentiveBody,
    responses(
        (status = 201, description = "Created", body = IncentiveDto),
        (status = 400, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The slug is taken", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn create_incentive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let CreateIncentiveBody { slug, description, rule, trigger_kinds } = parse_body(&body)?;
    let request = ipb::CreateIncentiveRequest {
        slug,
        description,
        rule: parse_rule(rule)?,
        trigger_kinds: parse_list(ACTIVITY_KINDS, &trigger_kinds, "triggerKinds")?,
    };
    let r = state.incentive.clone().create_incentive(upstream::request(&headers, request)).await?;
    let dto = incentive_dto(r.into_inner().incentive.unwrap_or_default());
    Ok((StatusCode::CREATED, Json(dto)).into_response())
}

/// The incentive catalog, by slug.
#[utoipa::path(
    get, path = "/api/incentives", tag = "incentives",
    params(IncentiveQuery),
    responses(
        (status = 200, description = "One page", body = IncentivePage),
        (status = 400, description = "Bad query", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list_incentives(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<IncentiveQuery>,
) -> ApiResult<Json<IncentivePage>> {
    let IncentiveQuery { page_size, page_token, include_inactive } = q;
    let request = ipb::ListIncentivesRequest {
        page_size: parse_page_size(page_size.as_deref(), "pageSize")?,
        page_token: page_token.unwrap_or_default(),
        include_inactive: parse_flag(include_inactive.as_deref(), "includeInactive")?,
    };
    let r = state.incentive.clone().list_incentives(upstream::request(&headers, request)).await?;
    let r = r.into_inner();
    Ok(Json(IncentivePage {
        incentives: r.incentives.into_iter().map(incentive_dto).collect(),
        next_page_token: r.next_page_token,
    }))
}

/// Changes a catalog incentive's description, rule and trigger kinds (admins).
#[utoipa::path(
    patch, path = "/api/incentives/{id}", tag = "incentives",
    params(("id" = String, Path, description = "Incentive id")),
    request_body = UpdateIncentiveBody,
    responses(
        (status = 200, description = "The incentive after the change", body = IncentiveDto),
        (status = 400, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such incentive", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn update_incentive(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<IncentiveDto>> {
    let UpdateIncentiveBody { description, rule, trigger_kinds } = parse_body(&body)?;
    let required = |field| {
        Problem::bad_request(
            field,
            "is required: an update replaces description, rule and triggerKinds together",
        )
    };
    let description = description.ok_or_else(|| required("description"))?;
    let rule = parse_rule(Some(rule.ok_or_else(|| required("rule"))?))?;
    let trigger_kinds = trigger_kinds.ok_or_else(|| required("triggerKinds"))?;
    let request = ipb::UpdateIncentiveRequest {
        id,
        description,
        rule,
        trigger_kinds: parse_list(ACTIVITY_KINDS, &trigger_kinds, "triggerKinds")?,
    };
    let r = state.incentive.clone().update_incentive(upstream::request(&headers, request)).await?;
    Ok(Json(incentive_dto(r.into_inner().incentive.unwrap_or_default())))
}

/// Takes an incentive out of the catalog (admins): it can no longer be linked, and links to
/// it stop producing awards.
#[utoipa::path(
    post, path = "/api/incentives/{id}/deactivate", tag = "incentives",
    params(("id" = String, Path, description = "Incentive id")),
    responses(
        (status = 200, description = "The incentive, inactive", body = IncentiveDto),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such incentive", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn deactivate_incentive(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<IncentiveDto>> {
    let request = ipb::DeactivateIncentiveRequest { id };
    let r =
        state.incentive.clone().deactivate_incentive(upstream::request(&headers, request)).await?;
    Ok(Json(incentive_dto(r.into_inner().incentive.unwrap_or_default())))
}

// ---------------------------------------------------------------------------------------
// Employer incentives

/// A catalog incentive linked to an employer's program.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmployerIncentiveDto {
    /// Id (UUID v7).
    pub id: String,
    /// The employer.
    pub employer_id: String,
    /// The employer's program.
    pub program_id: String,
    /// The catalog incentive, as it is now.
    pub incentive: IncentiveDto,
    /// What the user gets.
    pub reward: String,
    /// IANA time zone whose calendar days count.
    pub time_zone: String,
    /// Activity from this instant counts, RFC 3339 UTC.
    pub start_time: String,
    /// Activity after this instant does not count; `null`: open-ended.
    pub end_time: Option<String>,
    /// `once_per_user` or `once_per_period`.
    pub repeat_policy: String,
    /// `week`, `month` or `year` for `once_per_period`; otherwise `null`.
    pub period: Option<String>,
    /// Run in order each time the rule fires: `award`, `notify`.
    pub actions: Vec<String>,
    /// False once deactivated.
    pub active: bool,
    /// Created at, RFC 3339 UTC.
    pub create_time: String,
}

/// The REST shape of an employer incentive.
pub fn employer_incentive_dto(e: ipb::EmployerIncentive) -> EmployerIncentiveDto {
    let ipb::EmployerIncentive {
        id,
        employer_id,
        program_id,
        incentive,
        reward,
        time_zone,
        start_time,
        end_time,
        repeat_policy,
        period,
        actions,
        active,
        create_time,
    } = e;
    EmployerIncentiveDto {
        id,
        employer_id,
        program_id,
        incentive: incentive_dto(incentive.unwrap_or_default()),
        reward,
        time_zone,
        start_time: time(start_time),
        end_time: end_time.map(|t| time(Some(t))),
        repeat_policy: name_of(REPEAT_POLICIES, repeat_policy).to_string(),
        period: (period != ipb::Period::Unspecified as i32)
            .then(|| name_of(PERIODS, period).to_string()),
        actions: names(ACTIONS, &actions),
        active,
        create_time: time(create_time),
    }
}

/// Body of `POST /api/employers/{employerId}/incentives`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateEmployerIncentiveBody {
    /// The employer's own id of the program: 1–64 characters.
    #[serde(default)]
    pub program_id: String,
    /// The catalog incentive's id, or
    pub incentive_id: Option<String>,
    /// its slug (one of the two).
    pub incentive_slug: Option<String>,
    /// What the user gets, e.g. "pregnancy pillow" (1–200 characters).
    #[serde(default)]
    pub reward: String,
    /// IANA time zone whose calendar days count; default `UTC`.
    pub time_zone: Option<String>,
    /// Activity from this instant counts (RFC 3339); default now.
    pub start_time: Option<String>,
    /// Activity after this instant does not count (RFC 3339); default open-ended.
    pub end_time: Option<String>,
    /// `once_per_user` (default) or `once_per_period`.
    pub repeat_policy: Option<String>,
    /// `week`, `month` or `year`, for `once_per_period`.
    pub period: Option<String>,
    /// Steps run in order when the rule fires, starting with `award`; default
    /// `["award", "notify"]`.
    pub actions: Option<Vec<String>>,
}

/// One page of an employer's incentives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmployerIncentivePage {
    /// Newest first.
    pub employer_incentives: Vec<EmployerIncentiveDto>,
    /// Pass as `pageToken` for the next page; empty on the last page.
    pub next_page_token: String,
}

/// Links a catalog incentive to a program of an employer (the employer's admins, admins).
#[utoipa::path(
    post, path = "/api/employers/{employerId}/incentives", tag = "incentives",
    params(("employerId" = String, Path, description = "The employer: the caller's own for employer admins")),
    request_body = CreateEmployerIncentiveBody,
    responses(
        (status = 201, description = "Created", body = EmployerIncentiveDto),
        (status = 400, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the employer's admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such catalog incentive", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn create_employer_incentive(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(employer_id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let CreateEmployerIncentiveBody {
        program_id,
        incentive_id,
        incentive_slug,
        reward,
        time_zone,
        start_time,
        end_time,
        repeat_policy,
        period,
        actions,
    } = parse_body(&body)?;
    let request = ipb::CreateEmployerIncentiveRequest {
        employer_id,
        program_id,
        incentive_id: incentive_id.unwrap_or_default(),
        incentive_slug: incentive_slug.unwrap_or_default(),
        reward,
        time_zone: time_zone.unwrap_or_default(),
        start_time: parse_time(start_time.as_deref(), "startTime")?,
        end_time: parse_time(end_time.as_deref(), "endTime")?,
        repeat_policy: parse_optional(REPEAT_POLICIES, repeat_policy.as_deref(), "repeatPolicy")?
            .unwrap_or_default()
            .into(),
        period: parse_optional(PERIODS, period.as_deref(), "period")?.unwrap_or_default().into(),
        actions: parse_list(ACTIONS, &actions.unwrap_or_default(), "actions")?,
    };
    let r = state
        .incentive
        .clone()
        .create_employer_incentive(upstream::request(&headers, request))
        .await?;
    let dto = employer_incentive_dto(r.into_inner().employer_incentive.unwrap_or_default());
    Ok((StatusCode::CREATED, Json(dto)).into_response())
}

/// An employer's incentive links, newest first.
#[utoipa::path(
    get, path = "/api/employers/{employerId}/incentives", tag = "incentives",
    params(("employerId" = String, Path, description = "The employer: the caller's own for employer admins"), IncentiveQuery),
    responses(
        (status = 200, description = "One page", body = EmployerIncentivePage),
        (status = 400, description = "Bad query", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the employer's admin", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list_employer_incentives(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(employer_id): Path<String>,
    Query(q): Query<IncentiveQuery>,
) -> ApiResult<Json<EmployerIncentivePage>> {
    let IncentiveQuery { page_size, page_token, include_inactive } = q;
    let request = ipb::ListEmployerIncentivesRequest {
        employer_id,
        page_size: parse_page_size(page_size.as_deref(), "pageSize")?,
        page_token: page_token.unwrap_or_default(),
        include_inactive: parse_flag(include_inactive.as_deref(), "includeInactive")?,
    };
    let r = state
        .incentive
        .clone()
        .list_employer_incentives(upstream::request(&headers, request))
        .await?;
    let r = r.into_inner();
    Ok(Json(EmployerIncentivePage {
        employer_incentives: r
            .employer_incentives
            .into_iter()
            .map(employer_incentive_dto)
            .collect(),
        next_page_token: r.next_page_token,
    }))
}

/// Stops an employer incentive: later activity no longer counts (the employer's admins,
/// admins).
#[utoipa::path(
    post, path = "/api/employer-incentives/{id}/deactivate", tag = "incentives",
    params(("id" = String, Path, description = "Employer incentive id")),
    responses(
        (status = 200, description = "The employer incentive, inactive", body = EmployerIncentiveDto),
        (status = 403, description = "Not the employer's admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such employer incentive", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn deactivate_employer_incentive(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<EmployerIncentiveDto>> {
    let request = ipb::DeactivateEmployerIncentiveRequest { id };
    let r = state
        .incentive
        .clone()
        .deactivate_employer_incentive(upstream::request(&headers, request))
        .await?;
    Ok(Json(employer_incentive_dto(r.into_inner().employer_incentive.unwrap_or_default())))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::problem::FieldError;

    fn problem<T: std::fmt::Debug>(r: ApiResult<T>) -> Problem {
        *r.unwrap_err().0
    }

    fn fields<T: std::fmt::Debug>(r: ApiResult<T>) -> Vec<String> {
        problem(r).errors.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn every_activity_kind_name_maps_to_its_enum_and_back() {
        let table = [
            ("mood", ActivityKind::Mood),
            ("symptom", ActivityKind::Symptom),
            ("steps", ActivityKind::Steps),
            ("sleep", ActivityKind::Sleep),
            ("weight", ActivityKind::Weight),
            ("birth", ActivityKind::Birth),
            ("challenge_progress", ActivityKind::ChallengeProgress),
        ];
        for (name, kind) in table {
            assert_eq!(parse_name(ACTIVITY_KINDS, name), Some(kind), "{name}");
            assert_eq!(name_of(ACTIVITY_KINDS, kind as i32), name, "{kind:?}");
        }
    }

    #[test]
    fn unspecified_and_unknown_enum_numbers_read_as_unspecified() {
        assert_eq!(name_of(ACTIVITY_KINDS, 0), "unspecified");
        assert_eq!(name_of(ACTIVITY_KINDS, 99), "unspecified");
        assert_eq!(name_of(REPEAT_POLICIES, 0), "unspecified");
    }

    #[test]
    fn a_loggable_kind_parses_ignoring_case() {
        assert_eq!(loggable_kind(Some("mood")).unwrap(), ActivityKind::Mood);
        assert_eq!(loggable_kind(Some("Birth")).unwrap(), ActivityKind::Birth);
    }

    #[test]
    fn an_unknown_kind_is_a_field_error_on_kind() {
        let p = problem(loggable_kind(Some("dance")));
        assert_eq!(p.status, 400);
        assert_eq!(p.reason, "INVALID_ARGUMENT");
        assert_eq!(
            p.errors,
            vec![FieldError {
                field: "kind".into(),
                description:
                    "has unknown value \"dance\"; must be mood, symptom, steps, sleep, weight or birth"
                        .into(),
            }]
        );
    }

    #[test]
    fn challenge_progress_and_a_missing_kind_are_field_errors_on_kind() {
        assert_eq!(fields(loggable_kind(Some("challenge_progress"))), ["kind"]);
        assert_eq!(fields(loggable_kind(None)), ["kind"]);
    }

    #[test]
    fn trigger_kinds_parse_to_proto_numbers_and_an_unknown_one_names_the_field() {
        let kinds = ["mood".to_string(), "challenge_progress".to_string()];
        assert_eq!(
            parse_list(ACTIVITY_KINDS, &kinds, "triggerKinds").unwrap(),
            vec![ActivityKind::Mood as i32, ActivityKind::ChallengeProgress as i32]
        );
        let bad = ["mood".to_string(), "yoga".to_string()];
        assert_eq!(fields(parse_list(ACTIVITY_KINDS, &bad, "triggerKinds")), ["triggerKinds"]);
    }

    #[test]
    fn a_consecutive_days_rule_reads_and_writes_the_same_json() {
        let raw = json!({"consecutiveDays": {"days": 5}});
        let rule = parse_rule(Some(raw.clone())).unwrap();
        assert_eq!(
            rule,
            Some(ipb::Rule {
                kind: Some(rule::Kind::ConsecutiveDays(ipb::ConsecutiveDays { days: 5 }))
            })
        );
        assert_eq!(serde_json::to_value(rule_dto(rule)).unwrap(), raw);
    }

    #[test]
    fn an_each_occurrence_rule_reads_and_writes_the_same_json() {
        let raw = json!({"eachOccurrence": {}});
        let rule = parse_rule(Some(raw.clone())).unwrap();
        assert_eq!(
            rule,
            Some(ipb::Rule { kind: Some(rule::Kind::EachOccurrence(ipb::EachOccurrence {})) })
        );
        assert_eq!(serde_json::to_value(rule_dto(rule)).unwrap(), raw);
    }

    #[test]
    fn a_rule_without_exactly_one_known_key_is_a_field_error_on_rule() {
        for raw in [
            json!({}),
            json!({"consecutiveDays": {"days": 5}, "eachOccurrence": {}}),
            json!({"weekly": {}}),
            json!({"consecutiveDays": {}}),
            json!({"consecutiveDays": {"days": 5, "hours": 1}}),
            json!("eachOccurrence"),
        ] {
            let p = problem(parse_rule(Some(raw.clone())));
            let fields: Vec<&str> = p.errors.iter().map(|e| e.field.as_str()).collect();
            assert_eq!((p.status, fields), (400, vec!["rule"]), "{raw}");
        }
    }

    #[test]
    fn an_absent_rule_is_left_to_the_service() {
        assert_eq!(parse_rule(None).unwrap(), None);
        assert_eq!(rule_dto(None), None);
        assert_eq!(rule_dto(Some(ipb::Rule { kind: None })), None);
    }

    #[test]
    fn repeat_policy_period_and_actions_parse_and_unknown_names_name_their_field() {
        assert_eq!(
            parse_optional(REPEAT_POLICIES, Some("once_per_period"), "repeatPolicy").unwrap(),
            Some(ipb::RepeatPolicy::OncePerPeriod)
        );
        assert_eq!(parse_optional(PERIODS, None, "period").unwrap(), None);
        assert_eq!(
            parse_list(ACTIONS, &["award".to_string(), "notify".to_string()], "actions").unwrap(),
            vec![ipb::ActionKind::Award as i32, ipb::ActionKind::Notify as i32]
        );
        assert_eq!(
            fields(parse_optional(REPEAT_POLICIES, Some("twice"), "repeatPolicy")),
            ["repeatPolicy"]
        );
        assert_eq!(fields(parse_optional(PERIODS, Some("day"), "period")), ["period"]);
        assert_eq!(fields(parse_list(ACTIONS, &["email".to_string()], "actions")), ["actions"]);
    }

    #[test]
    fn an_employer_incentive_reads_with_lower_case_enums_and_nulls_for_unset_fields() {
        let start = prost_types::Timestamp { seconds: 1_767_225_600, nanos: 0 };
        let e = ipb::EmployerIncentive {
            id: "ei-1".into(),
            employer_id: "acme".into(),
            program_id: "maternity".into(),
            incentive: Some(ipb::Incentive {
                id: "i-1".into(),
                slug: "birth-reported".into(),
                description: "A reported birth".into(),
                rule: Some(ipb::Rule {
                    kind: Some(rule::Kind::EachOccurrence(ipb::EachOccurrence {})),
                }),
                trigger_kinds: vec![ActivityKind::Birth as i32],
                active: true,
                create_time: Some(start),
                update_time: Some(start),
            }),
            reward: "pregnancy pillow".into(),
            time_zone: "Europe/Berlin".into(),
            start_time: Some(start),
            end_time: None,
            repeat_policy: ipb::RepeatPolicy::OncePerUser as i32,
            period: ipb::Period::Unspecified as i32,
            actions: vec![ipb::ActionKind::Award as i32, ipb::ActionKind::Notify as i32],
            active: true,
            create_time: Some(start),
        };
        assert_eq!(
            serde_json::to_value(employer_incentive_dto(e)).unwrap(),
            json!({
                "id": "ei-1",
                "employerId": "acme",
                "programId": "maternity",
                "incentive": {
                    "id": "i-1",
                    "slug": "birth-reported",
                    "description": "A reported birth",
                    "rule": {"eachOccurrence": {}},
                    "triggerKinds": ["birth"],
                    "active": true,
                    "createTime": "2026-01-01T00:00:00Z",
                    "updateTime": "2026-01-01T00:00:00Z",
                },
                "reward": "pregnancy pillow",
                "timeZone": "Europe/Berlin",
                "startTime": "2026-01-01T00:00:00Z",
                "endTime": null,
                "repeatPolicy": "once_per_user",
                "period": null,
                "actions": ["award", "notify"],
                "active": true,
                "createTime": "2026-01-01T00:00:00Z",
            })
        );
    }

    #[test]
    fn an_activity_without_a_value_answers_value_null() {
        let r = ppb::LogActivityResponse {
            activity_id: "a-1".into(),
            kind: ActivityKind::Mood as i32,
            user_id: "u-1".into(),
            value: None,
            note: "fine".into(),
            occurred_at: Some(prost_types::Timestamp { seconds: 1_767_225_600, nanos: 0 }),
            accept_time: Some(prost_types::Timestamp { seconds: 1_767_225_601, nanos: 0 }),
        };
        assert_eq!(
            serde_json::to_value(activity_dto(r)).unwrap(),
            json!({
                "activityId": "a-1",
                "kind": "mood",
                "userId": "u-1",
                "value": null,
                "note": "fine",
                "occurredAt": "2026-01-01T00:00:00Z",
                "acceptTime": "2026-01-01T00:00:01Z",
            })
        );
    }

    fn award(id: &str, award_time: Option<prost_types::Timestamp>) -> ipb::Award {
        ipb::Award {
            id: id.into(),
            user_id: "u-1".into(),
            employer_id: "acme".into(),
            employer_incentive_id: "ei-1".into(),
            program_id: "maternity".into(),
            incentive_slug: "birth-reported".into(),
            reward: "pregnancy pillow".into(),
            award_day: "2026-01-01".into(),
            period_key: "once".into(),
            activity_id: "a-1".into(),
            award_time,
        }
    }

    const AWARD_JSON: &str = concat!(
        r#"{"id":"aw-1","userId":"u-1","employerId":"acme","employerIncentiveId":"ei-1","#,
        r#""programId":"maternity","incentiveSlug":"birth-reported","reward":"pregnancy pillow","#,
        r#""awardDay":"2026-01-01","periodKey":"once","activityId":"a-1","#,
        r#""awardTime":"2026-01-01T00:00:00.000001Z"}"#
    );

    #[test]
    fn an_award_answers_exactly_this_json() {
        let a =
            award("aw-1", Some(prost_types::Timestamp { seconds: 1_767_225_600, nanos: 1_000 }));
        assert_eq!(serde_json::to_string(&a).unwrap(), AWARD_JSON);
    }

    #[test]
    fn a_page_of_awards_answers_exactly_this_json_with_an_empty_next_page_token() {
        let r = ipb::ListAwardsResponse {
            awards: vec![award(
                "aw-1",
                Some(prost_types::Timestamp { seconds: 1_767_225_600, nanos: 1_000 }),
            )],
            next_page_token: String::new(),
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            format!(r#"{{"awards":[{AWARD_JSON}],"nextPageToken":""}}"#)
        );
        let r = ipb::ListAwardsResponse { awards: vec![], next_page_token: "t-2".into() };
        assert_eq!(serde_json::to_string(&r).unwrap(), r#"{"awards":[],"nextPageToken":"t-2"}"#);
    }

    #[test]
    fn an_award_without_a_time_answers_an_empty_award_time() {
        let json = serde_json::to_value(award("aw-2", None)).unwrap();
        assert_eq!(json["awardTime"], "");
    }

    #[test]
    fn include_inactive_reads_true_false_and_rejects_anything_else() {
        assert!(!parse_flag(None, "includeInactive").unwrap());
        assert!(parse_flag(Some("true"), "includeInactive").unwrap());
        assert!(!parse_flag(Some("0"), "includeInactive").unwrap());
        assert_eq!(fields(parse_flag(Some("yes"), "includeInactive")), ["includeInactive"]);
    }

    fn state() -> AppState {
        let settings = ewpm_kit::settings::Settings::default();
        let addrs = crate::upstream_names()
            .map(|name| (name.to_string(), "http://127.0.0.1:50051".to_string()));
        AppState::connect(
            &addrs.into_iter().collect(),
            ewpm_kit::auth::TokenKeys::new("test", &settings.auth),
            &settings.limits,
        )
        .unwrap()
    }

    #[tokio::test]
    async fn the_router_mounts_every_incentive_route_and_the_document_lists_them() {
        // Overlapping routes would panic while the router is built.
        let _router = crate::router(state());
        let doc = <crate::ApiDoc as utoipa::OpenApi>::openapi();
        let mut paths: Vec<&str> = doc
            .paths
            .paths
            .keys()
            .map(String::as_str)
            .filter(|p| {
                ["/api/activities", "/api/births", "/api/incentives", "/api/employer-incentives"]
                    .iter()
                    .any(|prefix| p.starts_with(prefix))
                    || p.ends_with("/awards")
                    || p.contains("/awards/")
                    || p.ends_with("/incentives")
            })
            .collect();
        paths.sort_unstable();
        assert_eq!(
            paths,
            [
                "/api/activities",
                "/api/births",
                "/api/employer-incentives/{id}/deactivate",
                "/api/employers/{employerId}/awards",
                "/api/employers/{employerId}/incentives",
                "/api/incentives",
                "/api/incentives/{id}",
                "/api/incentives/{id}/deactivate",
                "/api/me/awards/stream",
                "/api/users/{userId}/awards",
            ]
        );
    }

    #[tokio::test]
    async fn a_bad_kind_is_answered_by_the_edge_without_calling_the_service() {
        let body = Bytes::from_static(br#"{"kind": "dance", "value": 3}"#);
        let err = log_activity(State(state()), HeaderMap::new(), body).await.unwrap_err();
        assert_eq!((err.0.status, fields(Err::<(), _>(err))), (400, vec!["kind".to_string()]));
    }
}
