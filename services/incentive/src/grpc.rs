//! `ewpm.incentive.v1.IncentiveService`: converts requests to domain values, calls
//! [`Incentives`], converts the result back. Proto types stop here.

use std::sync::Arc;

use ewpm_kit::{
    CancellationToken,
    auth::Caller,
    error::{FieldViolation, Violations},
    paging,
    streams::StreamSlots,
    timestamp,
};
use ewpm_proto::incentive::v1::{self as pb, incentive_service_server::IncentiveService};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    activity::ActivityKind,
    domain::{
        ActionKind, Actions, Award, EmployerIncentive, Incentive, Period, RepeatPolicy, Rule, Slug,
        TriggerKinds, Zone, text,
    },
    error::IncentiveError,
    notices::IncentiveNotices,
    service::{
        AwardsRequest, Before, IncentiveChange, IncentiveRef, Incentives, NewIncentive, NewLink,
    },
};

/// The gRPC face of the incentive service.
#[derive(Clone)]
pub struct IncentiveGrpc {
    incentives: Incentives,
    notices: Arc<dyn IncentiveNotices>,
    streams: CancellationToken,
    /// Caps on WatchAwards streams per caller and in all.
    slots: Arc<StreamSlots>,
}

impl IncentiveGrpc {
    /// Serves `incentives`; WatchAwards streams from `notices`, end with `streams`, and are
    /// capped by `slots`.
    pub fn new(
        incentives: Incentives,
        notices: Arc<dyn IncentiveNotices>,
        streams: CancellationToken,
        slots: Arc<StreamSlots>,
    ) -> Self {
        Self { incentives, notices, streams, slots }
    }
}

fn parse_id(field: &str, raw: &str) -> Result<Uuid, FieldViolation> {
    if raw.is_empty() {
        return Err(FieldViolation::new(field, "is required"));
    }
    Uuid::parse_str(raw).map_err(|_| FieldViolation::new(field, "must be a UUID"))
}

fn parse_rule(raw: Option<pb::Rule>) -> Result<Rule, FieldViolation> {
    match raw.and_then(|r| r.kind) {
        Some(pb::rule::Kind::ConsecutiveDays(c)) => Rule::consecutive_days(c.days),
        Some(pb::rule::Kind::EachOccurrence(_)) => Ok(Rule::EachOccurrence),
        None => {
            Err(FieldViolation::new("rule", "is required: consecutive_days or each_occurrence"))
        }
    }
}

fn parse_time(
    field: &str,
    raw: Option<prost_types::Timestamp>,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, FieldViolation> {
    match raw {
        None => Ok(None),
        Some(ts) => timestamp::from_proto(&ts).map(Some).ok_or_else(|| {
            FieldViolation::new(field, "must be a valid time between 1970 and 9999")
        }),
    }
}

fn parse_repeat(policy: i32, period: i32) -> Result<RepeatPolicy, FieldViolation> {
    let period = match pb::Period::try_from(period) {
        Ok(pb::Period::Unspecified) => None,
        Ok(pb::Period::Week) => Some(Period::Week),
        Ok(pb::Period::Month) => Some(Period::Month),
        Ok(pb::Period::Year) => Some(Period::Year),
        Err(_) => return Err(FieldViolation::new("period", "is not a period")),
    };
    match (pb::RepeatPolicy::try_from(policy), period) {
        (Ok(pb::RepeatPolicy::Unspecified | pb::RepeatPolicy::OncePerUser), None) => {
            Ok(RepeatPolicy::OncePerUser)
        }
        (Ok(pb::RepeatPolicy::Unspecified | pb::RepeatPolicy::OncePerUser), Some(_)) => {
            Err(FieldViolation::new("period", "is only for REPEAT_POLICY_ONCE_PER_PERIOD"))
        }
        (Ok(pb::RepeatPolicy::OncePerPeriod), Some(p)) => Ok(RepeatPolicy::OncePerPeriod(p)),
        (Ok(pb::RepeatPolicy::OncePerPeriod), None) => {
            Err(FieldViolation::new("period", "is required for REPEAT_POLICY_ONCE_PER_PERIOD"))
        }
        (Err(_), _) => Err(FieldViolation::new("repeat_policy", "is not a repeat policy")),
    }
}

fn parse_actions(raw: &[i32]) -> Result<Actions, FieldViolation> {
    let kinds = raw
        .iter()
        .map(|k| match pb::ActionKind::try_from(*k) {
            Ok(pb::ActionKind::Award) => Ok(ActionKind::Award),
            Ok(pb::ActionKind::Notify) => Ok(ActionKind::Notify),
            _ => Err(FieldViolation::new("actions", format!("{k} is not an action kind"))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Actions::parse(kinds)
}

fn parse_employer(raw: &str) -> Result<Option<String>, FieldViolation> {
    if raw.is_empty() {
        return Ok(None);
    }
    if !ewpm_kit::auth::is_valid_employer_id(raw) {
        return Err(FieldViolation::new(
            "employer_id",
            "must be 1-64 letters, digits, '-', '_' or '.'",
        ));
    }
    Ok(Some(raw.to_string()))
}

/// Checks every field of a CreateIncentiveRequest.
pub fn parse_new_incentive(r: pb::CreateIncentiveRequest) -> Result<NewIncentive, IncentiveError> {
    let pb::CreateIncentiveRequest { slug, description, rule, trigger_kinds } = r;
    let mut v = Violations::new();
    let slug = v.check(Slug::parse("slug", &slug));
    let description = v.check(text("description", &description, 500));
    let rule = v.check(parse_rule(rule));
    let trigger_kinds = v.check(TriggerKinds::parse(&trigger_kinds));
    v.finish()?;
    match (slug, description, rule, trigger_kinds) {
        (Some(slug), Some(description), Some(rule), Some(trigger_kinds)) => {
            Ok(NewIncentive { slug, description, rule, trigger_kinds })
        }
        _ => Err(anyhow::anyhow!("violations were reported above").into()),
    }
}

fn parse_change(r: pb::UpdateIncentiveRequest) -> Result<IncentiveChange, IncentiveError> {
    let pb::UpdateIncentiveRequest { id, description, rule, trigger_kinds } = r;
    let mut v = Violations::new();
    let id = v.check(parse_id("id", &id));
    let description = v.check(text("description", &description, 500));
    let rule = v.check(parse_rule(rule));
    let trigger_kinds = v.check(TriggerKinds::parse(&trigger_kinds));
    v.finish()?;
    match (id, description, rule, trigger_kinds) {
        (Some(id), Some(description), Some(rule), Some(trigger_kinds)) => {
            Ok(IncentiveChange { id, description, rule, trigger_kinds })
        }
        _ => Err(anyhow::anyhow!("violations were reported above").into()),
    }
}

/// Checks every field of a CreateEmployerIncentiveRequest.
pub fn parse_new_link(r: pb::CreateEmployerIncentiveRequest) -> Result<NewLink, IncentiveError> {
    let pb::CreateEmployerIncentiveRequest {
        employer_id,
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
    } = r;
    let mut v = Violations::new();
    let employer_id = v.check(parse_employer(&employer_id));
    let program_id = v.check(text("program_id", &program_id, 64));
    let incentive = v.check(match (incentive_id.is_empty(), incentive_slug.is_empty()) {
        (false, true) => parse_id("incentive_id", &incentive_id).map(IncentiveRef::Id),
        (true, false) => Slug::parse("incentive_slug", &incentive_slug).map(IncentiveRef::Slug),
        _ => Err(FieldViolation::new(
            "incentive_id",
            "name the incentive by exactly one of incentive_id and incentive_slug",
        )),
    });
    let reward = v.check(text("reward", &reward, 200));
    let zone = v.check(Zone::parse(&time_zone));
    let starts_at = v.check(parse_time("start_time", start_time));
    let ends_at = v.check(parse_time("end_time", end_time));
    let repeat = v.check(parse_repeat(repeat_policy, period));
    let actions = v.check(parse_actions(&actions));
    v.finish()?;
    match (employer_id, program_id, incentive, reward, zone, starts_at, ends_at, repeat, actions) {
        (
            Some(employer_id),
            Some(program_id),
            Some(incentive),
            Some(reward),
            Some(zone),
            Some(starts_at),
            Some(ends_at),
            Some(repeat),
            Some(actions),
        ) => Ok(NewLink {
            employer_id,
            program_id,
            incentive,
            reward,
            zone,
            starts_at,
            ends_at,
            repeat,
            actions,
        }),
        _ => Err(anyhow::anyhow!("violations were reported above").into()),
    }
}

fn rule_to_proto(rule: Rule) -> pb::Rule {
    pb::Rule {
        kind: Some(match rule {
            Rule::ConsecutiveDays(days) => {
                pb::rule::Kind::ConsecutiveDays(pb::ConsecutiveDays { days: days as i32 })
            }
            Rule::EachOccurrence => pb::rule::Kind::EachOccurrence(pb::EachOccurrence {}),
        }),
    }
}

/// A catalog incentive as proto.
pub fn incentive_to_proto(i: &Incentive) -> pb::Incentive {
    pb::Incentive {
        id: i.id.to_string(),
        slug: i.slug.clone(),
        description: i.description.clone(),
        rule: Some(rule_to_proto(i.rule)),
        trigger_kinds: i.trigger_kinds.kinds().iter().map(|k| ActivityKind::to_proto(*k)).collect(),
        active: i.active,
        create_time: Some(timestamp::to_proto(i.created_at)),
        update_time: Some(timestamp::to_proto(i.updated_at)),
    }
}

/// A link as proto.
pub fn link_to_proto(l: &EmployerIncentive) -> pb::EmployerIncentive {
    let (repeat_policy, period) = match l.repeat {
        RepeatPolicy::OncePerUser => (pb::RepeatPolicy::OncePerUser, pb::Period::Unspecified),
        RepeatPolicy::OncePerPeriod(p) => (
            pb::RepeatPolicy::OncePerPeriod,
            match p {
                Period::Week => pb::Period::Week,
                Period::Month => pb::Period::Month,
                Period::Year => pb::Period::Year,
            },
        ),
    };
    pb::EmployerIncentive {
        id: l.id.to_string(),
        employer_id: l.employer_id.clone(),
        program_id: l.program_id.clone(),
        incentive: Some(incentive_to_proto(&l.incentive)),
        reward: l.reward.clone(),
        time_zone: l.zone.name().to_string(),
        start_time: Some(timestamp::to_proto(l.window.starts_at)),
        end_time: l.window.ends_at.map(timestamp::to_proto),
        repeat_policy: repeat_policy as i32,
        period: period as i32,
        actions: l
            .actions
            .kinds()
            .iter()
            .map(|k| match k {
                ActionKind::Award => pb::ActionKind::Award as i32,
                ActionKind::Notify => pb::ActionKind::Notify as i32,
            })
            .collect(),
        active: l.active,
        create_time: Some(timestamp::to_proto(l.created_at)),
    }
}

/// An award as proto.
pub fn award_to_proto(a: &Award) -> pb::Award {
    pb::Award {
        id: a.id.to_string(),
        user_id: a.user_id.clone(),
        employer_id: a.employer_id.clone(),
        employer_incentive_id: a.employer_incentive_id.to_string(),
        program_id: a.program_id.clone(),
        incentive_slug: a.incentive_slug.clone(),
        reward: a.reward.clone(),
        award_day: a.award_day.to_string(),
        period_key: a.period_key.clone(),
        activity_id: a.activity_id.to_string(),
        award_time: Some(timestamp::to_proto(a.awarded_at)),
    }
}

fn token<C: serde::Serialize>(next: Option<C>) -> String {
    next.map(|c| paging::encode_token(&c)).unwrap_or_default()
}

#[tonic::async_trait]
impl IncentiveService for IncentiveGrpc {
    async fn create_incentive(
        &self,
        request: Request<pb::CreateIncentiveRequest>,
    ) -> Result<Response<pb::CreateIncentiveResponse>, Status> {
        let caller = Caller::of(&request)?;
        let new = parse_new_incentive(request.into_inner())?;
        let i = self.incentives.create_incentive(&caller, new).await?;
        Ok(Response::new(pb::CreateIncentiveResponse { incentive: Some(incentive_to_proto(&i)) }))
    }

    async fn update_incentive(
        &self,
        request: Request<pb::UpdateIncentiveRequest>,
    ) -> Result<Response<pb::UpdateIncentiveResponse>, Status> {
        let caller = Caller::of(&request)?;
        let change = parse_change(request.into_inner())?;
        let i = self.incentives.update_incentive(&caller, change).await?;
        Ok(Response::new(pb::UpdateIncentiveResponse { incentive: Some(incentive_to_proto(&i)) }))
    }

    async fn deactivate_incentive(
        &self,
        request: Request<pb::DeactivateIncentiveRequest>,
    ) -> Result<Response<pb::DeactivateIncentiveResponse>, Status> {
        let caller = Caller::of(&request)?;
        let id = parse_id("id", &request.into_inner().id).map_err(IncentiveError::from)?;
        let i = self.incentives.deactivate_incentive(&caller, id).await?;
        Ok(Response::new(pb::DeactivateIncentiveResponse {
            incentive: Some(incentive_to_proto(&i)),
        }))
    }

    async fn list_incentives(
        &self,
        request: Request<pb::ListIncentivesRequest>,
    ) -> Result<Response<pb::ListIncentivesResponse>, Status> {
        Caller::of(&request)?;
        let pb::ListIncentivesRequest { page_size, page_token, include_inactive } =
            request.into_inner();
        let mut v = Violations::new();
        let size = v.check(paging::page_size(page_size));
        let after = v.check(paging::decode_token::<String>(&page_token));
        v.finish().map_err(IncentiveError::from)?;
        let (Some(size), Some(after)) = (size, after) else {
            return Err(
                IncentiveError::from(anyhow::anyhow!("violations were reported above")).into()
            );
        };
        let page = self.incentives.list_incentives(after, size, include_inactive).await?;
        Ok(Response::new(pb::ListIncentivesResponse {
            incentives: page.items.iter().map(incentive_to_proto).collect(),
            next_page_token: token(page.next),
        }))
    }

    async fn create_employer_incentive(
        &self,
        request: Request<pb::CreateEmployerIncentiveRequest>,
    ) -> Result<Response<pb::CreateEmployerIncentiveResponse>, Status> {
        let caller = Caller::of(&request)?;
        let new = parse_new_link(request.into_inner())?;
        let link = self.incentives.create_link(&caller, new).await?;
        Ok(Response::new(pb::CreateEmployerIncentiveResponse {
            employer_incentive: Some(link_to_proto(&link)),
        }))
    }

    async fn list_employer_incentives(
        &self,
        request: Request<pb::ListEmployerIncentivesRequest>,
    ) -> Result<Response<pb::ListEmployerIncentivesResponse>, Status> {
        let caller = Caller::of(&request)?;
        let pb::ListEmployerIncentivesRequest {
            employer_id,
            page_size,
            page_token,
            include_inactive,
        } = request.into_inner();
        let mut v = Violations::new();
        let employer_id = v.check(parse_employer(&employer_id));
        let size = v.check(paging::page_size(page_size));
        let before = v.check(paging::decode_token::<Before>(&page_token));
        v.finish().map_err(IncentiveError::from)?;
        let (Some(employer_id), Some(size), Some(before)) = (employer_id, size, before) else {
            return Err(
                IncentiveError::from(anyhow::anyhow!("violations were reported above")).into()
            );
        };
        let page = self
            .incentives
            .list_links(&caller, employer_id, before, size, include_inactive)
            .await?;
        Ok(Response::new(pb::ListEmployerIncentivesResponse {
            employer_incentives: page.items.iter().map(link_to_proto).collect(),
            next_page_token: token(page.next),
        }))
    }

    async fn deactivate_employer_incentive(
        &self,
        request: Request<pb::DeactivateEmployerIncentiveRequest>,
    ) -> Result<Response<pb::DeactivateEmployerIncentiveResponse>, Status> {
        let caller = Caller::of(&request)?;
        let id = parse_id("id", &request.into_inner().id).map_err(IncentiveError::from)?;
        let link = self.incentives.deactivate_link(&caller, id).await?;
        Ok(Response::new(pb::DeactivateEmployerIncentiveResponse {
            employer_incentive: Some(link_to_proto(&link)),
        }))
    }

    async fn list_awards(
        &self,
        request: Request<pb::ListAwardsRequest>,
    ) -> Result<Response<pb::ListAwardsResponse>, Status> {
        let caller = Caller::of(&request)?;
        let pb::ListAwardsRequest { user_id, employer_id, page_size, page_token } =
            request.into_inner();
        let mut v = Violations::new();
        let of = v.check(match (user_id.is_empty(), employer_id.is_empty()) {
            (false, true) if user_id.chars().count() <= ewpm_kit::auth::MAX_SUBJECT_CHARS => {
                Ok(AwardsRequest::User(user_id))
            }
            (false, true) => Err(FieldViolation::new("user_id", "must be at most 128 characters")),
            (true, false) => {
                parse_employer(&employer_id).map(|e| AwardsRequest::Employer(e.unwrap_or_default()))
            }
            _ => Err(FieldViolation::new("user_id", "name exactly one of user_id and employer_id")),
        });
        let size = v.check(paging::page_size(page_size));
        let before = v.check(paging::decode_token::<Before>(&page_token));
        v.finish().map_err(IncentiveError::from)?;
        let (Some(of), Some(size), Some(before)) = (of, size, before) else {
            return Err(
                IncentiveError::from(anyhow::anyhow!("violations were reported above")).into()
            );
        };
        let page = self.incentives.list_awards(&caller, of, before, size).await?;
        Ok(Response::new(pb::ListAwardsResponse {
            awards: page.items.iter().map(award_to_proto).collect(),
            next_page_token: token(page.next),
        }))
    }

    type WatchAwardsStream = ReceiverStream<Result<pb::WatchAwardsResponse, Status>>;

    async fn watch_awards(
        &self,
        request: Request<pb::WatchAwardsRequest>,
    ) -> Result<Response<Self::WatchAwardsStream>, Status> {
        use tokio::sync::broadcast::error::RecvError;
        let caller = Caller::of(&request)?;
        let slot = self.slots.acquire(&caller.user_id).map_err(|full| {
            ewpm_kit::error::retry_after(
                tonic::Code::ResourceExhausted,
                "TOO_MANY_STREAMS",
                if full.scope == "caller" {
                    "too many open award streams for this caller; close one first"
                } else {
                    "too many open award streams on this server; try again shortly"
                },
                std::time::Duration::from_secs(5),
            )
        })?;
        let mut awards = self.notices.subscribe();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let streams = self.streams.clone();
        tokio::spawn(async move {
            // Held while the stream lives: the task ends with it.
            let _slot = slot;
            loop {
                let next = tokio::select! {
                    () = streams.cancelled() => return,
                    () = tx.closed() => return,
                    next = awards.recv() => next,
                };
                match next {
                    Ok(award) if award.user_id == caller.user_id => {
                        let message =
                            pb::WatchAwardsResponse { award: Some(award_to_proto(&award)) };
                        if tx.send(Ok(message)).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!(
                            skipped = n,
                            "an award watcher fell behind; ListAwards has every award"
                        );
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
