//! Cron schedules: parsing a spec and finding when it next fires.
//!
//! # Dialect
//!
//! A spec is either five whitespace-separated fields or a macro.
//!
//! | field        | values                                        |
//! | ------------ | --------------------------------------------- |
//! | minute       | 0-59                                          |
//! | hour         | 0-23                                          |
//! | day-of-month | 1-31, or `?` for `*`                          |
//! | month        | 1-12 or `jan`-`dec`                           |
//! | day-of-week  | 0-7 (0 and 7 are Sunday) or `sun`-`sat`, or `?` for `*` |
//!
//! Each field is a comma list of elements; an element is `*`, a value, a
//! range `a-b`, or one of those with a step: `*/n`, `a-b/n`, or `a/n`
//! (from `a` to the end of the field, as robfig/cron accepts). Names are
//! case-insensitive. In day-of-week, `*/n` and `a/n` run up to Saturday (6).
//!
//! Days follow Vixie cron: when the day-of-month or the day-of-week field
//! starts with `*` (which includes `*/2` and `?`), a day must match both;
//! when both are restricted, a day matching either is enough. So
//! `0 0 13 * 5` fires on every Friday and on every 13th.
//!
//! Macros: `@yearly` and `@annually` (`0 0 1 1 *`), `@monthly`
//! (`0 0 1 * *`), `@weekly` (`0 0 * * 0`), `@daily` and `@midnight`
//! (`0 0 * * *`), `@hourly` (`0 * * * *`), and `@every <duration>` with a
//! Go-style duration such as `90s`, `2m` or `1h30m` (see [`parse_duration`]).
//! `@every` fires at the multiples of its interval counted from the Unix
//! epoch, so `@every 2m` fires at even minutes and `@every 1h` on the UTC
//! hour, whatever the time zone. `@reboot` is refused: a worker service is
//! what runs at start.
//!
//! # Time zones and daylight saving
//!
//! Fields are matched against the wall clock of the schedule's IANA time
//! zone (UTC by default). A wall-clock time skipped by a spring-forward
//! change fires at the first instant after the gap, and all the times in
//! one gap share that single firing. A time repeated by a fall-back change
//! fires once, at its first occurrence, unless the hour field covers every
//! hour: such a job runs more often than hourly and so fires at both, as in
//! Vixie cron.

use std::str::FromStr;
use std::time::Duration;

use chrono::{
    DateTime, Datelike, Days, LocalResult, Months, NaiveDate, NaiveDateTime, TimeDelta, TimeZone,
    Utc,
};
use chrono_tz::Tz;

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

const DURATION_EXAMPLES: &str = "use e.g. 90s, 2m, 1h30m";

/// A parsed schedule that can tell when it next fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    spec: String,
    rule: Rule,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    Cron(Cron),
    /// Interval in whole seconds, always at least 1.
    Every(i64),
}

/// The five fields as bit sets: bit `n` set means value `n` matches.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cron {
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

/// Why a spec or time zone was refused. Each message is one line naming
/// the spec, the bad part, and how to fix it.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum ScheduleError {
    /// The spec is neither five fields nor a macro.
    #[error(
        "invalid schedule `{spec}`: expected 5 fields (minute hour day-of-month month \
         day-of-week) or a macro like @hourly or @every 2m, got {found}"
    )]
    FieldCount {
        /// The spec as written.
        spec: String,
        /// How many fields it has.
        found: usize,
    },
    /// One of the five fields is malformed or out of range.
    #[error("invalid schedule `{spec}`: {field} {problem}")]
    Field {
        /// The spec as written.
        spec: String,
        /// The field's name, e.g. `day-of-week`.
        field: &'static str,
        /// What is wrong with it, quoting the bad part.
        problem: String,
    },
    /// The macro is unknown, refused, or followed by something it does not take.
    #[error("invalid schedule `{spec}`: {problem}")]
    Macro {
        /// The spec as written.
        spec: String,
        /// What is wrong with the macro.
        problem: String,
    },
    /// The duration after `@every` is malformed or unusable.
    #[error("invalid schedule `{spec}`: {problem}")]
    Every {
        /// The spec as written.
        spec: String,
        /// What is wrong with the duration.
        problem: String,
    },
    /// The time zone is not a known IANA name.
    #[error(
        "invalid schedule `{spec}`: unknown time zone `{zone}`: use an IANA name like \
         Europe/Berlin or America/New_York"
    )]
    TimeZone {
        /// The spec as written.
        spec: String,
        /// The time zone as given.
        zone: String,
    },
    /// The fields are valid but no date satisfies them all.
    #[error("invalid schedule `{spec}`: it never fires ({reason})")]
    NeverFires {
        /// The spec as written.
        spec: String,
        /// Why no date matches.
        reason: String,
    },
}

impl Schedule {
    /// Parses a schedule spec in the given time zone (None = UTC). tz is an
    /// IANA name like "Europe/Berlin".
    pub fn parse(spec: &str, timezone: Option<&str>) -> Result<Schedule, ScheduleError> {
        let spec = spec.trim();
        let shown = one_line(spec);
        let tz = match timezone {
            None => Tz::UTC,
            Some(zone) => Tz::from_str(zone).map_err(|_| ScheduleError::TimeZone {
                spec: shown.clone(),
                zone: one_line(zone),
            })?,
        };
        let rule = match spec.strip_prefix('@') {
            Some(body) => parse_macro(body, &shown, tz)?,
            None => Rule::Cron(Cron::parse(spec, &shown, tz)?),
        };
        let schedule = Schedule {
            spec: spec.to_owned(),
            rule,
        };
        schedule.check_fires(&shown)?;
        Ok(schedule)
    }

    /// The first firing strictly after `after`. None only if it never fires
    /// again, which parsing rules out, short of the end of representable time.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.rule {
            Rule::Cron(cron) => cron.next_after(after),
            Rule::Every(seconds) => next_multiple(*seconds, after),
        }
    }

    /// The spec as written (trimmed).
    pub fn spec(&self) -> &str {
        &self.spec
    }

    fn check_fires(&self, shown: &str) -> Result<(), ScheduleError> {
        let Rule::Cron(cron) = &self.rule else {
            return Ok(());
        };
        let never = |reason: String| ScheduleError::NeverFires {
            spec: shown.to_owned(),
            reason,
        };
        if let Some(reason) = cron.impossible_days() {
            return Err(never(reason));
        }
        // `impossible_days` is exact by reasoning about the calendar; the
        // search guards against a flaw in that reasoning.
        match cron.next_after(DateTime::UNIX_EPOCH) {
            Some(_) => Ok(()),
            None => Err(never("no date in 400 years matches it".to_owned())),
        }
    }
}

/// Parses what follows the `@` of a macro.
fn parse_macro(body: &str, shown: &str, tz: Tz) -> Result<Rule, ScheduleError> {
    let (name, argument) = match body.split_once(char::is_whitespace) {
        Some((name, rest)) => (name, rest.trim()),
        None => (body, ""),
    };
    let macro_error = |problem: String| ScheduleError::Macro {
        spec: shown.to_owned(),
        problem,
    };
    let fields = match name.to_ascii_lowercase().as_str() {
        "every" => return parse_every(argument, shown),
        "yearly" | "annually" => "0 0 1 1 *",
        "monthly" => "0 0 1 * *",
        "weekly" => "0 0 * * 0",
        "daily" | "midnight" => "0 0 * * *",
        "hourly" => "0 * * * *",
        "reboot" => {
            return Err(macro_error(
                "@reboot is not supported: a worker service runs at start, so use one instead"
                    .to_owned(),
            ))
        }
        _ => {
            return Err(macro_error(format!(
                "unknown macro @{}: use @yearly, @monthly, @weekly, @daily, @hourly or \
                 @every <duration>",
                one_line(name)
            )))
        }
    };
    if !argument.is_empty() {
        return Err(macro_error(format!(
            "@{} takes nothing after it, but got `{}`: write it alone or use 5 fields",
            one_line(name),
            one_line(argument)
        )));
    }
    Ok(Rule::Cron(Cron::parse(fields, shown, tz)?))
}

/// Parses the duration of `@every`, which must be whole seconds, at least one.
fn parse_every(text: &str, shown: &str) -> Result<Rule, ScheduleError> {
    let every_error = |problem: String| ScheduleError::Every {
        spec: shown.to_owned(),
        problem,
    };
    if text.is_empty() {
        return Err(every_error(
            "@every needs a duration, e.g. @every 90s, @every 2m or @every 1h30m".to_owned(),
        ));
    }
    let interval = parse_duration(text).map_err(&every_error)?;
    let text = one_line(text);
    if interval < Duration::from_secs(1) {
        return Err(every_error(format!("@every needs at least 1s, got {text}")));
    }
    if interval.subsec_nanos() != 0 {
        return Err(every_error(format!(
            "@every needs a whole number of seconds, got {text}"
        )));
    }
    // Counted from the epoch, an interval past a few years has no next
    // run worth the name (or none chrono can represent).
    const LONGEST: Duration = Duration::from_secs(366 * 24 * 3600);
    if interval > LONGEST {
        return Err(every_error(format!(
            "@every interval {text} is too long: use at most 366 days (8784h)"
        )));
    }
    let seconds = i64::try_from(interval.as_secs())
        .map_err(|_| every_error(format!("@every interval {text} is too long")))?;
    Ok(Rule::Every(seconds))
}

/// The smallest multiple of `seconds` after the epoch that is later than `after`.
fn next_multiple(seconds: i64, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    // Flooring the whole seconds is enough: a multiple equal to them is not
    // later than `after`, whatever its fraction of a second.
    let next = after
        .timestamp()
        .div_euclid(seconds)
        .checked_add(1)?
        .checked_mul(seconds)?;
    DateTime::from_timestamp(next, 0)
}

/// How one cron field is spelled and which values it takes.
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    /// End of `*/n` and `a/n`; below `max` for day-of-week, where 7 repeats 0.
    open_max: u32,
    /// Names for `min`, `min + 1`, ...
    names: &'static [&'static str],
    /// What follows a value that is neither a number nor a name.
    not_value: &'static str,
}

const MINUTE: Field = Field {
    name: "minute",
    min: 0,
    max: 59,
    open_max: 59,
    names: &[],
    not_value: "is not a number: use 0-59",
};

const HOUR: Field = Field {
    name: "hour",
    min: 0,
    max: 23,
    open_max: 23,
    names: &[],
    not_value: "is not a number: use 0-23",
};

const DAY_OF_MONTH: Field = Field {
    name: "day-of-month",
    min: 1,
    max: 31,
    open_max: 31,
    names: &[],
    not_value: "is not a number: use 1-31",
};

const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    open_max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
    not_value: "is not a number or a name: use 1-12 or jan-dec",
};

const DAY_OF_WEEK: Field = Field {
    name: "day-of-week",
    min: 0,
    max: 7,
    open_max: 6,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
    not_value: "is not a number or a name: use 0-7 or sun-sat",
};

impl Field {
    /// Parses a comma list into a bit set.
    fn parse(&self, text: &str) -> Result<u64, String> {
        text.split(',').try_fold(0, |bits, element| {
            if element.is_empty() {
                return Err(format!(
                    "`{text}` has an empty list element: remove the extra comma"
                ));
            }
            Ok(bits | self.parse_element(element)?)
        })
    }

    fn parse_element(&self, element: &str) -> Result<u64, String> {
        if element.split(['-', '/']).any(str::is_empty) {
            return Err(format!("`{element}` is missing a number"));
        }
        let (base, step) = match element.split_once('/') {
            Some((base, step)) => (base, Some(parse_step(element, step)?)),
            None => (element, None),
        };
        let (start, end) = match base.split_once('-') {
            _ if base == "*" => (self.min, self.open_max),
            Some((start, end)) => (self.value(start)?, self.value(end)?),
            // `a/n` runs to the end of the field, as robfig/cron reads it.
            None if step.is_some() => {
                let start = self.value(base)?;
                (start, start.max(self.open_max))
            }
            None => {
                let value = self.value(base)?;
                (value, value)
            }
        };
        if start > end {
            return Err(format!(
                "`{base}` runs backwards: write ranges low-high, or a list like `{start}-{},{}-{end}`",
                start.max(self.open_max),
                self.min
            ));
        }
        let step = usize::try_from(step.unwrap_or(1)).unwrap_or(usize::MAX);
        Ok((start..=end).step_by(step).fold(0, |bits, v| bits | 1 << v))
    }

    /// Parses a number or name and checks it is in range.
    fn value(&self, text: &str) -> Result<u32, String> {
        let value = if text.bytes().all(|b| b.is_ascii_digit()) {
            // Too many digits for u32 is out of range all the same.
            text.parse().unwrap_or(u32::MAX)
        } else {
            let index = self
                .names
                .iter()
                .position(|name| name.eq_ignore_ascii_case(text))
                .ok_or_else(|| format!("`{text}` {}", self.not_value))?;
            self.min + u32::try_from(index).unwrap_or(u32::MAX)
        };
        if value < self.min || value > self.max {
            return Err(format!(
                "`{text}` is out of range {}-{}",
                self.min, self.max
            ));
        }
        Ok(value)
    }
}

fn parse_step(element: &str, step: &str) -> Result<u32, String> {
    if !step.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "`{element}` has step `{step}`, which is not a number"
        ));
    }
    // A step too big for u32 still means "only the start".
    match step.parse().unwrap_or(u32::MAX) {
        0 => Err(format!(
            "`{element}` has a step of 0: use a step of 1 or more"
        )),
        step => Ok(step),
    }
}

impl Cron {
    fn parse(fields: &str, shown: &str, tz: Tz) -> Result<Cron, ScheduleError> {
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
    fn impossible_days(&self) -> Option<String> {
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

    fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
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

    /// The instants at which a wall-clock time fires (see the module doc on DST).
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

/// Keeps error messages on one line whatever the input holds.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\t' => " ".to_owned(),
            c if c.is_control() => c.escape_default().to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// Parses a Go-style duration: "90s", "2m", "1h30m", "1.5h", "500ms". Used
/// for @every and for job timeouts. Units are h, m, s and ms; numbers may
/// have a fraction; a bare "0" is zero. Negative durations are refused.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let shown = one_line(text);
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.starts_with('-') {
        return Err(format!("`{shown}` is negative: {DURATION_EXAMPLES}"));
    }
    let body = text.strip_prefix('+').unwrap_or(text);
    let nanos = total_nanos(body).map_err(|problem| {
        let why = match problem {
            DurationProblem::TooLong => return format!("`{shown}` is too long"),
            DurationProblem::Malformed => String::new(),
            DurationProblem::NoUnit => " (it needs a unit)".to_owned(),
            DurationProblem::UnknownUnit(unit) => {
                format!(" (unknown unit `{}`; use h, m, s or ms)", one_line(&unit))
            }
        };
        format!("`{shown}` is not a duration{why}: {DURATION_EXAMPLES}")
    })?;
    let seconds =
        u64::try_from(nanos / NANOS_PER_SECOND).map_err(|_| format!("`{shown}` is too long"))?;
    let subsec = u32::try_from(nanos % NANOS_PER_SECOND).unwrap_or(0);
    Ok(Duration::new(seconds, subsec))
}

const NANOS_PER_SECOND: u128 = 1_000_000_000;

enum DurationProblem {
    Malformed,
    NoUnit,
    UnknownUnit(String),
    TooLong,
}

/// Sums the parts of a duration such as `1h30m`, in nanoseconds.
fn total_nanos(mut rest: &str) -> Result<u128, DurationProblem> {
    if rest.is_empty() {
        return Err(DurationProblem::Malformed);
    }
    let in_number = |c: char| c.is_ascii_digit() || c == '.';
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let (number, tail) = rest.split_at(rest.find(|c| !in_number(c)).unwrap_or(rest.len()));
        let (unit, tail) = tail.split_at(tail.find(in_number).unwrap_or(tail.len()));
        let unit_nanos = match unit {
            "h" => 3_600 * NANOS_PER_SECOND,
            "m" => 60 * NANOS_PER_SECOND,
            "s" => NANOS_PER_SECOND,
            "ms" => NANOS_PER_SECOND / 1_000,
            _ if number.is_empty() => return Err(DurationProblem::Malformed),
            "" => return Err(DurationProblem::NoUnit),
            _ => return Err(DurationProblem::UnknownUnit(unit.to_owned())),
        };
        let part = scaled(number, unit_nanos)?;
        total = total.checked_add(part).ok_or(DurationProblem::TooLong)?;
        rest = tail;
    }
    Ok(total)
}

/// `number` (digits with at most one `.`) times `unit_nanos`, truncated to
/// whole nanoseconds.
fn scaled(number: &str, unit_nanos: u128) -> Result<u128, DurationProblem> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits_only = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() && fraction.is_empty() || !digits_only(whole) || !digits_only(fraction) {
        return Err(DurationProblem::Malformed);
    }
    // Only digit strings remain, so parsing can fail only by overflowing.
    let whole: u128 = match whole {
        "" => 0,
        _ => whole.parse().map_err(|_| DurationProblem::TooLong)?,
    };
    // Digits past the 20th are worth less than a nanosecond even in hours,
    // and keeping 20 at most keeps the product below u128::MAX.
    let fraction = fraction.get(..fraction.len().min(20)).unwrap_or("");
    let fraction_nanos = match fraction {
        "" => 0,
        _ => {
            let digits: u128 = fraction.parse().map_err(|_| DurationProblem::Malformed)?;
            digits * unit_nanos / 10u128.pow(fraction.len() as u32)
        }
    };
    whole
        .checked_mul(unit_nanos)
        .and_then(|nanos| nanos.checked_add(fraction_nanos))
        .ok_or(DurationProblem::TooLong)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (spec, time zone, after, expected next firing), each checked by hand
    /// against a calendar.
    #[rustfmt::skip]
    const CASES: &[(&str, Option<&str>, &str, &str)] = &[
        // Every minute, including from a fraction of a second before the next.
        ("* * * * *",              None,                        "2025-01-01T00:00:00Z",     "2025-01-01T00:01:00Z"),
        ("* * * * *",              None,                        "2025-01-01T00:00:30Z",     "2025-01-01T00:01:00Z"),
        ("* * * * *",              None,                        "2025-01-01T00:00:59.999Z", "2025-01-01T00:01:00Z"),
        // Fixed minute and hour; exactly on a firing means the next one.
        ("5 4 * * *",              None,                        "2025-01-01T00:00:00Z",     "2025-01-01T04:05:00Z"),
        ("5 4 * * *",              None,                        "2025-01-01T04:05:00Z",     "2025-01-02T04:05:00Z"),
        ("5 16 * * *",             None,                        "2025-06-15T16:04:59Z",     "2025-06-15T16:05:00Z"),
        ("5 16 * * *",             None,                        "2025-06-15T17:00:00Z",     "2025-06-16T16:05:00Z"),
        // Steps, ranges with steps, lists.
        ("*/15 * * * *",           None,                        "2025-01-01T10:07:00Z",     "2025-01-01T10:15:00Z"),
        ("*/15 * * * *",           None,                        "2025-01-01T10:45:00Z",     "2025-01-01T11:00:00Z"),
        ("0 */6 * * *",            None,                        "2025-01-01T13:00:00Z",     "2025-01-01T18:00:00Z"),
        ("10-30/10 * * * *",       None,                        "2025-01-01T10:30:00Z",     "2025-01-01T11:10:00Z"),
        ("0 9-17/4 * * *",         None,                        "2025-01-01T14:00:00Z",     "2025-01-01T17:00:00Z"),
        ("0 9-17/4 * * *",         None,                        "2025-01-01T17:00:00Z",     "2025-01-02T09:00:00Z"),
        ("0 8,12,18 * * *",        None,                        "2025-01-01T12:00:00Z",     "2025-01-01T18:00:00Z"),
        ("15,45 * * * *",          None,                        "2025-01-01T10:50:00Z",     "2025-01-01T11:15:00Z"),
        ("0 0 1,15 * *",           None,                        "2025-01-01T00:00:00Z",     "2025-01-15T00:00:00Z"),
        // `a/n` runs from a to the end of the field.
        ("5/20 * * * *",           None,                        "2025-01-01T10:45:00Z",     "2025-01-01T11:05:00Z"),
        ("0 3/8 * * *",            None,                        "2025-01-01T19:30:00Z",     "2025-01-02T03:00:00Z"),
        // Names, case-insensitive. 2025-01-03 is a Friday.
        ("0 0 1 jan *",            None,                        "2025-01-01T00:00:00Z",     "2026-01-01T00:00:00Z"),
        ("0 9 * * mon-fri",        None,                        "2025-01-03T09:00:00Z",     "2025-01-06T09:00:00Z"),
        ("0 9 * * MON-FRI",        None,                        "2025-01-04T12:00:00Z",     "2025-01-06T09:00:00Z"),
        ("0 12 * JUN-AUG sat,sun", None,                        "2025-05-20T00:00:00Z",     "2025-06-01T12:00:00Z"),
        ("30 6 * feb-mar/1 *",     None,                        "2025-01-10T00:00:00Z",     "2025-02-01T06:30:00Z"),
        // In day-of-week, `a/n` stops at Saturday (robfig), so Sunday is not in `1/2`.
        ("0 0 * * 1/2",            None,                        "2025-01-03T00:00:00Z",     "2025-01-06T00:00:00Z"),
        // Day-of-week 7 and 0 are both Sunday; 2025-01-05 is one.
        ("0 0 * * 7",              None,                        "2025-01-01T00:00:00Z",     "2025-01-05T00:00:00Z"),
        ("0 0 * * 0",              None,                        "2025-01-01T00:00:00Z",     "2025-01-05T00:00:00Z"),
        ("0 0 * * 6-7",            None,                        "2025-01-04T00:00:00Z",     "2025-01-05T00:00:00Z"),
        // Month ends.
        ("0 0 31 * *",             None,                        "2025-04-30T00:00:00Z",     "2025-05-31T00:00:00Z"),
        ("0 0 31 * *",             None,                        "2025-05-31T00:00:00Z",     "2025-07-31T00:00:00Z"),
        ("0 12 31 * *",            None,                        "2025-08-31T12:00:00Z",     "2025-10-31T12:00:00Z"),
        ("0 0 30 * *",             None,                        "2025-01-30T00:00:00Z",     "2025-03-30T00:00:00Z"),
        // Feb 29 only in leap years; 2060-02-29 is the next Sunday one after 2032.
        ("0 0 29 2 *",             None,                        "2025-01-01T00:00:00Z",     "2028-02-29T00:00:00Z"),
        ("0 0 29 2 *",             None,                        "2028-02-29T00:00:00Z",     "2032-02-29T00:00:00Z"),
        ("0 0 29 2 */7",           None,                        "2032-03-01T00:00:00Z",     "2060-02-29T00:00:00Z"),
        // Vixie OR: Fridays or the 13th. 2025-06-13 is a Friday, 2025-07-13 a Sunday.
        ("0 0 13 * 5",             None,                        "2025-06-01T00:00:00Z",     "2025-06-06T00:00:00Z"),
        ("0 0 13 * 5",             None,                        "2025-06-06T00:00:00Z",     "2025-06-13T00:00:00Z"),
        ("0 0 13 * 5",             None,                        "2025-07-11T00:00:00Z",     "2025-07-13T00:00:00Z"),
        ("0 0 1,15 * wed",         None,                        "2025-01-01T00:00:00Z",     "2025-01-08T00:00:00Z"),
        // Vixie AND when a day field starts with `*`: odd days that are Mondays.
        ("0 0 */2 * 1",            None,                        "2025-01-01T00:00:00Z",     "2025-01-13T00:00:00Z"),
        ("0 0 * * */2",            None,                        "2025-01-01T00:00:00Z",     "2025-01-02T00:00:00Z"),
        ("0 0 ? * 1",              None,                        "2025-01-01T00:00:00Z",     "2025-01-06T00:00:00Z"),
        ("0 0 1 * ?",              None,                        "2025-01-15T00:00:00Z",     "2025-02-01T00:00:00Z"),
        // Year rollover.
        ("* * * * *",              None,                        "2025-12-31T23:59:00Z",     "2026-01-01T00:00:00Z"),
        ("59 23 31 12 *",          None,                        "2025-12-31T23:59:00Z",     "2026-12-31T23:59:00Z"),
        // Macros.
        ("@yearly",                None,                        "2025-03-01T00:00:00Z",     "2026-01-01T00:00:00Z"),
        ("@annually",              None,                        "2025-12-31T23:59:59Z",     "2026-01-01T00:00:00Z"),
        ("@monthly",               None,                        "2025-01-31T12:00:00Z",     "2025-02-01T00:00:00Z"),
        ("@weekly",                None,                        "2025-01-01T00:00:00Z",     "2025-01-05T00:00:00Z"),
        ("@daily",                 None,                        "2025-01-01T00:00:00Z",     "2025-01-02T00:00:00Z"),
        ("@midnight",              None,                        "2025-02-28T23:00:00Z",     "2025-03-01T00:00:00Z"),
        ("@hourly",                None,                        "2025-01-01T10:00:00Z",     "2025-01-01T11:00:00Z"),
        // @every is aligned to the Unix epoch; 2025-01-01T00:00Z is 1735689600,
        // a multiple of 90 and 5400 but not of 420.
        ("@every 2m",              None,                        "2025-01-01T10:01:00Z",     "2025-01-01T10:02:00Z"),
        ("@every 2m",              None,                        "2025-01-01T10:02:00Z",     "2025-01-01T10:04:00Z"),
        ("@every 2m",              None,                        "2025-01-01T10:01:59.5Z",   "2025-01-01T10:02:00Z"),
        ("@every 90s",             None,                        "2025-01-01T00:00:00Z",     "2025-01-01T00:01:30Z"),
        ("@every 90s",             None,                        "2025-01-01T00:01:30Z",     "2025-01-01T00:03:00Z"),
        ("@every 1h30m",           None,                        "2025-01-01T01:00:00Z",     "2025-01-01T01:30:00Z"),
        ("@every 1h30m",           None,                        "2025-01-01T01:30:00Z",     "2025-01-01T03:00:00Z"),
        ("@every 1.5h",            None,                        "2025-01-01T00:00:00Z",     "2025-01-01T01:30:00Z"),
        ("@every 7m",              None,                        "2025-01-01T00:00:00Z",     "2025-01-01T00:05:00Z"),
        ("@every 1h",              Some("Asia/Kolkata"),        "2025-01-01T10:15:00Z",     "2025-01-01T11:00:00Z"),
        // A non-UTC zone: 09:00 in Tokyo (UTC+9) is midnight UTC.
        ("0 9 * * *",              Some("Asia/Tokyo"),          "2024-12-31T23:00:00Z",     "2025-01-01T00:00:00Z"),
        ("0 9 * * *",              Some("Asia/Tokyo"),          "2025-01-01T00:00:00Z",     "2025-01-02T00:00:00Z"),
        ("0 0 1 * *",              Some("America/Los_Angeles"), "2025-01-15T00:00:00Z",     "2025-02-01T08:00:00Z"),
        // Sunday 23:00 UTC is already Monday in Berlin.
        ("0 0 * * mon",            Some("Europe/Berlin"),       "2025-01-05T22:00:00Z",     "2025-01-05T23:00:00Z"),
        // New York springs forward 2025-03-09 02:00 EST -> 03:00 EDT (07:00Z):
        // skipped times fire once, at 03:00 EDT.
        ("30 2 * * *",             Some("America/New_York"),    "2025-03-08T12:00:00Z",     "2025-03-09T07:00:00Z"),
        ("30 2 * * *",             Some("America/New_York"),    "2025-03-09T07:00:00Z",     "2025-03-10T06:30:00Z"),
        ("0,15,30,45 2 * * *",     Some("America/New_York"),    "2025-03-09T06:00:00Z",     "2025-03-09T07:00:00Z"),
        ("0,15,30,45 2 * * *",     Some("America/New_York"),    "2025-03-09T07:00:00Z",     "2025-03-10T06:00:00Z"),
        ("*/15 * * * *",           Some("America/New_York"),    "2025-03-09T06:45:00Z",     "2025-03-09T07:00:00Z"),
        ("*/15 * * * *",           Some("America/New_York"),    "2025-03-09T07:00:00Z",     "2025-03-09T07:15:00Z"),
        // New York falls back 2025-11-02 02:00 EDT -> 01:00 EST (06:00Z):
        // 01:xx happens at 05:xxZ and again at 06:xxZ.
        ("30 1 * * *",             Some("America/New_York"),    "2025-11-02T00:00:00Z",     "2025-11-02T05:30:00Z"),
        ("30 1 * * *",             Some("America/New_York"),    "2025-11-02T05:30:00Z",     "2025-11-03T06:30:00Z"),
        ("30 * * * *",             Some("America/New_York"),    "2025-11-02T05:30:00Z",     "2025-11-02T06:30:00Z"),
        ("* 1 * * *",              Some("America/New_York"),    "2025-11-02T05:59:00Z",     "2025-11-03T06:00:00Z"),
        ("* * * * *",              Some("America/New_York"),    "2025-11-02T05:59:00Z",     "2025-11-02T06:00:00Z"),
        // An hour field listing every hour counts as `*`.
        ("30 0-23 * * *",          Some("America/New_York"),    "2025-11-02T05:30:00Z",     "2025-11-02T06:30:00Z"),
        // Lord Howe shifts by half an hour: 02:00 -> 02:30 on 2023-10-01 (+10:30 -> +11),
        // and 02:00 -> 01:30 on 2024-04-07, so 01:45 happens at 14:45Z and at 15:15Z.
        ("15 2 * * *",             Some("Australia/Lord_Howe"), "2023-09-30T12:00:00Z",     "2023-09-30T15:30:00Z"),
        ("15 2 * * *",             Some("Australia/Lord_Howe"), "2023-09-30T15:30:00Z",     "2023-10-01T15:15:00Z"),
        ("45 1 * * *",             Some("Australia/Lord_Howe"), "2024-04-06T14:45:00Z",     "2024-04-07T15:15:00Z"),
        ("45 * * * *",             Some("Australia/Lord_Howe"), "2024-04-06T14:45:00Z",     "2024-04-06T15:15:00Z"),
        // Berlin springs forward 2025-03-30 02:00 CET -> 03:00 CEST (01:00Z).
        ("30 2 * * *",             Some("Europe/Berlin"),       "2025-03-29T12:00:00Z",     "2025-03-30T01:00:00Z"),
        ("0 3 * * *",              Some("Europe/Berlin"),       "2025-03-30T00:30:00Z",     "2025-03-30T01:00:00Z"),
        // Berlin falls back 2025-10-26 03:00 CEST -> 02:00 CET (01:00Z):
        // 02:xx happens at 00:xxZ and again at 01:xxZ.
        ("30 2 * * *",             Some("Europe/Berlin"),       "2025-10-25T12:00:00Z",     "2025-10-26T00:30:00Z"),
        ("30 2 * * *",             Some("Europe/Berlin"),       "2025-10-26T00:30:00Z",     "2025-10-27T01:30:00Z"),
        ("0 * * * *",              Some("Europe/Berlin"),       "2025-10-26T00:00:00Z",     "2025-10-26T01:00:00Z"),
        ("0 * * * *",              Some("Europe/Berlin"),       "2025-10-26T01:00:00Z",     "2025-10-26T02:00:00Z"),
    ];

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap_or_else(|e| panic!("bad test time {text}: {e}"))
            .with_timezone(&Utc)
    }

    #[test]
    fn table_of_next_firings() {
        assert!(CASES.len() >= 45);
        let mut failures = Vec::new();
        for &(spec, zone, after, expected) in CASES {
            let schedule = Schedule::parse(spec, zone)
                .unwrap_or_else(|e| panic!("{spec} ({zone:?}) should parse: {e}"));
            let got = schedule.next_after(at(after));
            if got != Some(at(expected)) {
                failures.push(format!(
                    "{spec} ({zone:?}) after {after}: expected {expected}, got {got:?}"
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn firings_chain_through_a_dst_gap() {
        let schedule = Schedule::parse("0 * * * *", Some("America/New_York")).unwrap();
        let mut t = at("2025-03-09T05:30:00Z");
        let mut seen = Vec::new();
        for _ in 0..3 {
            t = schedule.next_after(t).unwrap();
            seen.push(t.to_rfc3339());
        }
        // 01:00 EST, then 03:00 EDT (02:00 does not exist and collapses into it), 04:00 EDT.
        assert_eq!(
            seen,
            [
                "2025-03-09T06:00:00+00:00",
                "2025-03-09T07:00:00+00:00",
                "2025-03-09T08:00:00+00:00"
            ]
        );
    }

    #[test]
    fn spec_is_kept_trimmed() {
        let schedule = Schedule::parse("  0\t9  * *   mon \n", None).unwrap();
        assert_eq!(schedule.spec(), "0\t9  * *   mon");
    }

    /// Parses a spec that must fail and returns its one-line message.
    fn error(spec: &str, zone: Option<&str>) -> String {
        let message = match Schedule::parse(spec, zone) {
            Ok(schedule) => panic!("{spec} should not parse, got {schedule:?}"),
            Err(e) => e.to_string(),
        };
        assert!(!message.contains('\n'), "not one line: {message}");
        assert!(
            message.contains(&format!("`{}`", one_line(spec.trim()))),
            "{message}"
        );
        message
    }

    #[test]
    fn out_of_range_names_the_field() {
        assert_eq!(
            error("61 * * * *", None),
            "invalid schedule `61 * * * *`: minute `61` is out of range 0-59"
        );
        assert!(error("0 24 * * *", None).contains("hour `24` is out of range 0-23"));
        assert!(error("0 0 0 * *", None).contains("day-of-month `0` is out of range 1-31"));
        assert!(error("0 0 1 13 *", None).contains("month `13` is out of range 1-12"));
        assert!(error("0 0 * * 8", None).contains("day-of-week `8` is out of range 0-7"));
        assert!(error("0 0 * * 1-99999999999", None).contains("`99999999999` is out of range"));
        // With several bad fields, the first one is named.
        assert!(error("61 24 * * *", None).contains("minute `61`"));
    }

    #[test]
    fn wrong_field_count() {
        assert_eq!(
            error("* * *", None),
            "invalid schedule `* * *`: expected 5 fields (minute hour day-of-month month \
             day-of-week) or a macro like @hourly or @every 2m, got 3"
        );
        assert!(error("0 0 0 * * * *", None).ends_with("got 7"));
        assert!(error("   ", None).ends_with("got 0"));
    }

    #[test]
    fn bad_elements() {
        let zero_step = error("*/0 * * * *", None);
        assert!(
            zero_step.contains("minute `*/0` has a step of 0"),
            "{zero_step}"
        );
        let backwards = error("0 22-2 * * *", None);
        assert!(
            backwards.contains("hour `22-2` runs backwards"),
            "{backwards}"
        );
        assert!(backwards.contains("`22-23,0-2`"), "{backwards}");
        assert!(error("0 0 * * 7-1", None).contains("`7-7,0-1`"));
        let name = error("0 0 * * foo", None);
        assert!(
            name.contains("day-of-week `foo` is not a number or a name: use 0-7 or sun-sat"),
            "{name}"
        );
        assert!(error("0 0 * foo *", None).contains("month `foo` is not a number or a name"));
        assert!(error("jan 0 * * *", None).contains("minute `jan` is not a number"));
        let empty = error("1,,2 * * * *", None);
        assert!(
            empty.contains("minute `1,,2` has an empty list element"),
            "{empty}"
        );
        assert!(error("0 0 * * 1,", None).contains("day-of-week `1,` has an empty list"));
        assert!(error("-5 * * * *", None).contains("minute `-5` is missing a number"));
        assert!(error("*/x * * * *", None).contains("minute `*/x` has step `x`"));
        assert!(error("? * * * *", None).contains("minute `?` is not a number"));
        assert!(error("0 0 L * *", None).contains("day-of-month `L` is not a number"));
    }

    #[test]
    fn macros() {
        assert_eq!(
            error("@fortnightly", None),
            "invalid schedule `@fortnightly`: unknown macro @fortnightly: use @yearly, \
             @monthly, @weekly, @daily, @hourly or @every <duration>"
        );
        let reboot = error("@reboot", None);
        assert!(
            reboot.contains("@reboot") && reboot.contains("worker service"),
            "{reboot}"
        );
        assert!(error("@daily 5", None).contains("@daily takes nothing after it"));
        assert!(Schedule::parse("@DAILY", None).is_ok());
    }

    #[test]
    fn bad_every() {
        assert!(error("@every 0s", None).contains("@every needs at least 1s"));
        assert!(error("@every 500ms", None).contains("@every needs at least 1s"));
        assert_eq!(
            error("@every banana", None),
            "invalid schedule `@every banana`: `banana` is not a duration: use e.g. 90s, 2m, 1h30m"
        );
        assert!(error("@every 1.5s", None).contains("whole number of seconds"));
        assert!(error("@every", None).contains("@every needs a duration"));
        assert!(error("@every -5m", None).contains("is negative"));
    }

    #[test]
    fn unknown_time_zone() {
        let message = error("0 9 * * *", Some("Mars/Olympus"));
        assert!(
            message.ends_with(
                "unknown time zone `Mars/Olympus`: use an IANA name like Europe/Berlin or \
                 America/New_York"
            ),
            "{message}"
        );
        assert!(error("@every 2m", Some("Mars/Olympus")).contains("Mars/Olympus"));
    }

    #[test]
    fn never_firing_schedules_are_refused() {
        assert_eq!(
            error("0 0 30 2 *", None),
            "invalid schedule `0 0 30 2 *`: it never fires (no month in it has day 30)"
        );
        assert!(error("0 0 31 4 *", None).contains("it never fires"));
        assert!(error("0 0 31 2,4,6,9,11 *", None).contains("it never fires"));
        assert!(error("0 0 30,31 feb *", None).contains("any of days 30, 31"));
        // With both day fields restricted, Mondays in February still match.
        assert!(Schedule::parse("0 0 30 2 1", None).is_ok());
        assert!(Schedule::parse("0 0 29 2 *", None).is_ok());
    }

    #[test]
    fn errors_escape_line_breaks() {
        let message = error("0 0 * *\n* *", None);
        assert!(message.contains("got 6"), "{message}");
        assert!(message.contains("\\n"), "{message}");
    }

    #[test]
    fn durations() {
        let ok = |text: &str| parse_duration(text).unwrap();
        assert_eq!(ok("90s"), Duration::from_secs(90));
        assert_eq!(ok("2m"), Duration::from_secs(120));
        assert_eq!(ok("1h30m"), Duration::from_secs(5400));
        assert_eq!(ok("1.5h"), Duration::from_secs(5400));
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("1m30s"), Duration::from_secs(90));
        assert_eq!(ok("2h45m10s500ms"), Duration::from_millis(9_910_500));
        assert_eq!(ok(".5s"), Duration::from_millis(500));
        assert_eq!(ok("1.s"), Duration::from_secs(1));
        assert_eq!(ok("0.001s"), Duration::from_millis(1));
        assert_eq!(ok("+3s"), Duration::from_secs(3));
        assert_eq!(ok(" 45s "), Duration::from_secs(45));
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("0s"), Duration::ZERO);
        assert_eq!(
            ok("1.123456789123456789123456789s"),
            Duration::new(1, 123_456_789)
        );
        assert_eq!(ok("1.0000000001h"), Duration::new(3600, 360));
    }

    #[test]
    fn bad_durations() {
        let err = |text: &str| parse_duration(text).unwrap_err();
        assert_eq!(
            err("banana"),
            "`banana` is not a duration: use e.g. 90s, 2m, 1h30m"
        );
        assert!(err("90").contains("needs a unit"));
        assert!(err("5d").contains("unknown unit `d`"));
        assert!(err("1m30").contains("needs a unit"));
        assert!(err("1.2.3s").contains("is not a duration"));
        assert!(err(".s").contains("is not a duration"));
        assert!(err("").contains("is not a duration"));
        assert!(err("-1s").contains("is negative"));
        assert!(err("1h 30m").contains("is not a duration"));
        assert!(err("99999999999999999999999999999h").contains("is too long"));
        assert!(err("999999999999999999999999999999999999999999s").contains("is too long"));
    }
}
