//! Values kept sealed in the state store: a registry login's password
//! today, secrets later. Each is encrypted with ChaCha20-Poly1305 (ring's
//! AEAD) under a key that is never in the store: a 32-byte file beside
//! it (`DATA/sealing.key`, 0600, made at first start), or the file the
//! operator names with `mesh up --sealing-key FILE` (every host of a
//! cluster must be given the same one). Nothing in `state.db` or etcd
//! can be read back without it.
//!
//! A sealed value is bound to what it is for (its `purpose`, e.g.
//! `registry-login/acme/ghcr.io`, as associated data): a value copied to
//! another environment's record does not open there.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use serde::{Deserialize, Serialize};

/// The key file's name in the data directory.
pub const KEY_FILE: &str = "sealing.key";
const KEY_LEN: usize = 32;

/// A value as the store keeps it: a fresh nonce and the ciphertext with
/// its tag, both in hex.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Sealed {
    /// The nonce it was sealed with.
    pub nonce: String,
    /// Ciphertext and tag.
    pub data: String,
}

/// Seals and opens values with the host's key.
pub struct Sealer {
    key: LessSafeKey,
    /// Where the key came from, for errors.
    path: PathBuf,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// The key at `given`, or `data_dir`'s own (made when missing).
    pub fn open(data_dir: &Path, given: Option<&Path>) -> anyhow::Result<Sealer> {
        let path = match given {
            Some(path) => path.to_path_buf(),
            None => {
                let path = data_dir.join(KEY_FILE);
                if !path.exists() {
                    create_key(&path)?;
                }
                path
            }
        };
        let bytes = std::fs::read(&path)
            .with_context(|| format!("reading the sealing key {}", path.display()))?;
        if bytes.len() != KEY_LEN {
            bail!(
                "the sealing key {} holds {} bytes; it must hold {KEY_LEN} (make one with `head -c 32 /dev/urandom > FILE`)",
                path.display(),
                bytes.len()
            );
        }
        let key = UnboundKey::new(&CHACHA20_POLY1305, &bytes)
            .map_err(|_| anyhow::anyhow!("the sealing key {} is not usable", path.display()))?;
        Ok(Sealer {
            key: LessSafeKey::new(key),
            path,
        })
    }

    /// Seals `plain` for `purpose`.
    pub fn seal(&self, purpose: &str, plain: &[u8]) -> anyhow::Result<Sealed> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        let mut data = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(purpose.as_bytes()),
                &mut data,
            )
            .map_err(|_| anyhow::anyhow!("sealing failed"))?;
        Ok(Sealed {
            nonce: hex::encode(nonce),
            data: hex::encode(data),
        })
    }

    /// Opens what was sealed for `purpose`; an error when this host's key
    /// is not the one it was sealed with, or the value was moved or
    /// changed.
    pub fn unseal(&self, purpose: &str, sealed: &Sealed) -> anyhow::Result<Vec<u8>> {
        let refused = || {
            anyhow::anyhow!(
                "a sealed value for {purpose} does not open with this host's sealing key ({}); give every host the same key with `mesh up --sealing-key FILE`",
                self.path.display()
            )
        };
        let nonce: [u8; NONCE_LEN] = hex::decode(&sealed.nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or_else(refused)?;
        let mut data = hex::decode(&sealed.data).map_err(|_| refused())?;
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(purpose.as_bytes()),
                &mut data,
            )
            .map_err(|_| refused())?;
        Ok(plain.to_vec())
    }
}

/// Writes a new random key, readable by its owner only.
fn create_key(path: &Path) -> anyhow::Result<()> {
    let mut key = [0u8; KEY_LEN];
    getrandom::fill(&mut key).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating the sealing key {}", path.display()))?;
    file.write_all(&key)?;
    file.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_with_its_key_and_purpose() {
        let dir = tempfile::tempdir().unwrap();
        let sealer = Sealer::open(dir.path(), None).unwrap();
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        let sealed = sealer
            .seal("registry-login/acme/r.example", b"hunter2")
            .unwrap();
        assert!(!sealed.data.contains(&hex::encode(b"hunter2")));
        assert_eq!(
            sealer
                .unseal("registry-login/acme/r.example", &sealed)
                .unwrap(),
            b"hunter2"
        );
        // Moved to another environment's record: refused.
        assert!(sealer
            .unseal("registry-login/globex/r.example", &sealed)
            .is_err());
        // The same key read again opens it; another key does not.
        let again = Sealer::open(dir.path(), None).unwrap();
        assert!(again
            .unseal("registry-login/acme/r.example", &sealed)
            .is_ok());
        let other = tempfile::tempdir().unwrap();
        let stranger = Sealer::open(other.path(), None).unwrap();
        let err = stranger
            .unseal("registry-login/acme/r.example", &sealed)
            .unwrap_err();
        assert!(err.to_string().contains("--sealing-key"), "{err}");
        // Two seals of one value differ (fresh nonces).
        assert_ne!(
            sealer.seal("p", b"x").unwrap(),
            sealer.seal("p", b"x").unwrap()
        );
    }

    #[test]
    fn a_key_of_the_wrong_size_is_refused_in_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("short.key");
        std::fs::write(&path, b"too short").unwrap();
        let err = Sealer::open(dir.path(), Some(&path)).unwrap_err();
        assert!(err.to_string().contains("must hold 32"), "{err}");
    }
}
