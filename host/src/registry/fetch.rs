//! One pull: the reference resolved to a manifest, then the component's
//! one layer, or the image's blobs into the cache and its layout tar.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::{OciDescriptor, OciImageManifest, OciManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use tokio::io::AsyncWriteExt as _;

use super::layout::{self, Blob};
use super::names::{digest_of, is_reference, Credentials, Source};
use super::progress::{InFlight, Progress, PullStatus};
use super::sinks::{Counting, Restart};
use crate::config::RegistrySettings;
use crate::model::Digest;

/// The config media type of a WebAssembly component artifact.
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// The layer media type of a WebAssembly component.
pub const WASM_LAYER: &str = "application/wasm";
/// What older tools (wasm-to-oci) call a wasm layer.
const LEGACY_WASM_LAYER: &str = "application/vnd.wasm.content.layer.v1+wasm";
/// Config media types of container images.
const IMAGE_CONFIGS: [&str; 2] = [
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];
/// Manifest media types asked for.
const MANIFESTS: [&str; 4] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
/// Tries of a request that failed for want of the registry (unreachable,
/// 5xx), with a back-off doubling from [`FIRST_BACKOFF`].
const TRIES: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Longest one manifest request may take; a blob has [`BLOB_TIME`].
const MANIFEST_TIME: Duration = Duration::from_secs(30);
/// (A stalled blob is cut off sooner: the client's read timeout.)
const BLOB_TIME: Duration = Duration::from_secs(3600);
/// Largest image config taken.
const MAX_CONFIG_BYTES: u64 = 4 << 20;
/// Most layers an image may have.
const MAX_LAYERS: usize = 256;

/// Pulls code from registries: the blob cache, and pulls in flight.
pub struct Registries {
    settings: RegistrySettings,
    /// The CA certificates, read once.
    cas: Vec<Vec<u8>>,
    /// Blobs of images, by digest (`sha256/<hex>`), shared between images.
    cache: PathBuf,
    /// For each pulled image (by its layout tar's digest), the blobs it
    /// was made of: what keeps cached blobs.
    records: PathBuf,
    /// Blobs being fetched now: one fetch per digest, whoever asks.
    fetching: parking_lot::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Pulls in flight, and how far each has come.
    in_flight: Arc<InFlight>,
    /// Blobs pulls in flight use, and how many pulls use each: spared by
    /// pruning.
    pinned: parking_lot::Mutex<HashMap<Digest, usize>>,
}

impl Registries {
    /// The registries as `settings` say, caching blobs under `data_dir`.
    pub fn open(data_dir: &Path, settings: RegistrySettings) -> anyhow::Result<Registries> {
        let mut cas = Vec::new();
        for file in &settings.ca_files {
            let pem = std::fs::read(file)
                .map_err(|e| anyhow::anyhow!("reading the registry CA {}: {e}", file.display()))?;
            cas.push(pem);
        }
        let cache = data_dir.join("registry").join("blobs");
        std::fs::create_dir_all(cache.join("sha256"))?;
        let records = data_dir.join("registry").join("images");
        std::fs::create_dir_all(&records)?;
        crate::content::clean_partial(&cache.join("sha256"));
        // reqwest's rustls asks for the process's default crypto provider.
        let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
        Ok(Registries {
            settings,
            cas,
            cache,
            records,
            fetching: parking_lot::Mutex::new(HashMap::new()),
            in_flight: Arc::default(),
            pinned: parking_lot::Mutex::new(HashMap::new()),
        })
    }

    /// An environment's pulls in flight.
    pub fn in_flight(&self, env: &str) -> Vec<PullStatus> {
        self.in_flight.of(env)
    }

    /// Where a cached blob lives (a checked digest: 64 hex digits).
    fn cached(&self, digest: &Digest) -> PathBuf {
        let hex = digest.as_str().trim_start_matches("sha256:");
        self.cache.join("sha256").join(hex)
    }

    /// The lock held while one blob is fetched.
    fn fetch_lock(&self, digest: &Digest) -> Arc<tokio::sync::Mutex<()>> {
        let mut fetching = self.fetching.lock();
        fetching.retain(|_, lock| Arc::strong_count(lock) > 1);
        fetching.entry(digest.to_string()).or_default().clone()
    }

    /// Marks `blobs` as in use by a pull until the returned guard drops.
    fn pin(&self, blobs: &[Wanted]) -> Pins<'_> {
        let mut pinned = self.pinned.lock();
        for blob in blobs {
            *pinned.entry(blob.digest.clone()).or_insert(0) += 1;
        }
        Pins {
            registries: self,
            digests: blobs.iter().map(|b| b.digest.clone()).collect(),
            failed: true,
        }
    }

    /// The blobs the records of pulled images name.
    fn kept_blobs(&self) -> std::collections::BTreeSet<String> {
        let mut keep = std::collections::BTreeSet::new();
        if let Ok(records) = std::fs::read_dir(&self.records) {
            for record in records.flatten() {
                let text = std::fs::read_to_string(record.path()).unwrap_or_default();
                keep.extend(text.lines().map(str::to_string));
            }
        }
        keep
    }

    /// Forgets pulled images the content store no longer `holds`, then
    /// removes cached blobs no remaining image names (sparing those
    /// fetched in the last [`crate::content::UNDEPLOYED_GRACE`], which a
    /// pull in flight may be about to name).
    pub fn prune(&self, holds: impl Fn(&Digest) -> bool) {
        let mut keep = std::collections::BTreeSet::new();
        if let Ok(records) = std::fs::read_dir(&self.records) {
            for record in records.flatten() {
                let name = record.file_name().to_string_lossy().to_string();
                let held = digest_of(&format!("sha256:{name}")).is_ok_and(|d| holds(&d));
                if !held {
                    let _ = std::fs::remove_file(record.path());
                    continue;
                }
                let text = std::fs::read_to_string(record.path()).unwrap_or_default();
                keep.extend(text.lines().map(str::to_string));
            }
        }
        let Ok(entries) = std::fs::read_dir(self.cache.join("sha256")) else {
            return;
        };
        let pinned: std::collections::BTreeSet<String> =
            self.pinned.lock().keys().map(|d| d.to_string()).collect();
        for entry in entries.flatten() {
            let digest = format!("sha256:{}", entry.file_name().to_string_lossy());
            if pinned.contains(&digest) {
                continue;
            }
            let young = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_none_or(|age| age < crate::content::UNDEPLOYED_GRACE);
            if !keep.contains(&digest) && !young {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// Notes which cached blobs the image `tar` (a layout tar's digest)
    /// was made of.
    fn record(&self, tar: &Digest, blobs: &[&str]) -> std::io::Result<()> {
        let hex = tar.as_str().trim_start_matches("sha256:");
        crate::content::write_synced(
            &self.records,
            &self.records.join(hex),
            blobs.join("\n").as_bytes(),
        )
        .map_err(std::io::Error::other)
    }
}

/// What a pull brought.
pub enum Pulled {
    /// A WebAssembly component: its bytes, whose digest is its layer's.
    Component {
        /// The component.
        bytes: Vec<u8>,
        /// Its digest.
        digest: Digest,
        /// Where it came from.
        source: Source,
        /// Fetched from the registry (1) or found in the cache (0).
        fetched: usize,
        /// Found in the cache.
        cached: usize,
    },
    /// A container image, as an OCI layout tar in the content store's
    /// incoming file.
    Image {
        /// The tar's digest: the image's code digest.
        digest: Digest,
        /// The tar's size.
        size: u64,
        /// Where it came from.
        source: Source,
        /// Blobs fetched from the registry, and found in the cache.
        fetched: usize,
        /// Blobs found in the cache.
        cached: usize,
    },
}

/// Why a pull failed: one line naming the reference and the cause.
#[derive(Debug, thiserror::Error)]
#[error("{reference}: {why}")]
pub struct PullError {
    /// The reference as given.
    pub reference: String,
    /// What went wrong.
    pub why: String,
    /// What kind of failure.
    pub kind: PullFailure,
}

/// Kinds of failure, for the API's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullFailure {
    /// Not a reference, or an artifact mesh cannot run.
    Invalid,
    /// No such repository, tag or digest.
    NotFound,
    /// Credentials missing or refused.
    Unauthorized,
    /// The registry could not be reached or failed.
    Unavailable,
    /// Over a size limit.
    TooLarge,
    /// Over the environment's code quota.
    Quota,
}

/// Sizes a pull may reach.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest component.
    pub component_bytes: u64,
    /// Largest image (its blobs together).
    pub image_bytes: u64,
    /// Room left in the environment's code quota, and how to say it is
    /// short: checked against the manifest's sizes before any blob is
    /// fetched.
    pub quota: Option<(u64, String)>,
    /// Whether the registry may be at a loopback or private address (the
    /// operator's pulls, and other hosts'); a tenant's may only when the
    /// operator named the registry with `--private-registry`.
    pub private_allowed: bool,
}

/// A blob a pull needs: its digest and size checked, its descriptor
/// without `urls` (fetched from its registry only, never from hosts a
/// manifest names).
struct Wanted {
    descriptor: OciDescriptor,
    digest: Digest,
    size: u64,
}

impl Wanted {
    fn of(descriptor: &OciDescriptor) -> Result<Wanted, String> {
        let digest = digest_of(&descriptor.digest)
            .map_err(|e| format!("its manifest names a blob by a bad digest: {e}"))?;
        let size = u64::try_from(descriptor.size)
            .map_err(|_| format!("its manifest gives blob {} a negative size", digest.short()))?;
        Ok(Wanted {
            descriptor: OciDescriptor {
                urls: None,
                ..descriptor.clone()
            },
            digest,
            size,
        })
    }
}

impl Registries {
    /// Pulls `text` with `credentials` (anonymous without), within
    /// `limits`; an image's layout tar is written to `tar`.
    pub async fn pull(
        &self,
        text: &str,
        env: &str,
        credentials: Option<&Credentials>,
        limits: Limits,
        tar: &Path,
    ) -> Result<Pulled, PullError> {
        let tracked = self.in_flight.track(env, text);
        let progress = &tracked.progress;
        let fail = |kind: PullFailure, why: String| PullError {
            reference: text.to_string(),
            why: one_line(&why),
            kind,
        };
        if !is_reference(text) {
            return Err(fail(
                PullFailure::Invalid,
                "not a registry reference: use HOST[:PORT]/REPO:TAG or HOST/REPO@sha256:DIGEST"
                    .into(),
            ));
        }
        let reference: Reference = text
            .parse()
            .map_err(|e| fail(PullFailure::Invalid, format!("invalid reference: {e}")))?;
        let host = reference.resolve_registry().to_string();
        if !limits.private_allowed && !self.settings.private.contains(&host) {
            self.check_public(&host)
                .await
                .map_err(|why| fail(PullFailure::Invalid, why))?;
        }
        let client = self
            .client()
            .map_err(|why| fail(PullFailure::Invalid, why))?;
        let auth = match credentials {
            Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
            None => RegistryAuth::Anonymous,
        };
        let explain = |e: OciDistributionError| explain(&host, credentials.is_some(), e);
        let registry_failed = |e: OciDistributionError| {
            let (kind, why) = explain(e);
            fail(kind, why)
        };
        // Asked first, so a refused login is said as such.
        retried(
            || client.auth(&reference, &auth, RegistryOperation::Pull),
            MANIFEST_TIME,
        )
        .await
        .map_err(registry_failed)?;
        let (manifest, bytes, digest, media_type) = self
            .resolve(&client, &reference, &auth)
            .await
            .map_err(|e| match e {
                Resolve::Registry(e) => registry_failed(e),
                Resolve::Other(kind, why) => fail(kind, why),
            })?;
        let source = Source {
            reference: text.to_string(),
            digest: digest.clone(),
        };
        let pinned = reference.clone_with_digest(digest.clone());
        let config_type = manifest.config.media_type.as_str();
        let is_wasm = config_type == WASM_CONFIG
            || manifest
                .layers
                .iter()
                .any(|l| l.media_type == WASM_LAYER || l.media_type == LEGACY_WASM_LAYER);
        if !is_wasm && !IMAGE_CONFIGS.contains(&config_type) {
            return Err(fail(
                PullFailure::Invalid,
                format!("is neither a container image nor a WebAssembly component (config media type {config_type})"),
            ));
        }
        if is_wasm && manifest.layers.len() != 1 {
            return Err(fail(
                PullFailure::Invalid,
                format!(
                    "holds {} layers; a component is one {WASM_LAYER} layer (a Spin application or other bundle is not one component)",
                    manifest.layers.len()
                ),
            ));
        }
        if manifest.layers.len() > MAX_LAYERS {
            return Err(fail(
                PullFailure::Invalid,
                format!(
                    "holds {} layers; at most {MAX_LAYERS}",
                    manifest.layers.len()
                ),
            ));
        }
        // Every digest and size the registry gave, checked before any is
        // used (as a path, a lock, a request).
        let mut wanted = Vec::new();
        if !is_wasm {
            wanted.push(&manifest.config);
        }
        wanted.extend(manifest.layers.iter());
        let blobs: Vec<Wanted> = wanted
            .into_iter()
            .map(Wanted::of)
            .collect::<Result<_, _>>()
            .map_err(|why| fail(PullFailure::Invalid, why))?;
        let total = blobs
            .iter()
            .try_fold(0u64, |sum, b| sum.checked_add(b.size))
            .unwrap_or(u64::MAX);
        let (limit, what) = if is_wasm {
            (limits.component_bytes, "the upload limit")
        } else {
            (limits.image_bytes, "the image limit")
        };
        if total > limit {
            return Err(fail(
                PullFailure::TooLarge,
                format!("it is {total} bytes, over {what} of {limit} bytes"),
            ));
        }
        if let Some((room, short)) = &limits.quota {
            if total > *room {
                return Err(fail(
                    PullFailure::Quota,
                    format!("it is {total} bytes: {short}"),
                ));
            }
        }
        if !is_wasm && blobs[0].size > MAX_CONFIG_BYTES {
            return Err(fail(
                PullFailure::Invalid,
                "its image config is too large".into(),
            ));
        }
        progress
            .blobs_total
            .store(blobs.len() as u64, Ordering::Relaxed);
        progress.bytes_total.store(total, Ordering::Relaxed);
        // Held until the pull ends: pruning spares these blobs meanwhile,
        // and a failed pull removes those it fetched and no other holds.
        let mut pins = self.pin(&blobs);
        let (mut fetched, mut cached) = (0, 0);
        for blob in &blobs {
            match self.obtain(&client, &pinned, blob, progress).await {
                Ok(true) => fetched += 1,
                Ok(false) => cached += 1,
                Err(e) => return Err(registry_failed(e)),
            }
        }
        let result = if is_wasm {
            let blob = &blobs[0];
            let bytes = tokio::fs::read(self.cached(&blob.digest))
                .await
                .map_err(|e| {
                    fail(
                        PullFailure::Unavailable,
                        format!("reading the component: {e}"),
                    )
                });
            // Hashed again here: what is handed on is what was verified.
            match bytes {
                Ok(bytes) if Digest::of(&bytes) == blob.digest => Ok(Pulled::Component {
                    bytes,
                    digest: blob.digest.clone(),
                    source,
                    fetched,
                    cached,
                }),
                Ok(_) => Err(fail(
                    PullFailure::Unavailable,
                    format!(
                        "the cached copy of {} does not match it",
                        blob.digest.short()
                    ),
                )),
                Err(e) => Err(e),
            }
        } else {
            self.write_image(tar, &bytes, &digest, &media_type, &blobs)
                .map(|(digest, size)| Pulled::Image {
                    digest,
                    size,
                    source,
                    fetched,
                    cached,
                })
                .map_err(|e| fail(PullFailure::Unavailable, format!("writing the image: {e}")))
        };
        pins.failed = result.is_err();
        result
    }

    /// Writes the image's layout tar and records the blobs it was made
    /// of; its digest and size.
    fn write_image(
        &self,
        tar: &Path,
        manifest: &[u8],
        manifest_digest: &str,
        media_type: &str,
        blobs: &[Wanted],
    ) -> std::io::Result<(Digest, u64)> {
        let paths: Vec<PathBuf> = blobs.iter().map(|b| self.cached(&b.digest)).collect();
        let layout_blobs: Vec<Blob<'_>> = blobs
            .iter()
            .zip(&paths)
            .map(|(b, path)| Blob {
                digest: b.digest.as_str(),
                path,
            })
            .collect();
        let (tar_digest, size) =
            layout::write(tar, manifest, manifest_digest, media_type, &layout_blobs)?;
        let tar_digest = digest_of(&tar_digest).map_err(std::io::Error::other)?;
        let names: Vec<&str> = blobs.iter().map(|b| b.digest.as_str()).collect();
        self.record(&tar_digest, &names)?;
        Ok((tar_digest, size))
    }

    /// One blob here, verified: from the cache when a blob of its digest
    /// and size is there and the registry says this environment's
    /// repository holds it (a cached blob is never handed to a pull that
    /// could not fetch it), else fetched. Whether it was fetched.
    async fn obtain(
        &self,
        client: &Client,
        reference: &Reference,
        blob: &Wanted,
        progress: &Arc<Progress>,
    ) -> Result<bool, OciDistributionError> {
        let path = self.cached(&blob.digest);
        let lock = self.fetch_lock(&blob.digest);
        let _one_fetch = lock.lock().await;
        let here = std::fs::metadata(&path).is_ok_and(|m| m.is_file() && m.len() == blob.size);
        if here {
            let held = retried(
                || client.blob_exists(reference, blob.digest.as_str()),
                MANIFEST_TIME,
            )
            .await?;
            if !held {
                return Err(OciDistributionError::ServerError {
                    code: 404,
                    url: reference.whole(),
                    message: format!("the registry does not hold blob {}", blob.digest.short()),
                });
            }
            // Fresh again, so pruning spares it for a while.
            if let Ok(file) = std::fs::File::options().write(true).open(&path) {
                let _ = file.set_modified(std::time::SystemTime::now());
            }
            progress.blob_done(blob.size);
            return Ok(false);
        }
        self.fetch_blob(client, reference, &blob.descriptor, &path, progress)
            .await?;
        Ok(true)
    }

    /// Checks that `host` resolves to public addresses only: a tenant's
    /// pull never reaches the daemon's own network (loopback, private,
    /// link-local) unless the operator named the registry with `mesh up
    /// --private-registry`.
    async fn check_public(&self, host: &str) -> Result<(), String> {
        let with_port = if host.contains(':') {
            host.to_string()
        } else {
            format!("{host}:443")
        };
        let addresses =
            tokio::time::timeout(Duration::from_secs(10), tokio::net::lookup_host(&with_port))
                .await
                .map_err(|_| format!("resolving {host} took too long"))?
                .map_err(|e| format!("cannot resolve {host}: {e}"))?;
        for address in addresses {
            if let Some(kind) = crate::model::special(address.ip()) {
                return Err(format!(
                    "{host} is at {kind} ({}); only a registry the operator names with `mesh up --private-registry {host}` may be there",
                    address.ip()
                ));
            }
        }
        Ok(())
    }

    /// A client of its own for one pull: this daemon's CAs and plain-HTTP
    /// registries, this host's platform.
    fn client(&self) -> Result<Client, String> {
        let arch = crate::container::image::host_architecture();
        let config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(self.settings.insecure.clone()),
            extra_root_certificates: self
                .cas
                .iter()
                .map(|pem| Certificate {
                    encoding: CertificateEncoding::Pem,
                    data: pem.clone(),
                })
                .collect(),
            platform_resolver: Some(Box::new(move |entries| {
                entries
                    .iter()
                    .find(|e| {
                        e.platform.as_ref().is_some_and(|p| {
                            p.os.to_string() == "linux" && p.architecture.to_string() == arch
                        })
                    })
                    .map(|e| e.digest.clone())
            })),
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(60)),
            user_agent: concat!("mesh/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        };
        Client::try_from(config).map_err(|e| format!("cannot make a registry client: {e}"))
    }

    /// The manifest the reference names, an index resolved to this host's
    /// platform (or to a WebAssembly entry): parsed, as sent, its digest
    /// and media type.
    async fn resolve(
        &self,
        client: &Client,
        reference: &Reference,
        auth: &RegistryAuth,
    ) -> Result<(OciImageManifest, bytes::Bytes, String, String), Resolve> {
        let mut at = reference.clone();
        for _depth in 0..2 {
            let (bytes, digest) = retried(
                || client.pull_manifest_raw(&at, auth, &MANIFESTS),
                MANIFEST_TIME,
            )
            .await
            .map_err(Resolve::Registry)?;
            let manifest: OciManifest = serde_json::from_slice(&bytes).map_err(|e| {
                Resolve::Other(
                    PullFailure::Invalid,
                    format!("its manifest does not parse: {e}"),
                )
            })?;
            match manifest {
                OciManifest::Image(image) => {
                    let media_type = image
                        .media_type
                        .clone()
                        .unwrap_or_else(|| MANIFESTS[0].to_string());
                    return Ok((image, bytes, digest, media_type));
                }
                OciManifest::ImageIndex(index) => {
                    let arch = crate::container::image::host_architecture();
                    let platform = |e: &oci_client::manifest::ImageIndexEntry| {
                        e.platform
                            .as_ref()
                            .map(|p| (p.os.to_string(), p.architecture.to_string()))
                    };
                    let chosen = index
                        .manifests
                        .iter()
                        .find(|e| platform(e).is_some_and(|(os, a)| os == "linux" && a == arch))
                        .or_else(|| {
                            index
                                .manifests
                                .iter()
                                .find(|e| platform(e).is_some_and(|(_, a)| a == "wasm"))
                        });
                    let Some(chosen) = chosen else {
                        let have: Vec<String> = index
                            .manifests
                            .iter()
                            .filter_map(|e| platform(e).map(|(os, a)| format!("{os}/{a}")))
                            .collect();
                        return Err(Resolve::Other(
                            PullFailure::Invalid,
                            format!(
                                "its index has no image for this host's platform linux/{arch} (it has: {})",
                                if have.is_empty() { "none named".to_string() } else { have.join(", ") }
                            ),
                        ));
                    };
                    let digest = digest_of(&chosen.digest).map_err(|e| {
                        Resolve::Other(
                            PullFailure::Invalid,
                            format!("its index names a manifest by a bad digest: {e}"),
                        )
                    })?;
                    at = reference.clone_with_digest(digest.to_string());
                }
            }
        }
        Err(Resolve::Other(
            PullFailure::Invalid,
            "its index names another index; mesh follows one level".into(),
        ))
    }

    /// Fetches one blob into the cache: to a partial file, renamed into
    /// place once its digest checked out.
    async fn fetch_blob(
        &self,
        client: &Client,
        reference: &Reference,
        descriptor: &OciDescriptor,
        path: &Path,
        progress: &Arc<Progress>,
    ) -> Result<(), OciDistributionError> {
        let partial = crate::content::partial_beside(path);
        let result = async {
            let file = tokio::fs::File::create(&partial).await?;
            let mut writer = tokio::io::BufWriter::new(file);
            // No more than the manifest said it weighs.
            let mut counting = Counting {
                inner: &mut writer,
                progress: progress.clone(),
                counted: 0,
                limit: u64::try_from(descriptor.size).unwrap_or(0),
            };
            retried_blob(client, reference, descriptor, &mut counting).await?;
            progress.blob_done(0);
            writer.flush().await?;
            writer.into_inner().sync_all().await?;
            tokio::fs::rename(&partial, path).await?;
            Ok(())
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&partial).await;
        }
        result
    }
}

/// Blobs a pull uses, pinned against pruning while it lives. Dropped
/// with `failed` set (a pull that ended in an error, or whose future was
/// dropped at an await), it removes the blobs no other pull holds and no
/// image names.
struct Pins<'a> {
    registries: &'a Registries,
    digests: Vec<Digest>,
    failed: bool,
}

impl Drop for Pins<'_> {
    fn drop(&mut self) {
        let registries = self.registries;
        // Read before the lock; removals happen under it, so no other pull
        // pins a blob between its release here and its removal.
        let kept = if self.failed {
            registries.kept_blobs()
        } else {
            Default::default()
        };
        let mut pinned = registries.pinned.lock();
        for digest in self.digests.drain(..) {
            let Some(n) = pinned.get_mut(&digest) else {
                continue;
            };
            *n -= 1;
            if *n == 0 {
                pinned.remove(&digest);
                if self.failed && !kept.contains(digest.as_str()) {
                    let _ = std::fs::remove_file(registries.cached(&digest));
                }
            }
        }
    }
}

/// Why resolving failed.
enum Resolve {
    Registry(OciDistributionError),
    Other(PullFailure, String),
}

/// Whether a failure may pass on its own: the registry unreachable, slow
/// or failing (5xx).
fn transient(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::RequestError(_) => true,
        // A blob over its manifest's size is not sent again smaller.
        OciDistributionError::IoError(io) => io.kind() != std::io::ErrorKind::InvalidData,
        OciDistributionError::ServerError { code, .. } => *code >= 500 || *code == 429,
        OciDistributionError::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .any(|e| matches!(e.code, OciErrorCode::Toomanyrequests)),
        _ => false,
    }
}

/// At most one line of at most [`MAX_LINE`] characters: what a registry
/// says goes into an error the tenant reads.
fn one_line(text: &str) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() <= MAX_LINE {
        return flat;
    }
    let cut: String = flat.chars().take(MAX_LINE).collect();
    format!("{cut}...")
}

/// Longest line of an error.
const MAX_LINE: usize = 300;

/// `call`, tried again on a transient failure, each try within `time`.
async fn retried<T, F, Fut>(call: F, time: Duration) -> Result<T, OciDistributionError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, OciDistributionError>>,
{
    let mut backoff = FIRST_BACKOFF;
    let mut tries = 0;
    loop {
        tries += 1;
        let result = match tokio::time::timeout(time, call()).await {
            Ok(result) => result,
            Err(_) => Err(OciDistributionError::GenericError(Some(format!(
                "no answer within {}s",
                time.as_secs()
            )))),
        };
        match result {
            Err(e)
                if tries < TRIES
                    && (transient(&e) || matches!(e, OciDistributionError::GenericError(_))) =>
            {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            other => return other,
        }
    }
}

/// Streams one blob into `out` (verified against its digest by the
/// client), tried again on a transient failure. `out` starts over on each
/// try.
async fn retried_blob<W: Restart>(
    client: &Client,
    reference: &Reference,
    descriptor: &OciDescriptor,
    out: &mut W,
) -> Result<(), OciDistributionError> {
    let mut backoff = FIRST_BACKOFF;
    let mut tries = 0;
    loop {
        tries += 1;
        out.restart().await?;
        let result = match tokio::time::timeout(
            BLOB_TIME,
            client.pull_blob(reference, descriptor, &mut *out),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(OciDistributionError::GenericError(Some(format!(
                "blob {} took longer than {}s",
                descriptor.digest,
                BLOB_TIME.as_secs()
            )))),
        };
        match result {
            Err(e) if tries < TRIES && transient(&e) => {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            other => return other,
        }
    }
}

/// The kind and one line for a registry's failure.
fn explain(host: &str, had_login: bool, e: OciDistributionError) -> (PullFailure, String) {
    let refused = || {
        if had_login {
            (
                PullFailure::Unauthorized,
                format!("{host} refused this environment's login (check it with `mesh registry login {host} ...`)"),
            )
        } else {
            (
                PullFailure::Unauthorized,
                format!("{host} wants a login: `mesh registry login {host} --username U --password-stdin`"),
            )
        }
    };
    match e {
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => refused(),
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Toomanyrequests))
            {
                return (
                    PullFailure::Unavailable,
                    format!("{host} says too many requests ({TRIES} tries); try again later"),
                );
            }
            if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                return refused();
            }
            let words: Vec<String> = envelope.errors.iter().map(|e| e.message.clone()).collect();
            if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                        | OciErrorCode::BlobUnknown
                )
            }) {
                return (
                    PullFailure::NotFound,
                    format!("not found in {host} ({})", words.join("; ")),
                );
            }
            (
                PullFailure::Invalid,
                format!("{host} refused it: {}", words.join("; ")),
            )
        }
        OciDistributionError::ServerError {
            code: 404, message, ..
        } => (
            PullFailure::NotFound,
            format!("not found in {host} ({message})"),
        ),
        OciDistributionError::ServerError { code: 429, .. } => (
            PullFailure::Unavailable,
            format!("{host} says too many requests ({TRIES} tries); try again later"),
        ),
        OciDistributionError::GenericError(Some(why)) => {
            (PullFailure::Unavailable, format!("{host}: {why}"))
        }
        OciDistributionError::IoError(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            (PullFailure::Invalid, format!("{host} sent {e}"))
        }
        OciDistributionError::IoError(e) => (
            PullFailure::Unavailable,
            format!("keeping what {host} sent failed: {e}"),
        ),
        OciDistributionError::ServerError { code, message, .. } if code >= 500 => (
            PullFailure::Unavailable,
            format!("{host} answered {code} {} times: {message}", TRIES),
        ),
        OciDistributionError::ServerError { code, message, .. } => (
            PullFailure::Invalid,
            format!("{host} answered {code}: {message}"),
        ),
        OciDistributionError::RequestError(e) => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text = format!("{text}: {s}");
                source = s.source();
            }
            (
                PullFailure::Unavailable,
                format!("cannot reach {host} ({TRIES} tries): {text}"),
            )
        }
        OciDistributionError::DigestError(e) => (
            PullFailure::Invalid,
            format!("what {host} sent does not match its digest ({e}); nothing was kept"),
        ),
        other => (
            PullFailure::Invalid,
            format!("pulling from {host} failed: {other}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aged(path: &Path) {
        let old = std::time::SystemTime::now() - crate::content::UNDEPLOYED_GRACE * 2;
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }

    #[test]
    fn the_cache_keeps_the_blobs_of_images_still_held() {
        let dir = tempfile::tempdir().unwrap();
        let registries = Registries::open(dir.path(), RegistrySettings::default()).unwrap();
        let hex = |c: char| c.to_string().repeat(64);
        let digest = |c: char| digest_of(&format!("sha256:{}", hex(c))).unwrap();
        for c in ['a', 'b', 'c', 'd'] {
            let path = registries.cached(&digest(c));
            std::fs::write(&path, b"blob").unwrap();
            if c != 'd' {
                aged(&path);
            }
        }
        let held = digest_of(&format!("sha256:{}", hex('1'))).unwrap();
        let gone = digest_of(&format!("sha256:{}", hex('2'))).unwrap();
        let (a, b, c) = (
            format!("sha256:{}", hex('a')),
            format!("sha256:{}", hex('b')),
            format!("sha256:{}", hex('c')),
        );
        registries.record(&held, &[&a, &b]).unwrap();
        registries.record(&gone, &[&b, &c]).unwrap();
        registries.prune(|d| *d == held);
        let left = |c: char| registries.cached(&digest(c)).is_file();
        // a and b belong to an image still held; c only to a forgotten one;
        // d is young (a pull in flight may name it).
        assert!(left('a') && left('b') && !left('c') && left('d'));
        assert!(!registries.records.join(hex('2')).exists());
    }
}
