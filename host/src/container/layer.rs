//! Unpacking one image layer (a tar stream) onto a root filesystem being
//! built, the way the OCI image spec describes it: entries added in order,
//! whiteouts (`.wh.NAME`, `.wh..wh..opq`) removing what lower layers put
//! there. Nothing may land outside the root: names are plain relative
//! paths, no entry is written through a symlink, and a hard link must name
//! a file already inside. The caller bounds bytes and entries with
//! [`Budget`].

use std::io::Read;
use std::os::unix::fs::{symlink, PermissionsExt as _};
use std::path::{Component, Path, PathBuf};

use super::error::ImageError;

/// Longest a name in a layer may be, in bytes.
const MAX_NAME_BYTES: usize = 4096;
/// Deepest a name may go, in folders.
const MAX_DEPTH: usize = 128;

/// What an entry costs besides its content: an inode and its block, so
/// that an image of many empty files weighs what it takes on disk.
pub const ENTRY_BYTES: u64 = 4096;

/// What an image may still take as it is unpacked: bytes and entries
/// across all its layers.
pub struct Budget {
    /// Bytes left: of file content, and [`ENTRY_BYTES`] for each entry.
    pub bytes: u64,
    /// Entries left.
    pub entries: u64,
    /// What bounds it, for errors ("the image size limit (4 GiB)").
    pub limit: String,
}

impl Budget {
    /// Takes `bytes` from the budget, or says what it would pass.
    pub fn take(&mut self, bytes: u64, what: &str) -> Result<(), String> {
        self.bytes = self
            .bytes
            .checked_sub(bytes)
            .ok_or_else(|| format!("{what} unpacks to more than {}", self.limit))?;
        Ok(())
    }
}

/// Unpacks the layer tar `reader` onto `root`; `layer` names it in errors.
pub fn apply(
    root: &Path,
    reader: impl Read,
    layer: &str,
    budget: &mut Budget,
) -> Result<(), ImageError> {
    let broken = |reason: String| ImageError::Layer {
        layer: layer.to_string(),
        reason,
    };
    let mut archive = tar::Archive::new(reader);
    let entries = archive.entries().map_err(|e| broken(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| broken(e.to_string()))?;
        budget.entries = budget
            .entries
            .checked_sub(1)
            .ok_or_else(|| broken(format!("it holds more files than {} allows", budget.limit)))?;
        budget.take(ENTRY_BYTES, "it").map_err(broken)?;
        let raw = entry
            .path()
            .map_err(|e| broken(e.to_string()))?
            .into_owned();
        let Some(name) = clean(&raw) else {
            return Err(ImageError::Escapes {
                layer: layer.to_string(),
                path: raw.display().to_string(),
            });
        };
        if name.as_os_str().is_empty() {
            continue; // the root itself
        }
        let parent = name.parent().unwrap_or(Path::new(""));
        ensure_dirs(root, parent, layer)?;
        let file_name = name
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if file_name == ".wh..wh..opq" {
            // Opaque directory: what lower layers had in it goes.
            let dir = root.join(parent);
            for child in std::fs::read_dir(&dir).map_err(|e| broken(e.to_string()))? {
                let child = child.map_err(|e| broken(e.to_string()))?;
                remove(&child.path()).map_err(|e| broken(e.to_string()))?;
            }
            continue;
        }
        if let Some(hidden) = file_name.strip_prefix(".wh.") {
            // `.wh..` would remove the root's parent, `.wh.` the folder
            // itself: a whiteout names one entry of its folder.
            if hidden.is_empty() || hidden == "." || hidden == ".." {
                return Err(broken(format!(
                    "{} is a whiteout of no file",
                    name.display()
                )));
            }
            remove(&root.join(parent).join(hidden)).map_err(|e| broken(e.to_string()))?;
            continue;
        }
        let target = root.join(&name);
        let header = entry.header();
        let kind = header.entry_type();
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        let (uid, gid) = (
            header.uid().unwrap_or(0) as u32,
            header.gid().unwrap_or(0) as u32,
        );
        let existing = std::fs::symlink_metadata(&target).ok();
        if kind.is_dir() {
            if existing.as_ref().is_some_and(|m| !m.is_dir()) {
                remove(&target).map_err(|e| broken(e.to_string()))?;
            }
            if !target.is_dir() {
                std::fs::create_dir(&target).map_err(|e| broken(e.to_string()))?;
            }
            set_owner_and_mode(&target, uid, gid, Some(mode)).map_err(broken)?;
            continue;
        }
        if existing.is_some() {
            remove(&target).map_err(|e| broken(e.to_string()))?;
        }
        if kind.is_file() || kind == tar::EntryType::Continuous {
            let size = entry.size();
            budget.take(size, "it").map_err(broken)?;
            let mut file = std::fs::File::create(&target).map_err(|e| broken(e.to_string()))?;
            let copied = std::io::copy(&mut (&mut entry).take(size), &mut file)
                .map_err(|e| broken(format!("{}: {e}", name.display())))?;
            if copied != size {
                return Err(broken(format!("{} is cut short", name.display())));
            }
            set_owner_and_mode(&target, uid, gid, Some(mode)).map_err(broken)?;
        } else if kind.is_symlink() {
            // A symlink may point anywhere: it is read inside the
            // container's own root, and nothing here follows it.
            let link = entry
                .link_name()
                .map_err(|e| broken(e.to_string()))?
                .ok_or_else(|| broken(format!("{} is a symlink to nothing", name.display())))?;
            symlink(&link, &target).map_err(|e| broken(e.to_string()))?;
            set_owner_and_mode(&target, uid, gid, None).map_err(broken)?;
        } else if kind.is_hard_link() {
            let link = entry
                .link_name()
                .map_err(|e| broken(e.to_string()))?
                .ok_or_else(|| broken(format!("{} is a hard link to nothing", name.display())))?;
            let Some(source) = clean(&link).filter(|s| !s.as_os_str().is_empty()) else {
                return Err(ImageError::Escapes {
                    layer: layer.to_string(),
                    path: link.display().to_string(),
                });
            };
            ensure_dirs(root, source.parent().unwrap_or(Path::new("")), layer)?;
            let source = root.join(source);
            let meta = std::fs::symlink_metadata(&source).map_err(|_| {
                broken(format!(
                    "{} links to {}, which is not in the image",
                    name.display(),
                    link.display()
                ))
            })?;
            if meta.is_dir() {
                return Err(broken(format!("{} links to a directory", name.display())));
            }
            std::fs::hard_link(&source, &target).map_err(|e| broken(e.to_string()))?;
        }
        // Devices, fifos and other kinds are left out: a container gets
        // its devices from the runtime, never from an image.
    }
    Ok(())
}

/// `name` as a plain relative path (`./a/b` and `/a/b` are `a/b`), or
/// `None` when it climbs out with `..` or is too long or deep.
pub fn clean(name: &Path) -> Option<PathBuf> {
    if name.as_os_str().len() > MAX_NAME_BYTES {
        return None;
    }
    let mut out = PathBuf::new();
    for part in name.components() {
        match part {
            Component::Normal(p) => out.push(p),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    (out.components().count() <= MAX_DEPTH).then_some(out)
}

/// Makes the directories of `dir` under `root`, refusing to go through
/// anything that is not a real directory (a symlink above all): nothing
/// is ever written where a link points.
fn ensure_dirs(root: &Path, dir: &Path, layer: &str) -> Result<(), ImageError> {
    let mut at = root.to_path_buf();
    for part in dir.components() {
        at.push(part);
        match std::fs::symlink_metadata(&at) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(ImageError::Escapes {
                    layer: layer.to_string(),
                    path: format!(
                        "{} (goes through a symlink or file)",
                        at.strip_prefix(root).unwrap_or(&at).display()
                    ),
                })
            }
            Err(_) => std::fs::create_dir(&at).map_err(|e| ImageError::Layer {
                layer: layer.to_string(),
                reason: e.to_string(),
            })?,
        }
    }
    Ok(())
}

fn remove(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Gives an unpacked entry the owner the layer says (when the daemon may)
/// and its mode; a symlink keeps its own.
fn set_owner_and_mode(path: &Path, uid: u32, gid: u32, mode: Option<u32>) -> Result<(), String> {
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if let Some(mode) = mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, kind, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_mode(0o755);
            match kind {
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    header.set_size(0);
                    builder
                        .append_link(&mut header, name, data)
                        .expect("append link");
                }
                _ => {
                    header.set_size(data.len() as u64);
                    builder
                        .append_data(&mut header, name, data.as_bytes())
                        .expect("append");
                }
            }
        }
        builder.into_inner().expect("tar")
    }

    fn budget() -> Budget {
        Budget {
            bytes: 1 << 20,
            entries: 100,
            limit: "the test's limit".into(),
        }
    }

    #[test]
    fn whiteouts_remove_what_lower_layers_added() {
        let root = tempfile::tempdir().expect("tempdir");
        let lower = layer(&[
            ("etc/", tar::EntryType::Directory, ""),
            ("etc/a", tar::EntryType::Regular, "a"),
            ("etc/b", tar::EntryType::Regular, "b"),
            ("var/", tar::EntryType::Directory, ""),
            ("var/x", tar::EntryType::Regular, "x"),
        ]);
        apply(root.path(), &lower[..], "lower", &mut budget()).expect("lower");
        let upper = layer(&[
            ("etc/.wh.a", tar::EntryType::Regular, ""),
            ("var/.wh..wh..opq", tar::EntryType::Regular, ""),
            ("var/y", tar::EntryType::Regular, "y"),
        ]);
        apply(root.path(), &upper[..], "upper", &mut budget()).expect("upper");
        assert!(!root.path().join("etc/a").exists());
        assert!(root.path().join("etc/b").exists());
        assert!(!root.path().join("var/x").exists());
        assert_eq!(
            std::fs::read_to_string(root.path().join("var/y")).expect("y"),
            "y"
        );
    }

    #[test]
    fn nothing_is_written_through_a_symlink_or_outside_the_root() {
        let outside = tempfile::tempdir().expect("tempdir");
        let root = tempfile::tempdir().expect("tempdir");
        let target = outside.path().display().to_string();
        let evil = layer(&[
            ("escape", tar::EntryType::Symlink, &target),
            ("escape/owned", tar::EntryType::Regular, "x"),
        ]);
        let err = apply(root.path(), &evil[..], "evil", &mut budget()).expect_err("refused");
        assert!(matches!(err, ImageError::Escapes { .. }), "{err}");
        assert!(!outside.path().join("owned").exists());
        let hard = layer(&[("passwd", tar::EntryType::Link, "../../etc/passwd")]);
        let err = apply(root.path(), &hard[..], "hard", &mut budget()).expect_err("refused");
        assert!(matches!(err, ImageError::Escapes { .. }), "{err}");
        assert_eq!(clean(Path::new("../x")), None);
        assert_eq!(clean(Path::new("/a/./b")), Some(PathBuf::from("a/b")));
    }

    #[test]
    fn the_budget_bounds_bytes_and_entries() {
        let root = tempfile::tempdir().expect("tempdir");
        let big = layer(&[("big", tar::EntryType::Regular, &"x".repeat(2000))]);
        let mut small = Budget {
            bytes: 5_000,
            entries: 10,
            limit: "the test's limit".into(),
        };
        let err = apply(root.path(), &big[..], "big", &mut small).expect_err("too big");
        assert!(err.to_string().contains("the test's limit"), "{err}");
        // Empty files weigh their inodes.
        let many: Vec<(String, tar::EntryType, &str)> = (0..5)
            .map(|i| (format!("f{i}"), tar::EntryType::Regular, ""))
            .collect();
        let many: Vec<(&str, tar::EntryType, &str)> =
            many.iter().map(|(n, k, c)| (n.as_str(), *k, *c)).collect();
        let mut small = Budget {
            bytes: 3 * ENTRY_BYTES,
            entries: 10,
            limit: "the test's limit".into(),
        };
        let err = apply(root.path(), &layer(&many)[..], "many", &mut small).expect_err("too many");
        assert!(err.to_string().contains("the test's limit"), "{err}");
    }

    #[test]
    fn a_whiteout_names_one_entry_of_its_folder() {
        for name in [".wh..", ".wh.", "etc/.wh..", "etc/.wh."] {
            let root = tempfile::tempdir().expect("tempdir");
            let rootfs = root.path().join("rootfs");
            std::fs::create_dir(&rootfs).expect("rootfs");
            let evil = layer(&[(name, tar::EntryType::Regular, "")]);
            let err = apply(&rootfs, &evil[..], "evil", &mut budget()).expect_err("refused");
            assert!(
                err.to_string().contains("whiteout of no file"),
                "{name}: {err}"
            );
            assert!(rootfs.is_dir(), "{name} removed the root");
        }
    }
}
