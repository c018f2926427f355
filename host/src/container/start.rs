//! Starting a prepared container ([`Prepared`]): its shim process is
//! spawned with the control socket on a known descriptor, and the
//! handshake waits until the shim says the container runs (handing over
//! the terminal, for a tty), which makes it a [`Running`].

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use super::running::{Cleanup, Running};
use super::shim::SHIM_ARG;

/// Why a container could not start.
#[derive(Debug)]
pub enum StartError {
    /// Its command is not in the image: exit code 127, as a shell says.
    NotFound(String),
    /// Anything else, in one line.
    Failed(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::NotFound(m) | StartError::Failed(m) => f.write_str(m),
        }
    }
}

/// A container ready to start: its bundle and address exist; dropping
/// it removes them.
pub struct Prepared {
    /// The daemon's binary, which is the shim too.
    pub(super) exe: PathBuf,
    /// Where the shim keeps the container's runtime state.
    pub(super) state: PathBuf,
    /// Where a running container dropped by its owner is stopped.
    pub(super) stopping: tokio_util::task::TaskTracker,
    /// The container's id, unique across the daemon's restarts.
    pub(super) id: String,
    /// Its cgroup's path (relative, as a runtime spec names it).
    pub(super) cgroup: String,
    /// How the shim joins it to the bridge (`--net`).
    pub(super) net_arg: String,
    /// Whether its stdio is a terminal.
    pub(super) tty: bool,
    /// Whether the daemon feeds its stdin.
    pub(super) stdin: bool,
    /// How long it has to end after SIGTERM before SIGKILL.
    pub(super) grace: Duration,
    /// Its bundle, link and places in the counts, undone when dropped.
    pub(super) cleanup: Cleanup,
}

impl Prepared {
    /// The address the container will have.
    pub fn address(&self) -> Ipv4Addr {
        self.cleanup.link().address
    }

    /// Starts it through its shim; returns once it runs.
    pub async fn start(self) -> Result<Running, StartError> {
        let Prepared {
            exe,
            state,
            stopping,
            id,
            cgroup,
            net_arg,
            tty,
            stdin,
            grace,
            cleanup,
        } = self;
        let (daemon_end, shim_end) = std::os::unix::net::UnixStream::pair()
            .map_err(|e| StartError::Failed(e.to_string()))?;
        let mut command = std::process::Command::new(&exe);
        command
            .arg(SHIM_ARG)
            .args(["--root", &state.to_string_lossy()])
            .args(["--id", &id])
            .args(["--bundle", &cleanup.bundle_dir().to_string_lossy()])
            .args(["--mounted-at", &cleanup.root_at().to_string_lossy()])
            .args(["--cgroup", &cgroup])
            .args(["--net", &net_arg]);
        if tty {
            command.arg("--tty");
        }
        command
            .stdin(if stdin && !tty {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(if tty { Stdio::null() } else { Stdio::piped() })
            .stderr(if tty { Stdio::null() } else { Stdio::piped() });
        let fd = shim_end.as_raw_fd();
        // SAFETY: dup2 and fcntl are async-signal-safe; the closure runs
        // in the child between fork and exec and touches nothing else.
        unsafe {
            command.pre_exec(move || {
                if libc::dup2(fd, super::shim::CONTROL_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = tokio::process::Command::from(command)
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| StartError::Failed(format!("cannot start the container shim: {e}")))?;
        drop(shim_end);
        let (started, daemon_end) = tokio::task::spawn_blocking(move || {
            let result = handshake(&daemon_end);
            (result, daemon_end)
        })
        .await
        .map_err(|e| StartError::Failed(e.to_string()))?;
        let terminal = match started {
            Ok(ok) => ok,
            Err(message) => {
                let _ = child.wait().await;
                return Err(StartError::Failed(message));
            }
        };
        daemon_end
            .set_nonblocking(true)
            .map_err(|e| StartError::Failed(e.to_string()))?;
        let control = tokio::net::UnixStream::from_std(daemon_end)
            .map_err(|e| StartError::Failed(e.to_string()))?;
        let (read, write) = control.into_split();
        Ok(Running {
            address: cleanup.link().address,
            stdin: child.stdin.take(),
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
            terminal,
            child: Some(child),
            control: Some(tokio::io::BufReader::new(read)),
            commands: Some(write),
            exit: None,
            grace,
            cleanup: Some(cleanup),
            stopping,
            cgroup,
            output: Vec::new(),
        })
    }
}

/// Reads the shim's first lines: the terminal (for a tty) and `started
/// PID`, or why it failed; the terminal, if any.
fn handshake(socket: &std::os::unix::net::UnixStream) -> Result<Option<OwnedFd>, String> {
    let _ = socket.set_read_timeout(Some(Duration::from_secs(60)));
    let mut terminal = None;
    let mut pending = Vec::new();
    loop {
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line).trim().to_string();
            if let Some(pid) = line.strip_prefix("started ") {
                let _ = socket.set_read_timeout(None);
                pid.parse::<u32>()
                    .map_err(|_| format!("the shim said {line:?}"))?;
                if !pending.is_empty() {
                    return Err("the shim said more than expected".into());
                }
                return Ok(terminal);
            }
            if let Some(why) = line.strip_prefix("failed ") {
                return Err(why.to_string());
            }
            if line != "tty" {
                return Err(format!("the shim said {line:?}"));
            }
        }
        let mut buf = [0u8; 1024];
        let (n, fd) = super::shim::receive(socket, &mut buf)
            .map_err(|e| format!("the container shim did not answer: {e}"))?;
        if fd.is_some() {
            terminal = fd;
        }
        if n == 0 {
            return Err("the container shim ended before the container started".into());
        }
        pending.extend_from_slice(&buf[..n]);
        if pending.len() > 4096 {
            return Err("the shim said too much".into());
        }
    }
}
