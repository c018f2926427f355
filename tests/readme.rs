//! The README's own examples, run as written: every ```sh block, in
//! order, in one bash script from the repository's root, on a fresh data
//! directory (MESH_DATA_DIR, so the checkout's ./.mesh is not touched).
//! A block is left out only when the line before it says why
//! (`<!-- not run by tests/readme.rs: ... -->`). Its `mesh up &` listens
//! on the ports the README names (7070 and 8080, on loopback); the test
//! stops it with SIGTERM, as Ctrl-C would, and checks it stopped cleanly.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{self, repo_root};

/// What marks a block the test does not run, with the reason after it.
const NOT_RUN: &str = "<!-- not run by tests/readme.rs:";

/// Longest the whole script may take (it builds, and deploys images).
const SCRIPT_LIMIT: Duration = Duration::from_secs(600);

/// The ```sh blocks of `text` that are run, each with its first line
/// number.
fn blocks(text: &str) -> Vec<(usize, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() != "```sh" {
            i += 1;
            continue;
        }
        let skipped = i > 0 && lines[i - 1].starts_with(NOT_RUN);
        let start = i + 1;
        let mut end = start;
        while end < lines.len() && lines[end].trim() != "```" {
            end += 1;
        }
        if !skipped {
            found.push((start + 1, lines[start..end].join("\n")));
        }
        i = end + 1;
    }
    found
}

#[test]
fn every_readme_block_runs_as_written() {
    let root = repo_root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let blocks = blocks(&readme);
    assert!(
        blocks.iter().any(|(_, b)| b.contains("mesh up &")),
        "no Quickstart block found"
    );
    let data = tempfile::tempdir().unwrap();
    let mut script = String::from("set -euo pipefail\nshopt -s expand_aliases\nset -x\n");
    for (line, block) in &blocks {
        script.push_str(&format!("# README.md line {line}\n{block}\n"));
    }
    // The last job put in the background is the README's `mesh up &`.
    let pid_file = data.path().join("up.pid");
    script.push_str(&format!("echo \"$!\" > {}\n", pid_file.display()));
    let file = data.path().join("readme.sh");
    std::fs::write(&file, &script).unwrap();
    let mesh_data = data.path().join("mesh");
    let out = data.path().join("out.log");
    let mut child = Command::new("bash")
        .arg(&file)
        .current_dir(&root)
        .env("MESH_DATA_DIR", &mesh_data)
        .env_remove("MESH_API_URL")
        .env_remove("MESH_TOKEN")
        .env_remove("MESH_STACK")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(data.path().join("err.log")).unwrap())
        .spawn()
        .unwrap();
    // Not `wait_until`: past the limit the script is killed and its
    // daemon stopped before the test fails.
    let deadline = std::time::Instant::now() + SCRIPT_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let said = || {
        format!(
            "--- stdout ---\n{}\n--- stderr (each command after +) ---\n{}",
            std::fs::read_to_string(&out).unwrap_or_default(),
            std::fs::read_to_string(data.path().join("err.log")).unwrap_or_default()
        )
    };
    let stopped = stop_daemon(&pid_file, &mesh_data);
    let status = status.unwrap_or_else(|| {
        panic!(
            "the README's blocks took over {SCRIPT_LIMIT:?}:\n{}",
            said()
        )
    });
    assert!(status.success(), "a README command failed:\n{}", said());
    assert!(
        stopped,
        "the README's `mesh up &` did not stop cleanly:\n{}",
        said()
    );
    let stdout = std::fs::read_to_string(&out).unwrap();
    assert!(stdout.contains("hello from app"), "{}", said());
}

/// SIGTERM to the daemon the script left in the background, as Ctrl-C
/// would stop it; whether it then stopped cleanly (it removes
/// `daemon.json` last).
fn stop_daemon(pid_file: &Path, data: &Path) -> bool {
    if let Ok(pid) = std::fs::read_to_string(pid_file) {
        let _ = Command::new("kill").arg(pid.trim()).status();
    }
    let daemon_file = data.join(mesh_host::DAEMON_FILE);
    let mut gone = false;
    support::wait_until(
        Duration::from_secs(60),
        "the README's daemon to stop",
        || {
            gone = !daemon_file.exists();
            gone
        },
    );
    gone
}

#[test]
fn blocks_marked_not_run_are_left_out() {
    let text = "a\n```sh\necho one\n```\n<!-- not run by tests/readme.rs: why -->\n```sh\necho two\n```\n```\nplain\n```\n";
    assert_eq!(blocks(text), [(3, "echo one".to_string())]);
}
