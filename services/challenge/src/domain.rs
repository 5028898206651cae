//! Challenge domain types. Each parses its raw input once; a value of one of these types is
//! valid by construction. No I/O here.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use ewpm_kit::{
    auth::{Caller, Role},
    error::FieldViolation,
};
use uuid::Uuid;

/// A challenge id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChallengeId(pub Uuid);

impl ChallengeId {
    /// A new time-ordered id.
    pub fn mint() -> Self {
        Self(Uuid::now_v7())
    }

    /// Parses a request's id field named `field`.
    pub fn parse(raw: &str, field: &str) -> Result<Self, FieldViolation> {
        if raw.is_empty() {
            return Err(FieldViolation::new(field, "is required"));
        }
        Uuid::parse_str(raw).map(Self).map_err(|_| FieldViolation::new(field, "must be a UUID"))
    }
}

impl std::fmt::Display for ChallengeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A display name: 1 to 200 characters after trimming, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeName(String);

impl ChallengeName {
    /// Longest name, in characters.
    pub const MAX_CHARS: usize = 200;

    /// Parses a name.
    pub fn parse(raw: &str) -> Result<Self, FieldViolation> {
        let name = raw.trim();
        if name.is_empty() {
            return Err(FieldViolation::new("name", "must not be empty"));
        }
        if name.chars().count() > Self::MAX_CHARS {
            return Err(FieldViolation::new(
                "name",
                format!("must be at most {} characters", Self::MAX_CHARS),
            ));
        }
        if name.chars().any(char::is_control) {
            return Err(FieldViolation::new("name", "must not contain control characters"));
        }
        Ok(Self(name.to_string()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Free text of at most 2000 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description(String);

impl Description {
    /// Longest description, in characters.
    pub const MAX_CHARS: usize = 2000;

    /// Parses a description (may be empty).
    pub fn parse(raw: &str) -> Result<Self, FieldViolation> {
        let text = raw.trim();
        if text.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
            return Err(FieldViolation::new("description", "must not contain control characters"));
        }
        if text.chars().count() > Self::MAX_CHARS {
            return Err(FieldViolation::new(
                "description",
                format!("must be at most {} characters", Self::MAX_CHARS),
            ));
        }
        Ok(Self(text.to_string()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a participant aims for: a finite target of at least [`Goal::MIN_TARGET`] in a named
/// unit (so a percent of the goal is always a finite number).
#[derive(Debug, Clone, PartialEq)]
pub struct Goal {
    target: f64,
    unit: String,
}

impl Goal {
    /// Largest target accepted; larger values are almost certainly a unit mistake.
    pub const MAX_TARGET: f64 = 1e12;
    /// Smallest target accepted: a total divided by anything smaller could overflow to
    /// infinity (5e-324 did), and no real goal is smaller.
    pub const MIN_TARGET: f64 = 0.001;
    /// Longest unit, in characters.
    pub const MAX_UNIT_CHARS: usize = 32;

    /// Parses a goal; violations are reported under `goal.`.
    pub fn parse(target: f64, unit: &str) -> Result<Self, Vec<FieldViolation>> {
        let mut violations = Vec::new();
        if !target.is_finite() || target < Self::MIN_TARGET {
            violations.push(FieldViolation::new("goal.target", "must be at least 0.001"));
        } else if target > Self::MAX_TARGET {
            violations.push(FieldViolation::new("goal.target", "must be at most 1e12"));
        }
        let unit = unit.trim();
        if unit.is_empty() {
            violations.push(FieldViolation::new("goal.unit", "must not be empty"));
        } else if unit.chars().count() > Self::MAX_UNIT_CHARS || unit.chars().any(char::is_control)
        {
            violations
                .push(FieldViolation::new("goal.unit", "must be at most 32 printable characters"));
        }
        if violations.is_empty() {
            Ok(Self { target, unit: unit.to_string() })
        } else {
            Err(violations)
        }
    }

    /// A goal as stored: rows written before [`Goal::MIN_TARGET`] existed stay readable (their
    /// percent of goal is guarded where it is computed).
    pub fn stored(target: f64, unit: &str) -> Result<Self, Vec<FieldViolation>> {
        match Self::parse(target, unit) {
            Ok(goal) => Ok(goal),
            Err(_) if target.is_finite() && target > 0.0 && !unit.trim().is_empty() => {
                Ok(Self { target, unit: unit.trim().to_string() })
            }
            Err(errors) => Err(errors),
        }
    }

    /// The target amount.
    pub fn target(&self) -> f64 {
        self.target
    }

    /// The unit.
    pub fn unit(&self) -> &str {
        &self.unit
    }
}

/// How long after its end a challenge still accepts late entries (that happened within its
/// window): 0 to [`LateGrace::MAX_SECONDS`] (7 days), whole seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LateGrace(u32);

impl LateGrace {
    /// Longest grace: 7 days.
    pub const MAX_SECONDS: u32 = 7 * 24 * 3600;

    /// Parses the field named `field`.
    pub fn parse(raw: i32, field: &str) -> Result<Self, FieldViolation> {
        match u32::try_from(raw) {
            Ok(secs) if secs <= Self::MAX_SECONDS => Ok(Self(secs)),
            _ => Err(FieldViolation::new(field, "must be between 0 and 604800 seconds (7 days)")),
        }
    }

    /// The grace in seconds.
    pub fn seconds(self) -> u32 {
        self.0
    }
}

/// An employer id: 1 to 64 characters of letters, digits, `-`, `_`, `.`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EmployerId(String);

impl EmployerId {
    /// Parses the employer field named `field`; empty means none.
    pub fn parse_optional(raw: &str, field: &str) -> Result<Option<Self>, FieldViolation> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Ok(None);
        }
        let valid = raw.len() <= 64
            && raw.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if valid {
            Ok(Some(Self(raw.to_string())))
        } else {
            Err(FieldViolation::new(field, "must be 1 to 64 letters, digits, '-', '_' or '.'"))
        }
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Wraps an id that was valid when stored or that comes from a verified token.
    pub fn trusted(raw: String) -> Self {
        Self(raw)
    }
}

/// A time window, start and end inclusive, end strictly after start; times are kept with
/// microsecond precision (what PostgreSQL stores), so what is read back equals what was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

/// Where a challenge stands relative to a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Starts later.
    Upcoming,
    /// start ≤ now ≤ end.
    Active,
    /// Ended earlier.
    Ended,
}

impl Window {
    /// 1970-01-01T00:00:00Z: no challenge starts before the epoch.
    const EARLIEST: i64 = 0;
    /// 9999-12-31T23:59:59Z: what every store and RFC 3339 can represent.
    const LATEST: i64 = 253_402_300_799;

    /// Parses a window from optional start and end; violations name `start_time` / `end_time`.
    pub fn parse(
        start: Option<DateTime<Utc>>,
        end: Option<DateTime<Utc>>,
    ) -> Result<Self, Vec<FieldViolation>> {
        match (start, end) {
            (Some(start), Some(end)) => {
                let (start, end) = (micros(start), micros(end));
                let out_of_range: Vec<_> = [("start_time", start), ("end_time", end)]
                    .into_iter()
                    .filter(|(_, t)| !(Self::EARLIEST..=Self::LATEST).contains(&t.timestamp()))
                    .map(|(field, _)| FieldViolation::new(field, "must be between 1970 and 9999"))
                    .collect();
                if !out_of_range.is_empty() {
                    Err(out_of_range)
                } else if end <= start {
                    Err(vec![FieldViolation::new("end_time", "must be after the start time")])
                } else {
                    Ok(Self { start, end })
                }
            }
            (start, end) => {
                let mut v = Vec::new();
                if start.is_none() {
                    v.push(FieldViolation::new("start_time", "is required"));
                }
                if end.is_none() {
                    v.push(FieldViolation::new("end_time", "is required"));
                }
                Err(v)
            }
        }
    }

    /// The opening instant.
    pub fn start(&self) -> DateTime<Utc> {
        self.start
    }

    /// The closing instant.
    pub fn end(&self) -> DateTime<Utc> {
        self.end
    }

    /// The state at `now`.
    pub fn state_at(&self, now: DateTime<Utc>) -> State {
        if now < self.start {
            State::Upcoming
        } else if now > self.end {
            State::Ended
        } else {
            State::Active
        }
    }
}

/// Truncates to whole microseconds.
pub fn micros(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(TimeDelta::microseconds(1)).unwrap_or(at)
}

/// A validated challenge, before it has an id.
#[derive(Debug, Clone, PartialEq)]
pub struct NewChallenge {
    /// Display name.
    pub name: ChallengeName,
    /// Free text.
    pub description: Description,
    /// Active window.
    pub window: Window,
    /// Goal.
    pub goal: Goal,
    /// Employer scope; `None` is open to everyone.
    pub employer: Option<EmployerId>,
    /// How long after its end late entries are accepted.
    pub late_grace: LateGrace,
}

/// A stored challenge.
#[derive(Debug, Clone, PartialEq)]
pub struct Challenge {
    /// Id.
    pub id: ChallengeId,
    /// Display name.
    pub name: ChallengeName,
    /// Free text.
    pub description: Description,
    /// Active window.
    pub window: Window,
    /// Goal.
    pub goal: Goal,
    /// Employer scope; `None` is open to everyone.
    pub employer: Option<EmployerId>,
    /// How long after its end late entries are accepted.
    pub late_grace: LateGrace,
    /// Creator (token subject).
    pub created_by: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last editor (token subject).
    pub updated_by: String,
    /// Last change time.
    pub updated_at: DateTime<Utc>,
}

/// A partial change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChallengePatch {
    /// New name.
    pub name: Option<ChallengeName>,
    /// New description.
    pub description: Option<Description>,
    /// New start.
    pub start: Option<DateTime<Utc>>,
    /// New end.
    pub end: Option<DateTime<Utc>>,
    /// New goal target.
    pub goal_target: Option<f64>,
    /// New goal unit.
    pub goal_unit: Option<String>,
    /// New employer scope (`Some(None)` makes it open).
    pub employer: Option<Option<EmployerId>>,
    /// New late grace.
    pub late_grace: Option<LateGrace>,
}

impl Challenge {
    /// The challenge with `patch` applied by `editor` at `now`, validated as a whole.
    pub fn patched(
        &self,
        patch: ChallengePatch,
        editor: &str,
        now: DateTime<Utc>,
    ) -> Result<Challenge, Vec<FieldViolation>> {
        let ChallengePatch {
            name,
            description,
            start,
            end,
            goal_target,
            goal_unit,
            employer,
            late_grace,
        } = patch;
        let window = Window::parse(
            Some(start.unwrap_or(self.window.start)),
            Some(end.unwrap_or(self.window.end)),
        )?;
        let goal = Goal::parse(
            goal_target.unwrap_or(self.goal.target),
            goal_unit.as_deref().unwrap_or(&self.goal.unit),
        )?;
        Ok(Challenge {
            id: self.id,
            name: name.unwrap_or_else(|| self.name.clone()),
            description: description.unwrap_or_else(|| self.description.clone()),
            window,
            goal,
            employer: employer.unwrap_or_else(|| self.employer.clone()),
            late_grace: late_grace.unwrap_or(self.late_grace),
            created_by: self.created_by.clone(),
            created_at: self.created_at,
            updated_by: editor.to_string(),
            updated_at: micros(now),
        })
    }
}

/// Which challenges a read may return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every challenge (admins).
    All,
    /// Only this employer's challenges.
    Employer(EmployerId),
    /// Open challenges and, if given, this employer's.
    OpenAnd(Option<EmployerId>),
}

/// Why an access rule said no.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied(pub &'static str);

/// The employer of a caller, as an id.
fn employer_of(caller: &Caller) -> Option<EmployerId> {
    caller.employer_id.clone().map(EmployerId::trusted)
}

/// Whether `caller` may read a challenge scoped to `employer`.
pub fn can_read(caller: &Caller, employer: Option<&EmployerId>) -> bool {
    match employer {
        _ if caller.is_admin() => true,
        None => true,
        Some(e) => caller.employer_id.as_deref() == Some(e.as_str()),
    }
}

/// Whether `caller`'s role may create or change challenges at all; checked before the
/// request is even parsed, so a participant learns nothing from validation errors.
pub fn can_author(caller: &Caller) -> Result<(), Denied> {
    match caller.role {
        Role::Admin | Role::EmployerAdmin => Ok(()),
        Role::Employee | Role::Ingest => {
            Err(Denied("only admins and employer admins create or change challenges"))
        }
    }
}

/// The employer a new challenge of `caller` belongs to, given the requested one.
pub fn scope_for_create(
    caller: &Caller,
    requested: Option<EmployerId>,
) -> Result<Option<EmployerId>, Denied> {
    match caller.role {
        Role::Admin => Ok(requested),
        Role::EmployerAdmin => match (employer_of(caller), requested) {
            (None, _) => {
                Err(Denied("an employer admin token without employer_id cannot create challenges"))
            }
            (Some(own), None) => Ok(Some(own)),
            (Some(own), Some(req)) if own == req => Ok(Some(own)),
            (Some(_), Some(_)) => {
                Err(Denied("employer admins create challenges only for their own employer"))
            }
        },
        Role::Employee | Role::Ingest => {
            Err(Denied("only admins and employer admins create challenges"))
        }
    }
}

/// Whether `caller` may change a challenge scoped to `employer`.
pub fn can_manage(caller: &Caller, employer: Option<&EmployerId>) -> Result<(), Denied> {
    match caller.role {
        Role::Admin => Ok(()),
        Role::EmployerAdmin
            if employer.is_some()
                && caller.employer_id.as_deref() == employer.map(EmployerId::as_str) =>
        {
            Ok(())
        }
        Role::EmployerAdmin => {
            Err(Denied("employer admins change only their own employer's challenges"))
        }
        Role::Employee | Role::Ingest => {
            Err(Denied("only admins and employer admins change challenges"))
        }
    }
}

/// The scope of a listing by `caller`, optionally filtered to one employer.
pub fn scope_for_list(caller: &Caller, filter: Option<EmployerId>) -> Result<Scope, Denied> {
    match (caller.is_admin(), filter) {
        (true, None) => Ok(Scope::All),
        (true, Some(e)) => Ok(Scope::Employer(e)),
        (false, None) => Ok(Scope::OpenAnd(employer_of(caller))),
        (false, Some(e)) if caller.employer_id.as_deref() == Some(e.as_str()) => {
            Ok(Scope::Employer(e))
        }
        (false, Some(_)) => Err(Denied("only admins list another employer's challenges")),
    }
}

/// The scope of the active challenges of `user_id` (empty: the caller) asked by `caller`.
/// `employer` is the user's employer, honoured only when an admin asks about someone else.
pub fn scope_for_user(
    caller: &Caller,
    user_id: &str,
    employer: Option<EmployerId>,
) -> Result<Scope, Denied> {
    if user_id.is_empty() || user_id == caller.user_id {
        Ok(Scope::OpenAnd(employer_of(caller)))
    } else if caller.is_admin() {
        Ok(Scope::OpenAnd(employer))
    } else {
        Err(Denied("only admins list another user's challenges"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, h, 0, 0).unwrap()
    }

    fn caller(role: Role, employer: Option<&str>) -> Caller {
        Caller { user_id: "u1".into(), employer_id: employer.map(str::to_string), role }
    }

    fn acme() -> EmployerId {
        EmployerId::trusted("acme".into())
    }

    #[test]
    fn a_name_is_trimmed_and_must_not_be_empty_or_too_long() {
        assert_eq!(ChallengeName::parse("  Steps  ").unwrap().as_str(), "Steps");
        assert_eq!(ChallengeName::parse("   ").unwrap_err().field, "name");
        assert!(ChallengeName::parse(&"x".repeat(200)).is_ok());
        assert_eq!(
            ChallengeName::parse(&"x".repeat(201)).unwrap_err().description,
            "must be at most 200 characters"
        );
        assert!(ChallengeName::parse("a\u{0}b").is_err());
    }

    #[test]
    fn a_challenge_that_ends_before_it_starts_is_rejected() {
        let err = Window::parse(Some(at(10)), Some(at(9))).unwrap_err();
        assert_eq!(err, vec![FieldViolation::new("end_time", "must be after the start time")]);
        assert!(Window::parse(Some(at(10)), Some(at(10))).is_err());
    }

    #[test]
    fn times_outside_1970_to_9999_are_rejected() {
        let ancient = Utc.with_ymd_and_hms(1969, 12, 31, 0, 0, 0).unwrap();
        let far = Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0).unwrap();
        let fields = |r: Result<Window, Vec<FieldViolation>>| {
            r.unwrap_err().into_iter().map(|v| v.field).collect::<Vec<_>>()
        };
        assert_eq!(fields(Window::parse(Some(ancient), Some(far))), ["start_time", "end_time"]);
        assert!(
            Window::parse(Some(at(1)), Some(Utc.with_ymd_and_hms(9999, 12, 31, 0, 0, 0).unwrap()))
                .is_ok()
        );
    }

    #[test]
    fn a_description_keeps_line_breaks_but_not_other_control_characters() {
        assert_eq!(Description::parse("line 1\nline 2").unwrap().as_str(), "line 1\nline 2");
        assert_eq!(Description::parse("a\u{0}b").unwrap_err().field, "description");
    }

    #[test]
    fn a_window_needs_both_ends() {
        let err = Window::parse(None, None).unwrap_err();
        let fields: Vec<_> = err.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["start_time", "end_time"]);
    }

    #[test]
    fn a_goal_must_be_positive_finite_and_have_a_unit() {
        assert!(Goal::parse(10_000.0, "steps").is_ok());
        let fields = |r: Result<Goal, Vec<FieldViolation>>| {
            r.unwrap_err().into_iter().map(|v| v.field).collect::<Vec<_>>()
        };
        assert_eq!(fields(Goal::parse(0.0, "steps")), ["goal.target"]);
        assert_eq!(fields(Goal::parse(-1.0, "steps")), ["goal.target"]);
        assert_eq!(fields(Goal::parse(f64::NAN, "")), ["goal.target", "goal.unit"]);
        assert_eq!(fields(Goal::parse(f64::INFINITY, "km")), ["goal.target"]);
    }

    #[test]
    fn a_goal_below_the_minimum_target_is_rejected_so_percent_of_goal_stays_finite() {
        assert_eq!(
            Goal::parse(5e-324, "steps"),
            Err(vec![FieldViolation::new("goal.target", "must be at least 0.001")])
        );
        assert_eq!(
            Goal::parse(0.000_999, "km"),
            Err(vec![FieldViolation::new("goal.target", "must be at least 0.001")])
        );
        assert_eq!(Goal::parse(Goal::MIN_TARGET, "km").map(|g| g.target()), Ok(0.001));
        // A row stored before the minimum existed is still read.
        assert_eq!(Goal::stored(5e-324, "km").map(|g| g.target()), Ok(5e-324));
        assert!(Goal::stored(f64::NAN, "km").is_err());
    }

    #[test]
    fn a_late_grace_is_zero_to_seven_days() {
        assert_eq!(LateGrace::parse(0, "late_grace_seconds"), Ok(LateGrace::default()));
        assert_eq!(
            LateGrace::parse(604_800, "late_grace_seconds").map(LateGrace::seconds),
            Ok(604_800)
        );
        let bad = FieldViolation::new(
            "late_grace_seconds",
            "must be between 0 and 604800 seconds (7 days)",
        );
        assert_eq!(LateGrace::parse(604_801, "late_grace_seconds"), Err(bad.clone()));
        assert_eq!(LateGrace::parse(-1, "late_grace_seconds"), Err(bad));
    }

    #[test]
    fn active_means_start_at_or_before_now_and_end_at_or_after_now() {
        let w = Window::parse(Some(at(10)), Some(at(12))).unwrap();
        assert_eq!(w.state_at(at(9)), State::Upcoming);
        assert_eq!(w.state_at(at(10)), State::Active);
        assert_eq!(w.state_at(at(12)), State::Active);
        assert_eq!(w.state_at(at(13)), State::Ended);
    }

    #[test]
    fn employee_cannot_create_and_employer_admin_creates_only_for_their_employer() {
        let employee = caller(Role::Employee, Some("acme"));
        assert!(scope_for_create(&employee, None).is_err());
        let ea = caller(Role::EmployerAdmin, Some("acme"));
        assert_eq!(scope_for_create(&ea, None), Ok(Some(acme())));
        assert_eq!(scope_for_create(&ea, Some(acme())), Ok(Some(acme())));
        assert!(scope_for_create(&ea, Some(EmployerId::trusted("globex".into()))).is_err());
        assert_eq!(scope_for_create(&caller(Role::Admin, None), None), Ok(None));
    }

    #[test]
    fn open_challenges_are_readable_by_all_and_scoped_ones_by_their_employer() {
        let employee = caller(Role::Employee, Some("acme"));
        assert!(can_read(&employee, None));
        assert!(can_read(&employee, Some(&acme())));
        assert!(!can_read(&employee, Some(&EmployerId::trusted("globex".into()))));
        assert!(can_read(&caller(Role::Admin, None), Some(&acme())));
    }

    #[test]
    fn employer_admins_manage_only_their_own_scoped_challenges() {
        let ea = caller(Role::EmployerAdmin, Some("acme"));
        assert!(can_manage(&ea, Some(&acme())).is_ok());
        assert!(can_manage(&ea, None).is_err());
        assert!(can_manage(&ea, Some(&EmployerId::trusted("globex".into()))).is_err());
        assert!(can_manage(&caller(Role::Employee, Some("acme")), Some(&acme())).is_err());
    }

    #[test]
    fn only_admins_look_at_other_users_or_employers() {
        let employee = caller(Role::Employee, Some("acme"));
        assert_eq!(scope_for_user(&employee, "", None), Ok(Scope::OpenAnd(Some(acme()))));
        assert_eq!(scope_for_user(&employee, "u1", None), Ok(Scope::OpenAnd(Some(acme()))));
        assert!(scope_for_user(&employee, "u2", None).is_err());
        assert_eq!(
            scope_for_user(&caller(Role::Admin, None), "u2", Some(acme())),
            Ok(Scope::OpenAnd(Some(acme())))
        );
        assert!(scope_for_list(&employee, Some(EmployerId::trusted("globex".into()))).is_err());
        assert_eq!(scope_for_list(&employee, None), Ok(Scope::OpenAnd(Some(acme()))));
    }

    #[test]
    fn a_patch_is_validated_against_the_whole_challenge() {
        let c = Challenge {
            id: ChallengeId::mint(),
            name: ChallengeName::parse("Steps").unwrap(),
            description: Description::parse("").unwrap(),
            window: Window::parse(Some(at(10)), Some(at(12))).unwrap(),
            goal: Goal::parse(100.0, "steps").unwrap(),
            employer: None,
            late_grace: LateGrace::default(),
            created_by: "a".into(),
            created_at: at(1),
            updated_by: "a".into(),
            updated_at: at(1),
        };
        let bad = ChallengePatch { end: Some(at(9)), ..Default::default() };
        assert_eq!(c.patched(bad, "b", at(2)).unwrap_err()[0].field, "end_time");
        let good = ChallengePatch {
            goal_target: Some(50.0),
            late_grace: Some(LateGrace(3600)),
            ..Default::default()
        };
        let patched = c.patched(good, "b", at(2)).unwrap();
        assert_eq!((patched.goal.target(), patched.updated_by.as_str()), (50.0, "b"));
        assert_eq!(patched.late_grace, LateGrace(3600));
        assert_eq!(patched.goal.unit(), "steps");
    }
}
