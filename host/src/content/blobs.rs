//! Code storage: every uploaded component kept once, named by its sha256,
//! under `DATA/blobs/sha256/`. A blob is written and synced before any
//! version that names it is committed, so a committed version never points
//! at missing code.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::model::Digest;

/// The content-addressed blob directory.
#[derive(Clone, Debug)]
pub struct Blobs {
    dir: PathBuf,
}

impl Blobs {
    /// Opens (creating) the blob directory under `data_dir`.
    pub fn open(data_dir: &Path) -> anyhow::Result<Blobs> {
        let dir = data_dir.join("blobs").join("sha256");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Blobs { dir })
    }

    /// Where a blob lives.
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(digest.hex())
    }

    /// Whether a blob is stored.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// Stores bytes, whose digest is `digest` (the caller hashed them
    /// already), durably. Storing the same bytes twice is a no-op.
    pub fn put(&self, digest: &Digest, bytes: &[u8]) -> anyhow::Result<()> {
        let path = self.path(digest);
        if path.is_file() {
            return Ok(());
        }
        write_synced(&self.dir, &path, bytes)
    }

    /// Stores the file at `path` (in the same file system), whose digest
    /// is `digest`, by moving it into place durably.
    pub fn put_file(&self, digest: &Digest, path: &Path) -> anyhow::Result<()> {
        let dest = self.path(digest);
        if dest.is_file() {
            let _ = std::fs::remove_file(path);
            return Ok(());
        }
        std::fs::File::open(path)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("syncing {}", path.display()))?;
        std::fs::rename(path, &dest).with_context(|| format!("storing {}", dest.display()))?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing {}", self.dir.display()))
    }

    /// Every stored blob's digest.
    pub fn list(&self) -> anyhow::Result<Vec<Digest>> {
        let entries = std::fs::read_dir(&self.dir)
            .with_context(|| format!("listing {}", self.dir.display()))?;
        Ok(entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .filter_map(|name| Digest::try_from(format!("sha256:{name}")).ok())
            .collect())
    }

    /// Removes a blob no kept version names.
    pub fn remove(&self, digest: &Digest) -> anyhow::Result<()> {
        let path = self.path(digest);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", path.display()))
            }
            _ => Ok(()),
        }
    }

    /// Reads a blob.
    pub fn get(&self, digest: &Digest) -> anyhow::Result<Vec<u8>> {
        let path = self.path(digest);
        std::fs::read(&path).with_context(|| format!("reading code blob {}", path.display()))
    }
}

/// A temporary file name no other writer, in this process or another,
/// uses at the same time: `.<name>.<pid>.<n>.tmp`.
fn unique_tmp_name(name: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!(".{name}.{}.{n}.tmp", std::process::id())
}

/// Writes `bytes` to `path` through a unique temporary file in `dir`,
/// synced before the rename and the directory synced after it.
pub fn write_synced(dir: &Path, path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(unique_tmp_name(&name));
    let mut file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_is_content_addressed_and_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::open(dir.path()).unwrap();
        let a = Digest::of(b"component bytes");
        blobs.put(&a, b"component bytes").unwrap();
        blobs.put(&a, b"component bytes").unwrap();
        assert_eq!(blobs.list().unwrap(), std::slice::from_ref(&a));
        assert_eq!(blobs.get(&a).unwrap(), b"component bytes");
        assert!(!blobs.contains(&Digest::of(b"other")));
    }
}
