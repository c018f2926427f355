//! Go-style durations (`90s`, `2m`, `1h30m`): the argument of `@every`
//! and a job's timeout.

use std::time::Duration;

use super::error::one_line;

const DURATION_EXAMPLES: &str = "use e.g. 90s, 2m, 1h30m";

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
