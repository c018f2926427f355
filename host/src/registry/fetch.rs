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
const BLOB_TIME: Duration = Duration::from_secs(600);
/// Largest image config taken.
const MAX_CONFIG_BYTES: u64 = 4 << 20;

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
        })
    }

    /// An environment's pulls in flight.
    pub fn in_flight(&self, env: &str) -> Vec<PullStatus> {
        self.in_flight.of(env)
    }

    /// Where a cached blob lives.
    fn cached(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.cache.join("sha256").join(hex)
    }

    /// The lock held while one blob is fetched.
    fn fetch_lock(&self, digest: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut fetching = self.fetching.lock();
        fetching.retain(|_, lock| Arc::strong_count(lock) > 1);
        fetching.entry(digest.to_string()).or_default().clone()
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
        for entry in entries.flatten() {
            let digest = format!("sha256:{}", entry.file_name().to_string_lossy());
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
            why,
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
        let client = self
            .client()
            .map_err(|why| fail(PullFailure::Invalid, why))?;
        let auth = match credentials {
            Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
            None => RegistryAuth::Anonymous,
        };
        let explain = |e: OciDistributionError| explain(&host, credentials.is_some(), e);
        // Asked first, so a refused login is said as such.
        retried(
            || client.auth(&reference, &auth, RegistryOperation::Pull),
            MANIFEST_TIME,
        )
        .await
        .map_err(|e| {
            let (kind, why) = explain(e);
            fail(kind, why)
        })?;
        let (manifest, bytes, digest, media_type) = self
            .resolve(&client, &reference, &auth)
            .await
            .map_err(|e| match e {
                Resolve::Registry(e) => {
                    let (kind, why) = explain(e);
                    fail(kind, why)
                }
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
        if is_wasm {
            if manifest.layers.len() != 1 {
                return Err(fail(
                    PullFailure::Invalid,
                    format!(
                        "holds {} layers; a component is one {WASM_LAYER} layer (a Spin application or other bundle is not one component)",
                        manifest.layers.len()
                    ),
                ));
            }
            let layer = clean(&manifest.layers[0]);
            let size = u64::try_from(layer.size).unwrap_or(u64::MAX);
            if let Some((room, short)) = limits.quota.as_ref().filter(|(room, _)| size > *room) {
                let _ = room;
                return Err(fail(
                    PullFailure::Quota,
                    format!("its component is {size} bytes: {short}"),
                ));
            }
            if size > limits.component_bytes {
                return Err(fail(
                    PullFailure::TooLarge,
                    format!(
                        "its component is {} bytes, over the upload limit of {} bytes",
                        layer.size, limits.component_bytes
                    ),
                ));
            }
            progress.blobs_total.store(1, Ordering::Relaxed);
            progress.bytes_total.store(size, Ordering::Relaxed);
            // Through the cache, one fetch at a time: a second pull of the
            // same component meanwhile reads what the first fetched.
            let path = self.cached(&layer.digest);
            let lock = self.fetch_lock(&layer.digest);
            let one_fetch = lock.lock().await;
            if path.is_file() {
                progress.blob_done(size);
            } else {
                self.fetch_blob(&client, &pinned, &layer, &path, progress)
                    .await
                    .map_err(|e| {
                        let (kind, why) = explain(e);
                        fail(kind, why)
                    })?;
            }
            let bytes = tokio::fs::read(&path).await.map_err(|e| {
                fail(
                    PullFailure::Unavailable,
                    format!("reading the component: {e}"),
                )
            })?;
            drop(one_fetch);
            let digest = digest_of(&layer.digest).map_err(|e| fail(PullFailure::Invalid, e))?;
            return Ok(Pulled::Component {
                bytes,
                digest,
                source,
            });
        }
        if !IMAGE_CONFIGS.contains(&config_type) {
            return Err(fail(
                PullFailure::Invalid,
                format!("is neither a container image nor a WebAssembly component (config media type {config_type})"),
            ));
        }
        let total: i64 = manifest.layers.iter().map(|l| l.size.max(0)).sum::<i64>()
            + manifest.config.size.max(0);
        if u64::try_from(total).unwrap_or(u64::MAX) > limits.image_bytes {
            return Err(fail(
                PullFailure::TooLarge,
                format!(
                    "the image is {total} bytes, over the image limit of {} bytes",
                    limits.image_bytes
                ),
            ));
        }
        if let Some((room, short)) = &limits.quota {
            if u64::try_from(total).unwrap_or(u64::MAX) > *room {
                return Err(fail(
                    PullFailure::Quota,
                    format!("the image is {total} bytes: {short}"),
                ));
            }
        }
        if u64::try_from(manifest.config.size).unwrap_or(u64::MAX) > MAX_CONFIG_BYTES {
            return Err(fail(
                PullFailure::Invalid,
                "its image config is too large".into(),
            ));
        }
        let mut descriptors = vec![clean(&manifest.config)];
        descriptors.extend(manifest.layers.iter().map(clean));
        progress
            .blobs_total
            .store(descriptors.len() as u64, Ordering::Relaxed);
        progress
            .bytes_total
            .store(u64::try_from(total).unwrap_or(0), Ordering::Relaxed);
        let (mut fetched, mut cached) = (0, 0);
        for descriptor in &descriptors {
            let path = self.cached(&descriptor.digest);
            let lock = self.fetch_lock(&descriptor.digest);
            let _one_fetch = lock.lock().await;
            if path.is_file() {
                cached += 1;
                progress.blob_done(u64::try_from(descriptor.size).unwrap_or(0));
                continue;
            }
            self.fetch_blob(&client, &pinned, descriptor, &path, progress)
                .await
                .map_err(|e| {
                    let (kind, why) = explain(e);
                    fail(kind, why)
                })?;
            fetched += 1;
        }
        let paths: Vec<_> = descriptors.iter().map(|d| self.cached(&d.digest)).collect();
        let blobs: Vec<Blob<'_>> = descriptors
            .iter()
            .zip(&paths)
            .map(|(d, path)| Blob {
                digest: &d.digest,
                path,
            })
            .collect();
        let (tar_digest, size) = layout::write(tar, &bytes, &digest, &media_type, &blobs)
            .map_err(|e| fail(PullFailure::Unavailable, format!("writing the image: {e}")))?;
        let tar_digest = digest_of(&tar_digest).map_err(|e| fail(PullFailure::Invalid, e))?;
        let names: Vec<&str> = descriptors.iter().map(|d| d.digest.as_str()).collect();
        self.record(&tar_digest, &names).map_err(|e| {
            fail(
                PullFailure::Unavailable,
                format!("recording the image: {e}"),
            )
        })?;
        Ok(Pulled::Image {
            digest: tar_digest,
            size,
            source,
            fetched,
            cached,
        })
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
                    at = reference.clone_with_digest(chosen.digest.clone());
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

/// Why resolving failed.
enum Resolve {
    Registry(OciDistributionError),
    Other(PullFailure, String),
}

/// A descriptor without `urls`: a layer is fetched from its registry only,
/// never from hosts a manifest names.
fn clean(descriptor: &OciDescriptor) -> OciDescriptor {
    OciDescriptor {
        urls: None,
        ..descriptor.clone()
    }
}

/// Whether a failure may pass on its own: the registry unreachable, slow
/// or failing (5xx).
fn transient(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::RequestError(_) | OciDistributionError::IoError(_) => true,
        OciDistributionError::ServerError { code, .. } => *code >= 500,
        _ => false,
    }
}

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
        for c in ['a', 'b', 'c', 'd'] {
            let path = registries.cached(&format!("sha256:{}", hex(c)));
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
        let left = |c: char| registries.cached(&format!("sha256:{}", hex(c))).is_file();
        // a and b belong to an image still held; c only to a forgotten one;
        // d is young (a pull in flight may name it).
        assert!(left('a') && left('b') && !left('c') && left('d'));
        assert!(!registries.records.join(hex('2')).exists());
    }
}
