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
        let terminal = std::io::stdout().is_terminal();
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
            .position(|h| h == "STATE" || h == "STATUS");
        for row in &self.rows {
            let mut cells = row.clone();
            if let (true, Some(col)) = (terminal, state_column) {
                if let Some(colour) = row.get(col).and_then(|cell| colour_of(cell)) {
                    // Pad first, so the escape codes do not count as width.
                    let width = widths[col];
                    let padded = format!("{:<width$}", row[col]);
                    cells[col] = format!("\x1b[{colour}m{padded}\x1b[0m");
                }
            }
            let widths: Vec<usize> = widths
                .iter()
                .zip(&cells)
                .zip(row)
                .map(|((w, shown), plain)| {
                    if shown == plain {
                        *w
                    } else {
                        shown.chars().count()
                    }
                })
                .collect();
            println!("{}", format_row(&cells, &widths));
        }
    }
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
    let mut line = String::new();
    for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
        if i + 1 == cells.len() {
            line.push_str(cell);
        } else {
            line.push_str(&format!("{cell:<width$}  "));
        }
    }
    line.trim_end().to_string()
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
}
