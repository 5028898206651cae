//! The activity visitor hook ("don't call us, we'll call you"): every accepted activity is
//! passed to each registered [`ActivityVisitor`]. The incentive service registers one that
//! turns activity some employer rewards into incentive events; none is registered yet.
//!
//! A visitor runs after the activity is durably queued, so a visitor's failure cannot lose
//! the activity: it is logged and counted, and the caller still gets its answer.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// What a user did.
#[derive(Debug, Clone, PartialEq)]
pub enum ActivityKind {
    /// Progress on a challenge.
    ChallengeProgress {
        /// The challenge.
        challenge_id: Uuid,
    },
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
    /// How much.
    pub value: f64,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
}

/// Something that wants to see every accepted activity.
#[async_trait]
pub trait ActivityVisitor: Send + Sync + 'static {
    /// A short name for logs and metrics.
    fn name(&self) -> &'static str;

    /// Sees one accepted activity.
    async fn visit(&self, activity: &Activity) -> anyhow::Result<()>;
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

    /// Passes `activity` to every visitor; a failing visitor is logged, not fatal.
    pub async fn visit(&self, activity: &Activity) {
        for visitor in &self.0 {
            if let Err(err) = visitor.visit(activity).await {
                metrics::counter!("ewpm_activity_visitor_failures_total", "visitor" => visitor.name())
                    .increment(1);
                tracing::error!(visitor = visitor.name(), activity = %activity.id, error = format!("{err:#}"), "activity visitor failed");
            }
        }
    }
}
