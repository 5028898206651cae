//! Recorded activity as the incentive service sees it: the `ewpm.progress.v1.ActivityRecorded`
//! events the progress batch writers publish on the bus topic `activity` (one
//! `ActivityBatch` message per written batch, [`decode_message`]), parsed into [`Activity`],
//! and turned into the [`IncentiveEvent`]s of the employer incentives they trigger
//! ([`events_of`]). The incentive service keeps its own [`ActivityKind`] (the names it stores
//! trigger kinds under) over the shared `ewpm.activity.v1.ActivityKind` contract, so it
//! depends on no other service's crate.

use anyhow::Context;
use chrono::{DateTime, Utc};
use ewpm_kit::timestamp;
use ewpm_proto::progress::v1::{ActivityBatch, ActivityRecorded};
use prost::Message as _;
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

/// What one message of the bus topic `activity` holds.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Its activities, in order.
    pub activities: Vec<Activity>,
    /// Why each of its events that cannot count was dropped (an `ActivityRecorded` without
    /// id, kind, time or user: a writer's bug, as redelivery would not change it).
    pub dropped: Vec<anyhow::Error>,
}

/// The activities of one message of the bus topic `activity`: an `ActivityBatch` (what the
/// progress writers publish, one per written batch) or, for one release, a lone
/// `ActivityRecorded` (what writers of the previous release published, one per activity,
/// possibly still queued when the new processors start).
///
/// The two are told apart by field 16 (`ActivityBatch.activities`), not by which decode
/// happens to succeed: both messages' field 1 is length-delimited (a batch's first
/// `ActivityRecorded` vs. an `ActivityRecorded`'s `activity_id`), so either payload can decode
/// as the other. `ActivityBatch` reserves `ActivityRecorded`'s field numbers 1 to 15, so a lone
/// event decodes as a batch with no activities (its fields are skipped as unknown) and a batch
/// is never published empty: no activities means a lone `ActivityRecorded`.
///
/// An error means the message can never count (not protobuf, or nothing in it valid). Invalid
/// events inside an otherwise valid batch are dropped one by one ([`Decoded::dropped`]); the
/// rest of the batch still counts.
pub fn decode_message(payload: &[u8]) -> anyhow::Result<Decoded> {
    let batch = ActivityBatch::decode(payload)
        .context("neither an ActivityBatch nor an ActivityRecorded")?;
    if batch.activities.is_empty() {
        let event = ActivityRecorded::decode(payload).context("not an ActivityRecorded")?;
        return Ok(Decoded { activities: vec![Activity::try_from(event)?], dropped: Vec::new() });
    }
    let mut decoded = Decoded::default();
    for event in batch.activities {
        match Activity::try_from(event) {
            Ok(a) => decoded.activities.push(a),
            Err(err) => decoded.dropped.push(err),
        }
    }
    if decoded.activities.is_empty() {
        let n = decoded.dropped.len();
        let first = decoded.dropped.swap_remove(0);
        return Err(first.context(format!("none of the batch's {n} activities is valid")));
    }
    Ok(decoded)
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

    fn batch_of(events: Vec<ActivityRecorded>) -> Vec<u8> {
        ActivityBatch { activities: events }.encode_to_vec()
    }

    fn ids(decoded: &Decoded) -> Vec<String> {
        decoded.activities.iter().map(|a| a.id.to_string()).collect()
    }

    #[test]
    fn a_batch_decodes_to_its_activities_in_order_even_a_batch_of_one() {
        let second = ActivityRecorded {
            activity_id: "0194d3c2-0000-7000-8000-000000000002".into(),
            ..recorded()
        };
        let decoded = decode_message(&batch_of(vec![recorded(), second])).unwrap();
        assert_eq!(
            ids(&decoded),
            ["0194d3c2-0000-7000-8000-000000000001", "0194d3c2-0000-7000-8000-000000000002"]
        );
        assert!(decoded.dropped.is_empty());
        let one = decode_message(&batch_of(vec![recorded()])).unwrap();
        assert_eq!(one.activities, vec![Activity::try_from(recorded()).unwrap()]);
    }

    #[test]
    fn a_lone_activity_recorded_of_an_older_writer_decodes_to_its_one_activity() {
        // Whatever its id looks like (its first bytes would read as fields of a batch), and
        // whichever optional fields it carries.
        for id in [
            "0194d3c2-0000-7000-8000-000000000001",
            "2a94d3c2-0000-4000-8000-000000000001",
            "ffffffff-ffff-4fff-bfff-ffffffffffff",
        ] {
            for (employer, value) in [("acme", Some(4.0)), ("", None)] {
                let event = ActivityRecorded {
                    activity_id: id.into(),
                    employer_id: employer.into(),
                    value,
                    ..recorded()
                };
                let payload = event.encode_to_vec();
                // What the discrimination rests on: a lone event is a batch of nothing.
                assert_eq!(ActivityBatch::decode(payload.as_slice()).unwrap().activities, vec![]);
                let decoded = decode_message(&payload).unwrap();
                assert_eq!(decoded.activities, vec![Activity::try_from(event).unwrap()]);
                assert!(decoded.dropped.is_empty());
            }
        }
    }

    #[test]
    fn an_invalid_event_of_a_batch_is_dropped_alone_and_a_batch_of_nothing_valid_is_rejected() {
        let bad = ActivityRecorded { user_id: String::new(), ..recorded() };
        let decoded = decode_message(&batch_of(vec![bad.clone(), recorded()])).unwrap();
        assert_eq!(ids(&decoded), ["0194d3c2-0000-7000-8000-000000000001"]);
        assert_eq!(decoded.dropped.len(), 1);
        let err = decode_message(&batch_of(vec![bad.clone(), bad])).unwrap_err();
        assert!(format!("{err:#}").contains("none of the batch's 2 activities"), "{err:#}");
        // Not protobuf; an empty payload (an empty batch, or an empty event); a lone event
        // that does not parse.
        assert!(decode_message(b"garbage").is_err());
        assert!(decode_message(&[]).is_err());
        let lone = ActivityRecorded { kind: 0, ..recorded() }.encode_to_vec();
        assert!(decode_message(&lone).is_err());
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
