//! How punctually cron jobs fire, and how fast each firing's fresh
//! instance starts.
//!
//! The daemon's own path: a SQLite store holding an `@every 1s` job running
//! `app send-emails`, the supervisor, the job task, the engine's cached
//! component. From its run history:
//! - **fire jitter**: actual start minus scheduled start, p50 and p99;
//! - **fresh instance start**: from the firing to guest code running.
//!
//! Baselines measured in the same run:
//! - a bare tokio timer sleeping to whole-second wall-clock targets (the
//!   least jitter any tokio scheduler can have here);
//! - a bare wasmtime instantiation (default engine, empty WASI context)
//!   once a second, as cold as a firing's, and 200 in a row, warm.
//!
//! `--quick` watches 4 firings instead of 30 (CI uses it as a smoke run).

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use mesh_host::content::Content;
use mesh_host::cron::{Histories, Schedule, Scheduler};
use mesh_host::daemon::Converge;
use mesh_host::model::{RunStatus, Service, ServiceKey, Stack, Version};
use mesh_host::runtime::{Engine, EngineConfig};
use mesh_host::services::Supervisor;
use mesh_host::services::WasmSource;
use mesh_host::store::{encode, key, Store, Txn};
use mesh_host::telemetry::Logs;
use mesh_host::telemetry::{DiskWriter, Events, Metrics};
use mesh_host::DaemonConfig;
use support::{app_wasm, bare_instantiate, BareHost};

fn percentile(samples: &mut [f64], p: usize) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[(samples.len() - 1) * p / 100]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let firings = if quick { 4 } else { 30 };
    let bytes = std::fs::read(app_wasm())?;

    let dir = tempfile::tempdir()?;
    let config = DaemonConfig {
        data_dir: dir.path().to_path_buf(),
        ..DaemonConfig::default()
    };
    let store = Store::open_sqlite(dir.path())?;
    let content = Arc::new(Content::open(dir.path())?);
    let engine = Arc::new(Engine::new(&EngineConfig::from(&config), content)?);
    let digest = engine.accept("app.wasm", &bytes)?.digest;
    let writer = DiskWriter::start();
    let supervisor = Supervisor::new(
        WasmSource::new(engine.clone(), None),
        Arc::new(Logs::new(dir.path(), 8 << 20, writer.clone())),
        Arc::new(Events::open(dir.path(), writer.clone())),
        Arc::new(Metrics::default()),
        config.queue_per_instance,
    );
    let histories = Arc::new(Histories::new(dir.path(), writer));
    let scheduler = Arc::new(Scheduler::new(supervisor.clone(), histories));
    let (converge, _applied) = Converge::new(
        store.clone(),
        supervisor.clone(),
        scheduler.clone(),
        engine.clone(),
    );
    let reconciler = tokio::spawn(converge.run());

    // Desired state, as the API would write it.
    let components = BTreeMap::from([("app".to_string(), digest)]);
    let now = Utc::now();
    let stack = Stack {
        env: "default".into(),
        name: "app".into(),
        current: 1,
        components: components.clone(),
        images: Default::default(),
        sources: Default::default(),
        next_version: 2,
        created_at: now,
    };
    let version = Version {
        number: 1,
        digest: Version::bundle_digest(&components),
        components,
        images: Default::default(),
        sources: Default::default(),
        reason: "bench".into(),
        created_at: now,
    };
    let job = Service {
        command: vec!["app".into(), "send-emails".into()],
        memory_bytes: 64 << 20,
        schedule: Some("@every 1s".into()),
        created_at: now,
        ..Service::new("default", "app", "ticker")
    };
    store
        .commit(
            Txn::new()
                .put(key::stack("default", "app"), encode(&stack))
                .put(key::version("default", "app", 1), encode(&version))
                .put(key::service("default", "app", "ticker"), encode(&job)),
        )
        .await?;

    // Baselines: a bare timer sleeping to the same kind of wall-clock
    // targets (whole seconds, half a second after the job's, so the two
    // do not compete), and on each wake one bare instantiation, as cold as
    // a firing's (the machine idled for most of a second before it).
    let schedule = Schedule::parse("@every 1s", None)?;
    let bare = BareHost::new(&bytes)?;
    let baseline = tokio::spawn(async move {
        let (mut late, mut cold) = (Vec::new(), Vec::new());
        let mut after = Utc::now();
        for _ in 0..firings {
            let Some(at) = schedule.next_after(after) else {
                break;
            };
            let target = at + chrono::TimeDelta::milliseconds(500);
            tokio::time::sleep((target - Utc::now()).to_std().unwrap_or_default()).await;
            late.push((Utc::now() - target).num_microseconds().unwrap_or(0) as f64 / 1000.0);
            if let Ok(took) = bare.instantiate().await {
                cold.push(took.as_secs_f64() * 1000.0);
            }
            after = at;
        }
        (late, cold)
    });

    let key = ServiceKey {
        env: "default".into(),
        stack: "app".into(),
        name: "ticker".into(),
    };
    let deadline = Instant::now() + Duration::from_secs(firings as u64 + 5);
    let runs = loop {
        let runs = scheduler.runs(&key);
        if runs.len() >= firings || Instant::now() > deadline {
            break runs;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    reconciler.abort();
    scheduler.stop_all().await;
    supervisor.stop_all().await;
    let (mut timer_late, mut bare_cold) = baseline.await?;

    let ok: Vec<_> = runs
        .iter()
        .filter(|r| r.status == RunStatus::Succeeded)
        .collect();
    assert!(
        ok.len() >= firings.min(3),
        "only {} of {} runs succeeded: {runs:?}",
        ok.len(),
        runs.len()
    );
    let mut jitter: Vec<f64> = ok
        .iter()
        .map(|r| {
            (r.started_at - r.scheduled_at)
                .num_microseconds()
                .unwrap_or(0) as f64
                / 1000.0
                + r.start_us.unwrap_or(0) as f64 / 1000.0
        })
        .collect();
    let mut start: Vec<f64> = ok
        .iter()
        .filter_map(|r| r.start_us)
        .map(|us| us as f64 / 1000.0)
        .collect();

    // And the same instantiation warm, 200 in a row, for reference.
    let mut bare_warm: Vec<f64> = bare_instantiate(&bytes, 200)
        .await?
        .iter()
        .map(|d| d.as_secs_f64() * 1000.0)
        .collect();

    let (j50, j99) = (percentile(&mut jitter, 50), percentile(&mut jitter, 99));
    let (t50, t99) = (
        percentile(&mut timer_late, 50),
        percentile(&mut timer_late, 99),
    );
    let (s50, s99) = (percentile(&mut start, 50), percentile(&mut start, 99));
    let (b50, b99) = (
        percentile(&mut bare_cold, 50),
        percentile(&mut bare_cold, 99),
    );
    let (w50, w99) = (
        percentile(&mut bare_warm, 50),
        percentile(&mut bare_warm, 99),
    );
    println!("cron firing, @every 1s, {} runs", ok.len());
    println!("  fire jitter (guest running minus scheduled), ms: p50 {j50:>8.3}  p99 {j99:>8.3}");
    println!("  bare tokio timer lateness (baseline), ms:        p50 {t50:>8.3}  p99 {t99:>8.3}");
    println!("  fresh instance start (firing to running), ms:    p50 {s50:>8.3}  p99 {s99:>8.3}");
    println!("  bare wasmtime instantiate, once a second, ms:    p50 {b50:>8.3}  p99 {b99:>8.3}");
    println!("  bare wasmtime instantiate, 200 in a row, ms:     p50 {w50:>8.3}  p99 {w99:>8.3}");
    println!(
        "  ratio jitter / timer (p50):   {:>8.2}x",
        j50 / t50.max(0.001)
    );
    println!(
        "  ratio start / bare once a second (p50): {:>8.2}x",
        s50 / b50.max(0.001)
    );
    Ok(())
}
