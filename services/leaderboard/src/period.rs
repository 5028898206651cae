//! Reset schedules and the periods they cut time into: which period an instant falls in, what
//! a period id means, and which period came before. Pure arithmetic, no I/O.
//!
//! Every period is `[start, end)` in absolute time; its boundaries are local times of the
//! schedule's time zone:
//! - `never`: one period, [`ALL`], without bounds;
//! - `daily`: local midnight to local midnight, id the local date (`2026-11-30`);
//! - `weekly`: Monday 00:00 local to the next Monday, id the ISO week (`2026-W49`);
//! - `monthly`: the 1st 00:00 local to the next 1st, id `2026-11`;
//! - `cron`: from the latest time the expression matches (in the zone) at or before an instant
//!   to the next one after it, id the start in UTC (`20261130T090000Z`).
//!
//! A local boundary that does not exist (a daylight saving gap, e.g. midnight in
//! America/Santiago on the day clocks go forward) is the first instant after the gap; a local
//! boundary that happens twice (clocks going back) is the earlier instant. A local day the zone
//! skipped entirely (Pacific/Apia, 2011-12-30) is an empty period: no instant falls in it, so
//! it is no period of the schedule.
//!
//! Instants are taken within [`SUPPORTED_FROM`, `SUPPORTED_UNTIL`) (years 1900 to 4899):
//! earlier or later ones are clamped to that range, so the arithmetic never overflows.

use std::str::FromStr;

use chrono::{
    DateTime, Datelike, LocalResult, Months, NaiveDate, NaiveDateTime, NaiveTime, Offset,
    TimeDelta, TimeZone, Timelike, Utc, Weekday,
};
use chrono_tz::Tz;
use croner::{
    Cron,
    parser::{CronParser, Seconds, Year},
};
use ewpm_kit::error::FieldViolation;

/// The one period of a board that never resets.
pub const ALL: &str = "all";

/// The field path of a schedule's cron expression in a board definition.
pub const CRON_FIELD: &str = "definition.reset.cron";
/// The field path of a schedule's time zone in a board definition.
pub const TIME_ZONE_FIELD: &str = "definition.reset.time_zone";

/// The first instant a schedule computes with (1900-01-03T00:00:00Z); earlier ones are
/// clamped to it. Two days into 1900 so that every zone's local date is in 1900 too.
pub const SUPPORTED_FROM: DateTime<Utc> = match DateTime::from_timestamp(-2_208_816_000, 0) {
    Some(t) => t,
    None => DateTime::<Utc>::MIN_UTC,
};
/// The end of the instants a schedule computes with (4899-12-28T00:00:00Z); later ones are
/// clamped to just before it. The cron search gives up at year 5000.
pub const SUPPORTED_UNTIL: DateTime<Utc> = match DateTime::from_timestamp(92_461_564_800, 0) {
    Some(t) => t,
    None => DateTime::<Utc>::MAX_UTC,
};

/// The id format of cron periods: the start in UTC.
const CRON_ID: &str = "%Y%m%dT%H%M%SZ";

/// When a board starts a new period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResetKind {
    /// One period forever.
    Never,
    /// At local midnight.
    Daily,
    /// At Monday 00:00 local.
    Weekly,
    /// At 00:00 local on the 1st.
    Monthly,
    /// Whenever a cron expression matches, in local time.
    Cron,
}

impl ResetKind {
    /// The kind's stored name: `never`, `daily`, `weekly`, `monthly`, `cron`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Never => "never",
            Self::Daily => "daily",
            Self::Weekly => "weekly",
            Self::Monthly => "monthly",
            Self::Cron => "cron",
        }
    }

    /// The kind of a stored name ([`ResetKind::as_str`]).
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "never" => Self::Never,
            "daily" => Self::Daily,
            "weekly" => Self::Weekly,
            "monthly" => Self::Monthly,
            "cron" => Self::Cron,
            _ => return None,
        })
    }
}

/// One period of a schedule: `[start, end)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    /// The period's id (see the module doc), [`ALL`] for the period that never ends.
    pub id: String,
    /// When it begins; `None` only for [`ALL`].
    pub start: Option<DateTime<Utc>>,
    /// When it ends (exclusive); `None` only for [`ALL`].
    pub end: Option<DateTime<Utc>>,
}

impl Period {
    /// The one period of a board that never resets.
    pub fn all() -> Self {
        Self { id: ALL.to_string(), start: None, end: None }
    }

    /// Whether `t` falls in the period.
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.start.is_none_or(|s| s <= t) && self.end.is_none_or(|e| t < e)
    }
}

/// A reset schedule: a kind, its cron expression (for [`ResetKind::Cron`]) and a time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    kind: ResetKind,
    cron_text: String,
    cron: Option<Cron>,
    tz: Tz,
}

impl Schedule {
    /// A schedule, or every violation of its input at once (fields [`CRON_FIELD`] and
    /// [`TIME_ZONE_FIELD`]). An empty time zone is UTC. `cron` is required for
    /// [`ResetKind::Cron`] (five fields: minute hour day-of-month month day-of-week; names like
    /// `MON` and `JAN` allowed) and must be empty for every other kind.
    pub fn new(kind: ResetKind, cron: &str, time_zone: &str) -> Result<Self, Vec<FieldViolation>> {
        let mut violations = Vec::new();
        let tz = match time_zone {
            "" => Some(Tz::UTC),
            name => match Tz::from_str(name) {
                Ok(tz) => Some(tz),
                Err(_) => {
                    violations.push(FieldViolation::new(
                        TIME_ZONE_FIELD,
                        "must be an IANA time zone name such as Europe/Paris (or empty for UTC)",
                    ));
                    None
                }
            },
        };
        let fields: Vec<&str> = cron.split_whitespace().collect();
        let parsed = match kind {
            ResetKind::Cron if fields.is_empty() => {
                violations.push(FieldViolation::new(CRON_FIELD, "is required for a CRON reset"));
                None
            }
            ResetKind::Cron => match parse_cron(&fields) {
                Ok(parsed) => Some(parsed),
                Err(description) => {
                    violations.push(FieldViolation::new(CRON_FIELD, description));
                    None
                }
            },
            _ if !fields.is_empty() => {
                violations.push(FieldViolation::new(
                    CRON_FIELD,
                    "must be empty unless the reset kind is CRON",
                ));
                None
            }
            _ => None,
        };
        match tz {
            Some(tz) if violations.is_empty() => {
                Ok(Self { kind, cron_text: fields.join(" "), cron: parsed, tz })
            }
            _ => Err(violations),
        }
    }

    /// The schedule's kind.
    pub fn kind(&self) -> ResetKind {
        self.kind
    }

    /// The cron expression (fields separated by one space); empty unless the kind is
    /// [`ResetKind::Cron`].
    pub fn cron(&self) -> &str {
        &self.cron_text
    }

    /// The time zone's IANA name, `UTC` when none was given.
    pub fn time_zone(&self) -> &str {
        self.tz.name()
    }

    /// The period containing `t`.
    pub fn period_at(&self, t: DateTime<Utc>) -> Period {
        let t = t.clamp(SUPPORTED_FROM, SUPPORTED_UNTIL - TimeDelta::nanoseconds(1));
        match (self.kind, &self.cron) {
            (ResetKind::Never, _) => Period::all(),
            (ResetKind::Cron, Some(cron)) => self.cron_period(cron, t),
            // `new` always parses the expression of a cron schedule.
            (ResetKind::Cron, None) => Period::all(),
            (kind, _) => self.calendar_period_at(kind, t),
        }
    }

    /// The period whose canonical id is `id`; `None` when `id` is malformed or no period of
    /// this schedule (a period of another kind, a cron start the expression does not match,
    /// an empty period, or one outside the supported years).
    pub fn period(&self, id: &str) -> Option<Period> {
        let candidate = match self.kind {
            ResetKind::Never => return (id == ALL).then(Period::all),
            ResetKind::Cron => {
                let start = NaiveDateTime::parse_from_str(id, CRON_ID).ok()?.and_utc();
                Period { id: id.to_string(), start: Some(start), end: None }
            }
            kind => {
                let key = parse_calendar_id(kind, id)?;
                self.calendar_period(kind, key)
            }
        };
        let start = candidate.start?;
        if !(SUPPORTED_FROM..SUPPORTED_UNTIL).contains(&start) {
            return None;
        }
        // The id is canonical and its period real exactly when the period at its start is it.
        let found = self.period_at(start);
        (found.id == id && found.start == Some(start)).then_some(found)
    }

    /// The period just before `p` (`None` for [`ALL`] and at the start of the supported
    /// years). Periods no instant falls in are skipped.
    pub fn before(&self, p: &Period) -> Option<Period> {
        let start = p.start?;
        if start <= SUPPORTED_FROM {
            return None;
        }
        let previous = self.period_at(start - TimeDelta::nanoseconds(1));
        previous.start.filter(|s| *s < start).map(|_| previous)
    }

    fn cron_period(&self, cron: &Cron, t: DateTime<Utc>) -> Period {
        // Cron matches whole seconds: flooring `t` moves no boundary across it.
        let t = t.with_nanosecond(0).unwrap_or(t);
        let local = t.with_timezone(&self.tz);
        // The search fails only when nothing matches within the years croner searches, which
        // a validated expression cannot do inside the supported years: the bounds of the
        // supported range stand in for the missing matches.
        let start = cron
            .find_previous_occurrence(&local, true)
            .map(|s| s.with_timezone(&Utc))
            .unwrap_or(SUPPORTED_FROM);
        let end = cron
            .find_next_occurrence(&local, false)
            .map(|e| e.with_timezone(&Utc))
            .unwrap_or(SUPPORTED_UNTIL);
        Period { id: start.format(CRON_ID).to_string(), start: Some(start), end: Some(end) }
    }

    fn calendar_period_at(&self, kind: ResetKind, t: DateTime<Utc>) -> Period {
        let local = t.with_timezone(&self.tz).date_naive();
        let mut key = calendar_key(kind, local);
        let mut p = self.calendar_period(kind, key);
        // The local date of `t` names the period, except around a boundary that happened twice
        // (taken at its earlier instant): the repeated hour shows the old date but lies past
        // the boundary. A step or two settles it; gaps and repeats are hours, not days.
        for _ in 0..3 {
            if p.end.is_some_and(|e| t >= e) {
                key = step(kind, key, true);
            } else if p.start.is_some_and(|s| t < s) {
                key = step(kind, key, false);
            } else {
                break;
            }
            p = self.calendar_period(kind, key);
        }
        p
    }

    /// The calendar period that starts on the local date `key` (a day, a Monday, a 1st).
    fn calendar_period(&self, kind: ResetKind, key: NaiveDate) -> Period {
        let id = match kind {
            ResetKind::Weekly => {
                let week = key.iso_week();
                format!("{:04}-W{:02}", week.year(), week.week())
            }
            ResetKind::Monthly => key.format("%Y-%m").to_string(),
            _ => key.format("%Y-%m-%d").to_string(),
        };
        Period {
            id,
            start: Some(local_start(self.tz, key)),
            end: Some(local_start(self.tz, step(kind, key, true))),
        }
    }
}

/// Parses five cron fields (joined again with single spaces).
fn parse_cron(fields: &[&str]) -> Result<Cron, String> {
    const FIVE: &str = "must have five fields: minute hour day-of-month month day-of-week";
    if fields.len() != 5 {
        return Err(format!("{FIVE} (it has {})", fields.len()));
    }
    let parser = CronParser::builder().seconds(Seconds::Disallowed).year(Year::Disallowed).build();
    let cron = parser.parse(&fields.join(" ")).map_err(|err| format!("{FIVE} ({err})"))?;
    // A pattern without a year field that matches at all matches within every 400 years
    // (the Gregorian calendar, weekdays included, repeats every 400 years).
    let from = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).single().unwrap_or(SUPPORTED_FROM);
    match cron.find_next_occurrence(&from, true) {
        Ok(next) if next.year() < 2400 => Ok(cron),
        _ => Err("never matches a date (e.g. 31 February)".to_string()),
    }
}

/// The first date of the calendar period containing the local date `d`.
fn calendar_key(kind: ResetKind, d: NaiveDate) -> NaiveDate {
    match kind {
        ResetKind::Weekly => d - TimeDelta::days(i64::from(d.weekday().num_days_from_monday())),
        ResetKind::Monthly => d.with_day(1).unwrap_or(d),
        _ => d,
    }
}

/// The first date of the next (or previous) calendar period after the one starting at `key`.
fn step(kind: ResetKind, key: NaiveDate, forward: bool) -> NaiveDate {
    let stepped = match (kind, forward) {
        (ResetKind::Weekly, true) => key.checked_add_signed(TimeDelta::days(7)),
        (ResetKind::Weekly, false) => key.checked_sub_signed(TimeDelta::days(7)),
        (ResetKind::Monthly, true) => key.checked_add_months(Months::new(1)),
        (ResetKind::Monthly, false) => key.checked_sub_months(Months::new(1)),
        (_, true) => key.succ_opt(),
        (_, false) => key.pred_opt(),
    };
    // Supported dates are millennia away from chrono's limits.
    stepped.unwrap_or(key)
}

/// The first date of the calendar period a canonical id names (daily `2026-11-30`, weekly
/// `2026-W49`, monthly `2026-11`); `None` if `id` is not canonical.
fn parse_calendar_id(kind: ResetKind, id: &str) -> Option<NaiveDate> {
    let number = |s: &str, len: usize| -> Option<u32> {
        (s.len() == len && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())?
    };
    let year = |s: &str| number(s, 4).and_then(|y| i32::try_from(y).ok());
    match kind {
        ResetKind::Daily => {
            let mut parts = id.split('-');
            let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
            if parts.next().is_some() {
                return None;
            }
            NaiveDate::from_ymd_opt(year(y)?, number(m, 2)?, number(d, 2)?)
        }
        ResetKind::Weekly => {
            let (y, w) = id.split_once("-W")?;
            NaiveDate::from_isoywd_opt(year(y)?, number(w, 2)?, Weekday::Mon)
        }
        ResetKind::Monthly => {
            let (y, m) = id.split_once('-')?;
            NaiveDate::from_ymd_opt(year(y)?, number(m, 2)?, 1)
        }
        ResetKind::Never | ResetKind::Cron => None,
    }
}

/// The instant local midnight starts `date` in `tz`.
fn local_start(tz: Tz, date: NaiveDate) -> DateTime<Utc> {
    resolve(tz, date.and_time(NaiveTime::MIN))
}

/// The instant of the local time `local`: the earlier one when it happens twice, the first
/// instant after the gap when it does not happen at all.
fn resolve(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(a, b) => a.min(b).with_timezone(&Utc),
        LocalResult::None => after_gap(tz, local),
    }
}

/// The first instant after the gap `local` falls in. The earliest local time after `local`
/// that exists is the gap's end, whose instant is the transition itself: found by whole
/// minutes (gaps last an hour or so, a day at most), then to the second (old transitions from
/// local mean time are not on whole minutes).
fn after_gap(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    let exists = |l: NaiveDateTime| tz.from_local_datetime(&l).earliest();
    let mut wall = local;
    for _ in 0..=48 * 60 {
        wall += TimeDelta::minutes(1);
        if exists(wall).is_some() {
            break;
        }
    }
    for _ in 0..60 {
        let earlier = wall - TimeDelta::seconds(1);
        if earlier <= local || exists(earlier).is_none() {
            break;
        }
        wall = earlier;
    }
    // A gap longer than two days exists in no zone; should one appear, read the local time
    // with the offset in effect two days later.
    exists(wall).map(|t| t.with_timezone(&Utc)).unwrap_or_else(|| {
        let offset = tz.offset_from_utc_datetime(&(local + TimeDelta::days(2))).fix();
        let utc = local - TimeDelta::seconds(i64::from(offset.local_minus_utc()));
        DateTime::<Utc>::from_naive_utc_and_offset(utc, Utc)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn schedule(kind: ResetKind, cron: &str, tz: &str) -> Schedule {
        Schedule::new(kind, cron, tz).unwrap()
    }

    fn period(id: &str, start: &str, end: &str) -> Period {
        Period { id: id.to_string(), start: Some(utc(start)), end: Some(utc(end)) }
    }

    /// Walks `n` periods back from the one at `t`, checking that they tile time and
    /// round-trip through their ids.
    fn check_chain(s: &Schedule, t: DateTime<Utc>, n: usize) {
        let mut p = s.period_at(t);
        assert!(p.contains(t), "{p:?} contains {t}");
        for _ in 0..n {
            assert_eq!(s.period(&p.id), Some(p.clone()), "round trip of {}", p.id);
            assert_eq!(s.period_at(p.start.unwrap()), p);
            assert_eq!(s.period_at(p.end.unwrap() - TimeDelta::nanoseconds(1)), p);
            let before = s.before(&p).unwrap();
            assert_eq!(before.end, p.start, "{before:?} ends where {p:?} starts");
            assert!(before.start < before.end);
            p = before;
        }
    }

    #[test]
    fn a_board_that_never_resets_has_one_period() {
        let s = schedule(ResetKind::Never, "", "");
        assert_eq!(s.period_at(utc("2026-11-30T12:00:00Z")), Period::all());
        assert_eq!(s.period_at(DateTime::<Utc>::MIN_UTC), Period::all());
        assert_eq!(s.period(ALL), Some(Period::all()));
        assert_eq!(s.period("2026-11-30"), None);
        assert_eq!(s.before(&Period::all()), None);
        assert_eq!(s.time_zone(), "UTC");
        assert_eq!(s.cron(), "");
    }

    #[test]
    fn a_daily_period_runs_from_local_midnight_to_local_midnight() {
        let s = schedule(ResetKind::Daily, "", "Europe/Paris");
        let expected = period("2026-11-30", "2026-11-29T23:00:00Z", "2026-11-30T23:00:00Z");
        assert_eq!(s.period_at(utc("2026-11-29T23:00:00Z")), expected);
        assert_eq!(s.period_at(utc("2026-11-30T22:59:59.999999Z")), expected);
        assert_eq!(s.period_at(utc("2026-11-30T23:00:00Z")).id, "2026-12-01");
        assert_eq!(s.period("2026-11-30"), Some(expected));
        check_chain(&s, utc("2026-11-30T12:00:00Z"), 40);
    }

    #[test]
    fn a_daily_period_in_utc_is_the_utc_date() {
        let s = schedule(ResetKind::Daily, "", "");
        assert_eq!(
            s.period_at(utc("2024-02-29T00:00:00Z")),
            period("2024-02-29", "2024-02-29T00:00:00Z", "2024-03-01T00:00:00Z")
        );
    }

    #[test]
    fn paris_days_around_the_clock_changes_last_23_and_25_hours() {
        let s = schedule(ResetKind::Daily, "", "Europe/Paris");
        // Last Sunday of March 2026: 02:00 CET → 03:00 CEST.
        assert_eq!(
            s.period_at(utc("2026-03-29T12:00:00Z")),
            period("2026-03-29", "2026-03-28T23:00:00Z", "2026-03-29T22:00:00Z")
        );
        // Last Sunday of October 2026: 03:00 CEST → 02:00 CET.
        assert_eq!(
            s.period_at(utc("2026-10-25T12:00:00Z")),
            period("2026-10-25", "2026-10-24T22:00:00Z", "2026-10-25T23:00:00Z")
        );
        // The repeated hour (02:00–03:00 twice) belongs to the same day.
        assert_eq!(s.period_at(utc("2026-10-25T00:30:00Z")).id, "2026-10-25");
        assert_eq!(s.period_at(utc("2026-10-25T01:30:00Z")).id, "2026-10-25");
        check_chain(&s, utc("2026-11-02T00:00:00Z"), 400);
    }

    #[test]
    fn a_day_whose_midnight_does_not_exist_starts_when_the_gap_ends() {
        // America/Santiago: on 2026-09-06 clocks go from 00:00 (-04) to 01:00 (-03).
        let s = schedule(ResetKind::Daily, "", "America/Santiago");
        assert_eq!(
            s.period_at(utc("2026-09-06T12:00:00Z")),
            period("2026-09-06", "2026-09-06T04:00:00Z", "2026-09-07T03:00:00Z")
        );
        assert_eq!(
            s.period_at(utc("2026-09-06T03:59:59Z")),
            period("2026-09-05", "2026-09-05T04:00:00Z", "2026-09-06T04:00:00Z")
        );
        check_chain(&s, utc("2026-09-10T00:00:00Z"), 30);
        // And in April the hour 23:00–00:00 on the 4th happens twice: the 5th starts once.
        assert_eq!(
            s.period_at(utc("2026-04-05T12:00:00Z")),
            period("2026-04-05", "2026-04-05T04:00:00Z", "2026-04-06T04:00:00Z")
        );
        check_chain(&s, utc("2026-04-10T00:00:00Z"), 30);
    }

    #[test]
    fn a_midnight_that_happens_twice_starts_the_day_at_its_first_instant() {
        // America/Havana: on 2026-11-01 clocks go from 01:00 (-04) back to 00:00 (-05), so
        // 00:00–01:00 happens twice; the day starts at the first 00:00.
        let s = schedule(ResetKind::Daily, "", "America/Havana");
        let day = period("2026-11-01", "2026-11-01T04:00:00Z", "2026-11-02T05:00:00Z");
        assert_eq!(s.period_at(utc("2026-11-01T04:30:00Z")), day);
        assert_eq!(s.period_at(utc("2026-11-01T05:30:00Z")), day);
        assert_eq!(s.period_at(utc("2026-11-01T03:59:59Z")).id, "2026-10-31");
        check_chain(&s, utc("2026-11-05T00:00:00Z"), 30);
    }

    #[test]
    fn a_day_the_zone_skipped_is_no_period() {
        // Pacific/Apia went from 2011-12-29 23:59:59 (-10) to 2011-12-31 00:00 (+14).
        let s = schedule(ResetKind::Daily, "", "Pacific/Apia");
        let dec31 = s.period_at(utc("2011-12-30T10:00:00Z"));
        assert_eq!(dec31.id, "2011-12-31");
        assert_eq!(s.before(&dec31).unwrap().id, "2011-12-29");
        assert_eq!(s.period("2011-12-30"), None);
        check_chain(&s, utc("2012-01-05T00:00:00Z"), 20);
    }

    #[test]
    fn weeks_start_on_monday_and_are_named_by_iso_week() {
        let s = schedule(ResetKind::Weekly, "", "Europe/Paris");
        assert_eq!(
            s.period_at(utc("2026-12-02T12:00:00Z")),
            period("2026-W49", "2026-11-29T23:00:00Z", "2026-12-06T23:00:00Z")
        );
        // Sunday 23:30 local is still the old week; Monday 00:00 local starts the new one.
        assert_eq!(s.period_at(utc("2026-12-06T22:30:00Z")).id, "2026-W49");
        assert_eq!(s.period_at(utc("2026-12-06T23:00:00Z")).id, "2026-W50");
        check_chain(&s, utc("2027-02-01T00:00:00Z"), 120);
    }

    #[test]
    fn week_53_and_week_1_cross_the_new_year() {
        let s = schedule(ResetKind::Weekly, "", "");
        // 2026 has 53 ISO weeks; 2027-W01 starts on Monday 2027-01-04.
        assert_eq!(
            s.period_at(utc("2027-01-01T12:00:00Z")),
            period("2026-W53", "2026-12-28T00:00:00Z", "2027-01-04T00:00:00Z")
        );
        assert_eq!(s.period_at(utc("2027-01-04T00:00:00Z")).id, "2027-W01");
        // 2025 has 52: its last days are in 2026-W01.
        assert_eq!(
            s.period_at(utc("2025-12-31T12:00:00Z")),
            period("2026-W01", "2025-12-29T00:00:00Z", "2026-01-05T00:00:00Z")
        );
        assert_eq!(s.period("2025-W53"), None);
        assert_eq!(s.period("2025-W52").unwrap().end, Some(utc("2025-12-29T00:00:00Z")));
        let w53 = s.period("2026-W53").unwrap();
        assert_eq!(s.before(&s.period("2027-W01").unwrap()), Some(w53));
    }

    #[test]
    fn months_start_on_the_first_at_local_midnight() {
        let s = schedule(ResetKind::Monthly, "", "America/New_York");
        assert_eq!(
            s.period_at(utc("2026-11-15T12:00:00Z")),
            period("2026-11", "2026-11-01T04:00:00Z", "2026-12-01T05:00:00Z")
        );
        assert_eq!(s.period_at(utc("2026-12-01T04:59:59Z")).id, "2026-11");
        assert_eq!(
            s.before(&s.period("2026-01").unwrap()).unwrap(),
            period("2025-12", "2025-12-01T05:00:00Z", "2026-01-01T05:00:00Z")
        );
        check_chain(&s, utc("2026-11-15T12:00:00Z"), 60);
    }

    #[test]
    fn a_cron_period_runs_from_a_match_to_the_next() {
        let s = schedule(ResetKind::Cron, "0 9 * * MON", "Europe/Paris");
        assert_eq!(s.cron(), "0 9 * * MON");
        assert_eq!(
            s.period_at(utc("2026-12-02T12:00:00Z")),
            period("20261130T080000Z", "2026-11-30T08:00:00Z", "2026-12-07T08:00:00Z")
        );
        // The match itself starts a period.
        assert_eq!(s.period_at(utc("2026-12-07T08:00:00Z")).id, "20261207T080000Z");
        assert_eq!(s.period_at(utc("2026-12-07T07:59:59.999Z")).id, "20261130T080000Z");
        // Across the March change the wall clock stays at 09:00.
        assert_eq!(
            s.period_at(utc("2026-03-31T12:00:00Z")),
            period("20260330T070000Z", "2026-03-30T07:00:00Z", "2026-04-06T07:00:00Z")
        );
        check_chain(&s, utc("2026-12-02T12:00:00Z"), 60);
    }

    #[test]
    fn a_cron_time_in_a_gap_fires_when_the_gap_ends_and_a_repeated_one_fires_once() {
        let s = schedule(ResetKind::Cron, "30 2 * * *", "Europe/Paris");
        // 2026-03-29 02:30 does not exist in Paris: that day's period starts at 03:00 CEST.
        assert_eq!(
            s.period_at(utc("2026-03-29T12:00:00Z")),
            period("20260329T010000Z", "2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z")
        );
        // 2026-10-25 02:30 happens twice: the first one.
        assert_eq!(
            s.period_at(utc("2026-10-25T12:00:00Z")),
            period("20261025T003000Z", "2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z")
        );
        check_chain(&s, utc("2026-04-05T00:00:00Z"), 20);
        check_chain(&s, utc("2026-11-01T00:00:00Z"), 20);
        let midnight = schedule(ResetKind::Cron, "0 0 * * *", "America/Santiago");
        assert_eq!(midnight.period_at(utc("2026-09-06T12:00:00Z")).id, "20260906T040000Z");
        check_chain(&midnight, utc("2026-09-10T00:00:00Z"), 20);
    }

    #[test]
    fn every_minute_and_yearly_crons_are_quick() {
        let started = std::time::Instant::now();
        let minutes = schedule(ResetKind::Cron, "* * * * *", "Europe/Paris");
        assert_eq!(
            minutes.period_at(utc("2026-10-25T01:30:30Z")),
            period("20261025T013000Z", "2026-10-25T01:30:00Z", "2026-10-25T01:31:00Z")
        );
        check_chain(&minutes, utc("2026-10-25T02:10:00Z"), 200);
        let yearly = schedule(ResetKind::Cron, "0 0 1 1 *", "Asia/Tokyo");
        assert_eq!(
            yearly.period_at(utc("2026-06-01T00:00:00Z")),
            period("20251231T150000Z", "2025-12-31T15:00:00Z", "2026-12-31T15:00:00Z")
        );
        check_chain(&yearly, utc("2026-06-01T00:00:00Z"), 50);
        let leap = schedule(ResetKind::Cron, "0 12 29 2 *", "");
        assert_eq!(
            leap.period_at(utc("2026-06-01T00:00:00Z")),
            period("20240229T120000Z", "2024-02-29T12:00:00Z", "2028-02-29T12:00:00Z")
        );
        check_chain(&leap, utc("2026-06-01T00:00:00Z"), 10);
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "{:?}", started.elapsed());
    }

    #[test]
    fn periods_tile_time_across_two_years_of_clock_changes() {
        let schedules = [
            schedule(ResetKind::Daily, "", "America/Santiago"),
            schedule(ResetKind::Weekly, "", "Australia/Lord_Howe"),
            schedule(ResetKind::Monthly, "", "America/Havana"),
            schedule(ResetKind::Cron, "*/30 1-3 * * *", "Europe/Paris"),
            schedule(ResetKind::Cron, "15 0 * * 0", "America/Santiago"),
        ];
        for s in &schedules {
            let mut t = utc("2025-01-01T00:00:00Z");
            while t < utc("2027-01-01T00:00:00Z") {
                let p = s.period_at(t);
                assert!(p.contains(t), "{p:?} contains {t} ({s:?})");
                let next = s.period_at(p.end.unwrap());
                assert_eq!(next.start, p.end, "{next:?} follows {p:?}");
                assert_eq!(s.before(&next), Some(p.clone()));
                assert_eq!(s.period(&p.id), Some(p));
                t += TimeDelta::minutes(7 * 60 + 13);
            }
        }
    }

    #[test]
    fn cron_names_and_lists_are_understood() {
        let s = schedule(ResetKind::Cron, "0 18 * JAN,jul fri-sat", "");
        assert_eq!(s.period_at(utc("2026-01-03T19:00:00Z")).id, "20260103T180000Z");
        assert_eq!(s.period_at(utc("2026-01-03T19:00:00Z")).end, Some(utc("2026-01-09T18:00:00Z")));
        // Day of month and day of week both given: either matches, as in cron.
        let s = schedule(ResetKind::Cron, "0 0 13 * FRI", "");
        assert_eq!(s.period_at(utc("2026-02-12T00:00:00Z")).end, Some(utc("2026-02-13T00:00:00Z")));
        assert_eq!(s.period_at(utc("2026-02-14T00:00:00Z")).end, Some(utc("2026-02-20T00:00:00Z")));
    }

    #[test]
    fn ids_of_other_kinds_or_shapes_are_no_periods() {
        let daily = schedule(ResetKind::Daily, "", "");
        for bad in [
            "",
            "all",
            "2026-11",
            "2026-W49",
            "2026-1-30",
            "2026-11-31",
            "26-11-30",
            "2026-11-30 ",
            "+2026-11-30",
            "20261130T000000Z",
        ] {
            assert_eq!(daily.period(bad), None, "{bad:?}");
        }
        let weekly = schedule(ResetKind::Weekly, "", "");
        for bad in ["2026-W1", "2026-W00", "2026-W54", "2026-w49", "2026-11-30", "2026-W49-1"] {
            assert_eq!(weekly.period(bad), None, "{bad:?}");
        }
        let monthly = schedule(ResetKind::Monthly, "", "");
        for bad in ["2026-13", "2026-00", "2026-1", "2026-11-01", "1899-12", "4900-01"] {
            assert_eq!(monthly.period(bad), None, "{bad:?}");
        }
        let cron = schedule(ResetKind::Cron, "0 9 * * MON", "Europe/Paris");
        for bad in ["20261130T090000Z", "20261201T080000Z", "20261130T0800Z", "2026-11-30", "all"] {
            assert_eq!(cron.period(bad), None, "{bad:?}");
        }
        assert!(cron.period("20261130T080000Z").is_some());
        let never = schedule(ResetKind::Never, "", "");
        assert_eq!(never.period("ALL"), None);
    }

    #[test]
    fn instants_outside_the_supported_years_are_clamped() {
        let s = schedule(ResetKind::Daily, "", "");
        let first = s.period_at(DateTime::<Utc>::MIN_UTC);
        assert_eq!(first.id, "1900-01-03");
        assert_eq!(s.before(&first), None);
        assert_eq!(s.period("1900-01-02"), None);
        assert_eq!(s.period_at(DateTime::<Utc>::MAX_UTC).id, "4899-12-27");
        assert_eq!(s.period("4899-12-28"), None);
        let cron = schedule(ResetKind::Cron, "0 0 1 1 *", "");
        assert!(cron.period_at(DateTime::<Utc>::MAX_UTC).start.is_some());
        assert!(cron.period_at(DateTime::<Utc>::MIN_UTC).start.is_some());
    }

    fn violations(kind: ResetKind, cron: &str, tz: &str) -> Vec<(String, String)> {
        Schedule::new(kind, cron, tz)
            .unwrap_err()
            .into_iter()
            .map(|v| (v.field, v.description))
            .collect()
    }

    #[test]
    fn unknown_time_zones_are_rejected() {
        for tz in ["Europe/Atlantis", "europe/paris", "+02:00", " UTC"] {
            assert_eq!(
                violations(ResetKind::Daily, "", tz),
                vec![(
                    TIME_ZONE_FIELD.to_string(),
                    "must be an IANA time zone name such as Europe/Paris (or empty for UTC)"
                        .to_string()
                )],
                "{tz:?}"
            );
        }
        assert_eq!(schedule(ResetKind::Daily, "", "Europe/Paris").time_zone(), "Europe/Paris");
    }

    #[test]
    fn malformed_crons_are_rejected() {
        for cron in [
            "0 9 * *",
            "0 0 9 * * MON",
            "60 * * * *",
            "* 24 * * *",
            "* * 32 * *",
            "* * * 13 *",
            "* * * * 8",
            "@daily",
            "0 9 * * FUNDAY",
            "a b c d e",
        ] {
            let v = violations(ResetKind::Cron, cron, "");
            assert_eq!(v.len(), 1, "{cron:?}: {v:?}");
            assert_eq!(v[0].0, CRON_FIELD, "{cron:?}");
            assert!(v[0].1.starts_with("must have five fields"), "{cron:?}: {v:?}");
        }
        assert_eq!(
            violations(ResetKind::Cron, "0 0 31 2 *", ""),
            vec![(CRON_FIELD.to_string(), "never matches a date (e.g. 31 February)".to_string())]
        );
    }

    #[test]
    fn a_cron_is_required_for_cron_resets_and_refused_for_others() {
        assert_eq!(
            violations(ResetKind::Cron, " ", ""),
            vec![(CRON_FIELD.to_string(), "is required for a CRON reset".to_string())]
        );
        for kind in [ResetKind::Never, ResetKind::Daily, ResetKind::Weekly, ResetKind::Monthly] {
            assert_eq!(
                violations(kind, "0 9 * * MON", ""),
                vec![(
                    CRON_FIELD.to_string(),
                    "must be empty unless the reset kind is CRON".to_string()
                )]
            );
        }
    }

    #[test]
    fn every_bad_field_is_reported_at_once() {
        let v = violations(ResetKind::Cron, "", "Mars/Olympus");
        assert_eq!(
            v.iter().map(|(f, _)| f.as_str()).collect::<Vec<_>>(),
            [TIME_ZONE_FIELD, CRON_FIELD]
        );
    }

    #[test]
    fn reset_kinds_round_trip_their_stored_names() {
        for kind in [
            ResetKind::Never,
            ResetKind::Daily,
            ResetKind::Weekly,
            ResetKind::Monthly,
            ResetKind::Cron,
        ] {
            assert_eq!(ResetKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(ResetKind::parse("hourly"), None);
    }
}
