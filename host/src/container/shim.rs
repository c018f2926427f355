//! The container shim: a small single-threaded process the daemon starts
//! per container (`mesh __mesh-container-shim ...`: the daemon's own
//! binary). It creates, starts, signals, waits for and deletes the
//! container through youki's `libcontainer`, which forks: doing that in a
//! single-threaded process, not in the daemon with its many threads and
//! locks, is what keeps the fork safe.
//!
//! The shim's stdin, stdout and stderr become the container's. Its fd 3
//! is a socket to the daemon: the shim sends `started PID`, then
//! `exit CODE SIGNAL OOM` (or `failed MESSAGE`), and, for a terminal,
//! the terminal's controlling end first, with the line `tty`. The daemon
//! sends `term` or `kill`. When that socket closes (the daemon stopped or
//! was killed) the shim kills the container and deletes it: no container
//! outlives the daemon that supervises it.

use std::io::{IoSlice, Read as _, Write as _};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd as _, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::default::DefaultExecutor;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

/// The first argument that makes the daemon's binary a shim.
pub const SHIM_ARG: &str = "__mesh-container-shim";

/// The fd of the socket to the daemon, in the shim.
pub const CONTROL_FD: RawFd = 3;

/// What the shim is told to run.
struct Args {
    root: PathBuf,
    id: String,
    bundle: PathBuf,
    tty: bool,
    cgroup: Option<PathBuf>,
    /// The folder its root filesystem is mounted in (outside the bundle).
    mounted_at: Option<PathBuf>,
    /// Its veth's host end, the bridge, its address (`HOST,BRIDGE,CIDR`).
    net: Option<(String, String, String)>,
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut out = Args {
        root: PathBuf::new(),
        id: String::new(),
        bundle: PathBuf::new(),
        tty: false,
        cgroup: None,
        mounted_at: None,
        net: None,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--root" => out.root = value()?.into(),
            "--id" => out.id = value()?,
            "--bundle" => out.bundle = value()?.into(),
            "--tty" => out.tty = true,
            "--cgroup" => out.cgroup = Some(value()?.into()),
            "--mounted-at" => out.mounted_at = Some(value()?.into()),
            "--net" => {
                let v = value()?;
                let parts: Vec<&str> = v.split(',').collect();
                let [host, bridge, cidr] = parts[..] else {
                    return Err("--net needs HOST,BRIDGE,CIDR".into());
                };
                out.net = Some((host.into(), bridge.into(), cidr.into()));
            }
            other => return Err(format!("unknown shim argument {other}")),
        }
    }
    if out.id.is_empty() || out.root.as_os_str().is_empty() || out.bundle.as_os_str().is_empty() {
        return Err("the shim needs --root, --id and --bundle".into());
    }
    Ok(out)
}

/// Runs the shim when this process was started as one; returns otherwise.
/// The daemon's binaries call it first thing in `main`.
pub fn run_if_shim() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) != Some(SHIM_ARG) {
        return;
    }
    // SAFETY: fd 3 is the socket the daemon handed the shim; nothing else
    // in this process owns it.
    let control = unsafe { UnixStream::from_raw_fd(CONTROL_FD) };
    let code = match parse_args(&args[2..]) {
        Ok(args) => shim(args, control),
        Err(message) => {
            let mut control = control;
            let _ = writeln!(control, "failed {message}");
            2
        }
    };
    std::process::exit(code);
}

fn shim(args: Args, mut control: UnixStream) -> i32 {
    let console = args.bundle.join("console.sock");
    let (mut container, listener) = match create(&args, &console) {
        Ok(c) => c,
        Err(message) => {
            let _ = writeln!(control, "failed {}", one_line(&message));
            return 1;
        }
    };
    if let Some(listener) = listener {
        match receive_terminal(&listener) {
            Ok(master) => {
                if let Err(e) = send_fd(&control, b"tty\n", master.as_raw_fd()) {
                    let _ = writeln!(control, "failed cannot hand over the terminal: {e}");
                    let _ = container.delete(true);
                    return 1;
                }
            }
            Err(message) => {
                let _ = writeln!(control, "failed {}", one_line(&message));
                let _ = container.delete(true);
                return 1;
            }
        }
    }
    let Some(pid) = container.pid() else {
        let _ = writeln!(control, "failed the container has no init process");
        let _ = container.delete(true);
        return 1;
    };
    if let Some((host, bridge, cidr)) = &args.net {
        if let Err(message) = join_network(pid, host, bridge, cidr) {
            let _ = writeln!(control, "failed {}", one_line(&message));
            let _ = container.delete(true);
            return 1;
        }
    }
    if let Err(e) = container.start() {
        let _ = writeln!(control, "failed {}", one_line(&e.to_string()));
        let _ = container.delete(true);
        return 1;
    }
    let _ = writeln!(control, "started {pid}");
    let (status, daemon_gone) = supervise(&mut container, pid, &mut control);
    let oom = args.cgroup.as_deref().is_some_and(oom_killed);
    let _ = container.delete(true);
    if daemon_gone {
        // Nobody is left to clean up after the container: its mounts and
        // bundle go now.
        // Named by the daemon, not read from the bundle, which may be
        // gone already with the data directory.
        let root_at = args.mounted_at.clone();
        for sub in ["rootfs", "rw"] {
            let _ = nix::mount::umount2(&args.bundle.join(sub), nix::mount::MntFlags::MNT_DETACH);
        }
        if let Some(root_at) = root_at {
            super::bundle::remove_root_at(&root_at);
            // The run directory and its parent, once nothing else is there.
            if let Some(run) = root_at.parent() {
                super::tasks::remove_unowned(run);
            }
        }
        let _ = std::fs::remove_dir_all(&args.bundle);
        if let Some(cgroup) = &args.cgroup {
            // Again after a moment: the other shims ending now may have
            // been removing their own containers' cgroups meanwhile.
            super::tasks::remove_parents(cgroup);
            std::thread::sleep(std::time::Duration::from_millis(200));
            super::tasks::remove_parents(cgroup);
        }
    }
    let (code, signal) = match status {
        WaitStatus::Exited(_, code) => (code, 0),
        WaitStatus::Signaled(_, signal, _) => (128 + signal as i32, signal as i32),
        _ => (1, 0),
    };
    let _ = writeln!(control, "exit {code} {signal} {}", u8::from(oom));
    0
}

/// Joins the container to the bridge: a veth pair whose host end `host`
/// is an isolated port of `bridge` and whose other end is made inside the
/// container's network namespace as `eth0`, with address `cidr`; it and
/// loopback are brought up.
fn join_network(pid: Pid, host: &str, bridge: &str, cidr: &str) -> Result<(), String> {
    let what = "setting up the container's network";
    let run = |program: &str, args: &[&str], input: String| {
        super::net::run_tool(program, args, Some(&input), what)
    };
    let pid = pid.as_raw().to_string();
    // Isolated ports talk to the bridge, never to each other.
    let outside = format!(
        "link add {host} type veth peer name eth0 netns {pid}\n\
         link set {host} master {bridge}\n\
         link set dev {host} type bridge_slave isolated on\n\
         link set {host} up\n"
    );
    run("ip", &["-batch", "-"], outside)?;
    let ns = format!("--net=/proc/{pid}/ns/net");
    let inside = format!("addr add {cidr} dev eth0\nlink set eth0 up\nlink set lo up\n");
    run("nsenter", &[&ns, "ip", "-batch", "-"], inside)
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Creates the container (its init process waits to be started), and the
/// console socket its terminal arrives on, for a terminal.
fn create(args: &Args, console: &Path) -> Result<(Container, Option<UnixListener>), String> {
    let mut builder = ContainerBuilder::new(args.id.clone(), SyscallType::Linux)
        .with_executor(DefaultExecutor {})
        .with_root_path(&args.root)
        .map_err(|e| e.to_string())?;
    if args.tty {
        let _ = std::fs::remove_file(console);
        builder = builder.with_console_socket(Some(console));
    } else {
        for (fd, which) in [(0, "stdin"), (1, "stdout"), (2, "stderr")] {
            let copy = dup(fd).map_err(|e| format!("{which}: {e}"))?;
            builder = match fd {
                0 => builder.with_stdin(copy),
                1 => builder.with_stdout(copy),
                _ => builder.with_stderr(copy),
            };
        }
    }
    let listener = if args.tty {
        Some(UnixListener::bind(console).map_err(|e| format!("console socket: {e}"))?)
    } else {
        None
    };
    let container = builder
        .as_init(&args.bundle)
        .with_systemd(false)
        .with_detach(true)
        .build()
        .map_err(|e| e.to_string())?;
    Ok((container, listener))
}

fn dup(fd: RawFd) -> std::io::Result<OwnedFd> {
    // SAFETY: fds 0-2 are open for the life of the process.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    borrowed.try_clone_to_owned()
}

/// The terminal's controlling end, which the container's init sent to the
/// console socket while it was created.
fn receive_terminal(listener: &UnixListener) -> Result<OwnedFd, String> {
    let (stream, _) = listener
        .accept()
        .map_err(|e| format!("console socket: {e}"))?;
    let mut buf = [0u8; 4096];
    let (_, fd) = receive(&stream, &mut buf).map_err(|e| format!("console socket: {e}"))?;
    fd.ok_or_else(|| "the container sent no terminal".into())
}

/// Reads what `socket` has into `buf`, and the file descriptor sent with
/// it, if one was: how many bytes, and the descriptor.
pub fn receive(socket: &impl AsRawFd, buf: &mut [u8]) -> nix::Result<(usize, Option<OwnedFd>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let message = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    )?;
    let mut received = None;
    for cmsg in message.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            for fd in fds {
                // SAFETY: received just now; nothing else owns it (a
                // second one replaces and closes the first).
                received = Some(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Ok((message.bytes, received))
}

/// Sends `fd` with `message` over `socket`.
fn send_fd(socket: &UnixStream, message: &[u8], fd: RawFd) -> nix::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let fds = [fd];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [IoSlice::new(message)];
    sendmsg::<()>(socket.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None).map(|_| ())
}

/// Waits for the container's init to end, passing on the daemon's
/// signals; kills it when the daemon goes away. How it ended, and whether
/// the daemon went.
fn supervise(container: &mut Container, pid: Pid, control: &mut UnixStream) -> (WaitStatus, bool) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) } as RawFd;
    let pidfd = (raw >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw) });
    let mut daemon_gone = false;
    let mut line = Vec::new();
    loop {
        if let Ok(status) = waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            if !matches!(status, WaitStatus::StillAlive) {
                return (status, daemon_gone);
            }
        }
        let mut fds = Vec::new();
        if let Some(p) = &pidfd {
            fds.push(PollFd::new(std::os::fd::AsFd::as_fd(p), PollFlags::POLLIN));
        }
        if !daemon_gone {
            fds.push(PollFd::new(control_fd(control), PollFlags::POLLIN));
        }
        let timeout = if pidfd.is_some() {
            PollTimeout::NONE
        } else {
            PollTimeout::from(100u16)
        };
        let _ = poll(&mut fds, timeout);
        if daemon_gone {
            continue;
        }
        let ready = fds
            .last()
            .and_then(|f| f.revents())
            .is_some_and(|r| !r.is_empty());
        if !ready {
            continue;
        }
        let mut buf = [0u8; 256];
        match control.read(&mut buf) {
            Ok(0) | Err(_) => {
                daemon_gone = true;
                let _ = container.kill(Signal::SIGKILL, true);
            }
            Ok(n) => {
                line.extend_from_slice(&buf[..n]);
                while let Some(end) = line.iter().position(|b| *b == b'\n') {
                    let command: Vec<u8> = line.drain(..=end).collect();
                    match command.trim_ascii() {
                        b"term" => {
                            let _ = container.kill(Signal::SIGTERM, false);
                        }
                        b"kill" => {
                            let _ = container.kill(Signal::SIGKILL, true);
                        }
                        _ => {}
                    }
                }
                line.truncate(256);
            }
        }
    }
}

fn control_fd(control: &UnixStream) -> BorrowedFd<'_> {
    use std::os::fd::AsFd as _;
    control.as_fd()
}

/// Whether the kernel killed something in the container's memory cgroup
/// for want of memory (cgroup v1 `memory.oom_control`, v2 `memory.events`).
fn oom_killed(cgroup: &Path) -> bool {
    let rel = cgroup.strip_prefix("/").unwrap_or(cgroup);
    let candidates = [
        Path::new("/sys/fs/cgroup/memory")
            .join(rel)
            .join("memory.oom_control"),
        Path::new("/sys/fs/cgroup").join(rel).join("memory.events"),
    ];
    candidates.iter().any(|file| {
        std::fs::read_to_string(file).is_ok_and(|text| {
            text.lines().any(|l| {
                l.strip_prefix("oom_kill ")
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .is_some_and(|n| n > 0)
            })
        })
    })
}
