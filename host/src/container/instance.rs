//! One daemon's containers ([`Containers`]): opening them (killing what a
//! killed daemon left), and preparing one to start: its command checked
//! against the image, its address, ids, cgroup and bundle made. Each then
//! starts under its own shim process (`start.rs`, `shim.rs`), which the
//! daemon talks to over a socket; [`Running`] (`running.rs`) is one
//! container, stopped (SIGTERM, then SIGKILL after its grace period) and
//! cleaned up when dropped.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::bundle::{self, Bundle, BundleSpec};
use super::image::{self, ImageSettings};
use super::net::{NetConfig, Network};
use super::running::{Cleanup, LiveSlot, Running};
use super::tasks::Tasks;
use super::userns::{self, IdRanges};

pub use super::start::{Prepared, StartError};

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
        record_network(&root, network.as_ref().ok().map(|n| n.tag()));
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
        if let Ok(network) = &self.network {
            network.close();
            if let Some(root) = self.state.parent() {
                record_network(root, None);
            }
        }
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
            let shell = ["bash", "/bin/bash", "/usr/bin/bash"].contains(&first.as_str())
                && bundle::finds_executable(&unshifted, "/bin/sh", &path);
            let hint = if shell { "; try /bin/sh" } else { "" };
            return Err(StartError::NotFound(format!(
                "exec: \"{first}\": not found in image{hint}"
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
            exe: self.exe.clone(),
            state: self.state.clone(),
            stopping: self.stopping.clone(),
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

/// Where a daemon of this data directory keeps the tag of its bridge.
const NETWORK_RECORD: &str = "network";

/// Records the bridge this daemon makes (`None`: it has none now), first
/// removing one that a daemon of the same data directory made on another
/// subnet and left (it was killed, or `--container-network` changed):
/// its own old bridge `Network::open` already took over.
fn record_network(root: &Path, now: Option<String>) {
    let file = root.join(NETWORK_RECORD);
    if let Ok(old) = std::fs::read_to_string(&file) {
        let old = old.trim();
        let ours = !old.is_empty() && old.bytes().all(|b| b.is_ascii_hexdigit());
        if ours && Some(old) != now.as_deref() {
            super::net::remove(old);
        }
    }
    let _ = match now {
        Some(tag) => std::fs::write(&file, tag),
        None => std::fs::remove_file(&file),
    };
}
