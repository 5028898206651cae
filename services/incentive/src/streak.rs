//! The consecutive-days rule as a pure state machine over calendar days.
//!
//! A user's streak for one employer incentive is the latest counted day, one bit per day of
//! the 64 days up to it, and the last day an award consumed. Recording a day:
//!
//! - several logs on one day count once (the day's bit is set already);
//! - a later day moves the window forward; a missed day leaves a gap, which ends a run;
//! - an earlier day within `backfill` days of the latest lands on its own day (it may close
//!   a gap); an earlier one is ignored;
//! - the rule fires on the day a run of unconsumed days reaches N, and that run is consumed
//!   (the next award needs N more days).
//!
//! Days are calendar days of the employer's time zone, computed before they get here, so a
//! daylight-saving change (a 23- or 25-hour day) cannot split or double a day. Recording a
//! day twice changes nothing, which is what lets redelivered events land safely. N days that
//! arrive in any order fire once, on the last of them. A fired run is consumed, so where more
//! than N consecutive days arrive out of order the award may fire on a later day of the run
//! than it would have in order (never twice, never not at all), and days older than a
//! consumed run never earn retroactively.
//!
//! Bounds: with N ≤ 32 and a backfill of at most 31 days, every run that a new day can join
//! lies inside the 64-day window (an unconsumed run is always shorter than N).

use serde::{Deserialize, Serialize};

/// Days the window keeps.
pub const WINDOW_DAYS: i32 = 64;

/// One user's streak for one employer incentive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Streak {
    /// The latest counted day (a day number, see [`crate::domain::day_number`]).
    pub last_day: i32,
    /// Bit `i` set: day `last_day - i` was counted. Zero: nothing counted yet.
    pub days: u64,
    /// Days up to this one were consumed by an award.
    pub consumed_through: Option<i32>,
}

/// What recording a day did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// The day was new; the rule fired on these days (usually none, at most a few).
    Counted {
        /// Days on which a run reached N.
        fired: Vec<i32>,
    },
    /// The day was counted already.
    Duplicate,
    /// The day is older than the backfill window allows: ignored.
    OutsideWindow,
}

impl Streak {
    /// Whether nothing was counted yet.
    pub fn is_empty(&self) -> bool {
        self.days == 0
    }

    fn has(&self, day: i32) -> bool {
        let offset = self.last_day - day;
        (0..WINDOW_DAYS).contains(&offset) && self.days & (1u64 << offset) != 0
    }

    /// Records activity on `day` for a rule of `target` consecutive days, accepting earlier
    /// days up to `backfill` days before the latest.
    pub fn record(&mut self, day: i32, target: u32, backfill: u32) -> Recorded {
        if self.is_empty() {
            self.last_day = day;
            self.days = 1;
        } else if day > self.last_day {
            let shift = day - self.last_day;
            self.days = if shift >= WINDOW_DAYS { 0 } else { self.days << shift };
            self.days |= 1;
            self.last_day = day;
        } else {
            let offset = self.last_day - day;
            if offset > backfill.min(WINDOW_DAYS as u32 - 1) as i32 {
                return Recorded::OutsideWindow;
            }
            if self.has(day) {
                return Recorded::Duplicate;
            }
            self.days |= 1u64 << offset;
        }
        if self.consumed_through.is_some_and(|c| day <= c) {
            // A gap closed inside what an award already consumed: nothing more to earn.
            return Recorded::Counted { fired: Vec::new() };
        }
        let target = target.max(1);
        let mut fired = Vec::new();
        let oldest = self.last_day - (WINDOW_DAYS - 1);
        let from = self.consumed_through.map_or(oldest, |c| (c + 1).max(oldest));
        let mut run = 0;
        for d in from..=self.last_day {
            if self.has(d) {
                run += 1;
                if run == target {
                    fired.push(d);
                    self.consumed_through = Some(d);
                    run = 0;
                }
            } else {
                run = 0;
            }
        }
        Recorded::Counted { fired }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, NaiveDate, Utc};

    use super::*;
    use crate::domain::{Zone, day_number};

    const FIVE: u32 = 5;
    const BACKFILL: u32 = 7;

    fn d(s: &str) -> i32 {
        day_number(s.parse::<NaiveDate>().unwrap())
    }

    /// Records `days` in order; the days the rule fired on.
    fn fired_on(streak: &mut Streak, days: &[&str]) -> Vec<i32> {
        days.iter()
            .flat_map(|day| match streak.record(d(day), FIVE, BACKFILL) {
                Recorded::Counted { fired } => fired,
                _ => Vec::new(),
            })
            .collect()
    }

    /// The local day of an instant in `zone`.
    fn local(zone: &str, at: &str) -> i32 {
        day_number(Zone::parse(zone).unwrap().day_of(at.parse::<DateTime<Utc>>().unwrap()))
    }

    #[test]
    fn five_consecutive_days_fire_on_the_fifth() {
        let mut s = Streak::default();
        let fired = fired_on(&mut s, &["2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04"]);
        assert_eq!(fired, Vec::<i32>::new());
        assert_eq!(fired_on(&mut s, &["2026-11-05"]), vec![d("2026-11-05")]);
    }

    #[test]
    fn several_logs_on_one_day_count_once() {
        let mut s = Streak::default();
        assert_eq!(s.record(d("2026-11-01"), FIVE, BACKFILL), Recorded::Counted { fired: vec![] });
        for _ in 0..4 {
            assert_eq!(s.record(d("2026-11-01"), FIVE, BACKFILL), Recorded::Duplicate);
        }
        assert_eq!(s.days, 1);
    }

    #[test]
    fn a_missed_day_starts_the_streak_over() {
        let mut s = Streak::default();
        let fired = fired_on(
            &mut s,
            &["2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04", "2026-11-06", "2026-11-07"],
        );
        assert_eq!(fired, Vec::<i32>::new());
        let fired = fired_on(&mut s, &["2026-11-08", "2026-11-09", "2026-11-10"]);
        assert_eq!(fired, vec![d("2026-11-10")]);
    }

    #[test]
    fn the_next_award_needs_five_more_days() {
        let mut s = Streak::default();
        let days: Vec<String> = (1..=10).map(|i| format!("2026-11-{i:02}")).collect();
        let days: Vec<&str> = days.iter().map(String::as_str).collect();
        assert_eq!(fired_on(&mut s, &days), vec![d("2026-11-05"), d("2026-11-10")]);
    }

    #[test]
    fn a_late_day_within_the_window_closes_the_gap_and_fires_on_the_fifth_day() {
        let mut s = Streak::default();
        let fired = fired_on(
            &mut s,
            &["2026-11-01", "2026-11-02", "2026-11-04", "2026-11-05", "2026-11-06"],
        );
        assert_eq!(fired, Vec::<i32>::new());
        // The 3rd arrives late: the run 1st..6th has reached five on the 5th.
        assert_eq!(fired_on(&mut s, &["2026-11-03"]), vec![d("2026-11-05")]);
        // The 6th is left over, counting towards the next award.
        assert_eq!(
            fired_on(&mut s, &["2026-11-07", "2026-11-08", "2026-11-09"]),
            Vec::<i32>::new()
        );
        assert_eq!(fired_on(&mut s, &["2026-11-10"]), vec![d("2026-11-10")]);
    }

    /// Every ordering of `items`.
    fn permutations(items: &[i32]) -> Vec<Vec<i32>> {
        if items.len() <= 1 {
            return vec![items.to_vec()];
        }
        let mut out = Vec::new();
        for (i, first) in items.iter().enumerate() {
            let mut rest = items.to_vec();
            rest.remove(i);
            for mut p in permutations(&rest) {
                p.insert(0, *first);
                out.push(p);
            }
        }
        out
    }

    #[test]
    fn five_days_arriving_in_any_order_fire_once_on_the_last_of_them() {
        let days: Vec<i32> = (1..=5).map(|i| d(&format!("2026-11-{i:02}"))).collect();
        let orders = permutations(&days);
        assert_eq!(orders.len(), 120);
        for order in orders {
            let mut s = Streak::default();
            let fired: Vec<i32> = order
                .iter()
                .flat_map(|day| match s.record(*day, FIVE, BACKFILL) {
                    Recorded::Counted { fired } => fired,
                    _ => Vec::new(),
                })
                .collect();
            assert_eq!(fired, vec![d("2026-11-05")], "order {order:?}");
        }
    }

    #[test]
    fn a_longer_run_arriving_late_fires_once_where_it_first_reached_five() {
        let mut s = Streak::default();
        let fired = fired_on(
            &mut s,
            &["2026-11-11", "2026-11-12", "2026-11-13", "2026-11-14", "2026-11-15"],
        );
        assert_eq!(fired, vec![d("2026-11-15")]);
        // The 10th arrives late: in order the award would have fired on the 14th; it fired
        // on the 15th already and does not fire again.
        assert_eq!(s.record(d("2026-11-10"), FIVE, BACKFILL), Recorded::Counted { fired: vec![] });
    }

    #[test]
    fn a_day_older_than_the_backfill_window_is_ignored() {
        let mut s = Streak::default();
        fired_on(&mut s, &["2026-11-20"]);
        assert_eq!(s.record(d("2026-11-12"), FIVE, BACKFILL), Recorded::OutsideWindow);
        assert_eq!(s.record(d("2026-11-13"), FIVE, BACKFILL), Recorded::Counted { fired: vec![] });
        assert_eq!(s.days, 1 | 1 << 7);
    }

    #[test]
    fn a_late_day_inside_a_consumed_run_earns_nothing_more() {
        let mut s = Streak::default();
        let fired = fired_on(
            &mut s,
            &["2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04", "2026-11-05"],
        );
        assert_eq!(fired, vec![d("2026-11-05")]);
        // Days before the consumed run: recorded, but they cannot build a run past it.
        assert_eq!(
            fired_on(&mut s, &["2026-10-31", "2026-10-30", "2026-10-29", "2026-10-28"]),
            Vec::<i32>::new()
        );
    }

    #[test]
    fn days_are_calendar_days_of_the_employer_time_zone() {
        // 23:30 and 00:30 in Berlin, an hour apart: two consecutive days there, one day in UTC
        // (22:30 and 23:30 UTC).
        let late = local("Europe/Berlin", "2026-11-01T22:30:00Z");
        let early = local("Europe/Berlin", "2026-11-01T23:30:00Z");
        assert_eq!(early - late, 1);
        assert_eq!(local("UTC", "2026-11-01T22:30:00Z"), local("UTC", "2026-11-01T23:30:00Z"));
        let mut s = Streak::default();
        assert_eq!(s.record(late, FIVE, BACKFILL), Recorded::Counted { fired: vec![] });
        assert_eq!(s.record(early, FIVE, BACKFILL), Recorded::Counted { fired: vec![] });
        assert_eq!(s.days, 0b11);
    }

    #[test]
    fn a_daylight_saving_change_neither_splits_nor_doubles_a_day() {
        let ny = "America/New_York";
        // 2026-11-01 is 25 hours long in New York (clocks go back at 02:00 EDT): 00:30 EDT and
        // 23:30 EST are 24 hours apart and still the same day.
        assert_eq!(local(ny, "2026-11-01T04:30:00Z"), local(ny, "2026-11-02T04:30:00Z"));
        // 2026-03-08 is 23 hours long (clocks go forward at 02:00 EST): 23:30 EST on the 7th
        // and 23:30 EDT on the 8th are 23 hours apart and consecutive days.
        assert_eq!(local(ny, "2026-03-09T03:30:00Z") - local(ny, "2026-03-08T04:30:00Z"), 1);
        // A five-day streak across the autumn change: one log a day at 21:00 local time.
        let mut s = Streak::default();
        let instants = [
            "2026-10-30T01:00:00Z", // Oct 29 21:00 EDT
            "2026-10-31T01:00:00Z", // Oct 30
            "2026-11-01T01:00:00Z", // Oct 31
            "2026-11-02T02:00:00Z", // Nov 1 21:00 EST
            "2026-11-03T02:00:00Z", // Nov 2
        ];
        let fired: Vec<i32> = instants
            .iter()
            .flat_map(|at| match s.record(local(ny, at), FIVE, BACKFILL) {
                Recorded::Counted { fired } => fired,
                other => panic!("{at}: {other:?}"),
            })
            .collect();
        assert_eq!(fired, vec![d("2026-11-02")]);
    }

    #[test]
    fn a_long_gap_clears_the_window() {
        let mut s = Streak::default();
        fired_on(&mut s, &["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"]);
        let fired = fired_on(&mut s, &["2026-06-01"]);
        assert_eq!(fired, Vec::<i32>::new());
        assert_eq!(s, Streak { last_day: d("2026-06-01"), days: 1, consumed_through: None });
    }
}
