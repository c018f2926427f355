//! The content store: code kept by digest, as uploaded (blobs) and
//! unpacked (a stack's files, a container image), with a lock per digest
//! that everyone who stores, loads or removes that digest holds, and the
//! uploads no version names yet, spared for [`UNDEPLOYED_GRACE`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use parking_lot::Mutex;

use super::blobs::Blobs;
use super::partial::{clean_partial, incoming_in, Incoming};
use crate::model::Digest;

/// How long an upload that no version names yet is kept: the time a
/// client has between uploading code and deploying it.
pub const UNDEPLOYED_GRACE: Duration = Duration::from_secs(600);

/// The file beside an unpacked image that holds the bytes it takes.
const UNPACKED_FILE: &str = "unpacked-bytes";

/// What an accepted upload is.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct CodeInfo {
    /// Content digest.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// The component's exports.
    pub exports: Vec<String>,
}

/// Code kept by digest in the data directory: blobs, unpacked files and
/// images.
pub struct Content {
    pub(super) blobs: Blobs,
    /// Stacks' files, unpacked: one directory per digest.
    pub(super) files_dir: PathBuf,
    /// Container images, unpacked: one directory per digest (made and
    /// read by the container layer; collected here with the code).
    pub(super) images_dir: PathBuf,
    /// One lock per digest being stored, loaded or removed, and how many
    /// hold or wait for it.
    locks: Mutex<HashMap<Digest, DigestLock>>,
    /// Uploads no version names yet, and when they came: spared by
    /// [`Content::retain`] for [`UNDEPLOYED_GRACE`].
    pub(super) fresh: Mutex<HashMap<Digest, Instant>>,
    /// Bumped whenever code is stored or removed (a cluster host reports
    /// what it holds when it changes).
    pub(super) stored: tokio::sync::watch::Sender<u64>,
}

/// One digest's lock and how many hold or wait for it.
type DigestLock = (Arc<Mutex<()>>, usize);

impl Content {
    /// Opens (creating) the content store under `data_dir`, removing what
    /// a crash left half-made.
    pub fn open(data_dir: &Path) -> anyhow::Result<Content> {
        let blobs = Blobs::open(data_dir)?;
        let files_dir = data_dir.join("files");
        std::fs::create_dir_all(&files_dir)
            .with_context(|| format!("creating {}", files_dir.display()))?;
        clean_partial(&files_dir);
        let images_dir = data_dir.join("images");
        std::fs::create_dir_all(&images_dir)
            .with_context(|| format!("creating {}", images_dir.display()))?;
        Ok(Content {
            blobs,
            files_dir,
            images_dir,
            locks: Mutex::new(HashMap::new()),
            fresh: Mutex::new(HashMap::new()),
            stored: tokio::sync::watch::Sender::new(0),
        })
    }

    /// Size of stored code, in bytes (0 when it is not stored): for an
    /// image, its upload's and its unpacked root's together.
    pub fn code_bytes(&self, digest: &Digest) -> u64 {
        let stored = std::fs::metadata(self.blobs.path(digest)).map_or(0, |m| m.len());
        let unpacked = std::fs::read_to_string(self.image_path(digest).join(UNPACKED_FILE))
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok())
            .unwrap_or(0);
        stored.saturating_add(unpacked)
    }

    /// The digests of every piece of code stored here.
    pub fn stored_digests(&self) -> Vec<Digest> {
        self.blobs.list().unwrap_or_default()
    }

    /// Changes whenever code is stored or removed here.
    pub fn stored_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.stored.subscribe()
    }

    /// Whether code of this digest is stored here.
    pub fn has_code(&self, digest: &Digest) -> bool {
        self.blobs.contains(digest)
    }

    /// Where stored code is kept, as uploaded (whether or not it is).
    pub fn code_path(&self, digest: &Digest) -> PathBuf {
        self.blobs.path(digest)
    }

    /// Stored code's bytes, as uploaded.
    pub fn get(&self, digest: &Digest) -> anyhow::Result<Vec<u8>> {
        self.blobs.get(digest)
    }

    /// Stores checked code (the caller holds its digest's
    /// [`lock`](Content::lock)), spared from collection until a version
    /// names it.
    pub fn put(&self, digest: &Digest, bytes: &[u8]) -> anyhow::Result<()> {
        self.blobs.put(digest, bytes)?;
        self.mark_fresh(digest);
        Ok(())
    }

    /// A new file for code being received (an upload, or a fetch from
    /// another host) before it is checked and stored: in the data
    /// directory's file system, so it can be moved into place.
    pub fn incoming(&self) -> Incoming {
        incoming_in(&self.images_dir)
    }

    /// Checks a stack's files archive, stores it and unpacks it. `name`
    /// is what the user called it.
    pub fn accept_files(
        &self,
        name: &str,
        digest: Digest,
        bytes: &[u8],
    ) -> Result<CodeInfo, anyhow::Error> {
        let _one_at_a_time = self.lock(&digest);
        let tree = self.files_path(&digest);
        if !tree.is_dir() {
            super::files::unpack(name, bytes, &tree)?;
        }
        self.put(&digest, bytes)?;
        Ok(CodeInfo {
            digest,
            size: bytes.len() as u64,
            exports: Vec::new(),
        })
    }

    /// Stores an uploaded container image (the tar at `upload`, in the
    /// data directory's file system) by digest, once `unpack` has checked
    /// and unpacked it into the directory it is handed. An image already
    /// unpacked is not unpacked again.
    ///
    /// `unpack` gives the bytes the unpacked image takes, which are kept
    /// beside it: an image's size, as quotas count it, is its upload's
    /// and its unpacked root's together.
    pub fn accept_image(
        &self,
        digest: Digest,
        upload: &Path,
        unpack: impl FnOnce(&Path) -> anyhow::Result<u64>,
    ) -> Result<CodeInfo, anyhow::Error> {
        let _one_at_a_time = self.lock(&digest);
        let dir = self.image_path(&digest);
        if !dir.is_dir() {
            let unpacked = unpack(&dir)?;
            if let Err(e) = std::fs::write(dir.join(UNPACKED_FILE), unpacked.to_string()) {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(anyhow::anyhow!("recording the image's size: {e}"));
            }
        }
        self.blobs.put_file(&digest, upload)?;
        self.mark_fresh(&digest);
        Ok(CodeInfo {
            size: self.code_bytes(&digest),
            digest,
            exports: vec!["a container image".into()],
        })
    }

    /// Where container images are unpacked, one directory per digest.
    pub fn images_dir(&self) -> &Path {
        &self.images_dir
    }

    /// Where the image of `digest` is unpacked (whether or not it is).
    pub fn image_path(&self, digest: &Digest) -> PathBuf {
        self.images_dir.join(digest.hex())
    }

    /// Where the files of `digest` are unpacked (whether or not they are).
    pub fn files_path(&self, digest: &Digest) -> PathBuf {
        self.files_dir.join(digest.hex())
    }

    /// Holds stored code for a version about to name it: true when it is
    /// stored, and then it is spared by [`Content::retain`] as a fresh
    /// upload until a committed version names it.
    pub fn hold(&self, digest: &Digest) -> bool {
        let _one_at_a_time = self.lock(digest);
        if !self.blobs.contains(digest) {
            return false;
        }
        self.mark_fresh(digest);
        true
    }

    /// Spares stored code from collection for [`UNDEPLOYED_GRACE`]. Older
    /// entries go as new ones come, so the list holds only the last grace
    /// period's uploads.
    pub fn mark_fresh(&self, digest: &Digest) {
        let mut fresh = self.fresh.lock();
        fresh.retain(|_, at| at.elapsed() < UNDEPLOYED_GRACE);
        fresh.insert(digest.clone(), Instant::now());
        drop(fresh);
        self.stored.send_modify(|n| *n += 1);
    }

    /// Holds the digest's lock, so that storing, loading and removing the
    /// same code happen one at a time; the lock's entry goes when the last
    /// holder is done.
    pub fn lock(&self, digest: &Digest) -> DigestGuard<'_> {
        let lock = {
            let mut locks = self.locks.lock();
            let (lock, users) = locks.entry(digest.clone()).or_default();
            *users += 1;
            lock.clone()
        };
        let guard = lock.lock_arc();
        DigestGuard {
            content: self,
            digest: digest.clone(),
            _guard: guard,
        }
    }

    /// How many hold or wait for each digest's lock (for tests: none once
    /// every holder is done).
    #[cfg(test)]
    pub(crate) fn lock_users(&self) -> Vec<usize> {
        self.locks
            .lock()
            .values()
            .map(|(_, users)| *users)
            .collect()
    }
}

/// Holds one digest's lock; see [`Content::lock`].
pub struct DigestGuard<'a> {
    content: &'a Content,
    digest: Digest,
    _guard: parking_lot::ArcMutexGuard<parking_lot::RawMutex, ()>,
}

impl Drop for DigestGuard<'_> {
    fn drop(&mut self) {
        let mut locks = self.content.locks.lock();
        if let Some((_, users)) = locks.get_mut(&self.digest) {
            *users -= 1;
            if *users == 0 {
                // No one else holds or waits for it.
                locks.remove(&self.digest);
            }
        }
    }
}
