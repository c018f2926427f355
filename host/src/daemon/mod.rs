//! The daemon: opens the data directory, starts every part, serves the
//! control API and the ingress, and shuts down cleanly on SIGTERM or
//! Ctrl-C (connections drained within the grace period, instances
//! stopped, state already durable).
//!
//! - `converge`: the loop that hands each new revision of desired state
//!   to the services layer and cron, and collects unused code.
//! - `files`: the data directory's lock and `daemon.json`.
//! - `firings`: cron firings claimed in a cluster's store, once each.
//! - `node`: this host's record in a cluster's store, under a lease.
//! - `peers`: the other hosts, as this one fetches code from them.
//! - `placer`: the leader's placing of instances on hosts.

mod converge;
mod files;
mod firings;
mod node;
mod peers;
mod placer;

pub use converge::Converge;

use std::sync::Arc;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::api::{self, ApiState};
use crate::config::{
    DaemonConfig, StoreConfig, DEFAULT_API_MAX_CONNECTIONS, DEFAULT_API_MAX_PER_CLIENT,
    SHUTDOWN_GRACE,
};
use crate::container::Containers;
use crate::content::Content;
use crate::cron::{Histories, Scheduler};
use crate::ingress::{tls, ConnLimits, Connections, Ingress, Limits};
use crate::model::DEFAULT_ENVIRONMENT;
use crate::runtime::{Engine, EngineConfig, MemorySlots};
use crate::services::container::Callers;
use crate::services::{Supervisor, WasmSource};
use crate::store::Store;
use crate::telemetry::{DiskWriter, Events, Logs, Metrics};

/// The file clients read to find the daemon, in the data directory.
pub const DAEMON_FILE: &str = "daemon.json";

/// Contents of `daemon.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DaemonInfo {
    /// Control API base URL.
    pub api_url: String,
    /// Ingress base URL.
    pub http_url: String,
    /// HTTPS ingress base URL, when it listens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_url: Option<String>,
    /// The CA certificate HTTPS clients should trust (the local CA's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// The operator's token.
    pub token: String,
    /// Environment the token acts on by default.
    pub environment: String,
}

/// The listeners, bound before anything is announced.
struct Listeners {
    api: TcpListener,
    http: TcpListener,
    https: Option<(TcpListener, TlsAcceptor)>,
}

/// Runs the daemon until SIGTERM or Ctrl-C.
pub async fn run(mut config: DaemonConfig) -> anyhow::Result<()> {
    let data_dir = config.data_dir.clone();
    let _lock = files::prepare_data_dir(&data_dir)?;
    files::make_files_private(&data_dir)?;
    files::report_map_count_limit(config.max_instances);
    let slots = MemorySlots::for_config(&EngineConfig::from(&config));
    if slots.max_memory_bytes < config.max_memory_bytes {
        tracing::warn!(
            "the memories of {} live instances must fit the address space: each instance may use at most {} of memory (fewer --max-instances allow more)",
            config.max_instances,
            crate::model::format_memory(slots.max_memory_bytes)
        );
        config.max_memory_bytes = slots.max_memory_bytes;
    }

    let store = match &config.store {
        StoreConfig::Embedded => Store::open_sqlite(&data_dir)?,
        StoreConfig::Etcd(endpoints) => Store::open_etcd(endpoints.clone()).await?,
    };
    let mut admin_token = files::operator_token(&data_dir, store.legacy_operator_token().await?)?;
    let clustered = matches!(config.store, StoreConfig::Etcd(_));
    if clustered {
        // One operator's token for the cluster: each host's daemon.json
        // works on every host.
        let shared = store.cluster_operator_token(&admin_token).await?;
        if shared != admin_token {
            files::set_operator_token(&data_dir, &shared)?;
            admin_token = shared;
        }
    }
    store.bootstrap(&admin_token).await?;
    let content = Arc::new(Content::open(&data_dir)?);
    let engine = Arc::new(Engine::new(&EngineConfig::from(&config), content)?);
    let writer = DiskWriter::start();
    let logs = Arc::new(Logs::new(
        &data_dir,
        config.log_bytes_per_service,
        writer.clone(),
    ));
    let metrics = Arc::new(Metrics::default());
    let exe = std::env::current_exe().context("finding the daemon's own binary")?;
    let containers = Containers::open(
        &data_dir,
        engine.content().images_dir().to_path_buf(),
        exe,
        &config.container_network,
        config.max_instances as usize,
        (
            config.container_tasks(crate::container::tasks::host_capacity()),
            u64::from(crate::model::Quotas::TENANT.max_tasks),
        ),
    )?;
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

    let listeners = bind(&config).await?;
    let info = describe(&config, &listeners, &admin_token)?;
    let address = match &config.advertise {
        Some(address) => address.clone(),
        None if clustered => advertised(listeners.api.local_addr()?)?,
        None => listeners.api.local_addr()?.to_string(),
    };
    let me = node::Me::new(
        &config,
        files::node_id(&data_dir)?,
        address,
        containers.gateway().is_some(),
        engine.clone(),
    );
    let mut others: Option<Arc<dyn api::OtherHosts>> = None;
    let mut fetcher: Option<Arc<dyn crate::services::Fetch>> = None;
    if clustered {
        node::join(&store, &me).await?;
        let peers = peers::Peers::new(
            store.clone(),
            config.node.clone(),
            admin_token.clone(),
            config.max_upload_bytes.max(config.max_image_bytes),
        );
        code.fetch_with(peers.clone());
        fetcher = Some(peers.clone());
        supervisor.forward_with(peers.clone());
        scheduler.claim_with(Arc::new(firings::StoreFirings::new(store.clone())));
        others = Some(peers);
    }
    supervisor
        .parts()
        .directory
        .set_platform(listeners.addresses()?);
    let https_port = match &listeners.https {
        Some((listener, _)) => Some(listener.local_addr()?.port()),
        None => None,
    };
    let conn = ConnLimits {
        max_connections: config.max_connections,
        max_per_client: config.max_connections_per_client,
        header_timeout: config.header_timeout,
        idle_timeout: config.idle_timeout,
        grace: SHUTDOWN_GRACE,
    };
    let limits = Limits {
        max_header_bytes: config.max_header_bytes,
        max_body_bytes: config.max_body_bytes,
        conn,
    };
    let api_connections = Connections::new(
        "api",
        ConnLimits {
            max_connections: DEFAULT_API_MAX_CONNECTIONS,
            max_per_client: conn.max_per_client.min(DEFAULT_API_MAX_PER_CLIENT),
            ..conn
        },
        None,
    );
    let ingress = Ingress::new(supervisor.clone(), metrics, limits, https_port);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (converge, applied) = Converge::new(
        store.clone(),
        supervisor.clone(),
        scheduler.clone(),
        engine.clone(),
    );
    let converge = converge.bounding(containers.clone());
    // In a cluster this host runs what is placed on it while it is a
    // member (holds its lease).
    let (lease_tx, lease_rx) = tokio::sync::watch::channel(None);
    let converge = match &fetcher {
        Some(fetch) => converge.on_node(config.node.clone(), lease_rx.clone(), fetch.clone()),
        None => converge,
    };
    let containers_gateway = containers.gateway();
    let api_containers = containers.clone();
    let shutdown_containers = containers.clone();
    let node_store = store.clone();
    let state = ApiState {
        store,
        engine,
        containers,
        code,
        supervisor: supervisor.clone(),
        scheduler: scheduler.clone(),
        applied,
        logs,
        config: Arc::new(config),
        admin_token: admin_token.into(),
        stopping: stop_rx.clone(),
        runs: Default::default(),
        streams: Default::default(),
        places: Default::default(),
        uploads: Default::default(),
        node: me.node.clone(),
        clustered,
        others,
    };
    let proxies = match containers_gateway {
        Some(gateway) => {
            crate::ingress::proxy::serve(callers, gateway, conn, stop_rx.clone()).await?
        }
        None => Vec::new(),
    };
    let converger = tokio::spawn(converge.run());
    let placing = clustered.then(|| {
        tokio::spawn(placer::run(
            node_store.clone(),
            me.node.name.clone(),
            lease_rx,
        ))
    });
    let membership = clustered.then(|| node::keep(node_store, me, lease_tx, stop_rx.clone()));
    let api = serve_api(
        api_connections,
        listeners.api,
        api::router(state),
        api_containers,
        stop_rx.clone(),
    );
    let http = ingress.clone().serve(listeners.http, None, stop_rx.clone());
    let https = listeners
        .https
        .map(|(listener, acceptor)| ingress.serve(listener, Some(acceptor), stop_rx));
    files::write_daemon_file(&data_dir, &info)?;
    tracing::info!(api = %info.api_url, http = %info.http_url, data_dir = %data_dir.display(), "mesh is up");

    shutdown_signal().await;
    tracing::info!("shutting down: draining connections, stopping instances");
    let _ = stop_tx.send(true);
    converger.abort();
    if let Some(placing) = placing {
        placing.abort();
    }
    let mut servers = vec![api, http];
    servers.extend(https);
    servers.extend(proxies);
    drain(servers).await;
    if let Some(membership) = membership {
        // Leaves the cluster (its lease revoked) before stopping instances.
        let _ = membership.await;
    }
    scheduler.stop_all().await;
    supervisor.stop_all().await;
    // Containers had SIGTERM; each gets its stop timeout.
    shutdown_containers
        .stopped(crate::model::MAX_STOP_TIMEOUT)
        .await;
    writer.flush().await;
    let _ = std::fs::remove_file(data_dir.join(DAEMON_FILE));
    tracing::info!("mesh stopped");
    Ok(())
}

/// The address other hosts reach the API at, when none is given: the
/// API's own, unless it listens on every address.
fn advertised(api: std::net::SocketAddr) -> anyhow::Result<String> {
    anyhow::ensure!(
        !api.ip().is_unspecified(),
        "the API listens on every address ({api}): say where the other hosts reach it with --advertise HOST:PORT"
    );
    Ok(api.to_string())
}

/// Waits for the listeners' tasks, which drain their connections while
/// the instances serving them still run, for at most the grace period.
async fn drain(servers: Vec<tokio::task::JoinHandle<()>>) {
    let all = futures::future::join_all(servers);
    if tokio::time::timeout(SHUTDOWN_GRACE, all).await.is_err() {
        tracing::warn!("connections still open after {SHUTDOWN_GRACE:?}; closing them");
    }
}

impl Listeners {
    /// Where the daemon listens: no guest may connect there.
    fn addresses(&self) -> anyhow::Result<Vec<std::net::SocketAddr>> {
        let mut addrs = vec![self.api.local_addr()?, self.http.local_addr()?];
        if let Some((https, _)) = &self.https {
            addrs.push(https.local_addr()?);
        }
        Ok(addrs)
    }
}

/// Binds the control API, the ingress and, when asked for, HTTPS.
async fn bind(config: &DaemonConfig) -> anyhow::Result<Listeners> {
    let api = TcpListener::bind(config.api_addr)
        .await
        .with_context(|| format!("binding the control API to {}", config.api_addr))?;
    let http = TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("binding the ingress to {}", config.http_addr))?;
    let https = match config.https_addr {
        Some(addr) => {
            let acceptor = tls::acceptor(
                &config.data_dir,
                config.tls_cert.as_deref(),
                config.tls_key.as_deref(),
            )?;
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the HTTPS ingress to {addr}"))?;
            Some((listener, acceptor))
        }
        None => None,
    };
    Ok(Listeners { api, http, https })
}

/// What `daemon.json` says about the bound listeners.
fn describe(
    config: &DaemonConfig,
    listeners: &Listeners,
    token: &str,
) -> anyhow::Result<DaemonInfo> {
    let https_url = match &listeners.https {
        Some((listener, _)) => Some(format!("https://{}", listener.local_addr()?)),
        None => None,
    };
    Ok(DaemonInfo {
        api_url: format!("http://{}", listeners.api.local_addr()?),
        http_url: format!("http://{}", listeners.http.local_addr()?),
        ca_file: (https_url.is_some() && config.tls_cert.is_none())
            .then(|| config.data_dir.join(tls::CA_FILE).display().to_string()),
        https_url,
        token: token.to_string(),
        environment: DEFAULT_ENVIRONMENT.to_string(),
    })
}

/// Serves the control API with the same connection bounds as the
/// ingress (its own count), upgrades allowed for interactive runs. A
/// container never reaches it, even when it listens on every address.
fn serve_api(
    connections: Arc<Connections>,
    listener: TcpListener,
    router: axum::Router,
    containers: Arc<Containers>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    let refused = axum::Router::new().fallback(|| async {
        (
            axum::http::StatusCode::FORBIDDEN,
            "mesh: containers cannot reach the control API\n",
        )
    });
    connections.serve(
        listener,
        None,
        builder,
        move |peer, _https| {
            let from_container = match peer.ip() {
                std::net::IpAddr::V4(v4) => containers.is_container_address(v4),
                std::net::IpAddr::V6(_) => false,
            };
            let router = if from_container { &refused } else { &router };
            hyper_util::service::TowerToHyperService::new(router.clone())
        },
        stop,
    )
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}
