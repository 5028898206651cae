//! Recorded activity: what a user did ([`ActivityKind`]), and the [`Activity`] the batch
//! writer publishes on the bus topic `activity` (as an `ewpm.progress.v1.ActivityRecorded`,
//! inside the one `ActivityBatch` message of its written batch) once it is committed.
//! Consumers (the incentive service) see each activity at least once and make its id part of
//! every effect's identity.

use chrono::{DateTime, Utc};
use ewpm_kit::timestamp;
use ewpm_proto::progress::v1::ActivityRecorded;
use uuid::Uuid;

pub use ewpm_proto::activity::Kind as ActivityKind;

/// An accepted activity.
#[derive(Debug, Clone, PartialEq)]
pub struct Activity {
    /// The activity's id (for challenge progress, the entry id).
    pub id: Uuid,
    /// What it was.
    pub kind: ActivityKind,
    /// Who did it.
    pub user_id: String,
    /// Their employer.
    pub employer_id: Option<String>,
    /// How much, where the kind has a measure.
    pub value: Option<f64>,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
}

impl Activity {
    /// The event published on the bus topic `activity` (inside its batch's `ActivityBatch`).
    pub fn to_event(&self) -> ActivityRecorded {
        let Self { id, kind, user_id, employer_id, value, occurred_at } = self;
        ActivityRecorded {
            activity_id: id.to_string(),
            user_id: user_id.clone(),
            employer_id: employer_id.clone().unwrap_or_default(),
            kind: kind.to_proto(),
            value: *value,
            occurred_at: Some(timestamp::to_proto(*occurred_at)),
        }
    }
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
        assert_eq!(ActivityKind::from_name("Mood"), None);
    }

    #[test]
    fn an_activity_becomes_its_event_with_every_field() {
        let id = Uuid::now_v7();
        let at = DateTime::parse_from_rfc3339("2026-11-22T10:00:00Z").unwrap().to_utc();
        let activity = Activity {
            id,
            kind: ActivityKind::Mood,
            user_id: "alice".into(),
            employer_id: Some("acme".into()),
            value: Some(4.0),
            occurred_at: at,
        };
        assert_eq!(
            activity.to_event(),
            ActivityRecorded {
                activity_id: id.to_string(),
                user_id: "alice".into(),
                employer_id: "acme".into(),
                kind: ewpm_proto::activity::v1::ActivityKind::Mood as i32,
                value: Some(4.0),
                occurred_at: Some(prost_types::Timestamp { seconds: at.timestamp(), nanos: 0 }),
            }
        );
        let without = Activity { employer_id: None, value: None, ..activity };
        assert_eq!(
            (without.to_event().employer_id, without.to_event().value),
            (String::new(), None)
        );
    }
}
