//! The data directory: its lock, its permissions, `daemon.json`.

use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use anyhow::Context as _;

use super::{DaemonInfo, DAEMON_FILE};

/// Creates the data directory (mode 0700) and holds its lock.
pub(super) fn prepare_data_dir(data_dir: &Path) -> anyhow::Result<File> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("restricting {}", data_dir.display()))?;
    lock_data_dir(data_dir)
}

/// Every instance costs a few memory mappings (its stack guard page, its
/// memories), and the kernel's `vm.max_map_count` caps them: say what that
/// means for density at start, since past it instances fail to start.
pub(super) fn report_map_count_limit() {
    const MAPPINGS_PER_INSTANCE: u64 = 6;
    if let Some(limit) = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
    {
        let instances = limit / MAPPINGS_PER_INSTANCE;
        tracing::info!(
            vm.max_map_count = limit,
            "room for about {instances} live instances; raise it with `sysctl -w vm.max_map_count=1048576` for more"
        );
    }
}

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
    file.try_lock().map_err(|_| {
        anyhow::anyhow!(
            "another mesh daemon is already using {} (its lock file is held)",
            data_dir.display()
        )
    })?;
    Ok(file)
}

/// Writes `daemon.json` (mode 0600) atomically.
pub(super) fn write_daemon_file(data_dir: &Path, info: &DaemonInfo) -> anyhow::Result<()> {
    let path = data_dir.join(DAEMON_FILE);
    let tmp = data_dir.join(format!(".{DAEMON_FILE}.tmp"));
    let mut file = File::options()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(&serde_json::to_vec_pretty(info)?)?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
