//! The five fields of a spec as bit sets ([`Cron`]), matched against a
//! time zone's calendar: which days can match, and the next firing
//! through daylight-saving gaps and repeats (see the parent module).

use chrono::{
    DateTime, Datelike, Days, LocalResult, Months, NaiveDate, NaiveDateTime, TimeDelta, TimeZone,
    Utc,
};
use chrono_tz::Tz;

use super::error::{one_line, ScheduleError};
use super::field::{Field, DAY_OF_MONTH, DAY_OF_WEEK, HOUR, MINUTE, MONTH};

/// How far ahead a cron schedule is searched: 400 Gregorian years, after
/// which the calendar repeats, so finding nothing means it never fires.
const SEARCH_DAYS: u64 = 146_097;

/// Longest wall-clock gap to step over; Samoa skipped a whole day in 2011.
const MAX_GAP_MINUTES: i64 = 2 * 24 * 60;

/// Days in each month (index 1-12) in a leap year.
const MONTH_DAYS: [u32; 13] = [0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

/// Day-of-week bit for a 7 in the spec, which means Sunday (bit 0).
const SUNDAY_AS_SEVEN: u64 = 1 << 7;

const ALL_HOURS: u64 = (1 << 24) - 1;

/// The five fields as bit sets: bit `n` set means value `n` matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Cron {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    /// Bit 0 is Sunday; a 7 in the spec is stored as 0.
    weekdays: u64,
    /// Vixie: both day fields restricted, so either may match.
    day_or: bool,
    /// Fires at both occurrences of a repeated fall-back hour.
    every_hour: bool,
    tz: Tz,
}

impl Cron {
    pub(super) fn parse(fields: &str, shown: &str, tz: Tz) -> Result<Cron, ScheduleError> {
        let fields: Vec<&str> = fields.split_whitespace().collect();
        let &[minute, hour, day, month, weekday] = fields.as_slice() else {
            return Err(ScheduleError::FieldCount {
                spec: shown.to_owned(),
                found: fields.len(),
            });
        };
        let parse = |field: &Field, text: &str| {
            field.parse(text).map_err(|problem| ScheduleError::Field {
                spec: shown.to_owned(),
                field: field.name,
                problem: one_line(&problem),
            })
        };
        let day = question_as_star(day);
        let weekday = question_as_star(weekday);
        let minutes = parse(&MINUTE, minute)?;
        let hours = parse(&HOUR, hour)?;
        let days = parse(&DAY_OF_MONTH, day)?;
        let months = parse(&MONTH, month)?;
        let mut weekdays = parse(&DAY_OF_WEEK, weekday)?;
        if weekdays & SUNDAY_AS_SEVEN != 0 {
            weekdays = (weekdays & !SUNDAY_AS_SEVEN) | 1;
        }
        Ok(Cron {
            minutes,
            hours,
            days,
            months,
            weekdays,
            day_or: !day.starts_with('*') && !weekday.starts_with('*'),
            every_hour: hours == ALL_HOURS,
            tz,
        })
    }

    /// Explains why no day can match, if none can. Only the month and
    /// day-of-month matter: over 400 years every date falls on every weekday.
    pub(super) fn impossible_days(&self) -> Option<String> {
        if self.day_or {
            // Every month has every weekday, so some day always matches.
            return None;
        }
        let fits = |month: u32| {
            let length = MONTH_DAYS.get(month as usize).copied().unwrap_or(0);
            bits(self.days).any(|day| day <= length)
        };
        if bits(self.months).any(fits) {
            return None;
        }
        let days: Vec<String> = bits(self.days).map(|day| day.to_string()).collect();
        Some(match days.as_slice() {
            [day] => format!("no month in it has day {day}"),
            _ => format!("no month in it has any of days {}", days.join(", ")),
        })
    }

    pub(super) fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let first = after.with_timezone(&self.tz).date_naive();
        let last = first
            .checked_add_days(Days::new(SEARCH_DAYS))
            .unwrap_or(NaiveDate::MAX);
        let mut day = first;
        while day <= last {
            if !has_bit(self.months, day.month()) {
                day = day.with_day(1)?.checked_add_months(Months::new(1))?;
                continue;
            }
            if self.day_matches(day) {
                // Instants of different local days do not interleave, so the
                // first day with a firing holds the answer.
                if let Some(next) = self.first_on(day, after) {
                    return Some(next);
                }
            }
            day = day.succ_opt()?;
        }
        None
    }

    fn day_matches(&self, day: NaiveDate) -> bool {
        let by_date = has_bit(self.days, day.day());
        let by_weekday = has_bit(self.weekdays, day.weekday().num_days_from_sunday());
        if self.day_or {
            by_date || by_weekday
        } else {
            by_date && by_weekday
        }
    }

    /// The earliest firing on a local day that is later than `after`.
    fn first_on(&self, day: NaiveDate, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let minutes = self.minutes;
        bits(self.hours)
            .flat_map(|hour| bits(minutes).map(move |minute| (hour, minute)))
            .filter_map(|(hour, minute)| day.and_hms_opt(hour, minute, 0))
            .flat_map(|local| self.instants(local))
            .filter(|instant| *instant > after)
            .min()
    }

    /// The instants at which a wall-clock time fires (see the parent module on DST).
    fn instants(&self, local: NaiveDateTime) -> impl Iterator<Item = DateTime<Utc>> {
        let (first, second) = match self.tz.from_local_datetime(&local) {
            LocalResult::Single(instant) => (Some(instant), None),
            LocalResult::Ambiguous(earlier, later) => {
                (Some(earlier), self.every_hour.then_some(later))
            }
            LocalResult::None => (self.after_gap(local), None),
        };
        first
            .into_iter()
            .chain(second)
            .map(|instant| instant.with_timezone(&Utc))
    }

    /// The first whole wall-clock minute after `local` that exists.
    fn after_gap(&self, local: NaiveDateTime) -> Option<DateTime<Tz>> {
        (1..=MAX_GAP_MINUTES).find_map(|minutes| {
            let later = local.checked_add_signed(TimeDelta::minutes(minutes))?;
            self.tz.from_local_datetime(&later).earliest()
        })
    }
}

fn question_as_star(text: &str) -> &str {
    if text == "?" {
        "*"
    } else {
        text
    }
}

fn has_bit(bits: u64, value: u32) -> bool {
    bits >> value & 1 == 1
}

fn bits(bits: u64) -> impl Iterator<Item = u32> {
    (0..u64::BITS).filter(move |&value| has_bit(bits, value))
}
