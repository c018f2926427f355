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
//! On cgroup v1 the pids controller has its own tree; on v2 the one tree
//! must have the controller enabled in each parent.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

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
    /// Environment cgroups made, with the limit written.
    made: Mutex<HashMap<String, u64>>,
    /// Each environment's limit, as the operator set it.
    limits: Mutex<HashMap<String, u64>>,
    /// The limit of an environment the operator set none for.
    default: u64,
    /// The limit of all of them together.
    total: u64,
}

impl Tasks {
    /// The task bounds of the daemon tagged `tag`: at most `total` tasks
    /// in all its containers, `default` in one environment's unless set.
    pub fn new(tag: &str, total: u64, default: u64) -> Tasks {
        Tasks {
            tree: find_tree(),
            base: format!("/mesh/{tag}"),
            made: Mutex::new(HashMap::new()),
            limits: Mutex::new(HashMap::new()),
            default,
            total,
        }
    }

    /// Makes the daemon's own cgroup, bounded by the total (call after
    /// [`Tasks::remove_all`] has cleared what a killed daemon left).
    pub fn bound_all(&self) -> std::io::Result<()> {
        match self.dir(&self.base) {
            Some(dir) => self.make(&dir, self.total),
            None => Ok(()),
        }
    }

    /// The cgroup path (relative, as a runtime spec names it) of a
    /// container `id` of environment `env`, made and bounded first.
    pub fn cgroup_for(&self, env: &str, id: &str) -> Result<String, String> {
        let group = format!("{}/env-{env}", self.base);
        let limit = self
            .limits
            .lock()
            .get(env)
            .copied()
            .unwrap_or(self.default)
            .min(self.total);
        let mut made = self.made.lock();
        if made.get(env) != Some(&limit) {
            if let Some(dir) = self.dir(&group) {
                self.make(&dir, limit)
                    .map_err(|e| format!("cannot bound environment {env}'s tasks: {e}"))?;
            }
            made.insert(env.to_string(), limit);
        }
        Ok(format!("{group}/{id}"))
    }

    /// Sets each environment's task limit (the operator's quotas); those
    /// whose cgroup exists are bounded anew at once.
    pub fn set_limits(&self, mut limits: HashMap<String, u64>) {
        for limit in limits.values_mut() {
            *limit = (*limit).min(self.total);
        }
        let mut made = self.made.lock();
        for (env, limit) in &limits {
            if made.get(env).is_some_and(|l| l != limit) {
                if let Some(dir) = self.dir(&format!("{}/env-{env}", self.base)) {
                    match write_max(&dir, *limit) {
                        Ok(()) => {
                            made.insert(env.clone(), *limit);
                        }
                        Err(e) => tracing::warn!(env, error = %e, "cannot change a task limit"),
                    }
                }
            }
        }
        *self.limits.lock() = limits;
    }

    /// Tasks environment `env`'s containers have now.
    pub fn current(&self, env: &str) -> u64 {
        self.dir(&format!("{}/env-{env}", self.base))
            .and_then(|dir| std::fs::read_to_string(dir.join("pids.current")).ok())
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Removes the daemon's cgroups (empty by now: every container's was
    /// removed with it); what cannot be removed is left and said.
    /// On cgroup v1 the runtime made the containers' parents in every
    /// controller's tree, so each is cleaned.
    pub fn remove_all(&self) {
        let relative = self.base.trim_start_matches('/');
        match &self.tree {
            Some(Tree::V1(pids)) => {
                let roots = pids.parent().and_then(|all| std::fs::read_dir(all).ok());
                for entry in roots.into_iter().flatten().filter_map(Result::ok) {
                    let root = entry.path();
                    if root.join("cgroup.procs").exists() {
                        remove_tree(&root.join(relative));
                        // The parent all daemons share, once it is empty.
                        let _ = std::fs::remove_dir(root.join("mesh"));
                    }
                }
            }
            Some(Tree::V2(root)) => {
                remove_tree(&root.join(relative));
                let _ = std::fs::remove_dir(root.join("mesh"));
            }
            None => {}
        }
        self.made.lock().clear();
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
