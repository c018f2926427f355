//! A whole host inside the test process: the daemon's own code
//! (`mesh_host::daemon::Host`: build, spawn, shutdown) on a tokio runtime
//! of its own, with a real SQLite file in the test's data directory, real
//! listeners on port 0 and real wasmtime. It writes `daemon.json` as
//! `mesh up` does, so the tests still drive it with the real `mesh`
//! binary, and its log goes to the file a `mesh up` would have written.
//!
//! Starting one costs no process and no exec of the (large) `mesh`
//! binary (about 45 ms against 75 ms); stopping one runs the daemon's
//! own shutdown, in order, so every test exercises it (about 130 ms,
//! where a `mesh up` is killed). What it cannot do is die the way a
//! process dies: a test that kills the daemon, signals it, limits or
//! measures its process, or runs containers (whose shim is the daemon's
//! own binary) starts a `mesh up` instead (`Daemon::start_process`).

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use mesh_host::config::StoreConfig;
use mesh_host::daemon::{DaemonInfo, Host, Running};
use mesh_host::DaemonConfig;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Longest the runtime's leftover tasks get once the host is dropped.
const DROP_WAIT: Duration = Duration::from_secs(5);

/// In-process hosts alive at once, at most: each reserves about 8.6 TiB
/// of address space for its instances' memories (wasmtime's pool, sized
/// for `--max-instances` 1000), and a process has 128 TiB. A test that
/// would start one more waits until another test's host has stopped.
const MAX_LIVE: usize = 12;

/// A host running in this process until dropped, which stops it in
/// order, as SIGTERM stops `mesh up`.
pub struct InProcess {
    /// Its own threads; dropping it ends every task the host spawned.
    runtime: Option<tokio::runtime::Runtime>,
    /// The host, until it is stopped.
    running: Option<Running>,
    /// Its place among the hosts alive at once, given back last.
    _place: Place,
}

impl InProcess {
    /// Builds and spawns a host as `mesh up ARGS` would (the flags the
    /// tests use), logging to `log`.
    pub fn start(args: &[String], log: &Path) -> Result<(InProcess, DaemonInfo), String> {
        let config = config(args);
        let place = Place::take();
        let runtime = runtime(log);
        let started = runtime.block_on(async {
            // On the runtime's threads, where the host's log goes.
            tokio::spawn(async { Host::build(config).await?.spawn().await })
                .await
                .map_err(|e| format!("the host's start panicked: {e}"))?
                .map_err(|e| format!("error: {e:#}"))
        });
        let mut host = InProcess {
            runtime: Some(runtime),
            running: None,
            _place: place,
        };
        let running = started?;
        let info = running.info().clone();
        host.running = Some(running);
        Ok((host, info))
    }

    /// Stops the host in order, as SIGTERM stops `mesh up`, and waits
    /// until it has.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        // In order, as SIGTERM stops `mesh up`: instances stopped, the
        // lock let go; then whatever task is left ends with the runtime.
        if let Some(runtime) = self.runtime.take() {
            if let Some(running) = self.running.take() {
                let _ = runtime.block_on(async { tokio::spawn(running.shutdown()).await });
            }
            runtime.shutdown_timeout(DROP_WAIT);
        }
    }
}

/// One of the [`MAX_LIVE`] places for a host alive in this process.
struct Place;

/// How many places are taken, and a wake-up when one is given back.
static PLACES: (Mutex<usize>, Condvar) = (Mutex::new(0), Condvar::new());

impl Place {
    /// Takes a place, waiting for one when all are taken.
    fn take() -> Place {
        let (taken, freed) = &PLACES;
        let mut taken = freed
            .wait_while(taken.lock().unwrap(), |n| *n >= MAX_LIVE)
            .unwrap();
        *taken += 1;
        Place
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let (taken, freed) = &PLACES;
        *taken.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        freed.notify_one();
    }
}

/// A multi-threaded runtime whose threads log to `log`, as `mesh up`
/// logs to its stderr (`MESH_LOG` filters, `info` unless set).
fn runtime(log: &Path) -> tokio::runtime::Runtime {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let filter = std::env::var("MESH_LOG").unwrap_or_else(|_| "info".into());
    let subscriber = Arc::new(
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(Arc::new(file))
            .with_ansi(false)
            .finish(),
    );
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("mesh-host")
        .on_thread_start(move || {
            // For the thread's whole life: the guard is never dropped.
            std::mem::forget(subscriber.clone().set_default());
        })
        .build()
        .unwrap()
}

/// The daemon's configuration for `mesh up ARGS`: `mesh up`'s defaults,
/// changed by each `--flag VALUE` the tests use.
fn config(args: &[String]) -> DaemonConfig {
    let mut config = DaemonConfig {
        node: mesh_host::config::default_node(),
        ..DaemonConfig::default()
    };
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| panic!("`{flag}` needs a value"));
        set(&mut config, flag, value);
    }
    config
}

/// Applies one `mesh up` flag.
fn set(config: &mut DaemonConfig, flag: &str, value: &str) {
    let size = || mesh_host::model::parse_memory(value).unwrap();
    let duration = || mesh_host::cron::parse_duration(value).unwrap();
    let number = || value.parse::<usize>().unwrap();
    match flag {
        "--data-dir" => config.data_dir = value.into(),
        "--api" => config.api_addr = value.parse().unwrap(),
        "--http" => config.http_addr = value.parse().unwrap(),
        "--https" => config.https_addr = Some(value.parse().unwrap()),
        "--shared-cache" => config.shared_cache = Some(value.into()),
        "--container-network" => config.container_network = value.into(),
        "--store" => config.store = StoreConfig::parse(value).unwrap(),
        "--node" => config.node = value.into(),
        "--advertise" => config.advertise = Some(value.into()),
        "--sealing-key" => config.sealing_key = Some(value.into()),
        "--registry-ca" => config.registries.ca_files.push(value.into()),
        "--insecure-registry" => config.registries.insecure.push(value.into()),
        "--private-registry" => config.registries.private.push(value.into()),
        "--queue-per-instance" => config.queue_per_instance = number(),
        "--max-connections" => config.max_connections = number(),
        "--max-connections-per-client" => config.max_connections_per_client = number(),
        "--max-instances" => config.max_instances = value.parse().unwrap(),
        "--header-timeout" => config.header_timeout = duration(),
        "--idle-timeout" => config.idle_timeout = duration(),
        "--max-header-size" => config.max_header_bytes = size() as usize,
        "--max-body-size" => config.max_body_bytes = size(),
        "--max-upload" => config.max_upload_bytes = size(),
        "--max-image" => config.max_image_bytes = size(),
        "--log-size" => config.log_bytes_per_service = size(),
        other => panic!(
            "an in-process host does not know `mesh up {other}`: add it to tests/support/inproc.rs, or use Daemon::start_process_with"
        ),
    }
}
