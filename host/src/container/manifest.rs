//! What an image says about itself, in either upload format: an OCI
//! layout's index, manifests and config, or the `manifest.json` of a
//! `docker save` tar. Each is read bounded and checked against its digest;
//! the result is the image's config and the layers to unpack, in order.

use std::path::Path;

use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::archive::Archive;
use super::error::ImageError;
use super::layer;

/// Most `Env` entries an image's config may set, and their bytes together
/// (youki's init copies each into the process it starts).
const MAX_CONFIG_ENV: usize = 1_000;
/// Most words `Entrypoint` and `Cmd` may have together, and for either
/// list their bytes together.
const MAX_CONFIG_ARGS: usize = 1_000;
/// Most bytes of `Env`, or of `Entrypoint` and `Cmd`, together.
const MAX_CONFIG_BYTES: usize = 256 << 10;

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

/// `sha256:HEX` of `bytes`.
pub(super) fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The path of a blob in an OCI layout, or `None` for a digest that is
/// not a well-formed sha256 one.
pub(super) fn blob_path(digest: &str) -> Option<String> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| format!("blobs/sha256/{hex}"))
}

/// One entry of an index or manifest: what it points at, by digest.
#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    platform: Option<Platform>,
}

/// The platform an index entry is for.
#[derive(Deserialize)]
struct Platform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
}

/// An OCI `index.json` (or a nested index).
#[derive(Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

/// An OCI image manifest: its config and layers.
#[derive(Deserialize)]
struct Manifest {
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

/// One image of a `docker save` tar's `manifest.json`.
#[derive(Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

/// An image config: its platform, how it runs, its layers' digests.
#[derive(Deserialize)]
pub(super) struct Config {
    #[serde(default)]
    pub(super) architecture: String,
    #[serde(default)]
    pub(super) os: String,
    #[serde(default)]
    pub(super) config: Option<RunConfig>,
    #[serde(default)]
    pub(super) rootfs: Option<RootFs>,
}

/// The config's `config` object: how its containers run.
#[derive(Deserialize, Default)]
pub(super) struct RunConfig {
    #[serde(rename = "Entrypoint", default)]
    pub(super) entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    pub(super) cmd: Option<Vec<String>>,
    #[serde(rename = "Env", default)]
    pub(super) env: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default)]
    pub(super) working_dir: Option<String>,
    #[serde(rename = "User", default)]
    pub(super) user: Option<String>,
}

/// The config's `rootfs`: each layer's digest once unpacked.
#[derive(Deserialize)]
pub(super) struct RootFs {
    #[serde(default)]
    pub(super) diff_ids: Vec<String>,
}

/// One layer to unpack: where it is in the upload, the digest of its
/// bytes as stored (when known), and of its unpacked tar.
pub(super) struct LayerRef {
    pub(super) path: String,
    pub(super) stored: Option<String>,
    pub(super) diff_id: Option<String>,
}

/// Refuses a run config no container should start with: so many or so
/// large `Env` entries or arguments that starting it is the attack.
pub(super) fn check_run_config(run: &RunConfig) -> Result<(), String> {
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

/// Parses one JSON document of the image (`what`), naming it when invalid.
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
pub(super) fn read_oci(
    name: &str,
    archive: &Archive,
) -> Result<(String, Config, Vec<LayerRef>), ImageError> {
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
pub(super) fn read_docker(
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
