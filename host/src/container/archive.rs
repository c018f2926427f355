//! The uploaded tar an image arrives in: where each of its files is and
//! reading them, bounded; and the reverse, packing an OCI layout
//! directory into such a tar (what the CLI uploads).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use super::error::ImageError;
use super::layer;

/// Most entries the uploaded tar itself may hold.
const MAX_ARCHIVE_ENTRIES: usize = 10_000;
/// Largest JSON document (index, manifest, config) read from an image.
const MAX_JSON_BYTES: u64 = 4 << 20;

/// Whether `head` (the first bytes of an upload) looks like a tar archive.
pub fn is_tar(head: &[u8]) -> bool {
    head.len() >= 262 && &head[257..262] == b"ustar"
}

/// Where each regular file of the upload's tar starts and how long it is.
pub(super) struct Archive {
    file: File,
    entries: HashMap<String, (u64, u64)>,
}

impl Archive {
    pub(super) fn open(name: &str, path: &Path) -> Result<Archive, ImageError> {
        let not_image = |reason: String| ImageError::NotImage {
            name: name.to_string(),
            reason,
        };
        let mut file = File::open(path).map_err(|e| not_image(e.to_string()))?;
        let mut head = [0u8; 512];
        if file.read_exact(&mut head).is_err() || !is_tar(&head) {
            return Err(not_image("it is not a tar archive".into()));
        }
        file.seek(SeekFrom::Start(0))
            .map_err(|e| not_image(e.to_string()))?;
        let mut entries = HashMap::new();
        let mut archive = tar::Archive::new(BufReader::new(&file));
        for entry in archive
            .entries()
            .map_err(|e| not_image(format!("unreadable tar: {e}")))?
        {
            let entry = entry.map_err(|e| not_image(format!("unreadable tar: {e}")))?;
            if entries.len() >= MAX_ARCHIVE_ENTRIES {
                return Err(not_image("it holds too many files".into()));
            }
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let path = entry
                .path()
                .map_err(|e| not_image(format!("unreadable tar: {e}")))?;
            let Some(clean) = layer::clean(&path) else {
                continue;
            };
            let key = clean.to_string_lossy().into_owned();
            entries.insert(key, (entry.raw_file_position(), entry.size()));
        }
        Ok(Archive {
            file: File::open(path).map_err(|e| not_image(e.to_string()))?,
            entries,
        })
    }

    pub(super) fn has(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// A reader over one file of the archive.
    pub(super) fn reader(&self, name: &str) -> Option<impl Read + '_> {
        let (offset, size) = *self.entries.get(name)?;
        let mut file = self.file.try_clone().ok()?;
        file.seek(SeekFrom::Start(offset)).ok()?;
        Some(BufReader::new(file).take(size))
    }

    /// A small file's bytes, bounded.
    pub(super) fn read_small(&self, name: &str) -> Option<Vec<u8>> {
        let (_, size) = *self.entries.get(name)?;
        if size > MAX_JSON_BYTES {
            return None;
        }
        let mut out = Vec::with_capacity(size as usize);
        self.reader(name)?.read_to_end(&mut out).ok()?;
        Some(out)
    }
}

/// Packs an OCI image layout directory as a tar (what `oci-archive`
/// holds): entries in name order with no owners or times, so equal
/// layouts give equal bytes. Only plain files and directories are taken.
pub fn pack_layout(dir: &Path) -> anyhow::Result<Vec<u8>> {
    use anyhow::Context as _;
    if !dir.join("oci-layout").is_file() || !dir.join("index.json").is_file() {
        anyhow::bail!(
            "{} is not an OCI image layout (no oci-layout and index.json files)",
            dir.display()
        );
    }
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).with_context(|| format!("listing {}", at.display()))? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                files.push(entry.path());
            }
        }
        if files.len() > MAX_ARCHIVE_ENTRIES {
            anyhow::bail!("{} holds too many files to be an image", dir.display());
        }
    }
    files.sort();
    let mut builder = tar::Builder::new(Vec::new());
    builder.mode(tar::HeaderMode::Deterministic);
    for path in files {
        let rel = path.strip_prefix(dir).unwrap_or(&path);
        let mut file = File::open(&path).with_context(|| format!("reading {}", path.display()))?;
        builder
            .append_file(rel, &mut file)
            .with_context(|| format!("packing {}", path.display()))?;
    }
    Ok(builder.into_inner()?)
}
