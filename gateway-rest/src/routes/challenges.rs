//! REST routes of the challenge service, keeping the seed's paths. Bodies are camelCase JSON;
//! every route forwards the caller's `authorization` header to gRPC untouched.

use axum::{
    Json,
    body::Bytes,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode, header},
    response::IntoResponse,
};
use chrono::{DateTime, Utc};
use ewpm_proto::challenge::v1 as pb;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use utoipa::{IntoParams, ToSchema};

use crate::{
    AppState,
    problem::{ApiError, ApiResult, Problem},
    rfc3339 as time, upstream,
};

/// A wellness challenge.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChallengeDto {
    /// Server-minted id (UUID v7).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Opens at (inclusive), RFC 3339 UTC.
    pub start_time: String,
    /// Closes at (inclusive), RFC 3339 UTC.
    pub end_time: String,
    /// The goal.
    pub goal: pb::Goal,
    /// The employer it belongs to; `null` means open to everyone.
    pub employer_id: Option<String>,
    /// `upcoming`, `active` or `ended`, as of the response.
    pub state: String,
    /// Creator's user id.
    pub created_by: String,
    /// Created at, RFC 3339 UTC.
    pub create_time: String,
    /// Last editor's user id.
    pub updated_by: String,
    /// Last changed at, RFC 3339 UTC.
    pub update_time: String,
    /// Seconds after `endTime` that late entries (which happened within the window) are still
    /// accepted; after that the board is final.
    pub late_grace_seconds: i32,
}

// Answers carry the proto `Goal` (the same JSON). Requests keep this type: serde names it in
// a 400 (`expected struct GoalDto`), and that text stays as it was.
/// What a participant aims for.
#[derive(Debug, Clone, PartialEq, Deserialize, ToSchema)]
pub struct GoalDto {
    /// Amount to reach, > 0.
    pub target: f64,
    /// Unit of the target, e.g. `steps`.
    pub unit: String,
}

/// Body of `POST /api/challenges`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateChallengeBody {
    /// Display name, 1–200 characters.
    #[serde(default)]
    pub name: String,
    /// Free text, at most 2000 characters.
    #[serde(default)]
    pub description: String,
    /// Opens at, RFC 3339.
    pub start_time: Option<String>,
    /// Closes at, RFC 3339; after `startTime`.
    pub end_time: Option<String>,
    /// The goal.
    pub goal: Option<GoalDto>,
    /// Employer scope; omit for open (admins) or your own employer (employer admins).
    #[serde(default)]
    pub employer_id: Option<String>,
    /// Retry key; the `Idempotency-Key` header works too.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Late grace in seconds, 0 (default) to 604800 (7 days).
    #[serde(default)]
    pub late_grace_seconds: i32,
}

/// Body of `PATCH /api/challenges/{id}`: only the fields present change.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateChallengeBody {
    /// New name.
    pub name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New start, RFC 3339.
    pub start_time: Option<String>,
    /// New end, RFC 3339.
    pub end_time: Option<String>,
    /// New goal; `target` and `unit` may be given alone.
    pub goal: Option<GoalPatch>,
    /// New employer scope (admins); `null` or `""` makes it open.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub employer_id: Option<Option<String>>,
    /// New late grace in seconds, 0 to 604800.
    pub late_grace_seconds: Option<i32>,
}

/// A partial goal.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GoalPatch {
    /// New target.
    pub target: Option<f64>,
    /// New unit.
    pub unit: Option<String>,
}

/// One page of challenges.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChallengePage {
    /// The challenges.
    pub challenges: Vec<ChallengeDto>,
    /// Pass as `page_token` for the next page; empty on the last page.
    pub next_page_token: String,
}

/// Query of `GET /api/challenges`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// `upcoming`, `active` or `ended`; omit for all.
    pub state: Option<String>,
    /// Only this employer's challenges.
    #[serde(alias = "employerId")]
    pub employer_id: Option<String>,
    /// Page size (default 20, max 100).
    #[serde(alias = "pageSize")]
    pub page_size: Option<String>,
    /// Token of the next page.
    #[serde(alias = "pageToken")]
    pub page_token: Option<String>,
}

/// Query of `GET /api/users/{userId}/challenges/active`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ActiveQuery {
    /// Admins asking about another user: that user's employer.
    #[serde(alias = "employerId")]
    pub employer_id: Option<String>,
    /// Page size (default 20, max 100).
    #[serde(alias = "pageSize")]
    pub page_size: Option<String>,
    /// Token of the next page.
    #[serde(alias = "pageToken")]
    pub page_token: Option<String>,
}

/// Create a challenge.
#[utoipa::path(
    post, path = "/api/challenges", tag = "challenges",
    request_body = CreateChallengeBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "Retry key: a retry returns the first result")),
    responses(
        (status = 201, description = "Created", body = ChallengeDto),
        (status = 400, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Role or employer does not allow it", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn create(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let body: CreateChallengeBody = parse_body(&body)?;
    let CreateChallengeBody {
        name,
        description,
        start_time,
        end_time,
        goal,
        employer_id,
        idempotency_key,
        late_grace_seconds,
    } = body;
    let start_time = parse_time(start_time.as_deref(), "startTime")?;
    let end_time = parse_time(end_time.as_deref(), "endTime")?;
    let header_key = upstream::idempotency_key(&headers);
    let request = pb::CreateChallengeRequest {
        name,
        description,
        start_time,
        end_time,
        goal: goal.map(|g| pb::Goal { target: g.target, unit: g.unit }),
        employer_id: employer_id.unwrap_or_default(),
        idempotency_key: idempotency_key.or(header_key).unwrap_or_default(),
        late_grace_seconds,
    };
    let mut client = state.challenge.clone();
    let created = client.create_challenge(upstream::request(&headers, request)).await?;
    let dto = to_dto(created.into_inner().challenge.unwrap_or_default());
    let location = format!("/api/challenges/{}", dto.id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(dto)).into_response())
}

/// Get one challenge.
#[utoipa::path(
    get, path = "/api/challenges/{id}", tag = "challenges",
    params(("id" = String, Path, description = "Challenge id")),
    responses(
        (status = 200, description = "The challenge", body = ChallengeDto),
        (status = 404, description = "No such challenge visible to the caller", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<ChallengeDto>> {
    let mut client = state.challenge.clone();
    let r =
        client.get_challenge(upstream::request(&headers, pb::GetChallengeRequest { id })).await?;
    Ok(Json(to_dto(r.into_inner().challenge.unwrap_or_default())))
}

/// List the challenges the caller may see.
#[utoipa::path(
    get, path = "/api/challenges", tag = "challenges",
    params(ListQuery),
    responses(
        (status = 200, description = "One page", body = ChallengePage),
        (status = 400, description = "Bad filter", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<ChallengePage>> {
    let ListQuery { state: wanted, employer_id, page_size, page_token } = q;
    let state_filter = match wanted.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("") | Some("all") => pb::ChallengeState::Unspecified,
        Some("upcoming") => pb::ChallengeState::Upcoming,
        Some("active") => pb::ChallengeState::Active,
        Some("ended") => pb::ChallengeState::Ended,
        Some(_) => {
            return Err(Problem::bad_request("state", "must be upcoming, active or ended").into());
        }
    };
    let request = pb::ListChallengesRequest {
        state: state_filter as i32,
        employer_id: employer_id.unwrap_or_default(),
        page_size: parse_page_size(page_size.as_deref(), "page_size")?,
        page_token: page_token.unwrap_or_default(),
    };
    let mut client = state.challenge.clone();
    let r = client.list_challenges(upstream::request(&headers, request)).await?.into_inner();
    Ok(Json(ChallengePage {
        challenges: r.challenges.into_iter().map(to_dto).collect(),
        next_page_token: r.next_page_token,
    }))
}

/// Change some fields of a challenge.
#[utoipa::path(
    patch, path = "/api/challenges/{id}", tag = "challenges",
    params(("id" = String, Path, description = "Challenge id")),
    request_body = UpdateChallengeBody,
    responses(
        (status = 200, description = "The challenge after the change", body = ChallengeDto),
        (status = 400, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such challenge", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn update(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<ChallengeDto>> {
    let UpdateChallengeBody {
        name,
        description,
        start_time,
        end_time,
        goal,
        employer_id,
        late_grace_seconds,
    } = parse_body(&body)?;
    let mut paths = Vec::new();
    let mut challenge = pb::Challenge { id, ..Default::default() };
    if let Some(name) = name {
        paths.push("name");
        challenge.name = name;
    }
    if let Some(description) = description {
        paths.push("description");
        challenge.description = description;
    }
    if start_time.is_some() {
        paths.push("start_time");
        challenge.start_time = parse_time(start_time.as_deref(), "startTime")?;
    }
    if end_time.is_some() {
        paths.push("end_time");
        challenge.end_time = parse_time(end_time.as_deref(), "endTime")?;
    }
    if let Some(GoalPatch { target, unit }) = goal {
        let mut g = pb::Goal::default();
        if let Some(target) = target {
            paths.push("goal.target");
            g.target = target;
        }
        if let Some(unit) = unit {
            paths.push("goal.unit");
            g.unit = unit;
        }
        challenge.goal = Some(g);
    }
    if let Some(employer) = employer_id {
        paths.push("employer_id");
        challenge.employer_id = employer.unwrap_or_default();
    }
    if let Some(grace) = late_grace_seconds {
        paths.push("late_grace_seconds");
        challenge.late_grace_seconds = grace;
    }
    if paths.is_empty() {
        return Err(Problem::bad_request("body", "names no field to change").into());
    }
    let request = pb::UpdateChallengeRequest {
        challenge: Some(challenge),
        update_mask: Some(prost_types::FieldMask {
            paths: paths.into_iter().map(str::to_string).collect(),
        }),
    };
    let mut client = state.challenge.clone();
    let r = client
        .update_challenge(upstream::request(&headers, request))
        .await
        .map_err(|status| ApiError::from_status(&status, "challenge."))?;
    Ok(Json(to_dto(r.into_inner().challenge.unwrap_or_default())))
}

/// The challenges active now for a user (the caller, or anyone for admins).
#[utoipa::path(
    get, path = "/api/users/{userId}/challenges/active", tag = "challenges",
    params(("userId" = String, Path, description = "The user; must be the caller unless the caller is an admin"), ActiveQuery),
    responses(
        (status = 200, description = "Active challenges, soonest ending first, with the user's standing", body = ActivePage),
        (status = 403, description = "Another user's list, asked by a non-admin", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn active_for_user(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(user_id): Path<String>,
    Query(q): Query<ActiveQuery>,
) -> ApiResult<Json<ActivePage>> {
    let ActiveQuery { employer_id, page_size, page_token } = q;
    let request = pb::ListActiveChallengesRequest {
        user_id,
        employer_id: employer_id.unwrap_or_default(),
        page_size: parse_page_size(page_size.as_deref(), "page_size")?,
        page_token: page_token.unwrap_or_default(),
    };
    let mut client = state.challenge.clone();
    let r = client.list_active_challenges(upstream::request(&headers, request)).await?.into_inner();
    let mut standings: std::collections::HashMap<String, pb::Standing> =
        r.standings.into_iter().map(|s| (s.challenge_id.clone(), s)).collect();
    Ok(Json(ActivePage {
        challenges: r
            .challenges
            .into_iter()
            .map(|c| {
                let standing = standings.remove(&c.id).filter(|s| s.available).map(|s| {
                    StandingDto { total: s.total, percent_of_goal: s.percent_of_goal, rank: s.rank }
                });
                ActiveChallengeDto { challenge: to_dto(c), standing }
            })
            .collect(),
        next_page_token: r.next_page_token,
    }))
}

/// One page of a user's active challenges, each with the user's standing.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActivePage {
    /// The challenges, soonest ending first.
    pub challenges: Vec<ActiveChallengeDto>,
    /// Pass as `page_token` for the next page; empty on the last page.
    pub next_page_token: String,
}

/// An active challenge and the user's standing in it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActiveChallengeDto {
    /// The challenge.
    #[serde(flatten)]
    pub challenge: ChallengeDto,
    /// The user's total, percent of goal and rank; absent when the leaderboard could not
    /// be reached.
    pub standing: Option<StandingDto>,
}

/// A user's standing in a challenge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StandingDto {
    /// The user's total progress.
    pub total: f64,
    /// `total` as a percentage of the goal (may exceed 100).
    pub percent_of_goal: f64,
    /// Competition rank; 0 before the user's first points.
    pub rank: i64,
}

/// Deserializes a field that may be `null`: present-and-null is `Some(None)`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// Parses a JSON body, answering 400 problem+json with the serde message.
pub(crate) fn parse_body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Problem::bad_request("body", "must be a JSON object").into());
    }
    serde_json::from_slice(bytes)
        .map_err(|e| Problem::bad_request("body", format!("is not valid: {e}")).into())
}

pub(crate) fn parse_time(
    raw: Option<&str>,
    field: &str,
) -> Result<Option<prost_types::Timestamp>, ApiError> {
    match raw {
        None => Ok(None),
        Some(raw) => DateTime::parse_from_rfc3339(raw.trim())
            .map(|t| Some(ewpm_kit::timestamp::to_proto(t.with_timezone(&Utc))))
            .map_err(|_| {
                Problem::bad_request(
                    field,
                    "must be an RFC 3339 timestamp, e.g. 2026-01-31T00:00:00Z",
                )
                .into()
            }),
    }
}

/// A page size query parameter named `field`; absent is 0 (the service's default). The
/// service checks the range.
pub(crate) fn parse_page_size(raw: Option<&str>, field: &str) -> Result<i32, ApiError> {
    match raw {
        None | Some("") => Ok(0),
        Some(raw) => raw
            .parse::<i32>()
            .map_err(|_| Problem::bad_request(field, "must be a whole number").into()),
    }
}

/// The REST shape of a challenge.
pub fn to_dto(c: pb::Challenge) -> ChallengeDto {
    let pb::Challenge {
        id,
        name,
        description,
        start_time,
        end_time,
        goal,
        employer_id,
        state,
        created_by,
        create_time,
        updated_by,
        update_time,
        late_grace_seconds,
    } = c;
    let state = match pb::ChallengeState::try_from(state) {
        Ok(pb::ChallengeState::Upcoming) => "upcoming",
        Ok(pb::ChallengeState::Active) => "active",
        Ok(pb::ChallengeState::Ended) => "ended",
        _ => "unspecified",
    };
    ChallengeDto {
        id,
        name,
        description,
        start_time: time(start_time),
        end_time: time(end_time),
        goal: goal.unwrap_or_default(),
        employer_id: (!employer_id.is_empty()).then_some(employer_id),
        state: state.to_string(),
        created_by,
        create_time: time(create_time),
        updated_by,
        update_time: time(update_time),
        late_grace_seconds,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_challenge_answers_exactly_this_json() {
        let at = |seconds| Some(prost_types::Timestamp { seconds, nanos: 0 });
        let c = pb::Challenge {
            id: "c-1".into(),
            name: "10k steps".into(),
            description: "walk".into(),
            start_time: at(1_767_225_600),
            end_time: at(1_769_904_000),
            goal: Some(pb::Goal { target: 300_000.0, unit: "steps".into() }),
            employer_id: String::new(),
            state: pb::ChallengeState::Active as i32,
            created_by: "admin-1".into(),
            create_time: at(1_767_139_200),
            updated_by: "admin-2".into(),
            update_time: at(1_767_139_201),
            late_grace_seconds: 3600,
        };
        assert_eq!(
            serde_json::to_string(&to_dto(c)).unwrap(),
            concat!(
                r#"{"id":"c-1","name":"10k steps","description":"walk","#,
                r#""startTime":"2026-01-01T00:00:00Z","endTime":"2026-02-01T00:00:00Z","#,
                r#""goal":{"target":300000.0,"unit":"steps"},"employerId":null,"state":"active","#,
                r#""createdBy":"admin-1","createTime":"2025-12-31T00:00:00Z","updatedBy":"admin-2","#,
                r#""updateTime":"2025-12-31T00:00:01Z","lateGraceSeconds":3600}"#
            )
        );
    }

    #[test]
    fn a_challenge_without_a_goal_answers_a_zero_goal() {
        let json = serde_json::to_value(to_dto(pb::Challenge::default())).unwrap();
        assert_eq!(json["goal"], serde_json::json!({"target": 0.0, "unit": ""}));
    }
}
