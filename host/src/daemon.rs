//! The daemon: opens the data directory, starts every part, serves the
//! control API and the ingress, and shuts down cleanly on SIGTERM or
//! Ctrl-C (instances stopped, state already durable).

use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::api::{self, ApiState};
use crate::blobs::Blobs;
use crate::config::DaemonConfig;
use crate::cron::Histories;
use crate::engine::Engine;
use crate::events::Events;
use crate::ingress::{tls, Ingress, Limits};
use crate::logs::Logs;
use crate::model::DEFAULT_ENVIRONMENT;
use crate::store::Store;
use crate::supervisor::Supervisor;

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

/// Runs the daemon until SIGTERM or Ctrl-C.
pub async fn run(config: DaemonConfig) -> anyhow::Result<()> {
    let data_dir = config.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("restricting {}", data_dir.display()))?;
    let _lock = lock_data_dir(&data_dir)?;

    report_map_count_limit();
    let store = Store::open_sqlite(&data_dir)?;
    let admin_token = store.bootstrap().await?;
    let blobs = Blobs::open(&data_dir)?;
    let engine = Arc::new(Engine::new(&config, blobs)?);
    let logs = Arc::new(Logs::new(&data_dir, config.log_bytes_per_service));
    let histories = Arc::new(Histories::new(&data_dir));
    let supervisor = Supervisor::new(
        store.clone(),
        engine.clone(),
        logs.clone(),
        histories,
        Arc::new(Events::open(&data_dir)),
        config.queue_per_instance,
    );

    let api_listener = TcpListener::bind(config.api_addr)
        .await
        .with_context(|| format!("binding the control API to {}", config.api_addr))?;
    let http_listener = TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("binding the ingress to {}", config.http_addr))?;
    let https = match config.https_addr {
        Some(addr) => {
            let acceptor = tls::acceptor(
                &data_dir,
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
    let info = DaemonInfo {
        api_url: format!("http://{}", api_listener.local_addr()?),
        http_url: format!("http://{}", http_listener.local_addr()?),
        https_url: match &https {
            Some((listener, _)) => Some(format!("https://{}", listener.local_addr()?)),
            None => None,
        },
        ca_file: (https.is_some() && config.tls_cert.is_none())
            .then(|| data_dir.join(tls::CA_FILE).display().to_string()),
        token: admin_token.clone(),
        environment: DEFAULT_ENVIRONMENT.to_string(),
    };

    let https_port = match &https {
        Some((listener, _)) => Some(listener.local_addr()?.port()),
        None => None,
    };
    let ingress = Ingress::new(
        supervisor.clone(),
        Limits {
            max_header_bytes: config.max_header_bytes,
            max_body_bytes: config.max_body_bytes,
        },
        https_port,
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let state = ApiState {
        store,
        engine,
        supervisor: supervisor.clone(),
        logs,
        config: Arc::new(config),
        admin_token: admin_token.into(),
        stopping: stop_rx.clone(),
    };
    let reconciler = tokio::spawn(supervisor.clone().run());
    let api = serve(api_listener, api::router(state), stop_rx.clone());
    let http = ingress.clone().serve(http_listener, None, stop_rx.clone());
    let https = https.map(|(listener, acceptor)| ingress.serve(listener, Some(acceptor), stop_rx));
    write_daemon_file(&data_dir, &info)?;
    tracing::info!(api = %info.api_url, http = %info.http_url, data_dir = %data_dir.display(), "mesh is up");

    shutdown_signal().await;
    tracing::info!("shutting down: stopping instances");
    let _ = stop_tx.send(true);
    reconciler.abort();
    supervisor.stop_all().await;
    // Connections finish what they are doing; one that does not (a client
    // that stopped reading) is not waited for long.
    let servers = async {
        let _ = tokio::join!(api, http);
        if let Some(https) = https {
            let _ = https.await;
        }
    };
    if tokio::time::timeout(SHUTDOWN_GRACE, servers).await.is_err() {
        tracing::warn!("connections still open after {SHUTDOWN_GRACE:?}; closing them");
    }
    let _ = std::fs::remove_file(data_dir.join(DAEMON_FILE));
    tracing::info!("mesh stopped");
    Ok(())
}

/// How long shutdown waits for open connections.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

fn serve(
    listener: TcpListener,
    router: axum::Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        };
        if let Err(e) = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "server failed");
        }
    })
}

/// Every instance costs a few memory mappings (its stack guard page, its
/// memories), and the kernel's `vm.max_map_count` caps them: say what that
/// means for density at start, since past it instances fail to start.
fn report_map_count_limit() {
    const MAPPINGS_PER_INSTANCE: u64 = 6;
    if let Some(limit) = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
    {
        let instances = limit / MAPPINGS_PER_INSTANCE;
        tracing::info!(
            vm.max_map_count = limit,
            "room for about {instances} live instances; raise it with `sysctl -w vm.max_map_count=1048576` for more"
        );
    }
}

/// Holds an exclusive lock on the data directory for the daemon's life, so
/// two daemons never share one.
fn lock_data_dir(data_dir: &Path) -> anyhow::Result<File> {
    let path = data_dir.join("lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    file.try_lock().map_err(|_| {
        anyhow::anyhow!(
            "another mesh daemon is already using {} (its lock file is held)",
            data_dir.display()
        )
    })?;
    Ok(file)
}

/// Writes `daemon.json` (mode 0600) atomically.
fn write_daemon_file(data_dir: &Path, info: &DaemonInfo) -> anyhow::Result<()> {
    let path = data_dir.join(DAEMON_FILE);
    let tmp = data_dir.join(format!(".{DAEMON_FILE}.tmp"));
    let mut file = File::options()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(&serde_json::to_vec_pretty(info)?)?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
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
