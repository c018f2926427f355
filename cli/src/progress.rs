//! Progress of a pull that takes more than a second: while a deploy waits
//! for the daemon, a line on stderr (a terminal only; never with `--json`)
//! says how many blobs and bytes are here and how fast they come.

use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use mesh_host::registry::PullStatus;

use crate::client::Client;
use crate::table::size;

/// How long a pull goes before its progress shows.
const QUIET_FOR: Duration = Duration::from_secs(1);
/// How often the progress is asked for.
const EVERY: Duration = Duration::from_millis(250);

/// Runs `call` (a request that pulls `references`), showing their progress
/// on stderr while it waits, unless `quiet` or stderr is not a terminal.
pub fn while_pulling<T: Send>(
    client: &Client,
    quiet: bool,
    references: &[String],
    call: impl FnOnce() -> anyhow::Result<T> + Send,
) -> anyhow::Result<T> {
    if quiet || references.is_empty() || !std::io::stderr().is_terminal() {
        return call();
    }
    std::thread::scope(|scope| {
        let waiting = scope.spawn(call);
        let started = Instant::now();
        let mut shown = false;
        while !waiting.is_finished() {
            std::thread::sleep(EVERY);
            if started.elapsed() < QUIET_FOR {
                continue;
            }
            let Ok(pulls) = client.get::<Vec<PullStatus>>("/v1/pulls") else {
                continue;
            };
            if let Some(pull) = pulls.iter().find(|p| references.contains(&p.reference)) {
                eprint!("\r\x1b[2K{}", line(pull));
                shown = true;
            }
        }
        if shown {
            eprint!("\r\x1b[2K");
        }
        waiting
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the request's thread failed")))
    })
}

/// `Pulling REF: 2/5 blobs, 12.3 MiB of 40.1 MiB, 8.2 MiB/s`.
fn line(p: &PullStatus) -> String {
    let seconds = (p.elapsed_ms as f64 / 1000.0).max(0.001);
    let rate = (p.bytes_done as f64 / seconds) as u64;
    let of = if p.bytes_total > 0 {
        format!(" of {}", size(p.bytes_total))
    } else {
        String::new()
    };
    format!(
        "Pulling {}: {}/{} blobs, {}{of}, {}/s",
        p.reference,
        p.blobs_done,
        p.blobs_total,
        size(p.bytes_done),
        size(rate)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_says_blobs_bytes_and_rate() {
        let p = PullStatus {
            reference: "r.example/app:1".into(),
            blobs_total: 5,
            blobs_done: 2,
            bytes_total: 40 << 20,
            bytes_done: 10 << 20,
            elapsed_ms: 2000,
        };
        assert_eq!(
            line(&p),
            "Pulling r.example/app:1: 2/5 blobs, 10.0 MiB of 40.0 MiB, 5.0 MiB/s"
        );
    }
}
