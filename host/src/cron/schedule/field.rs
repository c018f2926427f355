//! One field of a five-field spec: how it is spelled (values, names,
//! ranges, steps, lists) and the bit set of values it matches.

/// How one cron field is spelled and which values it takes.
pub(super) struct Field {
    pub(super) name: &'static str,
    min: u32,
    max: u32,
    /// End of `*/n` and `a/n`; below `max` for day-of-week, where 7 repeats 0.
    open_max: u32,
    /// Names for `min`, `min + 1`, ...
    names: &'static [&'static str],
    /// What follows a value that is neither a number nor a name.
    not_value: &'static str,
}

pub(super) const MINUTE: Field = Field {
    name: "minute",
    min: 0,
    max: 59,
    open_max: 59,
    names: &[],
    not_value: "is not a number: use 0-59",
};

pub(super) const HOUR: Field = Field {
    name: "hour",
    min: 0,
    max: 23,
    open_max: 23,
    names: &[],
    not_value: "is not a number: use 0-23",
};

pub(super) const DAY_OF_MONTH: Field = Field {
    name: "day-of-month",
    min: 1,
    max: 31,
    open_max: 31,
    names: &[],
    not_value: "is not a number: use 1-31",
};

pub(super) const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    open_max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
    not_value: "is not a number or a name: use 1-12 or jan-dec",
};

pub(super) const DAY_OF_WEEK: Field = Field {
    name: "day-of-week",
    min: 0,
    max: 7,
    open_max: 6,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
    not_value: "is not a number or a name: use 0-7 or sun-sat",
};

impl Field {
    /// Parses a comma list into a bit set.
    pub(super) fn parse(&self, text: &str) -> Result<u64, String> {
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
