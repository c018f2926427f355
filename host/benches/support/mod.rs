//! The baselines the benchmarks compare mesh against, shared by them.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::Store;
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// The `app` guest example, built by `scripts/setup.sh`.
pub fn app_wasm() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../guest-examples/target/wasm32-wasip2/release/app.wasm");
    assert!(
        path.is_file(),
        "build the guest examples first: scripts/setup.sh"
    );
    path
}

/// The least a host can keep per store: WASI and WASI HTTP contexts.
struct Bare {
    wasi: WasiCtx,
    http: wasmtime_wasi_http::WasiHttpCtx,
    table: ResourceTable,
}

impl wasmtime_wasi_http::WasiHttpView for Bare {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        wasmtime_wasi_http::WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: Default::default(),
        }
    }
}

impl WasiView for Bare {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// A bare host: default engine, nothing but WASI, a pre-instantiated
/// command component.
pub struct BareHost {
    engine: wasmtime::Engine,
    pre: CommandPre<Bare>,
}

impl BareHost {
    /// Compiles `bytes` and links them against WASI and WASI HTTP, on a
    /// default engine.
    pub fn new(bytes: &[u8]) -> anyhow::Result<BareHost> {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(false);
        BareHost::with_config(bytes, &config)
    }

    /// The same on an engine set up exactly as mesh's is (its own
    /// `wasmtime_config` for the default daemon settings: the pooling
    /// allocator, memory kept resident, epoch interruption).
    pub fn pooled(bytes: &[u8]) -> anyhow::Result<BareHost> {
        let config = mesh_host::runtime::setup::wasmtime_config(
            &mesh_host::runtime::EngineConfig::from(&mesh_host::DaemonConfig::default()),
        );
        BareHost::with_config(bytes, &config)
    }

    fn with_config(bytes: &[u8], config: &wasmtime::Config) -> anyhow::Result<BareHost> {
        let engine = wasmtime::Engine::new(config).map_err(anyhow::Error::from)?;
        let component = Component::new(&engine, bytes).map_err(anyhow::Error::from)?;
        let mut linker = Linker::<Bare>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(anyhow::Error::from)?;
        // app also imports wasi:http (it can serve requests), as in mesh.
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(anyhow::Error::from)?;
        let pre = CommandPre::new(
            linker
                .instantiate_pre(&component)
                .map_err(anyhow::Error::from)?,
        )
        .map_err(anyhow::Error::from)?;
        Ok(BareHost { engine, pre })
    }

    /// Times one `Store::new` with an empty WASI context and
    /// `CommandPre::instantiate_async`.
    pub async fn instantiate(&self) -> anyhow::Result<Duration> {
        let t0 = Instant::now();
        let mut store = Store::new(
            &self.engine,
            Bare {
                wasi: WasiCtx::builder().args(&["app", "send-emails"]).build(),
                http: wasmtime_wasi_http::WasiHttpCtx::new(),
                table: ResourceTable::new(),
            },
        );
        // Never interrupted (an epoch engine needs a deadline).
        store.set_epoch_deadline(u64::MAX);
        let _command = self
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(anyhow::Error::from)?;
        Ok(t0.elapsed())
    }
}

/// Times `n` bare instantiations in a row (warm caches) on a default
/// engine.
pub async fn bare_instantiate(bytes: &[u8], n: usize) -> anyhow::Result<Vec<Duration>> {
    instantiate_n(&BareHost::new(bytes)?, n).await
}

/// Times `n` bare instantiations in a row on an engine set up as mesh's.
pub async fn bare_instantiate_pooled(bytes: &[u8], n: usize) -> anyhow::Result<Vec<Duration>> {
    instantiate_n(&BareHost::pooled(bytes)?, n).await
}

async fn instantiate_n(host: &BareHost, n: usize) -> anyhow::Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        samples.push(host.instantiate().await?);
    }
    Ok(samples)
}

/// The `p`th percentile of `samples` (50 for the median).
pub fn percentile(samples: &[Duration], p: usize) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}
