//! Tasks (processes and threads) containers may have, bounded in three
//! places of the pids cgroup tree, so no tenant's forks can use up the
//! host's process ids and make `fork` fail for the whole machine:
//!
//! ```text
//! /mesh/<daemon tag>              pids.max: the host's pid_max less the operator's reserve
//!   /env-<environment>            pids.max: the environment's task quota
//!     /<container id>             pids.max: each container's own (4096)
//! ```
//!
//! The containers' cgroups are made by youki under their environment's;
//! this module makes and bounds the two levels above, and removes them
//! when the daemon stops (and what a killed daemon left, when it starts).
//! It also keeps the run directory the containers' roots are mounted in
//! for as long as some container lives, so neither outlives them.
//! On cgroup v1 the pids controller has its own tree; on v2 the one tree
//! must have the controller enabled in each parent.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

/// Tasks one container may have.
pub const CONTAINER_TASKS: u64 = 4096;

/// Where the pids controller is, and how.
#[derive(Clone, Debug)]
enum Tree {
    /// cgroup v1: its own hierarchy.
    V1(PathBuf),
    /// cgroup v2: the unified hierarchy.
    V2(PathBuf),
}

/// The task bounds of one daemon's containers.
pub struct Tasks {
    /// The pids tree; `None` where there is none (containers cannot run).
    tree: Option<Tree>,
    /// The daemon's own cgroup, relative to the tree's root (`/mesh/TAG`).
    base: String,
    /// The containers in each environment's cgroup, and the run
    /// directory's owner file.
    state: Mutex<State>,
    /// Each environment's limit, as the operator set it.
    limits: Mutex<HashMap<String, u64>>,
    /// The limit of an environment the operator set none for.
    default: u64,
    /// The limit of all of them together.
    total: u64,
    /// The run directory, made with the first container and removed
    /// with the last.
    run: PathBuf,
}

#[derive(Default)]
struct State {
    /// Containers live in each environment's cgroup (those that exist).
    live: HashMap<String, usize>,
    /// The run directory's owner file, locked while the directory is this
    /// daemon's (see [`sweep_dead`]).
    owner: Option<std::fs::File>,
}

/// One container counted in its environment's cgroup; when the last
/// one goes, the cgroup goes too (and the daemon's, when it was the last),
/// so a daemon killed while no container runs leaves nothing behind.
pub struct TaskSlot {
    tasks: Arc<Tasks>,
    env: String,
}

impl Drop for TaskSlot {
    fn drop(&mut self) {
        self.tasks.release(&self.env);
    }
}

impl Tasks {
    /// The task bounds of the daemon tagged `tag`: at most `total` tasks
    /// in all its containers, `default` in one environment's unless set.
    /// Nothing is made until a container needs it.
    pub fn new(tag: &str, total: u64, default: u64, run: PathBuf) -> Arc<Tasks> {
        Arc::new(Tasks {
            run,
            tree: find_tree(),
            base: format!("/mesh/{tag}"),
            state: Mutex::new(State::default()),
            limits: Mutex::new(HashMap::new()),
            default,
            total,
        })
    }

    /// The cgroup path (relative, as a runtime spec names it) of a
    /// container `id` of environment `env`, made and bounded first, and
    /// the container counted in it.
    pub fn cgroup_for(self: &Arc<Self>, env: &str, id: &str) -> Result<(String, TaskSlot), String> {
        let group = self.group(env);
        let limit = self
            .limits
            .lock()
            .get(env)
            .copied()
            .unwrap_or(self.default)
            .min(self.total);
        let mut state = self.state.lock();
        // Made and bounded at every start, whatever was made before: the
        // shims of a killed daemon may have removed them meanwhile, and a
        // parent the runtime made in their place would bound nothing.
        if let Some(dir) = self.dir(&self.base) {
            self.make(&dir, self.total)
                .map_err(|e| format!("cannot bound the containers' tasks: {e}"))?;
        }
        if let Some(dir) = self.dir(&group) {
            self.make(&dir, limit)
                .map_err(|e| format!("cannot bound environment {env}'s tasks: {e}"))?;
        }
        make_passable(&self.run)?;
        if state.owner.is_none() {
            state.owner = Some(lock_owner(&self.run)?);
        }
        *state.live.entry(env.to_string()).or_insert(0) += 1;
        let slot = TaskSlot {
            tasks: self.clone(),
            env: env.to_string(),
        };
        Ok((format!("{group}/{id}"), slot))
    }

    /// A container of `env` is gone: the last one takes the cgroups with it.
    fn release(&self, env: &str) {
        let mut state = self.state.lock();
        let Some(live) = state.live.get_mut(env) else {
            return;
        };
        *live -= 1;
        if *live > 0 {
            return;
        }
        state.live.remove(env);
        let group = self.group(env);
        for root in self.roots() {
            remove_tree(&root.join(group.trim_start_matches('/')));
        }
        if !state.live.is_empty() {
            return;
        }
        // The last container of all: the run directory and the daemon's
        // own cgroups go too.
        let _ = std::fs::remove_file(self.run.join(OWNER_FILE));
        state.owner = None;
        if std::fs::remove_dir(&self.run).is_ok() {
            if let Some(parent) = self.run.parent() {
                let _ = std::fs::remove_dir(parent);
            }
        }
        for root in self.roots() {
            if std::fs::remove_dir(root.join(self.base.trim_start_matches('/'))).is_ok() {
                let _ = std::fs::remove_dir(root.join("mesh"));
            }
        }
    }

    /// The cgroup of environment `env`'s containers.
    fn group(&self, env: &str) -> String {
        format!("{}/env-{env}", self.base)
    }

    /// Sets each environment's task limit (the operator's quotas); those
    /// whose cgroup exists are bounded anew at once.
    pub fn set_limits(&self, mut limits: HashMap<String, u64>) {
        for limit in limits.values_mut() {
            *limit = (*limit).min(self.total);
        }
        // Under the state lock: no cgroup is made or removed meanwhile.
        let state = self.state.lock();
        let mut known = self.limits.lock();
        for (env, limit) in &limits {
            // Written only where it changed and the cgroup is there (it is
            // written anew at each container's start anyway).
            let unchanged = known.get(env).unwrap_or(&self.default).min(&self.total) == limit;
            if unchanged || !state.live.contains_key(env) {
                continue;
            }
            if let Some(dir) = self.dir(&self.group(env)) {
                if let Err(e) = write_max(&dir, *limit) {
                    tracing::warn!(env, error = %e, "cannot change a task limit");
                }
            }
        }
        *known = limits;
    }

    /// Tasks environment `env`'s containers have now.
    pub fn current(&self, env: &str) -> u64 {
        self.dir(&self.group(env))
            .and_then(|dir| std::fs::read_to_string(dir.join("pids.current")).ok())
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Removes the daemon's cgroups (empty by now: every container's was
    /// removed with it); what cannot be removed is left and said. On
    /// cgroup v1 the runtime made the containers' parents in every
    /// controller's tree, so each is cleaned.
    pub fn remove_all(&self) {
        let relative = self.base.trim_start_matches('/');
        for root in self.roots() {
            remove_tree(&root.join(relative));
            // The parent all daemons share, once it is empty.
            let _ = std::fs::remove_dir(root.join("mesh"));
        }
    }

    /// The root of each hierarchy the containers' cgroups are in.
    fn roots(&self) -> Vec<PathBuf> {
        match &self.tree {
            Some(Tree::V1(_)) => v1_roots(),
            Some(Tree::V2(root)) => vec![root.clone()],
            None => Vec::new(),
        }
    }

    /// The directory of cgroup `relative` in the pids tree.
    fn dir(&self, relative: &str) -> Option<PathBuf> {
        let root = match self.tree.as_ref()? {
            Tree::V1(root) | Tree::V2(root) => root,
        };
        Some(root.join(relative.trim_start_matches('/')))
    }

    /// Makes `dir` (and its parents) with the pids controller on, and
    /// writes its limit.
    fn make(&self, dir: &Path, limit: u64) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        if let Some(Tree::V2(root)) = &self.tree {
            // Each parent down to `dir` hands the controller on.
            let mut at = root.clone();
            for part in dir
                .strip_prefix(root)
                .into_iter()
                .flat_map(Path::components)
            {
                std::fs::write(at.join("cgroup.subtree_control"), "+pids")?;
                at.push(part);
            }
            std::fs::write(dir.join("cgroup.subtree_control"), "+pids")?;
        }
        write_max(dir, limit)
    }
}

/// The file in a daemon's run directory it holds a lock on while it lives.
const OWNER_FILE: &str = ".owner";

/// Creates and locks the owner file of the run directory `run`.
fn lock_owner(run: &Path) -> Result<std::fs::File, String> {
    use std::os::fd::AsRawFd as _;
    let path = run.join(OWNER_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(format!(
            "{} is locked: another daemon uses this data directory",
            path.display()
        ));
    }
    Ok(file)
}

/// Removes what daemons killed while they prepared a container left under
/// `/run/mesh` (a root mounted before its shim started, which nobody else
/// unmounts) and their cgroups: a run directory whose owner file nobody
/// holds locked belongs to no live daemon. Called when a daemon starts.
pub fn sweep_dead(own: &Path) {
    use std::os::fd::AsRawFd as _;
    let Some(all) = own.parent() else { return };
    let Ok(entries) = std::fs::read_dir(all) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let run = entry.path();
        if run == own {
            continue;
        }
        // No owner file: a daemon may be making it now; left alone.
        let Ok(owner) = std::fs::File::open(run.join(OWNER_FILE)) else {
            continue;
        };
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(owner.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            continue;
        }
        if let Ok(roots) = std::fs::read_dir(&run) {
            for root in roots.filter_map(Result::ok).filter(|r| r.path().is_dir()) {
                super::bundle::remove_root_at(&root.path());
            }
        }
        // Unlocked again for the check below, which locks it itself.
        drop(owner);
        if remove_unowned(&run) {
            tracing::info!(run = %run.display(), "removed what a killed daemon left");
        }
        let tag = entry.file_name().to_string_lossy().into_owned();
        Tasks::new(&tag, 0, 0, run).remove_all();
    }
}

/// Removes the run directory `run` (and `/run/mesh` when it is the last)
/// once nothing but its owner file is left and no live daemon holds that:
/// the shims of a killed daemon call it as they end. Whether it was.
pub fn remove_unowned(run: &Path) -> bool {
    use std::os::fd::AsRawFd as _;
    if let Ok(owner) = std::fs::File::open(run.join(OWNER_FILE)) {
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(owner.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return false;
        }
        let others = std::fs::read_dir(run)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .any(|e| e.file_name() != OWNER_FILE)
            })
            .unwrap_or(true);
        if others {
            return false;
        }
        let _ = std::fs::remove_file(run.join(OWNER_FILE));
    }
    let removed = std::fs::remove_dir(run).is_ok();
    if removed {
        if let Some(all) = run.parent() {
            let _ = std::fs::remove_dir(all);
        }
    }
    removed
}

/// Makes `dir` and its parent passable (not readable) by everyone.
fn make_passable(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut dirs = vec![dir];
    dirs.extend(dir.parent());
    for dir in dirs.into_iter().rev() {
        match std::fs::create_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("{}: {e}", dir.display())),
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    Ok(())
}

/// Removes what is empty of a container's parents (`cgroup` names the
/// container's own, already removed): its environment's, the daemon's
/// and the shared `/mesh`, in every hierarchy. The shim calls it when the
/// daemon is gone and nobody else will; a parent still in use stays.
pub fn remove_parents(cgroup: &Path) {
    let roots = match find_tree() {
        Some(Tree::V1(_)) => v1_roots(),
        Some(Tree::V2(root)) => vec![root],
        None => return,
    };
    let relative = cgroup.strip_prefix("/").unwrap_or(cgroup);
    for root in roots {
        for parent in relative.ancestors().skip(1) {
            if parent.as_os_str().is_empty() || std::fs::remove_dir(root.join(parent)).is_err() {
                break;
            }
        }
    }
}

/// The roots of the cgroup v1 hierarchies mounted here.
fn v1_roots() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|root| root.join("cgroup.procs").exists())
        .collect()
}

fn write_max(dir: &Path, limit: u64) -> std::io::Result<()> {
    std::fs::write(dir.join("pids.max"), limit.to_string())
}

/// Removes a cgroup and the empty ones under it, deepest first.
fn remove_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.filter_map(Result::ok) {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&entry.path());
            }
        }
    }
    if let Err(e) = std::fs::remove_dir(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(cgroup = %dir.display(), error = %e, "cannot remove a cgroup");
        }
    }
}

/// The pids controller's hierarchy on this host.
fn find_tree() -> Option<Tree> {
    let v1 = Path::new("/sys/fs/cgroup/pids");
    if v1.join("cgroup.procs").exists() {
        return Some(Tree::V1(v1.to_path_buf()));
    }
    let v2 = Path::new("/sys/fs/cgroup");
    let controllers = std::fs::read_to_string(v2.join("cgroup.controllers")).ok()?;
    controllers
        .split_whitespace()
        .any(|c| c == "pids")
        .then(|| Tree::V2(v2.to_path_buf()))
}

/// Tasks this host can have at all: the lower of `kernel.pid_max` and
/// `kernel.threads-max`.
pub fn host_capacity() -> u64 {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok())
    };
    match (
        read("/proc/sys/kernel/pid_max"),
        read("/proc/sys/kernel/threads-max"),
    ) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => 32_768,
    }
}
