//! `ewpm.challenge.v1.ChallengeService`: converts requests to domain values, calls
//! [`Challenges`], converts the result back. Proto types stop here.

use chrono::{DateTime, Utc};
use ewpm_kit::{
    auth::Caller,
    error::{FieldViolation, Violations},
    paging, timestamp,
};
use ewpm_proto::challenge::v1::{self as pb, challenge_service_server::ChallengeService};
use prost::Message;
use tonic::{Request, Response, Status};

use crate::{
    domain::{
        self, Challenge, ChallengeId, ChallengeName, ChallengePatch, Description, EmployerId, Goal,
        LateGrace, NewChallenge, State, Window,
    },
    error::ChallengeError,
    service::{Challenges, Page},
    standings::Standings,
    store::Idempotency,
};

/// The gRPC face of the challenge service.
#[derive(Clone)]
pub struct ChallengeGrpc {
    challenges: Challenges,
    standings: Standings,
}

impl ChallengeGrpc {
    /// Serves `challenges`, with standings in active listings from `standings`.
    pub fn new(challenges: Challenges, standings: Standings) -> Self {
        Self { challenges, standings }
    }
}

#[tonic::async_trait]
impl ChallengeService for ChallengeGrpc {
    async fn create_challenge(
        &self,
        request: Request<pb::CreateChallengeRequest>,
    ) -> Result<Response<pb::CreateChallengeResponse>, Status> {
        let caller = Caller::of(&request)?;
        domain::can_author(&caller).map_err(ChallengeError::from)?;
        let (new, idempotency) = parse_create(request.into_inner())?;
        let created = self.challenges.create(&caller, new, idempotency).await?;
        Ok(Response::new(pb::CreateChallengeResponse {
            challenge: Some(to_proto(&created, self.challenges.now())),
        }))
    }

    async fn get_challenge(
        &self,
        request: Request<pb::GetChallengeRequest>,
    ) -> Result<Response<pb::GetChallengeResponse>, Status> {
        let caller = Caller::of(&request)?;
        let pb::GetChallengeRequest { id } = request.into_inner();
        let id = ChallengeId::parse(&id, "id").map_err(ChallengeError::from)?;
        let challenge = self.challenges.get(&caller, id).await?;
        Ok(Response::new(pb::GetChallengeResponse {
            challenge: Some(to_proto(&challenge, self.challenges.now())),
        }))
    }

    async fn list_challenges(
        &self,
        request: Request<pb::ListChallengesRequest>,
    ) -> Result<Response<pb::ListChallengesResponse>, Status> {
        let caller = Caller::of(&request)?;
        let pb::ListChallengesRequest { state, employer_id, page_size, page_token } =
            request.into_inner();
        let mut v = Violations::new();
        let state = v.check(state_filter(state));
        let employer = v.check(EmployerId::parse_optional(&employer_id, "employer_id"));
        let page_size = v.check(paging::page_size(page_size));
        v.finish().map_err(ChallengeError::from)?;
        let (Some(state), Some(employer), Some(page_size)) = (state, employer, page_size) else {
            return Err(
                ChallengeError::from(anyhow::anyhow!("violations were reported above")).into()
            );
        };
        let page = self.challenges.list(&caller, state, employer, page_size, &page_token).await?;
        let (challenges, next_page_token) = page_to_proto(page, self.challenges.now());
        Ok(Response::new(pb::ListChallengesResponse { challenges, next_page_token }))
    }

    async fn update_challenge(
        &self,
        request: Request<pb::UpdateChallengeRequest>,
    ) -> Result<Response<pb::UpdateChallengeResponse>, Status> {
        let caller = Caller::of(&request)?;
        domain::can_author(&caller).map_err(ChallengeError::from)?;
        let (id, patch) = parse_update(request.into_inner())?;
        let updated = self.challenges.update(&caller, id, patch).await?;
        Ok(Response::new(pb::UpdateChallengeResponse {
            challenge: Some(to_proto(&updated, self.challenges.now())),
        }))
    }

    async fn list_active_challenges(
        &self,
        request: Request<pb::ListActiveChallengesRequest>,
    ) -> Result<Response<pb::ListActiveChallengesResponse>, Status> {
        let caller = Caller::of(&request)?;
        let pb::ListActiveChallengesRequest { user_id, employer_id, page_size, page_token } =
            request.into_inner();
        let mut v = Violations::new();
        let employer = v.check(EmployerId::parse_optional(&employer_id, "employer_id"));
        let page_size = v.check(paging::page_size(page_size));
        if user_id.chars().count() > 128 {
            v.push(FieldViolation::new("user_id", "must be at most 128 characters"));
        }
        v.finish().map_err(ChallengeError::from)?;
        let (Some(employer), Some(page_size)) = (employer, page_size) else {
            return Err(
                ChallengeError::from(anyhow::anyhow!("violations were reported above")).into()
            );
        };
        let page = self
            .challenges
            .list_active(&caller, &user_id, employer, page_size, &page_token)
            .await?;
        let user = if user_id.is_empty() { caller.user_id.as_str() } else { user_id.as_str() };
        let standings = self.standings.of(user, &page.items).await;
        let (challenges, next_page_token) = page_to_proto(page, self.challenges.now());
        Ok(Response::new(pb::ListActiveChallengesResponse {
            challenges,
            next_page_token,
            standings,
        }))
    }
}

/// Longest idempotency key.
const MAX_IDEMPOTENCY_KEY: usize = 128;

fn parse_create(
    request: pb::CreateChallengeRequest,
) -> Result<(NewChallenge, Option<Idempotency>), ChallengeError> {
    let fingerprint = fingerprint(&pb::CreateChallengeRequest {
        idempotency_key: String::new(),
        ..request.clone()
    });
    let pb::CreateChallengeRequest {
        name,
        description,
        start_time,
        end_time,
        goal,
        employer_id,
        idempotency_key,
        late_grace_seconds,
    } = request;
    let mut v = Violations::new();
    let late_grace = v.check(LateGrace::parse(late_grace_seconds, "late_grace_seconds"));
    let name = v.check(ChallengeName::parse(&name));
    let description = v.check(Description::parse(&description));
    let start = v.check(parse_time(start_time.as_ref(), "start_time"));
    let end = v.check(parse_time(end_time.as_ref(), "end_time"));
    let window = match Window::parse(start.flatten(), end.flatten()) {
        Ok(w) => Some(w),
        Err(errs) => {
            // A missing time already reported as unparseable is not reported twice.
            for e in errs {
                if (e.field == "start_time" && start.is_none())
                    || (e.field == "end_time" && end.is_none())
                {
                    continue;
                }
                v.push(e);
            }
            None
        }
    };
    let goal = match goal {
        None => {
            v.push(FieldViolation::new("goal", "is required"));
            None
        }
        Some(pb::Goal { target, unit }) => match Goal::parse(target, &unit) {
            Ok(g) => Some(g),
            Err(errs) => {
                errs.into_iter().for_each(|e| v.push(e));
                None
            }
        },
    };
    let employer = v.check(EmployerId::parse_optional(&employer_id, "employer_id"));
    let key = idempotency_key.trim();
    if key.chars().count() > MAX_IDEMPOTENCY_KEY || key.chars().any(char::is_control) {
        v.push(FieldViolation::new("idempotency_key", "must be at most 128 printable characters"));
    }
    v.finish()?;
    let (Some(name), Some(description), Some(window), Some(goal), Some(employer), Some(late_grace)) =
        (name, description, window, goal, employer, late_grace)
    else {
        return Err(anyhow::anyhow!("violations were reported above").into());
    };
    let idempotency = (!key.is_empty()).then(|| Idempotency { key: key.to_string(), fingerprint });
    Ok((NewChallenge { name, description, window, goal, employer, late_grace }, idempotency))
}

/// The fields `update_mask` may name.
const UPDATABLE: &[&str] = &[
    "name",
    "description",
    "start_time",
    "end_time",
    "goal",
    "goal.target",
    "goal.unit",
    "employer_id",
    "late_grace_seconds",
];

fn parse_update(
    request: pb::UpdateChallengeRequest,
) -> Result<(ChallengeId, ChallengePatch), ChallengeError> {
    let pb::UpdateChallengeRequest { challenge, update_mask } = request;
    let Some(challenge) = challenge else {
        return Err(FieldViolation::new("challenge", "is required").into());
    };
    let pb::Challenge {
        id,
        name,
        description,
        start_time,
        end_time,
        goal,
        employer_id,
        state: _,
        created_by: _,
        create_time: _,
        updated_by: _,
        update_time: _,
        late_grace_seconds,
    } = challenge;
    let mut v = Violations::new();
    let id = v.check(ChallengeId::parse(&id, "challenge.id"));
    let paths: Vec<String> = match update_mask {
        Some(mask) if !mask.paths.is_empty() => mask.paths,
        // No mask: every field that is set (AIP-134).
        _ => {
            let mut set = Vec::new();
            let mut add = |cond: bool, path: &str| {
                if cond {
                    set.push(path.to_string())
                }
            };
            add(!name.is_empty(), "name");
            add(!description.is_empty(), "description");
            add(start_time.is_some(), "start_time");
            add(end_time.is_some(), "end_time");
            add(goal.is_some(), "goal");
            add(!employer_id.is_empty(), "employer_id");
            add(late_grace_seconds != 0, "late_grace_seconds");
            set
        }
    };
    if paths.is_empty() {
        v.push(FieldViolation::new("update_mask", "names no field to change"));
    }
    let mut patch = ChallengePatch::default();
    let goal = goal.unwrap_or_default();
    for path in &paths {
        let under = |e: FieldViolation| e.under("challenge");
        match path.as_str() {
            "name" => patch.name = v.check(ChallengeName::parse(&name).map_err(under)),
            "description" => {
                patch.description = v.check(Description::parse(&description).map_err(under))
            }
            "start_time" => {
                patch.start =
                    v.check(required_time(start_time.as_ref(), "start_time").map_err(under))
            }
            "end_time" => {
                patch.end = v.check(required_time(end_time.as_ref(), "end_time").map_err(under))
            }
            "goal" => {
                patch.goal_target = Some(goal.target);
                patch.goal_unit = Some(goal.unit.clone());
            }
            "goal.target" => patch.goal_target = Some(goal.target),
            "goal.unit" => patch.goal_unit = Some(goal.unit.clone()),
            "employer_id" => {
                patch.employer =
                    v.check(EmployerId::parse_optional(&employer_id, "employer_id").map_err(under));
            }
            "late_grace_seconds" => {
                patch.late_grace = v.check(
                    LateGrace::parse(late_grace_seconds, "late_grace_seconds").map_err(under),
                );
            }
            other => v.push(FieldViolation::new(
                "update_mask",
                format!("names {other:?}, which is not updatable (use {})", UPDATABLE.join(", ")),
            )),
        }
    }
    v.finish()?;
    let Some(id) = id else {
        return Err(anyhow::anyhow!("violations were reported above").into());
    };
    Ok((id, patch))
}

/// A time that the update mask names: it must be present and valid.
fn required_time(
    ts: Option<&prost_types::Timestamp>,
    field: &str,
) -> Result<DateTime<Utc>, FieldViolation> {
    parse_time(ts, field)?
        .ok_or_else(|| FieldViolation::new(field, "is required when named in update_mask"))
}

/// `Ok(None)` when absent, the time when valid, a violation when out of range.
fn parse_time(
    ts: Option<&prost_types::Timestamp>,
    field: &str,
) -> Result<Option<DateTime<Utc>>, FieldViolation> {
    match ts {
        None => Ok(None),
        Some(ts) => timestamp::from_proto(ts)
            .map(Some)
            .ok_or_else(|| FieldViolation::new(field, "is not a valid timestamp")),
    }
}

fn state_filter(raw: i32) -> Result<Option<State>, FieldViolation> {
    match pb::ChallengeState::try_from(raw) {
        Ok(pb::ChallengeState::Unspecified) => Ok(None),
        Ok(pb::ChallengeState::Upcoming) => Ok(Some(State::Upcoming)),
        Ok(pb::ChallengeState::Active) => Ok(Some(State::Active)),
        Ok(pb::ChallengeState::Ended) => Ok(Some(State::Ended)),
        Err(_) => Err(FieldViolation::new("state", "is not a known challenge state")),
    }
}

/// FNV-1a of the encoded request: stable across builds, enough to tell a retry from a change.
fn fingerprint(request: &pb::CreateChallengeRequest) -> String {
    ewpm_kit::idempotency::fingerprint(&request.encode_to_vec())
}

fn page_to_proto(page: Page, now: DateTime<Utc>) -> (Vec<pb::Challenge>, String) {
    (page.items.iter().map(|c| to_proto(c, now)).collect(), page.next_page_token)
}

fn to_proto(c: &Challenge, now: DateTime<Utc>) -> pb::Challenge {
    let state = match c.window.state_at(now) {
        State::Upcoming => pb::ChallengeState::Upcoming,
        State::Active => pb::ChallengeState::Active,
        State::Ended => pb::ChallengeState::Ended,
    };
    pb::Challenge {
        id: c.id.to_string(),
        name: c.name.as_str().to_string(),
        description: c.description.as_str().to_string(),
        start_time: Some(timestamp::to_proto(c.window.start())),
        end_time: Some(timestamp::to_proto(c.window.end())),
        goal: Some(pb::Goal { target: c.goal.target(), unit: c.goal.unit().to_string() }),
        employer_id: c.employer.as_ref().map(|e| e.as_str().to_string()).unwrap_or_default(),
        state: state as i32,
        created_by: c.created_by.clone(),
        create_time: Some(timestamp::to_proto(c.created_at)),
        updated_by: c.updated_by.clone(),
        update_time: Some(timestamp::to_proto(c.updated_at)),
        late_grace_seconds: i32::try_from(c.late_grace.seconds()).unwrap_or(i32::MAX),
    }
}
