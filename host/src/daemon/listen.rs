//! The host's listeners: bound while it is built (so their addresses are
//! known before anything is announced), described in `daemon.json`, and
//! the control API served on its own.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::config::DaemonConfig;
use crate::container::Containers;
use crate::ingress::certs::AcmeCerts;
use crate::ingress::{tls, Connections};
use crate::model::DEFAULT_ENVIRONMENT;

use super::files::DaemonInfo;

/// The listeners, bound before anything is announced.
pub(super) struct Listeners {
    /// The control API.
    pub(super) api: TcpListener,
    /// The ingress.
    pub(super) http: TcpListener,
    /// The HTTPS ingress and its certificates, when asked for.
    pub(super) https: Option<(TcpListener, TlsAcceptor)>,
}

impl Listeners {
    /// Where the daemon listens: no guest may connect there.
    pub(super) fn addresses(&self) -> anyhow::Result<Vec<SocketAddr>> {
        let mut addrs = vec![self.api.local_addr()?, self.http.local_addr()?];
        if let Some((https, _)) = &self.https {
            addrs.push(https.local_addr()?);
        }
        Ok(addrs)
    }

    /// The HTTPS ingress's port, when it listens.
    pub(super) fn https_port(&self) -> anyhow::Result<Option<u16>> {
        Ok(match &self.https {
            Some((listener, _)) => Some(listener.local_addr()?.port()),
            None => None,
        })
    }

    /// Where other hosts reach this one's API: `advertise` when given,
    /// else the API's own address (which in a cluster must be one they
    /// can reach).
    pub(super) fn advertised(
        &self,
        advertise: Option<&str>,
        clustered: bool,
    ) -> anyhow::Result<String> {
        let api = self.api.local_addr()?;
        match advertise {
            Some(address) => Ok(address.to_string()),
            None if clustered => {
                anyhow::ensure!(
                    !api.ip().is_unspecified(),
                    "the API listens on every address ({api}): say where the other hosts reach it with --advertise HOST:PORT"
                );
                Ok(api.to_string())
            }
            None => Ok(api.to_string()),
        }
    }
}

/// Binds the control API, the ingress and, when asked for, HTTPS.
pub(super) async fn bind(
    config: &DaemonConfig,
    acme: Option<Arc<AcmeCerts>>,
) -> anyhow::Result<Listeners> {
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
                acme,
            )?;
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the HTTPS ingress to {addr}"))?;
            Some((listener, acceptor))
        }
        None if acme.is_some() => {
            anyhow::bail!(
                "--acme-directory needs the HTTPS listener: give --https ADDR (e.g. 0.0.0.0:443)"
            )
        }
        None => None,
    };
    Ok(Listeners { api, http, https })
}

/// What `daemon.json` says about the bound listeners.
pub(super) fn describe(
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
pub(super) fn serve_api(
    connections: Arc<Connections>,
    listener: TcpListener,
    router: axum::Router,
    containers: Arc<Containers>,
    stop: watch::Receiver<bool>,
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
