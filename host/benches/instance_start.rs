//! How long it takes to start one worker instance from a cached component.
//!
//! Three numbers from the same run, on the same machine:
//! - **mesh**: the daemon's path: `Engine::load` (cached, pre-instantiated),
//!   then `instance::run_command` of `app send-emails` up to the moment the
//!   instance is running (store, WASI context, limits, log streams,
//!   instantiation), and the whole run to completion;
//! - **bare wasmtime**: the least a host can do: default engine,
//!   `Store::new` with an empty WASI context, `CommandPre::instantiate_async`;
//! - **process**: `fork`+`exec` of `/bin/true` and waiting for it, the cost
//!   of the unit that containers and process-based PaaSes start.
//!
//! `--quick` runs 100 iterations instead of 1,000 (CI uses it as a smoke run).

mod support;

use std::sync::Arc;
use std::time::Instant;

use mesh_host::content::Content;
use mesh_host::model::ServiceKey;
use mesh_host::runtime::{run_command, Interrupt, Launch};
use mesh_host::runtime::{Engine, EngineConfig};
use mesh_host::services::parts::log_output;
use mesh_host::telemetry::{DiskWriter, Logs, Stream};
use mesh_host::DaemonConfig;
use support::{app_wasm, bare_instantiate, bare_instantiate_pooled, percentile};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let iterations = if quick { 100 } else { 1000 };
    let bytes = std::fs::read(app_wasm())?;

    // mesh: the daemon's own engine and instance path.
    let dir = tempfile::tempdir()?;
    let config = DaemonConfig {
        data_dir: dir.path().to_path_buf(),
        ..DaemonConfig::default()
    };
    let config = EngineConfig::from(&config);
    let content = || Content::open(dir.path()).map(Arc::new);
    let info = Engine::new(&config, content()?)?.accept("app.wasm", &bytes)?;
    // A second engine on the same data dir: loads from the on-disk cache,
    // as a restarted daemon does.
    let engine = Arc::new(Engine::new(&config, content()?)?);
    let cache_load = Instant::now();
    let code = engine.load(&info.digest)?;
    let cache_load = cache_load.elapsed();
    let logs = Logs::new(dir.path(), 64 << 20, DiskWriter::start());
    let log = logs.service(&ServiceKey {
        env: "default".into(),
        stack: "app".into(),
        name: "bench".into(),
    });
    let mut mesh_start = Vec::with_capacity(iterations);
    let mut mesh_run = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let launch = Launch {
            args: vec!["app".into(), "send-emails".into()],
            env: vec![("MESH_SERVICE".into(), "bench".into())],
            memory_bytes: 128 << 20,
            stdout: log_output(&log, "bench.1", Stream::Stdout),
            stderr: log_output(&log, "bench.1", Stream::Stderr),
            dispatch: None,
            stdin: None,
            tenant: "default".into(),
            seat: mesh_host::runtime::Seat::Service,
            files: None,
            scratch_bytes: None,
            stop_grace: std::time::Duration::from_secs(1),
        };
        let t0 = Instant::now();
        let mut running_at = None;
        let outcome = run_command(&engine, &code, launch, Interrupt::default(), || {
            running_at = Some(t0.elapsed())
        })
        .await;
        mesh_run.push(t0.elapsed());
        assert!(outcome.succeeded(), "{outcome:?}");
        mesh_start.push(running_at.expect("instance reached running"));
    }

    // bare wasmtime: default engine, nothing but WASI.
    let bare_start = bare_instantiate(&bytes, iterations).await?;
    // The same on an engine set up as mesh's (pooling, epochs): the fair
    // baseline.
    let pooled_start = bare_instantiate_pooled(&bytes, iterations).await?;

    // A process: fork + exec + wait of /bin/true.
    let processes = iterations.min(200);
    let mut process_start = Vec::with_capacity(processes);
    for _ in 0..processes {
        let t0 = Instant::now();
        let status = std::process::Command::new("/bin/true").status()?;
        process_start.push(t0.elapsed());
        assert!(status.success());
    }

    let mesh = percentile(&mesh_start, 50);
    let bare = percentile(&bare_start, 50);
    let pooled = percentile(&pooled_start, 50);
    let process = percentile(&process_start, 50);
    println!("instance start, median over {iterations} (p99 in brackets)");
    println!("  load from compiled cache (once):      {cache_load:>10.2?}");
    println!(
        "  mesh worker start (to running):       {mesh:>10.2?}  [{:.2?}]",
        percentile(&mesh_start, 99)
    );
    println!(
        "  mesh worker whole run (send-emails):  {:>10.2?}  [{:.2?}]",
        percentile(&mesh_run, 50),
        percentile(&mesh_run, 99)
    );
    println!(
        "  bare wasmtime, mesh's engine settings: {pooled:>9.2?}  [{:.2?}]",
        percentile(&pooled_start, 99)
    );
    println!(
        "  bare wasmtime instantiate (baseline): {bare:>10.2?}  [{:.2?}]",
        percentile(&bare_start, 99)
    );
    println!(
        "  fork+exec /bin/true (over {processes}):       {process:>10.2?}  [{:.2?}]",
        percentile(&process_start, 99)
    );
    println!(
        "  ratio mesh / bare, same settings:     {:>10.2}x",
        mesh.as_secs_f64() / pooled.as_secs_f64()
    );
    println!(
        "  ratio mesh / bare wasmtime:           {:>10.2}x",
        mesh.as_secs_f64() / bare.as_secs_f64()
    );
    println!(
        "  ratio process / mesh:                 {:>10.1}x",
        process.as_secs_f64() / mesh.as_secs_f64()
    );
    Ok(())
}
