//! One instance: one wasmtime `Store` with its own memory limit, WASI
//! context and output streams, running a component's `wasi:cli/run` to
//! its end, and the [`Outcome`] that explains how it ended.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::io::AsyncRead;
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store, Trap, UpdateDeadline, WasmBacktrace};
use wasmtime_wasi::cli::{AsyncStdinStream, IsTerminal, StdinStream, StdoutStream};
use wasmtime_wasi::{I32Exit, WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::dns::{Identity, MeshHooks};
use crate::engine::{Engine, Loaded};
use crate::metrics::ServiceMetrics;
use crate::model::format_memory;

/// Table elements one instance may grow its tables to.
const MAX_TABLE_ELEMENTS: usize = 1_000_000;

/// The data of one instance's `Store`: its WASI contexts and limits.
pub struct HostState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
    hooks: MeshHooks,
}

impl HostState {
    /// Records the services the request now being served passed through,
    /// for the calls the guest makes while serving it.
    pub fn set_chain(&mut self, chain: Vec<String>) {
        self.hooks.chain = chain;
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

/// Limits the total of all linear memories of one instance (not each one
/// separately), and remembers when it refused to grow, so a guest that dies
/// of it is reported as out of memory rather than as a bare trap.
pub struct MemoryLimiter {
    limit: usize,
    used: usize,
    refused: bool,
    /// The service's counters, whose memory in use it keeps up to date.
    metrics: Option<Arc<ServiceMetrics>>,
}

impl MemoryLimiter {
    /// A limiter allowing `limit` bytes in all.
    pub fn new(limit: u64) -> MemoryLimiter {
        MemoryLimiter {
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            used: 0,
            refused: false,
            metrics: None,
        }
    }
}

impl Drop for MemoryLimiter {
    fn drop(&mut self) {
        // The store and its memories are going away with the limiter.
        if let Some(metrics) = &self.metrics {
            metrics.memory_changed(-(self.used as i64));
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
        if let Some(metrics) = &self.metrics {
            metrics.memory_changed(after as i64 - self.used as i64);
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

/// What to start: the guest's view of the world.
pub struct Launch<O, E> {
    /// argv, first word included.
    pub args: Vec<String>,
    /// Environment variables.
    pub env: Vec<(String, String)>,
    /// Memory limit in bytes: all memories together.
    pub memory_bytes: u64,
    /// Where stdout goes.
    pub stdout: O,
    /// Where stderr goes.
    pub stderr: E,
    /// Who the instance is, for intra-DNS calls and the outbound policy;
    /// `None` for a bare instance with the network open.
    pub who: Option<Identity>,
    /// Where stdin comes from; none (end of input at once) when `None`.
    pub stdin: Option<RunStdin>,
}

/// A guest's stdin fed by the host (an interactive run), saying whether
/// it is a terminal.
pub struct RunStdin {
    stream: AsyncStdinStream,
    terminal: bool,
}

impl RunStdin {
    /// Stdin reading from `input`; `terminal` is what the guest's
    /// `is_terminal` says.
    pub fn new(input: impl AsyncRead + Send + Sync + 'static, terminal: bool) -> RunStdin {
        RunStdin {
            stream: AsyncStdinStream::new(input),
            terminal,
        }
    }
}

impl IsTerminal for RunStdin {
    fn is_terminal(&self) -> bool {
        self.terminal
    }
}

impl StdinStream for RunStdin {
    fn async_stream(&self) -> Box<dyn AsyncRead + Send + Sync> {
        self.stream.async_stream()
    }

    fn p2_stream(&self) -> Box<dyn wasmtime_wasi::p2::InputStream> {
        self.stream.p2_stream()
    }
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Exit code, when the guest exited (traps and start failures have none).
    pub exit_code: Option<i32>,
    /// What happened, for people: `exited with code 3`,
    /// `exceeded memory limit 64 MiB`, `trap: ... in app::trap`.
    pub message: String,
}

/// How a run that outgrew its memory limit is explained.
const OOM_MESSAGE: &str = "exceeded memory limit";

impl Outcome {
    /// Whether the run counts as a success.
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0)
    }

    /// The event kind for a run that ended with `message`: `instance.oom`
    /// when it ran out of memory, else `otherwise`.
    pub fn event_kind<'a>(message: &str, otherwise: &'a str) -> &'a str {
        if message.starts_with(OOM_MESSAGE) {
            "instance.oom"
        } else {
            otherwise
        }
    }

    fn exited(code: i32) -> Outcome {
        Outcome {
            exit_code: Some(code),
            message: format!("exited with code {code}"),
        }
    }
}

/// A switch that stops a running guest: it traps at its next epoch check
/// if it is running wasm, and its run is cancelled if it is waiting in a
/// host call (sleeping, reading stdin), where no epoch check comes.
#[derive(Clone, Default)]
pub struct Interrupt(Arc<(AtomicBool, tokio::sync::Notify)>);

impl Interrupt {
    /// Asks the guest to stop.
    pub fn trigger(&self) {
        self.0 .0.store(true, Ordering::Relaxed);
        self.0 .1.notify_waiters();
    }

    fn is_triggered(&self) -> bool {
        self.0 .0.load(Ordering::Relaxed)
    }

    /// Returns once the switch is triggered.
    async fn triggered(&self) {
        loop {
            let notified = self.0 .1.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_triggered() {
                return;
            }
            notified.await;
        }
    }
}

/// Runs `wasi:cli/run` of `code` in a fresh store to its end.
///
/// `running` is called once the instance exists (instantiation done), so
/// the caller can move it from `starting` to `running`. The guest yields to
/// the executor at every epoch tick, so a guest in an endless loop neither
/// holds a thread nor resists being stopped: dropping the returned future,
/// or triggering `interrupt`, ends it within a tick.
pub async fn run_command<O, E>(
    engine: &Engine,
    code: &Loaded,
    launch: Launch<O, E>,
    interrupt: Interrupt,
    running: impl FnOnce(),
) -> Outcome
where
    O: StdoutStream + 'static,
    E: StdoutStream + 'static,
{
    let Some(command) = &code.command else {
        return Outcome {
            exit_code: None,
            message: format!(
                "component {} does not export `wasi:cli/run` (it exports {})",
                code.digest.short(),
                code.exports.join(", ")
            ),
        };
    };
    let mut store = new_store(engine, launch, interrupt.clone());
    let run = async {
        let instance = command.instantiate_async(&mut store).await?;
        running();
        instance.wasi_cli_run().call_run(&mut store).await
    };
    let result = tokio::select! {
        result = run => result,
        () = interrupt.triggered() => {
            return Outcome {
                exit_code: None,
                message: "stopped".to_string(),
            };
        }
    };
    match result {
        Ok(Ok(())) => Outcome::exited(0),
        Ok(Err(())) => Outcome::exited(1),
        Err(e) => explain(&e, &store.data().limiter, &interrupt),
    }
}

/// A fresh store for one instance: its WASI context (argv, env, output),
/// memory limit, and an epoch callback that yields every tick and traps
/// once `interrupt` is triggered.
pub fn new_store<O, E>(
    engine: &Engine,
    launch: Launch<O, E>,
    interrupt: Interrupt,
) -> Store<HostState>
where
    O: StdoutStream + 'static,
    E: StdoutStream + 'static,
{
    let mut wasi = WasiCtx::builder();
    wasi.args(&launch.args)
        .envs(&launch.env)
        .stdout(launch.stdout)
        .stderr(launch.stderr)
        .inherit_network()
        // TCP and UDP are off unless asked for; the socket address check
        // below applies the environment's outbound policy to both.
        .allow_tcp(true)
        .allow_udp(true)
        .allow_ip_name_lookup(true);
    if let Some(who) = &launch.who {
        wasi.socket_addr_check(who.socket_check());
    }
    if let Some(stdin) = launch.stdin {
        wasi.stdin(stdin);
    }
    let state = HostState {
        wasi: wasi.build(),
        http: WasiHttpCtx::new(),
        table: ResourceTable::new(),
        limiter: MemoryLimiter {
            metrics: launch.who.as_ref().map(|who| who.metrics.clone()),
            ..MemoryLimiter::new(launch.memory_bytes)
        },
        hooks: MeshHooks::new(launch.who),
    };
    let mut store = Store::new(engine.wasmtime(), state);
    store.limiter(|state| &mut state.limiter);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        if interrupt.is_triggered() {
            Ok(UpdateDeadline::Interrupt)
        } else {
            Ok(UpdateDeadline::Yield(1))
        }
    });
    store
}

/// Explains how a store's guest failed: out of memory, stopped, or the trap.
pub fn explain_failure(
    store: &Store<HostState>,
    e: &wasmtime::Error,
    interrupt: &Interrupt,
) -> String {
    explain(e, &store.data().limiter, interrupt).message
}

/// Turns the error a run ended with into words.
fn explain(e: &wasmtime::Error, limiter: &MemoryLimiter, interrupt: &Interrupt) -> Outcome {
    if let Some(exit) = e.downcast_ref::<I32Exit>() {
        return Outcome::exited(exit.0);
    }
    if limiter.refused {
        return Outcome {
            exit_code: None,
            message: format!("{OOM_MESSAGE} {}", format_memory(limiter.limit as u64)),
        };
    }
    if interrupt.is_triggered() {
        return Outcome {
            exit_code: None,
            message: "stopped".to_string(),
        };
    }
    let message = match e.downcast_ref::<Trap>() {
        Some(trap) => {
            let place = e
                .downcast_ref::<WasmBacktrace>()
                .and_then(|bt| bt.frames().iter().find_map(|f| f.func_name()))
                .map(|name| format!(" in {:#}", rustc_demangle::demangle(name)))
                .unwrap_or_default();
            let what = trap.to_string();
            let what = what.strip_prefix("wasm trap: ").unwrap_or(&what);
            format!("trap: {what}{place}")
        }
        None => format!("failed: {}", e.root_cause()),
    };
    Outcome {
        exit_code: None,
        message,
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
