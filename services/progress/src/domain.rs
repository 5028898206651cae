//! Progress domain types. Each parses its raw input once; a value of one of these types is
//! valid by construction. No I/O here.

use chrono::{DateTime, TimeDelta, Utc};
use ewpm_kit::{auth::Caller, error::FieldViolation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Largest value one entry may carry (a sanity cap against typos and abuse).
pub const MAX_ENTRY_VALUE: f64 = 1_000_000.0;

/// Clock skew tolerated between a client and the service for `occurred_at`.
pub const FUTURE_SKEW: TimeDelta = TimeDelta::seconds(5);

/// Longest idempotency key, in characters.
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 128;

/// The amount of one entry: finite, > 0, at most [`MAX_ENTRY_VALUE`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProgressValue(f64);

impl ProgressValue {
    /// Parses the request's `value`.
    pub fn parse(raw: f64) -> Result<Self, FieldViolation> {
        if !raw.is_finite() {
            return Err(FieldViolation::new("value", "must be a finite number"));
        }
        if raw <= 0.0 {
            return Err(FieldViolation::new("value", "must be greater than 0"));
        }
        if raw > MAX_ENTRY_VALUE {
            return Err(FieldViolation::new("value", "must be at most 1000000 per entry"));
        }
        Ok(Self(raw))
    }

    /// The number.
    pub fn get(self) -> f64 {
        self.0
    }
}

/// A client's idempotency key: 1–128 printable characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Parses the request's `idempotency_key`; empty means none.
    pub fn parse_optional(raw: &str) -> Result<Option<Self>, FieldViolation> {
        if raw.is_empty() {
            return Ok(None);
        }
        if raw.chars().count() > MAX_IDEMPOTENCY_KEY_CHARS {
            return Err(FieldViolation::new("idempotency_key", "must be at most 128 characters"));
        }
        if raw.chars().any(char::is_control) {
            return Err(FieldViolation::new(
                "idempotency_key",
                "must not contain control characters",
            ));
        }
        Ok(Some(Self(raw.to_string())))
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Parses a challenge id field.
pub fn parse_challenge_id(raw: &str) -> Result<Uuid, FieldViolation> {
    if raw.is_empty() {
        return Err(FieldViolation::new("challenge_id", "is required"));
    }
    Uuid::parse_str(raw).map_err(|_| FieldViolation::new("challenge_id", "must be a UUID"))
}

/// What the submit path needs to know of a challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeWindow {
    /// The challenge.
    pub id: Uuid,
    /// First instant progress counts.
    pub starts_at: DateTime<Utc>,
    /// Last instant progress counts.
    pub ends_at: DateTime<Utc>,
    /// The employer whose employees see it; `None` for an open challenge.
    pub employer_id: Option<String>,
}

/// Why a challenge does not take an entry at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inactive {
    /// The time is before the challenge starts.
    NotStarted,
    /// The time is after the challenge ends.
    Ended,
}

impl ChallengeWindow {
    /// Whether `caller` may see (and so submit to) the challenge: open challenges to
    /// everyone, an employer's to its own people, all to admins.
    pub fn visible_to(&self, caller: &Caller) -> bool {
        caller.is_admin()
            || match &self.employer_id {
                None => true,
                Some(e) => caller.employer_id.as_deref() == Some(e.as_str()),
            }
    }

    /// Whether the challenge is active at `at` (start and end inclusive).
    pub fn active_at(&self, at: DateTime<Utc>) -> Result<(), Inactive> {
        if at < self.starts_at {
            Err(Inactive::NotStarted)
        } else if at > self.ends_at {
            Err(Inactive::Ended)
        } else {
            Ok(())
        }
    }
}

/// When the progress happened: the request's `occurred_at`, default now, never in the future
/// (beyond [`FUTURE_SKEW`]).
pub fn occurred_at(
    raw: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, FieldViolation> {
    match raw {
        None => Ok(now),
        Some(at) if at > now + FUTURE_SKEW => {
            Err(FieldViolation::new("occurred_at", "must not be in the future"))
        }
        Some(at) => Ok(at),
    }
}

/// An accepted progress entry, as it travels through the queue to SQL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Minted on acceptance (UUID v7); the primary key and the score delta's event id.
    pub id: Uuid,
    /// The challenge.
    pub challenge_id: Uuid,
    /// The user (token subject).
    pub user_id: String,
    /// The user's employer, from the token.
    pub employer_id: Option<String>,
    /// The amount.
    pub value: f64,
    /// When the progress happened.
    pub occurred_at: DateTime<Utc>,
    /// When the service accepted it.
    pub accepted_at: DateTime<Utc>,
}

impl Entry {
    /// The leaderboard this entry counts on.
    pub fn board(&self) -> String {
        board_of(self.challenge_id)
    }
}

/// Name of a challenge's leaderboard.
pub fn board_of(challenge_id: Uuid) -> String {
    format!("challenge:{challenge_id}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ewpm_kit::auth::Role;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn window(employer: Option<&str>) -> ChallengeWindow {
        ChallengeWindow {
            id: Uuid::nil(),
            starts_at: at("2026-11-01T00:00:00Z"),
            ends_at: at("2026-11-30T00:00:00Z"),
            employer_id: employer.map(str::to_string),
        }
    }

    fn caller(role: Role, employer: Option<&str>) -> Caller {
        Caller { user_id: "u".into(), employer_id: employer.map(str::to_string), role }
    }

    #[test]
    fn a_value_must_be_positive_finite_and_at_most_the_cap() {
        assert_eq!(ProgressValue::parse(12.5).map(ProgressValue::get), Ok(12.5));
        assert_eq!(ProgressValue::parse(MAX_ENTRY_VALUE).map(ProgressValue::get), Ok(1e6));
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e6 + 1.0] {
            assert_eq!(ProgressValue::parse(bad).unwrap_err().field, "value", "{bad}");
        }
    }

    #[test]
    fn an_idempotency_key_is_optional_bounded_and_printable() {
        assert_eq!(IdempotencyKey::parse_optional(""), Ok(None));
        assert_eq!(
            IdempotencyKey::parse_optional("k-1").unwrap().map(|k| k.as_str().to_string()),
            Some("k-1".into())
        );
        assert!(IdempotencyKey::parse_optional(&"k".repeat(129)).is_err());
        assert!(IdempotencyKey::parse_optional("a\nb").is_err());
    }

    #[test]
    fn the_window_includes_both_ends_and_nothing_outside() {
        let w = window(None);
        assert_eq!(w.active_at(at("2026-11-01T00:00:00Z")), Ok(()));
        assert_eq!(w.active_at(at("2026-11-30T00:00:00Z")), Ok(()));
        assert_eq!(w.active_at(at("2026-10-31T23:59:59Z")), Err(Inactive::NotStarted));
        assert_eq!(w.active_at(at("2026-11-30T00:00:01Z")), Err(Inactive::Ended));
    }

    #[test]
    fn an_employer_challenge_is_visible_to_its_employer_and_admins_only() {
        let w = window(Some("acme"));
        assert!(w.visible_to(&caller(Role::Employee, Some("acme"))));
        assert!(!w.visible_to(&caller(Role::Employee, Some("globex"))));
        assert!(!w.visible_to(&caller(Role::Employee, None)));
        assert!(w.visible_to(&caller(Role::Admin, None)));
        assert!(window(None).visible_to(&caller(Role::Employee, None)));
    }

    #[test]
    fn occurred_at_defaults_to_now_and_may_not_be_in_the_future() {
        let now = at("2026-11-22T10:00:00Z");
        assert_eq!(occurred_at(None, now), Ok(now));
        assert_eq!(
            occurred_at(Some(at("2026-11-22T09:00:00Z")), now),
            Ok(at("2026-11-22T09:00:00Z"))
        );
        assert_eq!(occurred_at(Some(now + FUTURE_SKEW), now), Ok(now + FUTURE_SKEW));
        assert_eq!(
            occurred_at(Some(at("2026-11-22T10:01:00Z")), now).unwrap_err().field,
            "occurred_at"
        );
    }
}
