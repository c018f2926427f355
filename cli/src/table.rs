//! Plain-text tables and human durations for listings.

use std::io::IsTerminal as _;

/// A table printed with aligned columns.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Prints it to stdout; the header is bold on a terminal.
    pub fn print(&self) {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let terminal = colours();
        let header = format_row(&self.header, &widths);
        if terminal {
            println!("\x1b[1m{header}\x1b[0m");
        } else {
            println!("{header}");
        }
        // States and statuses are coloured, on a terminal only.
        let state_column = self
            .header
            .iter()
            .position(|h| h == "STATE" || h == "STATUS")
            .filter(|_| terminal);
        for row in &self.rows {
            println!("{}", format_row_coloured(row, &widths, state_column));
        }
    }
}

/// Whether output may be coloured: stdout is a terminal and `NO_COLOR` is
/// not set (https://no-color.org).
pub fn colours() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The ANSI colour for a state word: green for good, yellow for waiting,
/// red for failing.
fn colour_of(cell: &str) -> Option<&'static str> {
    let word = cell.split_whitespace().next()?;
    Some(match word {
        "running" | "succeeded" => "32",
        "starting" | "backoff" | "skipped" | "stopped" | "exited" => "33",
        "crashed" | "failed" | "timed_out" => "31",
        _ => return None,
    })
}

fn format_row(cells: &[String], widths: &[usize]) -> String {
    format_row_coloured(cells, widths, None)
}

/// Cells padded to their column widths; the cell in `coloured` (if any)
/// gets its state's colour around the padded text, so escape codes never
/// count as width.
fn format_row_coloured(cells: &[String], widths: &[usize], coloured: Option<usize>) -> String {
    let mut line = String::new();
    for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
        let last = i + 1 == cells.len();
        let padded = if last {
            cell.clone()
        } else {
            format!("{cell:<width$}  ")
        };
        match coloured.filter(|c| *c == i).and_then(|_| colour_of(cell)) {
            Some(colour) => line.push_str(&format!("\x1b[{colour}m{padded}\x1b[0m")),
            None => line.push_str(&padded),
        }
    }
    line.trim_end().to_string()
}

/// A size for people: `512 B`, `40.6 MiB`, `6.0 GiB`. Exact numbers are
/// in `--json`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `1 instance`, `2 instances`.
pub fn count(n: impl Into<u64>, noun: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// A duration the way `ls` columns show it: `45s`, `3m`, `2h`, `4d`.
pub fn age(d: chrono::TimeDelta) -> String {
    let s = d.num_seconds().max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_counts_read_like_words() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(42_621_436), "40.6 MiB");
        assert_eq!(size(6112 << 20), "6.0 GiB");
        assert_eq!(size(24_683_772 << 10), "23.5 GiB");
        assert_eq!(count(1u32, "instance"), "1 instance");
        assert_eq!(count(3u32, "instance"), "3 instances");
    }

    #[test]
    fn ages_read_like_ls() {
        assert_eq!(age(chrono::TimeDelta::seconds(5)), "5s");
        assert_eq!(age(chrono::TimeDelta::seconds(125)), "2m");
        assert_eq!(age(chrono::TimeDelta::seconds(7300)), "2h");
        assert_eq!(age(chrono::TimeDelta::seconds(-3)), "0s");
    }

    #[test]
    fn rows_align() {
        let widths = [5, 3];
        assert_eq!(format_row(&["a".into(), "b".into()], &widths), "a      b");
    }

    #[test]
    fn colour_wraps_the_padded_state_cell() {
        let row = ["web.1".to_string(), "running".into(), "0".into()];
        let widths = [6, 8, 1];
        let plain = format_row(&row, &widths);
        let coloured = format_row_coloured(&row, &widths, Some(1));
        assert_eq!(coloured, "web.1   \x1b[32mrunning   \x1b[0m0");
        assert_eq!(
            coloured.replace("\x1b[32m", "").replace("\x1b[0m", ""),
            plain
        );
        // Words that are not states stay plain.
        let row = ["x".to_string(), "3 wanted".into(), "0".into()];
        assert_eq!(
            format_row_coloured(&row, &widths, Some(1)),
            format_row(&row, &widths)
        );
    }
}
