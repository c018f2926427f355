//! An instance's private scratch directory: a tmpfs of its own, capped at
//! the size the service asked for, seen by the guest at `/tmp` and gone
//! with the instance. The kernel enforces the cap, so a guest that fills
//! it gets "no space" from WASI and nothing else is touched.
//!
//! Mounting needs the daemon to hold `CAP_SYS_ADMIN` (to run as root);
//! without it an instance that asks for scratch space does not start, and
//! says why.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Where the scratch directory appears to the guest.
pub const SCRATCH_MOUNT: &str = "/tmp";
/// Files (inodes) per MiB of scratch space: bounds what a guest can make
/// besides bytes.
const INODES_PER_MIB: u64 = 256;

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A mounted scratch directory, unmounted and removed on drop.
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    /// Mounts a new tmpfs of `bytes` under `root`.
    pub fn mount(root: &Path, bytes: u64) -> Result<Scratch, String> {
        let path = root.join(format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path)
            .map_err(|e| format!("cannot make scratch directory {}: {e}", path.display()))?;
        let inodes = (bytes >> 20).max(1) * INODES_PER_MIB;
        let options = format!("size={bytes},nr_inodes={inodes},mode=0700");
        let c = |s: &[u8]| CString::new(s).expect("no NUL in mount arguments");
        let (source, target, kind, data) = (
            c(b"mesh-scratch"),
            c(path.as_os_str().as_bytes()),
            c(b"tmpfs"),
            c(options.as_bytes()),
        );
        // SAFETY: every pointer is a NUL-terminated string that outlives
        // the call.
        let done = unsafe {
            libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                kind.as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                data.as_ptr().cast(),
            )
        };
        if done != 0 {
            let e = std::io::Error::last_os_error();
            let _ = std::fs::remove_dir(&path);
            return Err(format!(
                "cannot mount a scratch directory ({e}): --scratch needs the daemon to run as root"
            ));
        }
        Ok(Scratch { path })
    }

    /// Whether this daemon may mount scratch directories: it runs as
    /// root. (A mount could still fail; instances then say why.)
    pub fn supported() -> bool {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() == 0 }
    }

    /// The directory on the host.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Unmounts and removes what earlier runs left under `root` (a daemon
    /// killed with instances live).
    pub fn clean(root: &Path) {
        let Ok(entries) = std::fs::read_dir(root) else {
            return;
        };
        for entry in entries.filter_map(Result::ok) {
            unmount(&entry.path());
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        unmount(&self.path);
        let _ = std::fs::remove_dir(&self.path);
    }
}

fn unmount(path: &Path) {
    let Ok(target) = CString::new(path.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: a NUL-terminated path that outlives the call. Detaching
    // never waits on open files.
    unsafe {
        libc::umount2(target.as_ptr(), libc::MNT_DETACH);
    }
}
