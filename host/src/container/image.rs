//! Container images, offline: an OCI image layout (as a tar, which is what
//! `skopeo copy ... oci-archive:` writes and what the CLI packs a layout
//! directory into) or a `docker save` tar. No registry is reachable from
//! where mesh runs, so images arrive as uploads; a registry client would
//! produce the same layout and hand it to [`unpack`].
//!
//! Every blob is checked against its digest (and every layer's unpacked
//! bytes against the config's `diff_ids`) before the image is used. The
//! layers are unpacked once per image, into a directory beside the final
//! one, renamed into place when whole, with the image's run settings
//! (entrypoint, cmd, env, working directory, user) saved next to them.
//!
//! The upload's tar is read in `archive`, the image's description in
//! either format in `manifest`; this file unpacks the layers it names.

use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::archive::Archive;
use super::error::ImageError;
use super::layer::{self, Budget};
use super::manifest::{check_run_config, read_docker, read_oci, LayerRef};

pub use super::archive::{is_tar, pack_layout};
pub use super::manifest::host_architecture;

/// Most bytes an image's layers may unpack to.
pub const MAX_IMAGE_BYTES: u64 = 4 << 30;
/// Most files an image may hold, over all its layers.
pub const MAX_IMAGE_ENTRIES: u64 = 500_000;

/// The file beside an unpacked root that holds its run settings.
pub const SETTINGS_FILE: &str = "image.json";
/// The unpacked root filesystem's directory name.
pub const ROOTFS_DIR: &str = "rootfs";

/// How the image says its containers run: the parts of its config's
/// `config` object mesh honours.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageSettings {
    /// `Entrypoint`.
    #[serde(default)]
    pub entrypoint: Vec<String>,
    /// `Cmd`: the arguments a service's command replaces.
    #[serde(default)]
    pub cmd: Vec<String>,
    /// `Env`, as `KEY=VALUE`.
    #[serde(default)]
    pub env: Vec<String>,
    /// `WorkingDir`; `/` when empty.
    #[serde(default)]
    pub working_dir: String,
    /// `User`: `uid[:gid]` or a name from the image's `/etc/passwd`.
    #[serde(default)]
    pub user: String,
    /// The digest of the image config: what identifies the image.
    #[serde(default)]
    pub config_digest: String,
}

impl ImageSettings {
    /// The argv a container runs: the entrypoint, then `command` (or the
    /// image's `Cmd` when `command` is empty), as `docker run IMAGE ARGV`.
    pub fn argv(&self, command: &[String]) -> Vec<String> {
        let mut argv = self.entrypoint.clone();
        if command.is_empty() {
            argv.extend(self.cmd.iter().cloned());
        } else {
            argv.extend(command.iter().cloned());
        }
        argv
    }

    /// The value of `PATH` in the image's env, or the usual default.
    pub fn path_var(&self) -> &str {
        self.env
            .iter()
            .find_map(|kv| kv.strip_prefix("PATH="))
            .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    }
}

/// What an image took on disk once unpacked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Unpacked {
    /// Its files' bytes, and [`layer::ENTRY_BYTES`] for each entry.
    pub bytes: u64,
    /// Its entries (files, folders, links).
    pub entries: u64,
}

/// What an unpacked image may weigh: `room` bytes (content, and
/// [`layer::ENTRY_BYTES`] an entry), or the platform's own limits when
/// less; `limit` says what bounds it, for errors.
pub struct Room {
    /// Bytes it may take.
    pub bytes: u64,
    /// What bounds them ("environment t2's code quota ...").
    pub limit: String,
}

impl Room {
    /// The platform's own limits alone.
    pub fn platform() -> Room {
        Room {
            bytes: MAX_IMAGE_BYTES,
            limit: format!("the image size limit ({} GiB)", MAX_IMAGE_BYTES >> 30),
        }
    }
}

/// Checks the image in the tar at `upload` and unpacks it into `dest`
/// (which must not exist): `dest/rootfs` and `dest/image.json`, within
/// `room`. `name` is what the user called it. Nothing is left behind when
/// it fails.
pub fn unpack(
    name: &str,
    upload: &Path,
    dest: &Path,
    room: Room,
) -> Result<(ImageSettings, Unpacked), ImageError> {
    let invalid = |reason: String| ImageError::Invalid {
        name: name.to_string(),
        reason,
    };
    let archive = Archive::open(name, upload)?;
    let (config_digest, config, layers) = if archive.has("index.json") {
        read_oci(name, &archive)?
    } else if archive.has("manifest.json") {
        read_docker(name, &archive)?
    } else {
        return Err(ImageError::NotImage {
            name: name.to_string(),
            reason:
                "it holds neither index.json (an OCI image layout) nor manifest.json (docker save)"
                    .into(),
        });
    };
    let arch = host_architecture();
    let os = if config.os.is_empty() {
        "linux"
    } else {
        &config.os
    };
    if os != "linux" || (!config.architecture.is_empty() && config.architecture != arch) {
        return Err(ImageError::Platform {
            name: name.to_string(),
            platform: format!("{os}/{}", config.architecture),
            host: arch.to_string(),
        });
    }
    let diff_ids = config.rootfs.map(|r| r.diff_ids).unwrap_or_default();
    if !diff_ids.is_empty() && diff_ids.len() != layers.len() {
        return Err(invalid(format!(
            "the config lists {} layers, the manifest {}",
            diff_ids.len(),
            layers.len()
        )));
    }
    let layers: Vec<LayerRef> = layers
        .into_iter()
        .enumerate()
        .map(|(i, mut l)| {
            l.diff_id = diff_ids.get(i).cloned();
            l
        })
        .collect();
    let run = config.config.unwrap_or_default();
    check_run_config(&run).map_err(invalid)?;
    let settings = ImageSettings {
        entrypoint: run.entrypoint.unwrap_or_default(),
        cmd: run.cmd.unwrap_or_default(),
        env: run.env.unwrap_or_default(),
        working_dir: run.working_dir.unwrap_or_default(),
        user: run.user.unwrap_or_default(),
        config_digest,
    };

    let parent = dest.parent().ok_or_else(|| invalid("no parent".into()))?;
    std::fs::create_dir_all(parent).map_err(|e| invalid(e.to_string()))?;
    let temp = crate::content::partial_beside(dest);
    let _ = std::fs::remove_dir_all(&temp);
    std::fs::create_dir_all(temp.join(ROOTFS_DIR)).map_err(|e| invalid(e.to_string()))?;
    let mut budget = Budget {
        bytes: room.bytes.min(MAX_IMAGE_BYTES),
        entries: MAX_IMAGE_ENTRIES,
        limit: if room.bytes < MAX_IMAGE_BYTES {
            room.limit
        } else {
            Room::platform().limit
        },
    };
    let start = budget.bytes;
    let result = unpack_layers(name, &archive, &layers, &temp.join(ROOTFS_DIR), &mut budget)
        .and_then(|()| {
            let json = serde_json::to_vec_pretty(&settings).map_err(|e| invalid(e.to_string()))?;
            std::fs::write(temp.join(SETTINGS_FILE), json).map_err(|e| invalid(e.to_string()))?;
            std::fs::rename(&temp, dest).map_err(|e| invalid(e.to_string()))
        });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&temp);
    }
    let unpacked = Unpacked {
        bytes: start - budget.bytes,
        entries: MAX_IMAGE_ENTRIES - budget.entries,
    };
    result.map(|()| (settings, unpacked))
}

/// The settings saved beside an unpacked image.
pub fn settings(dir: &Path) -> Option<ImageSettings> {
    let bytes = std::fs::read(dir.join(SETTINGS_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

impl<R> Hashing<R> {
    fn new(inner: R) -> Hashing<R> {
        Hashing {
            inner,
            hasher: Sha256::new(),
        }
    }

    fn digest(self) -> String {
        format!("sha256:{}", hex::encode(self.hasher.finalize()))
    }
}

/// Unpacks `layers` in order into `root`, each checked against its digest
/// as stored (before a byte of it is unpacked) and as unpacked.
fn unpack_layers(
    name: &str,
    archive: &Archive,
    layers: &[LayerRef],
    root: &Path,
    budget: &mut Budget,
) -> Result<(), ImageError> {
    for l in layers {
        let label = l.stored.clone().unwrap_or_else(|| l.path.clone());
        let short = label.get(..19).unwrap_or(&label).to_string();
        if let Some(expected) = &l.stored {
            // Checked before a byte of it is unpacked.
            let mut whole =
                Hashing::new(archive.reader(&l.path).ok_or_else(|| ImageError::Missing {
                    name: name.to_string(),
                    what: "layer".into(),
                    digest: label.clone(),
                })?);
            std::io::copy(&mut whole, &mut std::io::sink()).map_err(|e| ImageError::Layer {
                layer: short.clone(),
                reason: e.to_string(),
            })?;
            let got = whole.digest();
            if &got != expected {
                return Err(ImageError::Digest {
                    name: name.to_string(),
                    what: format!("layer {short}"),
                    expected: expected.clone(),
                    got,
                });
            }
        }
        let reader = archive.reader(&l.path).ok_or_else(|| ImageError::Missing {
            name: name.to_string(),
            what: "layer".into(),
            digest: label.clone(),
        })?;
        let mut stored = reader;
        let mut head = [0u8; 2];
        let n = read_up_to(&mut stored, &mut head).map_err(|e| ImageError::Layer {
            layer: short.clone(),
            reason: e.to_string(),
        })?;
        let prefix = std::io::Cursor::new(head[..n].to_vec());
        let gzip = n == 2 && head == [0x1f, 0x8b];
        let diff_id = {
            let joined = prefix.chain(&mut stored);
            let mut tar_bytes: Hashing<Box<dyn Read>> = Hashing::new(if gzip {
                Box::new(flate2::read::GzDecoder::new(joined))
            } else {
                Box::new(joined)
            });
            layer::apply(root, &mut tar_bytes, &short, budget)?;
            // What is past the tar's end counts toward its digest too,
            // and against the budget: inflating it costs as unpacking does.
            let past = std::io::copy(
                &mut (&mut tar_bytes).take(budget.bytes.saturating_add(1)),
                &mut std::io::sink(),
            )
            .map_err(|e| ImageError::Layer {
                layer: short.clone(),
                reason: e.to_string(),
            })?;
            budget
                .take(past, "what follows the end of its tar")
                .map_err(|reason| ImageError::Layer {
                    layer: short.clone(),
                    reason,
                })?;
            tar_bytes.digest()
        };
        if let Some(expected) = &l.diff_id {
            if &diff_id != expected {
                return Err(ImageError::Digest {
                    name: name.to_string(),
                    what: format!("layer {short} (unpacked)"),
                    expected: expected.clone(),
                    got: diff_id,
                });
            }
        }
    }
    Ok(())
}

/// Reads until `buf` is full or the input ends; how many bytes it read.
fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::manifest::{blob_path, sha256};

    /// A one-layer OCI layout tar holding `files`, for `arch`; `corrupt`
    /// flips a byte of the layer blob after its digest is taken.
    fn oci_image(files: &[(&str, &str)], arch: &str, corrupt: bool) -> Vec<u8> {
        let mut layer = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut header = tar::Header::new_gnu();
            header.set_mode(0o755);
            header.set_size(data.len() as u64);
            layer
                .append_data(&mut header, name, data.as_bytes())
                .expect("layer");
        }
        let mut layer = layer.into_inner().expect("layer");
        let diff_id = sha256(&layer);
        let layer_digest = sha256(&layer);
        if corrupt {
            layer[600] ^= 1;
        }
        let config = serde_json::json!({
            "architecture": arch, "os": "linux",
            "config": {"Cmd": ["sh"], "Env": ["PATH=/bin"], "WorkingDir": "/work"},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        })
        .to_string();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(config.as_bytes()), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len()}],
        })
        .to_string();
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha256(manifest.as_bytes()), "size": manifest.len()}],
        })
        .to_string();
        let mut out = tar::Builder::new(Vec::new());
        let mut add = |name: String, bytes: &[u8]| {
            let mut header = tar::Header::new_ustar();
            header.set_mode(0o644);
            header.set_size(bytes.len() as u64);
            out.append_data(&mut header, name, bytes).expect("add");
        };
        add("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#);
        add("index.json".into(), index.as_bytes());
        add(
            blob_path(&sha256(manifest.as_bytes())).expect("path"),
            manifest.as_bytes(),
        );
        add(
            blob_path(&sha256(config.as_bytes())).expect("path"),
            config.as_bytes(),
        );
        add(blob_path(&layer_digest).expect("path"), &layer);
        out.into_inner().expect("tar")
    }

    fn unpack_bytes(bytes: &[u8]) -> (tempfile::TempDir, Result<ImageSettings, ImageError>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let upload = dir.path().join("upload.tar");
        std::fs::write(&upload, bytes).expect("write");
        let result = unpack(
            "img",
            &upload,
            &dir.path().join("images/abc"),
            Room::platform(),
        )
        .map(|(settings, _)| settings);
        (dir, result)
    }

    #[test]
    fn an_oci_layout_unpacks_with_its_settings() {
        let bytes = oci_image(
            &[("bin/hello", "#!/bin/sh\necho hi\n")],
            host_architecture(),
            false,
        );
        let (dir, result) = unpack_bytes(&bytes);
        let settings = result.expect("unpacked");
        assert_eq!(settings.cmd, vec!["sh"]);
        assert_eq!(settings.working_dir, "/work");
        assert_eq!(settings.argv(&[]), vec!["sh"]);
        assert_eq!(settings.argv(&["ls".into()]), vec!["ls"]);
        let root = dir.path().join("images/abc");
        assert!(root.join("rootfs/bin/hello").is_file());
        assert_eq!(super::settings(&root), Some(settings));
    }

    #[test]
    fn bad_images_are_refused_and_leave_nothing() {
        let (dir, result) = unpack_bytes(&oci_image(&[("a", "x")], host_architecture(), true));
        let err = result.expect_err("corrupt layer");
        assert!(matches!(err, ImageError::Digest { .. }), "{err}");
        let images = std::fs::read_dir(dir.path().join("images")).expect("dir");
        assert_eq!(images.count(), 0, "nothing half-made is left");

        let (_dir, result) = unpack_bytes(&oci_image(&[("a", "x")], "riscv64", false));
        let err = result.expect_err("other arch").to_string();
        assert!(
            err.contains("linux/riscv64") && err.contains("this host runs"),
            "{err}"
        );

        let (_dir, result) = unpack_bytes(b"not a tar at all");
        let err = result.expect_err("not a tar").to_string();
        assert!(err.contains("not a tar archive"), "{err}");
    }
}
