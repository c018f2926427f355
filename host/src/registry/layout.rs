//! A pulled image as an OCI image layout tar: `oci-layout`, `index.json`
//! naming the manifest, and each blob under `blobs/sha256/`. The same
//! manifest and blobs give the same bytes on every host (fixed order,
//! modes, owners and times), so the tar's digest, which names the image
//! in a stack version, is the same wherever it is made.

use std::io::{Read as _, Write};
use std::path::Path;

use sha2::{Digest as _, Sha256};

/// One blob of the layout: its digest and where its bytes are.
pub struct Blob<'a> {
    /// `sha256:...`.
    pub digest: &'a str,
    /// The verified bytes, in a file.
    pub path: &'a Path,
}

/// Writes the layout of the manifest (`manifest`, `media_type`,
/// `manifest_digest`) and its `blobs` to `out`; returns the tar's sha256
/// and size.
pub fn write(
    out: &Path,
    manifest: &[u8],
    manifest_digest: &str,
    media_type: &str,
    blobs: &[Blob<'_>],
) -> std::io::Result<(String, u64)> {
    let file = std::fs::File::create(out)?;
    let mut tar = tar::Builder::new(Hashing::new(std::io::BufWriter::new(file)));
    tar.mode(tar::HeaderMode::Deterministic);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": media_type,
            "digest": manifest_digest,
            "size": manifest.len(),
        }],
    });
    append(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    append(&mut tar, "index.json", index.to_string().as_bytes())?;
    append(&mut tar, &blob_name(manifest_digest), manifest)?;
    let mut written = std::collections::BTreeSet::new();
    for blob in blobs {
        if !written.insert(blob.digest) {
            continue;
        }
        let mut file = std::fs::File::open(blob.path)?;
        let size = file.metadata()?.len();
        let mut header = header(size);
        tar.append_data(
            &mut header,
            blob_name(blob.digest),
            &mut (&mut file).take(size),
        )?;
    }
    let mut hashing = tar.into_inner()?;
    hashing.flush()?;
    Ok((
        format!("sha256:{}", hex::encode(hashing.hasher.finalize())),
        hashing.written,
    ))
}

fn blob_name(digest: &str) -> String {
    format!(
        "blobs/sha256/{}",
        digest.strip_prefix("sha256:").unwrap_or(digest)
    )
}

fn header(size: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    header
}

fn append<W: Write>(tar: &mut tar::Builder<W>, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let mut header = header(bytes.len() as u64);
    tar.append_data(&mut header, name, bytes)
}

/// Hashes and counts what is written through it.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W> Hashing<W> {
    fn new(inner: W) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_blobs_make_the_same_tar() {
        let dir = tempfile::tempdir().unwrap();
        let layer = dir.path().join("layer");
        std::fs::write(&layer, b"layer bytes").unwrap();
        let blobs = [
            Blob {
                digest: "sha256:11",
                path: &layer,
            },
            Blob {
                digest: "sha256:11",
                path: &layer,
            },
        ];
        let a = write(
            &dir.path().join("a.tar"),
            b"{}",
            "sha256:22",
            "application/vnd.oci.image.manifest.v1+json",
            &blobs,
        )
        .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let b = write(
            &dir.path().join("b.tar"),
            b"{}",
            "sha256:22",
            "application/vnd.oci.image.manifest.v1+json",
            &blobs,
        )
        .unwrap();
        assert_eq!(a, b);
        let bytes = std::fs::read(dir.path().join("a.tar")).unwrap();
        assert_eq!(
            format!("sha256:{}", hex::encode(Sha256::digest(&bytes))),
            a.0
        );
        assert_eq!(bytes.len() as u64, a.1);
        let mut names = Vec::new();
        let mut archive = tar::Archive::new(&bytes[..]);
        for entry in archive.entries().unwrap() {
            names.push(entry.unwrap().path().unwrap().to_string_lossy().to_string());
        }
        assert_eq!(
            names,
            [
                "oci-layout",
                "index.json",
                "blobs/sha256/22",
                "blobs/sha256/11"
            ]
        );
    }
}
