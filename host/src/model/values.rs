//! The small values services are made of: names, memory sizes, env vars,
//! and the defaults and bounds that apply to them.

/// The environment every daemon creates at first start; the operator's
/// token acts on it.
pub const DEFAULT_ENVIRONMENT: &str = "default";

/// The stack a service lands in when none is named.
pub const DEFAULT_STACK: &str = "app";

/// Memory limit of an instance when the service does not set one.
pub const DEFAULT_MEMORY_BYTES: u64 = 128 * MIB;

/// The smallest memory limit that can run anything useful.
pub const MIN_MEMORY_BYTES: u64 = MIB;

/// Most instances one service may ask for.
pub const MAX_INSTANCES: u32 = 1000;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// Checks that `name` can be a stack, service or environment name: a DNS
/// label of lowercase letters, digits and inner hyphens, at most 63 long.
pub fn validate_name(what: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid {what} name `{name}`: use 1-63 lowercase letters, digits and inner hyphens (a DNS label)"
        ))
    }
}

/// Parses a memory size: plain bytes, `Ki`/`Mi`/`Gi` (binary, optionally
/// with a trailing `B`), or `K`/`M`/`G` and `KB`/`MB`/`GB` (also binary, as
/// people mean them for memory).
pub fn parse_memory(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let bad = || {
        format!("invalid memory size `{text}`: use a number with a unit, e.g. 64Mi, 512Mi or 1Gi")
    };
    let number: u64 = number.parse().map_err(|_| bad())?;
    // `64Mi`, `64 MiB` (as sizes are printed), `512 bytes`.
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" | "bytes" => 1,
        "k" | "ki" | "kb" | "kib" => KIB,
        "m" | "mi" | "mb" | "mib" => MIB,
        "g" | "gi" | "gb" | "gib" => GIB,
        _ => return Err(bad()),
    };
    number.checked_mul(scale).ok_or_else(bad)
}

/// Writes a byte count the way people read memory limits: `64 MiB`.
pub fn format_memory(bytes: u64) -> String {
    if bytes >= GIB && bytes.is_multiple_of(GIB) {
        format!("{} GiB", bytes / GIB)
    } else if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= KIB && bytes.is_multiple_of(KIB) {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} bytes")
    }
}

/// Checks environment variable settings: names are non-empty and hold no `=`.
pub fn validate_env_var(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > 256 || key.contains('=') || key.contains('\0') {
        return Err(format!(
            "invalid environment variable name `{key}`: use KEY=VALUE with a non-empty KEY"
        ));
    }
    Ok(())
}

/// `1.5s`, `250ms`, `2m3s`: a duration the way people read it.
pub fn format_duration(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        let s = d.as_secs_f64();
        if (s - s.round()).abs() < 0.05 {
            format!("{}s", s.round())
        } else {
            format!("{s:.1}s")
        }
    } else {
        let s = d.as_secs();
        match (s / 3600, (s % 3600) / 60, s % 60) {
            (0, m, 0) => format!("{m}m"),
            (0, m, s) => format!("{m}m{s}s"),
            (h, 0, 0) => format!("{h}h"),
            (h, m, _) => format!("{h}h{m}m"),
        }
    }
}

/// CPU time one request may use unless its service says otherwise.
pub const DEFAULT_CPU_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);
/// Largest CPU limit a service may ask for.
pub const MAX_CPU_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Most environment variables one service may have.
pub const MAX_ENV_VARS: usize = 128;
/// Longest value of one environment variable, in bytes.
pub const MAX_ENV_VALUE_BYTES: usize = 32 * 1024;
/// Most bytes all of a service's environment variables take together.
pub const MAX_ENV_TOTAL_BYTES: usize = 128 * 1024;

/// The word of `known` that `word` is probably a typo of, the closest:
/// one letter added, dropped, changed or swapped with its neighbour (two
/// for words longer than four letters).
pub fn did_you_mean<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edits(word, k), *k))
        .filter(|(d, k)| *d > 0 && *d <= if k.len() > 4 { 2 } else { 1 })
        .min()
        .map(|(_, k)| k)
}

/// Optimal string alignment distance: insertions, deletions,
/// substitutions and swaps of two neighbours, one each.
fn edits(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// Checks a service's environment variables against the bounds.
pub fn check_env_vars(vars: &std::collections::BTreeMap<String, String>) -> Result<(), String> {
    if vars.len() > MAX_ENV_VARS {
        return Err(format!(
            "too many environment variables: {} (at most {MAX_ENV_VARS})",
            vars.len()
        ));
    }
    if let Some((k, v)) = vars.iter().find(|(_, v)| v.len() > MAX_ENV_VALUE_BYTES) {
        return Err(format!(
            "environment variable {k} is {} bytes long (at most {MAX_ENV_VALUE_BYTES})",
            v.len()
        ));
    }
    let total: usize = vars.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > MAX_ENV_TOTAL_BYTES {
        return Err(format!(
            "environment variables take {total} bytes (at most {MAX_ENV_TOTAL_BYTES} together)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_variables_are_bounded() {
        let mut vars: std::collections::BTreeMap<String, String> = (0..MAX_ENV_VARS)
            .map(|i| (format!("K{i}"), "v".into()))
            .collect();
        assert!(check_env_vars(&vars).is_ok());
        vars.insert("ONE_MORE".into(), "v".into());
        assert!(check_env_vars(&vars).unwrap_err().contains("too many"));
        let big = std::collections::BTreeMap::from([("K".to_string(), "x".repeat(40_000))]);
        assert!(check_env_vars(&big).unwrap_err().contains("bytes long"));
    }

    #[test]
    fn memory_sizes_parse() {
        assert_eq!(parse_memory("64Mi"), Ok(64 * MIB));
        assert_eq!(parse_memory("64MiB"), Ok(64 * MIB));
        assert_eq!(parse_memory("1Gi"), Ok(GIB));
        assert_eq!(parse_memory("512k"), Ok(512 * KIB));
        assert_eq!(parse_memory("1048576"), Ok(MIB));
        assert!(parse_memory("lots").is_err());
        assert!(parse_memory("64Qi").is_err());
        assert!(parse_memory("-1Mi").is_err());
        assert!(parse_memory("99999999999999999Gi").is_err());
    }

    #[test]
    fn memory_sizes_format() {
        assert_eq!(format_memory(64 * MIB), "64 MiB");
        assert_eq!(format_memory(2 * GIB), "2 GiB");
        assert_eq!(format_memory(1000), "1000 bytes");
    }

    #[test]
    fn names_are_dns_labels() {
        assert!(validate_name("service", "web").is_ok());
        assert!(validate_name("service", "send-emails2").is_ok());
        assert!(validate_name("service", "Web").is_err());
        assert!(validate_name("service", "-web").is_err());
        assert!(validate_name("service", "web_1").is_err());
        assert!(validate_name("service", "").is_err());
        assert!(validate_name("service", &"a".repeat(64)).is_err());
    }
}
