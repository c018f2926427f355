//! Files half-made: trees unpacked beside where they go and renamed into
//! place when whole, and code being received before it is checked and
//! stored. A crash can leave either behind; [`clean_partial`] removes
//! them when the daemon starts.

use std::path::{Path, PathBuf};

/// Where a tree unpacked into `dest` is built before it is whole (then
/// renamed into place): beside it, named so [`clean_partial`] knows it.
pub fn partial_beside(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    dest.with_file_name(format!(".unpack-{}-{name}", std::process::id()))
}

/// Removes the trees under `root` that a crash left half-made, and the
/// files it left half-received ([`incoming_in`]).
pub fn clean_partial(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(".unpack-") {
            let _ = std::fs::remove_dir_all(entry.path());
        } else if name.starts_with(".incoming-") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// A new file name in `dir` for code being received (an upload, or a
/// fetch from another host) before it is checked and stored; removed
/// when dropped unless it was moved into place, and by [`clean_partial`]
/// after a crash.
pub fn incoming_in(dir: &Path) -> Incoming {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Incoming(dir.join(format!(".incoming-{}-{n}", std::process::id())))
}

/// A file being received: removed when dropped, if it is still there.
#[derive(Debug)]
pub struct Incoming(PathBuf);

impl Incoming {
    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
