//! Progress domain types. Each parses its raw input once; a value of one of these types is
//! valid by construction. No I/O here.

use chrono::{DateTime, TimeDelta, Utc};
use ewpm_kit::{auth::Caller, error::FieldViolation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::activity::{Activity, ActivityKind};

/// Largest value one entry may carry (a sanity cap against typos and abuse).
pub const MAX_ENTRY_VALUE: f64 = 1_000_000.0;

/// Clock skew tolerated between a client and the service for `occurred_at`.
pub const FUTURE_SKEW: TimeDelta = TimeDelta::seconds(5);

/// Longest idempotency key, in characters.
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 128;

/// The amount of one entry: a normal float (not NaN, infinite or subnormal), > 0, at most
/// [`MAX_ENTRY_VALUE`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProgressValue(f64);

impl ProgressValue {
    /// Parses the request's `value`.
    pub fn parse(raw: f64) -> Result<Self, FieldViolation> {
        if !raw.is_finite() {
            return Err(FieldViolation::new("value", "must be a finite number"));
        }
        // Subnormals (e.g. 5e-324) are no real measurement and lose precision in any sum.
        if raw != 0.0 && !raw.is_normal() {
            return Err(FieldViolation::new("value", "must not be a subnormal number"));
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
    /// How long after `ends_at` late entries (occurred within the window) are still
    /// accepted; after that the challenge is final.
    pub late_grace: TimeDelta,
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

    /// Whether the challenge still takes entries at `now`: until its end plus its late grace
    /// (inclusive).
    pub fn open_at(&self, now: DateTime<Utc>) -> bool {
        now <= self.ends_at + self.late_grace
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

/// Longest note of a logged activity, in characters.
pub const MAX_NOTE_CHARS: usize = 1000;

/// How far back a logged activity may have happened.
pub const MAX_ACTIVITY_AGE: TimeDelta = TimeDelta::days(366);

/// The measurement of a logged activity: absent, or 0 or a normal float (not NaN, infinite or
/// subnormal) up to [`MAX_ENTRY_VALUE`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActivityValue(Option<f64>);

impl ActivityValue {
    /// Parses the request's optional `value`.
    pub fn parse(raw: Option<f64>) -> Result<Self, FieldViolation> {
        match raw {
            None => Ok(Self(None)),
            Some(v) if !v.is_finite() => {
                Err(FieldViolation::new("value", "must be a finite number"))
            }
            Some(v) if v != 0.0 && !v.is_normal() => {
                Err(FieldViolation::new("value", "must not be a subnormal number"))
            }
            Some(v) if !(0.0..=MAX_ENTRY_VALUE).contains(&v) => {
                Err(FieldViolation::new("value", "must be between 0 and 1000000"))
            }
            Some(v) => Ok(Self(Some(v))),
        }
    }

    /// The number, if any.
    pub fn get(self) -> Option<f64> {
        self.0
    }
}

/// A logged activity's note: at most [`MAX_NOTE_CHARS`] characters, no control characters
/// but line breaks and tabs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note(String);

impl Note {
    /// Parses the request's `note` (empty is no note).
    pub fn parse(raw: &str) -> Result<Self, FieldViolation> {
        if raw.chars().count() > MAX_NOTE_CHARS {
            return Err(FieldViolation::new("note", "must be at most 1000 characters"));
        }
        if raw.chars().any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r') {
            return Err(FieldViolation::new("note", "must not contain control characters"));
        }
        Ok(Self(raw.to_string()))
    }

    /// The text.
    pub fn into_string(self) -> String {
        self.0
    }
}

/// When a logged activity happened: default now, not in the future (beyond
/// [`FUTURE_SKEW`]), at most [`MAX_ACTIVITY_AGE`] ago.
pub fn activity_occurred_at(
    raw: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, FieldViolation> {
    let at = occurred_at(raw, now)?;
    if at < now - MAX_ACTIVITY_AGE {
        return Err(FieldViolation::new("occurred_at", "must be at most 366 days ago"));
    }
    Ok(at)
}

/// A logged health activity, as it travels through the queue to the activity log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedActivity {
    /// Minted on acceptance (UUID v7); the activity log's primary key.
    pub id: Uuid,
    /// What was logged (never challenge progress: that is an [`Entry`]).
    pub kind: ActivityKind,
    /// The user (token subject).
    pub user_id: String,
    /// The user's employer, from the token.
    pub employer_id: Option<String>,
    /// The measurement, if any.
    pub value: Option<f64>,
    /// The note (may be empty).
    pub note: String,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// When the service accepted it.
    pub accepted_at: DateTime<Utc>,
}

/// What the progress queue carries: challenge progress or a logged activity (one queue, one
/// set of writers, one transaction per batch for both).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Queued {
    /// A logged activity (has `kind`).
    Activity(LoggedActivity),
    /// A progress entry.
    Progress(Entry),
}

impl Queued {
    /// The activity it records (published on the `activity` topic once written).
    pub fn activity(&self) -> Activity {
        match self {
            Self::Activity(a) => Activity {
                id: a.id,
                kind: a.kind,
                user_id: a.user_id.clone(),
                employer_id: a.employer_id.clone(),
                value: a.value,
                occurred_at: a.occurred_at,
            },
            Self::Progress(e) => Activity {
                id: e.id,
                kind: ActivityKind::ChallengeProgress,
                user_id: e.user_id.clone(),
                employer_id: e.employer_id.clone(),
                value: Some(e.value),
                occurred_at: e.occurred_at,
            },
        }
    }
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
            late_grace: TimeDelta::zero(),
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
    fn a_subnormal_value_is_rejected_and_the_smallest_normal_one_accepted() {
        for bad in [5e-324, f64::MIN_POSITIVE / 2.0, f64::NEG_INFINITY] {
            assert_eq!(
                ProgressValue::parse(bad).map(ProgressValue::get),
                Err(if bad.is_finite() {
                    FieldViolation::new("value", "must not be a subnormal number")
                } else {
                    FieldViolation::new("value", "must be a finite number")
                }),
                "{bad}"
            );
        }
        assert_eq!(
            ProgressValue::parse(f64::MIN_POSITIVE).map(ProgressValue::get),
            Ok(f64::MIN_POSITIVE)
        );
    }

    #[test]
    fn a_subnormal_activity_value_is_rejected_but_zero_is_a_measurement() {
        assert_eq!(
            ActivityValue::parse(Some(5e-324)),
            Err(FieldViolation::new("value", "must not be a subnormal number"))
        );
        assert_eq!(ActivityValue::parse(Some(0.0)).map(ActivityValue::get), Ok(Some(0.0)));
        assert_eq!(
            ActivityValue::parse(Some(f64::INFINITY)),
            Err(FieldViolation::new("value", "must be a finite number"))
        );
    }

    #[test]
    fn a_challenge_takes_entries_until_its_end_plus_its_late_grace() {
        let mut w = window(None);
        assert!(w.open_at(at("2026-11-30T00:00:00Z")));
        assert!(!w.open_at(at("2026-11-30T00:00:01Z")));
        w.late_grace = TimeDelta::hours(2);
        assert!(w.open_at(at("2026-11-30T02:00:00Z")));
        assert!(!w.open_at(at("2026-11-30T02:00:01Z")));
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

    #[test]
    fn an_activity_value_is_optional_finite_and_within_bounds() {
        assert_eq!(ActivityValue::parse(None).map(ActivityValue::get), Ok(None));
        assert_eq!(ActivityValue::parse(Some(0.0)).map(ActivityValue::get), Ok(Some(0.0)));
        for bad in [-0.5, f64::NAN, 1e6 + 1.0] {
            assert_eq!(ActivityValue::parse(Some(bad)).unwrap_err().field, "value", "{bad}");
        }
    }

    #[test]
    fn a_note_is_bounded_and_may_hold_line_breaks_but_no_other_control_characters() {
        assert_eq!(
            Note::parse("slept badly\nwoke at 3").map(Note::into_string),
            Ok("slept badly\nwoke at 3".into())
        );
        assert!(Note::parse(&"n".repeat(1001)).is_err());
        assert!(Note::parse("a\u{7}b").is_err());
    }

    #[test]
    fn an_activity_may_be_up_to_366_days_old_but_not_in_the_future() {
        let now = at("2026-11-22T10:00:00Z");
        assert_eq!(activity_occurred_at(None, now), Ok(now));
        assert_eq!(
            activity_occurred_at(Some(now - MAX_ACTIVITY_AGE), now),
            Ok(now - MAX_ACTIVITY_AGE)
        );
        assert!(
            activity_occurred_at(Some(now - MAX_ACTIVITY_AGE - TimeDelta::seconds(1)), now)
                .is_err()
        );
        assert!(activity_occurred_at(Some(now + TimeDelta::minutes(1)), now).is_err());
    }

    /// The previous release queued JSON, told apart by shape (see `crate::queue`).
    #[test]
    fn the_json_queue_form_tells_activities_from_progress_entries() {
        let entry = Entry {
            id: Uuid::now_v7(),
            challenge_id: Uuid::now_v7(),
            user_id: "u".into(),
            employer_id: Some("acme".into()),
            value: 3.0,
            occurred_at: at("2026-11-22T10:00:00Z"),
            accepted_at: at("2026-11-22T10:00:01Z"),
        };
        let activity = LoggedActivity {
            id: Uuid::now_v7(),
            kind: ActivityKind::Birth,
            user_id: "u".into(),
            employer_id: Some("acme".into()),
            value: None,
            note: String::new(),
            occurred_at: at("2026-11-22T10:00:00Z"),
            accepted_at: at("2026-11-22T10:00:01Z"),
        };
        for queued in [Queued::Progress(entry), Queued::Activity(activity)] {
            let json = serde_json::to_vec(&queued).unwrap();
            assert_eq!(serde_json::from_slice::<Queued>(&json).unwrap(), queued);
        }
    }
}
