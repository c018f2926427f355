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

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::error::ImageError;
use super::layer::{self, Budget};

/// Most bytes an image's layers may unpack to.
pub const MAX_IMAGE_BYTES: u64 = 4 << 30;
/// Most files an image may hold, over all its layers.
pub const MAX_IMAGE_ENTRIES: u64 = 500_000;
/// Most entries the uploaded tar itself may hold.
const MAX_ARCHIVE_ENTRIES: usize = 10_000;
/// Largest JSON document (index, manifest, config) read from an image.
const MAX_JSON_BYTES: u64 = 4 << 20;
/// Most `Env` entries an image's config may set, and their bytes together
/// (youki's init copies each into the process it starts).
const MAX_CONFIG_ENV: usize = 1_000;
/// Most words `Entrypoint` and `Cmd` may have together, and for either
/// list their bytes together.
const MAX_CONFIG_ARGS: usize = 1_000;
/// Most bytes of `Env`, or of `Entrypoint` and `Cmd`, together.
const MAX_CONFIG_BYTES: usize = 256 << 10;

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

/// The `GOARCH`-style name of this host's CPU.
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// Whether `head` (the first bytes of an upload) looks like a tar archive.
pub fn is_tar(head: &[u8]) -> bool {
    head.len() >= 262 && &head[257..262] == b"ustar"
}

/// Where each regular file of the upload's tar starts and how long it is.
struct Archive {
    file: File,
    entries: HashMap<String, (u64, u64)>,
}

impl Archive {
    fn open(name: &str, path: &Path) -> Result<Archive, ImageError> {
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

    fn has(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// A reader over one file of the archive.
    fn reader(&self, name: &str) -> Option<impl Read + '_> {
        let (offset, size) = *self.entries.get(name)?;
        let mut file = self.file.try_clone().ok()?;
        file.seek(SeekFrom::Start(offset)).ok()?;
        Some(BufReader::new(file).take(size))
    }

    /// A small file's bytes, bounded.
    fn read_small(&self, name: &str) -> Option<Vec<u8>> {
        let (_, size) = *self.entries.get(name)?;
        if size > MAX_JSON_BYTES {
            return None;
        }
        let mut out = Vec::with_capacity(size as usize);
        self.reader(name)?.read_to_end(&mut out).ok()?;
        Some(out)
    }
}

/// `sha256:HEX` of `bytes`.
fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The path of a blob in an OCI layout, or `None` for a digest that is
/// not a well-formed sha256 one.
fn blob_path(digest: &str) -> Option<String> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| format!("blobs/sha256/{hex}"))
}

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
}

#[derive(Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Manifest {
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

#[derive(Deserialize)]
struct Config {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    config: Option<RunConfig>,
    #[serde(default)]
    rootfs: Option<RootFs>,
}

#[derive(Deserialize, Default)]
struct RunConfig {
    #[serde(rename = "Entrypoint", default)]
    entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    cmd: Option<Vec<String>>,
    #[serde(rename = "Env", default)]
    env: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default)]
    working_dir: Option<String>,
    #[serde(rename = "User", default)]
    user: Option<String>,
}

#[derive(Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// One layer to unpack: where it is in the upload, the digest of its
/// bytes as stored (when known), and of its unpacked tar.
struct LayerRef {
    path: String,
    stored: Option<String>,
    diff_id: Option<String>,
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

/// Refuses a run config no container should start with: so many or so
/// large `Env` entries or arguments that starting it is the attack.
fn check_run_config(run: &RunConfig) -> Result<(), String> {
    let env = run.env.as_deref().unwrap_or_default();
    if env.len() > MAX_CONFIG_ENV {
        return Err(format!(
            "its config sets {} Env entries; at most {MAX_CONFIG_ENV} are allowed",
            env.len()
        ));
    }
    let env_bytes: usize = env.iter().map(String::len).sum();
    if env_bytes > MAX_CONFIG_BYTES {
        return Err(format!(
            "its config's Env entries take {env_bytes} bytes; at most {} KiB are allowed",
            MAX_CONFIG_BYTES >> 10
        ));
    }
    let args: Vec<&String> = [&run.entrypoint, &run.cmd]
        .into_iter()
        .flatten()
        .flatten()
        .collect();
    if args.len() > MAX_CONFIG_ARGS {
        return Err(format!(
            "its config's Entrypoint and Cmd have {} words; at most {MAX_CONFIG_ARGS} are allowed",
            args.len()
        ));
    }
    let arg_bytes: usize = args.iter().map(|a| a.len()).sum();
    if arg_bytes > MAX_CONFIG_BYTES {
        return Err(format!(
            "its config's Entrypoint and Cmd take {arg_bytes} bytes; at most {} KiB are allowed",
            MAX_CONFIG_BYTES >> 10
        ));
    }
    for (field, value) in [("WorkingDir", &run.working_dir), ("User", &run.user)] {
        if value.as_ref().is_some_and(|v| v.len() > 4096) {
            return Err(format!("its config's {field} is longer than 4096 bytes"));
        }
    }
    Ok(())
}

/// The settings saved beside an unpacked image.
pub fn settings(dir: &Path) -> Option<ImageSettings> {
    let bytes = std::fs::read(dir.join(SETTINGS_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// A blob of the OCI layout, checked against its digest.
fn oci_blob(
    name: &str,
    archive: &Archive,
    what: &str,
    digest: &str,
) -> Result<Vec<u8>, ImageError> {
    let missing = || ImageError::Missing {
        name: name.to_string(),
        what: what.to_string(),
        digest: digest.to_string(),
    };
    let path = blob_path(digest).ok_or_else(missing)?;
    let bytes = archive.read_small(&path).ok_or_else(missing)?;
    let got = sha256(&bytes);
    if got != digest {
        return Err(ImageError::Digest {
            name: name.to_string(),
            what: what.to_string(),
            expected: digest.to_string(),
            got,
        });
    }
    Ok(bytes)
}

fn parse<T: serde::de::DeserializeOwned>(
    name: &str,
    what: &str,
    bytes: &[u8],
) -> Result<T, ImageError> {
    serde_json::from_slice(bytes).map_err(|e| ImageError::Invalid {
        name: name.to_string(),
        reason: format!("its {what} is not valid: {e}"),
    })
}

/// The config and layers of an OCI image layout: the index's manifest
/// for this host's platform (or its only one), through nested indexes.
fn read_oci(name: &str, archive: &Archive) -> Result<(String, Config, Vec<LayerRef>), ImageError> {
    let index_bytes = archive
        .read_small("index.json")
        .ok_or_else(|| ImageError::NotImage {
            name: name.to_string(),
            reason: "its index.json cannot be read".into(),
        })?;
    let mut index: Index = parse(name, "index.json", &index_bytes)?;
    for _depth in 0..4 {
        let chosen = pick(name, index.manifests)?;
        let bytes = oci_blob(name, archive, "manifest", &chosen.digest)?;
        if chosen.media_type.contains("index") {
            index = parse(name, "nested index", &bytes)?;
            continue;
        }
        let manifest: Manifest = parse(name, "manifest", &bytes)?;
        let config_bytes = oci_blob(name, archive, "config", &manifest.config.digest)?;
        let config: Config = parse(name, "config", &config_bytes)?;
        let mut layers = Vec::new();
        for l in manifest.layers {
            let path = blob_path(&l.digest)
                .filter(|p| archive.has(p))
                .ok_or_else(|| ImageError::Missing {
                    name: name.to_string(),
                    what: "layer".into(),
                    digest: l.digest.clone(),
                })?;
            if l.media_type.contains("zstd") {
                return Err(ImageError::Invalid {
                    name: name.to_string(),
                    reason: format!("layer {} is zstd-compressed; use gzip or none", l.digest),
                });
            }
            layers.push(LayerRef {
                path,
                stored: Some(l.digest),
                diff_id: None,
            });
        }
        return Ok((manifest.config.digest, config, layers));
    }
    Err(ImageError::Invalid {
        name: name.to_string(),
        reason: "its indexes nest too deep".into(),
    })
}

/// The one manifest of an index this host can run.
fn pick(name: &str, manifests: Vec<Descriptor>) -> Result<Descriptor, ImageError> {
    let count = manifests.len();
    if count == 0 {
        return Err(ImageError::NotImage {
            name: name.to_string(),
            reason: "its index.json lists no manifest".into(),
        });
    }
    let arch = host_architecture();
    let mut others = Vec::new();
    let mut fallback = None;
    for m in manifests {
        match &m.platform {
            Some(p) if p.architecture == arch && (p.os.is_empty() || p.os == "linux") => {
                return Ok(m)
            }
            Some(p) => others.push(format!("{}/{}", p.os, p.architecture)),
            None => fallback = fallback.or(Some(m)),
        }
    }
    match fallback {
        Some(m) => Ok(m),
        None => Err(ImageError::Platform {
            name: name.to_string(),
            platform: others.join(", "),
            host: arch.to_string(),
        }),
    }
}

/// The config and layers of a `docker save` tar.
fn read_docker(
    name: &str,
    archive: &Archive,
) -> Result<(String, Config, Vec<LayerRef>), ImageError> {
    let bytes = archive
        .read_small("manifest.json")
        .ok_or_else(|| ImageError::NotImage {
            name: name.to_string(),
            reason: "its manifest.json cannot be read".into(),
        })?;
    let entries: Vec<DockerEntry> = parse(name, "manifest.json", &bytes)?;
    let [entry] = <[DockerEntry; 1]>::try_from(entries).map_err(|all| ImageError::Invalid {
        name: name.to_string(),
        reason: format!("it holds {} images; save one image per file", all.len()),
    })?;
    let config_path = layer::clean(Path::new(&entry.config))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let config_bytes = archive
        .read_small(&config_path)
        .ok_or_else(|| ImageError::Missing {
            name: name.to_string(),
            what: "config".into(),
            digest: entry.config.clone(),
        })?;
    let config_digest = sha256(&config_bytes);
    // The config's name is its digest (`HEX.json` or `blobs/sha256/HEX`).
    let named = config_path
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .trim_end_matches(".json")
        .to_string();
    if named.len() == 64 && format!("sha256:{named}") != config_digest {
        return Err(ImageError::Digest {
            name: name.to_string(),
            what: "config".into(),
            expected: format!("sha256:{named}"),
            got: config_digest,
        });
    }
    let config: Config = parse(name, "config", &config_bytes)?;
    let mut layers = Vec::new();
    for l in entry.layers {
        let path = layer::clean(Path::new(&l))
            .map(|p| p.to_string_lossy().into_owned())
            .filter(|p| archive.has(p))
            .ok_or_else(|| ImageError::Missing {
                name: name.to_string(),
                what: "layer".into(),
                digest: l.clone(),
            })?;
        let stored = path
            .strip_prefix("blobs/sha256/")
            .map(|hex| format!("sha256:{hex}"));
        layers.push(LayerRef {
            path,
            stored,
            diff_id: None,
        });
    }
    Ok((config_digest, config, layers))
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

#[cfg(test)]
mod tests {
    use super::*;

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
