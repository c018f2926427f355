//! A running container ([`Running`]): waiting for its end as its shim
//! reports it, signalling it, stopping it (SIGTERM, then SIGKILL after its
//! grace period), and what is undone after it ([`Cleanup`]): its bundle,
//! its link, and its places in the host's counts.

use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout};
use tokio_util::task::AbortOnDropHandle;

use super::bundle::Bundle;
use super::net::Link;
use super::tasks::TaskSlot;

/// How a container ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exit {
    /// Exit code (128 + signal when a signal ended it).
    pub code: i32,
    /// The signal that ended it, or 0.
    pub signal: i32,
    /// Whether the kernel killed it for exceeding its memory limit.
    pub oom: bool,
    /// Set when it never ran: why.
    pub failed: Option<String>,
}

impl Exit {
    /// What a container stopped without waiting for its end is taken to
    /// have done: killed.
    const KILLED: Exit = Exit {
        code: 137,
        signal: 9,
        oom: false,
        failed: None,
    };
}

/// One container counted against [`Containers`](super::Containers)'s bound until dropped.
pub(super) struct LiveSlot(Arc<std::sync::atomic::AtomicUsize>);

impl LiveSlot {
    pub(super) fn take(live: &Arc<std::sync::atomic::AtomicUsize>, max: usize) -> Option<LiveSlot> {
        live.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .ok()
        .map(|_| LiveSlot(live.clone()))
    }
}

impl Drop for LiveSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What is left to undo after a container: its bundle and link.
pub(super) struct Cleanup {
    pub(super) bundle: Option<Bundle>,
    pub(super) link: Option<Link>,
    pub(super) _slot: LiveSlot,
    /// Counted in its environment's cgroup (dropped after the rest).
    pub(super) _tasks: TaskSlot,
}

impl Cleanup {
    pub(super) fn link(&self) -> &Link {
        self.link
            .as_ref()
            .expect("the link lives as long as the cleanup")
    }

    pub(super) fn bundle_dir(&self) -> PathBuf {
        self.bundle
            .as_ref()
            .map(|b| b.dir.clone())
            .unwrap_or_default()
    }

    pub(super) fn root_at(&self) -> PathBuf {
        self.bundle
            .as_ref()
            .map(|b| b.root_at().to_path_buf())
            .unwrap_or_default()
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(mut bundle) = self.bundle.take() {
            bundle.remove();
        }
        drop(self.link.take());
    }
}

/// A running container.
pub struct Running {
    /// Its address on the bridge.
    pub address: Ipv4Addr,
    /// Its stdin, when the daemon feeds it.
    pub stdin: Option<ChildStdin>,
    /// Its stdout (none for a terminal).
    pub stdout: Option<ChildStdout>,
    /// Its stderr (none for a terminal).
    pub stderr: Option<ChildStderr>,
    /// The terminal's controlling end, for a terminal.
    pub terminal: Option<OwnedFd>,
    pub(super) child: Option<Child>,
    pub(super) control: Option<tokio::io::BufReader<tokio::net::unix::OwnedReadHalf>>,
    pub(super) commands: Option<tokio::net::unix::OwnedWriteHalf>,
    pub(super) exit: Option<Exit>,
    pub(super) grace: Duration,
    pub(super) cleanup: Option<Cleanup>,
    pub(super) stopping: tokio_util::task::TaskTracker,
    /// Its cgroup's path (relative, as the runtime spec names it).
    pub(super) cgroup: String,
    /// The tasks copying its output somewhere: they go on until it ends,
    /// whoever stops it.
    pub(super) output: Vec<AbortOnDropHandle<()>>,
}

/// What a container uses now, read from its cgroup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Memory charged to it, in bytes.
    pub memory_bytes: u64,
    /// CPU time used since it started, in nanoseconds.
    pub cpu_nanos: u64,
}

impl Running {
    /// Its memory and CPU use now (cgroup v2, else v1), when the kernel
    /// says; read off the async threads by the caller.
    pub fn usage_reader(&self) -> impl Fn() -> Option<Usage> + Send + Sync + 'static {
        let rel = self.cgroup.trim_start_matches('/').to_string();
        move || usage_of(&rel)
    }

    /// Keeps `tasks` (copying the container's output) for as long as the
    /// container runs, even when its owner goes first.
    pub fn keep_output(&mut self, tasks: Vec<AbortOnDropHandle<()>>) {
        self.output.extend(tasks);
    }

    /// Once it has ended: lets its output reach its end (at most 2 s; its
    /// pipes close with it), then ends the tasks copying it.
    pub async fn drain_output(&mut self) {
        let tasks = std::mem::take(&mut self.output);
        let _ =
            tokio::time::timeout(Duration::from_secs(2), futures::future::join_all(tasks)).await;
    }

    /// Waits for the container to end.
    pub async fn wait(&mut self) -> Exit {
        if let Some(exit) = &self.exit {
            return exit.clone();
        }
        let exit = read_exit(self.control.as_mut()).await;
        if let Some(mut child) = self.child.take() {
            let _ = child.wait().await;
        }
        self.exit = Some(exit.clone());
        // Its bundle and address go at once; the output pipes stay for
        // the caller to drain.
        if let Some(cleanup) = self.cleanup.take() {
            let _ = tokio::task::spawn_blocking(move || drop(cleanup)).await;
        }
        exit
    }

    /// Asks the container's init to stop (SIGTERM).
    pub async fn terminate(&mut self) {
        self.send(b"term\n").await;
    }

    /// Kills every process of the container (SIGKILL).
    pub async fn kill(&mut self) {
        self.send(b"kill\n").await;
    }

    async fn send(&mut self, line: &[u8]) {
        if let Some(w) = &mut self.commands {
            let _ = w.write_all(line).await;
        }
    }

    /// Stops it: SIGTERM, then SIGKILL once its grace period is over.
    pub async fn stop(&mut self) -> Exit {
        if self.exit.is_none() {
            self.terminate().await;
            let grace = self.grace;
            if tokio::time::timeout(grace, self.wait()).await.is_err() {
                self.kill().await;
            }
        }
        self.wait().await
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.exit.is_some() {
            return;
        }
        // Dropped while running (its owner was stopped): stop it in the
        // background, politely first, then clean up after it.
        let mut rest = Running {
            address: self.address,
            stdin: None,
            stdout: None,
            stderr: None,
            terminal: None,
            child: self.child.take(),
            control: self.control.take(),
            commands: self.commands.take(),
            exit: None,
            grace: self.grace,
            cleanup: self.cleanup.take(),
            stopping: self.stopping.clone(),
            cgroup: std::mem::take(&mut self.cgroup),
            output: std::mem::take(&mut self.output),
        };
        self.exit = Some(Exit::KILLED);
        if tokio::runtime::Handle::try_current().is_ok() {
            // Tracked, so a daemon shutting down waits for it.
            self.stopping.spawn(async move {
                rest.stop().await;
                rest.drain_output().await;
            });
        } else {
            // No runtime: closing the socket (dropping it, ended) makes
            // the shim kill it.
            rest.exit = Some(Exit::KILLED);
        }
    }
}

/// Longest line the shim sends.
const MAX_LINE: u64 = 4096;

async fn read_exit(
    control: Option<&mut tokio::io::BufReader<tokio::net::unix::OwnedReadHalf>>,
) -> Exit {
    let gone = |why: &str| Exit {
        code: 1,
        signal: 0,
        oom: false,
        failed: Some(why.to_string()),
    };
    let Some(control) = control else {
        return gone("the container was not started");
    };
    let mut line = String::new();
    loop {
        line.clear();
        // A line is short; one longer than this is not the shim's.
        match (&mut *control).take(MAX_LINE).read_line(&mut line).await {
            Ok(0) | Err(_) => return gone("the container shim ended unexpectedly"),
            Ok(_) => {}
        }
        if !line.ends_with('\n') {
            return gone("the container shim said too much");
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["exit", code, signal, oom] => {
                return Exit {
                    code: code.parse().unwrap_or(1),
                    signal: signal.parse().unwrap_or(0),
                    oom: *oom == "1",
                    failed: None,
                }
            }
            ["failed", ..] => return gone(line.trim().trim_start_matches("failed ")),
            _ => {}
        }
    }
}

/// Reads a cgroup's memory and CPU use: cgroup v2's `memory.current` and
/// `cpu.stat`, or v1's `memory.usage_in_bytes` and `cpuacct.usage`.
fn usage_of(rel: &str) -> Option<Usage> {
    let read = |path: std::path::PathBuf| std::fs::read_to_string(path).ok();
    let number = |text: Option<String>| text.and_then(|t| t.trim().parse::<u64>().ok());
    let root = std::path::Path::new("/sys/fs/cgroup");
    if let Some(memory) = number(read(root.join(rel).join("memory.current"))) {
        let cpu_micros = read(root.join(rel).join("cpu.stat")).and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("usage_usec ")?.trim().parse::<u64>().ok())
        });
        return Some(Usage {
            memory_bytes: memory,
            cpu_nanos: cpu_micros.unwrap_or(0).saturating_mul(1000),
        });
    }
    let memory = number(read(
        root.join("memory").join(rel).join("memory.usage_in_bytes"),
    ))?;
    let cpu_nanos = number(read(root.join("cpuacct").join(rel).join("cpuacct.usage"))).unwrap_or(0);
    Some(Usage {
        memory_bytes: memory,
        cpu_nanos,
    })
}
