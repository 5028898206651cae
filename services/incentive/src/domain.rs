//! Incentive domain types. Each parses its raw input once; a value of one of these types is
//! valid by construction. No I/O here.

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use chrono_tz::Tz;
use ewpm_kit::error::FieldViolation;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::activity::ActivityKind;

/// Longest streak a rule may ask for (the streak state keeps 64 days; see [`crate::streak`]).
pub const MAX_STREAK_DAYS: u32 = 32;

/// Longest backfill window, in days.
pub const MAX_BACKFILL_DAYS: u32 = 31;

/// A catalog incentive's unique name: 3–64 characters of `a-z`, `0-9` and `-`, starting and
/// ending with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slug(String);

impl Slug {
    /// Parses `field`.
    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldViolation> {
        let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
        if !(3..=64).contains(&raw.len())
            || !raw.chars().all(ok_char)
            || raw.starts_with('-')
            || raw.ends_with('-')
        {
            return Err(FieldViolation::new(
                field,
                "must be 3-64 characters of a-z, 0-9 and '-', not starting or ending with '-'",
            ));
        }
        Ok(Self(raw.to_string()))
    }

    /// The slug.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Free text of 1 to `max` characters without control characters.
pub fn text(field: &str, raw: &str, max: usize) -> Result<String, FieldViolation> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(FieldViolation::new(field, "is required"));
    }
    if trimmed.chars().count() > max {
        return Err(FieldViolation::new(field, format!("must be at most {max} characters")));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(FieldViolation::new(field, "must not contain control characters"));
    }
    Ok(trimmed.to_string())
}

/// When an incentive is earned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Activity on this many consecutive calendar days (2 to [`MAX_STREAK_DAYS`]).
    ConsecutiveDays(u32),
    /// Every qualifying activity.
    EachOccurrence,
}

impl Rule {
    /// Checks a streak length.
    pub fn consecutive_days(days: i32) -> Result<Self, FieldViolation> {
        if !(2..=MAX_STREAK_DAYS as i32).contains(&days) {
            return Err(FieldViolation::new(
                "rule.consecutive_days.days",
                format!("must be between 2 and {MAX_STREAK_DAYS}"),
            ));
        }
        Ok(Self::ConsecutiveDays(days as u32))
    }

    /// The stored form: kind and days.
    pub fn to_columns(self) -> (&'static str, Option<i32>) {
        match self {
            Self::ConsecutiveDays(d) => ("consecutive_days", Some(d as i32)),
            Self::EachOccurrence => ("each_occurrence", None),
        }
    }

    /// From the stored form.
    pub fn from_columns(kind: &str, days: Option<i32>) -> anyhow::Result<Self> {
        match (kind, days) {
            ("consecutive_days", Some(d)) => Ok(Self::ConsecutiveDays(d.max(1) as u32)),
            ("each_occurrence", _) => Ok(Self::EachOccurrence),
            _ => anyhow::bail!("unknown stored rule {kind:?} / {days:?}"),
        }
    }
}

/// The activity kinds that trigger an incentive: at least one, no repeats, in a fixed order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerKinds(Vec<ActivityKind>);

impl TriggerKinds {
    /// Parses proto enum values.
    pub fn parse(raw: &[i32]) -> Result<Self, FieldViolation> {
        let mut kinds = Vec::with_capacity(raw.len());
        for &k in raw {
            kinds.push(ActivityKind::from_proto(k).ok_or_else(|| {
                FieldViolation::new("trigger_kinds", format!("{k} is not an activity kind"))
            })?);
        }
        if kinds.is_empty() {
            return Err(FieldViolation::new("trigger_kinds", "must name at least one kind"));
        }
        kinds.sort();
        kinds.dedup();
        Ok(Self(kinds))
    }

    /// The kinds.
    pub fn kinds(&self) -> &[ActivityKind] {
        &self.0
    }

    /// Whether `kind` triggers.
    pub fn contains(&self, kind: ActivityKind) -> bool {
        self.0.contains(&kind)
    }

    /// Stored form: names, comma-separated.
    pub fn to_column(&self) -> String {
        self.0.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(",")
    }

    /// From the stored form (unknown names are skipped).
    pub fn from_column(raw: &str) -> Self {
        Self(raw.split(',').filter_map(ActivityKind::from_name).collect())
    }
}

/// An IANA time zone whose calendar days count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Zone(Tz);

impl Zone {
    /// Parses an IANA name; empty is UTC.
    pub fn parse(raw: &str) -> Result<Self, FieldViolation> {
        if raw.is_empty() {
            return Ok(Self(Tz::UTC));
        }
        raw.parse::<Tz>().map(Self).map_err(|_| {
            FieldViolation::new("time_zone", "must be an IANA time zone such as Europe/Berlin")
        })
    }

    /// The IANA name.
    pub fn name(self) -> &'static str {
        self.0.name()
    }

    /// The calendar day (in this zone) of the instant `at`.
    pub fn day_of(self, at: DateTime<Utc>) -> NaiveDate {
        at.with_timezone(&self.0).date_naive()
    }
}

/// A calendar day as a number: days since 1970-01-01 (what the streak state stores).
pub fn day_number(day: NaiveDate) -> i32 {
    (day - NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days() as i32
}

/// The calendar day of a day number.
pub fn day_of_number(n: i32) -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch") + chrono::TimeDelta::days(n as i64)
}

/// A calendar period in the employer's time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// ISO week (Monday to Sunday).
    Week,
    /// Calendar month.
    Month,
    /// Calendar year.
    Year,
}

impl Period {
    /// Name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Week => "week",
            Self::Month => "month",
            Self::Year => "year",
        }
    }

    /// From the stored name.
    pub fn from_name(raw: &str) -> Option<Self> {
        [Self::Week, Self::Month, Self::Year].into_iter().find(|p| p.as_str() == raw)
    }

    /// The period's key for a day (`2026-W47`, `2026-11`, `2026`).
    pub fn key(self, day: NaiveDate) -> String {
        match self {
            Self::Week => {
                let w = day.iso_week();
                format!("{}-W{:02}", w.year(), w.week())
            }
            Self::Month => format!("{}-{:02}", day.year(), day.month()),
            Self::Year => format!("{}", day.year()),
        }
    }
}

/// How often one user may earn one employer incentive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepeatPolicy {
    /// Once ever.
    OncePerUser,
    /// Once per calendar period.
    OncePerPeriod(Period),
}

impl RepeatPolicy {
    /// The award key of a day the rule fired on: one award per user, link and key.
    pub fn key(self, day: NaiveDate) -> String {
        match self {
            Self::OncePerUser => "once".to_string(),
            Self::OncePerPeriod(p) => p.key(day),
        }
    }

    /// Stored form: policy and period.
    pub fn to_columns(self) -> (&'static str, Option<&'static str>) {
        match self {
            Self::OncePerUser => ("once_per_user", None),
            Self::OncePerPeriod(p) => ("once_per_period", Some(p.as_str())),
        }
    }

    /// From the stored form.
    pub fn from_columns(policy: &str, period: Option<&str>) -> anyhow::Result<Self> {
        match (policy, period.and_then(Period::from_name)) {
            ("once_per_user", _) => Ok(Self::OncePerUser),
            ("once_per_period", Some(p)) => Ok(Self::OncePerPeriod(p)),
            _ => anyhow::bail!("unknown stored repeat policy {policy:?} / {period:?}"),
        }
    }
}

/// A step run each time a rule fires (see [`crate::actions`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActionKind {
    /// Record the award in the ledger.
    Award,
    /// Push a newly recorded award to the user's live streams.
    Notify,
}

impl ActionKind {
    /// Name as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Award => "award",
            Self::Notify => "notify",
        }
    }
}

/// An employer incentive's actions: starts with [`ActionKind::Award`], no repeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actions(Vec<ActionKind>);

impl Actions {
    /// The default stack: award, then notify.
    pub fn standard() -> Self {
        Self(vec![ActionKind::Award, ActionKind::Notify])
    }

    /// Checks a requested stack (empty means [`Actions::standard`]).
    pub fn parse(kinds: Vec<ActionKind>) -> Result<Self, FieldViolation> {
        if kinds.is_empty() {
            return Ok(Self::standard());
        }
        if kinds[0] != ActionKind::Award {
            return Err(FieldViolation::new("actions", "must start with ACTION_KIND_AWARD"));
        }
        let mut seen = std::collections::HashSet::new();
        if !kinds.iter().all(|k| seen.insert(*k)) {
            return Err(FieldViolation::new("actions", "must not repeat an action"));
        }
        Ok(Self(kinds))
    }

    /// In order.
    pub fn kinds(&self) -> &[ActionKind] {
        &self.0
    }

    /// Stored form.
    pub fn to_column(&self) -> String {
        self.0.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(",")
    }

    /// From the stored form.
    pub fn from_column(raw: &str) -> Self {
        Self(
            raw.split(',')
                .filter_map(|n| match n {
                    "award" => Some(ActionKind::Award),
                    "notify" => Some(ActionKind::Notify),
                    _ => None,
                })
                .collect(),
        )
    }
}

/// When activity counts for an employer incentive: from `starts_at`, up to `ends_at` if set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveWindow {
    /// First instant that counts.
    pub starts_at: DateTime<Utc>,
    /// Last instant that counts.
    pub ends_at: Option<DateTime<Utc>>,
}

impl ActiveWindow {
    /// Checks that the window ends after it starts.
    pub fn new(
        starts_at: DateTime<Utc>,
        ends_at: Option<DateTime<Utc>>,
    ) -> Result<Self, FieldViolation> {
        if ends_at.is_some_and(|e| e <= starts_at) {
            return Err(FieldViolation::new("end_time", "must be after start_time"));
        }
        Ok(Self { starts_at, ends_at })
    }

    /// Whether activity at `at` counts (both ends inclusive).
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        at >= self.starts_at && self.ends_at.is_none_or(|e| at <= e)
    }
}

/// A catalog incentive.
#[derive(Debug, Clone, PartialEq)]
pub struct Incentive {
    /// Id.
    pub id: Uuid,
    /// Unique name.
    pub slug: String,
    /// For people.
    pub description: String,
    /// When it is earned.
    pub rule: Rule,
    /// What triggers it.
    pub trigger_kinds: TriggerKinds,
    /// False once deactivated.
    pub active: bool,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// A catalog incentive linked to an employer's program.
#[derive(Debug, Clone, PartialEq)]
pub struct EmployerIncentive {
    /// Id.
    pub id: Uuid,
    /// The employer.
    pub employer_id: String,
    /// The employer's program.
    pub program_id: String,
    /// The catalog incentive, as it is now.
    pub incentive: Incentive,
    /// What the user gets.
    pub reward: String,
    /// Whose calendar days count.
    pub zone: Zone,
    /// When activity counts.
    pub window: ActiveWindow,
    /// How often one user may earn it.
    pub repeat: RepeatPolicy,
    /// What runs when the rule fires.
    pub actions: Actions,
    /// False once deactivated.
    pub active: bool,
    /// Created.
    pub created_at: DateTime<Utc>,
}

impl EmployerIncentive {
    /// Whether an activity of `kind` at `at` counts towards this link now.
    pub fn counts(&self, kind: ActivityKind, at: DateTime<Utc>) -> bool {
        self.active
            && self.incentive.active
            && self.incentive.trigger_kinds.contains(kind)
            && self.window.contains(at)
    }
}

/// A recorded activity that counts towards one employer incentive: what a processor applies
/// (in process; never on the bus).
#[derive(Debug, Clone, PartialEq)]
pub struct IncentiveEvent {
    /// The activity (with the link, what makes the event unique).
    pub activity_id: Uuid,
    /// The employer incentive.
    pub employer_incentive_id: Uuid,
    /// The user.
    pub user_id: String,
    /// The user's employer.
    pub employer_id: String,
    /// What the user did.
    pub kind: ActivityKind,
    /// When.
    pub occurred_at: DateTime<Utc>,
}

/// A recorded award.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Award {
    /// Id (UUID v7).
    pub id: Uuid,
    /// Who earned it.
    pub user_id: String,
    /// Under which employer.
    pub employer_id: String,
    /// Which link.
    pub employer_incentive_id: Uuid,
    /// The program.
    pub program_id: String,
    /// The catalog incentive's slug.
    pub incentive_slug: String,
    /// What the user gets.
    pub reward: String,
    /// The day the rule fired on (employer's calendar).
    pub award_day: NaiveDate,
    /// One award per user, link and key.
    pub period_key: String,
    /// The activity that completed it.
    pub activity_id: Uuid,
    /// When it was recorded.
    pub awarded_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn a_slug_is_lowercase_letters_digits_and_inner_dashes() {
        assert_eq!(Slug::parse("slug", "user-birth").unwrap().as_str(), "user-birth");
        for bad in ["ab", "User-Birth", "-birth", "birth-", "b irth", &"a".repeat(65)] {
            assert_eq!(Slug::parse("slug", bad).unwrap_err().field, "slug", "{bad}");
        }
    }

    #[test]
    fn a_streak_rule_asks_for_2_to_32_days() {
        assert_eq!(Rule::consecutive_days(5), Ok(Rule::ConsecutiveDays(5)));
        assert!(Rule::consecutive_days(1).is_err());
        assert!(Rule::consecutive_days(33).is_err());
        for rule in [Rule::ConsecutiveDays(5), Rule::EachOccurrence] {
            let (kind, days) = rule.to_columns();
            assert_eq!(Rule::from_columns(kind, days).unwrap(), rule);
        }
    }

    #[test]
    fn trigger_kinds_are_required_deduplicated_and_stored_by_name() {
        let kinds = TriggerKinds::parse(&[
            ActivityKind::Symptom.to_proto(),
            ActivityKind::Mood.to_proto(),
            ActivityKind::Mood.to_proto(),
        ])
        .unwrap();
        assert_eq!(kinds.kinds(), &[ActivityKind::Mood, ActivityKind::Symptom]);
        assert_eq!(kinds.to_column(), "mood,symptom");
        assert_eq!(TriggerKinds::from_column("mood,symptom"), kinds);
        assert!(TriggerKinds::parse(&[]).is_err());
        assert!(TriggerKinds::parse(&[0]).is_err());
    }

    #[test]
    fn a_zone_is_an_iana_name_and_defaults_to_utc() {
        assert_eq!(Zone::parse("").unwrap().name(), "UTC");
        assert_eq!(Zone::parse("Europe/Berlin").unwrap().name(), "Europe/Berlin");
        assert_eq!(Zone::parse("Mars/Olympus").unwrap_err().field, "time_zone");
    }

    #[test]
    fn the_same_instant_falls_on_different_days_in_different_zones() {
        let at: DateTime<Utc> = "2026-11-22T23:30:00Z".parse().unwrap();
        assert_eq!(Zone::parse("UTC").unwrap().day_of(at), day("2026-11-22"));
        assert_eq!(Zone::parse("Europe/Berlin").unwrap().day_of(at), day("2026-11-23"));
        assert_eq!(Zone::parse("America/New_York").unwrap().day_of(at), day("2026-11-22"));
    }

    #[test]
    fn day_numbers_round_trip() {
        for d in ["1970-01-01", "2026-03-08", "2026-11-01", "2099-12-31"] {
            assert_eq!(day_of_number(day_number(day(d))), day(d));
        }
        assert_eq!(day_number(day("1970-01-02")), 1);
    }

    #[test]
    fn period_keys_follow_the_calendar() {
        assert_eq!(RepeatPolicy::OncePerUser.key(day("2026-11-22")), "once");
        assert_eq!(RepeatPolicy::OncePerPeriod(Period::Week).key(day("2026-11-22")), "2026-W47");
        // ISO weeks: 2027-01-01 is a Friday of week 53 of 2026.
        assert_eq!(RepeatPolicy::OncePerPeriod(Period::Week).key(day("2027-01-01")), "2026-W53");
        assert_eq!(RepeatPolicy::OncePerPeriod(Period::Month).key(day("2026-11-22")), "2026-11");
        assert_eq!(RepeatPolicy::OncePerPeriod(Period::Year).key(day("2026-11-22")), "2026");
    }

    #[test]
    fn actions_start_with_award_and_do_not_repeat() {
        assert_eq!(Actions::parse(vec![]).unwrap(), Actions::standard());
        assert_eq!(Actions::parse(vec![ActionKind::Award]).unwrap().to_column(), "award");
        assert!(Actions::parse(vec![ActionKind::Notify, ActionKind::Award]).is_err());
        assert!(Actions::parse(vec![ActionKind::Award, ActionKind::Award]).is_err());
        assert_eq!(Actions::from_column("award,notify"), Actions::standard());
    }

    #[test]
    fn a_window_includes_its_ends_and_may_be_open_ended() {
        let start: DateTime<Utc> = "2026-11-01T00:00:00Z".parse().unwrap();
        let end: DateTime<Utc> = "2026-11-30T00:00:00Z".parse().unwrap();
        let w = ActiveWindow::new(start, Some(end)).unwrap();
        assert!(w.contains(start) && w.contains(end));
        assert!(!w.contains(end + chrono::TimeDelta::seconds(1)));
        assert!(
            ActiveWindow::new(start, None).unwrap().contains(end + chrono::TimeDelta::days(999))
        );
        assert_eq!(ActiveWindow::new(end, Some(start)).unwrap_err().field, "end_time");
    }
}
