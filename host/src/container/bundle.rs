//! One container's OCI bundle: the image's root filesystem, read-only,
//! under a private writable layer (overlayfs whose upper directory lives
//! on a tmpfs capped at the instance's writable size, so a container
//! cannot fill the host's disk), and the runtime config: namespaces,
//! cgroup limits, capabilities, seccomp, the process to run.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::image::{ImageSettings, ROOTFS_DIR};
use super::userns::IDS_PER_ENVIRONMENT;

/// Capabilities a container keeps: Docker's default set without
/// `NET_RAW` and `MKNOD`.
const CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// System calls a container may not make (they fail with `EPERM`): the
/// kernel's administrative and introspection calls, kept out the way
/// Docker's default profile keeps them out.
const DENIED_SYSCALLS: &[&str] = &[
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "get_kernel_syms",
    "get_mempolicy",
    "init_module",
    "ioperm",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mbind",
    "mount",
    "mount_setattr",
    "move_mount",
    "move_pages",
    "name_to_handle_at",
    "nfsservctl",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "personality",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "query_module",
    "quotactl",
    "reboot",
    "request_key",
    "set_mempolicy",
    "setns",
    "settimeofday",
    "swapoff",
    "swapon",
    "syslog",
    "umount",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
    "vm86",
    "vm86old",
    // io_uring reaches much of the kernel past seccomp's view of each
    // call (Docker's default profile refuses it too).
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
];

/// `clone` flags that make a namespace: refused, since a new user
/// namespace gives back inside it the capabilities (NET_RAW, NET_ADMIN)
/// the container was denied, and with them the kernel's nf_tables and
/// AF_PACKET code. `unshare` and `setns` are denied outright.
const NAMESPACE_FLAGS: &[u64] = &[
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWCGROUP as u64,
];

/// The seccomp filter: everything allowed but [`DENIED_SYSCALLS`]
/// (`EPERM`), `clone` with any of [`NAMESPACE_FLAGS`] (`EPERM`), and
/// `clone3` (`ENOSYS`, so C libraries fall back to `clone`, whose flags a
/// filter can read; `clone3`'s sit in memory it cannot).
fn seccomp() -> Value {
    let mut rules = vec![json!({
        "names": DENIED_SYSCALLS, "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EPERM,
    })];
    // One rule a flag: any flag set is refused. (`value` and `valueTwo`
    // both name it, as mask and datum alike, whichever way a runtime
    // reads them.)
    for flag in NAMESPACE_FLAGS {
        rules.push(json!({
            "names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EPERM,
            "args": [{"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}],
        }));
    }
    rules.push(json!({
        "names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::ENOSYS,
    }));
    json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": rules})
}

/// What one container runs, as the bundle needs it.
pub struct BundleSpec<'a> {
    /// argv, resolved against the image (entrypoint, command).
    pub argv: Vec<String>,
    /// `KEY=VALUE`, the image's first, then the service's.
    pub env: Vec<String>,
    /// Memory limit in bytes.
    pub memory_bytes: u64,
    /// Relative CPU weight (cgroup v1 `cpu.shares`).
    pub cpu_shares: u64,
    /// Bytes the container may write to its own layer.
    pub writable_bytes: u64,
    /// Whether its stdio is a terminal.
    pub tty: bool,
    /// Host name inside.
    pub hostname: &'a str,
    /// The cgroup path.
    pub cgroup: &'a str,
    /// `/etc/hosts` for inside.
    pub hosts: String,
    /// The image's settings.
    pub image: &'a ImageSettings,
    /// The image's root, its owners shifted to the container's id range.
    pub lower: &'a Path,
    /// The first host id of the container's range (its root on the host).
    pub id_base: u32,
}

/// A prepared bundle; [`Bundle::remove`] unmounts and deletes it.
pub struct Bundle {
    /// The bundle directory (holding `config.json`).
    pub dir: PathBuf,
    /// Where its root filesystem is mounted: a path the container's own
    /// root (an unprivileged host id) can reach, unlike the data
    /// directory's (see [`Bundle::prepare`]).
    root_at: PathBuf,
    mounts: Vec<PathBuf>,
}

impl Bundle {
    /// Makes the bundle for container `id` under `bundles`, its root
    /// filesystem mounted under `run`: the runtime, already in the
    /// container's user namespace, mounts it from there, so every folder
    /// down to it must let the container's root through (`run` and its
    /// parents do; the data directory's are the daemon's alone). The
    /// container's own folder there is its root's alone.
    pub fn prepare(
        bundles: &Path,
        run: &Path,
        id: &str,
        spec: &BundleSpec<'_>,
    ) -> Result<Bundle, String> {
        let dir = bundles.join(id);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut bundle = Bundle {
            dir: dir.clone(),
            root_at: run.join(id),
            mounts: Vec::new(),
        };
        let result = bundle.fill(spec);
        if let Err(e) = result {
            bundle.remove();
            return Err(e);
        }
        Ok(bundle)
    }

    fn fill(&mut self, spec: &BundleSpec<'_>) -> Result<(), String> {
        use nix::mount::{mount, MsFlags};
        let rw = self.dir.join("rw");
        let rootfs = self.root_at.join(ROOTFS_DIR);
        for d in [&rw, &self.root_at, &rootfs] {
            std::fs::create_dir(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        std::os::unix::fs::lchown(&self.root_at, Some(spec.id_base), Some(spec.id_base))
            .map_err(|e| format!("{}: {e}", self.root_at.display()))?;
        // The bundle names it too, for whoever cleans up after the daemon.
        std::os::unix::fs::symlink(&rootfs, self.dir.join(ROOTFS_DIR))
            .map_err(|e| format!("{}: {e}", self.dir.display()))?;
        let size = format!("size={},mode=0700", spec.writable_bytes.max(1 << 20));
        mount(
            Some("mesh-rw"),
            &rw,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(size.as_str()),
        )
        .map_err(|e| format!("mounting the writable layer: {e}"))?;
        self.mounts.push(rw.clone());
        let (upper, work) = (rw.join("upper"), rw.join("work"));
        for d in [&upper, &work] {
            std::fs::create_dir(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        let lower = spec.lower.to_path_buf();
        // The names and addresses a container knows, in its own layer:
        // no bind mount names a host path inside. They, and the layer's
        // root (the container's `/`), belong to the container's root.
        let etc = upper.join("etc");
        std::fs::create_dir(&etc).map_err(|e| format!("{}: {e}", etc.display()))?;
        std::fs::write(etc.join("hosts"), &spec.hosts).map_err(|e| format!("hosts: {e}"))?;
        // No DNS server is reachable; names come from /etc/hosts.
        std::fs::write(etc.join("resolv.conf"), "options ndots:0\n")
            .map_err(|e| format!("resolv.conf: {e}"))?;
        let root_of_lower = std::fs::metadata(&lower).map_err(|e| format!("{e}"))?;
        {
            use std::os::unix::fs::PermissionsExt as _;
            let modes = [
                (&upper, root_of_lower.permissions().mode() & 0o7777),
                (&etc, 0o755),
                (&etc.join("hosts"), 0o644),
                (&etc.join("resolv.conf"), 0o644),
            ];
            for (path, mode) in modes {
                std::os::unix::fs::lchown(path, Some(spec.id_base), Some(spec.id_base))
                    .and_then(|()| {
                        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                    })
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        // The layers are named by open descriptors, so the mount's options
        // (in the container's /proc/mounts) show no path of the host's.
        let open =
            |dir: &Path| std::fs::File::open(dir).map_err(|e| format!("{}: {e}", dir.display()));
        let held = [open(&lower)?, open(&upper)?, open(&work)?];
        let [l, u, w] = held.each_ref().map(|f| {
            use std::os::fd::AsRawFd as _;
            format!("/proc/self/fd/{}", f.as_raw_fd())
        });
        let options = format!("lowerdir={l},upperdir={u},workdir={w}");
        mount(
            Some("mesh-overlay"),
            &rootfs,
            Some("overlay"),
            MsFlags::empty(),
            Some(options.as_str()),
        )
        .map_err(|e| format!("mounting the image's root filesystem (overlay): {e}"))?;
        drop(held);
        self.mounts.push(rootfs.clone());
        let (uid, gid) = user_ids(&lower, &spec.image.user)?;
        let config = config_json(spec, &rootfs, uid, gid);
        let text = serde_json::to_vec_pretty(&config).map_err(|e| e.to_string())?;
        std::fs::write(self.dir.join("config.json"), text).map_err(|e| format!("config.json: {e}"))
    }

    /// Where its root filesystem's folder is (outside the bundle).
    pub fn root_at(&self) -> &Path {
        &self.root_at
    }

    /// Unmounts and deletes the bundle.
    pub fn remove(&mut self) {
        for mount in self.mounts.drain(..).rev() {
            let _ = nix::mount::umount2(&mount, nix::mount::MntFlags::MNT_DETACH);
        }
        remove_root_at(&self.root_at);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Unmounts and removes a container's folder under the run directory:
/// one folder at a time, never recursively, so nothing still mounted there
/// is deleted.
pub fn remove_root_at(root_at: &Path) {
    let rootfs = root_at.join(ROOTFS_DIR);
    let _ = nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH);
    let _ = std::fs::remove_dir(&rootfs);
    let _ = std::fs::remove_dir(root_at);
}

/// Unmounts and removes every bundle left under `bundles`, and every
/// root's folder under `run` (by a daemon that was killed).
pub fn clean_all(bundles: &Path, run: &Path) -> usize {
    if let Ok(entries) = std::fs::read_dir(run) {
        for entry in entries.filter_map(Result::ok) {
            remove_root_at(&entry.path());
        }
    }
    let Ok(entries) = std::fs::read_dir(bundles) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.filter_map(Result::ok) {
        let dir = entry.path();
        for sub in [ROOTFS_DIR, "rw"] {
            let _ = nix::mount::umount2(&dir.join(sub), nix::mount::MntFlags::MNT_DETACH);
        }
        if std::fs::remove_dir_all(&dir).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// The uid and gid the image's `User` names: numbers, or names looked up
/// in the image's own `/etc/passwd` and `/etc/group`.
fn user_ids(rootfs: &Path, user: &str) -> Result<(u32, u32), String> {
    if user.is_empty() {
        return Ok((0, 0));
    }
    let (name, group) = user.split_once(':').unwrap_or((user, ""));
    let lookup = |file: &str, key: &str| -> Option<(u32, u32)> {
        let path = rootfs.join(file);
        // Only a plain file of the image, never a link out of it.
        if !std::fs::symlink_metadata(&path).ok()?.is_file() {
            return None;
        }
        let text = std::fs::read_to_string(path).ok()?;
        text.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&key)).then(|| {
                let id = fields.get(2)?.parse().ok()?;
                let gid = fields.get(3).and_then(|g| g.parse().ok()).unwrap_or(id);
                Some((id, gid))
            })?
        })
    };
    let (uid, mut gid) = match name.parse::<u32>() {
        Ok(uid) => (uid, lookup_gid_of_uid(rootfs, uid).unwrap_or(uid)),
        Err(_) => lookup("etc/passwd", name)
            .ok_or_else(|| format!("the image's user {name} is not in its /etc/passwd"))?,
    };
    if !group.is_empty() {
        gid = match group.parse::<u32>() {
            Ok(g) => g,
            Err(_) => lookup("etc/group", group)
                .map(|(g, _)| g)
                .ok_or_else(|| format!("the image's group {group} is not in its /etc/group"))?,
        };
    }
    Ok((uid, gid))
}

fn lookup_gid_of_uid(rootfs: &Path, uid: u32) -> Option<u32> {
    let path = rootfs.join("etc/passwd");
    if !std::fs::symlink_metadata(&path).ok()?.is_file() {
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.get(2)?.parse::<u32>().ok()? == uid).then(|| fields.get(3)?.parse().ok())?
    })
}

/// Whether `argv0` names an executable in the image at `rootfs`, looked
/// up on `path` as `execvp` would, with symlinks followed inside the
/// image's root only.
pub fn finds_executable(rootfs: &Path, argv0: &str, path: &str) -> bool {
    let candidates: Vec<String> = if argv0.contains('/') {
        vec![argv0.to_string()]
    } else {
        path.split(':')
            .filter(|d| !d.is_empty())
            .map(|d| format!("{}/{argv0}", d.trim_end_matches('/')))
            .collect()
    };
    candidates.iter().any(|c| {
        resolve_inside(rootfs, c).is_some_and(|real| {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::symlink_metadata(real)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// `name` resolved as if `rootfs` were `/`: symlinks followed within it.
fn resolve_inside(rootfs: &Path, name: &str) -> Option<PathBuf> {
    let mut parts: Vec<String> = name
        .split('/')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    parts.reverse();
    let mut at: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(part) = parts.pop() {
        match part.as_str() {
            "." => continue,
            ".." => {
                at.pop();
                continue;
            }
            _ => {}
        }
        at.push(part);
        let real = at.iter().fold(rootfs.to_path_buf(), |p, s| p.join(s));
        let meta = std::fs::symlink_metadata(&real).ok()?;
        if meta.file_type().is_symlink() {
            hops += 1;
            if hops > 40 {
                return None;
            }
            let target = std::fs::read_link(&real).ok()?;
            let target = target.to_string_lossy().into_owned();
            at.pop();
            if target.starts_with('/') {
                at.clear();
            }
            let mut more: Vec<String> = target
                .split('/')
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect();
            more.reverse();
            parts.extend(more);
        }
    }
    Some(at.iter().fold(rootfs.to_path_buf(), |p, s| p.join(s)))
}

fn config_json(spec: &BundleSpec<'_>, rootfs: &Path, uid: u32, gid: u32) -> Value {
    let cwd = if spec.image.working_dir.is_empty() {
        "/".to_string()
    } else {
        spec.image.working_dir.clone()
    };
    let caps: Vec<&str> = CAPABILITIES.to_vec();
    let memory = spec.memory_bytes as i64;
    let mut memory_limits = json!({"limit": memory});
    if Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists() {
        // No swap past the limit: the limit is the limit.
        memory_limits["swap"] = json!(memory);
    }
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": spec.tty,
            // Files it makes are readable by others, as under Docker (the
            // daemon's own umask is 077).
            "user": {"uid": uid, "gid": gid, "umask": 0o022},
            "args": spec.argv,
            "env": spec.env,
            "cwd": cwd,
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps,
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 4096u64, "soft": 4096u64}],
            "noNewPrivileges": true,
        },
        "root": {"path": rootfs, "readonly": false},
        "hostname": spec.hostname,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
        ],
        "linux": {
            "cgroupsPath": spec.cgroup,
            "resources": {
                "devices": [{"allow": false, "access": "rwm"}],
                "memory": memory_limits,
                "cpu": {"shares": spec.cpu_shares},
                "pids": {"limit": 4096},
            },
            "namespaces": [
                {"type": "user"}, {"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                {"type": "uts"}, {"type": "mount"},
            ],
            // Root inside is an unprivileged id of the environment's range.
            "uidMappings": [{"containerID": 0, "hostID": spec.id_base, "size": IDS_PER_ENVIRONMENT}],
            "gidMappings": [{"containerID": 0, "hostID": spec.id_base, "size": IDS_PER_ENVIRONMENT}],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
            ],
            "seccomp": seccomp(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executables_are_found_through_links_inside_the_image_only() {
        let root = tempfile::tempdir().expect("tempdir");
        let r = root.path();
        std::fs::create_dir_all(r.join("bin")).expect("bin");
        std::fs::create_dir_all(r.join("usr/bin")).expect("usr/bin");
        std::fs::write(r.join("bin/busybox"), "x").expect("busybox");
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(
            r.join("bin/busybox"),
            std::fs::Permissions::from_mode(0o755),
        )
        .expect("chmod");
        std::os::unix::fs::symlink("/bin/busybox", r.join("bin/sh")).expect("sh");
        std::os::unix::fs::symlink("../../bin/busybox", r.join("usr/bin/env")).expect("env");
        // A link out of the image resolves inside it, where nothing is.
        std::os::unix::fs::symlink("/usr/bin/python3", r.join("bin/py")).expect("py");
        let path = "/usr/bin:/bin";
        assert!(finds_executable(r, "sh", path));
        assert!(finds_executable(r, "env", path));
        assert!(finds_executable(r, "/bin/sh", path));
        assert!(!finds_executable(r, "nde", path));
        assert!(!finds_executable(r, "py", path));
    }

    #[test]
    fn an_images_user_is_taken_from_its_own_passwd_and_group() {
        let root = tempfile::tempdir().expect("tempdir");
        let r = root.path();
        std::fs::create_dir_all(r.join("etc")).expect("etc");
        std::fs::write(
            r.join("etc/passwd"),
            "root:x:0:0::/:/bin/sh\nnode:x:1000:1001::/home/node:/bin/sh\n",
        )
        .expect("passwd");
        std::fs::write(r.join("etc/group"), "root:x:0:\nstaff:x:50:\n").expect("group");
        assert_eq!(user_ids(r, ""), Ok((0, 0)));
        assert_eq!(user_ids(r, "node"), Ok((1000, 1001)));
        assert_eq!(user_ids(r, "1000"), Ok((1000, 1001)));
        assert_eq!(user_ids(r, "node:staff"), Ok((1000, 50)));
        assert_eq!(user_ids(r, "77:88"), Ok((77, 88)));
        assert!(user_ids(r, "nobody").is_err());
        // A passwd that links out of the image is not read.
        std::fs::remove_file(r.join("etc/passwd")).expect("rm");
        std::os::unix::fs::symlink("/etc/passwd", r.join("etc/passwd")).expect("link");
        assert!(user_ids(r, "root").is_err());
    }
}
