//! Collecting code no kept version names: its blob, its unpacked files or
//! image, and whatever was made from it elsewhere (an engine's compiled
//! files and loaded code, reached through [`Derived`]). An upload no
//! version names yet is spared for [`UNDEPLOYED_GRACE`].

use std::collections::HashSet;

use anyhow::Context as _;

use super::kept::{Content, UNDEPLOYED_GRACE};
use crate::model::Digest;

/// What [`Content::retain`] removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Collected {
    /// Code blobs deleted.
    pub blobs: usize,
    /// Compiled files deleted.
    pub compiled: usize,
    /// Loaded components dropped from memory.
    pub loaded: usize,
}

/// What is made from stored code outside the content store (an engine's
/// compiled files and the code it loaded), dropped with the code.
pub trait Derived {
    /// Every digest something was made from.
    fn derived_digests(&self) -> anyhow::Result<Vec<Digest>>;

    /// Drops what was made from `digest`, counting it in `collected`.
    /// Called with the digest's [`lock`](Content::lock) held.
    fn forget(&self, digest: &Digest, collected: &mut Collected) -> anyhow::Result<()>;
}

impl Content {
    /// Drops code that no kept version names: from `derived` (memory, the
    /// compiled cache) and from the store (blobs, unpacked trees). `keep`
    /// is every digest a kept stack version (or anything else still in
    /// use) names.
    pub fn retain(
        &self,
        keep: &HashSet<Digest>,
        derived: &dyn Derived,
    ) -> anyhow::Result<Collected> {
        // An upload a version now names is kept by that version alone.
        self.fresh
            .lock()
            .retain(|digest, at| !keep.contains(digest) && at.elapsed() < UNDEPLOYED_GRACE);
        let mut candidates: HashSet<Digest> = derived.derived_digests()?.into_iter().collect();
        candidates.extend(self.blobs.list()?);
        candidates.extend(self.unpacked_digests()?);
        candidates.retain(|digest| !keep.contains(digest));
        let mut collected = Collected::default();
        for digest in candidates {
            // Under the digest's lock: a load in progress finishes first, and
            // an upload (or a deploy naming it) that came since is seen.
            let _one_at_a_time = self.lock(&digest);
            if self.fresh.lock().contains_key(&digest) {
                continue;
            }
            derived.forget(&digest, &mut collected)?;
            if self.blobs.contains(&digest) {
                self.blobs.remove(&digest)?;
                collected.blobs += 1;
            }
            for tree in [self.files_path(&digest), self.image_path(&digest)] {
                if tree.is_dir() {
                    std::fs::remove_dir_all(&tree)
                        .with_context(|| format!("removing {}", tree.display()))?;
                }
            }
        }
        if collected.blobs > 0 {
            self.stored.send_modify(|n| *n += 1);
        }
        if collected != Collected::default() {
            tracing::info!(?collected, "removed code no kept version names");
        }
        self.unpack_missing(keep);
        Ok(collected)
    }

    /// Unpacks kept files archives whose directory is missing (a data
    /// directory restored without them, say).
    fn unpack_missing(&self, keep: &HashSet<Digest>) {
        for digest in keep {
            if self.files_path(digest).is_dir() || self.image_path(digest).is_dir() {
                continue;
            }
            // Only the head of each blob is read to tell archives apart.
            let mut head = [0u8; 512];
            let read = std::fs::File::open(self.blobs.path(digest))
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head));
            if read.is_err() || !super::files::is_archive(&head) {
                continue;
            }
            let Ok(bytes) = self.blobs.get(digest) else {
                continue;
            };
            let _one_at_a_time = self.lock(digest);
            let tree = self.files_path(digest);
            if tree.is_dir() {
                continue;
            }
            if let Err(e) = super::files::unpack(digest.short(), &bytes, &tree) {
                tracing::warn!(digest = digest.short(), error = %e, "cannot unpack a stack's files");
            }
        }
    }

    /// Digests whose files or images are unpacked.
    fn unpacked_digests(&self) -> anyhow::Result<Vec<Digest>> {
        let mut digests = Vec::new();
        for dir in [&self.files_dir, &self.images_dir] {
            let entries =
                std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
            digests.extend(entries.filter_map(Result::ok).filter_map(|e| {
                let hex = e.file_name().to_string_lossy().into_owned();
                Digest::try_from(format!("sha256:{hex}")).ok()
            }));
        }
        Ok(digests)
    }
}
