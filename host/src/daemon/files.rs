//! The data directory: its lock, its permissions, `daemon.json`.

use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// The file clients read to find the daemon, in the data directory.
pub const DAEMON_FILE: &str = "daemon.json";

/// Contents of `daemon.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DaemonInfo {
    /// Control API base URL.
    pub api_url: String,
    /// Ingress base URL.
    pub http_url: String,
    /// HTTPS ingress base URL, when it listens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_url: Option<String>,
    /// The CA certificate HTTPS clients should trust (the local CA's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// The operator's token.
    pub token: String,
    /// Environment the token acts on by default.
    pub environment: String,
}

/// Creates the data directory (mode 0700) and holds its lock.
pub(super) fn prepare_data_dir(data_dir: &Path) -> anyhow::Result<File> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("restricting {}", data_dir.display()))?;
    lock_data_dir(data_dir)
}

/// Every instance costs a few memory mappings (its stack guard page, its
/// memories), and the kernel's `vm.max_map_count` caps them: past it
/// instances fail to start. Says at start how many fit, and plainly how
/// to raise the limit when `max_instances` do not.
pub(super) fn report_map_count_limit(max_instances: u32) {
    let Some(limit) = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
    else {
        return;
    };
    let (room, needed) = map_count_room(limit, max_instances);
    if room >= u64::from(max_instances) {
        tracing::info!(
            vm.max_map_count = limit,
            "room for about {room} live instances"
        );
    } else {
        tracing::warn!(
            vm.max_map_count = limit,
            "the kernel allows memory mappings for about {room} live instances, fewer than --max-instances {max_instances}: instances past that fail to start; raise it with `sysctl -w vm.max_map_count={needed}` (as root)"
        );
    }
}

/// Live instances `limit` mappings hold, and the limit `max_instances`
/// need (rounded up to a power of two).
fn map_count_room(limit: u64, max_instances: u32) -> (u64, u64) {
    use crate::runtime::setup::MAPPINGS_PER_INSTANCE;
    // The daemon's own mappings: its binary, libraries, heaps, threads.
    const BASE: u64 = 4096;
    let room = limit.saturating_sub(BASE) / MAPPINGS_PER_INSTANCE;
    let needed = (BASE + u64::from(max_instances) * MAPPINGS_PER_INSTANCE).next_power_of_two();
    (room, needed)
}

/// Tries at taking the data directory's lock, 20 ms apart.
const LOCK_TRIES: usize = 25;

/// Holds an exclusive lock on the data directory for the daemon's life, so
/// two daemons never share one.
fn lock_data_dir(data_dir: &Path) -> anyhow::Result<File> {
    let path = data_dir.join("lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    // A client waiting for this daemon to start tests the lock with a
    // shared one it lets go of at once: a few tries get past it.
    for _ in 0..LOCK_TRIES {
        if file.try_lock().is_ok() {
            return Ok(file);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Err(anyhow::anyhow!(
        "another mesh daemon is already using {} (its lock file is held)",
        data_dir.display()
    ))
}

/// The file holding the operator's token, in the data directory.
pub(super) const OPERATOR_TOKEN_FILE: &str = "operator.token";

/// The operator's token: read from `operator.token`, or (first start, or
/// the file deleted to rotate it) `legacy` or a new one, written there
/// with mode 0600.
pub(super) fn operator_token(data_dir: &Path, legacy: Option<String>) -> anyhow::Result<String> {
    let path = data_dir.join(OPERATOR_TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(token) if !token.trim().is_empty() => return Ok(token.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let token = legacy.unwrap_or_else(crate::auth::new_token);
    write_private(
        data_dir,
        OPERATOR_TOKEN_FILE,
        format!("{token}\n").as_bytes(),
    )?;
    Ok(token)
}

/// This data directory's id (made on first use): a host restarted on it
/// is the same host.
pub(super) fn node_id(data_dir: &Path) -> anyhow::Result<String> {
    const NODE_ID_FILE: &str = "node.id";
    let path = data_dir.join(NODE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let id = crate::auth::new_token();
    write_private(data_dir, NODE_ID_FILE, format!("{id}\n").as_bytes())?;
    Ok(id)
}

/// Replaces the operator's token (a host joining a cluster takes the
/// cluster's).
pub(super) fn set_operator_token(data_dir: &Path, token: &str) -> anyhow::Result<()> {
    write_private(
        data_dir,
        OPERATOR_TOKEN_FILE,
        format!("{token}\n").as_bytes(),
    )
}

/// Writes `daemon.json` (mode 0600) atomically.
pub(super) fn write_daemon_file(data_dir: &Path, info: &DaemonInfo) -> anyhow::Result<()> {
    write_private(data_dir, DAEMON_FILE, &serde_json::to_vec_pretty(info)?)
}

/// Removes `daemon.json`: no client finds a stopped daemon.
pub(super) fn remove_daemon_file(data_dir: &Path) {
    let _ = std::fs::remove_file(data_dir.join(DAEMON_FILE));
}

/// Writes a file only its owner can read (mode 0600), atomically.
fn write_private(data_dir: &Path, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
    let path = data_dir.join(name);
    let tmp = data_dir.join(format!(".{name}.tmp"));
    let mut file = File::options()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Makes every file the daemon creates from now on private to its user
/// (state, logs, code), and restricts what is already in `data_dir`.
pub(super) fn make_files_private(data_dir: &Path) -> anyhow::Result<()> {
    // SAFETY: umask only sets the process's file-creation mask.
    unsafe { libc::umask(0o077) };
    for entry in std::fs::read_dir(data_dir)
        .with_context(|| format!("reading {}", data_dir.display()))?
        .flatten()
    {
        let mode = if entry.file_type().is_ok_and(|t| t.is_dir()) {
            0o700
        } else {
            0o600
        };
        let _ = std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(mode));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_map_count_says_how_many_instances_fit_and_what_to_raise_it_to() {
        let (room, needed) = map_count_room(65_530, 100_000);
        assert_eq!(room, (65_530 - 4096) / 6);
        assert!(room < 100_000);
        assert_eq!(needed, 1 << 20);
        let (room, _) = map_count_room(1 << 20, 100_000);
        assert!(room >= 100_000);
    }
}
