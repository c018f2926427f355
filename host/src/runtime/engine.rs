//! The daemon's one wasmtime [`Engine`](wasmtime::Engine): its
//! configuration (pooling allocator, epoch interruption), the linker every
//! instance uses, the epoch ticker, and the code cache.
//!
//! Code (components and wasip1 modules) is compiled once per content
//! digest, however many callers ask for it at once, and kept in the
//! compiled-code cache (`cache.rs`) so a daemon restart recompiles
//! nothing. Loaded code is kept in memory with its pre-instantiated form,
//! and a stack's files unpacked, until [`Engine::retain`] says no kept
//! version names them.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash as _, Hasher as _};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use parking_lot::Mutex;
use thiserror::Error;
use wasmtime::component::{InstancePre, Linker};
use wasmtime::{Config, InstanceAllocationStrategy, PoolingAllocationConfig};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use super::cache::{CodeCache, Compiled, Kind};
use super::cpu::{Shares, EPOCH_TICK};
use super::seats::Seats;
use super::state::HostState;
use crate::config::DaemonConfig;
use crate::model::Digest;
use crate::store::blobs::Blobs;

/// Core instances, memories and tables a component may need per live
/// component instance, for sizing the pool.
const CORE_INSTANCES_PER_COMPONENT: u32 = 16;
const MEMORIES_PER_COMPONENT: u32 = 2;
const TABLES_PER_COMPONENT: u32 = 4;
/// Extra pool room beyond `max_instances`: the operator's one-off runs
/// (half of it) and room to spare.
const POOL_HEADROOM: u32 = 64;
/// Memory a freed pool slot keeps resident, reset in place for the next
/// instance instead of given back to the kernel and faulted in again (most
/// of what a fresh store per request cost).
const KEEP_RESIDENT: usize = 1 << 20;
/// The same for a slot's tables.
const TABLE_KEEP_RESIDENT: usize = 64 << 10;

const RUN_EXPORT: &str = "wasi:cli/run@0.2";
/// The one import module a core module may use.
const WASIP1_MODULE: &str = "wasi_snapshot_preview1";
/// A wasip1 command's entry point.
const START_EXPORT: &str = "_start";
const HTTP_EXPORT: &str = "wasi:http/incoming-handler@0.2";

/// Why code could not be accepted or loaded. Each names the problem and
/// what would fix it.
#[derive(Debug, Error)]
pub enum CodeError {
    /// The bytes are not WebAssembly at all.
    #[error("{name} is not a WebAssembly file (it does not start with the `\\0asm` magic bytes)")]
    NotWasm {
        /// What the user called the file.
        name: String,
    },
    /// A core module that imports something other than WASI preview 1.
    #[error("{name} is a core WebAssembly module that imports `{import}`, but a core module may import only `wasi_snapshot_preview1` (build it for `wasm32-wasip1`, or as a component for `wasm32-wasip2`)")]
    ModuleImports {
        /// What the user called the file.
        name: String,
        /// The first import that is not WASI preview 1.
        import: String,
    },
    /// A core module without the `_start` entry point.
    #[error("{name} is a core WebAssembly module without a `_start` function (it exports [{exports}]): mesh runs wasip1 modules as commands, so build it as a program, not a library")]
    NoStart {
        /// What the user called the file.
        name: String,
        /// What it does export.
        exports: String,
    },
    /// wasmtime refused to compile it.
    #[error("{name} is not a valid component: {reason}")]
    Invalid {
        /// What the user called the file.
        name: String,
        /// wasmtime's reason.
        reason: String,
    },
    /// It imports something mesh does not provide.
    #[error("{name} imports something mesh does not provide: {reason}")]
    Imports {
        /// What the user called the file.
        name: String,
        /// wasmtime's reason, naming the import.
        reason: String,
    },
    /// It exports neither entry point a service can use.
    #[error("{name} exports [{exports}], but a service needs `wasi:cli/run` (a worker or cron job) or `wasi:http/incoming-handler` (a web service)")]
    NoEntryPoint {
        /// What the user called the file.
        name: String,
        /// What it does export.
        exports: String,
    },
}

/// A component ready to instantiate.
pub struct Loaded {
    /// Content digest of the component.
    pub digest: Digest,
    /// Pre-instantiated `wasi:cli/run` entry point, if it exports one.
    pub command: Option<CommandPre<HostState>>,
    /// Pre-instantiated `wasi:http/incoming-handler`, if it exports one.
    pub proxy: Option<ProxyPre<HostState>>,
    /// A wasip1 core module, pre-instantiated: run as a command, and
    /// WAGI-style for HTTP requests.
    pub module: Option<wasmtime::InstancePre<HostState>>,
    /// The component's exports, by name.
    pub exports: Vec<String>,
}

impl Loaded {
    /// Whether it serves HTTP: a component exporting
    /// `wasi:http/incoming-handler`, or a wasip1 module (through CGI).
    pub fn serves_http(&self) -> bool {
        self.proxy.is_some() || self.module.is_some()
    }

    /// Whether it runs as a command: `wasi:cli/run`, or a module's
    /// `_start`.
    pub fn runs_command(&self) -> bool {
        self.command.is_some() || self.module.is_some()
    }
}

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

/// The engine, linker, epoch ticker and code cache.
pub struct Engine {
    engine: wasmtime::Engine,
    linker: Linker<HostState>,
    /// WASI preview 1, for core modules.
    module_linker: wasmtime::Linker<HostState>,
    blobs: Blobs,
    cache: CodeCache,
    /// Stacks' files, unpacked: one directory per digest.
    files_dir: PathBuf,
    /// Where instances' scratch directories are mounted.
    scratch_dir: PathBuf,
    /// Container images, unpacked: one directory per digest (made and
    /// read by the container layer; collected here with the code).
    images_dir: PathBuf,
    loaded: Mutex<HashMap<Digest, Arc<Loaded>>>,
    /// One lock per digest being compiled or loaded, so concurrent loads
    /// of the same code share one compile, and how many hold or wait for it.
    loading: Mutex<HashMap<Digest, LoadLock>>,
    /// Uploads no version names yet, and when they came: spared by
    /// [`Engine::retain`] for [`UNDEPLOYED_GRACE`].
    fresh: Mutex<HashMap<Digest, std::time::Instant>>,
    /// Compiles done, for tests and logs.
    compiles: std::sync::atomic::AtomicU64,
    ticker_stop: Arc<AtomicBool>,
    /// The epoch ticker thread, joined on drop.
    ticker: Option<std::thread::JoinHandle<()>>,
    /// The ticks, and the cores hot guests share.
    shares: Arc<Shares>,
    /// Live instances, bounded by kind.
    seats: Arc<Seats>,
    /// Bumped whenever code is stored or removed (a cluster host reports
    /// what it holds when it changes).
    stored: tokio::sync::watch::Sender<u64>,
}

/// One digest's load lock and how many hold or wait for it.
type LoadLock = (Arc<Mutex<()>>, usize);

/// The file beside an unpacked image that holds the bytes it takes.
const UNPACKED_FILE: &str = "unpacked-bytes";

/// How long an upload that no version names yet is kept: the time a
/// client has between uploading code and deploying it.
pub const UNDEPLOYED_GRACE: Duration = Duration::from_secs(600);

/// What [`Engine::retain`] removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Collected {
    /// Code blobs deleted.
    pub blobs: usize,
    /// Compiled files deleted.
    pub compiled: usize,
    /// Loaded components dropped from memory.
    pub loaded: usize,
}

impl Engine {
    /// Builds the engine for `config`, starts its epoch ticker, and opens
    /// the code cache.
    pub fn new(config: &DaemonConfig, blobs: Blobs) -> anyhow::Result<Engine> {
        let engine = wasmtime::Engine::new(&wasmtime_config(config))
            .map_err(anyhow::Error::from)
            .context("configuring the wasmtime engine")?;
        let linker = new_linker(&engine)?;
        let module_linker = new_module_linker(&engine)?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let settings = format!("{:016x}", hasher.finish());
        let cache = CodeCache::open(&config.data_dir, &settings, config.shared_cache.as_deref())?;
        let files_dir = config.data_dir.join("files");
        std::fs::create_dir_all(&files_dir)
            .with_context(|| format!("creating {}", files_dir.display()))?;
        crate::store::clean_partial(&files_dir);
        let scratch_dir = config.data_dir.join("scratch");
        std::fs::create_dir_all(&scratch_dir)
            .with_context(|| format!("creating {}", scratch_dir.display()))?;
        super::scratch::Scratch::clean(&scratch_dir);
        let images_dir = config.data_dir.join("images");
        std::fs::create_dir_all(&images_dir)
            .with_context(|| format!("creating {}", images_dir.display()))?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        let shares = Shares::for_this_machine();
        let ticker = spawn_epoch_ticker(engine.clone(), shares.clone(), ticker_stop.clone())?;
        Ok(Engine {
            engine,
            linker,
            module_linker,
            blobs,
            cache,
            files_dir,
            scratch_dir,
            images_dir,
            loaded: Mutex::new(HashMap::new()),
            loading: Mutex::new(HashMap::new()),
            fresh: Mutex::new(HashMap::new()),
            compiles: std::sync::atomic::AtomicU64::new(0),
            ticker_stop,
            ticker: Some(ticker),
            shares,
            seats: Seats::new(config.max_instances, POOL_HEADROOM / 2),
            stored: tokio::sync::watch::Sender::new(0),
        })
    }

    /// Live instances, by kind of seat.
    pub fn seats(&self) -> &Arc<Seats> {
        &self.seats
    }

    /// The cores hot guests share, by environment.
    pub fn shares(&self) -> &Arc<Shares> {
        &self.shares
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

    /// The wasmtime engine.
    pub fn wasmtime(&self) -> &wasmtime::Engine {
        &self.engine
    }

    /// Checks uploaded bytes are a component mesh can run, stores them and
    /// compiles them into the cache. `name` is what the user called it.
    pub fn accept(&self, name: &str, bytes: &[u8]) -> Result<CodeInfo, anyhow::Error> {
        self.accept_as(name, Digest::of(bytes), bytes)
    }

    /// [`Engine::accept`] for bytes the caller hashed already.
    pub fn accept_as(
        &self,
        name: &str,
        digest: Digest,
        bytes: &[u8],
    ) -> Result<CodeInfo, anyhow::Error> {
        let kind = check_header(name, bytes)?;
        let _one_at_a_time = self.loading_lock(&digest);
        let known = self.lock_loaded().get(&digest).cloned();
        if let Some(known) = known.filter(|_| self.blobs.contains(&digest)) {
            // Already checked, stored and compiled.
            self.mark_fresh(&digest);
            return Ok(CodeInfo {
                digest,
                size: bytes.len() as u64,
                exports: known.exports.clone(),
            });
        }
        // Compiled before (by this daemon before a restart, or by one
        // sharing the cache): its checks below run again, the compile not.
        let cached = self.cache.read(&self.engine, &digest);
        let from_cache = cached.is_some();
        let compiled = match cached {
            Some(compiled) => compiled,
            None => {
                let started = std::time::Instant::now();
                self.compiles.fetch_add(1, Ordering::Relaxed);
                let compiled =
                    Compiled::new(&self.engine, kind, bytes).map_err(|e| CodeError::Invalid {
                        name: name.to_string(),
                        reason: root_cause(&e),
                    })?;
                tracing::info!(component = name, digest = digest.short(), took = ?started.elapsed(), "compiled code");
                compiled
            }
        };
        let loaded = self.prepare(name, digest.clone(), &compiled)?;
        if !loaded.runs_command() && !loaded.serves_http() {
            return Err(CodeError::NoEntryPoint {
                name: name.to_string(),
                exports: loaded.exports.join(", "),
            }
            .into());
        }
        self.blobs.put(&digest, bytes)?;
        self.mark_fresh(&digest);
        if !from_cache {
            self.cache.write(&digest, &compiled)?;
        }
        let info = CodeInfo {
            digest: digest.clone(),
            size: bytes.len() as u64,
            exports: loaded.exports.clone(),
        };
        self.remember(Arc::new(loaded));
        Ok(info)
    }

    /// Checks a stack's files archive, stores it and unpacks it. `name`
    /// is what the user called it.
    pub fn accept_files(
        &self,
        name: &str,
        digest: Digest,
        bytes: &[u8],
    ) -> Result<CodeInfo, anyhow::Error> {
        let _one_at_a_time = self.loading_lock(&digest);
        let tree = self.files_path(&digest);
        if !tree.is_dir() {
            super::files::unpack(name, bytes, &tree)?;
        }
        self.blobs.put(&digest, bytes)?;
        self.mark_fresh(&digest);
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
        upload: &std::path::Path,
        unpack: impl FnOnce(&std::path::Path) -> anyhow::Result<u64>,
    ) -> Result<CodeInfo, anyhow::Error> {
        let _one_at_a_time = self.loading_lock(&digest);
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
    pub fn images_dir(&self) -> &std::path::Path {
        &self.images_dir
    }

    /// Where the image of `digest` is unpacked (whether or not it is).
    pub fn image_path(&self, digest: &Digest) -> PathBuf {
        self.images_dir.join(digest.hex())
    }

    /// Where instances' scratch directories are mounted.
    pub fn scratch_dir(&self) -> &std::path::Path {
        &self.scratch_dir
    }

    /// Where the files of `digest` are unpacked (whether or not they are).
    pub fn files_path(&self, digest: &Digest) -> PathBuf {
        self.files_dir.join(digest.hex())
    }

    /// Code already loaded into memory, without touching the disk: the
    /// fast path for starting instances, cheap enough for async code.
    pub fn loaded(&self, digest: &Digest) -> Option<Arc<Loaded>> {
        self.lock_loaded().get(digest).cloned()
    }

    /// Loads stored code by digest: from memory, else from the compiled
    /// cache, else by compiling the blob (and caching the result).
    pub fn load(&self, digest: &Digest) -> anyhow::Result<Arc<Loaded>> {
        if let Some(loaded) = self.lock_loaded().get(digest) {
            return Ok(loaded.clone());
        }
        // Whoever gets here second waits for the first, then finds its work.
        let _one_at_a_time = self.loading_lock(digest);
        if let Some(loaded) = self.lock_loaded().get(digest) {
            return Ok(loaded.clone());
        }
        let compiled = match self.cache.read(&self.engine, digest) {
            Some(compiled) => {
                tracing::info!(
                    digest = digest.short(),
                    "loaded code from the compiled cache"
                );
                compiled
            }
            None => {
                let bytes = self.blobs.get(digest)?;
                tracing::info!(
                    digest = digest.short(),
                    "compiling component (not in the compiled cache)"
                );
                self.compiles.fetch_add(1, Ordering::Relaxed);
                let kind = check_header(digest.short(), &bytes)?;
                let compiled = Compiled::new(&self.engine, kind, &bytes)
                    .map_err(anyhow::Error::from)
                    .with_context(|| format!("compiling code {}", digest.short()))?;
                self.cache.write(digest, &compiled)?;
                compiled
            }
        };
        let loaded = Arc::new(self.prepare(digest.short(), digest.clone(), &compiled)?);
        self.remember(loaded.clone());
        Ok(loaded)
    }

    fn prepare(
        &self,
        name: &str,
        digest: Digest,
        compiled: &Compiled,
    ) -> Result<Loaded, CodeError> {
        let component = match compiled {
            Compiled::Component(component) => component,
            Compiled::Module(module) => return self.prepare_module(name, digest, module),
        };
        let pre: InstancePre<HostState> =
            self.linker
                .instantiate_pre(component)
                .map_err(|e| CodeError::Imports {
                    name: name.to_string(),
                    reason: root_cause(&e),
                })?;
        let exports: Vec<String> = component
            .component_type()
            .exports(&self.engine)
            .map(|(name, _)| name.to_string())
            .collect();
        let command = if exports.iter().any(|e| e.starts_with(RUN_EXPORT)) {
            CommandPre::new(pre.clone()).ok()
        } else {
            None
        };
        let proxy = if exports.iter().any(|e| e.starts_with(HTTP_EXPORT)) {
            ProxyPre::new(pre).ok()
        } else {
            None
        };
        Ok(Loaded {
            digest,
            command,
            proxy,
            module: None,
            exports,
        })
    }

    /// A wasip1 module: it may import only WASI preview 1, and must have
    /// `_start`.
    fn prepare_module(
        &self,
        name: &str,
        digest: Digest,
        module: &wasmtime::Module,
    ) -> Result<Loaded, CodeError> {
        if let Some(import) = module.imports().find(|i| i.module() != WASIP1_MODULE) {
            return Err(CodeError::ModuleImports {
                name: name.to_string(),
                import: format!("{}::{}", import.module(), import.name()),
            });
        }
        let exports: Vec<String> = module.exports().map(|e| e.name().to_string()).collect();
        let has_start = module
            .get_export(START_EXPORT)
            .is_some_and(|e| e.func().is_some());
        if !has_start {
            return Err(CodeError::NoStart {
                name: name.to_string(),
                exports: exports.join(", "),
            });
        }
        let pre = self
            .module_linker
            .instantiate_pre(module)
            .map_err(|e| CodeError::Imports {
                name: name.to_string(),
                reason: root_cause(&e),
            })?;
        Ok(Loaded {
            digest,
            command: None,
            proxy: None,
            module: Some(pre),
            exports: vec![format!("{START_EXPORT} (wasip1 module)")],
        })
    }

    fn lock_loaded(&self) -> parking_lot::MutexGuard<'_, HashMap<Digest, Arc<Loaded>>> {
        self.loaded.lock()
    }

    /// Holds the digest's load lock; the lock's entry goes when the last
    /// holder is done.
    fn loading_lock(&self, digest: &Digest) -> LoadingGuard<'_> {
        let lock = {
            let mut loading = self.loading.lock();
            let (lock, users) = loading.entry(digest.clone()).or_default();
            *users += 1;
            lock.clone()
        };
        let guard = lock.lock_arc();
        LoadingGuard {
            engine: self,
            digest: digest.clone(),
            _guard: guard,
        }
    }

    /// Drops code that no kept version names: from memory, from the
    /// compiled cache and from the blob store. `keep` is every digest a
    /// kept stack version (or anything else still in use) names.
    pub fn retain(&self, keep: &HashSet<Digest>) -> anyhow::Result<Collected> {
        // An upload a version now names is kept by that version alone.
        self.fresh
            .lock()
            .retain(|digest, at| !keep.contains(digest) && at.elapsed() < UNDEPLOYED_GRACE);
        let mut candidates: HashSet<Digest> = self.lock_loaded().keys().cloned().collect();
        candidates.extend(self.blobs.list()?);
        candidates.extend(self.cache.digests()?);
        candidates.extend(self.unpacked_digests()?);
        candidates.retain(|digest| !keep.contains(digest));
        let mut collected = Collected::default();
        for digest in candidates {
            // Under the digest's lock: a load in progress finishes first, and
            // an upload (or a deploy naming it) that came since is seen.
            let _one_at_a_time = self.loading_lock(&digest);
            if self.fresh.lock().contains_key(&digest) {
                continue;
            }
            collected.loaded += usize::from(self.lock_loaded().remove(&digest).is_some());
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
            collected.compiled += usize::from(self.cache.remove(&digest)?);
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
            let _one_at_a_time = self.loading_lock(digest);
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

    /// Holds stored code for a version about to name it: true when it is
    /// stored, and then it is spared by [`Engine::retain`] as a fresh
    /// upload until a committed version names it.
    pub fn hold(&self, digest: &Digest) -> bool {
        let _one_at_a_time = self.loading_lock(digest);
        if !self.blobs.contains(digest) {
            return false;
        }
        self.mark_fresh(digest);
        true
    }

    /// Spares stored code from collection for [`UNDEPLOYED_GRACE`]. Older
    /// entries go as new ones come, so the list holds only the last grace
    /// period's uploads.
    fn mark_fresh(&self, digest: &Digest) {
        let mut fresh = self.fresh.lock();
        fresh.retain(|_, at| at.elapsed() < UNDEPLOYED_GRACE);
        fresh.insert(digest.clone(), std::time::Instant::now());
        drop(fresh);
        self.stored.send_modify(|n| *n += 1);
    }

    fn remember(&self, loaded: Arc<Loaded>) {
        self.lock_loaded().insert(loaded.digest.clone(), loaded);
    }

    /// How many compiles this engine has done.
    pub fn compiles(&self) -> u64 {
        self.compiles.load(Ordering::Relaxed)
    }
}

/// Holds one digest's load lock.
struct LoadingGuard<'a> {
    engine: &'a Engine,
    digest: Digest,
    _guard: parking_lot::ArcMutexGuard<parking_lot::RawMutex, ()>,
}

impl Drop for LoadingGuard<'_> {
    fn drop(&mut self) {
        let mut loading = self.engine.loading.lock();
        if let Some((_, users)) = loading.get_mut(&self.digest) {
            *users -= 1;
            if *users == 0 {
                // No one else holds or waits for it.
                loading.remove(&self.digest);
            }
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
        if let Some(ticker) = self.ticker.take() {
            let _ = ticker.join();
        }
    }
}

/// Address space the linear memories of all live instances may take
/// together: the pool reserves it in one piece up front, and in a 47-bit
/// user address space about 40 TiB are free in one piece (measured: a
/// 48 TiB reservation fails), beside the pool's tables and stacks.
const MEMORY_ADDRESS_SPACE: u64 = 32 << 40;
/// wasmtime's guard after each memory when a memory's slot is 4 GiB or
/// more (bounds checks are then elided).
const LARGE_GUARD: u64 = 32 << 20;
/// wasmtime's default reservation for a 32-bit memory.
const DEFAULT_RESERVATION: u64 = 4 << 30;
/// The guard after each memory when slots are smaller (bounds checks are
/// compiled in then, and the guard need not be large).
const SMALL_GUARD: u64 = 64 << 10;
/// Memory mappings one live instance costs (its memories, tables and
/// stack with their guards), as measured with 10,000.
pub const MAPPINGS_PER_INSTANCE: u64 = 6;

/// How large each live instance's memories may be, so that the memories of
/// `config.max_instances` of them fit the address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemorySlots {
    /// Largest memory of one instance (all its memories together are
    /// also capped by its service's limit).
    pub max_memory_bytes: u64,
    /// Guard after each memory.
    pub guard_bytes: u64,
}

impl MemorySlots {
    /// Sizes the pool's memory slots for `config`.
    pub fn for_config(config: &DaemonConfig) -> MemorySlots {
        let memories =
            u64::from(config.max_instances + POOL_HEADROOM) * u64::from(MEMORIES_PER_COMPONENT);
        let wanted = config.max_memory_bytes;
        // wasmtime's default slot: at least 4 GiB, then the guard.
        if memories * (wanted.max(DEFAULT_RESERVATION) + LARGE_GUARD) <= MEMORY_ADDRESS_SPACE {
            return MemorySlots {
                max_memory_bytes: wanted,
                guard_bytes: LARGE_GUARD,
            };
        }
        let room = (MEMORY_ADDRESS_SPACE / memories).saturating_sub(SMALL_GUARD);
        // A power of two (at least one wasm page), so the limit reads well.
        let fits = if room < 1 << 16 {
            1 << 16
        } else {
            1u64 << (63 - room.leading_zeros())
        };
        MemorySlots {
            max_memory_bytes: fits.min(wanted),
            guard_bytes: SMALL_GUARD,
        }
    }
}

/// The wasmtime configuration the engine is built with for `config`
/// (public so that benchmarks compare against a bare host set up the
/// same way).
pub fn wasmtime_config(config: &DaemonConfig) -> Config {
    let slots = MemorySlots::for_config(config);
    engine_config(&slots, pooling_config(config, &slots))
}

/// The pool for `config`: room for every live instance, memories in
/// `slots`.
fn pooling_config(config: &DaemonConfig, slots: &MemorySlots) -> PoolingAllocationConfig {
    let live = config.max_instances + POOL_HEADROOM;
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(live)
        .total_core_instances(live * CORE_INSTANCES_PER_COMPONENT)
        .total_memories(live * MEMORIES_PER_COMPONENT)
        .total_tables(live * TABLES_PER_COMPONENT)
        .total_stacks(live)
        .max_memory_size(slots.max_memory_bytes as usize)
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(TABLE_KEEP_RESIDENT)
        .pagemap_scan(wasmtime::Enabled::Auto);
    pool
}

fn engine_config(slots: &MemorySlots, pool: PoolingAllocationConfig) -> Config {
    let mut wasm = Config::new();
    if slots.guard_bytes == SMALL_GUARD {
        wasm.memory_reservation(slots.max_memory_bytes)
            .memory_guard_size(SMALL_GUARD)
            .memory_reservation_for_growth(0);
    }
    wasm.epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    wasm
}

fn new_linker(engine: &wasmtime::Engine) -> anyhow::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)
        .map_err(anyhow::Error::from)
        .context("adding WASI to the linker")?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
        .map_err(anyhow::Error::from)
        .context("adding WASI HTTP to the linker")?;
    Ok(linker)
}

fn new_module_linker(engine: &wasmtime::Engine) -> anyhow::Result<wasmtime::Linker<HostState>> {
    let mut linker = wasmtime::Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_async(&mut linker, HostState::p1)
        .map_err(anyhow::Error::from)
        .context("adding WASI preview 1 to the linker")?;
    Ok(linker)
}

fn spawn_epoch_ticker(
    engine: wasmtime::Engine,
    shares: Arc<Shares>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("mesh-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                shares.tick();
                engine.increment_epoch();
            }
        })
        .context("starting the epoch ticker thread")
}

fn check_header(name: &str, bytes: &[u8]) -> Result<Kind, CodeError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(CodeError::NotWasm {
            name: name.to_string(),
        });
    }
    // Core modules are version 1, layer 0; components use layer 1.
    Ok(if bytes[4..8] == [1, 0, 0, 0] {
        Kind::Module
    } else {
        Kind::Component
    })
}

/// The innermost cause of an error, which is where wasmtime says what is
/// actually wrong.
fn root_cause(e: &wasmtime::Error) -> String {
    e.root_cause().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_slots_shrink_only_when_the_instances_do_not_fit() {
        let config = |max_instances| DaemonConfig {
            max_instances,
            ..DaemonConfig::default()
        };
        let few = MemorySlots::for_config(&config(1000));
        assert_eq!(few.max_memory_bytes, 4 << 30);
        assert_eq!(few.guard_bytes, LARGE_GUARD);
        let many = MemorySlots::for_config(&config(100_000));
        assert_eq!(many.max_memory_bytes, 128 << 20);
        assert_eq!(many.guard_bytes, SMALL_GUARD);
        let memories = u64::from(100_000 + POOL_HEADROOM) * u64::from(MEMORIES_PER_COMPONENT);
        assert!(memories * (many.max_memory_bytes + many.guard_bytes) <= MEMORY_ADDRESS_SPACE);
        // The daemon lowers its limit to what fits; sized again, that
        // still fits.
        let lowered = DaemonConfig {
            max_memory_bytes: many.max_memory_bytes,
            ..config(100_000)
        };
        assert_eq!(MemorySlots::for_config(&lowered), many);
        // An engine whose memories are sized for them builds: the address
        // space holds them. (Its stacks are fewer: each stack's guard page
        // is a mapping of its own, and 100,000 of them need a
        // vm.max_map_count above the kernel's default, which `mesh up`
        // asks the operator to raise.)
        let mut pool = pooling_config(&lowered, &many);
        pool.total_stacks(64);
        let engine = wasmtime::Engine::new(&engine_config(&many, pool));
        assert!(engine.is_ok(), "{:?}", engine.err());
    }

    #[test]
    fn headers_are_told_apart() {
        assert!(matches!(
            check_header("x", b"hello world"),
            Err(CodeError::NotWasm { .. })
        ));
        assert_eq!(check_header("x", b"\0asm\x01\0\0\0").unwrap(), Kind::Module);
        assert_eq!(
            check_header("x", b"\0asm\x0d\0\x01\0").unwrap(),
            Kind::Component
        );
    }

    fn app_wasm() -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../guest-examples/target/wasm32-wasip2/release/app.wasm");
        std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (scripts/setup.sh builds the guest examples)",
                path.display()
            )
        })
    }

    fn small(dir: &std::path::Path) -> DaemonConfig {
        DaemonConfig {
            data_dir: dir.to_path_buf(),
            max_instances: 4,
            max_memory_bytes: 64 << 20,
            ..DaemonConfig::default()
        }
    }

    #[test]
    fn code_compiles_once_is_checked_on_load_and_is_collected() {
        let dir = tempfile::tempdir().unwrap();
        let config = small(dir.path());
        let blobs = Blobs::open(dir.path()).unwrap();
        let digest = Engine::new(&config, blobs.clone())
            .unwrap()
            .accept("app.wasm", &app_wasm())
            .unwrap()
            .digest;

        // A fresh engine with no compiled file: eight loads at once share
        // one compile.
        let engine = Arc::new(Engine::new(&config, blobs.clone()).unwrap());
        std::fs::remove_file(engine.cache.path(&digest)).unwrap();
        let loads: Vec<_> = (0..8)
            .map(|_| {
                let (engine, digest) = (engine.clone(), digest.clone());
                std::thread::spawn(move || engine.load(&digest).unwrap())
            })
            .collect();
        let loaded: Vec<Arc<Loaded>> = loads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(engine.compiles(), 1);
        assert!(loaded.iter().all(|l| Arc::ptr_eq(l, &loaded[0])));
        assert!(engine.cache.path(&digest).is_file());
        let left: Vec<usize> = engine
            .loading
            .lock()
            .values()
            .map(|(_, users)| *users)
            .collect();
        assert!(left.is_empty(), "load locks outlived their loads: {left:?}");

        // A compiled file that does not match its checksum is compiled
        // again, never run.
        let path = engine.cache.path(&digest);
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        let again = Engine::new(&config, blobs.clone()).unwrap();
        again.load(&digest).unwrap();
        assert_eq!(again.compiles(), 1);
        assert!(Engine::new(&config, blobs.clone())
            .unwrap()
            .cache
            .read(&engine.engine, &digest)
            .is_some());

        // Nothing keeps it: it goes from memory, cache and blobs. (It was
        // uploaded and never deployed, so it is kept for the grace period
        // first; this engine never saw the upload.)
        let collected = engine.retain(&HashSet::new()).unwrap();
        assert_eq!(
            collected,
            Collected {
                blobs: 1,
                compiled: 1,
                loaded: 1
            }
        );
        assert!(engine.loaded(&digest).is_none());
        assert!(!blobs.contains(&digest));
        assert!(!engine.cache.path(&digest).exists());
    }
}
