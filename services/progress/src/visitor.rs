//! The activity visitor hook ("don't call us, we'll call you"): every accepted activity is
//! shown to each registered [`ActivityVisitor`]. The incentive service registers one that
//! turns activity some employer rewards into incentive events.
//!
//! Visitors run in the batch writer, once the activities of a batch are committed to SQL and
//! before they are acknowledged on the queue: a crash anywhere shows the batch to the visitors
//! again, never loses it. So a visitor sees each activity at least once and must be
//! idempotent (the incentive visitor derives its event ids from the activity's id). A failing
//! visitor fails the batch, which is retried with backoff.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What a user did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivityKind {
    /// A mood entry.
    Mood,
    /// A symptom entry.
    Symptom,
    /// A step count.
    Steps,
    /// Hours of sleep.
    Sleep,
    /// A weight measurement.
    Weight,
    /// A reported birth.
    Birth,
    /// Accepted challenge progress.
    ChallengeProgress,
}

impl ActivityKind {
    /// Every kind.
    pub const ALL: [ActivityKind; 7] = [
        Self::Mood,
        Self::Symptom,
        Self::Steps,
        Self::Sleep,
        Self::Weight,
        Self::Birth,
        Self::ChallengeProgress,
    ];

    /// The kind's name as stored and shown (`mood`, `challenge_progress`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mood => "mood",
            Self::Symptom => "symptom",
            Self::Steps => "steps",
            Self::Sleep => "sleep",
            Self::Weight => "weight",
            Self::Birth => "birth",
            Self::ChallengeProgress => "challenge_progress",
        }
    }

    /// The kind named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The proto enum value.
    pub fn to_proto(self) -> i32 {
        use ewpm_proto::progress::v1::ActivityKind as P;
        (match self {
            Self::Mood => P::Mood,
            Self::Symptom => P::Symptom,
            Self::Steps => P::Steps,
            Self::Sleep => P::Sleep,
            Self::Weight => P::Weight,
            Self::Birth => P::Birth,
            Self::ChallengeProgress => P::ChallengeProgress,
        }) as i32
    }

    /// The kind of a proto enum value; `None` for unspecified or unknown values.
    pub fn from_proto(raw: i32) -> Option<Self> {
        use ewpm_proto::progress::v1::ActivityKind as P;
        Some(match P::try_from(raw).ok()? {
            P::Unspecified => return None,
            P::Mood => Self::Mood,
            P::Symptom => Self::Symptom,
            P::Steps => Self::Steps,
            P::Sleep => Self::Sleep,
            P::Weight => Self::Weight,
            P::Birth => Self::Birth,
            P::ChallengeProgress => Self::ChallengeProgress,
        })
    }
}

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

/// Something that wants to see every accepted activity.
#[async_trait]
pub trait ActivityVisitor: Send + Sync + 'static {
    /// A short name for logs and metrics.
    fn name(&self) -> &'static str;

    /// Sees a batch of accepted activities (each at least once over retries: be idempotent).
    async fn visit(&self, activities: &[Activity]) -> anyhow::Result<()>;
}

/// The registered visitors.
#[derive(Clone, Default)]
pub struct Visitors(Vec<Arc<dyn ActivityVisitor>>);

impl Visitors {
    /// No visitors.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `visitor`; visitors run in registration order.
    pub fn register(&mut self, visitor: Arc<dyn ActivityVisitor>) -> &mut Self {
        self.0.push(visitor);
        self
    }

    /// Shows `activities` to every visitor in order; the first failure ends the visit (the
    /// caller retries the batch).
    pub async fn visit(&self, activities: &[Activity]) -> anyhow::Result<()> {
        if activities.is_empty() {
            return Ok(());
        }
        for visitor in &self.0 {
            if let Err(err) = visitor.visit(activities).await {
                metrics::counter!("ewpm_activity_visitor_failures_total", "visitor" => visitor.name())
                    .increment(1);
                return Err(err.context(format!("activity visitor {}", visitor.name())));
            }
        }
        Ok(())
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
}
