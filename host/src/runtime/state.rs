//! The data of one instance's store: its WASI and HTTP contexts, its
//! resource table, its memory limit and its outgoing-call hooks.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime::ResourceLimiter;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::cpu::CpuUse;
use super::dispatch::{Dispatch, Hooks};
use super::outcome::{Interrupt, Outcome};
use super::scratch::Scratch;
use super::seats::Taken;

/// Table elements one instance may grow its tables to.
const MAX_TABLE_ELEMENTS: usize = 1_000_000;

/// The data of one instance's `Store`: its WASI contexts and limits.
pub struct HostState {
    wasi: WasiCtx,
    /// WASI preview 1, in the store of a core module.
    p1: Option<WasiP1Ctx>,
    http: WasiHttpCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
    hooks: Hooks,
    cpu: CpuUse,
    /// Its seat among the live instances, given back with the store.
    _seat: Taken,
    /// Its scratch directory, unmounted with the store.
    _scratch: Option<Scratch>,
}

impl HostState {
    /// Records the services the request now being served passed through,
    /// for the calls the guest makes while serving it.
    pub fn set_chain(&mut self, chain: Vec<String>) {
        self.hooks.chain = chain;
        self.hooks.called_out.reset();
    }

    /// Whether the guest called out (sent a request, opened a connection)
    /// since the request it serves began.
    pub fn called_out(&self) -> bool {
        self.hooks.called_out.any()
    }

    /// How a guest that failed with `e` ended.
    pub fn outcome_of(&self, e: &wasmtime::Error, interrupt: &Interrupt) -> Outcome {
        if let Some(limit) = self.cpu.exceeded() {
            return Outcome::failed(format!(
                "used more than {} of CPU time and was stopped",
                crate::model::format_duration(limit)
            ));
        }
        let refused = self.limiter.refused.then_some(self.limiter.limit as u64);
        Outcome::explain(e, refused, interrupt)
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// The WASI context a store is made with: preview 2 for components,
/// preview 1 for core modules.
pub(crate) enum Wasi {
    P2(WasiCtx),
    P1(WasiP1Ctx),
}

/// Limits the total of all linear memories of one instance (not each one
/// separately), and remembers when it refused to grow, so a guest that dies
/// of it is reported as out of memory rather than as a bare trap.
pub struct MemoryLimiter {
    limit: usize,
    used: usize,
    refused: bool,
    /// Told of memory in use as it changes.
    dispatch: Option<Arc<dyn Dispatch>>,
}

impl MemoryLimiter {
    /// A limiter allowing `limit` bytes in all.
    pub fn new(limit: u64) -> MemoryLimiter {
        MemoryLimiter {
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            used: 0,
            refused: false,
            dispatch: None,
        }
    }
}

impl Drop for MemoryLimiter {
    fn drop(&mut self) {
        // The store and its memories are going away with the limiter.
        if let Some(dispatch) = &self.dispatch {
            dispatch.memory_changed(-(self.used as i64));
        }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let after = self.used.saturating_sub(current).saturating_add(desired);
        if after > self.limit {
            self.refused = true;
            return Ok(false);
        }
        if let Some(dispatch) = &self.dispatch {
            dispatch.memory_changed(after as i64 - self.used as i64);
        }
        self.used = after;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

impl HostState {
    /// The state of a new store.
    pub(crate) fn new(
        wasi: Wasi,
        limit: u64,
        dispatch: Option<Arc<dyn Dispatch>>,
        called_out: super::dispatch::CalledOut,
        cpu: CpuUse,
        seat: Taken,
        scratch: Option<Scratch>,
    ) -> HostState {
        let (wasi, p1) = match wasi {
            Wasi::P2(wasi) => (wasi, None),
            Wasi::P1(p1) => (WasiCtx::builder().build(), Some(p1)),
        };
        HostState {
            wasi,
            p1,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                dispatch: dispatch.clone(),
                ..MemoryLimiter::new(limit)
            },
            hooks: Hooks::new(dispatch, called_out),
            cpu,
            _seat: seat,
            _scratch: scratch,
        }
    }

    /// WASI preview 1 of a core module's store. Only the module linker
    /// asks, and only modules are instantiated with it.
    pub(crate) fn p1(&mut self) -> &mut WasiP1Ctx {
        self.p1
            .as_mut()
            .expect("a core module runs in a store made for preview 1")
    }

    /// The store's CPU accounting.
    pub(crate) fn cpu(&mut self) -> &mut CpuUse {
        &mut self.cpu
    }

    /// The store's memory limiter.
    pub(crate) fn limiter(&mut self) -> &mut MemoryLimiter {
        &mut self.limiter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limiter_counts_all_memories_together() {
        let mut limiter = MemoryLimiter::new(100);
        assert!(limiter.memory_growing(0, 60, None).unwrap());
        assert!(!limiter.memory_growing(0, 60, None).unwrap());
        assert!(limiter.refused);
        assert!(limiter.memory_growing(60, 100, None).unwrap());
        assert!(!limiter.memory_growing(100, 101, None).unwrap());
    }
}
