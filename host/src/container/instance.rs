//! Starting containers and following them to their end: each runs under
//! its own shim process (`shim.rs`), which the daemon talks to over a
//! socket. [`Containers`] owns the images, bundles, state and network of
//! one daemon; [`Running`] is one container, stopped (SIGTERM, then
//! SIGKILL after its grace period) and cleaned up when dropped.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout};
use tokio_util::task::AbortOnDropHandle;

use super::bundle::{self, Bundle, BundleSpec};
use super::image::{self, ImageSettings};
use super::net::{Link, NetConfig, Network};
use super::shim::SHIM_ARG;
use super::tasks::{TaskSlot, Tasks};
use super::userns::{self, IdRanges};

/// How a container's command is to run.
pub struct ContainerLaunch {
    /// The service's command, without the image's name: it replaces the
    /// image's `Cmd` (empty: the image's own).
    pub command: Vec<String>,
    /// Environment variables, over the image's.
    pub env: Vec<(String, String)>,
    /// Memory limit in bytes.
    pub memory_bytes: u64,
    /// Bytes it may write to its own layer.
    pub writable_bytes: u64,
    /// Whether its stdio is a terminal.
    pub tty: bool,
    /// Whether the daemon feeds its stdin (else it reads end of input).
    pub stdin: bool,
    /// The name it is known by inside (host name), e.g. `web.1`.
    pub hostname: String,
    /// Names that resolve to the daemon's proxy inside (intra-DNS).
    pub names: Vec<String>,
    /// How long it has to end after SIGTERM before SIGKILL.
    pub stop_grace: Duration,
    /// The environment it runs for: its tasks count against that
    /// environment's bound.
    pub tenant: String,
}

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

/// One daemon's containers: where images are unpacked, bundles and
/// runtime state kept, the shim to start, and the bridge.
pub struct Containers {
    images: PathBuf,
    bundles: PathBuf,
    /// Where containers' root filesystems are mounted (see
    /// [`Bundle::prepare`]): `/run/mesh/TAG`.
    run: PathBuf,
    state: PathBuf,
    exe: PathBuf,
    tag: String,
    network: Result<Arc<Network>, String>,
    /// Names this daemon's run (seconds since the epoch, in hex), so ids
    /// never repeat across restarts.
    boot: String,
    next: AtomicU64,
    /// Containers prepared or running, and the most there may be.
    live: Arc<std::sync::atomic::AtomicUsize>,
    max_live: usize,
    /// Containers being stopped after their owner went.
    stopping: tokio_util::task::TaskTracker,
    /// The bounds on their tasks, per environment and in all.
    tasks: Arc<Tasks>,
    /// The host id range of each environment's containers.
    ids: IdRanges,
}

/// Where the daemon tagged `tag` mounts its containers' roots: under
/// `/run` (a tmpfs: nothing outlives a reboot), apart from the data
/// directory, whose folders the containers' unprivileged roots cannot
/// pass through.
fn run_dir(tag: &str) -> PathBuf {
    Path::new("/run/mesh").join(tag)
}

/// One container counted against [`Containers`]'s bound until dropped.
struct LiveSlot(Arc<std::sync::atomic::AtomicUsize>);

impl LiveSlot {
    fn take(live: &Arc<std::sync::atomic::AtomicUsize>, max: usize) -> Option<LiveSlot> {
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

impl Containers {
    /// Opens the containers of the daemon whose data is in `data_dir`:
    /// anything a killed daemon left running there is killed and removed
    /// first. `images` is where the code store keeps unpacked images;
    /// `exe` is the daemon's binary (it is the shim too); `subnet` the
    /// bridge's `GATEWAY/PREFIX`; at most `max_live` containers run at once,
    /// with at most `tasks.0` tasks in all and `tasks.1` in one
    /// environment's unless [`Containers::set_task_limits`] says otherwise.
    pub fn open(
        data_dir: &Path,
        images: PathBuf,
        exe: PathBuf,
        subnet: &str,
        max_live: usize,
        tasks: (u64, u64),
    ) -> anyhow::Result<Arc<Containers>> {
        // Absolute, since a runtime spec's paths are read from elsewhere.
        let data_dir = &data_dir
            .canonicalize()
            .map_err(|e| anyhow::anyhow!("finding {}: {e}", data_dir.display()))?;
        let root = data_dir.join("containers");
        let (bundles, state) = (root.join("bundles"), root.join("state"));
        for d in [&images, &bundles, &state] {
            std::fs::create_dir_all(d)?;
        }
        crate::content::clean_partial(&images);
        use sha2::Digest as _;
        let tag = hex::encode(sha2::Sha256::digest(data_dir.to_string_lossy().as_bytes()))[..8]
            .to_string();
        let missing = if subnet == "none" {
            Some("they are turned off here (--container-network none)".to_string())
        } else {
            missing_support()
        };
        let network = match &missing {
            Some(why) => Err(why.clone()),
            None => NetConfig::parse(subnet).and_then(Network::open),
        };
        let tasks = Tasks::new(&tag, tasks.0, tasks.1, run_dir(&tag));
        let containers = Containers {
            tasks,
            ids: IdRanges::open(root.join("ids.json")),
            images,
            bundles,
            run: run_dir(&tag),
            state,
            exe,
            tag,
            network,
            boot: format!(
                "{:x}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs())
            ),
            next: AtomicU64::new(1),
            live: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            max_live,
            stopping: tokio_util::task::TaskTracker::new(),
        };
        let cleaned = containers.clean_leftovers();
        // What a killed daemon's containers left of their parents, and
        // what other killed daemons left in the middle of a start.
        containers.tasks.remove_all();
        super::tasks::sweep_dead(&containers.run);
        if cleaned > 0 {
            tracing::warn!(cleaned, "removed containers a previous daemon left");
        }
        if let Err(why) = &containers.network {
            tracing::info!(%why, "containers cannot run on this host");
        }
        Ok(Arc::new(containers))
    }

    /// Why containers cannot run here, if they cannot: one line naming
    /// what is missing.
    pub fn unsupported(&self) -> Option<String> {
        match &self.network {
            Ok(_) => None,
            Err(why) => Some(format!("containers cannot run on this host: {why}")),
        }
    }

    /// Waits (at most `limit`) for the containers being stopped, each
    /// given its grace period; used at shutdown, after every owner of a
    /// container has been stopped.
    pub async fn stopped(&self, limit: Duration) {
        self.stopping.close();
        let _ = tokio::time::timeout(limit, self.stopping.wait()).await;
        self.tasks.remove_all();
        // Empty once every container's folder went with it.
        if std::fs::remove_dir(&self.run).is_ok() {
            let _ = std::fs::remove_dir("/run/mesh");
        }
    }

    /// Each environment's task limit, as the operator's quotas say.
    pub fn set_task_limits(&self, limits: std::collections::HashMap<String, u64>) {
        self.tasks.set_limits(limits);
    }

    /// Tasks environment `env`'s containers have now.
    pub fn tasks_of(&self, env: &str) -> u64 {
        self.tasks.current(env)
    }

    /// Where the image of `hex` is (or would be) unpacked.
    pub fn image_dir(&self, hex: &str) -> PathBuf {
        self.images.join(hex)
    }

    /// Where images are unpacked.
    pub fn images_dir(&self) -> &Path {
        &self.images
    }

    /// The bridge's address, the containers' proxy, when there is one.
    pub fn gateway(&self) -> Option<Ipv4Addr> {
        self.network.as_ref().ok().map(|n| n.gateway())
    }

    /// Whether `address` is a container's (on the bridge's subnet).
    pub fn is_container_address(&self, address: Ipv4Addr) -> bool {
        self.network.as_ref().is_ok_and(|n| n.contains(address))
    }

    /// Kills and removes every container, bundle and link this daemon's
    /// data directory holds from before; how many containers there were.
    fn clean_leftovers(&self) -> usize {
        let mut count = 0;
        if let Ok(entries) = std::fs::read_dir(&self.state) {
            for entry in entries.filter_map(Result::ok) {
                count += 1;
                match libcontainer::container::Container::load(entry.path()) {
                    Ok(mut container) => {
                        let _ = container.kill(nix::sys::signal::Signal::SIGKILL, true);
                        if let Err(e) = container.delete(true) {
                            tracing::warn!(error = %e, "cannot delete a leftover container");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot load a leftover container"),
                }
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        bundle::clean_all(&self.bundles, &self.run);
        let _ = std::fs::remove_dir(&self.run);
        count
    }

    /// Starts a container of the image unpacked at `image_dir`.
    pub async fn start(
        self: &Arc<Self>,
        image_dir: &Path,
        launch: ContainerLaunch,
    ) -> Result<Running, StartError> {
        self.prepare(image_dir, launch)?.start().await
    }

    /// Everything before a container of the image at `image_dir` starts:
    /// its command checked, its address and bundle made. Its address is
    /// known before anything in it runs.
    pub fn prepare(
        self: &Arc<Self>,
        image_dir: &Path,
        launch: ContainerLaunch,
    ) -> Result<Prepared, StartError> {
        if let Some(why) = self.unsupported() {
            return Err(StartError::Failed(why));
        }
        let network = self.network.clone().map_err(StartError::Failed)?;
        let slot = LiveSlot::take(&self.live, self.max_live).ok_or_else(|| {
            StartError::Failed(format!(
                "this host already runs its most containers ({})",
                self.max_live
            ))
        })?;
        let settings = image::settings(image_dir)
            .ok_or_else(|| StartError::Failed("the image is not unpacked on this host".into()))?;
        let argv = settings.argv(&launch.command);
        let Some(first) = argv.first().cloned() else {
            return Err(StartError::NotFound(
                "the image has no command (no Entrypoint or Cmd): give one after --".into(),
            ));
        };
        let env = merge_env(&settings, &launch.env);
        let path = env
            .iter()
            .find_map(|kv| kv.strip_prefix("PATH="))
            .unwrap_or(settings.path_var())
            .to_string();
        let unshifted = image_dir.join(image::ROOTFS_DIR);
        if !bundle::finds_executable(&unshifted, &first, &path) {
            return Err(StartError::NotFound(format!(
                "exec: \"{first}\": not found in image"
            )));
        }
        // Root inside is the first id of the environment's range; the
        // image's files, copied once for the range, are owned as inside.
        let id_base = self
            .ids
            .base_of(&launch.tenant)
            .map_err(StartError::Failed)?;
        let lower =
            userns::shifted_root(image_dir, &unshifted, id_base).map_err(StartError::Failed)?;
        let id = format!(
            "{}-{}-{}",
            self.tag,
            self.boot,
            self.next.fetch_add(1, Ordering::Relaxed)
        );
        let (cgroup, tasks) = self
            .tasks
            .cgroup_for(&launch.tenant, &id)
            .map_err(StartError::Failed)?;
        let link = network.link(&id).map_err(StartError::Failed)?;
        let mut hosts = format!(
            "127.0.0.1\tlocalhost\n{}\t{}\n",
            link.address, launch.hostname
        );
        for name in &launch.names {
            hosts.push_str(&format!("{}\t{name}\n", network.gateway()));
        }
        let spec = BundleSpec {
            argv,
            env,
            memory_bytes: launch.memory_bytes,
            cpu_shares: 1024,
            writable_bytes: launch.writable_bytes,
            tty: launch.tty,
            hostname: &sanitize_hostname(&launch.hostname),
            cgroup: &cgroup,
            hosts,
            image: &settings,
            lower: &lower,
            id_base,
        };
        let bundle =
            Bundle::prepare(&self.bundles, &self.run, &id, &spec).map_err(StartError::Failed)?;
        let cleanup = Cleanup {
            bundle: Some(bundle),
            link: Some(link),
            _slot: slot,
            _tasks: tasks,
        };
        let net_arg = network.shim_arg(cleanup.link());
        Ok(Prepared {
            containers: self.clone(),
            id,
            cgroup,
            net_arg,
            tty: launch.tty,
            stdin: launch.stdin,
            grace: launch.stop_grace,
            cleanup,
        })
    }
}

/// A container ready to start: its bundle and address exist; dropping
/// it removes them.
pub struct Prepared {
    containers: Arc<Containers>,
    id: String,
    cgroup: String,
    net_arg: String,
    tty: bool,
    stdin: bool,
    grace: Duration,
    cleanup: Cleanup,
}

impl Prepared {
    /// The address the container will have.
    pub fn address(&self) -> Ipv4Addr {
        self.cleanup.link().address
    }

    /// Starts it through its shim; returns once it runs.
    pub async fn start(self) -> Result<Running, StartError> {
        let Prepared {
            containers,
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
        let mut command = std::process::Command::new(&containers.exe);
        command
            .arg(SHIM_ARG)
            .args(["--root", &containers.state.to_string_lossy()])
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
            stopping: containers.stopping.clone(),
            output: Vec::new(),
        })
    }
}

/// Why containers cannot run on this host, if they cannot.
fn missing_support() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("the daemon is not running as root".into());
    }
    for ns in ["pid", "net", "mnt", "uts", "ipc"] {
        if !Path::new("/proc/self/ns").join(ns).exists() {
            return Some(format!("the kernel has no {ns} namespaces"));
        }
    }
    let v1 = Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists();
    let v2 = std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
        .is_ok_and(|c| c.split_whitespace().any(|x| x == "memory"));
    if !v1 && !v2 {
        return Some("no memory cgroup controller (cgroup v1 or v2) is mounted".into());
    }
    let overlay = std::fs::read_to_string("/proc/filesystems")
        .is_ok_and(|f| f.lines().any(|l| l.trim_end().ends_with("overlay")));
    if !overlay {
        return Some("the kernel has no overlay filesystem".into());
    }
    None
}

/// The image's env with the launch's on top (same keys replaced).
fn merge_env(settings: &ImageSettings, extra: &[(String, String)]) -> Vec<String> {
    let mut env: Vec<String> = settings
        .env
        .iter()
        .filter(|kv| {
            let key = kv.split('=').next().unwrap_or("");
            !extra.iter().any(|(k, _)| k == key)
        })
        .cloned()
        .collect();
    if !env.iter().any(|kv| kv.starts_with("PATH=")) && !extra.iter().any(|(k, _)| k == "PATH") {
        env.push(format!("PATH={}", settings.path_var()));
    }
    env.extend(extra.iter().map(|(k, v)| format!("{k}={v}")));
    env
}

/// A host name from an instance id: letters, digits and `-`.
fn sanitize_hostname(id: &str) -> String {
    let name: String = id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(63)
        .collect();
    if name.is_empty() {
        "container".into()
    } else {
        name
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

/// What is left to undo after a container: its bundle and link.
struct Cleanup {
    bundle: Option<Bundle>,
    link: Option<Link>,
    _slot: LiveSlot,
    /// Counted in its environment's cgroup (dropped after the rest).
    _tasks: TaskSlot,
}

impl Cleanup {
    fn link(&self) -> &Link {
        self.link
            .as_ref()
            .expect("the link lives as long as the cleanup")
    }

    fn bundle_dir(&self) -> PathBuf {
        self.bundle
            .as_ref()
            .map(|b| b.dir.clone())
            .unwrap_or_default()
    }

    fn root_at(&self) -> PathBuf {
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
    child: Option<Child>,
    control: Option<tokio::io::BufReader<tokio::net::unix::OwnedReadHalf>>,
    commands: Option<tokio::net::unix::OwnedWriteHalf>,
    exit: Option<Exit>,
    grace: Duration,
    cleanup: Option<Cleanup>,
    stopping: tokio_util::task::TaskTracker,
    /// The tasks copying its output somewhere: they go on until it ends,
    /// whoever stops it.
    output: Vec<AbortOnDropHandle<()>>,
}

impl Running {
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
