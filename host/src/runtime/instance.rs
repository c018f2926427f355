//! One instance: one wasmtime `Store` with its own memory limit, WASI
//! context and output streams, and running a component's `wasi:cli/run`
//! in it to its end.

use std::sync::Arc;

use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::{FsPerms, WasiCtx};

use super::cpu::{CpuUse, Verdict};
use super::dispatch::{Dispatch, Hooks};
use super::engine::{Engine, Loaded};
use super::io::{Output, RunStdin};
use super::outcome::{Interrupt, Outcome};
use super::scratch::{Scratch, SCRATCH_MOUNT};
use super::seats::Seat;
use super::state::{HostState, Wasi};
use crate::content::files::FILES_MOUNT;

/// What to start: the guest's view of the world.
pub struct Launch {
    /// argv, first word included.
    pub args: Vec<String>,
    /// Environment variables.
    pub env: Vec<(String, String)>,
    /// Memory limit in bytes: all memories together.
    pub memory_bytes: u64,
    /// Where stdout goes.
    pub stdout: Output,
    /// Where stderr goes.
    pub stderr: Output,
    /// Who decides where its calls go; `None` for a bare instance with
    /// the network open.
    pub dispatch: Option<Arc<dyn Dispatch>>,
    /// Where stdin comes from; none (end of input at once) when `None`.
    pub stdin: Option<RunStdin>,
    /// The environment it runs for: hot guests share the cores by
    /// environment.
    pub tenant: Arc<str>,
    /// Whose seat it takes.
    pub seat: Seat,
    /// The stack's files (by digest), shown read-only at `/`.
    pub files: Option<crate::model::Digest>,
    /// Bytes of private scratch space at `/tmp`; none when `None`.
    pub scratch_bytes: Option<u64>,
    /// How long it has to end after being asked to stop (a container's
    /// SIGTERM) before it is killed.
    pub stop_grace: std::time::Duration,
}

impl Launch {
    /// The same launch again for another instance, without stdin (a
    /// host-fed stdin belongs to one instance).
    pub fn again(&self) -> Launch {
        Launch {
            args: self.args.clone(),
            env: self.env.clone(),
            memory_bytes: self.memory_bytes,
            stdout: self.stdout.clone(),
            stderr: self.stderr.clone(),
            dispatch: self.dispatch.clone(),
            stdin: None,
            stop_grace: self.stop_grace,
            tenant: self.tenant.clone(),
            seat: self.seat,
            files: self.files.clone(),
            scratch_bytes: self.scratch_bytes,
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
pub async fn run_command(
    engine: &Engine,
    code: &Loaded,
    launch: Launch,
    interrupt: Interrupt,
    running: impl FnOnce(),
) -> Outcome {
    if let Some(module) = &code.module {
        return run_module(engine, module, launch, interrupt, running, None).await;
    }
    let Some(command) = &code.command else {
        return Outcome::failed(format!(
            "component {} does not export `wasi:cli/run` (it exports {})",
            code.digest.short(),
            code.exports.join(", ")
        ));
    };
    let mut store = match new_store(engine, launch, interrupt.clone()) {
        Ok(store) => store,
        Err(full) => return full,
    };
    let run = async {
        let instance = command.instantiate_async(&mut store).await?;
        running();
        instance.wasi_cli_run().call_run(&mut store).await
    };
    let result = tokio::select! {
        result = run => result,
        () = interrupt.triggered() => return Outcome::stopped(),
    };
    match result {
        Ok(Ok(())) => Outcome::exited(0),
        Ok(Err(())) => Outcome::exited(1),
        Err(e) => store.data().outcome_of(&e, &interrupt),
    }
}

/// Runs a wasip1 module's `_start` in a fresh store to its end:
/// `proc_exit(N)` ends it with code N, returning from `_start` with 0.
/// `cpu_limit` bounds the CPU time it may use.
pub(crate) async fn run_module(
    engine: &Engine,
    module: &wasmtime::InstancePre<HostState>,
    launch: Launch,
    interrupt: Interrupt,
    running: impl FnOnce(),
    cpu_limit: Option<std::time::Duration>,
) -> Outcome {
    let mut store = match store_for(engine, launch, interrupt.clone(), true) {
        Ok(store) => store,
        Err(full) => return full,
    };
    store.data_mut().cpu().begin(cpu_limit);
    let run = async {
        let instance = module.instantiate_async(&mut store).await?;
        running();
        let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
        start.call_async(&mut store, ()).await
    };
    let result = tokio::select! {
        result = run => result,
        () = interrupt.triggered() => return Outcome::stopped(),
    };
    match result {
        Ok(()) => Outcome::exited(0),
        Err(e) => store.data().outcome_of(&e, &interrupt),
    }
}

/// A fresh store for one instance: its WASI context (argv, env, output),
/// memory limit, and an epoch callback that counts CPU time, yields every
/// tick (pausing a hot guest beyond its share of the cores), and traps
/// once `interrupt` is triggered or a request's CPU limit is used up.
/// Fails when no seat of its kind is free.
pub fn new_store(
    engine: &Engine,
    launch: Launch,
    interrupt: Interrupt,
) -> Result<Store<HostState>, Outcome> {
    store_for(engine, launch, interrupt, false)
}

/// [`new_store`] for a component (`wasip1` false) or a core module.
pub(crate) fn store_for(
    engine: &Engine,
    launch: Launch,
    interrupt: Interrupt,
    wasip1: bool,
) -> Result<Store<HostState>, Outcome> {
    let seat = engine.seats().take(launch.seat).map_err(Outcome::failed)?;
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
    let called_out = super::dispatch::CalledOut::default();
    if let Some(dispatch) = &launch.dispatch {
        wasi.socket_addr_check(Hooks::socket_check(dispatch.clone(), called_out.clone()));
    }
    if let Some(stdin) = launch.stdin {
        wasi.stdin(stdin);
    }
    if let Some(files) = &launch.files {
        wasi.preopened_dir(
            engine.content().files_path(files),
            FILES_MOUNT,
            FsPerms::ReadOnly,
        )
        .map_err(|e| Outcome::failed(format!("cannot open the stack's files: {e}")))?;
    }
    let scratch = match launch.scratch_bytes {
        Some(bytes) => {
            let scratch = Scratch::mount(engine.scratch_dir(), bytes).map_err(Outcome::failed)?;
            wasi.preopened_dir(scratch.path(), SCRATCH_MOUNT, FsPerms::ReadWrite)
                .map_err(|e| Outcome::failed(format!("cannot open the scratch directory: {e}")))?;
            Some(scratch)
        }
        None => None,
    };
    let total = launch.dispatch.as_ref().and_then(|d| d.cpu_counter());
    let cpu = CpuUse::new(engine.shares().clone(), launch.tenant, total);
    let wasi = if wasip1 {
        Wasi::P1(wasi.build_p1())
    } else {
        Wasi::P2(wasi.build())
    };
    let state = HostState::new(
        wasi,
        launch.memory_bytes,
        launch.dispatch,
        called_out,
        cpu,
        seat,
        scratch,
    );
    let mut store = Store::new(engine.wasmtime(), state);
    store.limiter(|state| state.limiter());
    store.call_hook(|mut ctx, hook| {
        ctx.data_mut().cpu().switched(hook);
        Ok(())
    });
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |mut ctx| {
        if interrupt.is_triggered() {
            return Ok(UpdateDeadline::Interrupt);
        }
        let cpu = ctx.data_mut().cpu();
        Ok(match cpu.tick() {
            Verdict::Stop => UpdateDeadline::Interrupt,
            Verdict::Yield(pause) => UpdateDeadline::YieldCustom(1, cpu.resume_after(pause)),
        })
    });
    Ok(store)
}
