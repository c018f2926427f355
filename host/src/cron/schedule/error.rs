//! Why a schedule was refused: [`ScheduleError`], one line per message
//! naming the spec, the bad part and the fix.

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

/// Keeps error messages on one line whatever the input holds.
pub(super) fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\t' => " ".to_owned(),
            c if c.is_control() => c.escape_default().to_string(),
            c => c.to_string(),
        })
        .collect()
}
