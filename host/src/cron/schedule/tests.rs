//! Unit tests of [`Schedule`](super::Schedule): next firings checked by
//! hand against a calendar, and the message of every kind of refusal.

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
