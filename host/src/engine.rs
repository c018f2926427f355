//! The daemon's one wasmtime [`Engine`](wasmtime::Engine): its
//! configuration (pooling allocator, epoch interruption), the linker every
//! instance uses, the epoch ticker, and the code cache.
//!
//! Code is compiled once per content digest: the compiled artifact is
//! written to `DATA/cache/<engine hash>/<digest>.cwasm` and mapped back in
//! on later loads, so a daemon restart does not recompile anything. Loaded
//! components are kept in memory with their pre-instantiated form.

use std::collections::HashMap;
use std::hash::{Hash as _, Hasher as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use thiserror::Error;
use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime::{Config, InstanceAllocationStrategy, PoolingAllocationConfig};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::blobs::Blobs;
use crate::config::DaemonConfig;
use crate::instance::HostState;
use crate::model::Digest;

/// How often the epoch advances. A running guest reaches an epoch check at
/// least this often, so this bounds how long it can hold a thread before
/// yielding and how quickly it can be stopped.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Core instances, memories and tables a component may need per live
/// component instance, for sizing the pool.
const CORE_INSTANCES_PER_COMPONENT: u32 = 16;
const MEMORIES_PER_COMPONENT: u32 = 2;
const TABLES_PER_COMPONENT: u32 = 4;
/// Extra pool room beyond `max_instances` for one-shot runs and checks.
const POOL_HEADROOM: u32 = 64;

const RUN_EXPORT: &str = "wasi:cli/run@0.2";
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
    /// A core module where a component is needed.
    #[error("{name} is a core WebAssembly module, not a component: build it for the `wasm32-wasip2` target (or wrap it with `wasm-tools component new`)")]
    CoreModule {
        /// What the user called the file.
        name: String,
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
    /// The component's exports, by name.
    pub exports: Vec<String>,
}

impl Loaded {
    /// Whether it exports `wasi:http/incoming-handler`.
    pub fn serves_http(&self) -> bool {
        self.proxy.is_some()
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
    blobs: Blobs,
    cache_dir: PathBuf,
    loaded: Mutex<HashMap<Digest, Arc<Loaded>>>,
    ticker_stop: Arc<AtomicBool>,
}

impl Engine {
    /// Builds the engine for `config`, starts its epoch ticker, and opens
    /// the code cache.
    pub fn new(config: &DaemonConfig, blobs: Blobs) -> anyhow::Result<Engine> {
        let engine = wasmtime::Engine::new(&wasmtime_config(config))
            .map_err(anyhow::Error::from)
            .context("configuring the wasmtime engine")?;
        let linker = new_linker(&engine)?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let cache_dir = config
            .data_dir
            .join("cache")
            .join(format!("{:016x}", hasher.finish()));
        std::fs::create_dir_all(&cache_dir)
            .with_context(|| format!("creating the code cache {}", cache_dir.display()))?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        spawn_epoch_ticker(engine.clone(), ticker_stop.clone())?;
        Ok(Engine {
            engine,
            linker,
            blobs,
            cache_dir,
            loaded: Mutex::new(HashMap::new()),
            ticker_stop,
        })
    }

    /// The wasmtime engine.
    pub fn wasmtime(&self) -> &wasmtime::Engine {
        &self.engine
    }

    /// The code blobs.
    pub fn blobs(&self) -> &Blobs {
        &self.blobs
    }

    /// Checks uploaded bytes are a component mesh can run, stores them and
    /// compiles them into the cache. `name` is what the user called it.
    pub fn accept(&self, name: &str, bytes: &[u8]) -> Result<CodeInfo, anyhow::Error> {
        check_header(name, bytes)?;
        let digest = Digest::of(bytes);
        if let Some(known) = self.lock_loaded().get(&digest) {
            // Already checked, stored and compiled.
            return Ok(CodeInfo {
                digest,
                size: bytes.len() as u64,
                exports: known.exports.clone(),
            });
        }
        let started = std::time::Instant::now();
        let component = Component::new(&self.engine, bytes).map_err(|e| CodeError::Invalid {
            name: name.to_string(),
            reason: root_cause(&e),
        })?;
        tracing::info!(component = name, digest = digest.short(), took = ?started.elapsed(), "compiled component");
        let loaded = self.prepare(name, digest, &component)?;
        if loaded.command.is_none() && !loaded.serves_http() {
            return Err(CodeError::NoEntryPoint {
                name: name.to_string(),
                exports: loaded.exports.join(", "),
            }
            .into());
        }
        let digest = self.blobs.put(bytes)?;
        self.write_cache(&digest, &component)?;
        let info = CodeInfo {
            digest: digest.clone(),
            size: bytes.len() as u64,
            exports: loaded.exports.clone(),
        };
        self.remember(Arc::new(loaded));
        Ok(info)
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
        let cached = self.cache_path(digest);
        let component = match cached.is_file().then(|| {
            // SAFETY: the file was written by `write_cache` from a component
            // compiled by an engine with the same compatibility hash (it is
            // part of the directory name), and nothing else writes there.
            unsafe { Component::deserialize_file(&self.engine, &cached) }
        }) {
            Some(Ok(component)) => {
                tracing::info!(
                    digest = digest.short(),
                    "loaded component from the compiled cache"
                );
                component
            }
            Some(Err(_)) | None => {
                let bytes = self.blobs.get(digest)?;
                tracing::info!(
                    digest = digest.short(),
                    "compiling component (not in the compiled cache)"
                );
                let component = Component::new(&self.engine, &bytes)
                    .map_err(anyhow::Error::from)
                    .with_context(|| format!("compiling component {}", digest.short()))?;
                self.write_cache(digest, &component)?;
                component
            }
        };
        let loaded = Arc::new(self.prepare(digest.short(), digest.clone(), &component)?);
        self.remember(loaded.clone());
        Ok(loaded)
    }

    fn prepare(
        &self,
        name: &str,
        digest: Digest,
        component: &Component,
    ) -> Result<Loaded, CodeError> {
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
            exports,
        })
    }

    fn lock_loaded(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, Arc<Loaded>>> {
        self.loaded.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remember(&self, loaded: Arc<Loaded>) {
        self.lock_loaded().insert(loaded.digest.clone(), loaded);
    }

    fn cache_path(&self, digest: &Digest) -> PathBuf {
        self.cache_dir.join(format!("{}.cwasm", digest.hex()))
    }

    fn write_cache(&self, digest: &Digest, component: &Component) -> anyhow::Result<()> {
        let path = self.cache_path(digest);
        if path.is_file() {
            return Ok(());
        }
        let bytes = component
            .serialize()
            .map_err(anyhow::Error::from)
            .context("serialising a compiled component")?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))?;
        Ok(())
    }

    /// Where compiled code is cached.
    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

fn wasmtime_config(config: &DaemonConfig) -> Config {
    let live = config.max_instances + POOL_HEADROOM;
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(live)
        .total_core_instances(live * CORE_INSTANCES_PER_COMPONENT)
        .total_memories(live * MEMORIES_PER_COMPONENT)
        .total_tables(live * TABLES_PER_COMPONENT)
        .total_stacks(live)
        .max_memory_size(config.max_memory_bytes as usize);
    let mut wasm = Config::new();
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

fn spawn_epoch_ticker(engine: wasmtime::Engine, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("mesh-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        })
        .context("starting the epoch ticker thread")?;
    Ok(())
}

fn check_header(name: &str, bytes: &[u8]) -> Result<(), CodeError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(CodeError::NotWasm {
            name: name.to_string(),
        });
    }
    // Core modules are version 1, layer 0; components use layer 1.
    if bytes[4..8] == [1, 0, 0, 0] {
        return Err(CodeError::CoreModule {
            name: name.to_string(),
        });
    }
    Ok(())
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
        assert!(matches!(
            check_header("x", b"\0asm\x01\0\0\0"),
            Err(CodeError::CoreModule { .. })
        ));
        assert!(check_header("x", b"\0asm\x0d\0\x01\0").is_ok());
    }
}
