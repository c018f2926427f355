//! A stack's files: the `files/` folder deployed beside its code (static
//! assets, templates, config), packed by the CLI as a tar archive, stored
//! by digest like code, and unpacked once per digest into a directory that
//! every instance of the stack sees read-only at `/`.
//!
//! Only plain files and directories are accepted, with relative names that
//! stay inside the folder: no symlinks, hard links, devices, absolute
//! paths or `..`. The archive is bounded in bytes and entries.

use std::io::Read as _;
use std::path::{Component, Path, PathBuf};

use thiserror::Error;

/// Most bytes the files of one stack may hold, unpacked.
pub const MAX_FILES_BYTES: u64 = 64 << 20;
/// Most files and directories one stack's files may hold.
pub const MAX_FILES_ENTRIES: usize = 10_000;
/// Deepest a name may go, in folders.
pub const MAX_DEPTH: usize = 32;
/// Longest a name may be, in bytes.
pub const MAX_NAME_BYTES: usize = 1024;
/// What each directory costs against [`MAX_FILES_BYTES`]: a directory
/// takes a block on disk even when empty.
const DIRECTORY_BYTES: u64 = 4096;

/// Where a stack's files appear to its instances.
pub const FILES_MOUNT: &str = "/";

/// Why a files archive (or folder) was refused.
#[derive(Debug, Error)]
pub enum FilesError {
    /// An entry that is neither a file nor a directory.
    #[error("{folder}: {path} is a {kind}; only plain files and directories can be deployed")]
    Kind {
        /// The folder (or archive) name.
        folder: String,
        /// The entry.
        path: String,
        /// What it is.
        kind: String,
    },
    /// A symlink whose target is outside the folder.
    #[error("{folder}: {path} is a symlink pointing out of the folder (to {target})")]
    Escapes {
        /// The folder.
        folder: String,
        /// The link.
        path: String,
        /// Where it points.
        target: String,
    },
    /// A name that is absolute or climbs out with `..`.
    #[error("{folder}: {path} is not a plain relative name")]
    Name {
        /// The folder.
        folder: String,
        /// The name.
        path: String,
    },
    /// Too large.
    #[error("{folder} holds more than {limit}; a stack's files may hold at most that")]
    TooLarge {
        /// The folder.
        folder: String,
        /// The limit, in words.
        limit: String,
    },
    /// Not a tar archive, or a broken one.
    #[error("{folder} is not a readable files archive: {reason}")]
    Broken {
        /// The archive.
        folder: String,
        /// Why.
        reason: String,
    },
}

fn too_large(folder: &str) -> FilesError {
    FilesError::TooLarge {
        folder: folder.to_string(),
        limit: format!(
            "{} or {MAX_FILES_ENTRIES} entries",
            crate::model::format_memory(MAX_FILES_BYTES)
        ),
    }
}

/// Whether `bytes` look like a files archive rather than WebAssembly.
pub fn is_archive(bytes: &[u8]) -> bool {
    bytes.len() >= 512 && &bytes[257..262] == b"ustar"
}

/// Packs the folder `dir` as a files archive: entries in name order, with
/// no owners, times or modes, so equal folders give equal bytes. A symlink
/// that stays inside the folder is packed as a copy of what it points to;
/// one that points out is refused.
pub fn pack(dir: &Path) -> Result<Vec<u8>, FilesError> {
    let folder = dir.display().to_string();
    let root = dir.canonicalize().map_err(|e| FilesError::Broken {
        folder: folder.clone(),
        reason: e.to_string(),
    })?;
    let mut paths = Vec::new();
    walk(&root, &root, &folder, &mut paths)?;
    paths.sort();
    let mut builder = tar::Builder::new(Vec::new());
    builder.mode(tar::HeaderMode::Deterministic);
    builder.follow_symlinks(true);
    let (mut bytes, mut entries) = (0u64, 0usize);
    for (name, path, is_dir) in paths {
        let depth = Path::new(&name).components().count();
        if depth > MAX_DEPTH || name.len() > MAX_NAME_BYTES {
            return Err(FilesError::Name {
                folder: folder.clone(),
                path: name,
            });
        }
        entries += 1;
        let size = if is_dir {
            DIRECTORY_BYTES
        } else {
            std::fs::metadata(&path).map_or(0, |m| m.len())
        };
        bytes += size;
        if entries > MAX_FILES_ENTRIES || bytes > MAX_FILES_BYTES {
            return Err(too_large(&folder));
        }
        let mut header = tar::Header::new_ustar();
        header.set_mode(if is_dir { 0o755 } else { 0o644 });
        header.set_mtime(0);
        header.set_entry_type(if is_dir {
            tar::EntryType::Directory
        } else {
            tar::EntryType::Regular
        });
        header.set_size(if is_dir { 0 } else { size });
        let added = if is_dir {
            builder.append_data(&mut header, &name, std::io::empty())
        } else {
            std::fs::File::open(&path)
                .and_then(|file| builder.append_data(&mut header, &name, file.take(size)))
        };
        added.map_err(|e| FilesError::Broken {
            folder: folder.clone(),
            reason: format!("{name}: {e}"),
        })?;
    }
    builder.into_inner().map_err(|e| FilesError::Broken {
        folder,
        reason: e.to_string(),
    })
}

/// Every file and directory under `dir`, as (name in the archive, path,
/// is a directory), symlinks resolved and checked to stay under `root`.
fn walk(
    root: &Path,
    dir: &Path,
    folder: &str,
    out: &mut Vec<(String, PathBuf, bool)>,
) -> Result<(), FilesError> {
    let broken = |e: std::io::Error| FilesError::Broken {
        folder: folder.to_string(),
        reason: e.to_string(),
    };
    for entry in std::fs::read_dir(dir).map_err(broken)? {
        let entry = entry.map_err(broken)?;
        let path = entry.path();
        let name = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .to_string_lossy()
            .into_owned();
        let kind = entry.file_type().map_err(broken)?;
        let real = if kind.is_symlink() {
            let target = path.canonicalize().map_err(broken)?;
            if !target.starts_with(root) {
                return Err(FilesError::Escapes {
                    folder: folder.to_string(),
                    path: name,
                    target: target.display().to_string(),
                });
            }
            target
        } else {
            path.clone()
        };
        let meta = std::fs::metadata(&real).map_err(broken)?;
        if meta.is_dir() {
            if kind.is_symlink() {
                // A link to a directory inside: its contents are there
                // already under their own names.
                continue;
            }
            out.push((name, path.clone(), true));
            if out.len() > MAX_FILES_ENTRIES {
                return Err(too_large(folder));
            }
            walk(root, &path, folder, out)?;
        } else if meta.is_file() {
            out.push((name, real, false));
            if out.len() > MAX_FILES_ENTRIES {
                return Err(too_large(folder));
            }
        } else {
            return Err(FilesError::Kind {
                folder: folder.to_string(),
                path: name,
                kind: "special file".into(),
            });
        }
    }
    Ok(())
}

/// Checks a files archive and unpacks it into `dest` (which must not
/// exist): into a temporary directory beside it first, renamed into place
/// when whole. Returns the unpacked size in bytes.
pub fn unpack(name: &str, archive: &[u8], dest: &Path) -> Result<u64, FilesError> {
    let broken = |reason: String| FilesError::Broken {
        folder: name.to_string(),
        reason,
    };
    let parent = dest.parent().ok_or_else(|| broken("no parent".into()))?;
    std::fs::create_dir_all(parent).map_err(|e| broken(e.to_string()))?;
    let temp = super::partial::partial_beside(dest);
    let _ = std::fs::remove_dir_all(&temp);
    std::fs::create_dir(&temp).map_err(|e| broken(e.to_string()))?;
    let result = unpack_into(name, archive, &temp).and_then(|size| {
        std::fs::rename(&temp, dest).map_err(|e| broken(e.to_string()))?;
        Ok(size)
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&temp);
    }
    result
}

fn unpack_into(name: &str, archive: &[u8], dir: &Path) -> Result<u64, FilesError> {
    let broken = |reason: String| FilesError::Broken {
        folder: name.to_string(),
        reason,
    };
    let mut tar = tar::Archive::new(archive);
    let (mut bytes, mut entries) = (0u64, 0usize);
    // Every directory made, named or implied by a deeper name, counts.
    let mut dirs: std::collections::HashSet<PathBuf> = std::collections::HashSet::new();
    for entry in tar.entries().map_err(|e| broken(e.to_string()))? {
        let mut entry = entry.map_err(|e| broken(e.to_string()))?;
        let path = entry
            .path()
            .map_err(|e| broken(e.to_string()))?
            .into_owned();
        let shown = path.display().to_string();
        let depth = path.components().count();
        let plain = path.components().all(|c| matches!(c, Component::Normal(_)))
            && depth > 0
            && depth <= MAX_DEPTH
            && path.as_os_str().len() <= MAX_NAME_BYTES;
        if !plain {
            return Err(FilesError::Name {
                folder: name.to_string(),
                path: shown,
            });
        }
        let is_dir = entry.header().entry_type() == tar::EntryType::Directory;
        let mut made = path
            .parent()
            .map(Path::ancestors)
            .into_iter()
            .flatten()
            .collect::<Vec<_>>();
        if is_dir {
            made.push(&path);
        }
        for folder in made.into_iter().filter(|f| !f.as_os_str().is_empty()) {
            if dirs.insert(folder.to_path_buf()) {
                entries += 1;
                bytes = bytes.saturating_add(DIRECTORY_BYTES);
            }
        }
        if !is_dir {
            entries += 1;
            bytes = bytes.saturating_add(entry.size());
        }
        if entries > MAX_FILES_ENTRIES || bytes > MAX_FILES_BYTES {
            return Err(too_large(name));
        }
        let target = dir.join(&path);
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                std::fs::create_dir_all(&target).map_err(|e| broken(format!("{shown}: {e}")))?;
            }
            tar::EntryType::Regular => {
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| broken(format!("{shown}: {e}")))?;
                }
                let mut file =
                    std::fs::File::create(&target).map_err(|e| broken(format!("{shown}: {e}")))?;
                let copied = std::io::copy(&mut (&mut entry).take(MAX_FILES_BYTES), &mut file)
                    .map_err(|e| broken(format!("{shown}: {e}")))?;
                if copied != entry.size() {
                    return Err(broken(format!("{shown} is cut short")));
                }
            }
            other => {
                return Err(FilesError::Kind {
                    folder: name.to_string(),
                    path: shown,
                    kind: format!("{other:?}").to_lowercase(),
                });
            }
        }
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_packs_the_same_every_time_and_unpacks_whole() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("files");
        std::fs::create_dir_all(src.join("static/css")).unwrap();
        std::fs::write(src.join("index.html"), "<h1>hi</h1>").unwrap();
        std::fs::write(src.join("static/css/site.css"), "h1 {}").unwrap();
        std::os::unix::fs::symlink("index.html", src.join("home.html")).unwrap();
        let a = pack(&src).unwrap();
        let b = pack(&src).unwrap();
        assert_eq!(a, b, "packing is deterministic");
        assert!(is_archive(&a));
        let dest = dir.path().join("out/tree");
        let size = unpack("files", &a, &dest).unwrap();
        // Three files, and two folders at a block each.
        assert_eq!(size, 11 + 5 + 11 + 2 * DIRECTORY_BYTES);
        assert_eq!(
            std::fs::read_to_string(dest.join("home.html")).unwrap(),
            "<h1>hi</h1>"
        );
        assert_eq!(
            std::fs::read_to_string(dest.join("static/css/site.css")).unwrap(),
            "h1 {}"
        );
        assert!(!std::fs::symlink_metadata(dest.join("home.html"))
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn deep_folders_count_against_the_limits() {
        let dir = tempfile::tempdir().unwrap();
        // Many files each in its own deep chain of folders: a small archive
        // that would make far more directories than entries.
        let mut deep = tar::Builder::new(Vec::new());
        for i in 0..400 {
            let name: String = (0..30).map(|d| format!("d{i}x{d}/")).collect::<String>() + "f";
            let mut header = tar::Header::new_gnu();
            header.set_size(0);
            header.set_entry_type(tar::EntryType::Regular);
            deep.append_data(&mut header, &name, std::io::empty())
                .unwrap();
        }
        let bytes = deep.into_inner().unwrap();
        let err = unpack("deep.tar", &bytes, &dir.path().join("t")).unwrap_err();
        assert!(matches!(err, FilesError::TooLarge { .. }), "{err}");
        assert!(!dir.path().join("t").exists());

        let mut too_deep = tar::Builder::new(Vec::new());
        let name: String = "d/".repeat(MAX_DEPTH) + "f";
        let mut header = tar::Header::new_gnu();
        header.set_size(0);
        header.set_entry_type(tar::EntryType::Regular);
        too_deep
            .append_data(&mut header, &name, std::io::empty())
            .unwrap();
        let bytes = too_deep.into_inner().unwrap();
        let err = unpack("deep.tar", &bytes, &dir.path().join("t")).unwrap_err();
        assert!(matches!(err, FilesError::Name { .. }), "{err}");
    }

    #[test]
    fn links_out_of_the_folder_and_climbing_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("files");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(dir.path().join("secret"), "no").unwrap();
        std::os::unix::fs::symlink("../secret", src.join("leak")).unwrap();
        let err = pack(&src).unwrap_err().to_string();
        assert!(
            err.contains("leak is a symlink pointing out of the folder"),
            "{err}"
        );

        // An archive made by hand with `../x`, a symlink, or too much.
        let mut climbing = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(1);
        header.set_entry_type(tar::EntryType::Regular);
        header.as_old_mut().name[..7].copy_from_slice(b"../evil");
        header.set_cksum();
        climbing.append(&header, &b"x"[..]).unwrap();
        let bytes = climbing.into_inner().unwrap();
        let err = unpack("a.tar", &bytes, &dir.path().join("t1")).unwrap_err();
        assert!(matches!(err, FilesError::Name { .. }), "{err}");
        assert!(!dir.path().join("evil").exists());

        let mut linking = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        linking
            .append_link(&mut header, "link", "/etc/passwd")
            .unwrap();
        let bytes = linking.into_inner().unwrap();
        let err = unpack("a.tar", &bytes, &dir.path().join("t2")).unwrap_err();
        assert!(matches!(err, FilesError::Kind { .. }), "{err}");
        assert!(!dir.path().join("t2").exists(), "nothing half-made");

        let big = dir.path().join("big");
        std::fs::create_dir_all(&big).unwrap();
        let file = std::fs::File::create(big.join("huge")).unwrap();
        file.set_len(MAX_FILES_BYTES + 1).unwrap();
        let err = pack(&big).unwrap_err().to_string();
        assert!(err.contains("holds more than 64 MiB"), "{err}");
    }
}
