//! Recorded activity as the incentive service sees it: the `ewpm.progress.v1.ActivityRecorded`
//! events the progress batch writers publish on the bus topic `activity`, parsed into
//! [`Activity`], and turned into the [`IncentiveEvent`]s of the employer incentives they
//! trigger ([`events_of`]). The incentive service keeps its own [`ActivityKind`] (the names it
//! stores trigger kinds under) over the shared `ewpm.activity.v1.ActivityKind` contract, so
//! it depends on no other service's crate.

use chrono::{DateTime, Utc};
use ewpm_kit::timestamp;
use ewpm_proto::progress::v1::ActivityRecorded;
use uuid::Uuid;

use crate::domain::{EmployerIncentive, IncentiveEvent};

pub use ewpm_proto::activity::Kind as ActivityKind;

/// A recorded activity.
#[derive(Debug, Clone, PartialEq)]
pub struct Activity {
    /// The activity's id (for challenge progress, the entry id).
    pub id: Uuid,
    /// What it was.
    pub kind: ActivityKind,
    /// Who did it.
    pub user_id: String,
    /// Their employer, if any.
    pub employer_id: Option<String>,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
}

impl TryFrom<ActivityRecorded> for Activity {
    type Error = anyhow::Error;

    fn try_from(e: ActivityRecorded) -> anyhow::Result<Self> {
        // The measurement does not matter to any rule yet.
        let ActivityRecorded { activity_id, user_id, employer_id, kind, value: _, occurred_at } = e;
        let id = activity_id
            .parse()
            .map_err(|_| anyhow::anyhow!("activity id {activity_id:?} is not a UUID"))?;
        let kind = ActivityKind::from_proto(kind)
            .ok_or_else(|| anyhow::anyhow!("{kind} is not an activity kind"))?;
        let occurred_at = occurred_at
            .as_ref()
            .and_then(timestamp::from_proto)
            .ok_or_else(|| anyhow::anyhow!("activity {id} has no valid occurred_at"))?;
        if user_id.is_empty() {
            anyhow::bail!("activity {id} has no user");
        }
        let employer_id = (!employer_id.is_empty()).then_some(employer_id);
        Ok(Self { id, kind, user_id, employer_id, occurred_at })
    }
}

/// The incentive events of `activity` among its employer's `links`: one per link it counts
/// towards now. Activity of a user without an employer earns none (incentives are an
/// employer's). The event's identity is (activity id, link), so an activity delivered again
/// yields the same events, and the processor counts each once.
pub fn events_of(
    activity: &Activity,
    links: &[std::sync::Arc<EmployerIncentive>],
) -> Vec<IncentiveEvent> {
    let Some(employer_id) = activity.employer_id.as_deref() else { return Vec::new() };
    links
        .iter()
        .filter(|l| l.employer_id == employer_id && l.counts(activity.kind, activity.occurred_at))
        .map(|l| IncentiveEvent {
            activity_id: activity.id,
            employer_incentive_id: l.id,
            user_id: activity.user_id.clone(),
            employer_id: employer_id.to_string(),
            kind: activity.kind,
            occurred_at: activity.occurred_at,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_its_name_and_the_proto_enum() {
        for kind in ActivityKind::ALL {
            assert_eq!(ActivityKind::from_name(kind.as_str()), Some(kind));
            assert_eq!(ActivityKind::from_proto(kind.to_proto()), Some(kind));
        }
        assert_eq!(ActivityKind::from_proto(0), None);
        assert_eq!(ActivityKind::from_proto(99), None);
    }

    fn recorded() -> ActivityRecorded {
        ActivityRecorded {
            activity_id: "0194d3c2-0000-7000-8000-000000000001".into(),
            user_id: "alice".into(),
            employer_id: "acme".into(),
            kind: ewpm_proto::activity::v1::ActivityKind::Mood as i32,
            value: Some(4.0),
            occurred_at: Some(prost_types::Timestamp { seconds: 1_795_000_000, nanos: 0 }),
        }
    }

    #[test]
    fn a_recorded_activity_parses_with_an_empty_employer_meaning_none() {
        let parsed = Activity::try_from(recorded()).unwrap();
        assert_eq!(
            parsed,
            Activity {
                id: "0194d3c2-0000-7000-8000-000000000001".parse().unwrap(),
                kind: ActivityKind::Mood,
                user_id: "alice".into(),
                employer_id: Some("acme".into()),
                occurred_at: DateTime::from_timestamp(1_795_000_000, 0).unwrap(),
            }
        );
        let none = ActivityRecorded { employer_id: String::new(), ..recorded() };
        assert_eq!(Activity::try_from(none).unwrap().employer_id, None);
    }

    #[test]
    fn a_recorded_activity_without_id_kind_time_or_user_is_rejected() {
        for bad in [
            ActivityRecorded { activity_id: "x".into(), ..recorded() },
            ActivityRecorded { kind: 0, ..recorded() },
            ActivityRecorded { occurred_at: None, ..recorded() },
            ActivityRecorded { user_id: String::new(), ..recorded() },
        ] {
            assert!(Activity::try_from(bad).is_err());
        }
    }
}
