//! How `mesh` says what went wrong: always one line on stderr, as JSON
//! (`{"error": "..."}`) when `--json` was asked for. A usage mistake keeps
//! what clap knows about it (the missing arguments, "did you mean")
//! and points at the help of the command it was about.

use std::process::ExitCode;

/// Whether the command line asks for JSON, read before (or without) a
/// successful parse.
pub fn json_asked() -> bool {
    std::env::args_os().skip(1).any(|a| a == "--json")
}

/// Prints one error line, as JSON when `json`.
pub fn say(json: bool, line: &str) {
    if json {
        eprintln!("{}", serde_json::json!({ "error": line }));
    } else {
        eprintln!("error: {line}");
    }
}

/// An error and its causes on one line.
pub fn one_line(e: &anyhow::Error) -> String {
    let text = format!("{e:#}");
    text.lines().collect::<Vec<_>>().join(" ")
}

/// Help and version go to stdout with success; every other parse error is
/// one line on stderr and exit code 2.
pub fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::from(2)
        }
        _ => {
            say(json_asked(), &usage_line(&e.render().to_string()));
            ExitCode::from(2)
        }
    }
}

/// clap's rendered error as one line: what is wrong, then what it lists
/// (the missing arguments) or suggests, then the help to read.
fn usage_line(rendered: &str) -> String {
    let mut lines = rendered.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("invalid arguments");
    let mut line = first.strip_prefix("error: ").unwrap_or(first).to_string();
    let mut listed = Vec::new();
    let mut tips = Vec::new();
    let mut command = "mesh".to_string();
    for l in lines {
        if let Some(usage) = l.strip_prefix("Usage: ") {
            command = command_of(usage);
        } else if let Some(tip) = l.strip_prefix("tip: ") {
            tips.push(suggestion(tip));
        } else if !l.starts_with("For more information") {
            listed.push(l.to_string());
        }
    }
    if !listed.is_empty() {
        let colon = if line.ends_with(':') { "" } else { ":" };
        line = format!("{line}{colon} {}", listed.join(", "));
    }
    for tip in tips {
        line = format!("{line}; {tip}");
    }
    format!("{line} (see `{command} --help`)")
}

/// The command a usage line is about: its words before the first option
/// or argument (`mesh service create`).
fn command_of(usage: &str) -> String {
    usage
        .split_whitespace()
        .take_while(|w| !w.starts_with(['[', '<', '-']))
        .collect::<Vec<_>>()
        .join(" ")
}

/// clap's tip, as a question: "a similar subcommand exists: 'service'"
/// becomes "did you mean 'service'?".
fn suggestion(tip: &str) -> String {
    let names = tip
        .split_once(" exists: ")
        .or_else(|| tip.split_once(" exist: "))
        .map(|(_, names)| names);
    match names {
        Some(names) if tip.starts_with("a similar") || tip.starts_with("some similar") => {
            format!("did you mean {}?", names.replace(", ", " or "))
        }
        _ => tip.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_argument_is_named_with_the_subcommands_help() {
        let rendered = "error: the following required arguments were not provided:\n  --name <NAME>\n  <ARGV>...\n\nUsage: mesh service create --name <NAME> -- <ARGV>...\n\nFor more information, try '--help'.\n";
        assert_eq!(
            usage_line(rendered),
            "the following required arguments were not provided: --name <NAME>, <ARGV>... (see `mesh service create --help`)"
        );
    }

    #[test]
    fn a_typo_gets_a_suggestion() {
        let rendered = "error: unrecognized subcommand 'servce'\n\n  tip: a similar subcommand exists: 'service'\n\nUsage: mesh [OPTIONS] <COMMAND>\n\nFor more information, try '--help'.\n";
        assert_eq!(
            usage_line(rendered),
            "unrecognized subcommand 'servce'; did you mean 'service'? (see `mesh --help`)"
        );
    }
}
