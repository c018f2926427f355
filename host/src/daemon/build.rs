//! Building a host: the data directory locked, the store opened and
//! bootstrapped, every part made and the listeners bound, nothing served
//! yet. What [`Host::build`] returns is a value: `mesh up` spawns it, and
//! so can a test inside its own process.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;

use crate::config::{DaemonConfig, StoreConfig};
use crate::container::Containers;
use crate::content::Content;
use crate::cron::{Histories, Scheduler};
use crate::runtime::{Engine, EngineConfig, MemorySlots};
use crate::services::container::Callers;
use crate::services::{Supervisor, WasmSource};
use crate::store::Store;
use crate::telemetry::{DiskWriter, Events, Logs, Metrics};

use super::files;
use super::listen::{self, Listeners};

/// A host made but not serving: [`Host::spawn`] starts it.
pub struct Host {
    /// The configuration, its memory limit lowered to what fits.
    pub(super) config: DaemonConfig,
    /// The data directory's lock, held until the host has stopped.
    pub(super) lock: File,
    /// Desired state.
    pub(super) store: Store,
    /// The operator's token (the cluster's, in a cluster).
    pub(super) admin_token: String,
    /// Whether the store is shared with other hosts.
    pub(super) clustered: bool,
    /// wasmtime and the code store.
    pub(super) engine: Arc<Engine>,
    /// Writes logs, events and histories to disk.
    pub(super) writer: Arc<DiskWriter>,
    /// Every service's log lines.
    pub(super) logs: Arc<Logs>,
    /// Counters and histograms for `/metrics`.
    pub(super) metrics: Arc<Metrics>,
    /// Containers, and their bridge when they can run here.
    pub(super) containers: Arc<Containers>,
    /// Containers' calls to services, through the proxy.
    pub(super) callers: Arc<Callers>,
    /// Where services' code comes from.
    pub(super) code: Arc<WasmSource>,
    /// Desired versus actual instances.
    pub(super) supervisor: Arc<Supervisor>,
    /// Cron jobs.
    pub(super) scheduler: Arc<Scheduler>,
    /// The control API, the ingress and HTTPS, bound.
    pub(super) listeners: Listeners,
    /// Seals registry passwords under a key kept outside the store.
    pub(super) sealer: Arc<crate::sealed::Sealer>,
    /// Pulls code from OCI registries.
    pub(super) registries: Arc<crate::registry::Registries>,
    /// Certificates from ACME, as the ingress serves them, when on.
    pub(super) acme_certs: Option<Arc<crate::ingress::certs::AcmeCerts>>,
}

impl Host {
    /// Opens `config.data_dir` (failing when another host holds it) and
    /// the store, makes every part and binds the listeners.
    pub async fn build(mut config: DaemonConfig) -> anyhow::Result<Host> {
        let lock = open_data_dir(&config.data_dir)?;
        fit_memory(&mut config);
        let (store, admin_token) = open_store(&config).await?;
        let data_dir = config.data_dir.clone();
        let content = Arc::new(Content::open(&data_dir)?);
        let engine = Arc::new(Engine::new(&EngineConfig::from(&config), content)?);
        let writer = DiskWriter::start();
        let logs = Arc::new(Logs::new(
            &data_dir,
            config.log_bytes_per_service,
            writer.clone(),
        ));
        let metrics = Arc::new(Metrics::default());
        let containers = open_containers(&config, &engine)?;
        let callers = Callers::new();
        let code = WasmSource::new(engine.clone(), Some((containers.clone(), callers.clone())));
        let supervisor = Supervisor::new(
            code.clone(),
            logs.clone(),
            Arc::new(Events::open(&data_dir, writer.clone())),
            metrics.clone(),
            config.queue_per_instance,
        );
        let histories = Arc::new(Histories::new(&data_dir, writer.clone()));
        let scheduler = Arc::new(Scheduler::new(supervisor.clone(), histories));
        let acme_certs = config.acme.as_ref().map(|acme| {
            let tls_alpn = acme.challenge == crate::config::AcmeChallenge::TlsAlpn01;
            crate::ingress::certs::AcmeCerts::new(acme.only, tls_alpn)
        });
        let listeners = listen::bind(&config, acme_certs.clone()).await?;
        let sealer = Arc::new(crate::sealed::Sealer::open(
            &data_dir,
            config.sealing_key.as_deref(),
        )?);
        let registries = Arc::new(crate::registry::Registries::open(
            &data_dir,
            config.registries.clone(),
        )?);
        Ok(Host {
            sealer,
            registries,
            acme_certs,
            clustered: matches!(config.store, StoreConfig::Etcd(_)),
            config,
            lock,
            store,
            admin_token,
            engine,
            writer,
            logs,
            metrics,
            containers,
            callers,
            code,
            supervisor,
            scheduler,
            listeners,
        })
    }
}

/// Creates and locks the data directory, its files private.
fn open_data_dir(data_dir: &Path) -> anyhow::Result<File> {
    let lock = files::prepare_data_dir(data_dir)?;
    files::make_files_private(data_dir)?;
    Ok(lock)
}

/// Lowers the memory limit to what the memories of `max_instances` live
/// instances leave each (saying so), and reports the map count's room.
fn fit_memory(config: &mut DaemonConfig) {
    files::report_map_count_limit(config.max_instances);
    let slots = MemorySlots::for_config(&EngineConfig::from(&*config));
    if slots.max_memory_bytes < config.max_memory_bytes {
        tracing::warn!(
            "the memories of {} live instances must fit the address space: each instance may use at most {} of memory (fewer --max-instances allow more)",
            config.max_instances,
            crate::model::format_memory(slots.max_memory_bytes)
        );
        config.max_memory_bytes = slots.max_memory_bytes;
    }
}

/// Opens the store, settles the operator's token (one for a whole
/// cluster) and makes sure the default environment exists.
async fn open_store(config: &DaemonConfig) -> anyhow::Result<(Store, String)> {
    let data_dir = &config.data_dir;
    let store = match &config.store {
        StoreConfig::Embedded => Store::open_sqlite(data_dir)?,
        StoreConfig::Etcd(endpoints) => Store::open_etcd(endpoints.clone()).await?,
    };
    let mut admin_token = files::operator_token(data_dir, store.legacy_operator_token().await?)?;
    if matches!(config.store, StoreConfig::Etcd(_)) {
        // One operator's token for the cluster: each host's daemon.json
        // works on every host.
        let shared = store.cluster_operator_token(&admin_token).await?;
        if shared != admin_token {
            files::set_operator_token(data_dir, &shared)?;
            admin_token = shared;
        }
    }
    store.bootstrap(&admin_token).await?;
    Ok((store, admin_token))
}

/// The containers of this data directory, run by this binary as their
/// shim.
fn open_containers(config: &DaemonConfig, engine: &Engine) -> anyhow::Result<Arc<Containers>> {
    let exe = std::env::current_exe().context("finding the daemon's own binary")?;
    Containers::open(
        &config.data_dir,
        engine.content().images_dir().to_path_buf(),
        exe,
        &config.container_network,
        config.max_instances as usize,
        (
            config.container_tasks(crate::container::tasks::host_capacity()),
            u64::from(crate::model::Quotas::TENANT.max_tasks),
        ),
    )
}
