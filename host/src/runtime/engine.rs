//! The daemon's one wasmtime [`Engine`](wasmtime::Engine): the linker
//! every instance uses, the epoch ticker, and the code cache. How it is
//! configured (the pooling allocator, sized for the daemon's instances)
//! is `setup.rs`; the code it compiles is kept by the content store
//! ([`Content`]).
//!
//! Code (components and wasip1 modules) is compiled once per content
//! digest, however many callers ask for it at once, and kept in the
//! compiled-code cache (`cache.rs`) so a daemon restart recompiles
//! nothing. Loaded code is kept in memory with its pre-instantiated form
//! until [`Engine::retain`] says no kept version names it.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash as _, Hasher as _};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use parking_lot::Mutex;
use thiserror::Error;
use wasmtime::component::{InstancePre, Linker};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use super::cache::{CodeCache, Compiled, Kind};
use super::cpu::{Shares, EPOCH_TICK};
use super::seats::Seats;
use super::setup::{wasmtime_config, EngineConfig, POOL_HEADROOM};
use super::state::HostState;
use crate::content::{CodeInfo, Collected, Content, Derived};
use crate::model::Digest;

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

/// The engine, linker, epoch ticker and code cache.
pub struct Engine {
    engine: wasmtime::Engine,
    linker: Linker<HostState>,
    /// WASI preview 1, for core modules.
    module_linker: wasmtime::Linker<HostState>,
    /// Where the code is kept, and each digest's lock: concurrent loads
    /// of the same code share one compile.
    content: Arc<Content>,
    cache: CodeCache,
    /// Where instances' scratch directories are mounted.
    scratch_dir: PathBuf,
    loaded: Mutex<HashMap<Digest, Arc<Loaded>>>,
    /// Compiles done, for tests and logs.
    compiles: std::sync::atomic::AtomicU64,
    ticker_stop: Arc<AtomicBool>,
    /// The epoch ticker thread, joined on drop.
    ticker: Option<std::thread::JoinHandle<()>>,
    /// The ticks, and the cores hot guests share.
    shares: Arc<Shares>,
    /// Live instances, bounded by kind.
    seats: Arc<Seats>,
}

impl Engine {
    /// Builds the engine for `config` over the code in `content`, starts
    /// its epoch ticker, and opens the code cache.
    pub fn new(config: &EngineConfig, content: Arc<Content>) -> anyhow::Result<Engine> {
        let engine = wasmtime::Engine::new(&wasmtime_config(config))
            .map_err(anyhow::Error::from)
            .context("configuring the wasmtime engine")?;
        let linker = new_linker(&engine)?;
        let module_linker = new_module_linker(&engine)?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let settings = format!("{:016x}", hasher.finish());
        let cache = CodeCache::open(&config.data_dir, &settings, config.shared_cache.as_deref())?;
        let scratch_dir = config.data_dir.join("scratch");
        std::fs::create_dir_all(&scratch_dir)
            .with_context(|| format!("creating {}", scratch_dir.display()))?;
        super::scratch::Scratch::clean(&scratch_dir);
        let ticker_stop = Arc::new(AtomicBool::new(false));
        let shares = Shares::for_this_machine();
        let ticker = spawn_epoch_ticker(engine.clone(), shares.clone(), ticker_stop.clone())?;
        Ok(Engine {
            engine,
            linker,
            module_linker,
            content,
            cache,
            scratch_dir,
            loaded: Mutex::new(HashMap::new()),
            compiles: std::sync::atomic::AtomicU64::new(0),
            ticker_stop,
            ticker: Some(ticker),
            shares,
            seats: Seats::new(config.max_instances, POOL_HEADROOM / 2),
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

    /// Where the code this engine compiles is kept, with stacks' files
    /// and container images.
    pub fn content(&self) -> &Arc<Content> {
        &self.content
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
        let _one_at_a_time = self.content.lock(&digest);
        let known = self.lock_loaded().get(&digest).cloned();
        if let Some(known) = known.filter(|_| self.content.has_code(&digest)) {
            // Already checked, stored and compiled.
            self.content.mark_fresh(&digest);
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
        self.content.put(&digest, bytes)?;
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

    /// Where instances' scratch directories are mounted.
    pub fn scratch_dir(&self) -> &std::path::Path {
        &self.scratch_dir
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
        let _one_at_a_time = self.content.lock(digest);
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
                let bytes = self.content.get(digest)?;
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

    /// Drops code that no kept version names: from memory, from the
    /// compiled cache and from the content store. `keep` is every digest
    /// a kept stack version (or anything else still in use) names.
    pub fn retain(&self, keep: &HashSet<Digest>) -> anyhow::Result<Collected> {
        self.content.retain(keep, self)
    }

    fn remember(&self, loaded: Arc<Loaded>) {
        self.lock_loaded().insert(loaded.digest.clone(), loaded);
    }

    /// How many compiles this engine has done.
    pub fn compiles(&self) -> u64 {
        self.compiles.load(Ordering::Relaxed)
    }
}

/// What the engine makes of stored code goes with it.
impl Derived for Engine {
    fn derived_digests(&self) -> anyhow::Result<Vec<Digest>> {
        let mut digests: Vec<Digest> = self.lock_loaded().keys().cloned().collect();
        digests.extend(self.cache.digests()?);
        Ok(digests)
    }

    fn forget(&self, digest: &Digest, collected: &mut Collected) -> anyhow::Result<()> {
        collected.loaded += usize::from(self.lock_loaded().remove(digest).is_some());
        collected.compiled += usize::from(self.cache.remove(digest)?);
        Ok(())
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

    fn small(dir: &std::path::Path) -> EngineConfig {
        EngineConfig {
            data_dir: dir.to_path_buf(),
            shared_cache: None,
            max_instances: 4,
            max_memory_bytes: 64 << 20,
        }
    }

    /// The content store in `dir`, opened afresh: an engine over it knows
    /// of no upload another engine took.
    fn content(dir: &std::path::Path) -> Arc<Content> {
        Arc::new(Content::open(dir).unwrap())
    }

    #[test]
    fn code_compiles_once_is_checked_on_load_and_is_collected() {
        let dir = tempfile::tempdir().unwrap();
        let config = small(dir.path());
        let blobs = crate::content::Blobs::open(dir.path()).unwrap();
        let digest = Engine::new(&config, content(dir.path()))
            .unwrap()
            .accept("app.wasm", &app_wasm())
            .unwrap()
            .digest;

        // A fresh engine with no compiled file: eight loads at once share
        // one compile.
        let engine = Arc::new(Engine::new(&config, content(dir.path())).unwrap());
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
        let left: Vec<usize> = engine.content.lock_users();
        assert!(left.is_empty(), "load locks outlived their loads: {left:?}");

        // A compiled file that does not match its checksum is compiled
        // again, never run.
        let path = engine.cache.path(&digest);
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        let again = Engine::new(&config, content(dir.path())).unwrap();
        again.load(&digest).unwrap();
        assert_eq!(again.compiles(), 1);
        assert!(Engine::new(&config, content(dir.path()))
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
