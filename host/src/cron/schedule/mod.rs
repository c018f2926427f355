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
//!
//! # Files
//!
//! - `error`: why a spec was refused.
//! - `field`: one field's syntax, as a bit set of the values it matches.
//! - `calendar`: the five fields together, and when they next fire.
//! - `duration`: Go-style durations, for `@every` and job timeouts.
//! - [`Schedule`] (here): telling five fields from a macro or `@every`,
//!   parsing either, and the next firing of each.

mod calendar;
mod duration;
mod error;
mod field;

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use calendar::Cron;
use error::one_line;

pub use duration::parse_duration;
pub use error::ScheduleError;

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

#[cfg(test)]
mod tests;
