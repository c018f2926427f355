//! Containers in user namespaces: root in a container is an unprivileged
//! user on the host. Each environment has its own range of 65,536 host
//! ids (user and group alike), kept for it from its first container on,
//! so two tenants' containers never share an owner on the host; a
//! container's id N is host id `base + N`.
//!
//! The image's files keep the owners they have inside: each image is
//! copied once per range with every owner shifted by the range's base
//! (`images/HEX/rootfs-BASE`, beside the image and collected with it),
//! as Podman does without idmapped mounts. The copy keeps hard links,
//! modes and set-id bits; it is made beside its final name and renamed,
//! so a half-made copy is never used.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

/// Host ids in one environment's range.
pub const IDS_PER_ENVIRONMENT: u32 = 65_536;
/// The first host id given to a range: past every id a distribution
/// gives its own users and the ranges `/etc/subuid` usually hands out.
pub const FIRST_HOST_ID: u32 = 1 << 24;
/// Ranges there is room for below `u32::MAX`.
const MAX_RANGES: u32 = (u32::MAX - FIRST_HOST_ID) / IDS_PER_ENVIRONMENT;

/// The id ranges given to environments, kept in a file so an
/// environment's files keep their owners across restarts.
pub struct IdRanges {
    file: PathBuf,
    given: Mutex<BTreeMap<String, u32>>,
}

impl IdRanges {
    /// The ranges recorded in `file` (none when it does not exist yet).
    pub fn open(file: PathBuf) -> IdRanges {
        let given = std::fs::read(&file)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        IdRanges {
            file,
            given: Mutex::new(given),
        }
    }

    /// The first host id of `env`'s range, given now if it has none.
    pub fn base_of(&self, env: &str) -> Result<u32, String> {
        let mut given = self.given.lock();
        if let Some(index) = given.get(env) {
            return Ok(FIRST_HOST_ID + index * IDS_PER_ENVIRONMENT);
        }
        let taken: std::collections::HashSet<u32> = given.values().copied().collect();
        let index = (0..MAX_RANGES)
            .find(|i| !taken.contains(i))
            .ok_or("every host id range is given to an environment")?;
        given.insert(env.to_string(), index);
        let json = serde_json::to_vec_pretty(&*given).map_err(|e| e.to_string())?;
        let partial = self.file.with_extension("partial");
        std::fs::write(&partial, json)
            .and_then(|()| std::fs::rename(&partial, &self.file))
            .map_err(|e| format!("recording the id range of environment {env}: {e}"))?;
        Ok(FIRST_HOST_ID + index * IDS_PER_ENVIRONMENT)
    }
}

/// The host id of a container's `id` in the range at `base`: ids past the
/// range are the range's `nobody` (65534).
pub fn shift(id: u32, base: u32) -> u32 {
    base + if id < IDS_PER_ENVIRONMENT { id } else { 65_534 }
}

/// The root of the image unpacked at `image_dir`, its owners shifted to
/// the range at `base`: made now unless it was made before.
pub fn shifted_root(image_dir: &Path, rootfs: &Path, base: u32) -> Result<PathBuf, String> {
    let dest = image_dir.join(format!("rootfs-{base}"));
    if dest.is_dir() {
        return Ok(dest);
    }
    // Each start copies beside its own name: starts at once never share a
    // half-made copy, and the first rename wins.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let partial = image_dir.join(format!(".rootfs-{base}.{}-{n}.partial", std::process::id()));
    let made = copy_shifted(rootfs, &partial, base, &mut HashMap::new())
        .and_then(|()| std::fs::rename(&partial, &dest));
    if let Err(e) = made {
        let _ = std::fs::remove_dir_all(&partial);
        // Another start made it meanwhile (the rename found it there).
        if dest.is_dir() {
            return Ok(dest);
        }
        return Err(format!("copying the image for its environment's ids: {e}"));
    }
    Ok(dest)
}

/// Copies `from` to `to` (which must not exist), each owner shifted by
/// `base`; files already copied under another name (hard links) are
/// linked, by their inode.
fn copy_shifted(
    from: &Path,
    to: &Path,
    base: u32,
    linked: &mut HashMap<(u64, u64), PathBuf>,
) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(from)?;
    let kind = meta.file_type();
    if kind.is_dir() {
        std::fs::create_dir(to)?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            copy_shifted(&entry.path(), &to.join(entry.file_name()), base, linked)?;
        }
    } else if kind.is_symlink() {
        std::os::unix::fs::symlink(std::fs::read_link(from)?, to)?;
    } else if kind.is_file() {
        let inode = (meta.dev(), meta.ino());
        if meta.nlink() > 1 {
            if let Some(first) = linked.get(&inode) {
                return std::fs::hard_link(first, to);
            }
            linked.insert(inode, to.to_path_buf());
        }
        std::fs::copy(from, to)?;
    } else {
        // The unpacker keeps no other kind.
        return Ok(());
    }
    std::os::unix::fs::lchown(
        to,
        Some(shift(meta.uid(), base)),
        Some(shift(meta.gid(), base)),
    )?;
    if !kind.is_symlink() {
        // After the owner: a chown clears set-id bits.
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_apart_and_kept_across_restarts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("ids.json");
        let ranges = IdRanges::open(file.clone());
        let a = ranges.base_of("a").expect("a");
        let b = ranges.base_of("b").expect("b");
        assert_eq!(a, FIRST_HOST_ID);
        assert_eq!(b, FIRST_HOST_ID + IDS_PER_ENVIRONMENT);
        assert_eq!(ranges.base_of("a").expect("a again"), a);
        let again = IdRanges::open(file);
        assert_eq!(again.base_of("b").expect("b kept"), b);
        assert_eq!(shift(0, a), a);
        assert_eq!(shift(1000, b), b + 1000);
        assert_eq!(shift(100_000, a), a + 65_534);
    }

    #[test]
    fn a_shifted_copy_keeps_modes_links_and_shifts_owners() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("rootfs");
        std::fs::create_dir_all(root.join("bin")).expect("bin");
        std::fs::write(root.join("bin/tool"), "x").expect("tool");
        std::fs::set_permissions(
            root.join("bin/tool"),
            std::fs::Permissions::from_mode(0o4755),
        )
        .expect("mode");
        std::fs::hard_link(root.join("bin/tool"), root.join("bin/alias")).expect("link");
        std::os::unix::fs::symlink("tool", root.join("bin/sym")).expect("symlink");
        std::os::unix::fs::lchown(root.join("bin/tool"), Some(1000), Some(100)).expect("chown");
        std::fs::set_permissions(
            root.join("bin/tool"),
            std::fs::Permissions::from_mode(0o4755),
        )
        .expect("mode again");
        let base = FIRST_HOST_ID;
        let shifted = shifted_root(dir.path(), &root, base).expect("copied");
        let tool = std::fs::metadata(shifted.join("bin/tool")).expect("tool");
        assert_eq!((tool.uid(), tool.gid()), (base + 1000, base + 100));
        assert_eq!(tool.mode() & 0o7777, 0o4755);
        let alias = std::fs::metadata(shifted.join("bin/alias")).expect("alias");
        assert_eq!(alias.ino(), tool.ino(), "a hard link stays one");
        let sym = std::fs::symlink_metadata(shifted.join("bin/sym")).expect("sym");
        assert_eq!(sym.uid(), base);
        assert_eq!(std::fs::metadata(&shifted).expect("root").uid(), base);
        // Made once.
        assert_eq!(
            shifted_root(dir.path(), &root, base).expect("again"),
            shifted
        );
    }
}
