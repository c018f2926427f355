//! `mesh svc logs` and `mesh events`: what services printed and what
//! happened, once or followed.

use anyhow::anyhow;
use chrono::Utc;
use clap::Args;
use mesh_host::telemetry::{Event, LogLine};

use super::{encode, service_path, NameArg, Out, StackArg};
use crate::client::Client;

/// `mesh svc logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub name: NameArg,

    #[command(flatten)]
    pub stack: StackArg,

    /// Only the last N lines.
    #[arg(long, value_name = "N")]
    pub tail: Option<usize>,

    /// Only this instance, e.g. worker.2.
    #[arg(long, value_name = "ID")]
    pub instance: Option<String>,

    /// Only lines from this long ago (`10m`, `1h30m`) or since a time
    /// (RFC 3339).
    #[arg(long, value_name = "AGE|TIME")]
    pub since: Option<String>,

    /// Only lines from before this long ago or this time (RFC 3339).
    #[arg(long, value_name = "AGE|TIME")]
    pub until: Option<String>,

    /// Only lines that contain TEXT (any case).
    #[arg(long, value_name = "TEXT")]
    pub grep: Option<String>,

    /// Keep printing new lines as they are written (across instance
    /// restarts) until Ctrl-C.
    #[arg(short = 'f', long)]
    pub follow: bool,
}

/// `mesh events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only the last N events.
    #[arg(long, value_name = "N")]
    pub tail: Option<usize>,
    /// Keep printing new events until Ctrl-C.
    #[arg(short = 'f', long)]
    pub follow: bool,
}

/// `mesh svc logs`.
pub fn logs(client: &Client, out: &Out, args: LogsArgs) -> anyhow::Result<()> {
    let name = args.name.get()?;
    let mut query = Vec::new();
    if let Some(n) = args.tail {
        query.push(format!("tail={n}"));
    }
    if let Some(instance) = &args.instance {
        query.push(format!("instance={}", encode(instance)));
    }
    for (key, value) in [("since", &args.since), ("until", &args.until)] {
        if let Some(text) = value {
            let time = time_arg(key, text)?;
            query.push(format!("{key}={}", encode(&time.to_rfc3339())));
        }
    }
    if let Some(text) = &args.grep {
        query.push(format!("grep={}", encode(text)));
    }
    if args.follow {
        query.push("follow=true".to_string());
    }
    let path = format!(
        "{}/logs?{}",
        service_path(&args.stack.stack, name),
        query.join("&")
    );
    if args.follow {
        return follow(client, out, &path, print_log_line);
    }
    let lines: Vec<LogLine> = client.get(&path)?;
    out.print(&lines, || lines.iter().for_each(print_log_line))
}

fn print_log_line(line: &LogLine) {
    println!(
        "{} {} {}",
        line.time.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
        line.instance,
        line.text
    );
}

/// `--since` or `--until`: an age (`10m`) or an RFC 3339 time.
fn time_arg(flag: &str, text: &str) -> anyhow::Result<chrono::DateTime<Utc>> {
    if let Ok(time) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    let age = mesh_host::cron::parse_duration(text).map_err(|e| {
        anyhow!("invalid --{flag} `{text}`: {e}; use an age like 10m or an RFC 3339 time")
    })?;
    Ok(Utc::now() - chrono::TimeDelta::from_std(age)?)
}

/// `mesh events`.
pub fn events(client: &Client, out: &Out, args: EventsArgs) -> anyhow::Result<()> {
    let mut query = vec![format!("follow={}", args.follow)];
    if let Some(n) = args.tail {
        query.push(format!("tail={n}"));
    }
    let path = format!("/v1/events?{}", query.join("&"));
    let print = |event: &Event| {
        println!(
            "{}  {:<20} {:<24} {:<14} {}",
            event.time.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
            event.kind,
            event.service.as_deref().unwrap_or("-"),
            event.instance.as_deref().unwrap_or("-"),
            event.message
        )
    };
    if args.follow {
        return follow(client, out, &path, print);
    }
    let events: Vec<Event> = client.get(&path)?;
    out.print(&events, || events.iter().for_each(print))
}

/// Prints a followed NDJSON stream as it comes, until Ctrl-C; the stream
/// ending means the daemon went away.
fn follow<T: serde::de::DeserializeOwned>(
    client: &Client,
    out: &Out,
    path: &str,
    print: impl Fn(&T),
) -> anyhow::Result<()> {
    use std::io::Write as _;
    for line in client.get_lines(path)? {
        let line = line?;
        if out.json {
            println!("{line}");
        } else if let Ok(item) = serde_json::from_str::<T>(&line) {
            print(&item);
        }
        std::io::stdout().flush()?;
    }
    Err(anyhow!("the daemon stopped; nothing more to follow"))
}
